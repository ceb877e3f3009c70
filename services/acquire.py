"""Acquisition service: hosts sources and paces them with the run's clock."""

from rtneuro.runtime.service import main

KIND = "acquire"

if __name__ == "__main__":
    raise SystemExit(main(kind=KIND))
