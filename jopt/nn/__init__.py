"""Model-side pure functions: the dropout family and batch / layer / group normalization.

Unlike the transforms, these run inside the model's forward pass. Each is a plain
function of arrays (dropout takes its PRNG key, batch norm takes and returns its
running statistics), so it works in plain JAX, inside Flax NNX and Linen modules,
under ``jit`` and ``vmap``, and across devices (``batch_norm(..., axis_name=)``).
"""

from jopt.nn.dropout import (
    dropout as dropout,
    spatial_dropout as spatial_dropout,
    drop_path as drop_path,
)
from jopt.nn.batch_norm import (
    batch_norm as batch_norm,
    batch_norm_stats as batch_norm_stats,
    BatchNormStats as BatchNormStats,
)
from jopt.nn.layer_norm import (
    layer_norm as layer_norm,
)
from jopt.nn.group_norm import (
    group_norm as group_norm,
)

__all__ = [
    "dropout",
    "spatial_dropout",
    "drop_path",
    "batch_norm",
    "batch_norm_stats",
    "BatchNormStats",
    "layer_norm",
    "group_norm",
]
