"""Riemannian decoders: equal to pyRiemann / scikit-learn, safe files, bad input.

References and tolerances:

- :func:`covariance` against ``pyriemann.estimation.Covariances`` ("scm":
  ``max|C - ref| <= 1e-12 * max|ref|``; "lwf": ``1e-10 * max|ref|``), the
  Ledoit-Wolf shrinkage against ``sklearn.covariance.ledoit_wolf`` (1e-10
  absolute) and a fixed shrinkage against ``shrunk_covariance`` (1e-12 relative).
- :class:`MdmDecoder` against ``pyriemann.classification.MDM(metric="riemann")``:
  labels exactly, distances and probabilities to 1e-9 absolute.
- :class:`TangentSpaceDecoder` against ``make_pipeline(TangentSpace(), clf)``:
  tangent vectors, probabilities and decision values to 1e-9 absolute,
  labels exactly.
- ``infer`` on one matrix is bit-identical to row ``i`` of the batch methods.
"""

from __future__ import annotations

import numpy as np
import pytest
from pyriemann.classification import MDM
from pyriemann.estimation import Covariances
from pyriemann.tangentspace import TangentSpace
from sklearn.covariance import ledoit_wolf, shrunk_covariance
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from rtneuro.decoders.linear import LinearDecoder
from rtneuro.decoders.riemann import (
    COV_ESTIMATORS,
    SHRINKAGE_LEDOIT_WOLF,
    MdmDecoder,
    TangentSpaceDecoder,
    covariance,
    covariance_batch,
    estimator_shrinkage,
    mdm_infer,
)
from rtneuro.errors import ConfigError, RtneuroError

TOL = 1e-9


def _epochs(n_channels, n_classes, n_epochs=60, n_times=250, seed=0):
    """Time-major random epochs: mixed channels, class-dependent source power, DC offsets."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((n_channels, n_channels))
    y = np.arange(n_epochs) % n_classes
    gains = 1.0 + 2.0 * rng.random((n_classes, n_channels))
    src = rng.standard_normal((n_epochs, n_times, n_channels)) * gains[y][:, None, :]
    wins = src @ mixing.T * 20e-6 + rng.normal(0, 1e-3, n_channels)  # volts, offsets
    return np.ascontiguousarray(wins), y


def _pyr(wins):
    """Epochs in pyRiemann's layout (n_epochs, n_channels, n_times)."""
    return np.ascontiguousarray(wins.transpose(0, 2, 1))


# --------------------------------------------------------------------------- covariance


@pytest.mark.parametrize("n_channels", [1, 8, 32])
@pytest.mark.parametrize("estimator", COV_ESTIMATORS)
def test_covariance_matches_pyriemann(estimator, n_channels):
    wins, _ = _epochs(n_channels, 2, n_epochs=6)
    ref = Covariances(estimator=estimator).fit_transform(_pyr(wins))
    rel = 1e-12 if estimator == "scm" else 1e-10
    shrink = estimator_shrinkage(estimator)
    out = np.empty((n_channels, n_channels))
    work = np.empty((2, n_channels))
    for k in range(len(wins)):
        used = covariance(wins[k], out, shrink, work)
        np.testing.assert_array_equal(out, out.T)
        assert np.abs(out - ref[k]).max() <= rel * np.abs(ref[k]).max()
        if estimator == "lwf":
            expected = ledoit_wolf(wins[k])[1]
            assert abs(used - expected) <= 1e-10
            if n_channels > 1:
                assert 0 < used < 1  # the test exercises real shrinkage
        else:
            assert used == 0.0
        alloc = np.empty_like(out)
        covariance(wins[k], alloc, shrink)  # scratch allocated by the kernel
        np.testing.assert_array_equal(alloc, out)
    batch = np.empty((len(wins), n_channels, n_channels))
    used_b = np.empty(len(wins))
    covariance_batch(wins, batch, shrink, used_b)
    covariance(wins[-1], out, shrink, work)
    np.testing.assert_array_equal(batch[-1], out)


def test_covariance_takes_estimator_names():
    wins, _ = _epochs(8, 2, n_epochs=1)
    by_name, by_value = np.empty((8, 8)), np.empty((8, 8))
    for name in COV_ESTIMATORS:
        assert covariance(wins[0], by_name, name) == covariance(
            wins[0], by_value, estimator_shrinkage(name)
        )
        np.testing.assert_array_equal(by_name, by_value)
    with pytest.raises(ValueError, match="'scm', 'lwf' or a number"):
        covariance(wins[0], by_name, "oas")


def test_fixed_shrinkage_matches_sklearn():
    wins, _ = _epochs(8, 2, n_epochs=1)
    out = np.empty((8, 8))
    assert covariance(wins[0], out, 0.3) == 0.3
    ref = shrunk_covariance(np.cov(wins[0].T, bias=True), shrinkage=0.3)
    assert np.abs(out - ref).max() <= 1e-12 * np.abs(ref).max()


def test_covariance_nonfinite_window():
    wins, _ = _epochs(8, 2, n_epochs=1)
    for bad in (np.nan, np.inf):
        w = wins[0].copy()
        w[17, 3] = bad
        out = np.zeros((8, 8))
        for shrink in (0.0, SHRINKAGE_LEDOIT_WOLF):
            assert np.isnan(covariance(w, out, shrink))
            assert np.isnan(out).all()


def test_estimator_names():
    assert estimator_shrinkage("scm") == 0.0
    assert estimator_shrinkage("lwf") == SHRINKAGE_LEDOIT_WOLF
    assert estimator_shrinkage(0.25) == 0.25
    with pytest.raises(ConfigError, match="did you mean 'lwf'"):
        estimator_shrinkage("lw")
    with pytest.raises(ConfigError, match=r"shrinkage must be in \[0, 1\], got 1.5"):
        estimator_shrinkage(1.5)


# --------------------------------------------------------------------------- MDM


def _covs(n_channels, n_classes, seed=0):
    wins, y = _epochs(n_channels, n_classes, n_epochs=90, seed=seed)
    covs = Covariances(estimator="lwf").fit_transform(_pyr(wins))
    return covs[:60], y[:60], covs[60:]


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("n_channels", [8, 16, 32])
def test_mdm_matches_pyriemann(n_channels, n_classes):
    C, y, C_test = _covs(n_channels, n_classes)
    model = MDM(metric="riemann").fit(C, y)
    dec = MdmDecoder.from_pyriemann(model)

    pred = model.predict(C_test)
    np.testing.assert_array_equal(dec.predict(C_test), pred)
    assert len(set(pred.tolist())) > 1  # the decoder is not trivially constant
    np.testing.assert_allclose(dec.transform(C_test), model.transform(C_test), rtol=0, atol=TOL)
    np.testing.assert_allclose(
        dec.predict_proba(C_test), model.predict_proba(C_test), rtol=0, atol=TOL
    )

    dist, proba = dec.buffers()
    batch_dist = dec.transform(C_test)
    batch_proba = dec.predict_proba(C_test)
    for i in range(0, len(C_test), 7):
        idx = dec.infer(C_test[i], dist, proba)
        assert dec.classes[idx] == pred[i]
        np.testing.assert_array_equal(dist, batch_dist[i])
        np.testing.assert_array_equal(proba, batch_proba[i])


def test_mdm_string_labels_and_checks():
    C, y, C_test = _covs(8, 3)
    labels = np.array(["rest", "left", "right"])[y]
    model = MDM().fit(C, labels)
    dec = MdmDecoder.from_pyriemann(model)
    np.testing.assert_array_equal(dec.predict(C_test), model.predict(C_test))
    with pytest.raises(ConfigError, match="metric='logeuclid' is not supported"):
        MdmDecoder.from_pyriemann(MDM(metric="logeuclid").fit(C, y))
    with pytest.raises(ConfigError, match="not fitted"):
        MdmDecoder.from_pyriemann(MDM())
    with pytest.raises(ConfigError, match="expected pyriemann MDM"):
        MdmDecoder.from_pyriemann(TangentSpace())
    with pytest.raises(ConfigError, match="n_channels=8, got \\(7, 7\\)"):
        dec.predict(np.eye(7))


def _bad_matrices(n):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((n, n))
    nan = np.eye(n)
    nan[1, 2] = nan[2, 1] = np.nan
    inf = np.eye(n)
    inf[0, 0] = np.inf
    indefinite = a + a.T  # symmetric, some negative eigenvalues
    singular = np.zeros((n, n))
    return {"nan": nan, "inf": inf, "indefinite": indefinite, "zero": singular}


def test_mdm_bad_input_gives_no_label():
    C, y, C_test = _covs(8, 3)
    dec = MdmDecoder.from_pyriemann(MDM().fit(C, y))
    dist, proba = dec.buffers()
    good = dec.infer(C_test[0], dist, proba)
    good_dist, good_proba = dist.copy(), proba.copy()
    for name, bad in _bad_matrices(8).items():
        assert dec.infer(bad, dist, proba) == -1, name
        assert np.isnan(dist).all() and np.isnan(proba).all(), name
        assert np.isnan(dec.predict_proba(bad)).all()
        with pytest.raises(RtneuroError, match="matrix 1 is not finite or not positive"):
            dec.predict(np.stack([C_test[0], bad]))
    # no state was corrupted: the same good matrix gives the same answer
    assert dec.infer(C_test[0], dist, proba) == good
    np.testing.assert_array_equal(dist, good_dist)
    np.testing.assert_array_equal(proba, good_proba)
    # the bare kernel agrees with the method
    work = np.empty((2, 8, 8))
    assert mdm_infer(dec.covmeans_isqrt, C_test[0], work, dist, proba) == good


# --------------------------------------------------------------------------- tangent space


CLASSIFIERS = {
    "lda-lsqr-auto": lambda: LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"),
    "logreg": lambda: LogisticRegression(max_iter=5000),
}


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("n_channels", [8, 16])
@pytest.mark.parametrize("clf", list(CLASSIFIERS))
def test_tangent_space_matches_pipeline(clf, n_channels, n_classes):
    C, y, C_test = _covs(n_channels, n_classes, seed=1)
    pipe = make_pipeline(TangentSpace(metric="riemann"), CLASSIFIERS[clf]()).fit(C, y)
    dec = TangentSpaceDecoder.from_pipeline(pipe)

    np.testing.assert_allclose(dec.transform(C_test), pipe[0].transform(C_test), rtol=0, atol=TOL)
    pred = pipe.predict(C_test)
    np.testing.assert_array_equal(dec.predict(C_test), pred)
    assert len(set(pred.tolist())) > 1
    np.testing.assert_allclose(
        dec.predict_proba(C_test), pipe.predict_proba(C_test), rtol=0, atol=TOL
    )
    np.testing.assert_allclose(
        dec.decision_function(C_test), pipe.decision_function(C_test), rtol=0, atol=TOL
    )

    scores, proba = dec.buffers()
    assert scores.shape == (1 if n_classes == 2 else n_classes,)
    vec = np.empty(dec.n_features)
    batch_vec = dec.transform(C_test)
    batch_scores = np.atleast_2d(dec.decision_function(C_test).T).T
    batch_proba = dec.predict_proba(C_test)
    for i in range(0, len(C_test), 7):
        idx = dec.infer(C_test[i], scores, proba, vec)
        assert dec.classes[idx] == pred[i]
        np.testing.assert_array_equal(vec, batch_vec[i])
        np.testing.assert_array_equal(scores, batch_scores[i])
        np.testing.assert_array_equal(proba, batch_proba[i])
        assert dec.infer(C_test[i], scores, proba) == idx  # internal vector buffer


def test_fit_constructors():
    C, y, C_test = _covs(8, 3)
    mdm = MdmDecoder.fit(C, y, sfreq=250.0)
    np.testing.assert_array_equal(mdm.predict(C_test), MDM().fit(C, y).predict(C_test))
    for model, clf in (
        ("lda", LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")),
        ("logreg", LogisticRegression(max_iter=5000)),
    ):
        dec = TangentSpaceDecoder.fit(C, y, model=model, shrinkage="auto")
        pipe = make_pipeline(TangentSpace(), clf).fit(C, y)
        np.testing.assert_allclose(
            dec.predict_proba(C_test), pipe.predict_proba(C_test), rtol=0, atol=TOL
        )
    with pytest.raises(ConfigError, match="did you mean 'lda'"):
        TangentSpaceDecoder.fit(C, y, model="lad")


def test_tangent_space_from_parts_and_checks():
    C, y, C_test = _covs(8, 2)
    ts = TangentSpace().fit(C)
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(ts.transform(C), y)
    dec = TangentSpaceDecoder.from_pyriemann(ts, lda, ch_names=[f"C{i}" for i in range(8)])
    np.testing.assert_array_equal(dec.predict(C_test), lda.predict(ts.transform(C_test)))
    with pytest.raises(ConfigError, match="tsupdate=True"):
        TangentSpaceDecoder.from_pyriemann(TangentSpace(tsupdate=True).fit(C), lda)
    with pytest.raises(ConfigError, match="metric='logeuclid' is not supported"):
        TangentSpaceDecoder.from_pyriemann(TangentSpace(metric="logeuclid").fit(C), lda)
    with pytest.raises(ConfigError, match="2-step pipeline"):
        TangentSpaceDecoder.from_pipeline(lda)
    small = LinearDecoder.from_sklearn(LinearDiscriminantAnalysis().fit(C[:, 0, :3], y))
    with pytest.raises(ConfigError, match="give 36 tangent features, the linear decoder expects 3"):
        TangentSpaceDecoder(reference=ts.reference_, linear=small)


def test_tangent_space_bad_input_gives_no_label():
    C, y, C_test = _covs(8, 3)
    dec = TangentSpaceDecoder.from_pipeline(
        make_pipeline(TangentSpace(), LogisticRegression(max_iter=5000)).fit(C, y)
    )
    scores, proba = dec.buffers()
    vec = np.empty(dec.n_features)
    good = dec.infer(C_test[0], scores, proba, vec)
    good_proba = proba.copy()
    for name, bad in _bad_matrices(8).items():
        assert dec.infer(bad, scores, proba, vec) == -1, name
        assert np.isnan(vec).all() and np.isnan(scores).all() and np.isnan(proba).all(), name
        with pytest.raises(RtneuroError, match="not finite or not positive"):
            dec.predict(bad)
    assert dec.infer(C_test[0], scores, proba, vec) == good
    np.testing.assert_array_equal(proba, good_proba)


# --------------------------------------------------------------------------- files


def _mdm(n_classes=3):
    C, y, C_test = _covs(8, n_classes)
    names = [f"EEG{i:02d}" for i in range(8)]
    return MdmDecoder.from_pyriemann(MDM().fit(C, y), ch_names=names, sfreq=250.0,
                                     estimator="lwf"), C_test, names


def _ts(n_classes=3):
    C, y, C_test = _covs(8, n_classes)
    pipe = make_pipeline(
        TangentSpace(), LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
    ).fit(C, y)
    return TangentSpaceDecoder.from_pipeline(pipe, sfreq=250.0, estimator="scm"), C_test


@pytest.mark.parametrize("n_classes", [2, 3])
def test_save_load_round_trip(tmp_path, n_classes):
    dec, C_test, names = _mdm(n_classes)
    back = MdmDecoder.load(dec.save(tmp_path / "mdm.npz"))
    assert back.ch_names == tuple(names) and back.sfreq == 250.0 and back.estimator == "lwf"
    np.testing.assert_array_equal(back.covmeans, dec.covmeans)
    np.testing.assert_array_equal(back.covmeans_isqrt, dec.covmeans_isqrt)
    np.testing.assert_array_equal(back.classes, dec.classes)
    np.testing.assert_array_equal(back.transform(C_test), dec.transform(C_test))
    np.testing.assert_array_equal(back.predict_proba(C_test), dec.predict_proba(C_test))

    ts, C_test = _ts(n_classes)
    back_ts = TangentSpaceDecoder.load(ts.save(tmp_path / "ts.npz"))
    assert back_ts.ch_names is None and back_ts.sfreq == 250.0 and back_ts.estimator == "scm"
    np.testing.assert_array_equal(back_ts.reference, ts.reference)
    np.testing.assert_array_equal(back_ts.reference_isqrt, ts.reference_isqrt)
    np.testing.assert_array_equal(back_ts.linear.coef, ts.linear.coef)
    np.testing.assert_array_equal(back_ts.predict(C_test), ts.predict(C_test))
    np.testing.assert_array_equal(back_ts.predict_proba(C_test), ts.predict_proba(C_test))


def _arrays(path):
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def test_corrupt_mdm_file_is_refused(tmp_path):
    dec, *_ = _mdm()
    good = dec.save(tmp_path / "good.npz")
    arrays = _arrays(good)

    def write(**changes):
        a = {k: v for k, v in {**arrays, **changes}.items() if v is not None}
        path = tmp_path / f"bad{len(list(tmp_path.iterdir()))}.npz"
        np.savez(path, **a)
        return path

    not_spd = arrays["covmeans"].copy()
    not_spd[1] = -not_spd[1]
    asym = arrays["covmeans"].copy()
    asym[0, 0, 1] += 1.0
    cases = {
        r"missing arrays \['covmeans_isqrt'\]": write(covmeans_isqrt=None),
        "covmeans_isqrt is not the inverse square root": write(
            covmeans_isqrt=arrays["covmeans_isqrt"] * 1.01
        ),
        "covmeans must be positive definite": write(covmeans=not_spd),
        "covmeans must be symmetric": write(covmeans=asym),
        "covmeans must be finite": write(covmeans=np.full_like(arrays["covmeans"], np.nan)),
        "3 class means need 3 classes": write(classes=np.arange(4)),
        "not an rtneuro decoder": write(meta=np.array('{"format": "rtneuro.linear_decoder"}')),
        "pickled data, refused": write(classes=np.array([{"a": 1}], dtype=object)),
    }
    for pattern, path in cases.items():
        with pytest.raises(ConfigError, match=pattern) as info:
            MdmDecoder.load(path)
        assert "\n" not in str(info.value)
    data = good.read_bytes()
    for frac in (0.0, 0.3, 0.9):
        bad = tmp_path / "truncated.npz"
        bad.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(ConfigError, match=r"decoder file '.*truncated\.npz': "):
            MdmDecoder.load(bad)


def test_corrupt_tangent_file_is_refused(tmp_path):
    dec, _ = _ts()
    arrays = _arrays(dec.save(tmp_path / "good.npz"))

    def write(**changes):
        a = {k: v for k, v in {**arrays, **changes}.items() if v is not None}
        path = tmp_path / f"bad{len(list(tmp_path.iterdir()))}.npz"
        np.savez(path, **a)
        return path

    cases = {
        r"missing arrays \['linear_coef'\]": write(linear_coef=None),
        r"\(linear\): intercept must have shape": write(
            linear_intercept=arrays["linear_intercept"][:1]
        ),
        "reference_isqrt is not the inverse square root": write(
            reference_isqrt=arrays["reference_isqrt"].T * 0.5
        ),
        r"\(linear\): header says 36 features, coef has 35": write(
            linear_coef=arrays["linear_coef"][:, :35]
        ),
        "7x7 matrices give 28 tangent features, the linear decoder expects 36": write(
            reference=arrays["reference"][:7, :7]
        ),
    }
    for pattern, path in cases.items():
        with pytest.raises(ConfigError, match=pattern):
            TangentSpaceDecoder.load(path)
    with pytest.raises(ConfigError, match="no such file"):
        TangentSpaceDecoder.load(tmp_path / "absent.npz")


# --------------------------------------------------------------------------- checks


def test_check_inputs_and_warmup():
    dec, _, names = _mdm()
    dec.warmup()
    dec.check_inputs(names, 250.0)
    with pytest.raises(ConfigError, match=r"missing \['EEG03'\], unexpected \['EEG3'\] \(did you mean 'EEG03'"):
        dec.check_inputs([n if n != "EEG03" else "EEG3" for n in names], 250.0)
    swapped = list(names)
    swapped[1], swapped[2] = swapped[2], swapped[1]
    with pytest.raises(ConfigError, match="different order.*position 1 is 'EEG02'"):
        dec.check_inputs(swapped, 250.0)
    with pytest.raises(ConfigError, match="sfreq=250 Hz, the graph gives sfreq=500.0"):
        dec.check_inputs(names, 500.0)
    ts, _ = _ts()
    ts.warmup()
    ts.check_inputs([f"x{i}" for i in range(8)], 250.0)
    with pytest.raises(ConfigError, match="expects 8 channels, the graph gives 7"):
        ts.check_inputs([f"x{i}" for i in range(7)], 250.0)
    with pytest.raises(ConfigError, match="7 channel names given for 8x8"):
        MdmDecoder(covmeans=dec.covmeans, classes=dec.classes, ch_names=names[:7])
