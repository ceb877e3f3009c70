"""Information theory (rtneuro.analysis.information) against closed forms, scikit-learn, ennemi and naive loops."""

from __future__ import annotations

import math

import ennemi
import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy
from sklearn.metrics import mutual_info_score

from rtneuro.analysis import (
    channel_capacity,
    coding_efficiency,
    conditional_mutual_info_discrete,
    conditional_mutual_info_ksg,
    delay_embed,
    entropy_discrete,
    mutual_info_discrete,
    mutual_info_gaussian,
    mutual_info_gcmi,
    mutual_info_ksg,
    surrogate_test,
    transfer_entropy_discrete,
    transfer_entropy_gaussian,
    transfer_entropy_ksg,
)
from rtneuro.analysis.information import _prepare
from rtneuro.errors import ConfigError
from rtneuro.kernels.information import count_within, knn_radius

from reference.information import ksg_counts, var1, var1_transfer_entropy


def _gauss_pair(rho: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    return x, rho * x + math.sqrt(1 - rho * rho) * rng.standard_normal(n)


def _z(a: np.ndarray) -> np.ndarray:
    return (a - a.mean(axis=0)) / a.std(axis=0)


def _ennemi(y, x, k, cond=None) -> float:
    return float(np.ravel(ennemi.estimate_mi(y, x, k=k, cond=cond, preprocess=False))[0])


# -- discrete ---------------------------------------------------------------------


def test_plug_in_entropy_and_mutual_information_equal_scipy_and_scikit_learn():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 3000)
    r = (s + rng.integers(0, 3, 3000)) % 6  # depends on s
    assert entropy_discrete(s) == pytest.approx(scipy_entropy(np.bincount(s)), abs=1e-12)
    assert entropy_discrete(s, base=2) == pytest.approx(scipy_entropy(np.bincount(s), base=2), abs=1e-12)
    assert mutual_info_discrete(s, r) == pytest.approx(mutual_info_score(s, r), abs=1e-12)
    assert mutual_info_discrete(s.astype(str), r) == pytest.approx(mutual_info_score(s, r), abs=1e-12)  # any symbols
    # conditional: I(X;Y|Z) = I(X;(Y,Z)) - I(X;Z), each from scikit-learn on joint labels
    z = rng.integers(0, 3, 3000)
    x = (r + z) % 4
    yz = np.unique(np.column_stack([r, z]), axis=0, return_inverse=True)[1].ravel()
    assert conditional_mutual_info_discrete(x, r, z) == pytest.approx(mutual_info_score(x, yz) - mutual_info_score(x, z), abs=1e-12)


def test_miller_madow_adds_its_term_and_removes_most_of_the_bias_of_independent_variables():
    rng = np.random.default_rng(1)
    s, r = rng.integers(0, 8, 200), rng.integers(0, 8, 200)
    ms, mr, msr = len(np.unique(s)), len(np.unique(r)), len(np.unique(np.column_stack([s, r]), axis=0))
    term = ((ms - 1) + (mr - 1) - (msr - 1)) / (2 * 200)
    assert mutual_info_discrete(s, r, bias="miller_madow") == pytest.approx(mutual_info_discrete(s, r) + term, abs=1e-12)
    # independent 8 x 8 symbols, 200 trials each: the plug-in is biased up by about 49 / 400 nats; corrected, it is near 0
    plug = [mutual_info_discrete(*rng.integers(0, 8, (2, 200))) for _ in range(200)]
    mm = [mutual_info_discrete(*rng.integers(0, 8, (2, 200)), bias="miller_madow") for _ in range(200)]
    assert np.mean(plug) > 0.08 and abs(np.mean(mm)) < 0.3 * np.mean(plug)
    with pytest.raises(ConfigError, match="'none'"):
        mutual_info_discrete(s, r, bias="panzeri")


# -- KSG -------------------------------------------------------------------------


@pytest.mark.parametrize("n, k, dims", [(300, 1, (1, 1)), (1000, 4, (1, 1)), (700, 6, (2, 1)), (500, 3, (2, 3))])
def test_neighbour_counts_equal_a_brute_force_loop(n, k, dims):
    rng = np.random.default_rng(n + k)
    a = rng.standard_normal((n, dims[0]))
    b = a[:, :1] @ np.ones((1, dims[1])) * 0.5 + rng.standard_normal((n, dims[1]))
    data = _prepare([a, b], True, 0.0, 0)
    sx, sy = list(range(dims[0])), list(range(dims[0], sum(dims)))
    eps_ref, (nx_ref, ny_ref) = ksg_counts(data, k, [sx, sy])
    eps = knn_radius(data, np.arange(sum(dims)), np.argsort(data[:, 0], kind="stable"), k)
    np.testing.assert_array_equal(eps, eps_ref)
    for cols, ref in ((sx, nx_ref), (sy, ny_ref)):
        c = np.array(cols)
        np.testing.assert_array_equal(count_within(data, c, np.argsort(data[:, c[0]], kind="stable"), eps), ref)


@pytest.mark.parametrize("rho, n, k", [(0.0, 1000, 4), (0.6, 1000, 4), (0.9, 2000, 3), (0.6, 500, 8)])
def test_ksg_mutual_information_equals_ennemi_and_the_gaussian_closed_form(rho, n, k):
    x, y = _gauss_pair(rho, n, seed=int(rho * 10) + n)
    mine = mutual_info_ksg(x, y, k=k, jitter=0.0)
    # ennemi's KSG on the same standardised data: the same counts (its k-d tree), its digamma an asymptotic series
    assert mine == pytest.approx(_ennemi(_z(y), _z(x), k), abs=1e-5)
    # the Gaussian truth of this sample, -1/2 ln(1 - r^2) (r: its correlation), within 3 SD of KSG at this N (0.02)
    r = np.corrcoef(x, y)[0, 1]
    assert mine == pytest.approx(-0.5 * math.log(1 - r * r), abs=0.06)
    assert mutual_info_ksg(x, y, k=k) == pytest.approx(mine, abs=1e-6)  # the default jitter (1e-10 SD) changes nothing
    assert mutual_info_ksg(x, y, k=k, base=2) == pytest.approx(mutual_info_ksg(x, y, k=k) / math.log(2), rel=1e-12)


def test_ksg_is_unbiased_on_average_for_gaussians():
    # -1/2 ln(1 - rho^2) over 20 samples of 1000 (KSG's bias at k = 4 is below 0.01 nats here)
    est = [mutual_info_ksg(*_gauss_pair(0.6, 1000, seed=s)) for s in range(20)]
    assert np.mean(est) == pytest.approx(-0.5 * math.log(1 - 0.36), abs=0.015)


def test_ksg_of_vectors_and_conditional_mutual_information_equal_ennemi():
    rng = np.random.default_rng(3)
    z = rng.standard_normal(800)
    x = z + 0.7 * rng.standard_normal(800)
    y = z + 0.7 * rng.standard_normal(800)
    # X and Y share Z: their MI is large, their MI given Z about 0 (true value exactly 0)
    cmi = conditional_mutual_info_ksg(x, y, z, k=4, jitter=0.0)
    assert cmi == pytest.approx(_ennemi(_z(y), _z(x), 4, cond=_z(z)), abs=1e-5)
    assert abs(cmi) < 0.03 and mutual_info_ksg(x, y) > 0.2
    # a 2-D x: equal to the 2-D closed form of a Gaussian (X1, X2) -> Y = X1 + X2 + noise
    xx = rng.standard_normal((3000, 2))
    yy = xx.sum(axis=1) + rng.standard_normal(3000)
    assert mutual_info_ksg(xx, yy, k=4, standardize=False) == pytest.approx(0.5 * math.log(3.0), abs=0.05)


def test_ksg_errors_are_one_line_and_name_the_fix():
    x = np.repeat(np.arange(10.0), 10)
    with pytest.raises(ConfigError, match="repeat exactly.*jitter"):
        mutual_info_ksg(x, x[::-1], jitter=0.0)
    assert np.isfinite(mutual_info_ksg(x, x[::-1]))  # quantised data: the default jitter breaks the ties
    with pytest.raises(ConfigError, match="k=100"):
        mutual_info_ksg(np.arange(50.0), np.arange(50.0), k=100)
    with pytest.raises(ConfigError, match="paired"):
        mutual_info_ksg(np.arange(50.0), np.arange(49.0))
    with pytest.raises(ConfigError, match="NaN"):
        mutual_info_ksg(np.array([1.0, np.nan, 2.0]), np.arange(3.0))


# -- Gaussian and Gaussian copula ------------------------------------------------------


def test_gaussian_mutual_information_is_the_closed_form_and_its_bias_correction_works():
    x, y = _gauss_pair(0.5, 400, seed=5)
    r = np.corrcoef(x, y)[0, 1]
    assert mutual_info_gaussian(x, y, bias_correct=False) == pytest.approx(-0.5 * math.log(1 - r * r), abs=1e-12)
    # bias: 20 samples of 3 + 2 independent dimensions, 300 trials; the plug-in is biased up, the corrected estimate is not
    rng = np.random.default_rng(6)
    raw = [mutual_info_gaussian(*np.split(rng.standard_normal((20, 5)), [3], axis=1), bias_correct=False) for _ in range(300)]
    cor = [mutual_info_gaussian(*np.split(rng.standard_normal((20, 5)), [3], axis=1)) for _ in range(300)]
    assert np.mean(raw) > 0.15 and abs(np.mean(cor)) < 0.2 * np.mean(raw)


def test_gaussian_copula_mi_ignores_monotonic_transforms_and_recovers_a_gaussian_dependence():
    x, y = _gauss_pair(0.7, 5000, seed=7)
    g = mutual_info_gcmi(x, y)
    assert mutual_info_gcmi(np.exp(x), y ** 3) == g  # ranks only: bit-identical
    assert g == pytest.approx(-0.5 * math.log(1 - 0.49), abs=0.02)


# -- channels ----------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.0, 0.1, 0.3])
def test_blahut_arimoto_gives_the_closed_form_capacities(p):
    hb = 0.0 if p == 0 else -(p * math.log(p) + (1 - p) * math.log(1 - p))
    c, px = channel_capacity([[1 - p, p], [p, 1 - p]])  # binary symmetric: ln 2 - H(p)
    assert c == pytest.approx(math.log(2) - hb, abs=1e-9) and px == pytest.approx([0.5, 0.5], abs=1e-6)
    c, _ = channel_capacity([[1 - p, p, 0.0], [0.0, p, 1 - p]])  # binary erasure: (1 - p) ln 2
    assert c == pytest.approx((1 - p) * math.log(2), abs=1e-9)
    if p > 0:  # Z channel: log2(1 + (1 - p) p^(p / (1 - p))) bits
        c, _ = channel_capacity([[1.0, 0.0], [p, 1 - p]], base=2)
        assert c == pytest.approx(math.log2(1 + (1 - p) * p ** (p / (1 - p))), abs=1e-9)
    assert channel_capacity(np.eye(5))[0] == pytest.approx(math.log(5), abs=1e-12)
    with pytest.raises(ConfigError, match="probability distribution"):
        channel_capacity([[0.5, 0.6], [0.5, 0.5]])


def test_coding_efficiency_is_the_information_over_the_capacity():
    rng = np.random.default_rng(8)
    s = rng.integers(0, 4, 20000)
    out = coding_efficiency(s, s)  # a noiseless channel used with uniform stimuli: efficient
    assert out["capacity"] == pytest.approx(math.log(4), abs=1e-9) and out["efficiency"] == pytest.approx(1.0, abs=1e-3)
    skew = np.where(rng.random(20000) < 0.85, 0, rng.integers(1, 4, 20000))  # the same channel, mostly one stimulus
    noisy = np.where(rng.random(20000) < 0.2, rng.integers(0, 4, 20000), skew)
    eff = coding_efficiency(skew, noisy)
    assert 0.0 < eff["efficiency"] < 0.6 and eff["mi"] == pytest.approx(mutual_info_discrete(skew, noisy), abs=1e-12)


# -- transfer entropy ------------------------------------------------------------------


def test_discrete_transfer_entropy_of_a_noisy_copy_is_ln2_minus_the_flip_entropy():
    # X_t = Y_{t-1}, flipped with probability p; Y i.i.d. fair bits: T_{Y->X} = ln 2 - H(p), T_{X->Y} = 0
    rng = np.random.default_rng(9)
    p, n = 0.1, 100_000
    y = rng.integers(0, 2, n)
    x = np.empty(n, np.int64)
    x[0] = 0
    x[1:] = y[:-1] ^ (rng.random(n - 1) < p)
    expected = math.log(2) + p * math.log(p) + (1 - p) * math.log(1 - p)
    assert transfer_entropy_discrete(y, x) == pytest.approx(expected, abs=0.005)
    assert transfer_entropy_discrete(x, y) == pytest.approx(0.0, abs=0.001)
    fut, xp, yp = delay_embed(y, x, k=2, l=1)
    assert transfer_entropy_discrete(y, x, k=2) == pytest.approx(conditional_mutual_info_discrete(fut, yp, xp), abs=1e-12)


def test_gaussian_transfer_entropy_of_a_var1_is_its_closed_form_in_one_direction_only():
    a, b, c = 0.5, 0.7, 0.4
    src, tgt = var1(a, b, c, 100_000, seed=10)
    assert transfer_entropy_gaussian(src, tgt) == pytest.approx(var1_transfer_entropy(a, b, c), abs=0.005)
    assert transfer_entropy_gaussian(tgt, src) == pytest.approx(0.0, abs=0.001)
    # half of Granger's log-ratio: the residual variances of the two regressions, computed here by hand
    fut, xp, yp = delay_embed(src, tgt)

    def resid(design):
        d = np.column_stack([np.ones(len(fut)), design])
        return np.var(fut - d @ np.linalg.lstsq(d, fut, rcond=None)[0])

    granger = math.log(resid(xp) / resid(np.hstack([xp, yp])))
    assert transfer_entropy_gaussian(src, tgt) == pytest.approx(granger / 2, abs=1e-12)


def test_ksg_transfer_entropy_equals_ennemi_and_the_var1_closed_form():
    a, b, c = 0.5, 0.7, 0.4
    src, tgt = var1(a, b, c, 3000, seed=11)
    mine = transfer_entropy_ksg(src, tgt, jitter=0.0)
    fut, xp, yp = delay_embed(src, tgt)
    assert mine == pytest.approx(_ennemi(_z(fut), _z(yp[:, 0]), 4, cond=_z(xp[:, 0])), abs=1e-5)
    assert mine == pytest.approx(var1_transfer_entropy(a, b, c), abs=0.03)
    assert abs(transfer_entropy_ksg(tgt, src)) < 0.02


def test_surrogates_find_the_coupled_direction_significant_and_the_other_not():
    src, tgt = var1(0.5, 0.7, 0.3, 1500, seed=12)
    fwd = surrogate_test(transfer_entropy_gaussian, src, tgt, n_surrogates=99, seed=1)
    back = surrogate_test(transfer_entropy_gaussian, tgt, src, n_surrogates=99, seed=1)
    assert fwd["p_value"] == pytest.approx(0.01) and fwd["value"] > fwd["null_mean"] + 5 * fwd["null_sd"]
    assert back["p_value"] > 0.05
    again = surrogate_test(transfer_entropy_gaussian, src, tgt, n_surrogates=99, seed=1)
    np.testing.assert_array_equal(again["null"], fwd["null"])  # seeded
    shuffled = surrogate_test(lambda s, t: mutual_info_discrete(s, t), np.arange(100) % 7, np.arange(100) % 7,
                              n_surrogates=49, method="shuffle")
    assert shuffled["p_value"] == pytest.approx(0.02)
    with pytest.raises(ConfigError, match="circular_shift"):
        surrogate_test(transfer_entropy_gaussian, src, tgt, method="phase")


# -- the online node ------------------------------------------------------------------


def _node(params: dict, names=("x", "y", "z"), fs=250.0):
    from rtneuro.messages import StreamMeta
    from rtneuro.nodes import NodeContext, build_params, node_class

    cls = node_class("information")
    meta = StreamMeta(name="eeg", kind="sig", sfreq=fs, ch_names=tuple(names), ch_types=("eeg",) * len(names),
                      units=("uV",) * len(names), dtype="<f8")
    return cls(build_params(cls.Params, params, "info"), [meta], NodeContext(node_id="info"))


def _var_stream(n: int, seed: int) -> np.ndarray:
    src, tgt = var1(0.5, 0.7, 0.4, n, seed=seed)
    return np.column_stack([src, tgt, np.random.default_rng(seed).standard_normal(n)])  # x drives y; z independent


@pytest.mark.parametrize("splits", [[], [1, 2, 3, 250, 251, 999], list(range(7, 2000, 113)), [1999]])
def test_the_node_gives_the_same_frames_for_any_split_and_each_is_its_window_estimate(splits):
    from conftest import feed_split

    x = _var_stream(2000, seed=13)
    params = {"pairs": [["x", "y"], ["x", "z"]], "measures": ["te_gaussian", "te_ksg", "mi_gcmi"], "window_s": 2.0, "step_s": 0.5}
    whole = feed_split(_node(params), x, [], 250.0)
    node = _node(params)
    np.testing.assert_array_equal(feed_split(node, x, splits, 250.0), whole)
    names = node.outputs[""].ch_names
    assert names == ("x->y:te_gaussian", "y->x:te_gaussian", "x->z:te_gaussian", "z->x:te_gaussian",
                     "x->y:te_ksg", "y->x:te_ksg", "x->z:te_ksg", "z->x:te_ksg", "x-y:mi_gcmi", "x-z:mi_gcmi")
    assert whole.shape == ((2000 - 500) // 125 + 1, 10)
    # frame f covers samples [end - 500, end), end = 500 + 125 f
    for f in (0, 5, whole.shape[0] - 1):
        w = x[125 * f: 125 * f + 500]
        assert whole[f, 0] == transfer_entropy_gaussian(w[:, 0], w[:, 1])
        assert whole[f, 5] == transfer_entropy_ksg(w[:, 1], w[:, 0])
        assert whole[f, 9] == mutual_info_gcmi(w[:, 0], w[:, 2])
    # the coupled direction carries information, the others about none
    assert np.median(whole[:, 0]) > 0.05 > np.median(np.abs(whole[:, [1, 2, 3]]))
    assert np.median(whole[:, 4]) > 0.05


def test_a_non_finite_sample_blanks_its_pairs_for_the_windows_that_hold_it():
    from conftest import feed_split

    x = _var_stream(1500, seed=14)
    x[600, 2] = np.nan
    node = _node({"pairs": [["x", "y"], ["x", "z"]], "measures": ["te_gaussian"], "window_s": 2.0, "step_s": 0.5})
    out = feed_split(node, x, [100, 700], 250.0)
    hit = [f for f in range(out.shape[0]) if 125 * f <= 600 < 125 * f + 500]
    assert np.isnan(out[hit][:, 2:]).all() and np.isfinite(out[:, :2]).all()
    assert np.isfinite(np.delete(out, hit, axis=0)).all()
    assert node.report()["nan_values"] == 2 * len(hit)


def test_the_node_refuses_what_it_cannot_compute_in_one_line():
    with pytest.raises(ConfigError, match="'q' is not a channel"):
        _node({"pairs": [["x", "q"]]})
    with pytest.raises(ConfigError, match="history, lag and knn need at least 66"):
        _node({"window_s": 0.2, "lag": 60, "measures": ["te_ksg"]})
    with pytest.raises(ConfigError, match="twice"):
        _node({"measures": ["mi_ksg", "mi_ksg"]})


def test_the_information_flow_example_runs_on_the_shipped_eeg():
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("information_flow", ROOT / "examples" / "information_flow.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(n_surrogates=19)
    assert out["var1"]["te_xy"] == pytest.approx(out["var1"]["truth"], abs=0.01)
    assert out["var1"]["p_xy"] == pytest.approx(0.05) and out["var1"]["p_yx"] > 0.05
    rows = out["eeg"]
    assert len(rows) == 20 and all(np.isfinite([r["te_gaussian"], r["te_ksg"], r["gcmi"]]).all() for r in rows)
    mi = {(r["source"], r["target"]): r["gcmi"] for r in rows}
    assert mi[("O1", "Oz")] > 5 * mi[("O1", "C4")]  # neighbours share more than distant channels
