"""The driver protocol every stimulation driver implements."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Driver(Protocol):
    """A stimulation output. Only :class:`rtneuro.safety.Gate` calls it.

    Times are on the LSL clock (``now``) and on the stream clock
    (``t_stream``, the data time of the decision) so that logs can be read
    against the recording.
    """

    name: str
    # Optional class attribute ``timeline = "stream"``: the driver dates deliveries on stream time
    # (the simulated one); without it the device delivers on the gate's clock. The gate's ledger
    # (rtneuro.safety.ChannelLedger) follows the same timeline.

    def open(self) -> None:
        """Connect to the device. Raise DeviceError on failure."""

    def deliver(self, command: np.void, now: float, t_stream: float) -> None:
        """Apply one checked command (a COMMAND_DTYPE record)."""

    def safe_state(self, now: float) -> None:
        """Put every channel in its safe state (stimulation off)."""

    def report(self) -> dict:
        """What was delivered, for the run report."""

    def close(self) -> None:
        """Safe state, then disconnect."""
