"""Linear decoders: equal to scikit-learn, safe files, feature checks.

Predicted labels are compared exactly, probabilities and decision values to
1e-9 absolute, on random data and on ``make_classification`` data with 2 and
4 classes and 64 features.
"""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression, Ridge

from rtneuro.decoders import LinearDecoder, linear_infer, training_hash
from rtneuro.errors import ConfigError, RtneuroError

N_FEATURES = 64
TOL = 1e-9


def _data(kind: str, n_classes: int, seed: int = 0):
    """Train and test sets: structured (make_classification) or random labels."""
    if kind == "structured":
        X, y = make_classification(
            n_samples=600,
            n_features=N_FEATURES,
            n_informative=12,
            n_redundant=0,
            n_classes=n_classes,
            n_clusters_per_class=1,
            random_state=seed,
        )
    else:
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((600, N_FEATURES)) * rng.uniform(0.1, 10, N_FEATURES)
        y = rng.integers(0, n_classes, 600)
    return X[:400], y[:400], X[400:]


MODELS = {
    "lda-lsqr-auto": lambda: LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"),
    "lda-eigen": lambda: LinearDiscriminantAnalysis(solver="eigen"),
    "lda-eigen-auto": lambda: LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto"),
    "logreg": lambda: LogisticRegression(max_iter=2000),
}


@pytest.mark.parametrize("data", ["random", "structured"])
@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("name", list(MODELS))
def test_classifiers_match_sklearn(name, n_classes, data):
    X, y, X_test = _data(data, n_classes)
    model = MODELS[name]().fit(X, y)
    dec = LinearDecoder.from_sklearn(model)
    assert dec.kind == ("logreg" if name == "logreg" else "lda")

    np.testing.assert_array_equal(dec.predict(X_test), model.predict(X_test))
    np.testing.assert_allclose(
        dec.predict_proba(X_test), model.predict_proba(X_test), rtol=0, atol=TOL
    )
    np.testing.assert_allclose(
        dec.decision_function(X_test), model.decision_function(X_test), rtol=0, atol=TOL
    )
    assert dec.decision_function(X_test).shape == model.decision_function(X_test).shape

    # the one-vector hot path gives the batch results bit for bit
    scores, proba = dec.buffers()
    batch_scores = np.atleast_2d(dec.decision_function(X_test).T).T
    batch_proba = dec.predict_proba(X_test)
    for i in range(0, len(X_test), 17):
        idx = dec.infer(np.ascontiguousarray(X_test[i]), scores, proba)
        assert dec.classes[idx] == model.predict(X_test[i : i + 1])[0]
        np.testing.assert_array_equal(scores, batch_scores[i])
        np.testing.assert_array_equal(proba, batch_proba[i])
        assert dec.predict(X_test[i]) == dec.predict(X_test[i : i + 1])[0]


def test_string_labels():
    X, y, X_test = _data("structured", 4)
    labels = np.array(["rest", "left", "right", "feet"])[y]
    model = LogisticRegression(max_iter=2000).fit(X, labels)
    dec = LinearDecoder.from_sklearn(model)
    np.testing.assert_array_equal(dec.predict(X_test), model.predict(X_test))


@pytest.mark.parametrize("n_targets", [1, 3])
def test_ridge_matches_sklearn(n_targets):
    X, y = make_regression(
        n_samples=300, n_features=N_FEATURES, n_targets=n_targets, random_state=1
    )
    model = Ridge(alpha=2.0).fit(X[:200], y[:200])
    dec = LinearDecoder.from_sklearn(model)
    out = dec.predict(X[200:])
    assert out.shape == model.predict(X[200:]).shape
    np.testing.assert_allclose(out, model.predict(X[200:]), rtol=1e-12, atol=TOL)
    np.testing.assert_allclose(
        dec.predict(X[200]), model.predict(X[200:201])[0], rtol=1e-12, atol=TOL
    )
    with pytest.raises(ConfigError, match="no probabilities"):
        dec.predict_proba(X[200:])


def test_nonfinite_features_give_no_label():
    X, y, X_test = _data("structured", 4)
    dec = LinearDecoder.from_sklearn(LinearDiscriminantAnalysis(solver="lsqr").fit(X, y))
    x = X_test[0].copy()
    x[3] = np.nan
    scores, proba = dec.buffers()
    assert linear_infer(dec.coef, dec.intercept, x, dec.link, scores, proba) == -1
    assert np.isnan(proba).all()
    with pytest.raises(RtneuroError, match="non-finite"):
        dec.predict(x)


# --------------------------------------------------------------------------- files


def _fitted(n_classes=4):
    X, y, X_test = _data("structured", n_classes)
    names = [f"ch{i:02d}_mu" for i in range(N_FEATURES)]
    model = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(X, y)
    dec = LinearDecoder.from_sklearn(model, feature_names=names, sfreq=10.0, X=X, y=y)
    return dec, X, y, X_test, names


@pytest.mark.parametrize("n_classes", [2, 4])
def test_save_load_round_trip(tmp_path, n_classes):
    dec, X, y, X_test, names = _fitted(n_classes)
    path = dec.save(tmp_path / "dec.npz")
    back = LinearDecoder.load(path)
    assert back.kind == "lda"
    assert back.feature_names == tuple(names)
    assert back.sfreq == 10.0
    assert back.train_hash == training_hash(X, y) != training_hash(X, y[::-1])
    np.testing.assert_array_equal(back.classes, dec.classes)
    np.testing.assert_array_equal(back.predict(X_test), dec.predict(X_test))
    np.testing.assert_array_equal(back.predict_proba(X_test), dec.predict_proba(X_test))
    np.testing.assert_array_equal(back.decision_function(X_test), dec.decision_function(X_test))


def test_ridge_and_string_classes_round_trip(tmp_path):
    X, y = make_regression(n_samples=100, n_features=N_FEATURES, random_state=2)
    dec = LinearDecoder.from_sklearn(Ridge().fit(X, y))
    back = LinearDecoder.load(dec.save(tmp_path / "ridge.npz"))
    assert back.classes is None and back.feature_names is None and back.sfreq is None
    np.testing.assert_array_equal(back.predict(X), dec.predict(X))

    Xc, yc, _ = _data("structured", 2)
    model = LogisticRegression(max_iter=2000).fit(Xc, np.array(["left", "right"])[yc])
    back = LinearDecoder.load(LinearDecoder.from_sklearn(model).save(tmp_path / "lr.npz"))
    np.testing.assert_array_equal(back.predict(Xc), model.predict(Xc))


def _arrays(dec):
    path_arrays = {}
    with np.load(dec, allow_pickle=False) as npz:
        for k in npz.files:
            path_arrays[k] = npz[k]
    return path_arrays


@pytest.mark.parametrize("key", ["classes", "meta", "extra"])
def test_pickle_inside_is_refused(tmp_path, key):
    dec, *_ = _fitted()
    arrays = _arrays(dec.save(tmp_path / "good.npz"))
    arrays[key] = np.array([{"x": 1}, "a"], dtype=object)
    bad = tmp_path / "pickled.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ConfigError, match=r"pickled\.npz") as info:
        LinearDecoder.load(bad)
    msg = str(info.value)
    assert "\n" not in msg
    assert "pickle" in msg or "unexpected arrays ['extra']" in msg


def test_plain_pickle_file_is_refused(tmp_path):
    import pickle

    bad = tmp_path / "model.npz"
    bad.write_bytes(pickle.dumps({"coef": [1, 2]}))
    with pytest.raises(ConfigError, match="pickled data, refused"):
        LinearDecoder.load(bad)


@pytest.mark.parametrize("frac", [0.0, 0.1, 0.5, 0.9, 0.99])
def test_truncated_file_is_refused(tmp_path, frac):
    dec, *_ = _fitted()
    data = dec.save(tmp_path / "good.npz").read_bytes()
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(data[: int(len(data) * frac)])
    with pytest.raises(ConfigError, match=r"decoder file '.*truncated\.npz': ") as info:
        LinearDecoder.load(bad)
    assert "\n" not in str(info.value)


def test_incomplete_or_inconsistent_file_is_refused(tmp_path):
    dec, *_ = _fitted()
    arrays = _arrays(dec.save(tmp_path / "good.npz"))

    def write(**changes):
        a = {**arrays, **changes}
        a = {k: v for k, v in a.items() if v is not None}
        path = tmp_path / f"bad{len(list(tmp_path.iterdir()))}.npz"
        np.savez(path, **a)
        return path

    cases = {
        "missing arrays \\['coef'\\]": write(coef=None),
        "intercept must have shape": write(intercept=arrays["intercept"][:2]),
        "not valid JSON": write(meta=np.array("{not json")),
        "not an rtneuro decoder .format .other., expected .rtneuro.linear_decoder": write(meta=np.array('{"format": "other"}')),
        "5 classes need coef with 5 row": write(classes=np.arange(5)),
        "must be finite": write(coef=np.full_like(arrays["coef"], np.nan)),
    }
    for pattern, path in cases.items():
        with pytest.raises(ConfigError, match=pattern):
            LinearDecoder.load(path)
    with pytest.raises(ConfigError, match="no such file"):
        LinearDecoder.load(tmp_path / "absent.npz")
    assert zipfile.is_zipfile(tmp_path / "good.npz")


# --------------------------------------------------------------------------- checks


def test_check_inputs():
    dec, *_, names = _fitted()
    dec.check_inputs(names, 10.0)
    with pytest.raises(
        ConfigError,
        match=r"missing \['ch05_mu'\], unexpected \['ch05_mv'\] \(did you mean 'ch05_mu'",
    ):
        dec.check_inputs([n if n != "ch05_mu" else "ch05_mv" for n in names], 10.0)
    with pytest.raises(ConfigError, match="expects 64 features, the graph gives 63"):
        dec.check_inputs(names[:-1], 10.0)
    swapped = list(names)
    swapped[3], swapped[4] = swapped[4], swapped[3]
    with pytest.raises(ConfigError, match="different order.*position 3 is 'ch04_mu'"):
        dec.check_inputs(swapped, 10.0)
    with pytest.raises(ConfigError, match="sfreq=10 Hz, the graph gives sfreq=20.0"):
        dec.check_inputs(names, 20.0)

    anonymous = LinearDecoder(kind="ridge", coef=np.ones((1, 3)), intercept=[0.0], ravel=True)
    anonymous.check_inputs(["a", "b", "c"], 250.0)
    with pytest.raises(ConfigError, match="expects 3 features, the graph gives 2"):
        anonymous.check_inputs(["a", "b"], 250.0)


def test_wrong_shape_and_unsupported_model():
    dec, *_ = _fitted()
    with pytest.raises(ConfigError, match="n_features=64, got \\(63,\\)"):
        dec.predict(np.zeros(63))
    with pytest.raises(ConfigError, match="supported: LinearDiscriminantAnalysis"):
        LinearDecoder.from_sklearn(object())
    with pytest.raises(ConfigError, match="not fitted"):
        LinearDecoder.from_sklearn(Ridge())
    with pytest.raises(ConfigError, match="did you mean 'lda'"):
        LinearDecoder(kind="lda2", coef=np.ones((1, 3)), intercept=[0.0])
