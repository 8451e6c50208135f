"""Tree helpers: state slots that keep their parameter's sharding, structure checks."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental.shard_alike import shard_alike

__all__ = ["zeros_like", "full_like", "check_same_structure", "safe_increment",
           "compute_dtype", "explicit_spec", "gathered"]


def full_like(p: jax.Array, fill: float, dtype: Any = None, shape: Any = None) -> jax.Array:
  """An array filled with ``fill``, on the same sharding as ``p``.

  ``jnp.zeros_like`` inside ``jax.jit`` carries no data dependence on ``p``,
  so XLA places its result on one device (optax's ``jax.jit(tx.init)`` trap).
  ``shard_alike`` ties the new array's sharding to ``p`` under ``jit``,
  eagerly and under a mesh. A ``shape`` other than ``p``'s gets no constraint.
  """
  dtype = p.dtype if dtype is None else dtype
  if shape is not None and tuple(shape) != tuple(p.shape):
    return jnp.full(shape, fill, dtype)
  out = jnp.full_like(p, fill, dtype=dtype)
  if p.ndim == 0:
    return out
  _, out = shard_alike(p, out)
  return out


def zeros_like(p: jax.Array, dtype: Any = None) -> jax.Array:
  """Zeros shaped and sharded like ``p``, in ``dtype`` (default ``p.dtype``)."""
  return full_like(p, 0, dtype)


def check_same_structure(expected: Any, got: Any, what: str, fix: str) -> None:
  """Raise ``ValueError`` naming both tree structures when they differ."""
  if expected != got:
    raise ValueError(
        f"{what}: the tree structure {got} does not match the optimizer state's"
        f" {expected}. {fix}"
    )


def safe_increment(count: jax.Array) -> jax.Array:
  """``count + 1`` that saturates at the dtype's maximum instead of wrapping."""
  big = jnp.iinfo(count.dtype).max
  return jnp.where(count < big, count + 1, big).astype(count.dtype)


def compute_dtype(dtype: Any, what: str = "gradients") -> Any:
  """The dtype an update is computed in: at least float32, never lower."""
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(
        f"{what} must be floating point, got dtype {jnp.dtype(dtype)}; cast"
        " integer or boolean leaves out of the gradient tree (optax.masked) or"
        " to a float dtype."
    )
  dtype = jnp.dtype(dtype)
  return dtype if dtype.itemsize >= 4 else jnp.dtype(jnp.float32)


def explicit_spec(x: jax.Array) -> Any:
  """The PartitionSpec of an array sharded over explicit mesh axes, else None.

  Under ``jax.sharding.AxisType.Explicit`` the sharding is part of the type and
  JAX refuses ops whose output layout is ambiguous (a reshape across a sharded
  axis, a contraction over one); in auto mode it is None and XLA decides.
  """
  spec = jax.typeof(x).sharding.spec
  return spec if any(axis is not None for axis in spec) else None


def gathered(fn, x: jax.Array, like: jax.Array | None = None):
  """Apply the layout-changing ``fn`` to ``x``; under explicit sharding run it on
  a replicated copy and put the result back on ``like``'s (default ``x``'s) spec.

  ``fn`` must return one array shaped like ``like`` (or ``x``) or a tuple whose
  first element is; other elements are returned replicated.
  """
  spec = explicit_spec(like if like is not None else x)
  if spec is None and explicit_spec(x) is None:
    return fn(x)
  from jax.sharding import PartitionSpec  # pylint: disable=import-outside-toplevel
  if explicit_spec(x) is not None:
    x = jax.sharding.reshard(x, PartitionSpec())
  out = fn(x)
  if spec is None:
    return out
  if isinstance(out, tuple):
    return (jax.sharding.reshard(out[0], spec),) + tuple(out[1:])
  return jax.sharding.reshard(out, spec)
