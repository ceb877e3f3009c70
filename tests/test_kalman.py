"""Velocity Kalman decoder and CLDA on a simulated cosine-tuned population.

References and tolerances:

- the numba information-form filter equals a textbook covariance-form filter
  on the augmented state ``[v, 1]`` with ``np.linalg.inv`` of the innovation
  covariance (``tests/reference/decoding.py``): largest difference at most
  1e-9 times the largest decoded speed component, over a whole run with
  skipped (NaN) bins;
- the steady-state gain gives the same output as the full recursion once
  converged (1e-9 relative after 200 bins);
- decoded velocity correlates with the truth (Pearson r per axis) at least as
  well as ordinary least squares from rates to velocity (no tolerance);
- CLDA from a decoder fitted on preferred directions rotated by 90 degrees
  raises the per-axis r between decoded and intended velocity from < 0.3 to
  > 0.7 in closed-loop simulation (seeded).
"""

from __future__ import annotations

import numpy as np
import pytest

from rtneuro.decoders.kalman import CLDAParams, KalmanDecoder, intended_velocity, kalman_step
from rtneuro.decoders.simulate import CosinePopulation, simulate_cosine_session
from rtneuro.errors import ConfigError

from reference.decoding import kalman_augmented, ols_velocity

N_UNITS = 100
REL = 1e-9


@pytest.fixture(scope="module")
def session():
    return simulate_cosine_session(N_UNITS, 5000, seed=1)


@pytest.fixture(scope="module")
def fitted(session):
    return KalmanDecoder.fit(session.velocity[:3000], session.counts[:3000], bin_s=session.bin_s)


def _rel_err(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_simulation_is_seeded():
    a = simulate_cosine_session(10, 300, seed=5)
    b = simulate_cosine_session(10, 300, seed=5)
    c = simulate_cosine_session(10, 300, seed=6)
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.velocity, b.velocity)
    assert not np.array_equal(a.counts, c.counts)
    # positions integrate the velocities; center-out targets lie on the circle or the centre
    np.testing.assert_allclose(np.diff(a.position, axis=0), a.velocity[:-1] * a.bin_s, atol=1e-15)
    r = np.linalg.norm(a.target, axis=1)
    assert np.all(np.isclose(r, 0.0) | np.isclose(r, 0.1))
    ou = simulate_cosine_session(10, 300, seed=5, mode="ou")
    assert np.isnan(ou.target).all() and np.isfinite(ou.velocity).all()
    with pytest.raises(ConfigError, match="did you mean 'ou'"):
        simulate_cosine_session(10, 300, mode="uo")


def test_matches_naive_covariance_filter(session, fitted):
    Z = session.counts[3000:].copy()
    Z[[5, 6, 400], 3] = np.nan  # skipped updates on both sides
    out, status = fitted.predict(Z)
    ref = kalman_augmented(fitted, Z)
    assert _rel_err(out, ref) <= REL
    np.testing.assert_array_equal(np.flatnonzero(status < 0), [5, 6, 400])


def test_steady_state_gain_converges_to_full_filter(session, fitted):
    meta, arrays = fitted.to_arrays()
    steady = KalmanDecoder.from_arrays({**meta, "gain": "steady"}, arrays)
    full, _ = fitted.predict(session.counts[3000:])
    fast, _ = steady.predict(session.counts[3000:])
    assert _rel_err(fast[200:], full[200:]) <= REL
    assert _rel_err(fast[:3], full[:3]) > 1e-6  # differ while P converges: the test can fail
    # the gain is the fixed point of the Riccati recursion
    Pm = fitted.A @ fitted.P_steady @ fitted.A.T + fitted.W
    K = Pm @ fitted.C.T @ np.linalg.inv(fitted.C @ Pm @ fitted.C.T + fitted.Q)
    np.testing.assert_allclose(steady.K_steady, K, rtol=1e-8, atol=1e-12 * np.abs(K).max())


def test_decodes_at_least_as_well_as_ols(session, fitted):
    te = slice(3000, None)
    out, _ = fitted.predict(session.counts[te])
    ols = ols_velocity(session.counts[:3000], session.velocity[:3000], session.counts[te])
    for k in range(2):
        r_kf = np.corrcoef(out[:, k], session.velocity[te, k])[0, 1]
        r_ols = np.corrcoef(ols[:, k], session.velocity[te, k])[0, 1]
        assert r_kf >= r_ols
        assert r_kf > 0.85


@pytest.mark.parametrize("gain", ["adaptive", "steady"])
def test_infer_is_bit_identical_to_predict(session, fitted, gain):
    meta, arrays = fitted.to_arrays()
    dec = KalmanDecoder.from_arrays({**meta, "gain": gain}, arrays)
    Z = session.counts[3000:3300].copy()
    Z[10, 0] = np.inf
    batch, status = dec.predict(Z)
    x, P = dec.initial_state()
    for i in range(len(Z)):
        assert dec.infer(Z[i], x, P) == status[i]
        np.testing.assert_array_equal(x, batch[i])
    assert dec.n_skipped == 2  # one in predict, one in the infer loop


def test_nonfinite_observation_predicts_only(session, fitted):
    dec = KalmanDecoder.from_arrays(*fitted.to_arrays())
    x, P = dec.initial_state()
    for z in session.counts[3000:3020]:
        dec.infer(np.ascontiguousarray(z), x, P)
    x_prev, P_prev = x.copy(), P.copy()
    z = session.counts[3020].copy()
    z[7] = np.nan
    assert dec.infer(z, x, P) == -1
    assert dec.n_skipped == 1
    np.testing.assert_allclose(x, dec.A @ x_prev, rtol=1e-15, atol=0)
    np.testing.assert_allclose(P, dec.A @ P_prev @ dec.A.T + dec.W, rtol=1e-14, atol=0)
    assert dec.infer(np.ascontiguousarray(session.counts[3021]), x, P) == 0
    assert np.isfinite(x).all() and np.isfinite(P).all()


def test_information_form_with_position_state(session):
    """Any state dimension works (here position and velocity, d = 4)."""
    kin = np.column_stack([session.position, session.velocity])[:2000]
    dec = KalmanDecoder.fit(kin, session.counts[:2000], bin_s=session.bin_s)
    out, _ = dec.predict(session.counts[2000:2600])
    assert _rel_err(out, kalman_augmented(dec, session.counts[2000:2600])) <= REL


# --------------------------------------------------------------------------- CLDA


def _closed_loop(dec, pop, rng, n_batches, batch, params):
    """Cursor moved by the decoded velocity; units fire for the velocity toward the target."""
    bin_s, speed, radius = 0.05, 0.1, 0.1
    x, P = dec.initial_state()
    pos, tgt, t_trial = np.zeros(2), np.array([radius, 0.0]), 0
    r_per_batch, hits_per_batch, records = [], [], []
    for _ in range(n_batches):
        D, Pos, T, V = (np.empty((batch, 2)) for _ in range(4))
        Z = np.empty((batch, pop.n_units))
        hits = 0
        for k in range(batch):
            to = tgt - pos
            dist = np.linalg.norm(to)
            vi = np.zeros(2) if dist < 0.01 else to / dist * speed
            z = pop.counts(vi[None], bin_s, rng)[0]
            dec.infer(z, x, P)
            D[k], Pos[k], T[k], Z[k], V[k] = x, pos, tgt, z, vi
            pos = np.clip(pos + x * bin_s, -0.2, 0.2)
            t_trial += 1
            if np.linalg.norm(tgt - pos) < 0.015 or t_trial > 80:
                hits += t_trial <= 80
                th = rng.uniform(0, 2 * np.pi)
                tgt = np.zeros(2) if tgt.any() else radius * np.array([np.cos(th), np.sin(th)])
                t_trial = 0
        r_per_batch.append([np.corrcoef(D[:, j], V[:, j])[0, 1] for j in range(2)])
        hits_per_batch.append(hits)
        if params is not None:
            records.append(dec.adapt(D, Pos, T, Z, params))
    return np.array(r_per_batch), np.array(hits_per_batch), records


def _bad_decoder(pop):
    wrong = simulate_cosine_session(pop.n_units, 3000, seed=4, population=pop.rotated(np.pi / 2))
    return KalmanDecoder.fit(wrong.velocity, wrong.counts, bin_s=0.05)


def test_clda_recovers_a_rotated_decoder():
    rng = np.random.default_rng(3)
    pop = CosinePopulation.random(60, rng)
    params = CLDAParams(half_life_s=10.0, alpha_floor=0.3, max_change=1.0, min_bins=100,
                        target_radius=0.01)
    # without adaptation the rotated decoder stays bad
    r_fixed, hits_fixed, _ = _closed_loop(_bad_decoder(pop), pop, np.random.default_rng(7), 4, 200, None)
    dec = _bad_decoder(pop)
    r, hits, records = _closed_loop(dec, pop, np.random.default_rng(7), 10, 200, params)
    assert all(rec.accepted for rec in records)
    assert dec.n_adapt_accepted == 10 and dec.train_hash is None
    assert np.all(r[0] < 0.3) and np.all(np.abs(r_fixed) < 0.3)
    assert np.all(r[-3:] > 0.7)
    assert hits[-3:].sum() > hits[:1].sum() + 10
    assert hits_fixed.sum() <= 2


def _batch(session, n=300):
    sl = slice(3000, 3000 + n)
    return session.velocity[sl], session.position[sl], session.target[sl], session.counts[sl]


def test_clda_rejects_bad_batches(session, fitted):
    dec = KalmanDecoder.from_arrays(*fitted.to_arrays())
    C, c0, Q, K = dec.C.copy(), dec.c0.copy(), dec.Q.copy(), dec.K_steady.copy()
    params = CLDAParams(min_bins=100, max_change=0.5, half_life_s=10.0, alpha_floor=0.0)
    dv, pos, tgt, Z = _batch(session)

    Zn = Z.copy()
    Zn[17, 4] = np.nan
    rec = dec.adapt(dv, pos, tgt, Zn, params)
    assert (rec.accepted, rec.reason) == (False, "non_finite")

    rec = dec.adapt(dv[:50], pos[:50], tgt[:50], Z[:50], params)
    assert (rec.accepted, rec.reason, rec.n_bins) == (False, "too_short", 50)

    # adversarial: rates blown up 50-fold along the velocity would move C far
    rec = dec.adapt(dv, pos, tgt, Z * 50.0, params)
    assert (rec.accepted, rec.reason) == (False, "too_large")
    assert rec.rel_change > params.max_change

    assert dec.n_adapt_rejected == 3 and dec.n_adapt_accepted == 0
    for before, after in ((C, dec.C), (c0, dec.c0), (Q, dec.Q), (K, dec.K_steady)):
        np.testing.assert_array_equal(after, before)

    # an honest batch is accepted, moves C a little and reports its fit
    rec = dec.adapt(dv, pos, tgt, Z, params)
    assert rec.accepted and 0 < rec.rel_change <= params.max_change
    assert 0.0 < rec.r2 < 1.0 and rec.alpha == pytest.approx(0.5 ** (300 * 0.05 / 10.0))
    assert not np.array_equal(dec.C, C)
    assert set(rec.to_dict()) == {"accepted", "reason", "rel_change", "n_bins", "r2", "alpha"}


def test_alpha_floor_and_params_checked(session, fitted):
    dec = KalmanDecoder.from_arrays(*fitted.to_arrays())
    dv, pos, tgt, Z = _batch(session)
    rec = dec.adapt(dv, pos, tgt, Z, CLDAParams(half_life_s=0.1, alpha_floor=0.8, min_bins=10))
    assert rec.alpha == 0.8
    with pytest.raises(ConfigError, match="alpha_floor"):
        CLDAParams(alpha_floor=1.0)
    with pytest.raises(ConfigError, match="rates must have shape"):
        dec.adapt(dv, pos, tgt, Z[:, :5])


def test_intended_velocity():
    dec = np.array([[0.0, 0.2], [0.1, 0.0], [0.3, 0.4]])
    pos = np.zeros((3, 2))
    tgt = np.array([[1.0, 0.0], [0.0, -2.0], [0.001, 0.0]])
    out = intended_velocity(dec, pos, tgt, target_radius=0.01)
    np.testing.assert_allclose(out, [[0.2, 0.0], [0.0, -0.1], [0.0, 0.0]], atol=1e-15)


# --------------------------------------------------------------------------- files


def test_save_load_round_trip(tmp_path, session, fitted):
    back = KalmanDecoder.load(fitted.save(tmp_path / "kf.npz"))
    for name in ("A", "W", "C", "c0", "Q", "H", "G", "K_steady"):
        np.testing.assert_array_equal(getattr(back, name), getattr(fitted, name))
    assert back.train_hash == fitted.train_hash and back.bin_s == fitted.bin_s
    np.testing.assert_array_equal(
        back.predict(session.counts[3000:3200])[0], fitted.predict(session.counts[3000:3200])[0]
    )


def test_corrupt_files_refused(tmp_path, fitted):
    path = fitted.save(tmp_path / "kf.npz")
    raw = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ConfigError, match="corrupt or truncated"):
        KalmanDecoder.load(tmp_path / "cut.npz")
    meta, arrays = fitted.to_arrays()
    np.savez(tmp_path / "obj.npz", meta=np.array('{"format": "rtneuro.kalman_decoder"}'),
             A=np.array([object()], dtype=object), W=arrays["W"], C=arrays["C"],
             c0=arrays["c0"], Q=arrays["Q"])
    with pytest.raises(ConfigError, match="pickled"):
        KalmanDecoder.load(tmp_path / "obj.npz")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda m, a: a.update(Q=-np.eye(len(a["Q"]))), "Q must be positive definite"),
        (lambda m, a: a.update(C=a["C"][:, :1]), r"C must have shape"),
        (lambda m, a: a["A"].__setitem__((0, 0), np.nan), "A contains NaN"),
        (lambda m, a: a.update(W=np.array([[1.0, 2.0], [0.0, 1.0]])), "W must be symmetric"),
        (lambda m, a: m.update(gain="stedy"), "did you mean 'steady'"),
        (lambda m, a: m.update(n_units=3), "header says 3 units"),
        (lambda m, a: m.pop("bin_s"), "lacks 'bin_s'"),
        (lambda m, a: a.update(Q=a["Q"].astype(np.int64)), "floating point"),
    ],
)
def test_from_arrays_validates(fitted, change, match):
    meta, arrays = fitted.to_arrays()
    meta, arrays = dict(meta), {k: v.copy() for k, v in arrays.items()}
    change(meta, arrays)
    with pytest.raises(ConfigError, match=f"^kf: .*{match}"):
        KalmanDecoder.from_arrays(meta, arrays, where="kf")


def test_fit_and_warmup(session):
    with pytest.raises(ConfigError, match="share n_bins"):
        KalmanDecoder.fit(session.velocity[:100], session.counts[:99], bin_s=0.05)
    v = session.velocity[:200].copy()
    v[3, 0] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        KalmanDecoder.fit(v, session.counts[:200], bin_s=0.05)
    # a silent unit gets a floored variance, not an infinite weight
    Z = session.counts[:500].copy()
    Z[:, 0] = 0.0
    dec = KalmanDecoder.fit(session.velocity[:500], Z, bin_s=0.05)
    assert dec.Q[0, 0] > 0 and np.isfinite(dec.G).all()
    dec.warmup()
    assert dec.n_skipped == 0
    x, P = dec.initial_state()
    kalman_step(dec.A, dec.W, dec.H, dec.G, dec.g0, Z[0], x, P, np.zeros(2), np.zeros((2, 2)),
                np.zeros((2, 4)))
    assert np.isfinite(x).all()
