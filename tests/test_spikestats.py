"""The spike_stats node: the offline statistics on each window, for any split of the events."""

from __future__ import annotations

import numpy as np
import pytest

from rtneuro.analysis.circuits import spike_statistics
from rtneuro.errors import ConfigError
from rtneuro.messages import Chunk, StreamMeta, make_events
from rtneuro.nodes import NodeContext, build_params, node_class


def _node(params: dict):
    cls = node_class("spike_stats")
    meta = StreamMeta(name="spk.events", kind="evt", sfreq=0.0, dtype="event")
    return cls(build_params(cls.Params, params, "spike_stats"), [meta], NodeContext(node_id="st"))


def _events(seed: int = 0, t_stop: float = 30.0) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    trains = [np.sort(rng.uniform(0, t_stop, rng.poisson(r * t_stop))) for r in (5.0, 20.0, 50.0)]
    trains.append(np.arange(0.013, t_stop, 0.1))  # a regular 10 Hz channel
    rows = sorted((t, c) for c, tr in enumerate(trains) for t in tr)
    ev = make_events([(i, t, 1, c, 0.0, -50.0, "spike") for i, (t, c) in enumerate(rows)])
    return ev, trains


def _feed(node, ev: np.ndarray, cuts: list[int]) -> np.ndarray:
    out = []
    edges = [0, *cuts, len(ev)]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        if b > a:
            got = node.process(Chunk(ev[a:b], a, float(ev["time"][a]), 0.0, []))
            if got is not None:
                out.append(got.data)
    return np.vstack(out)


def test_each_frame_is_the_offline_statistics_of_its_window_for_any_split():
    ev, trains = _events()
    params = {"channels": ["a", "b", "c", "d"], "window_s": 5.0, "step_s": 1.0, "fano_bin_s": 0.1}
    whole = _feed(_node(params), ev, [])
    rng = np.random.default_rng(1)
    for cuts in ([1], sorted(rng.choice(np.arange(1, len(ev)), 50, replace=False).tolist()), list(range(1, len(ev)))):
        np.testing.assert_array_equal(_feed(_node(params), ev, cuts), whole)
    node = _node(params)
    assert node.outputs[""].ch_names[:3] == ("a:rate", "a:cv", "a:fano") and node.outputs[""].ch_names[-1] == "synchrony"
    assert whole.shape == (29, 16)  # frames at 1..29 s (the one at 30 s waits for a later event)
    for k in (5, 12, 29):
        ref = spike_statistics(trains, k - 5.0, float(k), bin_s=0.1, fano_bin_s=0.1)
        row = whole[k - 1]
        np.testing.assert_allclose(row[0:12:3], ref["rates"], rtol=1e-12)
        np.testing.assert_allclose(row[1:12:3], ref["cv"], rtol=1e-12)
        np.testing.assert_allclose(row[2:12:3], ref["fano"], rtol=1e-12)
        assert row[12] == pytest.approx(ref["mean_rate"]) and row[13] == pytest.approx(ref["mean_cv"])
        assert row[14] == pytest.approx(ref["mean_fano"]) and row[15] == pytest.approx(ref["synchrony"], rel=1e-12)
    late = whole[10:]
    assert np.all(np.abs(late[:, 1:9:3] - 1.0) < 0.5)  # Poisson channels: CV near 1
    assert np.all(late[:, 10] < 1e-9)  # the regular channel: CV 0


def test_events_on_undeclared_channels_are_counted_not_used_and_bad_parameters_are_one_line():
    ev, _ = _events()
    ev["channel"][::10] = 7
    node = _node({"channels": 4, "window_s": 5.0})
    _feed(node, ev, [100])
    assert node.report()["out_of_range"] == len(ev[::10]) and node.report()["frames"] == 29
    with pytest.raises(ConfigError, match="fewer than two count windows"):
        _node({"channels": 2, "window_s": 0.1, "fano_bin_s": 0.1})
