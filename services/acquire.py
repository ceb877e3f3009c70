"""Acquisition service: hosts sources and paces them with the run's clock."""

from rtneuro.runtime.service import exit_process, main

KIND = "acquire"

if __name__ == "__main__":
    exit_process(main(kind=KIND))
