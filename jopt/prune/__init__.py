"""Pruning as a transform: ``jopt.prune`` wraps an optimizer, masks live in its state.

Criteria (magnitude, random, Taylor saliency), granularities (weight, N:M,
block, neuron, channel, layer), per-layer or global scope, uniform or ERK
allocation, and honest accounting (exact sparsity, a bitmask export with its
true byte count), and physical removal of pruned neurons and channels
(:func:`remove_units`: a smaller dense tree with consistent shapes).

The package is itself callable: ``jopt.prune(tx, ...)`` is
:func:`jopt.prune.prune`, so one name serves as the transform and as the
namespace (``jopt.prune.sparsity_report``, ``jopt.prune.removal``, ...).
"""

import sys as _sys
import types as _types

from jopt.prune.accounting import (
    BitmaskArray as BitmaskArray,
    LeafSparsity as LeafSparsity,
    SparsityReport as SparsityReport,
    from_bitmask as from_bitmask,
    nbytes as nbytes,
    sparsity_report as sparsity_report,
    to_bitmask as to_bitmask,
)
from jopt.prune.allocation import erk_densities as erk_densities
from jopt.prune.relative_index import (
    relative_index_count as relative_index_count,
    relative_index_decode as relative_index_decode,
    relative_index_encode as relative_index_encode,
    relative_index_nbytes as relative_index_nbytes,
)
from jopt.prune.removal import (
    Coupled as Coupled,
    UnitGroup as UnitGroup,
    remove_units as remove_units,
)
from jopt.prune.transform import PruneState as PruneState, prune as prune

__all__ = [
    "prune",
    "PruneState",
    "erk_densities",
    "sparsity_report",
    "SparsityReport",
    "LeafSparsity",
    "to_bitmask",
    "from_bitmask",
    "BitmaskArray",
    "nbytes",
    "relative_index_encode",
    "relative_index_decode",
    "relative_index_nbytes",
    "relative_index_count",
    "remove_units",
    "UnitGroup",
    "Coupled",
]


class _CallableModule(_types.ModuleType):
  """The ``jopt.prune`` module; calling it is calling :func:`prune`."""

  def __call__(self, *args, **kwargs):
    return prune(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
