"""Meshes, sharding rules, sharded optimizer state, data-parallel steps, multi-host start-up.

Data parallelism (:mod:`jopt.parallel.data`): ``data_parallel_step`` (``jit`` with the
batch sharded, the recommended path), ``shard_map_step`` (the one correct gradient
mean built in) and ``pmap_step`` for code migrating from ``pmap``. Model parallelism
(:mod:`jopt.parallel.rules`, :mod:`jopt.parallel.fsdp`): path-regex sharding rules,
Megatron column / row presets, Flax NNX partitioning metadata, FSDP placement.
Sharded optimizer state (:mod:`jopt.parallel.zero`): ZeRO-1/2/3 for any transform.
Beyond one host (:mod:`jopt.parallel.distributed`): ``initialize`` on ``jax.distributed``
with bounded waits.
"""

from jopt.parallel.mesh import (
    batch_sharding as batch_sharding,
    data_mesh as data_mesh,
    replicate as replicate,
    replicated_sharding as replicated_sharding,
    shard_batch as shard_batch,
)
from jopt.parallel.data import (
    data_parallel_step as data_parallel_step,
    pmap_replicate as pmap_replicate,
    pmap_shard_batch as pmap_shard_batch,
    pmap_step as pmap_step,
    pmap_unreplicate as pmap_unreplicate,
    shard_map_step as shard_map_step,
)
from jopt.parallel.distributed import (
    ProcessInfo as ProcessInfo,
    initialize as initialize,
    process_batch as process_batch,
)
from jopt.parallel.rules import (
    check_specs as check_specs,
    column_parallel as column_parallel,
    data_model_mesh as data_model_mesh,
    match_specs as match_specs,
    megatron_mlp as megatron_mlp,
    path_of as path_of,
    row_parallel as row_parallel,
    shard_params as shard_params,
    specs_from_nnx as specs_from_nnx,
)
from jopt.parallel.fsdp import (
    fsdp_spec as fsdp_spec,
    fsdp_specs as fsdp_specs,
)
from jopt.parallel.zero import (
    ZeroStep as ZeroStep,
    zero_state_specs as zero_state_specs,
    zero_step as zero_step,
)

__all__ = [
    "data_mesh",
    "batch_sharding",
    "replicated_sharding",
    "replicate",
    "shard_batch",
    "data_parallel_step",
    "shard_map_step",
    "pmap_step",
    "pmap_replicate",
    "pmap_unreplicate",
    "pmap_shard_batch",
    "initialize",
    "ProcessInfo",
    "process_batch",
    "path_of",
    "match_specs",
    "check_specs",
    "shard_params",
    "specs_from_nnx",
    "column_parallel",
    "row_parallel",
    "megatron_mlp",
    "data_model_mesh",
    "fsdp_spec",
    "fsdp_specs",
    "zero_state_specs",
    "zero_step",
    "ZeroStep",
]
