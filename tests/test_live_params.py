"""Live parameters (issue 15): each node type's ``live`` declaration and its ``update()``.

For every node type with live parameters: the names are fields of its
parameters, no live change alters the node's output streams, a node built
with the new values passes its own checks, and a change made by
``update()`` at a chunk boundary gives the same output whatever the split
of the chunks before and after it. Where the result can be written down
independently, it is compared with a reference that switches at the same
sample: a naive loop (threshold, PID, phase triggers), scipy's ``sosfilt``
(band-pass, notch), or the runs with the old and the new values on either
side of the change (spikes, bursts, quality flags).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy.signal import butter, iirnotch, sosfilt, sosfilt_zi, tf2sos

from rtneuro.decoders.adaptive import AdaptiveLda
from rtneuro.decoders.linear import LinearDecoder
from rtneuro.messages import CMD_HOLD, CMD_LEVEL, CMD_OFF, EVENT_DTYPE, Chunk, StreamMeta
from rtneuro.nodes import NODE_TYPES, NodeContext, build_params, node_class
from rtneuro.nodes.base import Source

FEAT = StreamMeta(name="f", kind="feat", sfreq=10.0, ch_names=("beta",), units=("dB",))
EEG = StreamMeta(name="eeg", kind="sig", sfreq=250.0, ch_names=("C3", "C4"), ch_types=("eeg", "eeg"), units=("uV", "uV"))
PROBE = StreamMeta(name="probe", kind="sig", sfreq=20000.0, ch_names=("a", "b"), units=("uV", "uV"))
EVT = StreamMeta(name="ph.events", kind="evt", sfreq=0.0, dtype="event", event_id={"phase_trigger": 1})
GATE = StreamMeta(name="b", kind="feat", sfreq=100.0, ch_names=("above", "burst"), desc={"step": 1})
TASK = StreamMeta(name="task", kind="feat", sfreq=20.0, ch_names=tuple(f"u{i}" for i in range(6)))
KIN = StreamMeta(name="task.kinematics", kind="feat", sfreq=20.0,
                 ch_names=("cursor_x", "cursor_y", "target_x", "target_y", "intended_vx", "intended_vy", "dist"))

#: The live parameters every feature controller of rtneuro.nodes.adaptive takes.
COMMON = {"pulse_width_us": 90.0, "frequency_hz": 60.0, "ramp_s": 0.3, "train_s": 0.2, "deadline_ms": 30.0, "nan_hold_s": 1.0}

#: Per node type: inputs, parameters, and a few live changes (each alone) to a valid new value.
CASES: dict[str, tuple[list[StreamMeta], dict, dict]] = {
    "threshold": ([FEAT], {"threshold": 0.0, "hysteresis": 0.2, "min_hold_s": 0.45},
                  {"threshold": 0.5, "hysteresis": 0.05, "min_hold_s": 0.95, "amplitude_ma": 2.5, "pulse_width_us": 90.0,
                   "frequency_hz": 60.0, "ramp_s": 0.3, "deadline_ms": 20.0, "gate_action": "hold"}),
    "pulse": ([FEAT, EVT, GATE], {"labels": ["phase_trigger"], "gate_feature": "burst"},
              {"amplitude_ma": 0.5, "pulse_width_us": 200.0, "deadline_ms": 10.0, "gate_hold_s": 0.2}),
    "adbs": ([FEAT], {"threshold": 0.0}, {"threshold": 0.5, "onset_s": 0.5, "termination_s": 0.1, "amplitude_ma": 1.0,
                                          "pulse_width_us": 90.0, "frequency_hz": 60.0, "ramp_s": 0.0, "train_s": 0.2,
                                          "deadline_ms": 30.0, "nan_hold_s": 1.0, "lower": -0.5, "upper": 0.5,
                                          "min_amplitude_ma": 0.5, "step_ma": 0.25}),
    "pid": ([FEAT], {"target": 0.0}, {**COMMON, "target": 0.5, "kp": 0.3, "ki": 0.2, "kd": 0.1, "min_amplitude_ma": 0.5,
                                      "max_amplitude_ma": 1.5, "min_change_ma": 0.1}),
    "lif_trigger": ([FEAT], {"offset": 0.0, "gain_na": 2.0}, {**COMMON, "offset": 0.5, "gain_na": 1.0, "amplitude_ma": 1.0,
                                                              "train_s": 0.5}),
    "rate_adaptive": ([FEAT], {"target": 0.0}, {**COMMON, "target": 0.5, "scale": 2.0, "eta": 0.0, "w_min": -1.0, "w_max": 1.0,
                                                "max_amplitude_ma": 1.0, "min_change_ma": 0.1}),
    "bandpass": ([EEG], {"l_freq": 1.0, "h_freq": 40.0}, {"l_freq": 4.0, "h_freq": 30.0}),
    "notch": ([EEG], {"freq": 50.0}, {"freq": 60.0, "q": 10.0}),
    "phase": ([EEG], {"band": [8.0, 13.0], "score": False}, {"target_deg": 90.0, "amplitude_min": 0.5, "min_interval_s": 0.3}),
    "spike_detect": ([PROBE], {"noise_init_s": 0.25, "noise_tau_s": None},
                     {"threshold": 8.0, "noise_tau_s": 5.0, "refractory_ms": 2.0}),
    "bursts": ([EEG], {"baseline_s": 2.0, "baseline_min_s": 1.0, "update_s": 0.5},
               {"threshold": 2.5, "lower": 1.5, "min_duration_s": 0.3, "max_duration_s": 3.0}),
    "quality": ([EEG], {"jump": 500.0, "hold_s": 0.0},
                {"jump": 200.0, "clip": 300.0, "flat_s": None, "hold_s": 0.2, "min_bad_channels": 2}),
    "neuron_model": ([FEAT], {"model": "lif", "dt_ms": 1.0, "gain": 1.0}, {"gain": 2.0, "offset": 0.5}),
    "kalman": ([TASK, KIN], {"calibrate_s": 2.0, "clda": {"batch_s": 1.0}}, {"adapting": False}),
    "console": ([FEAT], {}, {"every_s": 0.1, "max_channels": 2}),
    "jsonl": ([FEAT], {"path": "out.jsonl"}, {"flush_every": 10}),
}

#: Live changes whose node announces the value in its stream metadata (``source`` / ``desc``, not the stream's
#: shape): the stream keeps its announced metadata after update(); a fresh node built with the value differs there.
DESCRIBED = {("bandpass", "l_freq"), ("bandpass", "h_freq"), ("notch", "freq"), ("notch", "q")}
#: Node types tested elsewhere: the stimulator's live limits belong to the safety layer (tests/test_safety.py and
#: the stimulator's tests; the replay check's session_stimulator is one, tests/test_control_replay.py); the decoder needs a trained model file (its adaptation switch is tested below on
#: AdaptiveLda, its declaration by test_live_names_are_fields_and_tuples).
ELSEWHERE = {"stimulator", "session_stimulator", "decoder"}

CONTRACT = ("name", "kind", "sfreq", "ch_names", "ch_types", "units", "dtype", "event_id")


def _ctx(tmp_path=None) -> NodeContext:
    return NodeContext(node_id="n") if tmp_path is None else NodeContext(node_id="n", base_dir=tmp_path)


def _params(kind: str, raw: dict):
    return build_params(node_class(kind).Params, raw, f"node 'n' ({kind}) params")


def _make(kind: str, raw: dict, inputs, tmp_path=None):
    return node_class(kind)(_params(kind, raw), list(inputs), _ctx(tmp_path))


def _pairs(out):
    if out is None:
        return []
    if isinstance(out, Chunk):
        return [("", out)]
    return list(out)


def _feed(node, x: np.ndarray, sfreq: float, cuts, k: int | None = None, new=None) -> dict[str, np.ndarray]:
    """Feed ``x`` (port 0) cut at ``cuts``; ``update(new)`` at the boundary before sample ``k``. Data by port."""
    edges = [0, *sorted(set(cuts)), len(x)]
    got: dict[str, list] = {}
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        if a == k and new is not None:
            node.update(new)
        if b == a:
            continue
        for name, ch in _pairs(node.process(Chunk(np.ascontiguousarray(x[a:b]), a, a / sfreq, sfreq, []), 0)):
            got.setdefault(name, []).append(ch.data)
    return {name: np.concatenate(parts) for name, parts in got.items()}


def _same(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Equal arrays; an event's ``time`` (chunk t0 plus an offset) to rounding, every other field exactly."""
    if got.dtype.names and "time" in got.dtype.names:
        assert got.shape == want.shape, what
        for f in got.dtype.names:
            if f == "time":
                np.testing.assert_allclose(got[f], want[f], rtol=1e-12, atol=1e-9, err_msg=what)
            else:
                np.testing.assert_array_equal(got[f], want[f], err_msg=what)
        return
    np.testing.assert_array_equal(got, want, err_msg=what)


def _splits(n: int, k: int, seed: int) -> list[int]:
    """Random cuts keeping a boundary at ``k`` (several before and after it)."""
    rng = np.random.default_rng(seed)
    before = rng.integers(1, k, size=rng.integers(0, 6)).tolist() if k > 1 else []
    after = rng.integers(k + 1, n, size=rng.integers(0, 6)).tolist() if n - k > 1 else []
    return sorted({*before, k, *after})


def _signal(kind: str, n: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """A real-ish input for each node type's first input."""
    rng = np.random.default_rng(seed)
    meta = CASES[kind][0][0]
    fs = meta.sfreq
    t = np.arange(n) / fs
    if meta is FEAT:
        return (np.sin(2 * np.pi * t / 6.0) + 0.3 * rng.standard_normal(n))[:, None], fs
    if meta is PROBE:
        x = 10.0 * rng.standard_normal((n, 2))
        for i, pos in enumerate(range(6000, n - 50, 1500)):
            x[pos:pos + 8, i % 2] -= (300.0 if i % 3 == 0 else 90.0) * np.hanning(8)
        return x, fs
    x = 20.0 * np.sin(2 * np.pi * 10.0 * t)[:, None] * (1 + 0.8 * np.sin(2 * np.pi * t / 3.0))[:, None]
    x = x + 5.0 * rng.standard_normal((n, 2)) + 30.0
    if kind == "quality":
        x[200, 0] += 350.0
        x[900, 1] += 700.0
        x[1500, 0] += 350.0
    return x, fs


#: Single-input node types fed for the chunking checks: (frames or samples, change boundary).
RUNS = {"threshold": (300, 137), "adbs": (300, 137), "pid": (300, 137), "lif_trigger": (300, 137),
        "rate_adaptive": (200, 97), "bandpass": (1000, 411), "notch": (1000, 411), "phase": (1500, 733),
        "spike_detect": (30000, 15500), "bursts": (2000, 1250), "quality": (2000, 1200), "neuron_model": (200, 97)}


# -- 4. the declarations ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(NODE_TYPES))
def test_live_names_are_fields_and_tuples(kind):
    cls = node_class(kind)
    if issubclass(cls, Source):
        return  # Source.live is the LSL-source flag (a bool); sources declare no live parameters yet
    assert isinstance(cls.live, tuple), f"{kind}.live must be a tuple of parameter names"
    fields = {f.name for f in dataclasses.fields(cls.Params)}
    assert set(cls.live) <= fields, f"{kind}.live names {set(cls.live) - fields}, not parameters"
    assert len(set(cls.live)) == len(cls.live)
    assert set(cls.stricter) <= set(cls.live)
    if cls.live and kind not in ELSEWHERE:
        assert kind in CASES, f"{kind} declares live parameters: add it to CASES"
        assert set(CASES[kind][2]) == set(cls.live), f"CASES[{kind!r}] must change each live parameter once"


@pytest.mark.parametrize("kind", sorted(CASES))
def test_no_live_change_alters_the_outputs_and_the_new_values_pass_the_node_checks(kind, tmp_path):
    inputs, raw, changes = CASES[kind]
    node = _make(kind, raw, inputs, tmp_path)
    before = {k: m.to_dict() for k, m in node.outputs.items()}
    for name, value in changes.items():
        new = _params(kind, {**raw, name: value})
        fresh = node_class(kind)(new, inputs, _ctx(tmp_path))  # the node's own checks pass
        after = {k: m.to_dict() for k, m in fresh.outputs.items()}
        assert after.keys() == before.keys()
        for port in before:
            assert {f: after[port][f] for f in CONTRACT} == {f: before[port][f] for f in CONTRACT}, (kind, name, port)
            if (kind, name) not in DESCRIBED:
                assert after[port] == before[port], (kind, name, port)
        node.update(new)
        assert {k: m.to_dict() for k, m in node.outputs.items()} == before
        assert node.params == new


# -- 2. and 3.: chunking, metadata ------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(RUNS))
def test_a_change_at_a_boundary_does_not_depend_on_the_split(kind):
    inputs, raw, changes = CASES[kind]
    n, k = RUNS[kind]
    x, fs = _signal(kind, n)
    new = _params(kind, {**raw, **changes})
    node = _make(kind, raw, inputs)
    meta = {p: m.to_dict() for p, m in node.outputs.items()}
    ref = _feed(node, x, fs, [k], k, new)
    assert {p: m.to_dict() for p, m in node.outputs.items()} == meta
    assert ref, f"{kind}: no output to compare"
    for seed in range(3):
        got = _feed(_make(kind, raw, inputs), x, fs, _splits(n, k, seed), k, new)
        assert got.keys() == ref.keys()
        for port in ref:
            _same(got[port], ref[port], f"{kind} port {port!r} split {seed}")
    unchanged = _feed(_make(kind, raw, inputs), x, fs, [k])
    if kind not in ("console", "neuron_model") and all(np.array_equal(unchanged[p], ref[p]) for p in ref):
        pytest.fail(f"{kind}: the change made no difference to the output; pick a change that shows")


# -- 1. equivalence with references ----------------------------------------------------------------


def _threshold_ref(v, pa, pb, k, fs):
    """Naive loop: old parameters before frame k, new from k; a changed waveform while on is re-sent."""
    on, tc, relevel, out = False, -math.inf, False, []
    waveform = ("amplitude_ma", "pulse_width_us", "frequency_hz", "ramp_s")
    for i, vi in enumerate(v):
        p = pa if i < k else pb
        if i == k and on and any(getattr(pa, f) != getattr(pb, f) for f in waveform):
            relevel = True
        t = i / fs
        kind = CMD_HOLD
        if t - tc < p.min_hold_s:
            if on and relevel:
                kind, relevel = CMD_LEVEL, False
        elif not on and vi > p.threshold:
            on, tc, relevel, kind = True, t, False, CMD_LEVEL
        elif on and vi < p.threshold - p.hysteresis:
            on, tc, relevel, kind = False, t, False, CMD_OFF
        elif on and relevel:
            kind, relevel = CMD_LEVEL, False
        out.append((kind, p.amplitude_ma if kind == CMD_LEVEL else 0.0))
    return np.array(out)


@pytest.mark.parametrize("amplitude_only", [True, False])
def test_threshold_switch_equals_the_naive_loop(amplitude_only):
    _, raw, _ = CASES["threshold"]
    x, fs = _signal("threshold", 300)
    pa = _params("threshold", raw)
    on_at = _threshold_ref(x[:, 0], pa, pa, 300, fs)
    state = np.cumsum(np.where(on_at[:, 0] == CMD_LEVEL, 1, 0) - np.where(on_at[:, 0] == CMD_OFF, 1, 0))
    k = int(np.nonzero((state == 1) & (np.arange(300) > 120))[0][2])  # stimulating at the change
    change = {"amplitude_ma": 2.5} if amplitude_only else {"threshold": 0.4, "hysteresis": 0.4, "min_hold_s": 0.95,
                                                           "amplitude_ma": 0.5}
    pb = _params("threshold", {**raw, **change})
    ref = _threshold_ref(x[:, 0], pa, pb, k, fs)
    got = _feed(_make("threshold", raw, [FEAT]), x, fs, _splits(300, k, 1), k, pb)[""]
    np.testing.assert_array_equal(got["kind"], ref[:, 0])
    np.testing.assert_array_equal(got["amplitude_ma"], ref[:, 1])
    if amplitude_only:  # the new amplitude goes out on the frame after the change, without a switch
        assert got["kind"][k] == CMD_LEVEL and got["amplitude_ma"][k] == 2.5


def _pid_ref(v, pa, pb, k, fs):
    """Naive PID loop with a bumpless ki change at frame k (integral rescaled by ki_old / ki_new)."""
    integral, prev, amp_sent, out = 0.0, None, 0.0, []
    dt = 1.0 / fs
    for i, vi in enumerate(v):
        p = pa if i < k else pb
        if i == k and pb.ki != pa.ki:
            integral = integral * pa.ki / pb.ki if pa.ki > 0 and pb.ki > 0 else 0.0
        e = vi - p.target
        d = 0.0 if prev is None else (vi - prev) / dt
        prev = vi
        u = p.kp * e + p.ki * (integral + e * dt) + p.kd * d
        if p.min_amplitude_ma < u < p.max_amplitude_ma or (u >= p.max_amplitude_ma and e < 0) or (u <= p.min_amplitude_ma and e > 0):
            integral += e * dt
        amp = min(p.max_amplitude_ma, max(p.min_amplitude_ma, p.kp * e + p.ki * integral + p.kd * d))
        if abs(amp - amp_sent) < p.min_change_ma and not (amp == 0 < amp_sent) and amp_sent <= p.max_amplitude_ma:
            out.append(amp_sent)
            continue
        amp_sent = max(0.0, amp)
        out.append(amp_sent)
    return np.array(out)


def test_pid_switch_keeps_the_integral_term_and_equals_the_naive_loop():
    raw = {"target": 0.0, "kp": 0.2, "ki": 0.4, "max_amplitude_ma": 3.0, "min_change_ma": 0.0}
    x, fs = _signal("pid", 300)
    pa = _params("pid", raw)
    pb = _params("pid", {**raw, "ki": 0.1, "target": 0.3, "max_amplitude_ma": 0.8, "min_change_ma": 0.05})
    k = 150
    node = _make("pid", raw, [FEAT])
    out = _feed(node, x, fs, _splits(300, k, 2), k, pb)
    got = out["state"][:, 3]  # amplitude_ma state column
    np.testing.assert_allclose(got, _pid_ref(x[:, 0], pa, pb, k, fs), rtol=0, atol=1e-12)
    assert got[k:].max() <= 0.8
    # bumpless: the integral term in mA is the same either side of the change
    probe = _make("pid", raw, [FEAT])
    _feed(probe, x[:k], fs, [])
    term = probe.params.ki * probe.integral
    probe.update(pb)
    assert probe.params.ki * probe.integral == pytest.approx(term, rel=1e-12)


def test_adbs_lowered_amplitude_goes_out_at_once_and_the_onset_count_carries_on():
    raw = {"threshold": 0.0, "onset_s": 0.3, "termination_s": 0.3, "amplitude_ma": 2.0, "ramp_s": 0.0}
    x = np.full((40, 1), 1.0)
    node = _make("adbs", raw, [FEAT])
    first = _feed(node, x[:10], 10.0, [])[""]
    assert node.amplitude == 2.0 and CMD_LEVEL in first["kind"].tolist()
    node.update(_params("adbs", {**raw, "amplitude_ma": 1.0, "threshold": 0.5}))
    out = node.process(Chunk(x[10:12], 10, 1.0, 10.0, []))
    cmds = dict(out)[""].data
    assert cmds["kind"][0] == CMD_LEVEL and cmds["amplitude_ma"][0] == 1.0 and cmds["kind"][1] == CMD_HOLD
    assert node.steps_up == 1  # not a new onset
    # dual: the running amplitude is brought into the new limits
    dual = {"mode": "dual", "lower": -0.5, "upper": 0.5, "onset_s": 0.1, "amplitude_ma": 3.0, "step_ma": 1.0}
    node = _make("adbs", dual, [FEAT])
    _feed(node, x[:10], 10.0, [])
    assert node.amplitude == 3.0
    node.update(_params("adbs", {**dual, "amplitude_ma": 1.5}))
    x0 = np.zeros((1, 1))  # between the thresholds: no step of its own
    cmds = dict(node.process(Chunk(x0, 10, 1.0, 10.0, [])))[""].data
    assert cmds["amplitude_ma"][0] == 1.5 and node.amplitude == 1.5


def test_rate_adaptive_keeps_its_weights_clips_them_to_new_bounds_and_stops_learning_at_eta_0():
    raw = {"target": 0.0, "eta": 0.5}
    x, fs = _signal("rate_adaptive", 200)
    node = _make("rate_adaptive", raw, [FEAT])
    _feed(node, x[:100], fs, [])
    w = node.W.copy()
    assert np.abs(w).max() > 0.3
    node.update(_params("rate_adaptive", {**raw, "eta": 0.0, "w_min": -0.3, "w_max": 0.3}))
    np.testing.assert_array_equal(node.W, np.clip(w, -0.3, 0.3))
    w = node.W.copy()
    _feed(node, x[100:], fs, [])
    np.testing.assert_array_equal(node.W, w)


def test_lif_trigger_keeps_the_membrane_across_a_change():
    raw = {"offset": 0.0, "gain_na": 2.0}
    x, fs = _signal("lif_trigger", 300)
    a = _make("lif_trigger", raw, [FEAT])
    _feed(a, x[:150], fs, [])
    v = a.v
    a.update(_params("lif_trigger", {**raw, "gain_na": 0.0}))
    assert a.v == v and float(a.neuron.v[0]) == v


@pytest.mark.parametrize("kind", ["bandpass", "notch"])
def test_filter_switch_equals_scipy_restarting_from_the_last_input(kind):
    inputs, raw, changes = CASES[kind]
    n, k = RUNS[kind]
    x, fs = _signal(kind, n)
    x[300, 1] = np.nan  # a held sample before the change
    if kind == "bandpass":
        sa = butter(4, (raw["l_freq"], raw["h_freq"]), "bandpass", fs=fs, output="sos")
        sb = butter(4, (changes["l_freq"], changes["h_freq"]), "bandpass", fs=fs, output="sos")
    else:
        def design(f0, q):
            return np.concatenate([tf2sos(*iirnotch(f0 * m, q, fs=fs)) for m in range(1, int(math.ceil(fs / 2 / f0)))])
        sa, sb = design(raw["freq"], 30.0), design(changes["freq"], changes["q"])
    held = x.copy()
    held[300, 1] = held[299, 1]
    want = np.empty_like(x)
    want[:k] = sosfilt(sa, held[:k], axis=0, zi=sosfilt_zi(sa)[:, :, None] * held[0][None, None, :])[0]
    want[k:] = sosfilt(sb, held[k:], axis=0, zi=sosfilt_zi(sb)[:, :, None] * held[k - 1][None, None, :])[0]
    new = _params(kind, {**raw, **changes})
    got = _feed(_make(kind, raw, inputs), x, fs, _splits(n, k, 3), k, new)[""]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9 * np.abs(want).max())


def test_phase_triggers_switch_target_as_the_naive_crossing_loop():
    inputs, raw, _ = CASES["phase"]
    n, k = RUNS["phase"]
    x, fs = _signal("phase", n)
    pa = _params("phase", {**raw, "min_interval_s": 0.0})
    pb = _params("phase", {**raw, "min_interval_s": 0.0, "target_deg": 120.0})
    est = _feed(_make("phase", {**raw, "min_interval_s": 0.0}, inputs), x, fs, [])[""]
    node = _make("phase", {**raw, "min_interval_s": 0.0}, inputs)
    win = node.window
    omega = node.omega
    want, prev = [], None
    for r, (ph, _amp) in enumerate(est.tolist()):
        pos = win - 1 + r
        target = math.radians((pa if pos < k else pb).target_deg)
        d = (ph - (target - 0.5 * omega) + math.pi) % (2 * math.pi) - math.pi
        if prev is not None:
            dp = (prev - (target - 0.5 * omega) + math.pi) % (2 * math.pi) - math.pi
            if dp < 0.0 <= d and d - dp < math.pi:
                want.append(pos)
        prev = ph
    got = _feed(node, x, fs, _splits(n, k, 4), k, pb)["events"]["index"]
    assert any(p >= k for p in want) and any(p < k for p in want)
    np.testing.assert_array_equal(got, want)


def _events_with(kind, raw, x, fs, inputs):
    return _feed(_make(kind, raw, inputs), x, fs, [])


def test_spike_threshold_switch_is_the_old_detections_then_the_new():
    inputs, raw, _ = CASES["spike_detect"]
    n, k = RUNS["spike_detect"]
    x, fs = _signal("spike_detect", n)
    rb = {**raw, "threshold": 12.0}
    ea = _events_with("spike_detect", raw, x, fs, inputs)["events"]
    eb = _events_with("spike_detect", rb, x, fs, inputs)["events"]
    want = np.concatenate([ea[ea["index"] < k], eb[eb["index"] >= k]])
    assert len(ea[ea["index"] >= k]) > len(eb[eb["index"] >= k]) > 0
    got = _feed(_make("spike_detect", raw, inputs), x, fs, _splits(n, k, 5), k, _params("spike_detect", rb))["events"]
    _same(got, want, "spike events")


def test_bursts_thresholds_become_the_new_multiples_of_the_same_baseline():
    inputs, raw, _ = CASES["bursts"]
    n, k = RUNS["bursts"]
    x, fs = _signal("bursts", n)
    rb = {**raw, "threshold": 2.0, "lower": 1.2}
    node_a = _make("bursts", raw, inputs)
    a = _feed(node_a, x, fs, [k])[""]
    b = _events_with("bursts", rb, x, fs, inputs)[""]
    node = _make("bursts", raw, inputs)
    got = _feed(node, x, fs, _splits(n, k, 6), k, _params("bursts", rb))[""]
    m = k // node.step  # frames complete before the change
    C = len(node.picks)
    np.testing.assert_array_equal(got[:m], a[:m])
    np.testing.assert_array_equal(got[:, :C], a[:, :C])  # envelopes: untouched
    assert np.isfinite(b[m:, C:2 * C]).all()
    np.testing.assert_allclose(got[m:, C:2 * C], b[m:, C:2 * C], rtol=1e-12)


def test_quality_jump_switch_is_the_old_flags_then_the_new():
    inputs, raw, _ = CASES["quality"]
    n, k = RUNS["quality"]
    x, fs = _signal("quality", n)
    rb = {**raw, "jump": 200.0}
    fa = _events_with("quality", raw, x, fs, inputs)[""]
    fb = _events_with("quality", rb, x, fs, inputs)[""]
    node = _make("quality", raw, inputs)
    got = _feed(node, x, fs, _splits(n, k, 7), k, _params("quality", rb))[""]
    m = k // node.step
    np.testing.assert_array_equal(got, np.concatenate([fa[:m], fb[m:]]))
    assert not np.array_equal(fa[m:], fb[m:])


# -- nodes with several inputs -----------------------------------------------------------------------


def _trigger(index: int) -> Chunk:
    ev = np.array([(index, index / 100.0, 1, -1, 0.0, 1.0, b"phase_trigger")], dtype=EVENT_DTYPE)
    return Chunk(ev, index, index / 100.0, 0.0, [])


def test_pulse_takes_a_new_waveform_and_gate_hold_for_the_triggers_still_to_come():
    inputs, raw, _ = CASES["pulse"]
    node = _make("pulse", raw, inputs)
    gate = np.zeros((100, 2))
    gate[10:20, 1] = 1.0  # burst over samples 10..19
    node.process(Chunk(gate, 0, 0.0, 100.0, [], {"window": [99, 99]}), 2)
    assert node.process(_trigger(5), 1).data["amplitude_ma"][0] == 1.0
    assert node.process(_trigger(15), 1) is None  # in the burst
    node.update(_params("pulse", {**raw, "gate_hold_s": 0.1, "amplitude_ma": 0.5}))
    assert node.gate_hold == 10
    assert node.process(_trigger(27), 1) is None  # 8 samples after the burst: held off by the new hold
    assert node.gated == 2
    assert node.process(_trigger(31), 1).data["amplitude_ma"][0] == 0.5


def test_kalman_pause_stops_clda_batches_and_keeps_the_decoder():
    from rtneuro.nodes.bmi import CursorTask, CursorTaskParams

    task = CursorTask(CursorTaskParams(bin_s=0.05, seed=3, n_units=6, duration_s=30.0), [], NodeContext(node_id="task"))
    task.start(0.0)
    counts, kin = [], []
    while task.next_due() is not None:
        out = dict(task.read())
        counts.append(out[""].data)
        kin.append(out["kinematics"].data)
    Z, K = np.concatenate(counts), np.concatenate(kin)
    raw = {"calibrate_s": 2.0, "clda": {"batch_s": 1.0, "min_bins": 10}}
    node = _make("kalman", raw, [task.outputs[""], task.outputs["kinematics"]])

    def feed(a, b):
        rows = 0
        for port, data in ((0, Z[a:b]), (1, K[a:b])):
            for name, ch in _pairs(node.process(Chunk(data, a, a * 0.05, 20.0, []), port)):
                rows += ch.data.shape[0] if name == "adapt" else 0
        return rows

    assert feed(0, 200) > 0  # calibrated at 40 bins, then a batch every 20
    node.update(_params("kalman", {**raw, "adapting": False}))
    C = node.dec.C.copy()
    assert feed(200, 400) == 0 and node._nb == 0
    np.testing.assert_array_equal(node.dec.C, C)
    node.update(_params("kalman", raw))
    assert feed(400, 419) == 0 and feed(419, 420) == 1  # the first batch after resuming: 20 bins from then on


def test_adaptive_lda_retune_keeps_the_means_and_pulls_them_onto_a_tighter_bound():
    rng = np.random.default_rng(0)
    F = 3
    cov = np.eye(F)
    means = np.array([[0.0, 0.0, 0.0], [1.0, 0.5, 0.0]])
    coef = np.linalg.solve(cov, means.T).T
    inter = -0.5 * np.einsum("kf,kf->k", means, coef) + np.log([0.5, 0.5])
    dec = LinearDecoder(kind="lda", coef=(coef[1] - coef[0])[None], intercept=np.array([inter[1] - inter[0]]),
                        classes=["a", "b"])
    lda = AdaptiveLda(dec, means, cov, np.array([0.5, 0.5]), rate=0.3, max_shift=2.0)
    for _ in range(30):
        lda.update(np.array([3.0, 0.0, 0.0]) + 0.01 * rng.standard_normal(F), 1)
    assert lda.shift()[1] > 1.0
    kept = lda.means.copy()
    lda.retune(0.1, 5.0)
    np.testing.assert_array_equal(lda.means, kept)
    lda.retune(0.1, 0.5)
    assert lda.shift()[1] == pytest.approx(0.5)
    assert lda.rate == 0.1
