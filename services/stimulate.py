"""Stimulate service: the only process that talks to stimulation hardware.

Every command that reaches it passes the safety gate of its stimulator node
(profile limits, deadline, watchdog) before the driver; the driver is put in
its safe state when the service starts, stops, fails or stops hearing from
its controllers."""

from rtneuro.runtime.service import exit_process, main

KIND = "stimulate"

if __name__ == "__main__":
    exit_process(main(kind=KIND))
