"""``rtneuro bench models``: the network model kernels against Brian2 on the same network.

``lif1000_rtneuro``                1000 LIF neurons (80 % excitatory), 10 % random
                                   connectivity (~100 000 synapses), delays 1-3 ms,
                                   delta synapses, a heterogeneous constant drive,
                                   dt 0.1 ms, 1 s of biological time, with
                                   :class:`rtneuro.models.LIFNetwork`.
``lif1000_brian2_numpy``           the same network (same synapses, weights, delays,
``lif1000_brian2_cython``          initial potentials) in Brian2 with each code
``lif1000_brian2_cpp_standalone``  generation target, each in its own process.
``hh100_rtneuro``                  100 Hodgkin-Huxley neurons, 10 % random
                                   conductance synapses, dt 0.025 ms: ``realtime_x``,
                                   biological seconds simulated per wall second.

Each lif1000 variant reports ``wall_s`` (median over repeats of the
simulation alone), ``build_s`` (code generation / compilation, or loading
numba's cache, measured once), ``spikes`` and ``ratio_to_rtneuro``
(``wall_s`` over rtneuro's). The Brian2 variants also say whether their
spikes are identical to rtneuro's (``identical_spikes``) and, if not, how
many (step, neuron) events differ.

Brian2 2.9.0 still reads ``numpy.ndarray.ptp``, which NumPy 2.4 removed (the
fix, brian-team/brian2#1705, is unreleased): :func:`import_brian2` patches
that one line at import time when it has to.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np

from benchmarks.common import pick_variants, save_json

VARIANTS = ("lif1000_rtneuro", "lif1000_brian2_numpy", "lif1000_brian2_cython",
            "lif1000_brian2_cpp_standalone", "hh100_rtneuro")
ROOT = Path(__file__).resolve().parent.parent
BRIAN2_TARGETS = {"lif1000_brian2_numpy": "numpy", "lif1000_brian2_cython": "cython",
                  "lif1000_brian2_cpp_standalone": "cpp_standalone"}


# -- Brian2 import with the NumPy 2.4 fix ----------------------------------------------------


class _PtpFix(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Loads ``brian2.units.fundamentalunits`` with ``np.ndarray.ptp`` replaced by ``np.ptp``."""

    target = "brian2.units.fundamentalunits"

    def find_spec(self, fullname, path, target=None):
        if fullname != self.target:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None:
            return None
        return importlib.util.spec_from_file_location(fullname, spec.origin, loader=self)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        origin = module.__spec__.origin
        source = Path(origin).read_text().replace("np.ndarray.ptp", "np.ptp")
        exec(compile(source, origin, "exec"), module.__dict__)


def import_brian2() -> ModuleType:
    """``import brian2``, patching its one NumPy 2.4 incompatibility if this NumPy needs it."""
    patch = "brian2" not in sys.modules and not hasattr(np.ndarray, "ptp")
    if patch and not any(isinstance(f, _PtpFix) for f in sys.meta_path):
        sys.meta_path.insert(0, _PtpFix())
    import brian2

    return brian2


# -- the benchmark network ---------------------------------------------------------------------


def lif_network_setup(n: int = 1000, p: float = 0.1, seed: int = 7):
    """The test/benchmark network: ``(params, conn, i_bias_na, v0_mv)``, fully determined by the seed.

    80 % excitatory (+0.5 mV), 20 % inhibitory (-2.5 mV, g = 5), delays 1.0-3.0 ms
    in 0.1 ms steps, drive ``R I`` uniform in 15-25 mV above rest, initial V
    uniform between rest and threshold.
    """
    from rtneuro.models import Connectivity, LIFParams

    params = LIFParams(tau_m_ms=20.0, e_l_mv=-70.0, v_th_mv=-50.0, v_reset_mv=-60.0, r_m_mohm=100.0, t_ref_ms=2.0)
    n_exc = int(0.8 * n)
    weight = np.where(np.arange(n) < n_exc, 0.5, -2.5)
    conn = Connectivity.random(n, n, p, weight=weight, delay_steps=(10, 30), seed=seed)
    rng = np.random.default_rng(seed + 1)
    i_bias = rng.uniform(0.15, 0.25, n)
    v0 = rng.uniform(-70.0, -50.0, n)
    return params, conn, i_bias, v0


def spike_events(raster: np.ndarray) -> np.ndarray:
    """``(step, neuron)`` pairs of a raster, sorted, as an ``(n_spikes, 2)`` int64 array."""
    steps, cells = np.nonzero(raster)
    return np.stack([steps, cells], axis=1).astype(np.int64)


def brian2_lif_network(n: int, duration_ms: float, dt_ms: float, target: str, *, repeats: int = 1,
                       workdir: str | None = None, seed: int = 7) -> dict:
    """Run the network of :func:`lif_network_setup` in Brian2; events ``(step, neuron)`` and timings.

    ``target`` is ``"numpy"``, ``"cython"`` or ``"cpp_standalone"``. Call it in
    a fresh process for the standalone target (it sets Brian2's device).
    """
    b2 = import_brian2()
    from brian2 import (
        Network,
        NeuronGroup,
        SpikeMonitor,
        Synapses,
        defaultclock,
        device,
        ms,
        mV,
        nA,
        prefs,
        set_device,
        start_scope,
    )

    params, conn, i_bias, v0 = lif_network_setup(n, seed=seed)
    b2.BrianLogger.log_level_warn()
    start_scope()
    standalone = target == "cpp_standalone"
    if standalone:
        set_device("cpp_standalone", directory=workdir, build_on_run=False)
        prefs.devices.cpp_standalone.openmp_threads = 0
    else:
        prefs.codegen.target = target
    defaultclock.dt = dt_ms * ms
    p = params
    ns = {"E_L": p.e_l_mv * mV, "V_th": p.v_th_mv * mV, "V_reset": p.v_reset_mv * mV,
          "tau": p.tau_m_ms * ms, "R": p.r_m_mohm * b2.Mohm}
    G = NeuronGroup(n, "dv/dt = (E_L - v + R*I)/tau : volt (unless refractory)\nI : amp",
                    threshold="v > V_th", reset="v = V_reset", refractory=p.t_ref_ms * ms, method="exact",
                    namespace=ns)
    G.v = v0 * mV
    G.I = i_bias * nA
    S = Synapses(G, G, "w : volt", on_pre="v_post += w*int(not_refractory_post)")
    pre, post = conn.pairs()
    S.connect(i=pre, j=post)
    S.w = conn.weights * mV
    S.delay = conn.delays * dt_ms * ms
    M = SpikeMonitor(G)
    net = Network(G, S, M)
    out: dict = {}
    if standalone:
        net.run(duration_ms * ms)
        t0 = time.perf_counter()
        device.build(directory=workdir, compile=True, run=False)
        out["build_s"] = time.perf_counter() - t0
        walls, inner = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            device.run(directory=workdir, with_output=False, run_args=[])
            walls.append(time.perf_counter() - t0)
            inner.append(float(device._last_run_time))
        out["walls_s"] = walls
        out["sim_s"] = float(np.median(inner))
        out["note"] = ("wall_s is the whole binary run (process start, loading its arrays, simulating, writing "
                       "results); sim_s is the simulation loop alone, as the binary measures it")
    else:
        net.store()
        t0 = time.perf_counter()
        net.run(0 * ms)  # code generation (and, for cython, compilation)
        out["build_s"] = time.perf_counter() - t0
        walls = []
        for _ in range(repeats):
            net.restore()
            t0 = time.perf_counter()
            net.run(duration_ms * ms)
            walls.append(time.perf_counter() - t0)
        out["walls_s"] = walls
    steps = np.round(np.asarray(M.t / ms) / dt_ms).astype(np.int64)
    ev = np.stack([steps, np.asarray(M.i, dtype=np.int64)], axis=1)
    out["events"] = ev[np.lexsort((ev[:, 1], ev[:, 0]))]
    out["brian2"] = b2.__version__
    return out


def _worker(n: int, duration_ms: float, dt_ms: float, target: str, repeats: int, out_path: str) -> None:
    """Entry point of the subprocess that runs one Brian2 target."""
    with tempfile.TemporaryDirectory(prefix="rtn-brian2-") as d:
        res = brian2_lif_network(n, duration_ms, dt_ms, target, repeats=repeats, workdir=d)
    events = res.pop("events")
    np.save(out_path + ".npy", events)
    Path(out_path + ".json").write_text(json.dumps(res))


def run_brian2_subprocess(target: str, n: int, duration_ms: float, dt_ms: float, repeats: int) -> tuple[dict, np.ndarray]:
    with tempfile.TemporaryDirectory(prefix="rtn-bench-") as d:
        base = str(Path(d) / "res")
        code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from benchmarks.models import _worker; "
                f"_worker({n}, {duration_ms}, {dt_ms}, {target!r}, {repeats}, {base!r})")
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"Brian2 {target} run failed: {' | '.join(tail)}")
        return json.loads(Path(base + ".json").read_text()), np.load(base + ".npy")


def run_lif_rtneuro(n: int, duration_ms: float, dt_ms: float, repeats: int) -> tuple[dict, np.ndarray]:
    from rtneuro.models import LIFNetwork

    params, conn, i_bias, v0 = lif_network_setup(n)
    n_steps = int(round(duration_ms / dt_ms))
    t0 = time.perf_counter()
    LIFNetwork.warmup()
    build = time.perf_counter() - t0
    walls = []
    raster = None
    for _ in range(repeats):
        state = LIFNetwork.init_state(params, conn, v0)
        t0 = time.perf_counter()
        raster = LIFNetwork.step(state, params, conn, i_bias, dt_ms, n_steps)
        walls.append(time.perf_counter() - t0)
    assert raster is not None
    return {"build_s": build, "walls_s": walls}, spike_events(raster)


def run_hh100(duration_ms: float, dt_ms: float = 0.025, repeats: int = 3) -> dict:
    from rtneuro.models import Connectivity, HHNetwork, HHNetworkParams

    n = 100
    weight = np.where(np.arange(n) < 80, 0.05, -0.2)  # mS/cm^2 per spike
    conn = Connectivity.random(n, n, 0.1, weight=weight, delay_steps=(40, 80), seed=3)
    q = HHNetworkParams()
    drive = np.random.default_rng(4).uniform(5.0, 12.0, n)  # uA/cm^2, around rheobase
    n_steps = int(round(duration_ms / dt_ms))
    t0 = time.perf_counter()
    HHNetwork.warmup()
    build = time.perf_counter() - t0
    walls, spikes = [], 0
    for _ in range(repeats):
        state = HHNetwork.init_state(q, conn)
        t0 = time.perf_counter()
        raster = HHNetwork.step(state, q, conn, drive, dt_ms, n_steps)
        walls.append(time.perf_counter() - t0)
        spikes = int(raster.sum())
    wall = float(np.median(walls))
    return {"wall_s": round(wall, 4), "walls_s": [round(w, 4) for w in walls], "build_s": round(build, 3),
            "realtime_x": round(duration_ms / 1e3 / wall, 2), "spikes": spikes, "n_synapses": conn.n_syn,
            "dt_ms": dt_ms, "bio_s": duration_ms / 1e3, "integrator": "exponential Euler"}


def _summary(timing: dict, events: np.ndarray, ref: np.ndarray | None) -> dict:
    walls = timing["walls_s"]
    out = {"wall_s": round(float(np.median(walls)), 4), "walls_s": [round(w, 4) for w in walls],
           "build_s": round(float(timing["build_s"]), 3), "spikes": int(events.shape[0])}
    for key in ("brian2", "note"):
        if key in timing:
            out[key] = timing[key]
    if "sim_s" in timing:
        out["sim_s"] = round(float(timing["sim_s"]), 4)
    if ref is not None:
        a = {tuple(e) for e in events.tolist()}
        b = {tuple(e) for e in ref.tolist()}
        out["identical_spikes"] = a == b
        out["differing_events"] = len(a ^ b)
    return out


def format_table(res: dict) -> str:
    lines = ["| variant | wall (s) | build (s) | spikes | vs rtneuro | identical spikes |", "|---|---|---|---|---|---|"]
    for name, v in res["variants"].items():
        if v.get("error"):
            lines.append(f"| {name} | error: {v['error']} | | | | |")
        elif name == "hh100_rtneuro":
            lines.append(f"| {name} | {v['wall_s']:.3f} for {v['bio_s']:g} s bio | {v['build_s']:.2f} | {v['spikes']} | "
                         f"realtime x{v['realtime_x']:.1f} | |")
        else:
            ratio = v.get("ratio_to_rtneuro")
            same = v.get("identical_spikes")
            lines.append(f"| {name} | {v['wall_s']:.4f} | {v['build_s']:.2f} | {v['spikes']} | "
                         f"{'' if ratio is None else f'x{ratio:.1f}'} | "
                         f"{'' if same is None else ('yes' if same else 'no (' + str(v['differing_events']) + ' events)')} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    names = pick_variants(args.variants, VARIANTS)
    if names is None:
        return 2
    repeats = max(3, int(args.duration // 5))
    n, bio_ms, dt_ms = 1000, 1000.0, 0.1
    results: dict[str, dict] = {}
    ref_events: np.ndarray | None = None
    ref_wall: float | None = None
    need_ref = any(v.startswith("lif1000") for v in names)
    if need_ref:  # rtneuro's spikes are the reference of every Brian2 variant
        try:
            timing, ref_events = run_lif_rtneuro(n, bio_ms, dt_ms, repeats)
            ref_wall = float(np.median(timing["walls_s"]))
            if "lif1000_rtneuro" in names:
                results["lif1000_rtneuro"] = _summary(timing, ref_events, None) | {"ratio_to_rtneuro": 1.0}
        except Exception as exc:  # a failing variant is reported, never dropped
            results["lif1000_rtneuro"] = {"error": f"{type(exc).__name__}: {exc}"}
    for name in names:
        if name == "lif1000_rtneuro":
            continue
        t0 = time.monotonic()
        print(f"[bench models] {name} ...", file=sys.stderr, flush=True)
        try:
            if name == "hh100_rtneuro":
                res = run_hh100(1000.0, repeats=repeats)
            elif name in BRIAN2_TARGETS:
                timing, events = run_brian2_subprocess(BRIAN2_TARGETS[name], n, bio_ms, dt_ms,
                                                       repeats if name != "lif1000_brian2_numpy" else min(repeats, 3))
                res = _summary(timing, events, ref_events)
                if ref_wall:
                    res["ratio_to_rtneuro"] = round(res["wall_s"] / ref_wall, 1)
                    if "sim_s" in res:
                        res["sim_ratio_to_rtneuro"] = round(res["sim_s"] / ref_wall, 1)
            else:
                raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
        except Exception as exc:  # a failing variant is reported, never dropped
            res = {"error": f"{type(exc).__name__}: {exc}"}
        res["wall_s_variant"] = round(time.monotonic() - t0, 1)
        results[name] = res
    ordered = {k: results[k] for k in names if k in results}
    out = {"bench": "models", "machine": machine_info_models(), "duration_s": args.duration, "variants": ordered,
           "setup": {"lif1000": "1000 LIF (800 E +0.5 mV, 200 I -2.5 mV), p=0.1, delays 1-3 ms, dt 0.1 ms, 1 s",
                     "hh100": "100 HH, p=0.1 conductance synapses, delays 1-2 ms, dt 0.025 ms, 1 s"}}
    print(format_table(out))
    save_json(out, args.json)
    return 0


def machine_info_models() -> dict:
    from rtneuro.runtime.supervisor import machine_info

    info = machine_info()
    try:
        from importlib.metadata import version

        info["brian2"] = version("brian2")
    except Exception:  # Brian2 is optional: the rtneuro variants run without it
        info["brian2"] = None
    return info
