"""The safety gate: nothing outside a device profile's limits ever reaches a driver.

These are the most important tests of the suite. The property test feeds the
gate arbitrary command records (any kind, channel, NaN, infinities, huge or
negative values, expired deadlines) and checks every command the driver
received against the profile.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtneuro.errors import ConfigError
from rtneuro.hardware.simulated import SimulatedDriver
from rtneuro.messages import (
    CMD_HOLD,
    CMD_LEVEL,
    CMD_OFF,
    CMD_PULSE,
    CMD_TRAIN,
    COMMAND_DTYPE,
    Chunk,
    StreamMeta,
)
from rtneuro.nodes import NodeContext
from rtneuro.nodes.stimulator import Stimulator, StimulatorParams
from rtneuro.safety import Gate, load_profile, make_command

from conftest import ROOT

#: a vacuity guard reads what the property test saw: the module runs on one test worker, in order
pytestmark = pytest.mark.xdist_group("safety")

PROFILE = load_profile("simulated")
CH0, CH1 = PROFILE.limits[0], PROFILE.limits[1]  # channel 1 allows clipping


def _gate():
    g = Gate(PROFILE, SimulatedDriver())
    g.open(0.0)
    return g


def _submit(g, kind=CMD_LEVEL, ch=0, amp=1.0, pw=60.0, freq=130.0, dur=0.0, now=1.0, deadline=2.0):
    return g.submit(make_command(kind, ch, amp, pw, freq, dur)[0], now, deadline, now)


def test_the_shipped_profile_is_valid():
    assert PROFILE.device == "simulated" and PROFILE.watchdog_s == 0.5
    assert CH0.max_amplitude_ma == 5.0 and CH0.pulse_width_us == (30.0, 450.0) and not CH0.clip_amplitude
    assert CH1.clip_amplitude


def test_a_command_within_limits_is_delivered():
    g = _gate()
    d = _submit(g)
    assert (d.status, d.reason) == ("accepted", "")
    assert g.driver.log[-1]["amplitude_ma"] == 1.0 and g.driver.is_on(0)
    assert _submit(g, kind=CMD_OFF).status == "accepted" and not g.driver.is_on(0)


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        (dict(amp=6.0), "amplitude: 6.0 mA exceeds the profile maximum 5.0 mA"),
        (dict(amp=4.0, pw=450.0), "charge:"),  # 1.8 uC/phase > 1.5
        (dict(pw=10.0), "pulse_width: 10.0 us outside [30.0, 450.0] us"),
        (dict(pw=1000.0), "pulse_width"),
        (dict(freq=300.0), "frequency: 300.0 Hz outside (0, 250.0] Hz"),
        (dict(freq=0.0), "frequency"),
        (dict(kind=CMD_TRAIN, dur=601.0), "train: 601.0 s exceeds 600.0 s"),
        (dict(ch=7), "channel: 7 is not in profile 'simulated'"),
        (dict(amp=float("nan")), "nonfinite"),
        (dict(freq=float("inf")), "nonfinite"),
        (dict(amp=-1.0), "negative"),
        (dict(kind=9), "unknown: command kind 9"),
        (dict(now=3.0, deadline=2.0), "expired: arrived 1000.0 ms after its deadline"),
    ],
)
def test_commands_outside_the_profile_are_refused_and_never_reach_the_driver(kwargs, reason):
    g = _gate()
    before = len(g.driver.log)
    d = _submit(g, **kwargs)
    assert d.status == "refused" and d.reason.startswith(reason.split(":")[0]) and reason in d.reason
    assert len(g.driver.log) == before
    assert g.counts["refused"] == 1


def test_clipping_only_where_the_profile_allows_it():
    g = _gate()
    d = _submit(g, ch=1, amp=9.0, pw=60.0)
    assert d.status == "clipped" and "clipped to 5.000 mA" in d.reason
    assert g.driver.log[-1]["amplitude_ma"] == 5.0
    d = _submit(g, ch=1, amp=4.0, pw=450.0)  # charge-limited: 1.5 uC / 450 us = 3.333 mA
    assert d.status == "clipped" and g.driver.log[-1]["amplitude_ma"] == pytest.approx(1.5 * 1000 / 450)
    assert _submit(g, ch=0, amp=9.0).status == "refused"


def test_charge_density_follows_the_shannon_limit(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "device: simulated\nchannels:\n  - {channel: 0, max_amplitude_ma: 10, pulse_width_us: [10, 1000], max_frequency_hz: 200,\n"
        "     max_charge_per_phase_uc: 100, electrode_area_cm2: 0.001, shannon_k: 1.5}\n")
    prof = load_profile(str(path))
    g = Gate(prof, SimulatedDriver())
    g.open(0.0)
    q_max = math.sqrt(10**1.5 * 0.001)  # 0.178 uC
    assert _submit(g, amp=q_max * 1000 / 100 * 0.99, pw=100.0).status == "accepted"
    d = _submit(g, amp=q_max * 1000 / 100 * 1.01, pw=100.0)
    assert d.status == "refused" and d.reason.startswith("charge")


def test_lockout_after_a_change(tmp_path):
    path = tmp_path / "lock.yaml"
    path.write_text(
        "device: simulated\nchannels:\n  - {channel: 0, max_amplitude_ma: 5, pulse_width_us: [30, 450], max_frequency_hz: 200,\n"
        "     max_charge_per_phase_uc: 2, min_interval_s: 0.5}\n")
    g = Gate(load_profile(str(path)), SimulatedDriver())
    g.open(0.0)
    assert _submit(g, now=1.0, deadline=9.0).status == "accepted"
    d = _submit(g, amp=2.0, now=1.2, deadline=9.0)
    assert d.status == "refused" and d.reason.startswith("lockout")
    assert _submit(g, amp=2.0, now=1.6, deadline=9.0).status == "accepted"


def test_the_watchdog_returns_to_the_safe_state_when_the_controller_goes_quiet():
    g = _gate()
    assert not g.tick(9.0)  # not armed before the first valid command
    _submit(g, now=10.0, deadline=11.0)
    assert g.driver.is_on(0)
    assert g.heartbeat(10.3, 11.0).status == "accepted"
    assert not g.tick(10.7)
    assert g.tick(10.81)  # 0.51 s after the last heartbeat
    assert not g.driver.is_on(0) and g.counts["watchdog"] == 1
    assert not g.tick(12.0)  # latched until the next valid command
    _submit(g, now=13.0, deadline=14.0)
    assert g.driver.is_on(0)


def test_an_expired_heartbeat_does_not_feed_the_watchdog():
    g = _gate()
    _submit(g, now=10.0, deadline=11.0)
    assert g.heartbeat(10.4, 10.3).status == "refused"
    assert g.tick(10.51)


@pytest.mark.parametrize(
    "text, message",
    [
        ("device: x\nchannels: []\n", "needs at least one channel"),
        ("device: x\nchannels:\n  - {channel: 0, max_amplitude_ma: 500, pulse_width_us: [30, 450], max_frequency_hz: 1, max_charge_per_phase_uc: 1}\n", "max_amplitude_ma=500.0 must be <= 100"),
        ("device: x\nchannels:\n  - {channel: 0, max_amplitude_ma: 5, pulse_width_us: [450, 30], max_frequency_hz: 1, max_charge_per_phase_uc: 1}\n", "pulse_width_us must be [min, max]"),
        ("device: x\nchannels:\n  - {channel: 0, max_amplitude_ma: 5, pulse_width_us: [30, 450], max_frequency_hz: 1}\n", "missing required parameter 'max_charge_per_phase_uc'"),
        ("device: x\nwatchdog: 1\nchannels: []\n", "unknown parameter 'watchdog' (did you mean 'watchdog_s'?)"),
        ("device: [x\n", "not valid YAML"),
    ],
)
def test_invalid_profiles_are_refused(tmp_path, text, message):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_profile(str(path))


# -- the property: whatever the controller sends, the driver only sees safe commands

kinds = st.sampled_from([CMD_HOLD, CMD_LEVEL, CMD_OFF, CMD_PULSE, CMD_TRAIN, 5, 200])
values = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.floats(-10, 1000), st.floats(0, 6),
                   st.floats(20, 500), st.just(0.0))
DELIVERED = {"level": 0, "pulse": 0, "train": 0}


wild = st.tuples(kinds, st.integers(-3, 4), values, values, values, values, st.floats(0, 2),
                 st.integers(0, 6), values)
# commands near the limits, on both sides of every one of them
plausible = st.tuples(st.sampled_from([CMD_LEVEL, CMD_PULSE, CMD_TRAIN]), st.integers(0, 1), st.floats(0, 7),
                      st.floats(20, 500), st.floats(0, 300), st.floats(0, 700), st.floats(0, 0.3),
                      st.sampled_from([0, 0, 1, 2]), st.just(0.0))


@settings(max_examples=400, deadline=None)
@given(cmds=st.lists(st.one_of(wild, plausible), min_size=1, max_size=30))
def test_no_command_outside_the_limits_ever_reaches_the_driver(cmds):
    g = _gate()
    now = 0.0
    for kind, ch, amp, pw, freq, dur, dt, shape, ramp in cmds:
        now += dt
        rec = np.zeros(1, dtype=COMMAND_DTYPE)
        rec[0] = (kind, ch, amp, pw, freq, dur, shape, ramp)
        g.submit(rec[0], now, now + 0.05 if dt < 1.5 else now - 0.01, now)
        g.tick(now)
    _check_log(g.driver.log)


def _check_log(log):
    for entry in log:
        DELIVERED[entry["kind"]] = DELIVERED.get(entry["kind"], 0) + 1
        lim = PROFILE.limits.get(entry["channel"])
        assert lim is not None
        if entry["kind"] == "off":
            continue
        amp, pw, freq, dur = entry["amplitude_ma"], entry["pulse_width_us"], entry["frequency_hz"], entry["duration_s"]
        assert all(math.isfinite(v) for v in (amp, pw, freq, dur))
        assert 0 <= amp <= lim.max_amplitude_ma + 1e-12
        assert lim.pulse_width_us[0] <= pw <= lim.pulse_width_us[1]
        q_limit = min(lim.max_charge_per_phase_uc, math.sqrt(10**lim.shannon_k * lim.electrode_area_cm2))
        assert amp * pw / 1000 <= q_limit * (1 + 1e-9)
        assert entry["phase_shape"] in (0, 1)  # monophasic is not allowed by this profile
        if entry["kind"] in ("level", "train"):
            assert 0 < freq <= lim.max_frequency_hz
            assert 2 * pw * 1e-6 * freq <= lim.max_duty_cycle + 1e-12
        if entry["kind"] == "train":
            assert dur <= lim.max_train_s


def test_the_property_test_really_delivered_commands():
    """Guards the test above against passing vacuously (runs after it)."""
    assert DELIVERED["level"] > 10 and DELIVERED["pulse"] > 10 and DELIVERED["train"] > 0, DELIVERED


# -- the stimulator node and the structure of the code


def _stim(tmp_path=None, **kw):
    params = StimulatorParams(**kw)
    meta = StreamMeta(name="ctl", kind="cmd", sfreq=0.0, dtype="command")
    clock = [5.0]
    ctx = NodeContext(node_id="stim", base_dir=tmp_path or Path("."), real_clock=lambda: clock[0])
    return Stimulator(params, [meta], ctx), clock


def test_the_stimulator_opens_its_driver_only_when_run_and_in_the_safe_state(tmp_path):
    node, clock = _stim(tmp_path, log_path="delivered.jsonl")
    assert node.gate is None  # building (and validating) a graph opens no device
    node.open()
    assert node.gate.driver.safe_states == 1
    cmds = np.concatenate([make_command(CMD_LEVEL, 0, 2.0, 60.0, 130.0), make_command(CMD_LEVEL, 0, 50.0, 60.0, 130.0),
                           make_command(CMD_HOLD)])
    out = node.process(Chunk(cmds, 0, 1.0, 10.0, [], {"deadline": 6.0}))
    assert [s for s, _ in out] == ["accepted", "refused", "accepted"]
    assert out[1][1].startswith("amplitude")
    clock[0] = 7.0
    assert [s for s, _ in node.process(Chunk(make_command(CMD_LEVEL, 0, 1.0, 60.0, 130.0), 3, 1.3, 10.0, [], {"deadline": 6.5}))] == ["refused"]
    node.end()
    assert not node.gate.driver.is_on(0)
    node.close()
    lines = (tmp_path / "delivered.jsonl").read_text().splitlines()
    assert sum('"kind": "level"' in x for x in lines) == 1 and lines[-1].endswith('"safe_state"}')
    rep = node.report()
    assert rep["gate"]["accepted"] == 1 and rep["gate"]["refused"] == 2 and rep["gate"]["heartbeats"] == 1


def test_only_the_gate_calls_a_driver_and_only_the_stimulator_builds_one():
    """Structural guard: a new code path to a driver must fail this test."""
    sources = [p for p in (ROOT / "rtneuro").rglob("*.py")] + [p for p in (ROOT / "services").rglob("*.py")]
    deliver_callers = [p for p in sources if re.search(r"\.deliver\(", p.read_text())]
    assert [p.relative_to(ROOT).as_posix() for p in deliver_callers] == ["rtneuro/safety.py"]
    builders = [p for p in sources if "driver_class(" in p.read_text() and p.name != "__init__.py"]
    assert [p.relative_to(ROOT).as_posix() for p in builders] == ["rtneuro/nodes/stimulator.py"]
    gate_src = (ROOT / "rtneuro" / "safety.py").read_text()
    # in the gate, delivery happens only after the check said yes
    submit = gate_src[gate_src.index("def submit"):gate_src.index("def _deliver")]
    assert submit.index("self.check_time(") < submit.index("self._check(") < submit.index("self._apply(")
    assert 'if dec.status == "refused":' in submit
    # the driver is called in one place, which keeps the ledger in step with it
    assert gate_src.count("self.driver.deliver(") == 1
    deliver = gate_src[gate_src.index("def _deliver"):gate_src.index("def _apply")]
    assert "self.driver.deliver(" in deliver and ".apply(" in deliver


def test_the_gates_decisions_are_a_stream_any_process_can_record(write_graph, run_graph, tmp_path):
    """Two controllers, one asking for too much: each decision, with its reason, reaches a sink in another process."""
    import json

    graph = {
        "runtime": {"speed": "max"},
        "nodes": [
            {"id": "src", "type": "synthetic", "process": "acquire",
             "params": {"n_channels": 4, "sfreq": 250.0, "chunk_size": 25, "seed": 3, "duration_s": 6.0}},
            {"id": "bpow", "type": "bandpower", "inputs": ["src"], "process": "acquire",
             "params": {"bands": {"alpha": [8.0, 12.0]}, "window_s": 0.5, "step_s": 0.1, "average": True}},
            {"id": "big", "type": "threshold", "inputs": ["bpow"], "process": "control",
             "params": {"threshold": -1.0e9, "amplitude_ma": 9.0, "deadline_ms": 2000.0}},
            {"id": "ok", "type": "threshold", "inputs": ["bpow"], "process": "control",
             "params": {"threshold": -1.0e9, "amplitude_ma": 1.0, "channel": 1, "deadline_ms": 2000.0}},
            {"id": "stim", "type": "stimulator", "inputs": ["big", "ok"], "process": "stimulate"},
            {"id": "rec", "type": "jsonl", "inputs": ["stim.decisions"], "process": "sink",
             "params": {"path": str(tmp_path / "decisions.jsonl")}},
        ],
    }
    code, rep, _ = run_graph(write_graph(graph))
    assert code == 0 and rep["errors"] == []
    rows = [json.loads(x) for x in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    by_status = {r["status"]: r for r in rows}
    refused, accepted = by_status[2], by_status[0]
    assert refused["reason"] == "amplitude: 9.0 mA exceeds the profile maximum 5.0 mA" and refused["channel"] == 0
    assert accepted["channel"] == 1 and accepted["amplitude_ma"] == 1.0 and accepted["cause_index"] == 0
    assert [r["status"] for r in rows][0] == 6 and [r["status"] for r in rows][-1] == 6  # safe at open and at the end
    assert [r["index"] for r in rows] == list(range(len(rows)))
    # the records are not commands: the command summary counts only what the controllers sent
    assert rep["commands"]["sent"] == 2 and rep["commands"]["refused"] == 1
    assert rep["streams"]["stim.decisions"]["gaps"] == 0 and rep["streams"]["stim.decisions"]["samples"] == len(rows)
    # the simulated driver's delivered waveform is a stream too: 1 mA on channel 1 from the accepted command on
    wave = rep["streams"]["stim.delivered"]
    assert wave["gaps"] == 0 and wave["samples"] > 0
