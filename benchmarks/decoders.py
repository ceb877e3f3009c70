"""``rtneuro bench decoders``: online inference per window, rtneuro's kernels beside the libraries.

Each variant decodes one window at a time, as a live graph does, and times
every call (``time.perf_counter_ns``) for ``--duration`` seconds after a
warm-up; the library variants make the same call a per-window user of
scikit-learn or pyRiemann would (``predict_proba`` on one sample).

``lda_rtneuro`` / ``lda_sklearn``        shrinkage LDA on 64 features, 2 classes
``logreg_rtneuro`` / ``logreg_sklearn``  logistic regression on 64 features, 4 classes
``mdm_rtneuro`` / ``mdm_pyriemann``      Riemannian MDM on 32x32 covariances, 4 classes
``mdm2_rtneuro`` / ``mdm2_pyriemann``    the same with 2 classes (left / right)
``tangent_rtneuro`` / ``tangent_pyriemann``  tangent space + LDA on 32x32, 4 classes
``kalman_rtneuro`` / ``kalman_numpy``    velocity Kalman step, 100 units (full recursion;
                                         numpy: the textbook covariance form, inverting S)
``kalman_steady_rtneuro``                the same with the steady-state gain
``poisson_rtneuro``                      Poisson population decoder, 100 units x 64 directions
``csp_rtneuro``                          a whole window: 1 s of 64 ch at 160 Hz, CSP (4) log-variance
                                         and LDA, from the filtered window (the decoder node's work
                                         per frame besides filtering)

Every variant runs with one BLAS thread (``threadpoolctl``). Every rtneuro
variant also checks, on its inputs, that its output equals the
library's (``max_abs_diff`` of probabilities, ``labels_equal``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import numpy as np

from benchmarks.common import pick_variants, save_json, stats
from rtneuro.runtime.supervisor import machine_info

VARIANTS = ("lda_rtneuro", "lda_sklearn", "logreg_rtneuro", "logreg_sklearn", "mdm_rtneuro", "mdm_pyriemann",
            "mdm2_rtneuro", "mdm2_pyriemann",
            "tangent_rtneuro", "tangent_pyriemann", "kalman_rtneuro", "kalman_steady_rtneuro", "kalman_numpy",
            "poisson_rtneuro", "csp_rtneuro")
#: targets of the issue: p99 per inference, microseconds
TARGETS_US = {"lda_rtneuro": 20.0, "logreg_rtneuro": 20.0, "mdm_rtneuro": 200.0, "mdm2_rtneuro": 200.0,
              "kalman_rtneuro": 50.0}
#: rtneuro variant -> the library variant it is compared with
PEERS = {"lda_rtneuro": "lda_sklearn", "logreg_rtneuro": "logreg_sklearn", "mdm_rtneuro": "mdm_pyriemann",
         "mdm2_rtneuro": "mdm2_pyriemann", "tangent_rtneuro": "tangent_pyriemann", "kalman_rtneuro": "kalman_numpy"}


def _time(call: Callable[[int], object], n_inputs: int, duration_s: float, warmup: int = 200) -> dict:
    for i in range(warmup):
        call(i % n_inputs)
    times = []
    t_end = time.perf_counter() + duration_s
    i = 0
    while time.perf_counter() < t_end:
        t0 = time.perf_counter_ns()
        call(i % n_inputs)
        times.append((time.perf_counter_ns() - t0) / 1e3)
        i += 1
    return stats(times)


def _linear(kind: str):
    from sklearn.datasets import make_classification
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression

    from rtneuro.decoders.linear import LinearDecoder

    n_classes = 2 if kind == "lda" else 4
    X, y = make_classification(n_samples=2000, n_features=64, n_informative=20, n_classes=n_classes, random_state=0)
    model = (LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto") if kind == "lda"
             else LogisticRegression(max_iter=2000)).fit(X[:1000], y[:1000])
    return model, LinearDecoder.from_sklearn(model), X[1000:]


def _covs(n_ch: int = 32, n: int = 400, n_classes: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    mix = [np.eye(n_ch) + 0.3 * rng.standard_normal((n_ch, n_ch)) for _ in range(n_classes)]
    covs = np.empty((n, n_ch, n_ch))
    for i in range(n):
        x = mix[y[i]] @ rng.standard_normal((n_ch, 250))
        covs[i] = x @ x.T / 250
    return covs, y


def run_variant(name: str, duration_s: float) -> dict:
    if name in ("lda_rtneuro", "lda_sklearn", "logreg_rtneuro", "logreg_sklearn"):
        model, dec, X = _linear(name.split("_")[0])
        if name.endswith("sklearn"):
            return _time(lambda i: model.predict_proba(X[i:i + 1]), len(X), duration_s)
        scores, proba = dec.buffers()
        out = _time(lambda i: dec.infer(X[i], scores, proba), len(X), duration_s)
        out["max_abs_diff"] = float(np.abs(dec.predict_proba(X) - model.predict_proba(X)).max())
        out["labels_equal"] = bool(np.array_equal(dec.predict(X), model.predict(X)))
        return out
    if name.startswith(("mdm", "tangent")):
        from pyriemann.classification import MDM
        from pyriemann.tangentspace import TangentSpace
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
        from sklearn.pipeline import make_pipeline

        from rtneuro.decoders.riemann import MdmDecoder, TangentSpaceDecoder

        covs, y = _covs(n_classes=2 if name.startswith("mdm2") else 4)
        train, test = covs[:200], covs[200:]
        if name.startswith("mdm"):
            ref = MDM(metric="riemann").fit(train, y[:200])
            dec = MdmDecoder.from_pyriemann(ref)
        else:
            ref = make_pipeline(TangentSpace(metric="riemann"),
                                LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")).fit(train, y[:200])
            dec = TangentSpaceDecoder.from_pipeline(ref)
        if name.endswith("pyriemann"):
            return _time(lambda i: ref.predict_proba(test[i:i + 1]), len(test), duration_s)
        a, b = dec.buffers()
        out = _time(lambda i: dec.infer(test[i], a, b), len(test), duration_s)
        out["max_abs_diff"] = float(np.abs(dec.predict_proba(test) - ref.predict_proba(test)).max())
        out["labels_equal"] = bool(np.array_equal(dec.predict(test), ref.predict(test)))
        return out
    if name.startswith("kalman"):
        from rtneuro.decoders.kalman import KalmanDecoder
        from rtneuro.decoders.simulate import simulate_cosine_session

        sess = simulate_cosine_session(100, 6000, seed=0, mode="ou")
        rates = sess.counts / sess.bin_s
        gain = "steady" if "steady" in name else "adaptive"
        dec = KalmanDecoder.fit(sess.velocity[:4000], rates[:4000], bin_s=sess.bin_s, gain=gain)
        Z = np.ascontiguousarray(rates[4000:])
        if name == "kalman_numpy":
            # the textbook covariance-form step a numpy user writes: invert the 100 x 100 innovation covariance
            A, W, Cm, c0, Q = dec.A, dec.W, dec.C, dec.c0, dec.Q
            st = {"x": np.zeros(A.shape[0]), "P": np.zeros_like(A)}
            eye = np.eye(A.shape[0])

            def step(i: int) -> None:
                x = A @ st["x"]
                P = A @ st["P"] @ A.T + W
                S = Cm @ P @ Cm.T + Q
                K = P @ Cm.T @ np.linalg.inv(S)
                st["x"] = x + K @ (Z[i] - Cm @ x - c0)
                st["P"] = (eye - K @ Cm) @ P

            return _time(step, len(Z), duration_s)
        x, P = dec.initial_state()
        out = _time(lambda i: dec.infer(Z[i], x, P), len(Z), duration_s)
        v, _ = dec.predict(Z)
        out["velocity_r"] = [round(float(np.corrcoef(v[:, k], sess.velocity[4000:, k])[0, 1]), 3) for k in range(2)]
        return out
    if name == "poisson_rtneuro":
        from rtneuro.decoders.poisson import PoissonDecoder
        from rtneuro.decoders.simulate import simulate_cosine_session

        sess = simulate_cosine_session(100, 8000, bin_s=0.1, seed=1, mode="ou")
        angle = np.mod(np.arctan2(sess.velocity[:, 1], sess.velocity[:, 0]), 2 * np.pi)
        grid = np.minimum((angle / (2 * np.pi) * 64).astype(np.int64), 63)
        dec = PoissonDecoder.fit(sess.counts[:6000], grid[:6000], 64, bin_s=0.1)
        C = np.ascontiguousarray(sess.counts[6000:], dtype=np.float64)
        a, b = dec.buffers()
        out = _time(lambda i: dec.infer(C[i], a, b), len(C), duration_s)
        err = np.abs((dec.predict(C) - grid[6000:] + 32) % 64 - 32)
        out["within_2_bins"] = round(float(np.mean(err <= 2)), 3)  # chance 5/64
        return out
    if name == "csp_rtneuro":
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        from rtneuro.decoders.csp import CSP, logvar
        from rtneuro.decoders.linear import LinearDecoder

        rng = np.random.default_rng(0)
        X = rng.standard_normal((100, 64, 160))
        X[50:, :8] *= 2.0
        y = np.repeat([0, 1], 50)
        csp = CSP.fit(X, y, n_components=4)
        wins = np.ascontiguousarray(X.transpose(0, 2, 1))
        feats = np.empty((100, 4))
        for i in range(100):
            logvar(wins[i], csp.filters, feats[i])
        dec = LinearDecoder.from_sklearn(LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(feats, y))
        f, (s, p) = np.empty(4), dec.buffers()

        def window(i: int) -> None:
            logvar(wins[i], csp.filters, f)
            dec.infer(f, s, p)

        return _time(window, 100, duration_s)
    raise ValueError(name)


def format_table(res: dict) -> str:
    lines = ["| variant | p50 (µs) | p99 (µs) | n | vs library (p50) | target p99 | output check |",
             "|---|---|---|---|---|---|---|"]
    for name, v in res["variants"].items():
        if v.get("error"):
            lines.append(f"| {name} | | | | | | error: {v['error']} |")
            continue
        ratio = res.get("ratios", {}).get(name, "")
        target = TARGETS_US.get(name)
        tgt = f"≤ {target:g}: {'met' if v['p99_us'] <= target else 'NOT met'}" if target else ""
        check = ""
        if "max_abs_diff" in v:
            check = f"labels equal: {v['labels_equal']}, max |Δp| {v['max_abs_diff']:.1e}"
        elif "velocity_r" in v:
            check = f"velocity r {v['velocity_r']}"
        elif "within_2_bins" in v:
            check = f"direction within 2 of 64 bins: {v['within_2_bins']:.0%} (chance 8 %)"
        lines.append(f"| {name} | {v['p50_us']:.1f} | {v['p99_us']:.1f} | {v['n']} | {ratio} | {tgt} | {check} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    names = pick_variants(args.variants, VARIANTS)
    if names is None:
        return 2
    from threadpoolctl import threadpool_limits

    results: dict[str, dict] = {}
    # one BLAS thread for every variant: a per-window call gains nothing from more, and a
    # busy 2-core machine makes extra threads fight (both sides get the same setting)
    with threadpool_limits(limits=1):
        for name in names:
            print(f"[bench decoders] {name}: {args.duration:g} s ...", file=sys.stderr, flush=True)
            try:
                results[name] = run_variant(name, args.duration)
            except Exception as exc:  # a failing variant is reported, never dropped
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    ratios = {}
    for ours, peer in PEERS.items():
        a, b = results.get(ours, {}), results.get(peer, {})
        if a.get("p50_us") and b.get("p50_us"):
            ratios[ours] = f"{b['p50_us'] / a['p50_us']:.1f}x faster"
    out = {"bench": "decoders", "machine": machine_info(), "duration_s": args.duration, "variants": results,
           "ratios": ratios, "targets_p99_us": TARGETS_US}
    print(format_table(out))
    save_json(out, args.json)
    return 0
