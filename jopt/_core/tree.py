"""Tree helpers: state slots that keep their parameter's sharding, structure checks."""

from __future__ import annotations

import sys
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax.experimental.shard_alike import shard_alike

__all__ = ["zeros_like", "full_like", "check_same_structure", "safe_increment",
           "unwrap_variables", "leaf_paths", "check_leaf", "astype", "store",
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


def _variable_type() -> Any:
  """``flax.nnx.Variable`` if flax's NNX is loaded, else None (jopt never imports flax)."""
  nnx = sys.modules.get("flax.nnx")
  return getattr(nnx, "Variable", None)


def unwrap_variables(tree: Any) -> Any:
  """``tree`` with every ``flax.nnx.Variable`` (``nnx.Param``, ...) replaced by its array.

  ``nnx.Optimizer`` hands ``init`` the model's ``nnx.State`` of Variables and
  ``update`` plain arrays (``nnx.as_pure``); unwrapping at ``init`` gives slots
  with the plain-array structure of the gradients, as optax's do.
  """
  var = _variable_type()
  if var is None:
    return tree
  is_var = lambda x: isinstance(x, var)
  if not any(is_var(x) for x in jax.tree.leaves(tree, is_leaf=is_var)):
    return tree
  return jax.tree.map(lambda x: x.get_value() if is_var(x) else x, tree, is_leaf=is_var)


def leaf_paths(tree: Any, root: str = "params") -> list[str]:
  """Each leaf's path, written as a user would index it: ``params['dense']['kernel']``."""
  return [root + jax.tree_util.keystr(path)
          for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _kind(dtype: Any) -> str:
  if jnp.issubdtype(dtype, jnp.complexfloating):
    return "complex"
  if jnp.issubdtype(dtype, jnp.floating):
    return "real floating"
  return f"non-floating ({jnp.dtype(dtype)})"


def check_leaf(where: str, path: str, g: Any, shape: Sequence[int] | None,
               dtype: Any = None) -> None:
  """Raise unless gradient ``g`` has the parameter's ``shape`` and dtype kind.

  Never reshape: a transposed (2, 3) gradient for a (3, 2) parameter is a bug in
  the caller's code, not something to fix silently. ``None`` skips a check.
  """
  if shape is not None and tuple(g.shape) != tuple(shape):
    raise ValueError(
        f"{where}the gradient for {path} has shape {tuple(g.shape)}, but the"
        f" parameter has shape {tuple(shape)}. Pass gradients shaped like the"
        " params given to init (jax.grad of the loss with respect to them).")
  if dtype is not None and _kind(g.dtype) != _kind(dtype):
    raise TypeError(
        f"{where}the gradient for {path} is {_kind(g.dtype)} ({jnp.dtype(g.dtype)}),"
        f" but the parameter is {_kind(dtype)} ({jnp.dtype(dtype)}). Pass gradients"
        " of the parameters' own kind of dtype.")


def astype(x: jax.Array, dtype: Any) -> jax.Array:
  """``x.astype(dtype)``, or ``x`` itself when it already is that (non-weak) dtype:
  the usual case, where a traced no-op cast per array would only slow tracing."""
  if x.dtype == dtype and not jax.typeof(x).weak_type:
    return x
  return x.astype(dtype)


def store(x: jax.Array, dtype: Any) -> jax.Array:
  """Cast a rule's output to its slot's (or gradient's) dtype; a real slot keeps
  the real part of a complex value explicitly (never a silent ComplexWarning)."""
  if x.dtype != dtype and jnp.issubdtype(x.dtype, jnp.complexfloating) and (
      not jnp.issubdtype(dtype, jnp.complexfloating)):
    x = x.real
  return astype(x, dtype)


def safe_increment(count: jax.Array) -> jax.Array:
  """``count + 1`` that saturates at the dtype's maximum instead of wrapping."""
  big = jnp.iinfo(count.dtype).max
  return jnp.where(count < big, count + 1, big).astype(count.dtype)


def compute_dtype(dtype: Any, what: str = "gradients") -> Any:
  """The dtype an update is computed in: at least float32 (complex64 for complex).

  Real floats below 32 bits compute in float32; complex dtypes compute as
  themselves (complex parameters are optimized as optax does: moments of
  :math:`|g|^2`, updates conjugate-aware).
  """
  if not jnp.issubdtype(dtype, jnp.inexact):
    raise TypeError(
        f"{what} must be floating point or complex, got dtype {jnp.dtype(dtype)};"
        " cast integer or boolean leaves out of the gradient tree (optax.masked)"
        " or to a float dtype."
    )
  dtype = jnp.dtype(dtype)
  if jnp.issubdtype(dtype, jnp.complexfloating):
    return dtype
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


def path_string(path: Any) -> str:
  """The ``a/b/kernel`` string of a ``jax.tree_util`` key path (dict keys, attribute
  names and sequence indices joined by ``/``), as path rules match it."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)
