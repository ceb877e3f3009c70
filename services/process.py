"""Processing service: hosts filters and feature extraction nodes."""

from rtneuro.runtime.service import exit_process, main

KIND = "process"

if __name__ == "__main__":
    exit_process(main(kind=KIND))
