"""The gate over time: ramps, the watchdog's deadline, emergency stops and failing drivers.

The property test drives a gate whose profile ramps (and limits duty cycle,
blanking and pulse shape) with any sequence of commands, heartbeats and
pauses, ticking every 20 ms as the stimulate service does, and checks what
the driver received: never outside a limit, never a faster change than the
ramp rates, and every channel safe at most ``safe_deadline_s`` (plus two
ticks) after the last valid input.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtneuro.errors import ConfigError, DeviceError
from rtneuro.hardware.simulated import SimulatedDriver
from rtneuro.messages import CMD_HOLD, CMD_LEVEL, CMD_OFF, CMD_PULSE, COMMAND_DTYPE, DECISION_STATUS
from rtneuro.safety import Gate, load_profile, make_command

#: a vacuity guard reads what the property test saw: the module runs on one test worker, in order
pytestmark = pytest.mark.xdist_group("gate_properties")

TICK = 0.02
PROFILE_TEXT = """
device: simulated
watchdog_s: 0.3
channels:
  - channel: 0
    max_amplitude_ma: 4.0
    pulse_width_us: [30, 300]
    max_frequency_hz: 200
    max_charge_per_phase_uc: 1.0
    max_duty_cycle: 0.05
    ramp_up_ma_per_s: 2.0
    ramp_down_ma_per_s: 4.0
    blanking_ms: 5
  - channel: 1
    max_amplitude_ma: 3.0
    pulse_width_us: [60, 120]
    max_frequency_hz: 150
    max_charge_per_phase_uc: 0.3
    ramp_up_ma_per_s: 10.0
    ramp_down_ma_per_s: 1.5
    clip_amplitude: true
"""


@pytest.fixture(scope="module")
def ramp_profile(tmp_path_factory):
    path = tmp_path_factory.mktemp("prof") / "ramp.yaml"
    path.write_text(PROFILE_TEXT)
    return load_profile(str(path))


def _gate(profile, driver=None):
    g = Gate(profile, driver or SimulatedDriver())
    g.open(0.0)
    return g


step = st.one_of(
    st.tuples(st.just("cmd"), st.sampled_from([CMD_LEVEL, CMD_LEVEL, CMD_OFF, CMD_PULSE, CMD_HOLD]), st.integers(0, 1),
              st.floats(0, 6), st.sampled_from([30.0, 60.0, 90.0, 120.0, 250.0, 400.0]),
              st.sampled_from([20.0, 60.0, 130.0, 180.0, 250.0]), st.sampled_from([0, 0, 1, 2]),
              st.sampled_from([0.0, 0.0, 0.5, 2.0])),
    st.tuples(st.just("wait"), st.floats(0.0, 1.0)),
)

SEEN = {"ramp_steps": 0, "watchdog": 0, "refused": 0}


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(step, min_size=1, max_size=40))
def test_the_output_stays_within_limits_ramps_and_reaches_safety_in_time(ramp_profile, steps):
    g = _gate(ramp_profile)
    now = 0.0
    safe_since: list[float | None] = [0.0]  # start of the current stretch with every channel off

    def tick(t: float) -> None:
        g.tick(t)
        safe = not g.level and not any(g.driver.is_on(c) for c in (0, 1))
        if not safe:
            safe_since[0] = None
        elif safe_since[0] is None:
            safe_since[0] = t

    for s in steps:
        if s[0] == "wait":
            end = now + s[1]
            while now < end:
                now = min(end, now + TICK)
                tick(now)
            continue
        _, kind, ch, amp, pw, freq, shape, ramp = s
        now += 0.001
        rec = make_command(kind, ch, amp, pw, freq, 0.0, shape, ramp)[0]
        g.submit(rec, now, now + 0.05, now)
        tick(now)
    last_valid = g._last_valid
    # no more input: every channel must be safe within the deadline (plus one tick)
    end = now + g.safe_deadline_s + 1.0
    while now < end:
        now += TICK
        tick(now)
    assert not g.level and safe_since[0] is not None
    if last_valid is not None:
        # ticks come every TICK here: the trip is seen up to one tick late and the ramp's end up to another
        # (the stimulate service wakes for the trip itself; ramp steps follow its 20 ms ticks)
        assert safe_since[0] - last_valid <= g.safe_deadline_s + 2 * TICK + 1e-9, (safe_since[0], last_valid)
    _check(ramp_profile, g.driver.log)
    for k in SEEN:
        SEEN[k] += g.counts[k]


def _check(profile, log):
    amp_now: dict[int, tuple[float, float]] = {}  # channel -> (amplitude, time of that delivery)
    for e in log:
        ch = e["channel"]
        lim = profile.limits[ch]
        amp = e["amplitude_ma"] if e["kind"] == "level" else 0.0
        if e["kind"] in ("level", "pulse"):
            pw, freq = e["pulse_width_us"], e["frequency_hz"]
            assert math.isfinite(amp) and 0 <= e["amplitude_ma"] <= lim.max_amplitude_ma + 1e-12
            assert lim.pulse_width_us[0] <= pw <= lim.pulse_width_us[1]
            assert e["amplitude_ma"] * pw / 1000 <= lim.charge_limit_uc() * (1 + 1e-9)
            assert e["phase_shape"] in (0, 1)  # monophasic is not allowed
            if e["kind"] == "level":
                assert 0 < freq <= lim.max_frequency_hz and 2 * pw * 1e-6 * freq <= lim.max_duty_cycle + 1e-12
        if e["kind"] in ("level", "off"):
            prev, t_prev = amp_now.get(ch, (0.0, -math.inf))
            rate = lim.ramp_up_ma_per_s if amp > prev else lim.ramp_down_ma_per_s
            assert abs(amp - prev) <= rate * (e["t"] - t_prev) + 1e-9, (e, prev, t_prev)
            amp_now[ch] = (amp, e["t"])


def test_the_property_test_exercised_ramps_the_watchdog_and_refusals():
    """Guards the test above against passing vacuously (runs after it)."""
    assert SEEN["ramp_steps"] > 100 and SEEN["watchdog"] > 10 and SEEN["refused"] > 10, SEEN


def test_a_level_is_reached_along_the_ramp_and_the_watchdog_ramps_down(ramp_profile):
    g = _gate(ramp_profile)
    assert g.safe_deadline_s == pytest.approx(0.3 + max(4.0 / 4.0, 3.0 / 1.5))
    d = g.submit(make_command(CMD_LEVEL, 0, 2.0, 60.0, 130.0)[0], 1.0, 2.0, 1.0)
    assert d.status == "accepted" and not g.driver.is_on(0)  # starts from 0 mA
    t = 1.0
    amps = []
    while t < 2.2:
        t += TICK
        g.heartbeat(t, t + 0.05)
        g.tick(t)
        amps.append(g.level.get(0, [0.0])[0])
    assert amps[-1] == 2.0 and amps[0] == pytest.approx(2.0 * TICK)  # 2 mA/s: 1 s to reach 2 mA
    assert max(np.diff(amps)) <= 2.0 * TICK + 1e-9
    # silence: the watchdog trips 0.3 s after the last heartbeat and ramps down at 4 mA/s (0.5 s)
    last = t
    while g.level:
        t += TICK
        g.tick(t)
    assert g.counts["watchdog"] == 1 and 0.3 + 0.5 <= t - last <= 0.3 + 0.5 + 2 * TICK


def test_ramp_s_slows_a_change_further_and_off_ramps_down(ramp_profile):
    g = _gate(ramp_profile)
    g.submit(make_command(CMD_LEVEL, 1, 1.0, 100.0, 100.0)[0], 1.0, 2.0, 1.0)
    g.tick(1.2)
    assert g.level[1][0] == 1.0  # 10 mA/s: reached within 0.2 s
    g.submit(make_command(CMD_LEVEL, 1, 2.0, 100.0, 100.0, 0.0, 0, 2.0)[0], 1.3, 2.0, 1.3)  # over 2 s: 0.5 mA/s
    g.heartbeat(1.6, 2.0)
    g.tick(1.8)
    assert g.level[1][0] == pytest.approx(1.25)
    g.submit(make_command(CMD_OFF, 1)[0], 1.9, 2.5, 1.9)  # from the 1.25 mA delivered, at 1.5 mA/s
    g.tick(2.1)
    assert g.driver.is_on(1) and g.level[1][0] == pytest.approx(1.25 - 0.2 * 1.5)
    g.heartbeat(2.1, 2.5)
    g.tick(3.0)
    assert not g.driver.is_on(1) and 1 not in g.level


def test_duty_cycle_monophasic_and_blanking_are_refused_with_their_reason(ramp_profile):
    g = _gate(ramp_profile)
    d = g.submit(make_command(CMD_LEVEL, 0, 1.0, 250.0, 180.0)[0], 1.0, 2.0, 1.0)
    assert d.status == "refused" and d.reason.startswith("duty_cycle: 0.0900")
    d = g.submit(make_command(CMD_LEVEL, 0, 1.0, 60.0, 130.0, 0.0, 2)[0], 1.0, 2.0, 1.0)
    assert d.status == "refused" and d.reason.startswith("charge_balance: monophasic cathodic pulses are not charge-balanced")
    assert g.submit(make_command(CMD_PULSE, 0, 1.0, 60.0)[0], 1.0, 2.0, 10.000).status == "accepted"
    d = g.submit(make_command(CMD_PULSE, 0, 1.0, 60.0)[0], 1.0, 2.0, 10.003)
    assert d.status == "refused" and d.reason.startswith("blanking: decided on data 3.0 ms after the stimulation")
    assert g.submit(make_command(CMD_PULSE, 0, 1.0, 60.0)[0], 1.0, 2.0, 10.006).status == "accepted"


def test_an_emergency_stop_is_immediate_and_latched_until_cleared(ramp_profile):
    g = _gate(ramp_profile)
    g.submit(make_command(CMD_LEVEL, 1, 2.0, 100.0, 100.0)[0], 1.0, 2.0, 1.0)
    g.heartbeat(1.4, 2.0)
    g.tick(1.5)
    assert g.driver.is_on(1)
    g.emergency_stop(1.51, "test")
    assert not g.driver.is_on(1) and not g.level  # no ramp down: off at once
    d = g.submit(make_command(CMD_LEVEL, 1, 1.0, 100.0, 100.0)[0], 1.6, 2.0, 1.6)
    assert d.status == "refused" and "emergency stop is latched (test); clear it with 'rtneuro stop --clear'" in d.reason
    assert g.submit(make_command(CMD_OFF, 1)[0], 1.6, 2.0, 1.6).status == "accepted"  # off is always allowed
    assert g.heartbeat(1.6, 2.0).status == "accepted"
    g.clear_emergency_stop(1.7)
    assert g.submit(make_command(CMD_LEVEL, 1, 1.0, 100.0, 100.0)[0], 1.8, 2.0, 1.8).status == "accepted"
    assert g.counts["estops"] == 1


class _Failing(SimulatedDriver):
    """A driver whose device goes away after ``ok`` deliveries."""

    def __init__(self, ok: int) -> None:
        super().__init__()
        self.ok = ok

    def deliver(self, command, now, t_stream):
        if self.ok <= 0:
            raise DeviceError("port /dev/ttyUSB0 disappeared; reconnect the stimulator")
        self.ok -= 1
        super().deliver(command, now, t_stream)


def test_a_failing_driver_puts_the_device_in_its_safe_state_and_the_command_is_refused(ramp_profile):
    g = _gate(ramp_profile, _Failing(ok=0))
    assert g.submit(make_command(CMD_LEVEL, 1, 1.0, 100.0, 100.0)[0], 1.0, 2.0, 1.0).status == "accepted"
    g.heartbeat(1.4, 2.0)
    g.tick(1.5)  # the next ramp step fails
    assert g.counts["device_errors"] == 1 and not g.level and g.driver.safe_states >= 2
    d = g.submit(make_command(CMD_PULSE, 0, 1.0, 60.0)[0], 1.6, 2.0, 1.6)
    assert d.status == "refused" and d.reason == "device: port /dev/ttyUSB0 disappeared; reconnect the stimulator"
    assert g.counts["device_errors"] == 2 and g.reasons["device"] == 1


def test_a_safe_waveform_outside_its_own_limits_is_refused(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(PROFILE_TEXT.replace("    clip_amplitude: true", "    clip_amplitude: true\n    safe_amplitude_ma: 4.0"))
    with pytest.raises(ConfigError, match="the safe waveform of channel 1 is outside its own limits"):
        load_profile(str(path))


def test_a_profile_with_a_safe_level_returns_to_it(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(PROFILE_TEXT.replace("    clip_amplitude: true",
                                         "    clip_amplitude: true\n    safe_amplitude_ma: 1.0\n    safe_pulse_width_us: 90\n    safe_frequency_hz: 130"))
    g = _gate(load_profile(str(path)))
    assert g.level == {1: [1.0, 90.0, 130.0, 0]}  # opened in the safe state: the clinical level
    g.emergency_stop(1.0)
    assert g.level == {1: [1.0, 90.0, 130.0, 0]}


def test_commands_have_shape_and_ramp_fields():
    assert COMMAND_DTYPE.names[-2:] == ("phase_shape", "ramp_s")


def test_each_watchdog_trip_is_measured_from_the_last_valid_input_to_the_safe_state(ramp_profile):
    g = _gate(ramp_profile)
    g.submit(make_command(CMD_LEVEL, 1, 1.0, 100.0, 100.0)[0], 1.0, 2.0, 1.0)
    t = 1.0
    while t < 4.0:
        t += TICK
        g.tick(t)
    (to_safe, over), = g.trips
    # tripped after 0.3 s, then 1 mA down at 1.5 mA/s: safe 0.967 s after the last command, to the tick
    assert 0.3 + 1.0 / 1.5 <= to_safe <= 0.3 + 1.0 / 1.5 + 2 * TICK
    assert over == pytest.approx(to_safe - g.safe_deadline_s) and over < 0


def test_every_decision_is_a_record_with_its_reason(ramp_profile):
    g = _gate(ramp_profile)
    g.submit(make_command(CMD_LEVEL, 1, 1.0, 100.0, 100.0)[0], 1.0, 2.0, 10.0, cause=7)
    g.submit(make_command(CMD_LEVEL, 0, 9.0, 60.0, 130.0)[0], 1.0, 2.0, 10.0, cause=8)
    g.heartbeat(1.05, 2.0)
    g.tick(1.06)
    g.emergency_stop(1.07, "test")
    g.clear_emergency_stop(1.08)
    g.tick(1.5)  # the stop disarmed the watchdog: no trip, no record
    recs = g.take_records()
    assert g.take_records() is None  # taken once
    status = [DECISION_STATUS[s] for s in recs["status"].tolist()]
    assert status == ["safe", "accepted", "refused", "ramp", "estop", "safe", "estop_clear"]
    assert recs["cause_index"].tolist()[:3] == [-1, 7, 8] and recs["index"].tolist() == list(range(7))
    assert recs["reason"][2].decode().startswith("amplitude: 9.0 mA exceeds the profile maximum 4.0 mA")
    assert recs["amplitude_ma"][3] == pytest.approx(0.6) and recs["kind"][3] == CMD_LEVEL  # 10 mA/s for 0.06 s
    assert recs["t_stream"][1] == 10.0 and recs["t_stream"][5] == 10.0  # the safe state dated on the stream clock
    assert recs["kind"][5] == CMD_OFF and recs["channel"][5] == -1
