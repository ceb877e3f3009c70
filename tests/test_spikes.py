"""Spike detection: against SpikeInterface's ground truth and detector, a naive loop, and any chunking."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import butter, sosfilt, sosfilt_zi
from scipy.stats import median_abs_deviation

from rtneuro.errors import ConfigError
from rtneuro.kernels.spikes import sosfilt_f32
from rtneuro.messages import Chunk, StreamMeta
from rtneuro.nodes import NodeContext, build_params, node_class
from rtneuro.nodes.spikes import (
    SpikeDetect,
    SpikeDetectParams,
    SyntheticSpikes,
    SyntheticSpikesParams,
)

from reference.spikes import dedup_naive, detect_naive, noise_init

FS = 30000.0
RNG = np.random.default_rng(7)


def _meta(n=8, fs=FS, desc=None):
    return StreamMeta(name="probe", kind="sig", sfreq=fs, ch_names=tuple(f"c{i}" for i in range(n)),
                      units=("uV",) * n, dtype="<f4", desc=desc or {})


def _node(n=8, fs=FS, desc=None, **kw):
    return SpikeDetect(SpikeDetectParams(**kw), [_meta(n, fs, desc)], NodeContext(node_id="spk"))


def _feed(node, x, splits, first=0, fs=FS):
    """Feed ``x`` cut at ``splits``; return (events, snippets, rates) concatenated."""
    ev, sn, rt = [], [], []
    edges = [0, *sorted(splits), x.shape[0]]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        out = node.process(Chunk(x[a:b], first + a, (first + a) / fs, fs, []))
        for port, ch in out or []:
            {"events": ev, "snippets": sn, "rates": rt}[port].append(ch)
    cat = lambda cs, empty: np.concatenate([c.data for c in cs]) if cs else empty  # noqa: E731
    return (cat(ev, np.empty(0)), cat(sn, np.empty((0, node.pre + node.post + 1), np.float32)),
            cat(rt, np.empty((0, node.n_channels + 1))), (ev, sn, rt))


def _random_splits(n, k):
    return sorted(RNG.choice(np.arange(1, n), size=k, replace=False).tolist())


def _spiky(n_times=30000, n_ch=8, noise=5.0, rate=40.0, amp=80.0, seed=0):
    """White noise plus sharp negative spikes (3-sample troughs) at Poisson times on random channels."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_times, n_ch)).astype(np.float32) * np.float32(noise)
    n_sp = rng.poisson(rate * n_ch * n_times / FS)
    t = rng.integers(5, n_times - 5, n_sp)
    c = rng.integers(0, n_ch, n_sp)
    shape = np.array([-0.3, -0.8, -1.0, -0.7, -0.2], np.float32)
    for ti, ci in zip(t, c, strict=True):
        x[ti - 2:ti + 3, ci] += amp * shape
    return x


# -- filter ---------------------------------------------------------------------


def test_float32_bandpass_matches_scipy_sosfilt_from_the_step_steady_state():
    x = (RNG.standard_normal((6000, 5)) * 20 + 300.0).astype(np.float32)  # a DC offset as wide-band data has
    sos = butter(3, (300, 6000), "bandpass", fs=FS, output="sos")
    zi = sosfilt_zi(sos)[:, :, None] * x[0].astype(np.float64)[None, None, :]
    ref, _ = sosfilt(sos, x.astype(np.float64), axis=0, zi=zi)
    out = np.empty_like(x)
    zi32 = np.ascontiguousarray(np.swapaxes(zi, 0, 1), dtype=np.float32)
    assert sosfilt_f32(sos.astype(np.float32), x, zi32, x[0].copy(), out) == 0
    # single precision: within 1e-3 uV of double precision on a 20 uV signal riding on 300 uV
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-3)
    assert np.abs(out[:50]).max() < 60  # no start-up transient from the 300 uV offset


# -- exact detection against the naive loop -------------------------------------------


@pytest.mark.parametrize("sign, adapt, dedup", [("neg", False, False), ("both", True, False), ("neg", True, True),
                                                ("pos", False, True)])
def test_detections_equal_the_naive_reference(sign, adapt, dedup):
    x = _spiky(n_ch=6)
    if sign == "pos":
        x = -x
    kw = dict(l_freq=None, h_freq=None, sign=sign, noise_init_s=0.2, noise_tau_s=0.5 if adapt else None,
              refractory_ms=0.4, peak_window_ms=0.3, dedup_ms=0.2 if dedup else None, snippet_ms=(0.2, 0.3),
              channel_positions_um=[[0.0, 20.0 * i] for i in range(6)], dedup_radius_um=25.0)
    node = _node(6, **kw)
    ev, _, _, _ = _feed(node, x, _random_splits(x.shape[0], 40))
    med0 = noise_init(x, node.n_init, node.init_stride)
    ref = detect_naive(x, node.n_init, med0, 5.0, sign, node.win, node.refr, node._up, node._down, adapt)
    ref = dedup_naive(ref, node._neigh, node.dedup_s) if dedup else sorted(ref)
    # drop those not final yet at the end of the input
    ref = [r for r in ref if r[0] + node.lag <= x.shape[0] - 1]
    got = sorted(zip(ev["index"].tolist(), ev["channel"].tolist(), ev["value"].tolist(), strict=True))
    assert len(ref) > 100
    assert got == [(p, c, float(np.float32(v))) for p, c, v in ref]  # exact: same arithmetic
    if adapt:
        assert not np.array_equal(node.noise_levels, med0 / 0.6745)


# -- SpikeInterface --------------------------------------------------------------------


@pytest.fixture(scope="module")
def gt():
    """32 channels (linear, 20 um pitch), 10 units at 10 Hz, 12 s, noise 5 uV; template alpha 200-300."""
    si = pytest.importorskip("spikeinterface.core")
    rec, sorting = si.generate_ground_truth_recording(
        durations=[12.0], sampling_frequency=FS, num_channels=32, num_units=10, seed=2,
        generate_probe_kwargs=dict(num_columns=1, xpitch=20, ypitch=20, contact_shapes="circle",
                                   contact_shape_params={"radius": 6}),
        generate_unit_locations_kwargs=dict(margin_um=10.0, minimum_z=5.0, maximum_z=20.0, minimum_distance=20),
        generate_templates_kwargs=dict(unit_params=dict(alpha=(200.0, 300.0))),
        generate_sorting_kwargs=dict(firing_rates=10.0, refractory_period_ms=4.0),
        noise_kwargs=dict(noise_levels=5.0, strategy="on_the_fly"),
    )
    return rec, sorting


def test_precision_and_recall_on_spikeinterface_ground_truth(gt):
    """Band-pass, adaptive noise, threshold 5, dedup within 50 um and 0.5 ms, refractory 2 ms.

    A detection matches a ground-truth spike when it lies within +-0.4 ms of
    it and on a contact within 50 um of the unit's extremum channel (the
    channel of the template's largest |value|); matching is one-to-one,
    spike by spike in time order, nearest detection first. The units' peak
    SNR (template extremum over the filtered noise level) spans about 9-56.
    """
    rec, sorting = gt
    x = rec.get_traces()
    pos = rec.get_channel_locations()
    templates = rec._kwargs["templates"]  # (units, samples, channels)
    ext = np.abs(templates).max(axis=1).argmax(axis=1)
    node = _node(32, dedup_radius_um=50.0, channel_positions_um=pos.tolist(), refractory_ms=2.0)
    ev, _, _, _ = _feed(node, x, _random_splits(x.shape[0], 50))
    sv = sorting.to_spike_vector()
    start, stop = node.n_init + 30, x.shape[0] - 60
    keep = (sv["sample_index"] >= start) & (sv["sample_index"] < stop)
    gi, gu = sv["sample_index"][keep], sv["unit_index"][keep]
    e = ev[(ev["index"] >= start) & (ev["index"] < stop)]
    w = int(round(0.0004 * FS))
    used = np.zeros(len(e), bool)
    hit = np.zeros(len(gi), bool)
    for k in np.argsort(gi, kind="stable"):
        near = (np.abs(e["index"] - gi[k]) <= w) & (np.linalg.norm(pos[e["channel"]] - pos[ext[gu[k]]], axis=1) <= 50) & ~used
        cand = np.nonzero(near)[0]
        if cand.size:
            j = cand[np.argmin(np.abs(e["index"][cand] - gi[k]))]
            used[j] = hit[k] = True
    recall, precision = hit.mean(), used.mean()
    assert len(gi) > 1000
    assert recall >= 0.95 and precision >= 0.95, (recall, precision)
    assert min(hit[gu == u].mean() for u in range(10)) >= 0.9


@pytest.mark.parametrize("sign, min_match", [("neg", 0.99), ("pos", 0.98)])
def test_same_detections_as_spikeinterface_by_channel(gt, sign, min_match):
    """Same filtered traces (SpikeInterface's causal band-pass), same noise levels (ours, frozen).

    With ``exclude_sweep_ms = peak_window_ms = refractory_ms = 0.5`` and no
    de-duplication, each side's peaks are matched (same channel, +-1 sample)
    at ``min_match`` or more. Residual differences: SpikeInterface takes
    every local extremum beyond threshold over +-sweep, we take one peak per
    crossing (a second trough that never came back inside the threshold is
    not a new spike). With a 1 ms sweep the second troughs of SpikeInterface's
    generated templates 1.1 ms after the first differ more (about 0.8-0.9).
    """
    pytest.importorskip("spikeinterface")
    from spikeinterface.core import NumpyRecording
    from spikeinterface.preprocessing import bandpass_filter
    from spikeinterface.sortingcomponents.peak_detection import detect_peaks

    rec, _ = gt
    y = bandpass_filter(rec, freq_min=300.0, freq_max=6000.0, direction="forward", dtype="float32", margin_ms=20.0).get_traces()
    node = _node(32, l_freq=None, h_freq=None, noise_tau_s=None, dedup_ms=None, sign=sign, refractory_ms=0.5,
                 peak_window_ms=0.5)
    ev, _, _, _ = _feed(node, y, _random_splits(y.shape[0], 20))
    pk = detect_peaks(NumpyRecording([y], FS), method="by_channel",
                      method_kwargs=dict(peak_sign=sign, detect_threshold=5.0, exclude_sweep_ms=0.5,
                                         noise_levels=node.noise_levels),
                      job_kwargs=dict(n_jobs=1, chunk_duration="1s", progress_bar=False))
    start, stop = node.n_init + 60, y.shape[0] - 60
    a = ev[(ev["index"] >= start) & (ev["index"] < stop)]
    b = pk[(pk["sample_index"] >= start) & (pk["sample_index"] < stop)]

    def matched(i, c, oi, oc):
        order = np.lexsort((oi, oc))
        oi, oc = oi[order], oc[order]
        key = oc.astype(np.int64) * 10**9 + oi
        k = c.astype(np.int64) * 10**9 + i
        lo = np.searchsorted(key, k - 1)
        hi = np.searchsorted(key, k + 1, side="right")
        return float(np.mean(hi > lo))

    assert len(a) > 3000
    assert matched(a["index"], a["channel"], b["sample_index"], b["channel_index"]) >= min_match
    assert matched(b["sample_index"], b["channel_index"], a["index"], a["channel"]) >= min_match


# -- chunking ------------------------------------------------------------------------


@pytest.mark.parametrize("splits", ["random", "ones"])
def test_any_split_gives_identical_events_snippets_and_rates(splits):
    n = 12000 if splits == "ones" else 30000
    x = _spiky(n_times=n, n_ch=6, rate=60.0)
    x[:, 3] += np.float32(200.0)  # a DC offset: the band-pass starts from its steady state
    kw = dict(noise_init_s=0.1, noise_tau_s=0.2, dedup_ms=0.3, dedup_radius_um=25.0, bin_s=0.01, snippet_ms=(0.5, 1.0),
              channel_positions_um=[[0.0, 20.0 * i] for i in range(6)])
    whole = _feed(_node(6, **kw), x, [])
    cuts = list(range(1, n)) if splits == "ones" else _random_splits(n, 300)
    got = _feed(_node(6, **kw), x, cuts)
    assert whole[0].size > 50 and whole[2].shape[0] > 20
    ev_w, ev_g = whole[0], got[0]
    for field in ("index", "code", "channel", "duration", "value", "label"):
        assert np.array_equal(ev_w[field], ev_g[field]), field
    # times come from each chunk's own clock stamp: equal up to rounding
    np.testing.assert_allclose(ev_w["time"], ev_g["time"], rtol=0, atol=1e-12)
    for w, g in zip(whole[1:3], got[1:3], strict=True):
        assert w.dtype == g.dtype and np.array_equal(w, g)
    # chunk numbering is continuous on every port
    for chunks in got[3]:
        firsts = [c.first for c in chunks]
        sizes = [c.data.shape[0] for c in chunks]
        assert firsts == [0, *np.cumsum(sizes)[:-1].tolist()]


def test_refractory_period_holds_across_a_chunk_boundary():
    x = np.zeros((4000, 2), np.float32)
    x += RNG.standard_normal(x.shape).astype(np.float32)
    x[3000, 0] = x[3018, 0] = -50.0  # two troughs 0.6 ms apart, each a fresh crossing
    kw = dict(l_freq=None, h_freq=None, noise_init_s=0.05, noise_tau_s=None, peak_window_ms=0.1, dedup_ms=None)
    for refr, expected in ((1.0, [3000]), (0.3, [3000, 3018])):
        for cut in ([3010], [3001], [3018], []):
            ev = _feed(_node(2, refractory_ms=refr, **kw), x, cut)[0]
            assert ev[ev["channel"] == 0]["index"].tolist() == expected, (refr, cut)


def test_dedup_keeps_the_largest_of_neighbouring_channels():
    x = (RNG.standard_normal((6000, 12)) * 2).astype(np.float32)
    t = 4000
    for c, a in ((3, -40.0), (4, -90.0), (5, -60.0), (6, -30.0), (10, -45.0)):
        x[t + (c % 2), c] = a  # within a sample of each other
    base = dict(l_freq=None, h_freq=None, noise_init_s=0.05, noise_tau_s=None, dedup_ms=0.2)
    ev = _feed(_node(12, dedup_index_distance=2, **base), x, [4000])[0]
    assert sorted(ev["channel"].tolist()) == [4, 10]  # opted in: 3, 5, 6 within 2 channels of 4; 10 is far
    assert ev["value"][ev["channel"] == 4][0] == -90.0
    # geometry: 2 columns; channels 4 and 10 are 15 um apart, so 10 goes too
    pos = [[0.0, 20.0 * i] for i in range(6)] + [[15.0, 20.0 * (i - 4)] for i in range(6, 12)]
    ev = _feed(_node(12, dedup_radius_um=30.0, channel_positions_um=pos, **base), x, [])[0]
    assert ev["channel"].tolist() == [4]
    # off, or no geometry: every channel
    ev = _feed(_node(12, **{**base, "dedup_ms": None}), x, [])[0]
    assert sorted(ev["channel"].tolist()) == [3, 4, 5, 6, 10]
    node = _node(12, **base)
    ev = _feed(node, x, [])[0]
    assert sorted(ev["channel"].tolist()) == [3, 4, 5, 6, 10]
    assert node.report()["suppressed_duplicates"] == 0 and node.report()["dedup"] == "off"


TETRODE_UM = [[10.0, 0.0], [0.0, 10.0], [-10.0, 0.0], [0.0, -10.0]]  # probeinterface's generate_tetrode()


def _tetrode_independent():
    """4 channels, each with its own spikes at unrelated times (100 Hz each, 1 s), amplitudes 40-160 uV."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((30000, 4)).astype(np.float32) * np.float32(5.0)
    shape = np.array([-0.3, -0.8, -1.0, -0.7, -0.2], np.float32)
    for c in range(4):
        for t in np.sort(rng.choice(np.arange(3500, 29990, 40), 100, replace=False)) + rng.integers(0, 20, 100):
            x[t - 2:t + 3, c] += np.float32(rng.uniform(40.0, 160.0)) * shape
    return x


def test_tetrode_without_geometry_loses_nothing_and_says_so(caplog):
    """Issue 14: without positions, neighbours were taken by channel index and one tetrode wire
    lost 87 % of its detections. Now a 4-channel stream without geometry de-duplicates nothing:
    every channel's detections equal those with de-duplication off (and the naive per-channel
    loop); one log line and the run report say so; the old index rule, opted in, removes some."""
    x = _tetrode_independent()
    kw = dict(l_freq=None, h_freq=None, noise_init_s=0.1, noise_tau_s=None)
    with caplog.at_level("WARNING", logger="rtneuro.nodes.spikes"):
        node = _node(4, **kw)
    ev = _feed(node, x, _random_splits(30000, 20))[0]
    off = _feed(_node(4, **kw, dedup_ms=None), x, [])[0]
    assert [r.getMessage() for r in caplog.records if "de-duplication" in r.getMessage()] == [
        "no channel positions for 'probe': spike de-duplication across channels is off (each channel keeps its own "
        "refractory period); give channel_positions_um or probe_file to enable it"]
    assert node.take_notes() and node.report()["dedup"] == "off" and node.report()["suppressed_duplicates"] == 0
    assert node.status() == f"spikes {len(ev)}, dedup off (no geometry)"
    per_ch = np.bincount(ev["channel"], minlength=4)
    assert per_ch.min() >= 90 and np.array_equal(ev["index"], off["index"]) and np.array_equal(ev["channel"], off["channel"])
    med0 = noise_init(x, node.n_init, node.init_stride)
    ref = sorted(detect_naive(x, node.n_init, med0, 5.0, "neg", node.win, node.refr))
    ref = [r for r in ref if r[0] + node.lag <= x.shape[0] - 1]
    assert sorted(zip(ev["index"].tolist(), ev["channel"].tolist(), strict=True)) == [(p, c) for p, c, _ in ref]
    old = _node(4, **kw, dedup_index_distance=2)  # the former default: every tetrode wire a "neighbour"
    ev_old = _feed(old, x, [])[0]
    lost = 1 - np.bincount(ev_old["channel"], minlength=4) / per_ch
    print(f"tetrode, independent spikes: per channel {per_ch.tolist()} kept; the old index rule kept "
          f"{np.bincount(ev_old['channel'], minlength=4).tolist()} (lost {np.round(100 * lost).tolist()} %)")
    assert old.report()["suppressed_duplicates"] == len(ev) - len(ev_old) > 0


def test_with_geometry_a_spike_on_neighbouring_sites_is_kept_once_and_counted():
    """Tetrode geometry (contacts 14-20 um apart, radius 50 um): a spike seen on all four wires
    within dedup_ms is kept once, on its largest wire; the removed count is exact and equals the
    naive reference's; a fifth channel 200 um away keeps its own spikes at the same times."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((30000, 5)).astype(np.float32) * np.float32(5.0)
    shape = np.array([-0.3, -0.8, -1.0, -0.7, -0.2], np.float32)
    times = np.arange(4000, 29000, 500)  # 50 spikes, 16.7 ms apart
    scale = np.array([1.0, 0.7, 0.5, 0.6], np.float32)
    for k, t in enumerate(times):
        big = k % 4  # the largest wire rotates
        for c in range(4):
            lag = (c - big) % 4  # up to 3 samples (0.1 ms) later on the others
            x[t + lag - 2:t + lag + 3, c] += np.float32(120.0) * scale[(c - big) % 4] * shape
        x[t - 2:t + 3, 4] += np.float32(90.0) * shape
    pos = [*TETRODE_UM, [200.0, 0.0]]
    kw = dict(l_freq=None, h_freq=None, noise_init_s=0.1, noise_tau_s=None, dedup_ms=0.2, channel_positions_um=pos)
    node = _node(5, **kw)
    ev = _feed(node, x, _random_splits(30000, 25))[0]
    assert node.dedup_mode == "radius 50 um (channel_positions_um)"
    for k, t in enumerate(times):
        got = ev[(ev["index"] >= t - 3) & (ev["index"] <= t + 6)]
        assert sorted(got["channel"].tolist()) == [k % 4, 4], (k, got)
    rep = node.report()
    assert rep["suppressed_duplicates"] == 3 * len(times) == rep["candidates"] - rep["detections"]
    assert node.status() == f"spikes {len(ev)}, dedup removed {3 * len(times)}"
    med0 = noise_init(x, node.n_init, node.init_stride)
    cands = detect_naive(x, node.n_init, med0, 5.0, "neg", node.win, node.refr)
    ref = dedup_naive(cands, node._neigh, node.dedup_s)
    assert sorted(zip(ev["index"].tolist(), ev["channel"].tolist(), strict=True)) == [(p, c) for p, c, _ in ref]
    assert len(cands) - len(ref) == rep["suppressed_duplicates"]


def test_geometry_from_a_probe_file_or_the_stream(tmp_path):
    """Positions from a probeinterface JSON (contacts wired to channels in another order), a .csv
    of x,y rows, or the stream's desc.positions_um; config positions come first."""
    probeinterface = pytest.importorskip("probeinterface")
    probe = probeinterface.generate_linear_probe(num_elec=6, ypitch=20.0)
    wiring = np.array([5, 4, 3, 2, 1, 0])
    probe.set_device_channel_indices(wiring)  # channel 0 is the last contact (y = 100)
    probeinterface.write_probeinterface(tmp_path / "probe.json", probe)
    node = SpikeDetect(SpikeDetectParams(probe_file="probe.json", dedup_radius_um=25.0), [_meta(6)],
                       NodeContext(node_id="spk", base_dir=tmp_path))
    expect = np.abs(np.arange(6)[:, None] - np.arange(6)[None, :]) <= 1
    assert np.array_equal(node._neigh, expect) and node.dedup_mode == "radius 25 um (probe_file probe.json)"
    (tmp_path / "tet.csv").write_text("x,y\n" + "\n".join(f"{a},{b}" for a, b in TETRODE_UM) + "\n")
    node = SpikeDetect(SpikeDetectParams(probe_file=str(tmp_path / "tet.csv")), [_meta(4)], NodeContext(node_id="spk"))
    assert node._neigh.all() and node.dedup_mode.startswith("radius 50 um")
    far = {"positions_um": [[0.0, 100.0 * i] for i in range(4)]}
    node = _node(4, desc=far)
    assert np.array_equal(node._neigh, np.eye(4, dtype=bool)) and node.dedup_mode == "radius 50 um (stream 'probe' desc.positions_um)"
    node = _node(4, desc=far, channel_positions_um=TETRODE_UM)
    assert node._neigh.all()
    with pytest.raises(ConfigError, match="need \\[x, y\\] for each of the 4 channels"):
        (tmp_path / "short.csv").write_text("0,0\n0,20\n")
        SpikeDetect(SpikeDetectParams(probe_file="short.csv"), [_meta(4)], NodeContext(node_id="spk", base_dir=tmp_path))


def test_snippets_follow_their_events_and_rates_count_them():
    x = _spiky(n_times=30000, n_ch=4, rate=30.0)
    node = _node(4, l_freq=None, h_freq=None, noise_init_s=0.1, bin_s=0.02, snippet_ms=(0.3, 1.5))
    ev, sn, rt, (evc, snc, rtc) = _feed(node, x, _random_splits(30000, 30), first=1000)
    # the last snippets wait for samples that never came
    assert 0 <= len(ev) - len(sn) <= 4 and len(sn) > 50
    assert np.array_equal(sn[:, node.pre], ev["value"][:len(sn)].astype(np.float32))
    i = ev["index"][0] - 1000
    assert np.array_equal(sn[0], x[i - node.pre:i + node.post + 1, ev["channel"][0]])
    assert ev["time"][0] == pytest.approx(ev["index"][0] / FS)
    # rates: per-channel counts over bins of 600 samples from the end of noise init, in Hz
    bin_len = 600
    edges = 1000 + node.n_init + bin_len * np.arange(rt.shape[0] + 1)
    for c in range(4):
        counts, _ = np.histogram(ev["index"][ev["channel"] == c], bins=edges)
        np.testing.assert_allclose(rt[:, c], counts / 0.02)
    np.testing.assert_allclose(rt[:, 4], rt[:, :4].sum(axis=1))
    f0 = rtc[0]
    assert f0.first == 0 and f0.sfreq == pytest.approx(50.0)
    assert f0.t0 == pytest.approx((1000 + node.n_init + bin_len - 1) / FS)
    assert rtc[-1].extra["window"][1] - rtc[-1].extra["window"][0] == bin_len - 1
    assert node.outputs["rates"].ch_names[-1] == "mua"


# -- noise level -------------------------------------------------------------------------


def test_noise_level_adapts_to_the_mad_of_a_stationary_input():
    fs = 10000.0
    x = np.concatenate([RNG.standard_normal((5000, 3)) * 4.0, RNG.standard_normal((40000, 3)) * 10.0]).astype(np.float32)
    node = _node(3, fs=fs, l_freq=None, h_freq=None, noise_init_s=0.5, noise_tau_s=0.3)
    _feed(node, x[:5000], [], fs=fs)
    np.testing.assert_allclose(node.noise_levels, median_abs_deviation(x[:5000], axis=0, scale="normal"), rtol=0.03)
    _feed(node, x[5000:], _random_splits(40000, 50), first=5000, fs=fs)
    # 4 s = 13 time constants after the step: within 4 % of the new MAD (the estimate's own jitter is ~1-2 %)
    mad = median_abs_deviation(x[-20000:], axis=0, scale="normal")
    np.testing.assert_allclose(node.noise_levels, mad, rtol=0.04)
    # and the time constant: one tau after the step the log-distance has shrunk by about 1/e
    node2 = _node(3, fs=fs, l_freq=None, h_freq=None, noise_init_s=0.5, noise_tau_s=0.3)
    _feed(node2, x[:8000], [], fs=fs)
    frac = np.log(10.0 / node2.noise_levels) / np.log(10.0 / 4.0)
    assert np.all((frac > math.exp(-1) - 0.12) & (frac < math.exp(-1) + 0.12)), frac


def test_nan_burst_is_held_counted_and_contained():
    x = _spiky(n_times=30000, n_ch=4, rate=30.0)
    bad = x.copy()
    bad[12000:13500, 1] = np.nan  # 50 ms of a disconnected channel
    bad[20000, 2] = np.inf
    node = _node(4, noise_init_s=0.1)
    ev, sn, rt, _ = _feed(node, bad, _random_splits(30000, 40))
    assert node.report()["replaced_nonfinite"] == 1501
    assert np.isfinite(node.noise_levels).all() and np.isfinite(sn).all() and np.isfinite(rt).all()
    clean = _feed(_node(4, noise_init_s=0.1), x, [])[0]
    late = lambda e, c: e[(e["channel"] == c) & (e["index"] > 16000)]  # noqa: E731
    # 80 ms after the burst, channel 1 detects as if nothing had happened
    assert len(late(clean, 1)) > 8
    assert np.array_equal(late(ev, 1)["index"], late(clean, 1)["index"])
    assert np.array_equal(ev[ev["channel"] == 0]["index"], clean[clean["channel"] == 0]["index"])


# -- configuration ------------------------------------------------------------------------


def test_built_from_yaml_like_params_and_registered():
    raw = {"l_freq": 300, "h_freq": 6000, "threshold": 4.5, "sign": "both", "snippet_ms": [0.5, 1.0],
           "dedup_radius_um": 40, "refractory_ms": 1.5, "bin_s": 0.1}
    cls = node_class("spike_detect")
    params = build_params(cls.Params, raw, "node 'spk' params")
    assert params.snippet_ms == (0.5, 1.0) and params.h_freq == 6000.0
    desc = {"positions_um": [[0.0, 20.0 * i] for i in range(8)]}
    node = cls(params, [_meta(8, desc=desc)], NodeContext(node_id="spk"))
    node.warmup()
    assert node._st.sum() == 0  # warmup leaves no trace
    assert set(node.outputs) == {"events", "rates", "snippets"}
    assert node.outputs["events"].name == "spk.events" and node.outputs["rates"].sfreq == pytest.approx(10.0)
    assert node._neigh[0, 2] and not node._neigh[0, 3]
    assert node_class("synthetic_spikes") is SyntheticSpikes


@pytest.mark.parametrize("raw, meta_kw, match", [
    ({"h_freq": 7000}, {"fs": 10000.0}, "Nyquist"),
    ({"l_freq": 300, "h_freq": None}, {}, "both l_freq and h_freq"),
    ({"l_freq": 6000, "h_freq": 300}, {}, "below h_freq"),
    ({"dedup_radius_um": 50}, {}, "needs channel positions"),
    ({"dedup_channels": 2}, {}, "did you mean 'dedup_"),
    ({"dedup_index_distance": 1, "dedup_radius_um": 50}, {}, "not both"),
    ({"channel_positions_um": [[0, 0]] * 8, "probe_file": "p.csv"}, {}, "not both"),
    ({"probe_file": "no_such_probe.json"}, {}, "does not exist"),
    ({"channel_positions_um": [[0, 0], [0, 20]]}, {}, "for each of the 8 channels"),
    ({"noise_init_s": 0.001}, {}, "at least 100"),
    ({"treshold": 5}, {}, "did you mean 'threshold'"),
    ({"sign": "negative"}, {}, "did you mean 'neg'"),
    ({"refractory_ms": -1}, {}, ">= 0"),
])
def test_config_errors_name_the_fix(raw, meta_kw, match):
    with pytest.raises(ConfigError, match=match):
        params = build_params(SpikeDetectParams, raw, "node 'spk' params")
        SpikeDetect(params, [_meta(8, **meta_kw)], NodeContext(node_id="spk"))


# -- synthetic probe ------------------------------------------------------------------------


def test_synthetic_probe_is_seeded_and_chunk_invariant_with_ground_truth():
    p = SyntheticSpikesParams(n_channels=16, n_units=5, rate_hz=20.0, chunk_size=777, seed=3, duration_s=1.0,
                              modulation_depth=0.5, modulation_hz=2.0)
    a = SyntheticSpikes(p, [], NodeContext(node_id="sp"))
    a.start(0.0)
    sig, evs = [], []
    while a.next_due() is not None:
        for port, ch in a.read():
            (sig if port == "" else evs).append(ch)
    x = np.concatenate([c.data for c in sig])
    ev = np.concatenate([c.data for c in evs])
    b = SyntheticSpikes(SyntheticSpikesParams(**{**{f: getattr(p, f) for f in p.__slots__}, "chunk_size": 30}), [],
                        NodeContext(node_id="sp"))
    xb, gi, gu = b.generate(0, 30000)
    assert x.shape == (30000, 16) and x.dtype == np.float32
    assert np.array_equal(x, xb)
    assert np.array_equal(ev["index"], gi) and np.array_equal(ev["code"], gu + 1)
    assert [c.first for c in evs] == [0, *np.cumsum([len(c.data) for c in evs])[:-1].tolist()]
    assert 40 < len(gi) < 160  # 5 units at 20 Hz for 1 s
    # the trough of a spike is on its unit's peak channel (noise 8 uV, troughs 50-120 uV)
    i, u = int(gi[len(gi) // 2]), int(gu[len(gu) // 2])
    assert x[i - 3:i + 4].min(axis=0).argmin() == a.peak_channel[u] or abs(int(x[i].argmin()) - a.peak_channel[u]) <= 1
    assert a.outputs[""].desc["positions_um"][1] == [0.0, 20.0]
    c = SyntheticSpikes(SyntheticSpikesParams(**{**{f: getattr(p, f) for f in p.__slots__}, "seed": 4}), [],
                        NodeContext(node_id="sp"))
    assert not np.array_equal(c.generate(0, 1000)[0], xb[:1000])


def test_detector_finds_the_synthetic_probe_spikes():
    p = SyntheticSpikesParams(n_channels=32, n_units=6, rate_hz=15.0, seed=5)
    src = SyntheticSpikes(p, [], NodeContext(node_id="sp"))
    x, gi, gu = src.generate(0, 90000)
    node = SpikeDetect(SpikeDetectParams(dedup_radius_um=50.0, refractory_ms=1.5), [src.outputs[""]], NodeContext(node_id="d"))
    ev = _feed(node, x, _random_splits(90000, 30))[0]
    keep = gi > node.n_init + 30
    gi, gu = gi[keep], gu[keep]
    hit = [np.any((np.abs(ev["index"] - i) <= 12) & (np.abs(ev["channel"] - src.peak_channel[u]) <= 2)) for i, u in zip(gi, gu, strict=True)]
    assert np.mean(hit) >= 0.95
