"""Poisson population decoder on a simulated cosine-tuned population.

References and tolerances:

- the normalized log posterior equals a naive loop over grid points and units
  with ``scipy.stats.poisson.logpmf`` (``tests/reference/decoding.py``) within
  1e-9 absolute, for a uniform and a fitted prior;
- decoding the direction of movement (64 grid points) from 100 units is
  right (exact bin) in > 15 % of test bins (chance 1.6 %) and within 2 bins
  in > 60 % (chance 7.8 %).
"""

from __future__ import annotations

import numpy as np
import pytest

from rtneuro.decoders.poisson import PoissonDecoder, poisson_infer
from rtneuro.decoders.simulate import simulate_cosine_session
from rtneuro.errors import ConfigError, RtneuroError

from reference.decoding import poisson_posterior_naive

N_GRID = 64
BIN_S = 0.1
TOL = 1e-9


@pytest.fixture(scope="module")
def data():
    s = simulate_cosine_session(100, 12000, seed=2, mode="ou", bin_s=BIN_S, ou_speed=0.15)
    ang = np.arctan2(s.velocity[:, 1], s.velocity[:, 0]) % (2 * np.pi)
    idx = np.floor(ang / (2 * np.pi) * N_GRID).astype(np.int64) % N_GRID
    return s.counts, idx


def _fit(data, prior="uniform"):
    counts, idx = data
    grid = (np.arange(N_GRID) + 0.5) * 2 * np.pi / N_GRID
    return PoissonDecoder.fit(counts[:8000], idx[:8000], N_GRID, bin_s=BIN_S, prior=prior, grid=grid)


@pytest.mark.parametrize("prior", ["uniform", "fitted"])
def test_matches_scipy_logpmf_loop(data, prior):
    dec = _fit(data, prior)
    counts = data[0][8000:8012]
    lp = dec.predict_log_proba(counts)
    for i, c in enumerate(counts):
        ref = poisson_posterior_naive(c, dec.rates_hz, BIN_S, dec.log_prior)
        np.testing.assert_allclose(lp[i], ref, rtol=0, atol=TOL)
        assert dec.predict(counts[i : i + 1])[0] == np.argmax(ref)
    if prior == "uniform":
        np.testing.assert_allclose(dec.log_prior, -np.log(N_GRID), rtol=1e-15)
    else:
        assert np.ptp(dec.log_prior) > 0.1


def test_decodes_direction_above_chance(data):
    dec = _fit(data)
    counts, idx = data
    pred = dec.predict(counts[8000:])
    err = np.abs((pred - idx[8000:] + N_GRID // 2) % N_GRID - N_GRID // 2)
    assert (err == 0).mean() > 10 / N_GRID
    assert (err <= 2).mean() > 0.6
    np.testing.assert_array_equal(dec.predict_stimulus(counts[8000:8005]), dec.grid[pred[:5]])


def test_infer_is_bit_identical_to_batch(data):
    dec = _fit(data, "fitted")
    counts = data[0][8000:8200].copy()
    counts[3, 5] = np.nan
    counts[4, 0] = -1.0
    lp_b, post_b, idx_b = dec.predict_log_proba(counts), dec.predict_proba(counts), dec.predict(counts)
    lp, post = dec.buffers()
    for i in range(len(counts)):
        assert dec.infer(counts[i], lp, post) == idx_b[i]
        np.testing.assert_array_equal(lp, lp_b[i])
        np.testing.assert_array_equal(post, post_b[i])
    ok = idx_b >= 0
    np.testing.assert_allclose(post_b[ok].sum(axis=1), 1.0, rtol=0, atol=1e-12)


def test_invalid_counts_give_no_index(data):
    dec = _fit(data)
    lp, post = dec.buffers()
    for bad in (np.nan, np.inf, -1.0):
        c = data[0][8000].copy()
        c[2] = bad
        assert poisson_infer(dec.log_rates, dec.base, c, lp, post) == -1
        assert np.isnan(lp).all() and np.isnan(post).all()
    assert dec.infer(data[0][8001].copy(), lp, post) >= 0 and np.isfinite(post).all()
    c = data[0][8000:8002].copy()
    c[1, 0] = np.nan
    with pytest.raises(RtneuroError, match="row 1"):
        dec.predict_stimulus(c)


def test_fit_checks(data):
    counts, idx = data
    with pytest.raises(ConfigError, match="no training bin"):
        PoissonDecoder.fit(counts[:100], np.zeros(100, dtype=np.int64), 4, bin_s=BIN_S)
    with pytest.raises(ConfigError, match="integer grid indices"):
        PoissonDecoder.fit(counts[:100], idx[:100] + 0.5, N_GRID, bin_s=BIN_S)
    # a unit silent at every grid point is floored, not -inf
    c = counts[:8000].copy()
    c[:, 0] = 0
    dec = PoissonDecoder.fit(c, idx[:8000], N_GRID, bin_s=BIN_S, rate_floor_hz=0.5)
    np.testing.assert_array_equal(dec.rates_hz[0], 0.5)
    dec.warmup()


def test_save_load_round_trip(tmp_path, data):
    dec = _fit(data, "fitted")
    back = PoissonDecoder.load(dec.save(tmp_path / "pd.npz"))
    for name in ("rates_hz", "log_prior", "grid", "log_rates", "base"):
        np.testing.assert_array_equal(getattr(back, name), getattr(dec, name))
    assert back.train_hash == dec.train_hash and back.bin_s == dec.bin_s
    np.testing.assert_array_equal(back.predict_log_proba(data[0][8000:8100]),
                                  dec.predict_log_proba(data[0][8000:8100]))


def test_corrupt_and_inconsistent_files_refused(tmp_path, data):
    dec = _fit(data)
    path = dec.save(tmp_path / "pd.npz")
    raw = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[:200])
    with pytest.raises(ConfigError, match="corrupt or truncated"):
        PoissonDecoder.load(tmp_path / "cut.npz")
    meta, arrays = dec.to_arrays()
    bad = {**arrays, "rates_hz": np.where(arrays["rates_hz"] > 5, 0.0, arrays["rates_hz"])}
    with pytest.raises(ConfigError, match="^pd: rates_hz must be finite and > 0"):
        PoissonDecoder.from_arrays(meta, bad, where="pd")
    with pytest.raises(ConfigError, match="^pd: log_prior must have shape"):
        PoissonDecoder.from_arrays(meta, {**arrays, "log_prior": np.zeros(3)}, where="pd")
    with pytest.raises(ConfigError, match="^pd: header says 7 units"):
        PoissonDecoder.from_arrays({**meta, "n_units": 7}, arrays, where="pd")
    with pytest.raises(ConfigError, match="^pd: lacks array 'grid'"):
        PoissonDecoder.from_arrays(meta, {k: v for k, v in arrays.items() if k != "grid"}, where="pd")
