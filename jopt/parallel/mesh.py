"""Mesh helpers for data parallelism: a 1-D data mesh, the batch sharding, sharded batches.

A data-parallel step keeps the parameters (and the optimizer state) replicated and
splits the batch's leading axis over the mesh axis ``axis``: each of the :math:`N`
devices holds :math:`B/N` examples. These helpers build that layout and refuse the
ones that cannot work (a batch that does not split evenly, an axis the mesh lacks)
with an error that says what to do, instead of letting XLA pad or fail later.

They work unchanged across processes (``jax.distributed``): a mesh over
``jax.devices()`` spans every host, and :func:`shard_batch` builds global arrays from
either the global batch (the same on every process) or each process's own share.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

__all__ = ["data_mesh", "batch_sharding", "replicated_sharding", "replicate", "shard_batch"]

_AXIS_TYPES = {"auto": AxisType.Auto, "explicit": AxisType.Explicit}


def check_axis(mesh: Mesh, axis: str, where: str = "") -> None:
  """Raise ``ValueError`` unless ``axis`` is one of ``mesh.axis_names``."""
  if not isinstance(mesh, Mesh):
    raise TypeError(f"{where}mesh must be a jax.sharding.Mesh (e.g. jopt.parallel.data_mesh()"
                    f" or jax.make_mesh), got {type(mesh).__name__}.")
  if axis not in mesh.axis_names:
    raise ValueError(
        f"{where}axis={axis!r} is not an axis of the mesh, whose axis names are"
        f" {tuple(mesh.axis_names)}. Pass axis= one of those names, or build the mesh"
        f" with an axis called {axis!r} (jopt.parallel.data_mesh(axis={axis!r})).")


def axis_size(mesh: Mesh, axis: str) -> int:
  """The number of devices along ``axis`` of ``mesh`` (checked to exist)."""
  check_axis(mesh, axis)
  return int(mesh.shape[axis])


def data_mesh(n: int | None = None, axis: str = "data", *, axis_type: str = "auto",
              devices: Sequence[Any] | None = None) -> Mesh:
  r"""A 1-D mesh of ``n`` devices with one axis named ``axis``, for data parallelism.

  .. math:: \text{mesh} = (d_0, d_1, \dots, d_{n-1}),\qquad n \le |\text{devices}|

  With several processes (after :func:`jopt.parallel.distributed.initialize`),
  ``jax.devices()`` lists every process's devices, so the default mesh spans all
  hosts and each process addresses its own part of it.

  Args:
    n: the number of devices (default: all of ``devices``). Taking fewer than all
      uses the first ``n``.
    axis: the mesh axis name the batch is split over.
    axis_type: ``"auto"`` (XLA chooses intermediate layouts; what ``jit`` with
      ``NamedSharding`` inputs expects) or ``"explicit"`` (shardings are part of
      the array types, ``jax.sharding.AxisType.Explicit``).
    devices: the devices to use (default ``jax.devices()``).

  Returns:
    A ``jax.sharding.Mesh`` of shape ``{axis: n}``.

  Example:
    >>> mesh = jopt.parallel.data_mesh()              # every device, axis "data"
    >>> mesh.size == jax.device_count()
    True
    >>> dict(jopt.parallel.data_mesh(4, axis="batch").shape)
    {'batch': 4}

  Reference: ``jax.make_mesh`` (JAX's sharded-computation guide).
  """
  if axis_type not in _AXIS_TYPES:
    raise ValueError(f"data_mesh: axis_type={axis_type!r} must be one of"
                     f" {sorted(_AXIS_TYPES)}.")
  if not isinstance(axis, str):
    raise TypeError(f"data_mesh: axis={axis!r} must be a non-empty string, e.g. 'data'.")
  if not axis:
    raise ValueError(f"data_mesh: axis={axis!r} must be a non-empty string, e.g. 'data'.")
  devices = list(jax.devices() if devices is None else devices)
  if n is None:
    n = len(devices)
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
    raise TypeError(f"data_mesh: n={n!r} must be an integer in [1, {len(devices)}] (the"
                    " number of devices available).")
  if not 1 <= n <= len(devices):
    raise ValueError(
        f"data_mesh: n={n!r} must be an integer in [1, {len(devices)}] (the number of"
        " devices available). On CPU, more devices come from"
        " jax.config.update('jax_num_cpu_devices', N) before any array is created.")
  return jax.make_mesh((int(n),), (axis,), axis_types=(_AXIS_TYPES[axis_type],),
                       devices=devices[:int(n)])


def batch_sharding(mesh: Mesh, axis: str = "data") -> NamedSharding:
  r"""The sharding that splits an array's leading (batch) axis over ``axis``.

  .. math:: x[B, \dots] \;\to\; \text{device } i \text{ holds } x[iB/N : (i+1)B/N, \dots]

  Args:
    mesh: the device mesh.
    axis: the mesh axis to split the batch over; must be one of ``mesh.axis_names``.

  Returns:
    ``NamedSharding(mesh, PartitionSpec(axis))``.

  Example:
    >>> s = jopt.parallel.batch_sharding(jopt.parallel.data_mesh(4), "data")
    >>> s.spec, s.shard_shape((8, 3))      # each of the 4 devices holds 8/4 rows
    (P('data',), (2, 3))

  Reference: ``jax.sharding.NamedSharding``.
  """
  check_axis(mesh, axis, "batch_sharding: ")
  return NamedSharding(mesh, PartitionSpec(axis))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  r"""The sharding that keeps a full copy of an array on every device of ``mesh``.

  .. math:: \text{device } i \text{ holds } x \quad \forall i

  Args:
    mesh: the device mesh.

  Returns:
    ``NamedSharding(mesh, PartitionSpec())``.

  Example:
    >>> s = jopt.parallel.replicated_sharding(jopt.parallel.data_mesh(4))
    >>> s.spec, s.shard_shape((8, 3))      # every device holds the whole array
    (P(), (8, 3))

  Reference: ``jax.sharding.NamedSharding``.
  """
  return NamedSharding(mesh, PartitionSpec())


def replicate(tree: Any, mesh: Mesh) -> Any:
  r"""Every leaf of ``tree`` replicated on every device of ``mesh`` (parameters, state).

  .. math:: x \mapsto (x, x, \dots, x) \text{ on } d_0, \dots, d_{N-1}

  Works across processes when every process passes the same values.

  Args:
    tree: a pytree of arrays (NumPy or JAX).
    mesh: the device mesh.

  Returns:
    The tree with each leaf a ``jax.Array`` of sharding :func:`replicated_sharding`.

  Example:
    >>> mesh = jopt.parallel.data_mesh(4)
    >>> params = jopt.parallel.replicate({"w": np.ones((3, 2), np.float32)}, mesh)
    >>> params["w"].sharding.is_fully_replicated, len(params["w"].addressable_shards)
    (True, 4)

  Reference: ``jax.device_put`` with a replicated ``NamedSharding``.
  """
  sharding = replicated_sharding(mesh)
  return jax.tree.map(lambda x: _put_global(np.asarray(x) if not isinstance(x, jax.Array)
                                            else x, sharding), tree)


def _put_global(x: Any, sharding: NamedSharding) -> jax.Array:
  """``x`` (the global value) placed on ``sharding``, also when it spans processes."""
  if sharding.is_fully_addressable:
    return jax.device_put(x, sharding)
  host = np.asarray(x)
  return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def _leading_sizes(batch: Any, where: str) -> list[tuple[str, int]]:
  out = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(batch)[0]:
    shape = np.shape(leaf)
    name = "batch" + jax.tree_util.keystr(path)
    if len(shape) == 0:
      raise ValueError(f"{where}{name} is a scalar; every batch leaf needs a leading batch"
                       " axis to split over the devices. Pass per-example arrays, and"
                       " pass scalars (a learning rate, a step) outside the batch.")
    out.append((name, int(shape[0])))
  if not out:
    raise ValueError(f"{where}the batch has no arrays.")
  sizes = {s for _, s in out}
  if len(sizes) > 1:
    raise ValueError(f"{where}the batch's leaves have different leading sizes"
                     f" {dict(out)}; every leaf must hold the same examples.")
  return out


def check_divisible(batch: Any, n: int, axis: str | None, where: str) -> int:
  """The batch's leading size, checked to be divisible by ``n`` (the size of ``axis``;
  ``axis=None``: the ``pmap`` devices)."""
  name, size = _leading_sizes(batch, where)[0]
  if size % n:
    lower, upper = size - size % n, size + n - size % n
    devs = "pmap devices" if axis is None else f"devices of mesh axis {axis!r}"
    raise ValueError(
        f"{where}the batch size {size} (leading axis of {name}) is not divisible by"
        f" the {n} {devs}. Use a batch size that is a multiple of"
        f" {n} (e.g. {lower or n} or {upper}): drop the last partial batch"
        " (jopt.training's Split.batches does) or pad it and mask the padded examples"
        " out of the loss.")
  return size


def shard_batch(batch: Any, mesh: Mesh, axis: str = "data", *,
                process_local: bool = False) -> Any:
  r"""Place a batch with its leading axis split evenly over the mesh axis ``axis``.

  .. math:: x[B, \dots] \;\to\; \text{device } i \text{ holds } x[iB/N : (i+1)B/N, \dots],
     \qquad N \mid B

  Args:
    batch: a pytree of arrays sharing one leading (batch) size :math:`B`.
    mesh: the device mesh.
    axis: the mesh axis to split over (its size is :math:`N`).
    process_local: ``False`` (default): ``batch`` is the global batch, the same on
      every process. ``True``: ``batch`` is this process's share (see
      :func:`jopt.parallel.distributed.process_batch`); the global batch is the
      processes' shares in process order, of size :math:`B \cdot P`.

  Returns:
    The batch as global ``jax.Array`` leaves sharded with :func:`batch_sharding`.

  Raises:
    ValueError: when the (global) batch size is not a multiple of :math:`N`, naming
      the batch size, the axis size and the fix; when ``axis`` is not a mesh axis.

  Example:
    >>> mesh = jopt.parallel.data_mesh(4)
    >>> x = jopt.parallel.shard_batch(np.zeros((64, 3), np.float32), mesh)
    >>> x.shape, x.addressable_shards[0].data.shape    # 64 / 4 = 16 rows per device
    ((64, 3), (16, 3))

  Reference: ``jax.device_put`` / ``jax.make_array_from_process_local_data``.
  """
  n = axis_size(mesh, axis)
  sharding = batch_sharding(mesh, axis)
  where = "shard_batch: "
  if not isinstance(process_local, (bool, np.bool_)):
    raise TypeError(f"{where}process_local={process_local!r} must be True or False.")
  if not process_local:
    check_divisible(batch, n, axis, where)
    return jax.tree.map(lambda x: _put_global(x, sharding), batch)
  local = _leading_sizes(batch, where)[0][1]
  global_size = local * jax.process_count()
  if global_size % n:
    raise ValueError(
        f"{where}the global batch size {global_size} ({jax.process_count()} processes x"
        f" {local} local examples) is not divisible by the {n} devices of mesh axis"
        f" {axis!r}. Give every process a share of a global batch that is a multiple"
        f" of {n}.")
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(
          sharding, np.asarray(x), (global_size,) + tuple(np.shape(x)[1:])), batch)
