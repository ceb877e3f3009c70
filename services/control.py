"""Control service: hosts controllers; commands leave it over the acknowledged command channel."""

from rtneuro.runtime.service import exit_process, main

KIND = "control"

if __name__ == "__main__":
    exit_process(main(kind=KIND))
