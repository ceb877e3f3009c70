"""The closed-loop cursor BMI: task, Kalman and Poisson decoder nodes, and the loop in a graph.

References and tolerances:

- ``cursor_task``: chunk invariance is exact (chunks of 1, 7 and 50 bins);
  in open loop the cursor moves by the intended velocity of the previous
  bin (to 1e-15), the intended velocity points at the target with the
  configured speed (1e-12), and the mean counts match the population's
  ``CosinePopulation.rates`` (each unit within 5 standard errors);
- ``kalman`` node: its output equals ``KalmanDecoder.predict`` on the same
  counts bit for bit (NaN bins included, which are skipped and counted);
  the inputs joined in any order and chunking give the same output;
- ``poisson_decoder`` node: its posterior equals ``PoissonDecoder.fit`` then
  ``predict_proba`` on the same calibration and test bins bit for bit;
- the loop in a graph: a calibrated decoder hits > 25 targets in 60 s of
  closed loop (seeded; open loop hits about 30 per minute); CLDA from a
  model with preferred directions rotated by 90 degrees raises the per-axis
  correlation of decoded and intended velocity from < 0.3 (first batch) to
  > 0.6 (last batches) and the hits from the first to the last 30 s, while
  the same model without CLDA stays below 0.3 and hits at most 2 targets.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from rtneuro.config import load_graph
from rtneuro.decoders.kalman import KalmanDecoder
from rtneuro.decoders.poisson import PoissonDecoder
from rtneuro.decoders.simulate import simulate_cosine_session
from rtneuro.errors import ConfigError
from rtneuro.messages import Chunk
from rtneuro.nodes import NodeContext, build_params, node_class
from rtneuro.nodes.bmi import KINEMATICS
from rtneuro.runtime.supervisor import Supervisor

TASK = {"bin_s": 0.05, "seed": 3, "n_units": 30}


def _node(kind, params, inputs=(), node_id="n", base_dir=None):
    cls = node_class(kind)
    ctx = NodeContext(node_id=node_id) if base_dir is None else NodeContext(node_id=node_id, base_dir=base_dir)
    return cls(build_params(cls.Params, params, f"node '{node_id}' params"), list(inputs), ctx)


def _run_task(task, with_events=False):
    task.start(0.0)
    counts, kin, events = [], [], []
    while task.next_due() is not None:
        out = dict(task.read())
        counts.append(out[""].data)
        kin.append(out["kinematics"].data)
        if "events" in out:
            events.append(out["events"].data)
    res = np.concatenate(counts), np.concatenate(kin)
    return (*res, np.concatenate(events)) if with_events else res


def test_nodes_build_from_config_params_and_refuse_bad_ones():
    task = _node("cursor_task", {**TASK, "duration_s": 2.0}, node_id="task")
    assert task.outputs[""].n_channels == 30 and task.outputs[""].sfreq == 20.0
    assert task.outputs["kinematics"].ch_names == KINEMATICS
    ins = [task.outputs[""], task.outputs["kinematics"]]
    kf = _node("kalman", {"calibrate_s": 10, "clda": {"batch_s": 5.0, "max_change": 0.3}}, ins, "kf")
    assert kf.outputs[""].ch_names == ("vx", "vy") and "adapt" in kf.outputs
    pd = _node("poisson_decoder", {"calibrate_s": 10, "n_directions": 4}, ins, "pd")
    assert pd.outputs[""].ch_names == ("p:0", "p:90", "p:180", "p:270", "p:rest", "map", "p_max")
    with pytest.raises(ConfigError, match="exactly one of 'model'"):
        _node("kalman", {}, ins)
    with pytest.raises(ConfigError, match="need the task's kinematics"):
        _node("kalman", {"calibrate_s": 10}, ins[:1])
    with pytest.raises(ConfigError, match=r"clda.*unknown parameter 'batch'.*did you mean 'batch_s'"):
        _node("kalman", {"calibrate_s": 10, "clda": {"batch": 5.0}}, ins)
    with pytest.raises(ConfigError, match="max_change"):
        _node("kalman", {"calibrate_s": 10, "clda": {"max_change": 0}}, ins)
    with pytest.raises(ConfigError, match=r"gain='stedy'.*did you mean 'steady'"):
        _node("kalman", {"calibrate_s": 10, "gain": "stedy"}, ins)


def test_cursor_task_is_chunk_invariant_and_moves_by_the_intended_velocity_in_open_loop():
    outs = [_run_task(_node("cursor_task", {**TASK, "duration_s": 60.0, "chunk_size": c}), with_events=True)
            for c in (1, 7, 50)]
    for counts, kin, ev in outs[1:]:
        assert np.array_equal(counts, outs[0][0]) and np.array_equal(kin, outs[0][1])
        assert np.array_equal(ev, outs[0][2])
    counts, kin, ev = outs[0]
    assert counts.shape == (1200, 30) and kin.shape == (1200, 7)
    pos, tgt, vi, dist = kin[:, 0:2], kin[:, 2:4], kin[:, 4:6], kin[:, 6]
    np.testing.assert_allclose(np.diff(pos, axis=0), vi[:-1] * 0.05, rtol=0, atol=1e-15)
    np.testing.assert_allclose(dist, np.linalg.norm(tgt - pos, axis=1), rtol=1e-12)
    moving = dist > 0.015
    np.testing.assert_allclose(np.linalg.norm(vi[moving], axis=1), 0.1, rtol=1e-12)
    np.testing.assert_allclose(np.einsum("ij,ij->i", vi[moving], tgt[moving] - pos[moving]) / dist[moving], 0.1, rtol=1e-12)
    assert not vi[~moving].any()
    labels = [e.decode() for e in ev["label"]]
    assert labels.count("hit") >= 25 and labels.count("timeout") == 0 and labels[0] == "target_onset"
    # the counts are the population's Poisson counts for the intended velocity
    task = _node("cursor_task", TASK)
    rate = task.population.rates(vi) * 0.05
    se = np.sqrt(rate.sum(axis=0)) / len(rate)
    assert np.all(np.abs(counts.mean(axis=0) - rate.mean(axis=0)) < 5 * se + 1e-12)
    assert not np.array_equal(counts, _run_task(_node("cursor_task", {**TASK, "seed": 4, "duration_s": 60.0}))[0])


@pytest.fixture(scope="module")
def fitted():
    task = _node("cursor_task", {**TASK, "duration_s": 60.0}, node_id="task")
    counts, kin = _run_task(task)
    dec = KalmanDecoder.fit(kin[:, 4:6], counts, bin_s=0.05)
    return task, dec, counts, kin


def _feed(node, counts, kin, splits, kin_first=False):
    """Feed both inputs in chunks (kinematics first or second); return the main output rows."""
    rows = []
    edges = [0, *splits, len(counts)]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        c0 = Chunk(counts[a:b], a, a * 0.05, 20.0, [])
        c1 = Chunk(kin[a:b], a, a * 0.05, 20.0, [])
        for port, ch in ((1, c1), (0, c0)) if kin_first else ((0, c0), (1, c1)):
            out = node.process(ch, port)
            for name, o in (out if isinstance(out, list) else [("", out)] if out is not None else []):
                if name == "":
                    rows.append(o.data)
    return np.concatenate(rows)


def test_kalman_node_equals_the_decoder_skips_a_nan_burst_and_does_not_care_how_inputs_arrive(fitted, tmp_path):
    task, dec, counts, kin = fitted
    path = dec.save(tmp_path / "kf.npz")
    ins = [task.outputs[""], task.outputs["kinematics"]]
    z = counts.copy()
    z[300:320] = np.nan  # a burst of bad bins
    z[500, 3] = np.inf
    ref, status = KalmanDecoder.load(path).predict(z)
    outs = []
    for splits, kin_first in (([], False), ([1, 2, 300, 310, 777], True), (list(range(1, 1200)), False)):
        node = _node("kalman", {"model": str(path)}, ins, "kf")
        node.warmup()
        outs.append(_feed(node, z, kin, splits, kin_first))
        rep = node.report()
        assert rep["nonfinite"] == 21 and rep["skipped"] == 21 and rep["bins"] == 1200
    for out in outs:
        assert np.array_equal(out, ref)  # bit for bit, whatever the order and chunking
    assert np.isfinite(outs[0]).all() and np.flatnonzero(status < 0).tolist() == [*range(300, 320), 500]
    # the counts alone (no kinematics input) decode the same
    node = _node("kalman", {"model": str(path)}, ins[:1], "kf")
    assert np.array_equal(node.process(Chunk(z, 0, 0.0, 20.0, []))[0][1].data, ref)


def test_a_model_for_another_population_is_refused_in_one_line(fitted, tmp_path):
    task, dec, counts, kin = fitted
    other = KalmanDecoder.fit(kin[:, 4:6], counts[:, :20], bin_s=0.05).save(tmp_path / "k20.npz")
    ins = [task.outputs[""], task.outputs["kinematics"]]
    with pytest.raises(ConfigError, match=r"has 20 units but stream 'task' has 30 columns") as info:
        _node("kalman", {"model": str(other)}, ins)
    assert "\n" not in str(info.value)
    slow = KalmanDecoder.fit(kin[:, 4:6], counts, bin_s=0.1).save(tmp_path / "slow.npz")
    with pytest.raises(ConfigError, match="fitted on 0.1 s bins"):
        _node("kalman", {"model": str(slow)}, ins)
    p20 = PoissonDecoder(rates_hz=np.ones((20, 4)), bin_s=0.05).save(tmp_path / "p20.npz")
    with pytest.raises(ConfigError, match="has 20 units"):
        _node("poisson_decoder", {"model": str(p20)}, ins)
    (tmp_path / "junk.npz").write_bytes(b"not a model")
    with pytest.raises(ConfigError) as info:
        _node("kalman", {"model": str(tmp_path / "junk.npz")}, ins)
    assert "\n" not in str(info.value)


def test_poisson_node_calibrates_as_the_decoder_fits(fitted, tmp_path):
    task, _, counts, kin = fitted
    ins = [task.outputs[""], task.outputs["kinematics"]]
    node = _node("poisson_decoder", {"calibrate_s": 40, "save_model": str(tmp_path / "pd.npz")}, ins, "pd")
    node.warmup()
    out = _feed(node, counts, kin, [5, 333, 800])
    node.end()
    assert np.isnan(out[:800, :9]).all() and (out[:800, 9] == -1).all()
    # reference: label bins by the nearest of 8 directions (rest when still), fit, predict
    v = kin[:800, 4:6]
    lab = np.where((v == 0).all(axis=1), 8, np.round(np.arctan2(v[:, 1], v[:, 0]) % (2 * np.pi) / (np.pi / 4)).astype(int) % 8)
    ref = PoissonDecoder.fit(counts[:800], lab, 9, bin_s=0.05)
    np.testing.assert_array_equal(out[800:, :9], ref.predict_proba(counts[800:]))
    np.testing.assert_array_equal(out[800:, 9], ref.predict(counts[800:]))
    v = kin[800:, 4:6]
    truth = np.where((v == 0).all(axis=1), 8, np.round(np.arctan2(v[:, 1], v[:, 0]) % (2 * np.pi) / (np.pi / 4)).astype(int) % 8)
    assert np.mean(out[800:, 9] == truth) > 0.5  # chance is 1/9
    saved = PoissonDecoder.load(tmp_path / "pd.npz")
    assert np.array_equal(saved.rates_hz, ref.rates_hz)


# -- the loop in a graph ------------------------------------------------------------------------


def _loop(tmp_path, write_graph, kf_params, name, duration=90.0):
    rec = tmp_path / f"{name}.jsonl"
    nodes = [
        {"id": "task", "type": "cursor_task", "process": "loop", "feedback": ["kf"], "params": {**TASK, "duration_s": duration}},
        {"id": "kf", "type": "kalman", "inputs": ["task", "task.kinematics"], "process": "loop", "params": kf_params},
        {"id": "rec", "type": "jsonl", "inputs": ["task.events", "task.kinematics", "kf", *(["kf.adapt"] if "clda" in kf_params else [])],
         "process": "loop", "params": {"path": str(rec)}},
    ]
    g = load_graph(write_graph({"name": name, "runtime": {"speed": "max"}, "nodes": nodes}, f"{name}.yaml"))
    sup = Supervisor(g, out=io.StringIO(), quiet=True)
    assert sup.run() == 0 and sup.report["errors"] == []
    rows = [json.loads(r) for r in rec.read_text().splitlines()]
    hits = np.array([r["index"] for r in rows if r["stream"] == "task.events" and r["label"] == "hit"])
    kin = np.array([list(r["values"].values()) for r in rows if r["stream"] == "task.kinematics"])
    vel = np.array([list(r["values"].values()) for r in rows if r["stream"] == "kf"])
    adapt = [r["values"] for r in rows if r["stream"] == "kf.adapt"]
    return sup.report["nodes"], hits, kin, vel, adapt


def _r(vel, kin, a, b):
    """Per-axis correlation of decoded and intended velocity over bins [a, b)."""
    return np.array([np.corrcoef(vel[a:b, j], kin[a:b, 4 + j])[0, 1] for j in range(2)])


def test_a_calibrated_kalman_closes_the_loop_and_reaches_targets(tmp_path, write_graph):
    nodes, hits, kin, vel, _ = _loop(tmp_path, write_graph, {"calibrate_s": 30, "save_model": str(tmp_path / "cal.npz")}, "cal")
    assert nodes["kf"]["calibrated"] and nodes["kf"]["calibration_bins"] == 600
    assert np.isnan(vel[:600]).all() and np.isfinite(vel[600:]).all()
    t = nodes["task"]
    assert t["late_feedback"] == 0 and t["held_bins"] == 0 and t["feedback_bins"] == 1800 and t["open_loop_bins"] == 600
    # closed loop: the cursor moves by the decoded velocity of the previous bin (clipped to the workspace)
    np.testing.assert_allclose(kin[601:, 0:2], np.clip(kin[600:-1, 0:2] + vel[600:-1] * 0.05, -0.2, 0.2), rtol=0, atol=1e-15)
    assert (hits >= 600).sum() > 25
    assert np.all(_r(vel, kin, 600, 1800) > 0.7)
    assert KalmanDecoder.load(tmp_path / "cal.npz").n_units == 30


def test_clda_repairs_a_rotated_model_in_the_loop(tmp_path, write_graph):
    task = _node("cursor_task", TASK)
    wrong = simulate_cosine_session(30, 3000, seed=4, population=task.population.rotated(np.pi / 2), radius=0.1,
                                    reach_s=1.0)
    path = KalmanDecoder.fit(wrong.velocity, wrong.counts, bin_s=0.05).save(tmp_path / "rotated.npz")
    clda = {"batch_s": 10.0, "half_life_s": 10.0, "alpha_floor": 0.3, "max_change": 1.0, "min_bins": 100, "target_radius": 0.015}
    _, hits_fixed, kin_f, vel_f, _ = _loop(tmp_path, write_graph, {"model": str(path)}, "fixed")
    nodes, hits, kin, vel, adapt = _loop(tmp_path, write_graph, {"model": str(path), "clda": clda}, "clda")
    assert np.all(np.abs(_r(vel_f, kin_f, 0, 1800)) < 0.3) and len(hits_fixed) <= 2
    assert np.all(_r(vel, kin, 0, 200) < 0.3)
    assert np.all(_r(vel, kin, 1200, 1800) > 0.6)
    assert (hits >= 1200).sum() > (hits < 600).sum() + 5
    # every batch of 200 bins was accepted and published
    assert len(adapt) == 9 and all(a["accepted"] == 1 and a["reason"] == 0 and a["n_bins"] == 200 for a in adapt)
    assert [a["last_bin"] for a in adapt] == [200 * k - 1 for k in range(1, 10)]
    assert nodes["kf"]["adapt_accepted"] == 9 and nodes["kf"]["adapt_rejected"] == 0
