"""SciPy's filter designs from the on-disk cache (rtneuro/_lazy.py): the same bits as SciPy, without importing it."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.signal

from rtneuro._lazy import cache_dir, lazy

SOS = scipy.signal.butter(4, [8.0, 12.0], btype="bandpass", fs=160.0, output="sos")
CALLS = [
    ("butter", (4, [8.0, 12.0]), {"btype": "bandpass", "fs": 160.0, "output": "sos"}),
    ("butter", (2, 0.3), {}),  # (b, a)
    ("cheby1", (8, 0.05, 0.8 / 4), {"output": "sos"}),
    ("iirnotch", (50.0, 30.0), {"fs": 500.0}),
    ("firwin", (101, [1.0, 40.0]), {"pass_zero": False, "fs": 250.0, "window": "hamming"}),
    ("kaiserord", (60.0, 0.05), {}),  # (int, float)
    ("kaiser_beta", (60.0,), {}),  # a float
    ("sosfilt_zi", (SOS,), {}),  # an array argument
    ("get_window", ("hann", 256), {}),
    ("sosfreqz", (SOS,), {"worN": 512, "fs": 160.0}),
    ("tf2sos", scipy.signal.butter(2, 0.3), {}),
]


def _same(a, b) -> bool:
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    return type(a) is type(b) and a == b


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RTNEURO_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "designs"


@pytest.mark.parametrize("fn, args, kwargs", CALLS, ids=[c[0] + str(i) for i, c in enumerate(CALLS)])
def test_a_cached_design_is_scipys_bit_for_bit_on_a_miss_and_on_a_hit(cache, fn, args, kwargs):
    signal = lazy("scipy.signal")
    expected = getattr(scipy.signal, fn)(*args, **kwargs)
    assert cache_dir() == cache and not cache.exists()
    first = getattr(signal, fn)(*args, **kwargs)  # a miss: SciPy's result, stored
    assert len(list(cache.glob(f"{fn}-*.npz"))) == 1
    second = getattr(signal, fn)(*args, **kwargs)  # a hit: read back
    assert _same(first, expected) and _same(second, expected), (fn, expected, second)


def test_other_arguments_are_other_entries_and_a_damaged_entry_is_designed_again(cache):
    signal = lazy("scipy.signal")
    a = signal.butter(4, [8.0, 12.0], btype="bandpass", fs=160.0, output="sos")
    b = signal.butter(4, [8.0, 13.0], btype="bandpass", fs=160.0, output="sos")
    c = signal.butter(4, [8, 12], btype="bandpass", fs=160.0, output="sos")  # ints: an entry of its own
    assert len(list(cache.glob("butter-*.npz"))) == 3 and not np.array_equal(a, b)
    for f in cache.glob("butter-*.npz"):
        f.write_bytes(f.read_bytes()[:40])  # cut short
    again = signal.butter(4, [8.0, 12.0], btype="bandpass", fs=160.0, output="sos")
    assert np.array_equal(again, a) and np.array_equal(c, a)
    assert np.array_equal(signal.butter(4, [8.0, 12.0], btype="bandpass", fs=160.0, output="sos"), a)  # replaced, whole


def test_a_folder_that_cannot_be_written_only_means_scipy_is_called(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("RTNEURO_CACHE_DIR", str(blocker))
    assert np.array_equal(lazy("scipy.signal").butter(3, 0.2, output="sos"), scipy.signal.butter(3, 0.2, output="sos"))


def test_a_process_whose_designs_are_cached_does_not_import_scipy_signal(tmp_path):
    env = {**os.environ, "RTNEURO_CACHE_DIR": str(tmp_path / "cache")}
    code = ("import sys; from rtneuro.nodes.filters import signal; "
            "sos = signal.butter(4, [8.0, 12.0], btype='bandpass', fs=160.0, output='sos'); signal.sosfilt_zi(sos); "
            "print('scipy.signal' in sys.modules, sos.tobytes().hex())")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr + runs[1].stderr
    (miss_imported, miss_sos), (hit_imported, hit_sos) = (r.stdout.split() for r in runs)
    assert miss_imported == "True" and hit_imported == "False"
    assert miss_sos == hit_sos == SOS.tobytes().hex()
