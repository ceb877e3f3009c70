"""The whole decoder: windows, training, model files, the decoder node, adaptive LDA."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import butter, sosfilt

from rtneuro.decoders.adaptive import AdaptiveLda
from rtneuro.decoders.pipeline import DecoderPipeline, PipelineSpec
from rtneuro.decoders.train import (
    Recording,
    fit_pipeline,
    parse_labels,
    read_recording,
    train_from_config,
    wilson_interval,
)
from rtneuro.decoders.windows import FilterBankWindows, design_bank
from rtneuro.errors import ConfigError
from rtneuro.messages import Chunk, StreamMeta, make_events
from rtneuro.nodes import NodeContext, build_params, node_class

ROOT = Path(__file__).resolve().parents[1]
MI = ROOT / "replay_data" / "S003R03.edf"
LABELS = {"T1": "left", "T2": "right"}


def _splits(n: int, rng: np.random.Generator) -> list[int]:
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(n - 1, rng.integers(1, 40)), replace=False))
    return [0, *cuts.tolist(), n]


# --------------------------------------------------------------------------- windows


def test_filter_bank_equals_scipy_and_any_split_gives_the_same_windows():
    rng = np.random.default_rng(1)
    fs = 160.0
    x = rng.standard_normal((2000, 5))
    bank = design_bank([(8.0, 12.0), (13.0, 30.0)], 4, fs)
    whole = FilterBankWindows(bank, 5, 160, 16)
    ends, wins = whole.push(x)
    # reference: scipy's sosfilt per band, windows [end - W, end)
    for b, (lo, hi) in enumerate([(8.0, 12.0), (13.0, 30.0)]):
        y = sosfilt(butter(4, [lo, hi], "bandpass", fs=fs, output="sos"), x, axis=0)
        for k in (0, 7, len(ends) - 1):
            np.testing.assert_allclose(wins[k, b], y[ends[k] - 160:ends[k]], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(ends, whole.frame_ends(2000))
    for _trial in range(5):
        cut = FilterBankWindows(bank, 5, 160, 16)
        e_all, w_all = [], []
        b = _splits(2000, rng)
        for a, z in zip(b[:-1], b[1:], strict=True):
            e, w = cut.push(x[a:z])
            e_all.append(e)
            w_all.append(w.copy())
        np.testing.assert_array_equal(np.concatenate(e_all), ends)
        np.testing.assert_array_equal(np.concatenate(w_all), wins)  # bit for bit
    # windows of a whole filtered recording are the streamed ones
    cut = FilterBankWindows(bank, 5, 160, 16)
    np.testing.assert_array_equal(cut.windows_at(cut.filter(x), ends), wins)


def test_filter_bank_holds_nonfinite_samples_and_counts_them():
    bank = design_bank([(8.0, 30.0)], 4, 160.0)
    x = np.random.default_rng(2).standard_normal((500, 3))
    x[100:110, 1] = np.nan
    cut = FilterBankWindows(bank, 3, 160, 16)
    _, wins = cut.push(x)
    assert np.isfinite(wins).all() and cut.n_replaced == 10


def test_bands_beyond_nyquist_are_refused():
    with pytest.raises(ConfigError, match="Nyquist"):
        design_bank([(8.0, 90.0)], 4, 160.0)


# --------------------------------------------------------------------------- training on real data


@pytest.fixture(scope="module")
def rec() -> Recording:
    return read_recording([MI])


@pytest.fixture(scope="module")
def trained(rec):
    spec = PipelineSpec(features="csp", classifier="lda", labels=LABELS)
    return fit_pipeline(spec, rec)


def test_recording_reads_as_file_replay_plays_it(rec):
    import mne

    raw = mne.io.read_raw(MI, verbose="error")
    assert rec.sfreq == 160.0 and len(rec.ch_names) == 64 and rec.ch_names[8] == "C3"
    np.testing.assert_allclose(rec.data[:50, 8], raw.get_data(picks=[8])[0, :50] * 1e6, rtol=1e-12)
    labels = [lab for _, lab in rec.events]
    assert labels.count("T1") == 7 and labels.count("T2") == 8


def test_training_report_and_model_record_what_the_decoder_expects(trained, tmp_path):
    res = trained
    assert res.n_trials == {"left": 7, "right": 8} and res.trial_n == 15
    # 13 windows of 1 s every 0.1 s fit in [onset + 0.5, onset + 2.5] s
    assert res.window_n == 15 * 11
    assert res.confusion.sum() == 15 and res.window_confusion.sum() == res.window_n
    assert abs(res.trial_accuracy - np.trace(res.confusion) / 15) < 1e-12
    lo, hi = res.trial_ci
    assert lo <= res.trial_accuracy <= hi
    assert "confusion (trials" in res.summary()
    pipe = res.pipeline
    path = pipe.save(tmp_path / "m.npz")
    back = DecoderPipeline.load(path)
    assert back.ch_names == pipe.ch_names and back.sfreq == 160.0 and back.classes == ("left", "right")
    assert back.info["train_hash"].startswith("sha256:") and back.info["data_hash"] == read_recording([MI]).file_hash
    assert back.decoder.feature_names == pipe.feature_names
    # never pickle: the archive opens with allow_pickle=False
    with np.load(path, allow_pickle=False) as npz:
        assert "meta" in npz.files and "filters" in npz.files


def test_wilson_interval_matches_statsmodels_values():
    # Wilson (1927); reference values from statsmodels.stats.proportion.proportion_confint(method="wilson")
    lo, hi = wilson_interval(8, 15)
    assert abs(lo - 0.30117) < 1e-4 and abs(hi - 0.75193) < 1e-4
    assert wilson_interval(0, 10)[0] == 0.0


def test_decoding_a_recording_is_the_same_in_any_chunks_and_after_save_load(trained, rec, tmp_path):
    pipe = trained.pipeline
    x = rec.data[:4000]
    whole = pipe.decode(x)
    back = DecoderPipeline.load(pipe.save(tmp_path / "m.npz"))
    again = back.decode(x)
    np.testing.assert_array_equal(whole.proba, again.proba)
    rng = np.random.default_rng(3)
    runner = pipe.runner()
    parts = []
    b = _splits(4000, rng)
    for a, z in zip(b[:-1], b[1:], strict=True):
        parts.append(runner.push(x[a:z]))
    np.testing.assert_array_equal(np.concatenate([p.proba for p in parts]), whole.proba)
    np.testing.assert_array_equal(np.concatenate([p.index for p in parts]), whole.index)
    # and the decoder's own kernel gives sklearn's probabilities on those features
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
    feats = whole.features
    y = (feats[:, 0] > np.median(feats[:, 0])).astype(int)
    lda.fit(feats, y)
    from rtneuro.decoders.linear import LinearDecoder

    dec = LinearDecoder.from_sklearn(lda)
    np.testing.assert_allclose(dec.predict_proba(feats), lda.predict_proba(feats), rtol=0, atol=1e-9)


def test_bandpower_and_fbcsp_pipelines_train_and_decode(rec):
    small = Recording(rec.data[:, :16], rec.ch_names[:16], rec.sfreq, rec.events, rec.sources, rec.file_hash)
    for spec in (PipelineSpec(features="bandpower", bands=((8.0, 13.0), (13.0, 30.0)), labels=LABELS, cv=3),
                 PipelineSpec(features="fbcsp", bands=((8.0, 13.0), (13.0, 30.0)), select=4, labels=LABELS, cv=3,
                              classifier="logreg")):
        res = fit_pipeline(spec, small)
        pipe = res.pipeline
        assert len(pipe.feature_names) == (32 if spec.features == "bandpower" else 4)
        fr = pipe.decode(small.data[:1000])
        assert fr.proba.shape == (len(pipe.windows().frame_ends(1000)), 2)
        np.testing.assert_allclose(fr.proba.sum(axis=1), 1.0, atol=1e-12)


def test_bad_training_requests_get_one_line_errors(rec, tmp_path):
    with pytest.raises(ConfigError, match=r"annotations \['T9'\] are not in the data"):
        fit_pipeline(PipelineSpec(labels={"T9": "x", "T1": "y"}), rec)
    with pytest.raises(ConfigError, match="at least two classes"):
        fit_pipeline(PipelineSpec(labels={"T1": "x", "T2": "x"}), rec)
    with pytest.raises(ConfigError, match="shorter than window_s"):
        PipelineSpec(tmin=0.0, tmax=0.5, window_s=1.0)
    with pytest.raises(ConfigError, match="does not take csp features"):
        PipelineSpec(features="csp", classifier="mdm")
    with pytest.raises(ConfigError, match="ANNOTATION=CLASS"):
        parse_labels("T1:left")
    with pytest.raises(ConfigError, match="recording not found"):
        read_recording([tmp_path / "missing.edf"])
    junk = tmp_path / "junk.edf"
    junk.write_bytes(b"not an edf at all" * 10)
    with pytest.raises(ConfigError, match="not a recording MNE can read"):
        read_recording([junk])


def test_corrupt_or_foreign_model_files_are_refused(trained, tmp_path):
    path = trained.pipeline.save(tmp_path / "m.npz")
    cut = tmp_path / "cut.npz"
    cut.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ConfigError, match="corrupt or truncated"):
        DecoderPipeline.load(cut)
    lin = tmp_path / "lin.npz"
    trained.pipeline.decoder.save(lin)
    with pytest.raises(ConfigError, match="not an rtneuro model"):
        DecoderPipeline.load(lin)
    pick = tmp_path / "pickle.npz"
    np.savez(pick, meta=np.array("{}"), evil=np.array([object()], dtype=object))
    with pytest.raises(ConfigError, match="pickled data, refused"):
        DecoderPipeline.load(pick)


# --------------------------------------------------------------------------- the node


def _meta(names, fs=160.0):
    return StreamMeta(name="eeg", kind="sig", sfreq=fs, ch_names=tuple(names), ch_types=("eeg",) * len(names),
                      units=("uV",) * len(names), dtype="<f8")


def _node(params, inputs, tmp_path):
    cls = node_class("decoder")
    return cls(build_params(cls.Params, params, "node 'mi'"), inputs, NodeContext(node_id="mi", base_dir=tmp_path))


def test_node_decodes_exactly_as_offline_and_refuses_a_different_montage(trained, rec, tmp_path):
    trained.pipeline.save(tmp_path / "m.npz")
    # the stream has extra channels, in another order: the node picks the model's by name
    names = list(reversed(rec.ch_names)) + ["EXG1"]
    x = np.concatenate([rec.data[:, ::-1], np.zeros((rec.data.shape[0], 1))], axis=1)[:6000]
    node = _node({"model": "m.npz", "threshold": 0.6, "min_frames": 2}, [_meta(names)], tmp_path)
    node.warmup()
    node.reset()
    rows, events = [], []
    b = _splits(6000, np.random.default_rng(4))
    for a, z in zip(b[:-1], b[1:], strict=True):
        out = node.process(Chunk(np.ascontiguousarray(x[a:z]), a, a / 160.0, 160.0, []))
        for port, ch in out or []:
            (rows if port == "" else events).append(ch)
    online = np.concatenate([c.data for c in rows])
    offline = trained.pipeline.decode(rec.data[:6000])
    np.testing.assert_array_equal(online[:, :2], offline.proba)
    np.testing.assert_array_equal(online[:, 2], offline.index)
    assert [c.first for c in rows] == np.cumsum([0] + [len(c.data) for c in rows[:-1]]).tolist()
    # class events: a class leading at p >= 0.6 for 2 windows, never the same class twice in a row
    ev = np.concatenate([c.data for c in events]) if events else np.zeros(0)
    labels = [e["label"].decode() for e in ev]
    assert all(a != b for a, b in zip(labels, labels[1:], strict=False))
    assert all(e["value"] >= 0.6 for e in ev)
    assert node.report()["class_events"] == len(ev) > 0
    # a montage without the model's channels, or another rate, is refused
    with pytest.raises(ConfigError, match=r"lacks \['C3'\]"):
        _node({"model": "m.npz"}, [_meta([n for n in rec.ch_names if n != "C3"])], tmp_path)
    with pytest.raises(ConfigError, match="trained at 160 Hz, stream 'eeg' runs at 250 Hz"):
        _node({"model": "m.npz"}, [_meta(rec.ch_names, 250.0)], tmp_path)
    with pytest.raises(ConfigError, match="train it first: rtneuro train"):
        _node({"model": "nothing.npz"}, [_meta(rec.ch_names)], tmp_path)


def test_node_survives_a_nan_burst(trained, rec, tmp_path):
    trained.pipeline.save(tmp_path / "m.npz")
    node = _node({"model": "m.npz"}, [_meta(rec.ch_names)], tmp_path)
    x = rec.data[:2000].copy()
    x[500:540] = np.nan
    out = node.process(Chunk(x, 0, 0.0, 160.0, []))
    rows = out[0][1].data
    assert np.isfinite(rows).all()  # held samples, counted
    assert node.report()["replaced_nonfinite"] == 40 * 64


# --------------------------------------------------------------------------- adaptive LDA


def _lda_problem(seed=0, n=400, f=6):
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.standard_normal((n, f)) + y[:, None] * 1.5
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto", store_covariance=True).fit(X, y)
    from rtneuro.decoders.adaptive import lda_state
    from rtneuro.decoders.linear import LinearDecoder

    return X, y, lda, LinearDecoder.from_sklearn(lda), lda_state(lda)


def test_adaptive_lda_recomputes_weights_as_sklearn_does_and_stays_bounded():
    X, y, lda, dec, st = _lda_problem()
    ad = AdaptiveLda(dec, st["means"], st["covariance"], st["priors"], rate=0.1, max_shift=0.5)
    scores, proba = np.zeros(1), np.zeros(2)
    ad.infer(X[0], scores, proba)
    np.testing.assert_allclose(proba, lda.predict_proba(X[:1])[0], atol=1e-12)
    # a drift of class 1's mean: the update follows it...
    drift = X[y == 1][:3] + 0.2
    for v in drift:
        assert ad.update(v, 1)
    # ... and the weights are sklearn's lsqr LDA formulas (_solve_lstsq, 1.9) on the new means
    coef = np.linalg.lstsq(st["covariance"], ad.means.T, rcond=None)[0].T
    icpt = -0.5 * np.diag(ad.means @ coef.T) + np.log(st["priors"])
    np.testing.assert_allclose(ad.coef[0], coef[1] - coef[0], rtol=1e-12)
    np.testing.assert_allclose(ad.intercept[0], icpt[1] - icpt[0], rtol=1e-12)
    # a bad block: far-away vectors pull the mean only up to max_shift; NaN never enters
    for _ in range(200):
        ad.update(np.full(X.shape[1], 50.0), 0)
    assert ad.shift()[0] <= 0.5 + 1e-9 and ad.clipped > 0
    before = ad.means.copy()
    assert not ad.update(np.full(X.shape[1], np.nan), 1)
    np.testing.assert_array_equal(ad.means, before)
    assert ad.rejected == 1


def test_node_adapts_from_labelled_events_and_publishes_it(trained, rec, tmp_path):
    trained.pipeline.save(tmp_path / "m.npz")
    ev_meta = StreamMeta(name="eeg.events", kind="evt", sfreq=0.0, dtype="event")
    node = _node({"model": "m.npz", "adapt": {"rate": 0.05, "max_shift": 0.5}}, [_meta(rec.ch_names), ev_meta], tmp_path)
    assert "adapt" in node.outputs and node.outputs["adapt"].ch_names[:3] == ("updates", "clipped", "bias")
    events = make_events([(i, i / 160.0, 1, -1, 0.0, 0.0, lab) for i, lab in rec.events])
    node.process(Chunk(events, 0, 0.0, 0.0, []), port=1)
    out = dict(node.process(Chunk(rec.data, 0, 0.0, 160.0, [])))
    adapt = out["adapt"].data
    # 11 labelled windows per trial, 15 trials
    assert adapt[-1, 0] == 165 and node.report()["adapt_updates"] == 165
    # the same 165 windows score the decoder against the labels (in-sample here: it was trained on them)
    first = node.report()
    assert first["labelled_windows"] == 165 and 0.7 < first["accuracy"] <= 1.0
    assert (adapt[:, 3:] <= 0.5 + 1e-9).all()
    assert adapt[-1, 2] != adapt[0, 2]  # the bias moved
    # any split of the signal gives the same decisions and the same adaptation (updates happen between frames)
    node.reset()
    node.process(Chunk(events, 0, 0.0, 0.0, []), port=1)
    rows, adapt_rows = [], []
    b = _splits(rec.data.shape[0], np.random.default_rng(5))
    for a, z in zip(b[:-1], b[1:], strict=True):
        for port, ch in node.process(Chunk(np.ascontiguousarray(rec.data[a:z]), a, a / 160.0, 160.0, [])) or []:
            (rows if port == "" else adapt_rows if port == "adapt" else []).append(ch.data)
    np.testing.assert_array_equal(np.concatenate(rows), out[""].data)
    np.testing.assert_array_equal(np.concatenate(adapt_rows), adapt)
    assert {k: node.report()[k] for k in ("labelled_windows", "accuracy")} == {k: first[k] for k in ("labelled_windows", "accuracy")}
    # without the second input, adapt is refused
    with pytest.raises(ConfigError, match="second input"):
        _node({"model": "m.npz", "adapt": {}}, [_meta(rec.ch_names)], tmp_path)


# --------------------------------------------------------------------------- the command


def test_train_command_writes_the_model_the_config_names(tmp_path):
    cfg = tmp_path / "mi.yaml"
    text = (ROOT / "configs" / "motor_imagery.yaml").read_text().replace("../models/motor_imagery.npz", "out/mi.npz")
    cfg.write_text(text)
    r = subprocess.run([sys.executable, "-m", "rtneuro", "train", str(cfg), "--data", str(MI), "--json",
                        str(tmp_path / "cv.json")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "15 trials (left 7, right 8)" in r.stdout and "95% CI" in r.stdout and "confusion" in r.stdout
    cv = json.loads((tmp_path / "cv.json").read_text())
    assert cv["trial_n"] == 15 and len(cv["confusion_trials"]) == 2
    pipe = DecoderPipeline.load(tmp_path / "out" / "mi.npz")
    assert pipe.spec.features == "csp" and len(pipe.ch_names) == 64
    r = subprocess.run([sys.executable, "-m", "rtneuro", "train", str(cfg), "--data", str(MI), "--labels", "T1=left,T7=right"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "T7" in r.stderr and "Traceback" not in r.stderr


def test_spec_round_trips_through_json():
    spec = PipelineSpec(features="fbcsp", bands=((8.0, 12.0), (12.0, 30.0)), select=3, labels=LABELS, picks=("C3", "C4"))
    assert PipelineSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    assert replace(spec, cv=3).cv == 3


def test_train_from_config_refuses_graphs_without_a_decoder(tmp_path):
    with pytest.raises(ConfigError, match="no node of type 'decoder'"):
        train_from_config(ROOT / "configs" / "demo.yaml", [MI])


@pytest.mark.parametrize("classifier", ["mdm", "tangent_lda"])
def test_covariance_pipelines_decode_as_pyriemann_on_the_same_windows(rec, classifier):
    from pyriemann.classification import MDM
    from pyriemann.estimation import Covariances
    from pyriemann.tangentspace import TangentSpace
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.pipeline import make_pipeline

    from rtneuro.decoders.train import labelled_windows

    small = Recording(rec.data[:, :16], rec.ch_names[:16], rec.sfreq, rec.events, rec.sources, rec.file_hash)
    spec = PipelineSpec(features="covariance", classifier=classifier, labels=LABELS, cv=3)
    pipe = fit_pipeline(spec, small).pipeline
    # the same training windows, through pyRiemann
    cut = pipe.windows()
    filtered = cut.filter(small.data)
    ends, y, _, _ = labelled_windows(small, cut, LABELS, spec.tmin, spec.tmax)
    covs = Covariances("scm").transform(cut.windows_at(filtered, ends)[:, 0].transpose(0, 2, 1))
    if classifier == "mdm":
        ref = MDM(metric="riemann").fit(covs, y)
    else:
        ref = make_pipeline(TangentSpace(metric="riemann"),
                            LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")).fit(covs, y)
    # every window of the first 40 s, decoded online vs pyRiemann on those windows
    fr = pipe.decode(small.data[:6400])
    test = Covariances("scm").transform(cut.windows_at(filtered, fr.ends)[:, 0].transpose(0, 2, 1))
    np.testing.assert_array_equal(fr.index, ref.predict(test))
    np.testing.assert_allclose(fr.proba, ref.predict_proba(test), rtol=0, atol=1e-9)


def test_decode_command_writes_the_offline_predictions(trained, rec, tmp_path):
    import csv

    model = trained.pipeline.save(tmp_path / "m.npz")
    r = subprocess.run([sys.executable, "-m", "rtneuro", "decode", str(model), "--data", str(MI), "--out",
                        str(tmp_path / "p.csv")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    fr = trained.pipeline.decode(rec.data)
    assert len(rows) == len(fr.ends) and f"{len(fr.ends)} windows" in r.stdout
    assert [int(x["last_sample"]) for x in rows] == (fr.ends - 1).tolist()
    assert [float(x["p:left"]) for x in rows] == fr.proba[:, 0].tolist()  # repr round-trips floats exactly
    assert [x["class"] for x in rows] == [trained.pipeline.classes[k] for k in fr.index]
