"""Argument checks shared by the model-side functions of :mod:`jopt.nn`.

Each check names the function and the argument and says what to pass instead.
Shapes, axes and the ``train`` flag decide the program, so they must be
concrete; a traced number (a rate, an ``eps``) passes through unchecked.
"""

from __future__ import annotations

import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt._core.tree import compute_dtype

__all__ = ["check_float", "check_train", "check_key", "normalize_axis",
           "normalize_axes", "check_param", "stat_dtype", "moments", "standardize", "affine"]


def check_float(where: str, x: Any) -> jax.Array:
  """``x`` as an array; raise ``TypeError`` unless its dtype is a real float."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(
        f"{where}x has dtype {x.dtype}, but it must be a real floating dtype"
        " (float16, bfloat16, float32 or float64); cast it first, e.g."
        " x.astype(jnp.float32).")
  return x


def stat_dtype(x: jax.Array) -> Any:
  """The dtype statistics are computed in: float32 for x below 32 bits, else x's."""
  return compute_dtype(x.dtype, "x")


def check_train(where: str, train: Any) -> bool:
  """``train`` as a Python bool; a traced flag is refused (it chooses the program)."""
  if isinstance(train, jax.core.Tracer):
    raise TypeError(
        f"{where}train is a traced value, but it chooses the program (random mask"
        " and batch statistics, or none), so it must be a Python bool. Pass it as"
        " a static argument: jax.jit(f, static_argnames=('train',)).")
  if isinstance(train, (bool, np.bool_)):
    return bool(train)
  arr = np.asarray(train) if isinstance(train, (np.ndarray, jax.Array)) else None
  if arr is not None and arr.shape == () and arr.dtype == np.bool_:
    return bool(arr)
  raise TypeError(f"{where}train={train!r} must be a bool (True while training).")


def check_key(where: str, key: Any) -> jax.Array:
  """``key`` as one PRNG key: a typed key of shape () or a raw uint32 key of rank 1."""
  if key is None:
    raise ValueError(
        f"{where}key is None while training; pass a PRNG key, e.g."
        " key=jax.random.key(0) (or jax.random.PRNGKey(0)), or train=False for"
        " evaluation.")
  if not hasattr(key, "dtype") or not hasattr(key, "shape"):
    raise TypeError(
        f"{where}key={key!r} must be a PRNG key from jax.random.key or"
        " jax.random.PRNGKey.")
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.shape != ():
      raise ValueError(
          f"{where}key has shape {key.shape}, but one key (shape ()) is needed;"
          " for one key per example, vmap over the keys:"
          " jax.vmap(lambda x, k: f(x, ..., key=k))(xs, keys).")
    return key
  if key.dtype != jnp.uint32 or key.ndim != 1:
    raise ValueError(
        f"{where}key has dtype {key.dtype} and shape {key.shape}; pass one key:"
        " a typed key of shape () from jax.random.key, or a raw uint32 key of"
        " shape (2,) from jax.random.PRNGKey. For one key per example, vmap over"
        " the keys.")
  return key


def normalize_axis(where: str, name: str, axis: Any, ndim: int) -> int:
  """``axis`` as an int in ``[0, ndim)``; negative axes count from the end."""
  if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
    raise TypeError(f"{where}{name}={axis!r} must be an int.")
  axis = int(axis)
  if not -ndim <= axis < ndim:
    raise ValueError(
        f"{where}{name}={axis} is out of range for x with {ndim} dimensions;"
        f" pass an axis in [{-ndim}, {ndim}).")
  return axis % ndim


def normalize_axes(where: str, name: str, axes: Any, ndim: int) -> tuple[int, ...]:
  """``axes`` (an int or a tuple of ints) as sorted distinct axes in ``[0, ndim)``."""
  if isinstance(axes, (list, tuple)):
    if not axes:
      raise ValueError(f"{where}{name}=() names no axis; pass at least one.")
    out = tuple(normalize_axis(where, name, a, ndim) for a in axes)
  else:
    out = (normalize_axis(where, name, axes, ndim),)
  if len(set(out)) != len(out):
    raise ValueError(f"{where}{name}={axes!r} names an axis twice.")
  return tuple(sorted(out))


def check_param(where: str, name: str, value: Any, shape: tuple[int, ...],
                what: str) -> jax.Array | None:
  """``value`` (``None`` or a real float array of exactly ``shape``), unwrapped."""
  if value is None:
    return None
  value = getattr(value, "get_value", lambda: value)() if _is_variable(value) else value
  value = jnp.asarray(value)
  if tuple(value.shape) != tuple(shape):
    raise ValueError(
        f"{where}{name} has shape {tuple(value.shape)}, but {what} needs shape"
        f" {tuple(shape)}; pass an array of that shape, or None for no {name}.")
  if not jnp.issubdtype(value.dtype, jnp.floating):
    raise TypeError(f"{where}{name} has dtype {value.dtype}; it must be a real float.")
  return value


def _is_variable(value: Any) -> bool:
  """True for a ``flax.nnx.Variable`` (jopt never imports flax itself)."""
  nnx = sys.modules.get("flax.nnx")
  var = getattr(nnx, "Variable", None)
  return var is not None and isinstance(value, var)


def moments(x: jax.Array, axes: tuple[int, ...], axis_name: Any = None):
  r"""``(mean, var, x - mean)`` over ``axes`` (kept as size-1 axes), in ``x``'s dtype.

  The corrected two-pass algorithm (Chan, Golub & LeVeque, 1983): a first mean
  :math:`m_1`, then the deviations :math:`d = x - m_1`, whose own mean
  :math:`c` corrects the rounding of the first sum:

  .. math:: \mu = m_1 + \bar d, \qquad \sigma^2 = \overline{d^2} - \bar d^{\,2}

  so the variance never cancels for large means and the mean is accurate to a
  few ulps whatever order the reduction sums in (one device, or per-device
  means averaged over ``axis_name`` with ``jax.lax.pmean``: the two agree to
  a few ulps). Biased: divides by the number of elements reduced.
  """
  m1 = jnp.mean(x, axes, keepdims=True)
  if axis_name is not None:
    m1 = jax.lax.pmean(m1, axis_name)
  d = x - m1
  c = jnp.mean(d, axes, keepdims=True)
  m2 = jnp.mean(d * d, axes, keepdims=True)
  if axis_name is not None:
    c, m2 = jax.lax.pmean((c, m2), axis_name)
  var = jnp.maximum(m2 - c * c, jnp.zeros((), x.dtype))
  return m1 + c, var, d - c


def standardize(x: jax.Array, axes: tuple[int, ...], eps: Any) -> jax.Array:
  """``(x - mean) / sqrt(var + eps)`` over ``axes``, in ``x``'s dtype (see :func:`moments`)."""
  _, var, centered = moments(x, axes)
  return centered * jax.lax.rsqrt(var + jnp.asarray(eps, x.dtype))


def affine(y: jax.Array, scale: jax.Array | None, bias: jax.Array | None,
           shape: tuple[int, ...]) -> jax.Array:
  """``y * scale + bias`` with each (optional) parameter reshaped to ``shape``
  (the broadcast shape of the normalized axes), cast to ``y``'s dtype."""
  if scale is not None:
    y = y * scale.astype(y.dtype).reshape(shape)
  if bias is not None:
    y = y + bias.astype(y.dtype).reshape(shape)
  return y
