"""The simulated stimulator's exact pulse log and delivered-waveform stream, and the gate on stream time.

The driver is checked against the explicit loops of
``tests/reference/stimulation.py`` (pulse times to 1e-12 s, samples
exactly) for any sequence of commands and any way stream time advances.
A graph with ``timebase: stream`` replayed twice at full speed takes the
same decisions and delivers the same waveform, bit for bit, and its ramps
follow the profile's rates in data time.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtneuro.errors import ConfigError
from rtneuro.hardware.simulated import SimulatedDriver
from rtneuro.messages import CMD_LEVEL, CMD_OFF, CMD_PULSE, CMD_TRAIN
from rtneuro.safety import make_command

from reference.stimulation import delivered

KIND = {"level": CMD_LEVEL, "off": CMD_OFF, "pulse": CMD_PULSE, "train": CMD_TRAIN}
RATE = 1000.0

command = st.tuples(
    st.floats(0.0, 0.25),  # time since the previous command
    st.sampled_from(["level", "level", "off", "pulse", "train"]),
    st.sampled_from([0, 1]),
    st.sampled_from([0.5, 1.0, 2.5]),  # mA
    st.sampled_from([60.0, 90.0]),  # us
    st.sampled_from([20.0, 130.0, 130.0, 185.0]),  # Hz
    st.sampled_from([0.05, 0.2]),  # train duration, s
)


def _dated(cmds, t0=100.0):
    out, t = [], t0
    for dt, kind, ch, amp, pw, freq, dur in cmds:
        t += dt
        out.append((t, kind, ch, amp, pw, freq, dur))
    return out


def _drive(dated, t_end, advances, render_every):
    """Feed a driver the dated commands, advancing stream time at ``advances`` too; render now and then."""
    drv = SimulatedDriver()
    drv.enable_waveform([0, 1], RATE)
    drv.open()
    drv.safe_state(0.0)  # the gate's safe state at open, before any stream time
    steps = sorted([(t, None) for t in advances if dated[0][0] <= t < t_end] + [(c[0], c) for c in dated], key=lambda x: x[0])
    chunks = []
    for i, (t, c) in enumerate(steps):
        if c is None:
            drv.advance(t)
        else:
            _t, kind, ch, amp, pw, freq, dur = c
            drv.deliver(make_command(KIND[kind], ch, amp, pw, freq, dur)[0], t, t)
        if i % render_every == 0 and (r := drv.render()) is not None:
            chunks.append(r)
    drv.safe_state(t_end)
    if (r := drv.render()) is not None:
        chunks.append(r)
    return drv, chunks


@settings(max_examples=150, deadline=None)
@given(st.lists(command, min_size=1, max_size=12), st.lists(st.floats(0.0, 3.5), max_size=30),
       st.integers(1, 4), st.floats(0.0, 0.5))
def test_pulses_and_waveform_equal_the_explicit_loops_for_any_advance_and_render_split(cmds, advances, render_every, tail):
    dated = _dated(cmds)
    t_end = dated[-1][0] + tail
    drv, chunks = _drive(dated, t_end, [100.0 + a for a in advances], render_every)
    ref_pulses, ref_wave = delivered(dated, t_end, RATE, [0, 1])

    got = sorted(drv.pulse_log, key=lambda p: (p[1], p[0], p[2], p[3]))
    want = sorted(ref_pulses, key=lambda p: (p[1], p[0], p[2], p[3]))
    assert len(got) == len(want)
    np.testing.assert_allclose([p[0] for p in got], [p[0] for p in want], rtol=0, atol=1e-12)
    assert [p[1:] for p in got] == [p[1:] for p in want]

    # the rendered chunks follow each other without a gap and equal the sampled reference
    firsts = [c[0] for c in chunks]
    sizes = [c[2].shape[0] for c in chunks]
    assert firsts == [sum(sizes[:i]) for i in range(len(sizes))]
    wave = np.concatenate([c[2] for c in chunks]) if chunks else np.zeros((0, 10))
    assert wave.shape == ref_wave.shape
    np.testing.assert_allclose(wave, ref_wave, rtol=0, atol=1e-12)
    for first, t0, _data in chunks:
        assert t0 == dated[0][0] + first / RATE

    # the report counts the same pulses and charge
    rep = drv.report()
    for c in (0, 1):
        n = sum(1 for p in want if p[1] == c)
        assert rep["pulses"].get(str(c), 0) == n
        assert rep["charge_uc"].get(str(c), 0.0) == pytest.approx(ref_wave[:, 5 * c + 3].sum() + sum(
            p[2] * p[3] / 1000 for p in want if p[1] == c and p[0] >= dated[0][0] + len(ref_wave) / RATE), abs=1e-6)


def test_a_level_keeps_its_pulse_clock_through_amplitude_changes_and_a_new_frequency_waits_one_period():
    drv = SimulatedDriver()
    drv.open()
    drv.deliver(make_command(CMD_LEVEL, 0, 1.0, 60, 100)[0], 0.0, 0.0)
    drv.deliver(make_command(CMD_LEVEL, 0, 2.0, 60, 100)[0], 0.0155, 0.0155)  # between pulses 1 and 2
    drv.deliver(make_command(CMD_LEVEL, 0, 2.0, 60, 50)[0], 0.0305, 0.0305)  # 50 Hz: not before 0.03 + 1/50
    drv.safe_state(0.0705)
    t = [p[0] for p in drv.pulse_log]
    np.testing.assert_allclose(t, [0.0, 0.01, 0.02, 0.03, 0.05, 0.07], atol=1e-12)
    assert [p[2] for p in drv.pulse_log] == [1.0, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert drv.report()["on_time_s"] == {"0": 0.0705}


def test_a_safe_state_cancels_the_rest_of_a_train():
    drv = SimulatedDriver()
    drv.open()
    drv.deliver(make_command(CMD_TRAIN, 1, 1.0, 90, 20, 1.0)[0], 5.0, 5.0)
    drv.safe_state(5.12)  # pulses at 5.00, 5.05, 5.10 only
    assert drv.report()["pulses"] == {"1": 3}
    drv.advance(7.0)
    assert drv.report()["pulses"] == {"1": 3}


RAMP_PROFILE = """
device: simulated
watchdog_s: 0.5
channels:
  - channel: 0
    max_amplitude_ma: 4.0
    pulse_width_us: [30, 300]
    max_frequency_hz: 200
    max_charge_per_phase_uc: 1.0
    ramp_up_ma_per_s: 1.0
    ramp_down_ma_per_s: 2.0
"""


def _loop_graph(tmp_path, tag, timebase="stream"):
    prof = tmp_path / "ramp.yaml"
    prof.write_text(RAMP_PROFILE)
    return {
        "runtime": {"speed": "max"},
        "nodes": [
            {"id": "src", "type": "synthetic", "process": "acquire",
             "params": {"n_channels": 2, "sfreq": 250.0, "chunk_size": 25, "seed": 11, "duration_s": 30.0,
                        "oscillations": [], "burst_rate_hz": 0.1, "burst_freq_hz": 10.0, "burst_amplitude": 40.0,
                        "burst_duration_s": 5.0}},
            {"id": "bpow", "type": "bandpower", "inputs": ["src"], "process": "acquire",
             "params": {"bands": {"alpha": [8.0, 12.0]}, "window_s": 0.5, "step_s": 0.1, "average": True, "mode": "db"}},
            {"id": "ctl", "type": "threshold", "inputs": ["bpow"], "process": "control",
             "params": {"threshold": 15.0, "amplitude_ma": 2.0, "deadline_ms": 20.0}},
            {"id": "stim", "type": "stimulator", "inputs": ["ctl"], "process": "stimulate",
             "params": {"profile": str(prof), "timebase": timebase, "waveform_rate": 500.0}},
            {"id": "rec", "type": "jsonl", "inputs": ["stim.decisions", "stim.delivered"], "process": "sink",
             "params": {"path": str(tmp_path / f"{tag}.jsonl")}},
        ],
    }


def test_stream_timebase_replays_to_the_same_decisions_and_waveform_and_ramps_in_data_time(write_graph, run_graph, tmp_path):
    runs = []
    for tag in ("a", "b"):
        code, rep, _ = run_graph(write_graph(_loop_graph(tmp_path, tag), f"{tag}.yaml"))
        assert code == 0 and rep["errors"] == []
        runs.append((tmp_path / f"{tag}.jsonl").read_text().splitlines())
        assert rep["streams"]["stim.delivered"]["gaps"] == 0
    a, b = ([json.loads(x) for x in r] for r in runs)
    dec = [r for r in a if r["stream"] == "stim.decisions"]
    wave = [r for r in a if r["stream"] == "stim.delivered"]
    # the same, bit for bit (decision times are stream times with timebase 'stream')
    key = lambda rows, s: [r for r in rows if r["stream"] == s]  # noqa: E731
    assert key(a, "stim.decisions") == key(b, "stim.decisions")
    assert key(a, "stim.delivered") == key(b, "stim.delivered")
    assert any(r["reason"].startswith("ramp:") for r in dec)
    assert all(d["time"] == d["t_stream"] or d["status"] != 0 for d in dec)

    amp = np.array([r["values"]["ch0.amplitude_ma"] for r in wave])
    t = np.array([r["t"] for r in wave])
    assert [r["index"] for r in wave] == list(range(len(wave)))
    assert amp.max() == 2.0 and amp[-1] == 0.0
    ups = np.flatnonzero((amp[:-1] == 0) & (amp[1:] > 0))
    downs = np.flatnonzero((amp[:-1] > 0) & (amp[1:] == 0))
    assert len(ups) >= 2 and len(downs) >= 2  # the bursts switch stimulation on and off, more than once
    # each level step is at most rate x the time since the previous one, in data time: up 1 mA/s, down 2 mA/s
    steps = np.flatnonzero(np.diff(amp)) + 1
    dt = np.diff(t[steps], prepend=t[steps[0]] - 0.1)
    da = np.diff(amp[np.r_[steps[0] - 1, steps]])
    dt = dt + 1 / 500.0  # a step shows at the first sample after it: one sample period of slack
    assert (da <= 1.0 * dt + 1e-9).all() and (da >= -2.0 * dt - 1e-9).all()
    full = np.flatnonzero(amp == 2.0)
    assert t[full[0]] - t[ups[0] + 1] >= 1.8  # 2 mA at 1 mA/s: about two seconds of data, whatever the replay speed
    # pulses: 130 Hz while on, and the charge column adds up to the driver's own count
    pulses = np.array([r["values"]["ch0.pulses"] for r in wave])
    assert pulses.sum() == pytest.approx((amp > 0).sum() / 500.0 * 130.0, rel=0.02)


def test_stream_timebase_is_refused_for_a_device_driver(write_graph, tmp_path):
    from rtneuro.config import load_graph

    graph = _loop_graph(tmp_path, "x")
    graph["nodes"][3]["params"] = {"driver": "lsl_markers", "profile": "lsl_markers", "timebase": "stream"}
    with pytest.raises(ConfigError, match="timebase: 'stream' is for the simulated driver only"):
        load_graph(write_graph(graph))
