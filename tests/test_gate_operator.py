"""The operator's hold on the gate: disarm / arm, and limits lowered while running.

The property test interleaves any sequence of commands, heartbeats and
pauses with disarms, arms and lowered operator limits, and checks what the
driver received: within the profile and its ramps always (the checks of
``test_gate_properties``); after an operator limit, no amplitude ever rises
above it and none stays above it longer than the ramp down takes; while
disarmed, no pulse and no rise at all, and every channel off once the ramp
down is over.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_gate_properties import PROFILE_TEXT, _check, _gate

from rtneuro.messages import CMD_HOLD, CMD_LEVEL, CMD_OFF, CMD_PULSE, CMD_TRAIN, DECISION_STATUS
from rtneuro.safety import load_profile, make_command

#: a vacuity guard reads what the property test saw: the module runs on one test worker, in order
pytestmark = pytest.mark.xdist_group("gate_operator")

TICK = 0.02


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    path = tmp_path_factory.mktemp("prof") / "ramp.yaml"
    path.write_text(PROFILE_TEXT)
    return load_profile(str(path))


def _statuses(g):
    recs = g.take_records()
    return [] if recs is None else [(DECISION_STATUS[s], r) for s, r in zip(recs["status"].tolist(), recs["reason"].tolist(), strict=True)]


def test_disarm_ramps_to_safe_refuses_until_armed_and_off_still_passes(profile):
    g = _gate(profile)
    g.submit(make_command(CMD_LEVEL, 0, 2.0, 60.0, 130.0)[0], 1.0, 2.0, 1.0)
    t = 1.0
    while t < 2.1:  # 2 mA/s up: at 2 mA after 1 s
        t += TICK
        g.heartbeat(t, t + 0.05, t)
        g.tick(t)
    assert g.level[0][0] == 2.0
    g.take_records()
    g.disarm(t, "participant moves")
    assert not g.armed and _statuses(g)[0] == ("disarm", b"disarm: participant moves")
    d = g.submit(make_command(CMD_LEVEL, 0, 1.0, 60.0, 130.0)[0], t + 0.001, t + 1, t + 0.001)
    assert d.status == "refused" and d.reason.startswith("disarmed: stimulation is disarmed (participant moves); arm it with 'rtneuro arm'")
    assert g.submit(make_command(CMD_PULSE, 1, 1.0, 60.0)[0], t + 0.002, t + 1, t + 0.002).status == "refused"
    assert g.submit(make_command(CMD_OFF, 0)[0], t + 0.003, t + 1, t + 0.003).status == "accepted"
    start = t
    while g.level:  # 4 mA/s down: 0.5 s
        t += TICK
        g.heartbeat(t, t + 0.05, t)
        g.tick(t)
    assert 0.5 - 1e-9 <= t - start <= 0.5 + 2 * TICK
    # the watchdog rests while disarmed in the safe state: silence trips nothing
    for _ in range(100):
        t += TICK
        g.tick(t)
    assert g.counts["watchdog"] == 0 and not g.tripped
    g.take_records()
    g.arm(t, "block 3")
    assert g.armed and _statuses(g) == [("arm", b"arm: block 3")]
    t += 0.01
    assert g.submit(make_command(CMD_LEVEL, 0, 1.0, 60.0, 130.0)[0], t, t + 1, t).status == "accepted"
    g.disarm(t, "again")
    g.disarm(t, "twice")  # idempotent: one record, the first reason
    assert [s for s, _ in _statuses(g)].count("disarm") == 1 and g.disarm_reason == "again"


def test_the_emergency_stop_still_wins_over_arming(profile):
    g = _gate(profile)
    g.emergency_stop(1.0, "test")
    g.disarm(1.1)
    g.arm(1.2)
    d = g.submit(make_command(CMD_LEVEL, 0, 1.0, 60.0, 130.0)[0], 1.3, 2.0, 1.3)
    assert d.status == "refused" and d.reason.startswith("estop:")


def test_a_lowered_limit_ramps_a_level_above_it_off_and_refuses_or_clips_what_exceeds_it(profile):
    g = _gate(profile)
    g.submit(make_command(CMD_LEVEL, 0, 2.0, 60.0, 130.0)[0], 1.0, 2.0, 1.0)
    g.submit(make_command(CMD_LEVEL, 1, 1.0, 100.0, 100.0)[0], 1.0, 2.0, 1.0)
    t = 1.0
    while t < 2.1:
        t += TICK
        g.heartbeat(t, t + 0.05, t)
        g.tick(t)
    assert g.level[0][0] == 2.0 and g.level[1][0] == 1.0
    g.set_operator_limits(t, 1.5, None)
    assert 0 in g._ramps and g.level[1][0] == 1.0  # channel 0 ramps off; channel 1 is below the limit
    while 0 in g.level:
        t += TICK
        g.heartbeat(t, t + 0.05, t)
        g.tick(t)
    d = g.submit(make_command(CMD_LEVEL, 0, 1.8, 60.0, 130.0)[0], t, t + 1, t)  # channel 0 refuses above its limit
    assert d.status == "refused" and d.reason.startswith("operator_limit: 1.8 mA exceeds the operator's limit 1.5 mA")
    d = g.submit(make_command(CMD_LEVEL, 1, 2.5, 100.0, 100.0)[0], t, t + 1, t)  # channel 1 clips (its profile says so)
    assert d.status == "clipped" and d.command["amplitude_ma"] == 1.5
    g.set_operator_limits(t, 3.0, None)  # never raised: the caller refuses it, the gate ignores it
    assert g.op_amplitude_ma == 1.5
    g.set_operator_limits(t, None, 120.0)
    d = g.submit(make_command(CMD_LEVEL, 0, 1.0, 60.0, 130.0)[0], t + 0.01, t + 1, t + 0.01)
    assert d.status == "refused" and d.reason.startswith("operator_limit: 130.0 Hz exceeds the operator's limit 120.0 Hz")
    assert g.op_amplitude_ma == 1.5 and g.op_frequency_hz == 120.0


_cmd = st.tuples(st.just("cmd"), st.sampled_from([CMD_LEVEL, CMD_LEVEL, CMD_OFF, CMD_PULSE, CMD_TRAIN, CMD_HOLD]), st.integers(0, 1),
                st.floats(0, 6), st.sampled_from([60.0, 90.0, 120.0]), st.sampled_from([20.0, 60.0, 130.0, 180.0]),
                st.sampled_from([0.0, 0.0, 0.5]))
_run = st.tuples(st.just("run"), st.floats(0.0, 2.0))  # heartbeats every tick: levels ramp up and stay
_limit = st.tuples(st.just("limit"), st.one_of(st.none(), st.floats(0.05, 1.5)), st.one_of(st.none(), st.floats(10.0, 200.0)))
step = st.one_of(_cmd, _cmd, _run, _run, st.tuples(st.just("wait"), st.floats(0.0, 1.0)), st.tuples(st.just("disarm")),
                 st.tuples(st.just("arm")), _limit, _limit)

SEEN = {"refused_disarmed": 0, "refused_limit": 0, "disarms": 0, "limit_ramps": 0}


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(step, min_size=1, max_size=40))
def test_no_delivery_rises_above_an_operator_limit_or_while_disarmed(profile, steps):
    g = _gate(profile)
    now = 0.0
    #: (time, what, amplitude limit, frequency limit, {channel: amplitude delivered then})
    events: list[tuple[float, str, float, float, dict]] = []

    # every example starts with both channels stimulating, so that limits and disarms meet running levels
    prefix = [("cmd", CMD_LEVEL, 0, 3.0, 60.0, 130.0, 0.0), ("cmd", CMD_LEVEL, 1, 2.0, 90.0, 60.0, 0.0),
              ("run", 1.6)]
    for s in [*prefix, *steps]:
        if s[0] in ("wait", "run"):
            end = now + s[1]
            while now < end:
                now = min(end, now + TICK)
                if s[0] == "run":
                    g.heartbeat(now, now + 0.05, now)
                g.tick(now)
            continue
        now += 0.001
        levels = {ch: lv[0] for ch, lv in g.level.items()}
        if s[0] == "disarm":
            SEEN["disarms"] += g.armed
            g.disarm(now, "test")
            events.append((now, "disarm", math.nan, math.nan, levels))
        elif s[0] == "arm":
            g.arm(now)
            events.append((now, "arm", math.nan, math.nan, levels))
        elif s[0] == "limit":
            g.set_operator_limits(now, s[1], s[2])
            a = math.inf if g.op_amplitude_ma is None else g.op_amplitude_ma
            SEEN["limit_ramps"] += any(v > a for v in levels.values())
            f = math.inf if g.op_frequency_hz is None else g.op_frequency_hz
            events.append((now, "limit", a, f, levels))
        else:
            _, kind, ch, amp, pw, freq, ramp = s
            d = g.submit(make_command(kind, ch, amp, pw, freq, 0.5 if kind == CMD_TRAIN else 0.0, 0, ramp)[0], now, now + 0.05, now)
            SEEN["refused_disarmed"] += d.reason.startswith("disarmed")
            SEEN["refused_limit"] += d.reason.startswith("operator_limit")
        g.tick(now)
    end = now + g.safe_deadline_s + 1.0
    while now < end:
        now += TICK
        g.tick(now)
    _check(profile, g.driver.log)
    down = {ch: lim.ramp_down_ma_per_s for ch, lim in profile.limits.items()}

    def in_force(t: float) -> tuple[float, float, bool, tuple | None]:
        """Amplitude and frequency limits, disarmed, and the event that set the latest bound, at time t."""
        a_lim = f_lim = math.inf
        disarmed = False
        last = None
        for ev in events:
            if ev[0] > t + 1e-12:
                break
            if ev[1] == "limit":
                a_lim, f_lim, last = ev[2], ev[3], ev
            elif ev[1] == "disarm":
                disarmed, last = True, ev
            elif ev[1] == "arm":
                disarmed = False
        return a_lim, f_lim, disarmed, last

    # every pulse delivered: within the operator's limit, or on the way down from a level that ran when it was set
    for t, ch, amp, _pw in g.driver.pulse_log:
        a_lim, _f, disarmed, ev = in_force(t)
        if disarmed or amp > a_lim + 1e-9:
            assert ev is not None and ev[0] < t
            was = ev[4].get(ch, 0.0)
            assert amp <= was + 1e-9 and t - ev[0] <= was / down[ch] + 2 * TICK + 1e-9, (t, ch, amp, ev, events)
    # every waveform the driver was told: never a rise while disarmed or above a limit, never faster than the limit
    prev: dict[int, float] = {}
    for e in g.driver.log:
        ch, t = e["channel"], e["t"]
        a_lim, f_lim, disarmed, _ev = in_force(t)
        amp = e["amplitude_ma"] if e["kind"] in ("level", "pulse", "train") else 0.0
        if e["kind"] in ("pulse", "train"):
            assert not disarmed and amp <= a_lim + 1e-9, (e, events)
        if e["kind"] == "train":
            assert e["frequency_hz"] <= f_lim + 1e-9, (e, events)
        if e["kind"] == "level" and (disarmed or amp > a_lim + 1e-9 or e["frequency_hz"] > f_lim + 1e-9):
            assert amp <= prev.get(ch, 0.0) + 1e-9, (e, prev, events)
        prev[ch] = amp if e["kind"] == "level" else 0.0
    if not g.armed:
        assert not g.level and not g._ramps


def test_the_operator_property_test_exercised_disarms_limits_and_refusals():
    """Guards the test above against passing vacuously (runs after it)."""
    assert SEEN["disarms"] > 20 and SEEN["refused_disarmed"] > 10 and SEEN["refused_limit"] > 3 and SEEN["limit_ramps"] > 20, SEEN
