"""CSP and filter-bank CSP: equal to MNE 1.13, online kernels, safe files, real EEG.

Features (log-variances) are compared with ``mne.decoding.CSP.transform`` to 1e-9
absolute in log units (1e-9 relative on the variance),
filters to 1e-9 of their largest entry after matching each row's sign; the
log-variance kernel with a NumPy formula to 1e-12 relative; batch rows, the
per-channel kernel and save/load round trips bit for bit. On PhysioNet
EEGMMIDB S003R03 the cross-validated accuracy of our CSP + LDA, predicted
through the online kernels, equals MNE's within 0.02 and per-fold
predictions are identical.
"""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import pytest
from mne.decoding import CSP as MneCSP
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.feature_selection import mutual_info_classif
from sklearn.model_selection import ShuffleSplit, cross_val_score
from sklearn.pipeline import Pipeline

from rtneuro.decoders.csp import (
    CSP,
    CSPDecoder,
    FilterBankCSP,
    logvar,
    logvar_channels,
)
from rtneuro.decoders.linear import LinearDecoder
from rtneuro.errors import ConfigError

RTOL = 1e-9
#: CSP features are log-variances: a value near 0 is a variance near 1, so they are compared
#: absolutely, 1e-9 in log units being a relative 1e-9 on the variance.
LOG_ATOL = 1e-9
EDF = Path("/work/shared/data/eegmmidb/S003R03.edf")

mne.set_log_level("ERROR")


def _data(n_classes, n_channels=8, n_epochs=40, n_times=100, seed=0, deficient=False):
    """Mixed Gaussian epochs; class c has more power on source c."""
    rng = np.random.default_rng(seed)
    y = np.arange(n_epochs) % n_classes
    X = rng.standard_normal((n_epochs, n_channels, n_times))
    for c in range(n_classes):
        X[y == c, c] *= 3.0
    X = rng.standard_normal((n_channels, n_channels)) @ X
    if deficient:  # common average reference: rank n_channels - 1
        X -= X.mean(axis=1, keepdims=True)
    return X, y


def _assert_filters_up_to_sign(ours, theirs):
    sign = np.sign(np.sum(ours * theirs, axis=1))
    assert (sign != 0).all()
    np.testing.assert_allclose(
        ours * sign[:, None], theirs, rtol=0, atol=RTOL * np.abs(theirs).max()
    )


CASES = [
    (2, None, "concat", False),
    (2, None, "concat", True),
    (2, None, "epoch", False),
    (2, 0.1, "concat", True),
    (2, 0.1, "epoch", False),
    (2, "ledoit_wolf", "concat", False),
    (3, None, "concat", False),
    (3, 0.1, "epoch", False),
    (4, "ledoit_wolf", "concat", False),
]


@pytest.mark.parametrize(("n_classes", "reg", "cov_est", "deficient"), CASES)
def test_csp_matches_mne(n_classes, reg, cov_est, deficient):
    X, y = _data(n_classes, deficient=deficient)
    ref = MneCSP(n_components=4, reg=reg, log=True, norm_trace=False, cov_est=cov_est).fit(X, y)
    csp = CSP.fit(X, y, n_components=4, reg=reg, cov_est=cov_est)
    np.testing.assert_allclose(csp.transform(X), ref.transform(X), rtol=0, atol=LOG_ATOL)
    _assert_filters_up_to_sign(csp.filters, ref.filters_[:4])
    np.testing.assert_array_equal(csp.classes, ref.classes_)
    if n_classes == 2:
        np.testing.assert_allclose(csp.evals, ref.evals_[:4], rtol=RTOL)
    # from_mne keeps MNE's arrays: only the summation order differs
    np.testing.assert_allclose(CSP.from_mne(ref).transform(X), ref.transform(X), rtol=0, atol=LOG_ATOL)


def test_alternate_order_matches_mne():
    X, y = _data(2, seed=3)
    ref = MneCSP(n_components=6, log=True, component_order="alternate").fit(X, y)
    csp = CSP.fit(X, y, n_components=6, component_order="alternate")
    np.testing.assert_allclose(csp.transform(X), ref.transform(X), rtol=0, atol=LOG_ATOL)
    with pytest.raises(ConfigError, match="'alternate' needs 2 classes"):
        CSP.fit(*_data(3), component_order="alternate")
    with pytest.raises(ConfigError, match="did you mean 'ledoit_wolf'"):
        CSP.fit(X, y, reg="ledoit_wolff")


def test_logvar_kernel():
    rng = np.random.default_rng(1)
    win = np.ascontiguousarray(rng.standard_normal((160, 16)) + 0.3)  # non-zero mean kept
    filters = rng.standard_normal((4, 16))
    out = np.empty(4)
    assert logvar(win, filters, out)
    expected = np.log(np.mean((filters @ win.T) ** 2, axis=1))  # MNE's formula, no demeaning
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=0)
    demeaned = np.log(np.var(filters @ win.T, axis=1))
    assert np.abs(out - demeaned).max() > 1e-3  # the mean is not subtracted

    per_channel, via_eye = np.empty(16), np.empty(16)
    assert logvar_channels(win, per_channel)
    logvar(win, np.eye(16), via_eye)
    np.testing.assert_array_equal(per_channel, via_eye)
    np.testing.assert_allclose(per_channel, np.log(np.mean(win**2, axis=0)), rtol=1e-12)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_window(bad):
    X, y = _data(2)
    csp = CSP.fit(X, y)
    lda = LinearDiscriminantAnalysis().fit(csp.transform(X), y)
    dec = CSPDecoder(csp, LinearDecoder.from_sklearn(lda))
    feats, scores, proba = dec.buffers()
    good = np.ascontiguousarray(X[0].T)
    win = good.copy()
    win[7, 3] = bad
    assert dec.infer(win, feats, scores, proba) == -1
    assert np.isnan(feats).all() and np.isnan(proba).all()
    out = np.empty(8)
    assert not logvar_channels(win, out) and np.isnan(out).all()
    # nothing carried over: the next finite window decodes as if first
    idx = dec.infer(good, feats, scores, proba)
    assert dec.classes[idx] == lda.predict(csp.transform(X[:1]))[0]
    np.testing.assert_array_equal(feats, csp.transform(X[:1])[0])
    Xb = X[:3].copy()
    Xb[1, 2, 5] = bad
    np.testing.assert_array_equal(dec.predict_index(Xb)[[0, 2]] >= 0, True)
    assert dec.predict_index(Xb)[1] == -1
    with pytest.raises(ConfigError, match="epoch 1 is not finite"):
        dec.predict(Xb)


def test_batch_rows_equal_online():
    X, y = _data(3, n_channels=12)
    csp = CSP.fit(X, y, n_components=5)
    lda = LinearDiscriminantAnalysis().fit(csp.transform(X), y)
    dec = CSPDecoder(csp, LinearDecoder.from_sklearn(lda))
    feats, scores, proba = dec.buffers()
    batch_f, batch_p = csp.transform(X), dec.predict_proba(X)
    labels = dec.predict(X)
    np.testing.assert_array_equal(labels, lda.predict(batch_f))
    for i in range(0, len(X), 7):
        idx = dec.infer(np.ascontiguousarray(X[i].T), feats, scores, proba)
        np.testing.assert_array_equal(feats, batch_f[i])
        np.testing.assert_array_equal(proba, batch_p[i])
        assert dec.classes[idx] == labels[i]


def _bands(seed=0, n_bands=3):
    """Band-specific discriminative sources: band b separates classes on source b."""
    rng = np.random.default_rng(seed)
    y = np.arange(60) % 2
    X = rng.standard_normal((n_bands, 60, 8, 80))
    for b in range(n_bands):
        X[b, y == 1, b] *= 2.5
    return rng.standard_normal((8, 8)) @ X, y


def test_filter_bank_matches_mne_and_selects_by_mi():
    X, y = _bands()
    fb_all = FilterBankCSP.fit(X, y, n_components=4)
    ref = np.hstack([MneCSP(n_components=4, log=True).fit(xb, y).transform(xb) for xb in X])
    full = fb_all.transform(X)
    np.testing.assert_allclose(full, ref, rtol=0, atol=LOG_ATOL)

    fb = FilterBankCSP.fit(X, y, n_components=4, k_best=5, random_state=7)
    mi = mutual_info_classif(full, y, random_state=7)
    np.testing.assert_array_equal(fb.selected, np.sort(np.argsort(-mi, kind="stable")[:5]))
    assert set(fb.band_of.tolist()) <= {0, 1, 2}
    sel = fb.transform(X)
    np.testing.assert_array_equal(sel, full[:, fb.selected])  # same arithmetic, bit for bit
    out = np.empty(5)
    for i in (0, 13, 59):
        assert fb.features(np.ascontiguousarray(X[:, i].transpose(0, 2, 1)), out)
        np.testing.assert_array_equal(out, sel[i])


def test_round_trips(tmp_path):
    X, y = _data(2, deficient=True)
    csp = CSP.fit(X, y, n_components=3, reg=0.05)
    back = CSP.load(csp.save(tmp_path / "csp.npz"))
    for name in ("filters", "patterns", "evals", "classes"):
        np.testing.assert_array_equal(getattr(back, name), getattr(csp, name))
    assert (back.reg, back.cov_est, back.component_order) == (0.05, "concat", "mutual_info")
    np.testing.assert_array_equal(back.transform(X), csp.transform(X))

    Xb, yb = _bands()
    fb = FilterBankCSP.fit(Xb, np.array(["left", "right"])[yb], k_best=6)
    fb_back = FilterBankCSP.load(fb.save(tmp_path / "fb.npz"))
    np.testing.assert_array_equal(fb_back.selected, fb.selected)
    np.testing.assert_array_equal(fb_back.transform(Xb), fb.transform(Xb))

    for feats, data, labels in ((csp, X, y), (fb, Xb, np.array(["left", "right"])[yb])):
        lda = LinearDiscriminantAnalysis().fit(feats.transform(data), labels)
        dec = CSPDecoder(feats, LinearDecoder.from_sklearn(lda))
        dback = CSPDecoder.load(dec.save(tmp_path / "dec.npz"))
        assert dback.is_filter_bank == dec.is_filter_bank
        np.testing.assert_array_equal(dback.predict(data), dec.predict(data))
        np.testing.assert_array_equal(dback.predict_proba(data), dec.predict_proba(data))


def test_corrupt_files_refused(tmp_path):
    X, y = _data(2)
    csp = CSP.fit(X, y)
    data = csp.save(tmp_path / "good.npz").read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match=r"csp file '.*trunc\.npz': corrupt or truncated"):
        CSP.load(tmp_path / "trunc.npz")

    with np.load(tmp_path / "good.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}

    def write(name, **changes):
        np.savez(tmp_path / name, **{**arrays, **changes})
        return tmp_path / name

    cases = {
        "must be finite": write("nan.npz", filters=np.full_like(arrays["filters"], np.nan)),
        "patterns must have shape": write("pat.npz", patterns=arrays["patterns"][:2]),
        "header says 4 components": write("short.npz", filters=arrays["filters"][:3]),
        "classes must be distinct": write("cls.npz", classes=np.array([1, 1])),
        "pickled data, refused": write("pkl.npz", classes=np.array([{"a": 1}, 2], dtype=object)),
        "not an rtneuro csp": write("fmt.npz", meta=np.array('{"format": "x"}')),
    }
    for pattern, path in cases.items():
        with pytest.raises(ConfigError, match=pattern) as info:
            CSP.load(path)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="decoder file .*good.npz.: incomplete or foreign archive"):
        CSPDecoder.load(tmp_path / "good.npz")


# --------------------------------------------------------------------------- real EEG


@pytest.fixture(scope="module")
def eegmmidb_epochs():
    if not EDF.is_file():
        pytest.skip(f"{EDF} is not available")
    from mne.channels import make_standard_montage
    from mne.datasets import eegbci

    raw = mne.io.read_raw_edf(EDF, preload=True)
    eegbci.standardize(raw)
    raw.set_montage(make_standard_montage("standard_1005"))
    raw.filter(7.0, 30.0, fir_design="firwin", skip_by_annotation="edge")
    events, _ = mne.events_from_annotations(raw, event_id=dict(T1=2, T2=3))
    picks = mne.pick_types(raw.info, eeg=True, exclude="bads")
    epochs = mne.Epochs(
        raw, events, dict(left=2, right=3), -1.0, 4.0, proj=True, picks=picks,
        baseline=None, preload=True,
    )
    train = epochs.copy().crop(tmin=1.0, tmax=2.0)
    return train.get_data(copy=False), epochs.events[:, -1] - 2


def test_mne_parity_on_eegmmidb(eegmmidb_epochs):
    X, labels = eegmmidb_epochs
    assert X.shape[1] == 64 and set(labels.tolist()) == {0, 1}
    cv = ShuffleSplit(10, test_size=0.2, random_state=42)
    clf = Pipeline(
        [("CSP", MneCSP(n_components=4, reg=None, log=True, norm_trace=False)),
         ("LDA", LinearDiscriminantAnalysis())]
    )
    mne_scores = cross_val_score(clf, X, labels, cv=cv)

    ours = []
    for train, test in cv.split(X):
        clf.fit(X[train], labels[train])
        csp = CSP.fit(X[train], labels[train], n_components=4)
        lda = LinearDiscriminantAnalysis().fit(csp.transform(X[train]), labels[train])
        dec = CSPDecoder(csp, LinearDecoder.from_sklearn(lda))
        feats, scores, proba = dec.buffers()
        pred = np.array(
            [dec.classes[dec.infer(np.ascontiguousarray(X[i].T), feats, scores, proba)]
             for i in test]
        )
        np.testing.assert_array_equal(pred, clf.predict(X[test]))
        np.testing.assert_allclose(
            csp.transform(X[test]), clf.named_steps["CSP"].transform(X[test]), rtol=RTOL
        )
        ours.append(np.mean(pred == labels[test]))
    print(f"EEGMMIDB S003R03 CV accuracy: MNE {mne_scores.mean():.4f}, rtneuro {np.mean(ours):.4f}")
    assert abs(np.mean(ours) - mne_scores.mean()) <= 0.02
    np.testing.assert_array_equal(ours, mne_scores)
