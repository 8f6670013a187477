"""Data seeds: a unit whose work is an upsert of rows from a list or a CSV, JSON or YAML file.

One owner per job: :mod:`~seedguard.data.declare` (``data_seed()``: the
unit), :mod:`~seedguard.data.spec` (what the unit does: batches, refs,
prune), :mod:`~seedguard.data.sources` (rows, CSV, JSON and YAML files,
streamed), :mod:`~seedguard.data.convert` (a value to its column's type) and
:mod:`~seedguard.data.iso310` (ISO 8601 on Python 3.10).
"""

from __future__ import annotations

from seedguard.data.declare import data_seed, declare, resolve_path, source_of
from seedguard.data.sources import DATA_SUFFIXES
from seedguard.data.spec import DataSeed, natural_key

__all__ = [
    "DATA_SUFFIXES",
    "DataSeed",
    "data_seed",
    "declare",
    "natural_key",
    "resolve_path",
    "source_of",
]
