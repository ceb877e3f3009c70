"""Offline replay at scale: one graph over many recordings and a parameter grid, on Dask.

``rtneuro sweep SPEC.yaml`` (see :mod:`rtneuro.sweep.spec` for the spec):
each job is the graph replayed on the virtual clock with one recording and
one point of the grid, run by the same code as ``rtneuro run --speed max``
(its nodes in one process), on an embedded Dask ``LocalCluster`` or on a
cluster's scheduler (``--scheduler``); one row per job, written as it
finishes, resumable; a tidy table (Parquet, CSV) and an HTML report.
"""

from __future__ import annotations

from .engine import read_rows, run_sweep
from .job import flatten_report, job_config, run_job
from .report import summary, table
from .spec import Job, Recording, Spec, expand, load_spec

__all__ = ["Job", "Recording", "Spec", "expand", "flatten_report", "job_config", "load_spec", "read_rows", "run_job",
           "run_sweep", "summary", "table"]
