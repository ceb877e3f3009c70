"""The benchmark frame names only variants its parts can run."""

from __future__ import annotations

import importlib

from benchmarks import dsp


def test_every_dsp_variant_is_provided_by_its_part():
    for module, names in dsp.PARTS.items():
        part = importlib.import_module(module)
        assert set(names) <= set(part.VARIANTS), (module, set(names) - set(part.VARIANTS))
        assert callable(part.run_variant)
    assert len(set(dsp.VARIANTS)) == len(dsp.VARIANTS)
    for peer, ours, _metric in dsp.RATIOS:
        assert peer in dsp.VARIANTS and ours in dsp.VARIANTS
