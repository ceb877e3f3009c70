"""Processing service: hosts filters and feature extraction nodes."""

from rtneuro.runtime.service import main

KIND = "process"

if __name__ == "__main__":
    raise SystemExit(main(kind=KIND))
