"""The simulated brain, the adaptive controllers, and the closed loop between them.

The plant is checked for what the aDBS literature relies on (beta near 17 Hz
without stimulation; high-frequency stimulation suppresses it, dose by dose,
within a second; low-frequency stimulation does not), for chunk invariance,
and end to end in a graph where its LFP goes through the band-pass, band
power, a controller and the gate, and the delivered waveform comes back.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import scipy.signal as ss

from rtneuro.config import load_graph
from rtneuro.errors import ConfigError
from rtneuro.messages import CMD_HOLD, CMD_LEVEL, CMD_OFF, CMD_TRAIN, Chunk, StreamMeta
from rtneuro.models.plant import StnGpeParams, hfs_dose, stn_gpe_init, stn_gpe_step
from rtneuro.nodes import NodeContext, build_params, node_class
from rtneuro.runtime.supervisor import Supervisor

FS = 1000.0
SUB = 10


def _plant(dose, seed=0, p=None):
    p = p or StnGpeParams(w_gs=1.2)
    st = stn_gpe_init(p)
    rng = np.random.default_rng(seed)
    stn_gpe_step(st, p, rng.standard_normal(2000 * SUB), np.zeros(2000), SUB)  # past the start-up
    return stn_gpe_step(st, p, rng.standard_normal(len(dose) * SUB), np.asarray(dose, float), SUB)


def _beta(x):
    f, pxx = ss.welch(x - x.mean(), fs=FS, nperseg=2048)
    return pxx[(f >= 13) & (f <= 30)].sum(), f[np.argmax(pxx)]


def test_the_plant_has_beta_that_stimulation_suppresses_dose_by_dose():
    s0, _, _ = _plant(np.zeros(30000))
    b0, peak = _beta(s0)
    assert 13 <= peak <= 30  # pathological beta
    reductions = []
    for ma in (1.0, 2.0, 3.0):
        s, _, b = _plant(hfs_dose(np.full(30000, ma), np.full(30000, 130.0)))
        reductions.append(1 - _beta(s[2000:])[0] / b0)
        assert b[-1] == pytest.approx(0.8 * ma / (ma + 1.0), rel=1e-6)
    assert reductions[0] < reductions[1] < reductions[2] and reductions[2] > 0.7
    # low-frequency stimulation (20 Hz) is no DBS: same beta
    s, _, b = _plant(hfs_dose(np.full(30000, 3.0), np.full(30000, 20.0)))
    assert b.max() == 0.0 and np.array_equal(s, s0)


def test_beta_falls_within_a_second_of_stimulation_onset_and_comes_back_after_it_stops():
    dose = np.zeros(20000)
    dose[5000:12000] = hfs_dose(np.array([3.0]), np.array([130.0]))[0]
    s, _, _ = _plant(dose, seed=3)
    sos = ss.butter(4, [13, 30], btype="band", fs=FS, output="sos")
    env = np.abs(ss.hilbert(ss.sosfiltfilt(sos, s - s.mean())))
    before, on_late, after = env[1000:5000].mean(), env[6000:12000].mean(), env[14000:20000].mean()
    assert env[5000 + 1000:5000 + 2000].mean() < 0.6 * before  # within a second
    assert on_late < 0.5 * before
    assert after > 0.7 * before  # beta comes back within two seconds of the end


def test_the_plant_model_and_its_node_are_chunk_invariant():
    p = StnGpeParams(w_gs=1.2)
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(3000 * SUB)
    dose = np.r_[np.zeros(1000), np.full(2000, 2.0)]
    a = stn_gpe_step(stn_gpe_init(p), p, noise, dose, SUB)
    st = stn_gpe_init(p)
    parts = [stn_gpe_step(st, p, noise[i * SUB:j * SUB], dose[i:j], SUB) for i, j in ((0, 7), (7, 1500), (1500, 1501), (1501, 3000))]
    for k in range(3):
        assert np.array_equal(a[k], np.concatenate([q[k] for q in parts]))
    cls = node_class("sim_brain")
    outs = []
    for chunk in (7, 50, 1000):
        node = cls(build_params(cls.Params, {"chunk_size": chunk, "duration_s": 3.0, "seed": 4}, "p"), [], NodeContext(node_id="brain"))
        node.start(0.0)
        rows = []
        while node.next_due() is not None:
            rows.append(node.read()[0][1].data)
        outs.append(np.concatenate(rows))
    assert outs[0].shape == (3000, 1) and np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


# -- controllers, frame by frame ---------------------------------------------------------------

FEAT = StreamMeta(name="beta", kind="feat", sfreq=10.0, ch_names=("beta",), ch_types=("misc",), units=("dB",),
                  desc={"window": 500, "step": 100})


def _controller(kind, **params):
    cls = node_class(kind)
    return cls(build_params(cls.Params, params, "p"), [FEAT], NodeContext(node_id="ctl"))


def _drive(ctl, values, chunk=3):
    kinds, amps, states = [], [], []
    values = np.asarray(values, float)
    for a in range(0, len(values), chunk):
        out = ctl.process(Chunk(values[a:a + chunk, None], a, a / 10.0, 10.0, []))
        cmd = dict(out)[""].data
        kinds += cmd["kind"].tolist()
        amps += cmd["amplitude_ma"].tolist()
        states.append(dict(out)["state"].data)
    return kinds, amps, np.concatenate(states)


def test_single_threshold_adbs_debounces_onset_and_termination():
    ctl = _controller("adbs", mode="single", threshold=10.0, onset_s=0.3, termination_s=0.5, amplitude_ma=2.0)
    feature = [5] * 5 + [12, 12, 5] + [12] * 10 + [5] * 3 + [12] + [5] * 10
    kinds, amps, states = _drive(ctl, feature)
    # a 2-frame excursion does nothing; 3 frames above switch on; off only after 5 frames below
    assert kinds[:8] == [CMD_HOLD] * 8
    on = kinds.index(CMD_LEVEL)
    assert on == 10 and amps[on] == 2.0
    off = kinds.index(CMD_OFF)
    assert off == 26 and kinds.count(CMD_LEVEL) == 1  # 3 frames below, one above (resets), then 5 below and kinds.count(CMD_OFF) == 1
    assert states[on, 1] == 2.0 and states[off, 1] == 0.0


def test_dual_threshold_adbs_steps_between_its_bounds():
    ctl = _controller("adbs", mode="dual", lower=8.0, upper=12.0, onset_s=0.2, termination_s=0.2, amplitude_ma=2.0,
                      min_amplitude_ma=0.5, step_ma=0.5)
    kinds, amps, _ = _drive(ctl, [15] * 20 + [10] * 10 + [5] * 20)
    levels = [a for k, a in zip(kinds, amps, strict=True) if k == CMD_LEVEL]
    assert levels == [1.0, 1.5, 2.0, 1.5, 1.0, 0.5]  # up every 0.2 s to the top, hold in between, down to the floor
    assert CMD_OFF not in kinds and ctl.report()["amplitude_ma"] == 0.5


def test_pid_tracks_with_anti_windup():
    ctl = _controller("pid", target=10.0, kp=0.5, ki=1.0, max_amplitude_ma=2.0, min_change_ma=0.0)
    kinds, amps, states = _drive(ctl, [20.0] * 50 + [5.0] * 30)
    assert max(a for a in amps if a) == 2.0
    # saturated at the top: the integral stopped growing (it would be 50 s x 10 x ... without anti-windup)
    assert states[49, 2] < 2.0 / 1.0 + 1e-9
    # and the output comes down within a few frames once the error turns
    assert ctl.report()["amplitude_ma"] == 0.0 and kinds[-30:].count(CMD_OFF) == 1


def test_an_lif_neuron_fires_trains_at_its_analytic_rate():
    from rtneuro.models import LIF, LIFParams

    ctl = _controller("lif_trigger", offset=0.0, gain_na=1.0, neuron={"tau_m_ms": 100.0, "t_ref_ms": 200.0},
                      amplitude_ma=2.0, train_s=0.2, action="train")
    kinds, _, states = _drive(ctl, [2.0] * 300)  # 30 s at 2 nA
    rate = float(LIF.rate_hz(LIFParams(tau_m_ms=100.0, t_ref_ms=200.0), 2.0))
    n = kinds.count(CMD_TRAIN)
    assert abs(n - rate * 30.0) <= 1.5  # the analytic rate (frames quantise spike times to 0.1 s)
    assert states[-1, 2] == n
    quiet = _controller("lif_trigger", offset=0.0, gain_na=1.0)
    assert _drive(quiet, [1.0] * 100)[0].count(CMD_LEVEL) == 0  # R I = 10 mV < 15 mV to threshold: never fires
    burst = _controller("lif_trigger", offset=0.0, gain_na=1.0, train_s=0.3)
    kinds, amps, _ = _drive(burst, [2.0] * 2 + [0.0] * 10)  # one spike (after 139 ms), then nothing
    on = kinds.index(CMD_LEVEL)
    assert kinds.count(CMD_LEVEL) == 1 and kinds[on + 3] == CMD_OFF and amps[on] == 2.0  # 0.3 s of stimulation, then off


def test_the_rate_network_learns_toward_its_target_and_a_refused_command_teaches_it_nothing():
    from rtneuro.messages import DECISION_DTYPE

    ctl = _controller("rate_adaptive", target=10.0, scale=2.0, eta=0.05, max_amplitude_ma=3.0)
    _, amps, states = _drive(ctl, [11.0] * 40)
    assert states[-1, 4] > states[5, 4] + 0.2  # beta above target: the amplitude grows
    assert np.all(np.abs(ctl.W) < 4.0)  # not yet at its bounds: still learning
    w = ctl.W.copy()
    refused = np.zeros(1, dtype=DECISION_DTYPE)
    refused["status"] = 2
    ctl.process(Chunk(refused, 0, 0.0, 0.0, []), port=1)
    _drive(ctl, [11.0] * 10)
    assert np.array_equal(ctl.W, w) and ctl.report()["not_learned"] == 10
    ok = np.zeros(1, dtype=DECISION_DTYPE)
    ctl.process(Chunk(ok, 0, 0.0, 0.0, []), port=1)
    _drive(ctl, [11.0] * 3)
    assert not np.array_equal(ctl.W, w)


@pytest.mark.parametrize("kind,params", [
    ("adbs", {"mode": "single", "threshold": 10.0, "onset_s": 0.0}),
    ("pid", {"target": 10.0}),
    ("rate_adaptive", {"target": 10.0}),
])
def test_non_finite_features_hold_then_switch_stimulation_off(kind, params):
    ctl = _controller(kind, **params)
    kinds, _, _ = _drive(ctl, [30.0] * 30 + [np.nan] * 10 + [30.0] * 3)
    assert ctl.report()["nonfinite"] == 10 and ctl.report()["nan_safe"] == 1
    nan_part = kinds[30:40]
    assert nan_part[:4] == [CMD_HOLD] * 4 and nan_part.count(CMD_OFF) == 1  # held 0.5 s, then off, once


# -- the closed loop ---------------------------------------------------------------------------

def _loop(ctl, duration=20.0, name="loop.yaml", tmp=None, write_graph=None):
    nodes = [
        {"id": "brain", "type": "sim_brain", "process": "loop", "feedback": ["stim.delivered"], "params": {"duration_s": duration, "seed": 2}},
        {"id": "band", "type": "bandpass", "inputs": ["brain"], "process": "loop", "params": {"l_freq": 13.0, "h_freq": 30.0}},
        {"id": "beta", "type": "bandpower", "inputs": ["band"], "process": "loop",
         "params": {"bands": {"beta": [13.0, 30.0]}, "window_s": 0.5, "step_s": 0.1, "average": True, "mode": "db"}},
        {"id": "ctl", "inputs": ["beta"], "process": "loop", **ctl},
        {"id": "stim", "type": "stimulator", "inputs": ["ctl"], "process": "loop", "params": {"timebase": "stream"}},
        {"id": "rec", "type": "jsonl", "inputs": ["stim.decisions", "ctl.state"], "process": "loop",
         "params": {"path": str(tmp / f"{name}.jsonl")}},
    ]
    g = load_graph(write_graph({"name": "loop", "runtime": {"speed": "max"}, "nodes": nodes}, name))
    sup = Supervisor(g, out=io.StringIO(), quiet=True)
    return sup.run(), sup.report, (tmp / f"{name}.jsonl").read_text()


def test_a_closed_loop_on_the_simulated_brain_is_deterministic_and_feedback_is_never_late(write_graph, tmp_path):
    ctl = {"type": "adbs", "params": {"mode": "dual", "lower": 11.0, "upper": 13.0, "amplitude_ma": 3.0}}
    runs = [_loop(ctl, name=f"run{i}.yaml", tmp=tmp_path, write_graph=write_graph) for i in range(2)]
    for code, rep, _ in runs:
        assert code == 0 and rep["errors"] == []
        assert rep["nodes"]["brain"]["late_feedback"] == 0 and rep["nodes"]["brain"]["feedback_samples"] > 15000
        assert rep["nodes"]["ctl"]["steps_up"] > 0 and rep["nodes"]["ctl"]["steps_down"] > 0
    assert runs[0][2] == runs[1][2]  # every decision and controller state, bit for bit
    rows = [json.loads(r) for r in runs[0][2].splitlines()]
    assert any(r["stream"] == "ctl.state" and r["values"]["amplitude_ma"] > 0 for r in rows)


def test_a_rate_network_is_bounded_whatever_it_sees():
    ctl = _controller("rate_adaptive", target=10.0, scale=1.0, eta=1.0, w_min=-2.0, w_max=2.0)
    _drive(ctl, list(np.random.default_rng(0).normal(10, 50, 500)))
    assert np.all(ctl.W <= 2.0) and np.all(ctl.W >= -2.0) and 0 <= ctl.report()["amplitude_ma"] <= 3.0


def test_feedback_is_validated(write_graph):
    base = {"name": "x", "nodes": [
        {"id": "brain", "type": "sim_brain", "feedback": ["stim.delivered"], "params": {"duration_s": 1.0}},
        {"id": "beta", "type": "bandpower", "inputs": ["brain"], "params": {"bands": {"beta": [13.0, 30.0]}, "average": True}},
        {"id": "ctl", "type": "threshold", "inputs": ["beta"], "params": {"threshold": 1.0}},
        {"id": "stim", "type": "stimulator", "inputs": ["ctl"], "params": {"timebase": "stream"}},
    ]}
    load_graph(write_graph(base, "ok.yaml"))
    bad = json.loads(json.dumps(base))
    bad["nodes"][1]["feedback"] = ["stim.delivered"]
    with pytest.raises(ConfigError, match="takes no feedback; only a source that models a system"):
        load_graph(write_graph(bad, "b1.yaml"))
    bad = json.loads(json.dumps(base))
    bad["nodes"][0]["feedback"] = ["stim.decisions"]
    with pytest.raises(ConfigError, match="feedback 'stim.decisions' is a 'cmd' stream; it takes 'sig'"):
        load_graph(write_graph(bad, "b2.yaml"))
    bad = json.loads(json.dumps(base))
    bad["nodes"][0]["feedback"] = ["brain.truth"]
    with pytest.raises(ConfigError, match="has no .*ch0.amplitude_ma"):
        load_graph(write_graph(bad, "b3.yaml"))


# -- any model as a node -----------------------------------------------------------------------

SIG = StreamMeta(name="x", kind="sig", sfreq=1000.0, ch_names=("a", "b"), ch_types=("misc", "misc"), units=("", ""))


def _model_node(**params):
    cls = node_class("neuron_model")
    return cls(build_params(cls.Params, params, "p"), [SIG], NodeContext(node_id="m"))


@pytest.mark.parametrize("model,params,dt,gain", [
    ("lif", {}, 0.1, 2.0), ("hh", {}, 0.025, 10.0), ("adex", {}, 0.1, 600.0), ("izhikevich", {"preset": "RS"}, 0.1, 10.0),
    ("fitzhugh_nagumo", {}, 0.1, 0.5), ("rate", {}, 0.1, 1.0), ("wilson_cowan", {}, 0.1, 1.5),
])
def test_every_model_runs_as_a_node_equal_to_its_kernel_and_chunk_invariant(model, params, dt, gain):
    from rtneuro.models import MODELS, IzhikevichParams

    x = np.column_stack([np.full(400, 1.0), np.linspace(0.0, 2.0, 400)])
    outs, spikes = [], []
    for splits in ((400,), (7, 100, 101, 333)):
        node = _model_node(model=model, params=params, dt_ms=dt, gain=gain)
        rows, ev = [], []
        a = 0
        for b in (*splits, 400) if splits != (400,) else (400,):
            for port, c in node.process(Chunk(x[a:b], a, a / 1000.0, 1000.0, [])) or []:
                (rows if port == "" else ev).append(c.data)
            a = b
        outs.append(np.concatenate(rows))
        spikes.append(np.concatenate(ev) if ev else np.zeros(0))
    assert np.array_equal(outs[0], outs[1]) and len(spikes[0]) == len(spikes[1])
    if len(spikes[0]):  # the same spikes; times to float rounding of the chunks' own start times
        assert np.array_equal(spikes[0]["index"], spikes[1]["index"]) and np.array_equal(spikes[0]["channel"], spikes[1]["channel"])
        np.testing.assert_allclose(spikes[0]["time"], spikes[1]["time"], rtol=0, atol=1e-12)
    # the node is its kernel: the input held over each sample, the main variable at each sample's end
    cls = MODELS[model]
    mp = IzhikevichParams.preset("RS") if model == "izhikevich" else cls.Params(**params)
    st = cls.init_state(mp, 2)
    sub = int(round(1.0 / dt))
    drive = np.repeat(gain * x, sub, axis=0)
    if model == "wilson_cowan":
        ref = cls.step(st, mp, drive, np.zeros_like(drive), dt, len(drive))[0]
    elif model == "rate":
        ref = cls.step(st, mp, drive, dt, len(drive))
    else:
        ref = np.empty_like(drive)
        raster = cls.step(st, mp, drive, dt, len(drive), v_out=ref)
        assert len(spikes[0]) == int(raster.sum())
    assert np.array_equal(outs[0], ref[sub - 1::sub])
    assert np.isfinite(outs[0]).all() and outs[0].std() > 0


def test_a_model_that_blows_up_is_stopped_and_outputs_nan_which_controllers_answer_with_the_safe_state():
    node = _model_node(model="hh", params={"method": "rk4"}, dt_ms=0.5, gain=20.0)
    x = np.ones((200, 2))
    out = dict(node.process(Chunk(x, 0, 0.0, 1000.0, [])))[""].data
    assert np.isnan(out).all()
    rep = node.report()
    assert rep["diverged"] and "reduce dt_ms" in rep["diverged"]
    out = dict(node.process(Chunk(x, 200, 0.2, 1000.0, [])))[""].data
    assert np.isnan(out).all()  # stays stopped
    with pytest.raises(ConfigError, match="not a parameter of model 'lif'"):
        _model_node(model="lif", params={"tau": 3.0})
    with pytest.raises(ConfigError, match="not a whole number of dt_ms"):
        _model_node(model="lif", dt_ms=0.3)


def test_a_plastic_controller_asking_for_more_than_the_profile_allows_is_refused_and_learns_nothing_from_it(write_graph, tmp_path):
    ctl = {"type": "rate_adaptive", "feedback": ["stim.decisions"],
           "params": {"target": 6.0, "scale": 1.0, "eta": 0.05, "max_amplitude_ma": 9.0, "w_init": 2.0}}
    code, rep, text = _loop(ctl, duration=10.0, name="greedy.yaml", tmp=tmp_path, write_graph=write_graph)
    assert code == 0 and rep["errors"] == []
    refusals = rep["nodes"]["stim"]["refusals"]
    assert refusals.get("amplitude", 0) > 0  # the simulated profile stops at 5 mA on channel 0 and does not clip
    assert rep["nodes"]["ctl"]["not_learned"] > 0  # no learning on the frames after a refusal
    rows = [json.loads(r) for r in text.splitlines() if '"stim.decisions"' in r]
    assert all(r["amplitude_ma"] <= 5.0 for r in rows if r["status"] in (0, 1, 3))  # nothing above the profile delivered
