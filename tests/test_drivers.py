"""Stimulation drivers with their real counterparts: an LSL inlet, a pseudo-terminal device, a ZeroMQ host.

Every driver is called the way the stimulate service calls it: through the
safety gate for what should work, directly (``driver.deliver``) for the
failures, which must raise DeviceError with a one-line message naming the fix
(the gate then puts the channel in its safe state).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid

import msgpack
import numpy as np
import pylsl
import pytest
import zmq

from rtneuro.errors import ConfigError, DeviceError
from rtneuro.hardware import driver_class
from rtneuro.hardware.lsl_markers import GRAMMAR, LslMarkerDriver, format_marker
from rtneuro.hardware.serial_driver import SerialDriver, fixed, format_command, parse_reply
from rtneuro.hardware.serial_emulator import SerialEmulator
from rtneuro.hardware.simulated import SimulatedDriver
from rtneuro.hardware.zmq_driver import ZmqDriver
from rtneuro.hardware.zmq_host import serve
from rtneuro.messages import (
    CMD_LEVEL,
    CMD_OFF,
    CMD_PULSE,
    CMD_TRAIN,
    COMMAND_DTYPE,
    SHAPE_MONOPHASIC_ANODIC,
    SHAPE_MONOPHASIC_CATHODIC,
)
from rtneuro.safety import Gate, load_profile, make_command

from conftest import ROOT


def _cmd(kind=CMD_LEVEL, ch=0, amp=1.0, pw=60.0, freq=130.0, dur=0.0, shape=0):
    return make_command(kind, ch, amp, pw, freq, dur, shape)[0]


def _wait_for(cond, timeout_s=5.0):
    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True


def test_every_driver_is_registered_and_has_a_matching_profile():
    for name, cls in [("lsl_markers", LslMarkerDriver), ("serial", SerialDriver), ("zmq", ZmqDriver)]:
        assert driver_class(name) is cls and cls.name == name
        assert load_profile(name).device == name


def test_numbers_are_written_rounded_towards_zero():
    assert [fixed(v) for v in (130.0, 60.0, 130.5, 1.001, 0.0)] == ["130", "60", "130.5", "1.001", "0"]
    assert fixed(1.5 * 1000 / 450, True) == "3.333"  # a charge-clipped amplitude is never written above the clip
    assert fixed(2.9999999, True) == "2.999" and fixed(1.0, True) == "1.000"


# -- LSL markers ---------------------------------------------------------------------------------


def test_the_marker_grammar():
    assert format_marker(_cmd()) == "level ch=0 amp=1.000mA pw=60us f=130Hz shape=biphasic-cathodic-first"
    assert format_marker(_cmd(CMD_OFF, ch=1)) == "off ch=1"
    assert format_marker(_cmd(CMD_PULSE, amp=2.5, pw=100.0, shape=SHAPE_MONOPHASIC_ANODIC)) == \
        "pulse ch=0 amp=2.500mA pw=100us shape=monophasic-anodic"
    assert format_marker(_cmd(CMD_TRAIN, amp=0.25, pw=90.0, freq=20.0, dur=1.5)) == \
        "train ch=0 amp=0.250mA pw=90us f=20Hz dur=1.5s shape=biphasic-cathodic-first"
    assert format_marker(None) == "safe_state"
    # a field added to the command record later is appended by name, not lost and not misread by position
    wider = np.dtype([("wobble", "<i4"), *[(n, COMMAND_DTYPE[n]) for n in COMMAND_DTYPE.names]])
    rec = np.zeros(1, dtype=wider)[0]
    rec["kind"], rec["amplitude_ma"], rec["pulse_width_us"], rec["frequency_hz"] = CMD_LEVEL, 1.0, 60.0, 130.0
    rec["ramp_s"], rec["wobble"] = 0.0, 7
    assert format_marker(rec) == "level ch=0 amp=1.000mA pw=60us f=130Hz shape=biphasic-cathodic-first wobble=7"
    with pytest.raises(DeviceError, match="no marker for command kind 9"):
        format_marker(_cmd(kind=9))


def test_markers_reach_a_real_inlet_stamped_with_the_gate_time():
    name = f"rtneuro-stim-test-{uuid.uuid4().hex[:8]}"
    drv = LslMarkerDriver(stream_name=name)
    gate = Gate(load_profile("lsl_markers"), drv)
    t_open = pylsl.local_clock()
    gate.open(t_open)  # a safe_state marker, pushed before any inlet: lost, as LSL markers are
    (info,) = pylsl.resolve_byprop("name", name, 1, 10.0)
    assert info.type() == "Markers" and info.channel_format() == pylsl.cf_string
    assert info.nominal_srate() == pylsl.IRREGULAR_RATE and info.source_id() == f"rtneuro-stim:{name}"
    inlet = pylsl.StreamInlet(info)
    inlet.open_stream(10.0)
    assert GRAMMAR in inlet.info(5.0).as_xml()
    assert _wait_for(drv._outlet.have_consumers)
    t = pylsl.local_clock()
    nows = [t + 0.001 * i for i in range(5)]
    assert gate.submit(_cmd(), nows[0], None, 10.0).status == "accepted"
    assert gate.submit(_cmd(CMD_PULSE, ch=1, amp=2.0, pw=100.0), nows[1], None, 10.1).status == "accepted"
    assert gate.submit(_cmd(amp=6.0), nows[2], None, 10.2).status == "refused"  # never reaches the driver
    assert gate.submit(_cmd(CMD_OFF), nows[3], None, 10.3).status == "accepted"
    gate.safe_state(nows[4])
    got = []
    while len(got) < 4:
        sample, ts = inlet.pull_sample(5.0)
        assert sample is not None, f"only {got} arrived"
        got.append((sample[0], ts))
    assert [m for m, _ in got] == ["level ch=0 amp=1.000mA pw=60us f=130Hz shape=biphasic-cathodic-first",
                                   "pulse ch=1 amp=2.000mA pw=100us shape=biphasic-cathodic-first", "off ch=0", "safe_state"]
    assert [ts for _, ts in got] == pytest.approx([nows[0], nows[1], nows[3], nows[4]], abs=1e-9)
    rep = drv.report()
    assert rep["markers"] == {"safe_state": 2, "level": 1, "pulse": 1, "off": 1} and rep["delivered"] == 3
    assert rep["last"] == {"0": "safe_state", "1": "safe_state"} and rep["pushed_without_consumer"] >= 1
    drv.close()  # already safe: no second safe_state marker
    assert drv.report()["markers"]["safe_state"] == 2
    inlet.close_stream()


def test_a_marker_stream_name_must_not_be_empty():
    with pytest.raises(ConfigError, match="stream_name must be a non-empty string"):
        LslMarkerDriver(stream_name=" ")


# -- serial ---------------------------------------------------------------------------------------


@pytest.fixture
def emulator():
    emu = SerialEmulator(n_channels=2, max_amplitude_ma=10.0).start()
    yield emu
    emu.close()


def _serial(emu, **kw):
    drv = SerialDriver(port=emu.port, **kw)
    gate = Gate(load_profile("serial"), drv)
    gate.open(0.0)
    return drv, gate


def test_the_serial_line_protocol():
    assert format_command(17, _cmd()) == "S 17 LEVEL 0 1.000 60 130 BC"
    assert format_command(18, _cmd(CMD_OFF)) == "S 18 OFF 0"
    assert format_command(19, _cmd(CMD_PULSE, amp=1.0, pw=100.0, shape=SHAPE_MONOPHASIC_CATHODIC)) == "S 19 PULSE 0 1.000 100 MC"
    assert format_command(20, _cmd(CMD_TRAIN, ch=1, amp=0.5, pw=90.0, freq=20.0, dur=2.0)) == "S 20 TRAIN 1 0.500 90 20 2 BC"
    with pytest.raises(DeviceError, match="no pulse shape 9"):
        format_command(21, _cmd(shape=9))
    assert format_command(21, None) == "S 21 SAFE"
    assert parse_reply(b"A 17 OK\n") == (17, True, "")
    assert parse_reply(b"A 17 ERR channel 5 not present (0..1)\r\n") == (17, False, "channel 5 not present (0..1)")
    for bad in (b"A 17 ok\n", b"A x OK\n", b"17 OK\n", b"A 17 OK extra\n", b"A 17  OK\n"):
        with pytest.raises(ValueError):
            parse_reply(bad)


def test_acknowledged_commands_change_the_device_state(emulator):
    drv, gate = _serial(emulator)
    assert gate.submit(_cmd(amp=1.25), 1.0, None, 1.0).status == "accepted"
    assert gate.submit(_cmd(CMD_PULSE, ch=1, amp=2.0, pw=100.0), 1.1, None, 1.1).status == "accepted"
    assert gate.submit(_cmd(CMD_TRAIN, ch=1, amp=2.0, pw=100.0, freq=20.0, dur=0.5), 1.2, None, 1.2).status == "accepted"
    assert gate.submit(_cmd(amp=7.0), 1.3, None, 1.3).status == "refused"  # the gate: never sent
    ch0, ch1 = emulator.channels[0], emulator.channels[1]
    assert ch0.on and (ch0.amplitude_ma, ch0.pulse_width_us, ch0.frequency_hz) == (1.25, 60.0, 130.0)
    assert (ch1.on, ch1.pulses, ch1.trains) == (False, 1 + 10, 1)
    assert emulator.lines == ["S 1 PING", "S 2 SAFE", "S 3 LEVEL 0 1.250 60 130 BC", "S 4 PULSE 1 2.000 100 BC",
                              "S 5 TRAIN 1 2.000 100 20 0.5 BC"]
    assert ch0.shape == "BC"
    assert gate.submit(_cmd(CMD_OFF), 1.4, None, 1.4).status == "accepted" and not ch0.on
    assert gate.submit(_cmd(amp=2.0), 1.5, None, 1.5).status == "accepted" and ch0.on
    gate.safe_state(1.6)
    assert not ch0.on and emulator.lines[-1] == "S 8 SAFE"
    rep = drv.report()
    assert rep["sent"] == rep["acknowledged"] == {"PING": 1, "SAFE": 2, "LEVEL": 2, "PULSE": 1, "TRAIN": 1, "OFF": 1}
    assert rep["state"] == {"0": "off"} and rep["failures"] == [] and rep["ack_us"]["n"] == 8
    drv.close()
    assert emulator.lines[-1] == "S 8 SAFE"  # already safe: close sends nothing more


def test_a_missing_acknowledgement_is_a_device_error_and_the_safe_state_still_reaches_the_device(emulator):
    drv, _ = _serial(emulator, ack_timeout_ms=30)
    emulator.inject("drop")  # the device applies the command but its answer is lost
    with pytest.raises(DeviceError, match=r"no acknowledgement of 'S 3 LEVEL 0 1.000 60 130 BC' from /dev/\S+ within 30 ms; "
                                          "check that the stimulator is on and connected, or raise ack_timeout_ms"):
        drv.deliver(_cmd(), 1.0, 1.0)
    assert emulator.channels[0].on  # which is why the gate must then put the channel in its safe state:
    drv.safe_state(1.1)
    assert not emulator.channels[0].on and drv.report()["failures"][0].startswith("no acknowledgement")


def test_a_late_acknowledgement_times_out_and_is_never_taken_for_the_next_one(emulator):
    drv, _ = _serial(emulator, ack_timeout_ms=30)
    emulator.late_s = 0.1
    emulator.inject("late")
    with pytest.raises(DeviceError, match="no acknowledgement of 'S 3 PULSE"):
        drv.deliver(_cmd(CMD_PULSE), 1.0, 1.0)
    assert _wait_for(lambda: emulator.stats.received == 3 and emulator.stats.acked == 3)
    time.sleep(0.15)  # the late "A 3 OK" is now waiting in the port
    drv.deliver(_cmd(CMD_PULSE, ch=1), 1.1, 1.1)
    assert drv.report()["stale_replies"] == 1 and emulator.channels[1].pulses == 1


def test_a_garbled_reply_is_a_device_error(emulator):
    drv, _ = _serial(emulator)
    emulator.inject("garble")
    with pytest.raises(DeviceError, match=r"garbled reply .* to 'S 3 LEVEL 0 1.000 60 130 BC'; check the baud rate \(115200\)"):
        drv.deliver(_cmd(), 1.0, 1.0)
    drv.safe_state(1.1)  # the port is usable again
    assert not emulator.channels[0].on


def test_a_refusal_by_the_device_is_a_device_error_naming_its_reason():
    with SerialEmulator(n_channels=1, max_amplitude_ma=0.5) as emu:
        drv, _ = _serial(emu)
        with pytest.raises(DeviceError, match=r"refused 'S 3 LEVEL 0 1.000 60 130 BC': amplitude 1.000 mA exceeds the device "
                                              r"maximum 0.500 mA; make the device profile match"):
            drv.deliver(_cmd(), 1.0, 1.0)
        with pytest.raises(DeviceError, match=r"refused 'S 4 OFF 1': channel 1 not present \(0..0\)"):
            drv.deliver(_cmd(CMD_OFF, ch=1), 1.1, 1.1)
        emu.inject("err")
        with pytest.raises(DeviceError, match="refused 'S 5 SAFE': injected fault"):
            drv.safe_state(1.2)
        assert not emu.channels[0].on and drv.report()["acknowledged"] == {"PING": 1, "SAFE": 1}


def test_a_disconnected_port_is_a_device_error(emulator):
    drv, _ = _serial(emulator)
    drv.deliver(_cmd(), 1.0, 1.0)
    emulator.close()  # unplugged
    assert not os.path.exists(emulator.port)
    with pytest.raises(DeviceError, match=r"serial port /dev/\S+ is gone \(.*\); reconnect the stimulator and restart"):
        drv.deliver(_cmd(CMD_OFF), 1.1, 1.1)
    with pytest.raises(DeviceError, match="is gone"):
        drv.safe_state(1.2)
    drv.close()  # logs, never raises
    assert len(drv.report()["failures"]) >= 2


def test_a_device_hanging_up_in_the_middle_of_a_command_is_a_device_error(emulator):
    drv, _ = _serial(emulator)
    emulator.inject("hangup")
    with pytest.raises(DeviceError, match="(is gone|no acknowledgement)"):
        drv.deliver(_cmd(), 1.0, 1.0)
    assert emulator.closed


def test_a_port_that_does_not_exist_cannot_be_opened(tmp_path):
    drv = SerialDriver(port=str(tmp_path / "ttyNOPE"))
    with pytest.raises(DeviceError, match=r"cannot open serial port .*ttyNOPE \(.*\); check the cable and the driver_args port"):
        drv.open()
    with pytest.raises(ConfigError, match="the serial driver needs a port"):
        SerialDriver()
    with pytest.raises(ConfigError, match="ack_timeout_ms must be in"):
        SerialDriver(port="/dev/null", ack_timeout_ms=0)


def test_the_emulator_command_line_serves_a_link(tmp_path):
    link = tmp_path / "stim"
    proc = subprocess.Popen([sys.executable, "-m", "rtneuro.hardware.serial_emulator", str(link), "--quiet"], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(link.exists, 30.0), proc.stderr
        drv = SerialDriver(port=str(link))
        drv.open()
        drv.deliver(_cmd(), 1.0, 1.0)
        drv.close()
        assert drv.report()["acknowledged"] == {"PING": 1, "LEVEL": 1, "SAFE": 1}
    finally:
        proc.terminate()
        proc.wait(10)
    assert "serial stimulator emulator on /dev/" in proc.stderr.read()


# -- zmq ------------------------------------------------------------------------------------------


class _Host:
    """zmq_host.serve in a thread, with a simulated driver behind its own gate."""

    def __init__(self, profile="simulated", driver=None):
        self.driver = driver or SimulatedDriver()
        self.stop, self.ready = threading.Event(), threading.Event()
        self.report: dict = {}
        self.thread = threading.Thread(target=self._run, args=(profile,), daemon=True)
        self.thread.start()
        assert self.ready.wait(10)
        self.endpoint = self.ready.endpoint

    def _run(self, profile):
        self.report = serve("tcp://127.0.0.1:0", self.driver, profile, stop=self.stop, ready=self.ready)

    def close(self):
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def host():
    h = _Host()
    yield h
    h.close()


def _zmq(endpoint, **kw):
    drv = ZmqDriver(endpoint=endpoint, **kw)
    gate = Gate(load_profile("zmq"), drv)
    gate.open(pylsl.local_clock())
    return drv, gate


def test_commands_reach_the_driver_on_the_host(host):
    drv, gate = _zmq(host.endpoint)
    try:
        assert host.driver.safe_states == 2  # the host gate opened its driver in the safe state, then this gate's open
        assert gate.submit(_cmd(amp=1.5), 1.0, None, 3.0).status == "accepted"
        assert host.driver.is_on(0) and host.driver.log[-1]["amplitude_ma"] == 1.5
        assert host.driver.log[-1]["t_stream"] == 3.0
        assert gate.submit(_cmd(CMD_PULSE, ch=1, amp=2.0, pw=100.0), 1.1, None, 3.1).status == "accepted"
        assert gate.submit(_cmd(CMD_OFF), 1.2, None, 3.2).status == "accepted" and not host.driver.is_on(0)
        hrep = drv.host_report()
        assert hrep["gate"]["accepted"] == 3 and hrep["driver"]["delivered"] == 3
        rep = drv.report()
        assert rep["host_device"] == "simulated" and rep["state"] == {"0": "off"}
        assert rep["acknowledged"] == {"hello": 5, "safe_state": 1, "deliver": 3, "report": 1} and rep["failures"] == []
        # one machine, one LSL clock: the estimated offset is within its own uncertainty of zero
        assert abs(rep["clock_offset_ms"]) <= rep["clock_offset_uncertainty_ms"] + 0.01
    finally:
        drv.close()
    assert host.driver.safe_states == 3  # and close()


def test_the_host_checks_every_command_against_its_own_profile(tmp_path):
    strict = tmp_path / "strict.yaml"
    strict.write_text("device: simulated\nwatchdog_s: 5\nchannels:\n  - {channel: 0, max_amplitude_ma: 2, pulse_width_us: [30, 450],"
                      " max_frequency_hz: 200, max_charge_per_phase_uc: 1.5}\n")
    h = _Host(str(strict))
    drv, gate = _zmq(h.endpoint, keepalive_ms=0)
    try:
        with pytest.raises(DeviceError, match=r"host at tcp://127\.0\.0\.1:\d+ refused 'deliver': amplitude: 3\.0 mA exceeds the "
                                              r"profile maximum 2\.0 mA; make this side's profile no looser than the host's"):
            drv.deliver(_cmd(amp=3.0), 1.0, 1.0)  # within zmq.yaml (5 mA): the local gate let it through
        assert len(h.driver.log) == 0 and drv.report()["refused_by_host"] == 1
        with pytest.raises(DeviceError, match="refused 'deliver': channel: 1 is not in profile"):
            drv.deliver(_cmd(ch=1), 1.0, 1.0)
    finally:
        drv.close()
        h.close()


def test_a_failing_device_behind_the_host_is_a_device_error_and_the_host_goes_safe(emulator):
    h = _Host("serial", SerialDriver(port=emulator.port))  # zmq -> host gate -> serial driver -> device
    drv, gate = _zmq(h.endpoint, keepalive_ms=0)
    try:
        assert gate.submit(_cmd(), 1.0, None, 1.0).status == "accepted" and emulator.channels[0].on
        emulator.inject("drop")
        with pytest.raises(DeviceError, match=r"the device on the stimulator host at tcp://\S+ failed 'deliver' \(device: no "
                                              r"acknowledgement of 'S 5 LEVEL 0 2.000 60 130 BC'.*\); the host put it in its safe state"):
            drv.deliver(_cmd(amp=2.0), 1.1, 1.1)
        assert not emulator.channels[0].on and emulator.lines[-1] == "S 6 SAFE"
        # through the local gate: the command is refused with the reason, and this side goes safe too
        emulator.inject("drop")
        d = gate.submit(_cmd(amp=2.0), 1.2, None, 1.2)
        assert d.status == "refused" and d.reason.startswith("device: the device on the stimulator host")
        assert not emulator.channels[0].on and gate.counts["device_errors"] == 1
    finally:
        drv.close()
        h.close()
    assert len(h.report["device_errors"]) == 2


def test_no_host_no_reply_is_a_device_error(host):
    free = zmq.Context.instance().socket(zmq.ROUTER)
    port = free.bind_to_random_port("tcp://127.0.0.1")
    free.close(0)
    drv = ZmqDriver(endpoint=f"tcp://127.0.0.1:{port}", reply_timeout_ms=50)
    with pytest.raises(DeviceError, match=r"no reply to 'hello' from the stimulator host at tcp://127\.0\.0\.1:\d+ within 50 ms; "
                                          r"is it running\? start it there with `python -m rtneuro.hardware.zmq_host"):
        drv.open()
    drv.close()  # nothing left to close: open() cleaned up
    drv, _ = _zmq(host.endpoint, reply_timeout_ms=50, keepalive_ms=0)
    drv.deliver(_cmd(), 1.0, 1.0)
    host.close()  # the stimulator host goes away mid-run
    with pytest.raises(DeviceError, match="no reply to 'deliver'"):
        drv.deliver(_cmd(CMD_OFF), 1.1, 1.1)
    assert drv.report()["timeouts"] == 1
    drv.close()


def test_the_host_watchdog_stops_stimulation_when_the_link_goes_quiet(tmp_path):
    quick = tmp_path / "quick.yaml"
    quick.write_text("device: simulated\nwatchdog_s: 0.3\nchannels:\n  - {channel: 0, max_amplitude_ma: 5, pulse_width_us: [30, 450],"
                     " max_frequency_hz: 200, max_charge_per_phase_uc: 1.5}\n")
    h = _Host(str(quick))
    try:
        alive, _ = _zmq(h.endpoint, keepalive_ms=30)  # keep-alives feed the host watchdog
        alive.deliver(_cmd(), 1.0, 1.0)
        time.sleep(1.0)  # > 3 host watchdog periods with no new command
        assert h.driver.is_on(0), alive.report()["keepalive"]
        assert alive.report()["keepalive"]["answered"] > 5
        alive.close()
        silent, _ = _zmq(h.endpoint, keepalive_ms=0)  # a controller host that stops talking after one command
        silent.deliver(_cmd(), 2.0, 2.0)
        assert h.driver.is_on(0)
        assert _wait_for(lambda: not h.driver.is_on(0), 5.0)
        silent.close()
    finally:
        h.close()
    assert h.report["gate"]["watchdog"] == 1


def test_the_host_answers_malformed_requests_and_keeps_serving(host):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(host.endpoint)

    def ask(payload: bytes) -> dict:
        sock.send(payload)
        assert sock.poll(2000)
        return msgpack.unpackb(sock.recv(), raw=False)

    import pickle

    assert ask(pickle.dumps({"seq": 1}))["status"] == "invalid"
    assert "wire version 7" in ask(msgpack.packb({"v": 7, "seq": 2, "op": "ping"}))["reason"]
    assert "unknown op 'fire'" in ask(msgpack.packb({"v": 1, "seq": 3, "op": "fire"}))["reason"]
    fields = {n: 0 for n in COMMAND_DTYPE.names}
    rep = ask(msgpack.packb({"v": 1, "seq": 4, "op": "deliver", "command": {**fields, "kind": 1, "wobble": 1.0}}))
    assert rep["status"] == "invalid" and "unknown ['wobble']" in rep["reason"] and rep["seq"] == 4
    rep = ask(msgpack.packb({"v": 1, "seq": 5, "op": "deliver", "command": {**fields, "kind": "level"}}))
    assert "must be a number" in rep["reason"]
    late = {**fields, "kind": CMD_LEVEL, "amplitude_ma": 1.0, "pulse_width_us": 60.0, "frequency_hz": 130.0}
    rep = ask(msgpack.packb({"v": 1, "seq": 6, "op": "deliver", "command": late, "deadline": pylsl.local_clock() - 1.0}))
    assert rep["status"] == "refused" and rep["reason"].startswith("expired")  # a request that arrived too late
    assert len(host.driver.log) == 0
    rep = ask(msgpack.packb({"v": 1, "seq": 7, "op": "deliver", "command": late, "deadline": None}))
    assert rep["ok"] and host.driver.is_on(0)
    sock.close(0)


def test_zmq_driver_arguments_are_checked():
    with pytest.raises(ConfigError, match="the zmq driver needs endpoint: tcp://HOST:PORT"):
        ZmqDriver()
    with pytest.raises(ConfigError, match="reply_timeout_ms must be in"):
        ZmqDriver("tcp://127.0.0.1:5560", reply_timeout_ms=-1)
    drv = ZmqDriver("tcp://127.0.0.1:5560", curve={"server_public": "x"})
    with pytest.raises(ConfigError, match=r"curve must be \{keys: DIR\}"):
        drv.open()
    drv.close()


def test_with_curve_keys_only_an_authorized_driver_reaches_the_host(tmp_path):
    from rtneuro.security import create_keys

    create_keys(tmp_path / "keys")
    create_keys(tmp_path / "stranger")
    sim = SimulatedDriver()
    stop, ready = threading.Event(), threading.Event()
    t = threading.Thread(target=serve, args=("tcp://127.0.0.1:0", sim, "simulated"),
                         kwargs={"stop": stop, "ready": ready, "curve": {"keys": str(tmp_path / "keys")}}, daemon=True)
    t.start()
    assert ready.wait(10)
    try:
        drv, gate = _zmq(ready.endpoint, curve={"keys": str(tmp_path / "keys")})
        assert gate.submit(_cmd(), 1.0, None, 1.0).status == "accepted" and sim.is_on(0)
        drv.close()
        assert not sim.is_on(0)
        n = len(sim.log)
        for curve in (None, {"keys": str(tmp_path / "stranger")}):  # no CURVE at all; a key not in 'authorized'
            stranger = ZmqDriver(ready.endpoint, reply_timeout_ms=200, curve=curve)
            with pytest.raises(DeviceError, match="no reply to 'hello'"):
                stranger.open()
            stranger.close()
        assert len(sim.log) == n
    finally:
        stop.set()
        t.join(5)


def test_driver_args_are_checked_when_the_graph_is_validated(tmp_path):
    from rtneuro.errors import ConfigError
    from rtneuro.messages import StreamMeta
    from rtneuro.nodes import NodeContext, build_params
    from rtneuro.nodes.stimulator import Stimulator, StimulatorParams

    meta = StreamMeta(name="ctl", kind="cmd", sfreq=0.0, dtype="command")

    def build(**raw):
        return Stimulator(build_params(StimulatorParams, raw, "node 'stim' params"), [meta], NodeContext(node_id="stim"))

    with pytest.raises(ConfigError, match=r"driver 'serial' takes no 'prot'.*did you mean 'port'"):
        build(driver="serial", profile="serial", driver_args={"prot": "/dev/ttyUSB0"})
    build(driver="serial", profile="serial", driver_args={"port": "/dev/ttyUSB0", "baudrate": 9600})
