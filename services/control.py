"""Control service: hosts controllers; commands leave it over the acknowledged command channel."""

from rtneuro.runtime.service import main

KIND = "control"

if __name__ == "__main__":
    raise SystemExit(main(kind=KIND))
