"""The device side of the serial protocol, on a pseudo-terminal.

An emulated stimulator for trying :mod:`rtneuro.hardware.serial_driver`
without hardware, and for its tests. It opens a pseudo-terminal
(``os.openpty()``), answers every command line of protocol version 1 (see
:mod:`rtneuro.hardware.serial_driver`), keeps the state of each channel, and
refuses (``ERR``) what a device would: an unknown channel, an amplitude above
its own limit, a malformed line. For tests it can be told to misbehave: drop
acknowledgements, garble them, answer late, answer ``ERR``, or hang up.

Run it for a user to try the protocol::

    python -m rtneuro.hardware.serial_emulator /tmp/rtneuro-stim

makes ``/tmp/rtneuro-stim`` a link to the pseudo-terminal, logs every line it
receives, and runs until Ctrl-C. Point the serial driver at that path
(``driver_args: {port: /tmp/rtneuro-stim}``), or talk to it by hand with
``python -m serial.tools.miniterm /tmp/rtneuro-stim`` (type ``S 1 PING``).
POSIX only (pseudo-terminals).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import select
import signal
import sys
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SerialEmulator", "ChannelState", "FAULTS", "main"]

log = logging.getLogger(__name__)

#: What :meth:`SerialEmulator.inject` can make the next commands do.
FAULTS = ("drop", "garble", "late", "err", "hangup")
_NUM = r"(\d+(?:\.\d{1,3})?)"
_SHAPE = r"(BC|BA|MC|MA)"
_GRAMMAR = {
    "PING": re.compile(r""),
    "SAFE": re.compile(r""),
    "OFF": re.compile(r"(\d+)"),
    "LEVEL": re.compile(rf"(\d+) {_NUM} {_NUM} {_NUM} {_SHAPE}"),
    "PULSE": re.compile(rf"(\d+) {_NUM} {_NUM} {_SHAPE}"),
    "TRAIN": re.compile(rf"(\d+) {_NUM} {_NUM} {_NUM} {_NUM} {_SHAPE}"),
}
_LINE = re.compile(r"S (\d{1,9}) ([A-Z]+)(?: (.*))?")


@dataclass
class ChannelState:
    """One emulated output channel."""

    on: bool = False
    amplitude_ma: float = 0.0
    pulse_width_us: float = 0.0
    frequency_hz: float = 0.0
    shape: str = ""
    pulses: int = 0
    trains: int = 0
    changes: int = 0


@dataclass
class _Stats:
    received: int = 0
    acked: int = 0
    errors: int = 0
    repeats: int = 0
    faults: dict[str, int] = field(default_factory=dict)


class SerialEmulator:
    """An emulated serial stimulator on a pseudo-terminal.

    Parameters
    ----------
    n_channels : int
        Channels 0 to ``n_channels - 1`` exist; others are answered ``ERR``.
    max_amplitude_ma : float
        The device's own amplitude limit; above it a command is answered ``ERR``.
    link : str or Path or None
        Also make this path a symbolic link to the port (removed on close).

    Attributes
    ----------
    port : str
        The pseudo-terminal to open (``/dev/pts/N``).
    channels : dict of int to ChannelState
    lines : list of str
        Every line received, in order.
    """

    def __init__(self, n_channels: int = 2, max_amplitude_ma: float = 10.0, link: str | Path | None = None) -> None:
        self.n_channels = int(n_channels)
        self.max_amplitude_ma = float(max_amplitude_ma)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no newline translation before the driver configures the port
        self.port = os.ttyname(self._slave)
        self.link = Path(link) if link else None
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
            self.link.symlink_to(self.port)
        self.channels = {ch: ChannelState() for ch in range(self.n_channels)}
        self.lines: list[str] = []
        self.stats = _Stats()
        self.late_s = 0.2
        self._faults: list[str] = []
        self._last: tuple[str, bytes] | None = None  # (line, answer) for repeats
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.closed = False

    # -- control ----------------------------------------------------------------------------------
    def inject(self, fault: str, count: int = 1) -> None:
        """Make the next ``count`` commands misbehave.

        Parameters
        ----------
        fault : {"drop", "garble", "late", "err", "hangup"}
            ``drop``: apply the command, send no acknowledgement; ``garble``:
            apply it, answer noise; ``late``: apply it, answer after
            :attr:`late_s`; ``err``: refuse it (``ERR injected fault``);
            ``hangup``: close the port without answering (the device is unplugged).
        count : int
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; choose one of {', '.join(FAULTS)}")
        with self._lock:
            self._faults.extend([fault] * count)

    def start(self) -> SerialEmulator:
        """Answer in a background thread; returns self."""
        self._thread = threading.Thread(target=self.serve, name="serial-emulator", daemon=True)
        self._thread.start()
        return self

    def serve(self) -> None:
        """Answer commands until :meth:`close` (or a ``hangup`` fault)."""
        buf = bytearray()
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._master], [], [], 0.05)
            except (OSError, ValueError):
                break
            if not ready:
                continue
            try:
                data = os.read(self._master, 4096)
            except OSError:  # EIO: nobody has the port open right now
                time.sleep(0.01)
                continue
            buf += data
            while (nl := buf.find(b"\n")) >= 0:
                raw = bytes(buf[:nl]).rstrip(b"\r")
                del buf[: nl + 1]
                if not self._answer(raw):
                    return

    def close(self) -> None:
        """Hang up: close the port (the driver sees the device disappear) and remove the link."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)
        self._hangup()

    def _hangup(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            for fd in (self._master, self._slave):
                with contextlib.suppress(OSError):
                    os.close(fd)
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()

    def __enter__(self) -> SerialEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the device -------------------------------------------------------------------------------
    def _answer(self, raw: bytes) -> bool:
        """Handle one line; False once the port is closed."""
        text = raw.decode("ascii", "replace")
        with self._lock:
            self.lines.append(text)
            self.stats.received += 1
            fault = self._faults.pop(0) if self._faults else None
        log.info("<- %s", text)
        if fault is not None:
            self.stats.faults[fault] = self.stats.faults.get(fault, 0) + 1
        if fault == "hangup":
            self._stop.set()
            self._hangup()
            return False
        if self._last is not None and self._last[0] == text:
            self.stats.repeats += 1  # a repeated command: same answer, not applied twice
            reply = self._last[1]
        else:
            seq, ok, reason = self._apply(text, refuse=fault == "err")
            reply = f"A {seq} OK\n".encode() if ok else f"A {seq} ERR {reason}\n".encode()
            self._last = (text, reply)
            with self._lock:
                if ok:
                    self.stats.acked += 1
                else:
                    self.stats.errors += 1
        if fault == "drop":
            return True
        if fault == "garble":
            reply = b"\x15#?A" + reply[: len(reply) // 2] + b"~\xfe\n"
        if fault == "late":
            time.sleep(self.late_s)
        log.info("-> %s", reply.decode("ascii", "replace").rstrip())
        try:
            os.write(self._master, reply)
        except OSError:
            return not self.closed
        return True

    def _apply(self, text: str, refuse: bool) -> tuple[str, bool, str]:
        m = _LINE.fullmatch(text)
        if m is None:
            return "0", False, "syntax: expected 'S <seq> <COMMAND> [args]'"
        seq, word, args = m.group(1), m.group(2), m.group(3) or ""
        grammar = _GRAMMAR.get(word)
        if grammar is None:
            return seq, False, f"unknown command {word}; expected one of {' '.join(_GRAMMAR)}"
        g = grammar.fullmatch(args)
        if g is None:
            return seq, False, f"syntax: bad arguments for {word}: '{args}'"
        if refuse:
            return seq, False, "injected fault"
        if word == "PING":
            return seq, True, ""
        with self._lock:
            if word == "SAFE":
                for each in self.channels.values():
                    if each.on:
                        each.on, each.changes = False, each.changes + 1
                return seq, True, ""
            ch = int(g.group(1))
            st = self.channels.get(ch)
            if st is None:
                return seq, False, f"channel {ch} not present (0..{self.n_channels - 1})"
            if word == "OFF":
                st.on, st.changes = False, st.changes + (1 if st.on else 0)
                return seq, True, ""
            amp = float(g.group(2))
            if amp > self.max_amplitude_ma:
                return seq, False, f"amplitude {amp:.3f} mA exceeds the device maximum {self.max_amplitude_ma:.3f} mA"
            if word == "LEVEL":
                st.on, st.changes = True, st.changes + 1
                st.amplitude_ma, st.pulse_width_us, st.frequency_hz = amp, float(g.group(3)), float(g.group(4))
                st.shape = g.group(5)
            elif word == "PULSE":
                st.pulses += 1
            else:  # TRAIN
                st.trains += 1
                st.pulses += round(float(g.group(4)) * float(g.group(5)))
        return seq, True, ""


def main(argv: list[str] | None = None) -> int:
    """``python -m rtneuro.hardware.serial_emulator PORT``: an emulated stimulator at the link PORT."""
    ap = argparse.ArgumentParser(prog="python -m rtneuro.hardware.serial_emulator",
                                 description="Emulated serial stimulator (rtneuro serial protocol 1) on a pseudo-terminal.")
    ap.add_argument("port", help="path of the link to create, e.g. /tmp/rtneuro-stim (point the serial driver's port at it)")
    ap.add_argument("--channels", type=int, default=2, help="number of channels (default 2)")
    ap.add_argument("--max-amplitude-ma", type=float, default=10.0, help="the device's own amplitude limit (default 10 mA)")
    ap.add_argument("--quiet", action="store_true", help="do not log every line")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s")
    try:
        emu = SerialEmulator(args.channels, args.max_amplitude_ma, link=args.port)
    except OSError as exc:
        print(f"error: cannot create {args.port} ({exc}); choose a path in a writable folder", file=sys.stderr)
        return 2
    print(f"serial stimulator emulator on {emu.port}, linked from {args.port}; Ctrl-C to stop", file=sys.stderr, flush=True)

    def _terminate(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)  # terminate: hang up and remove the link
    try:
        emu.serve()
    except KeyboardInterrupt:
        pass
    finally:
        emu.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
