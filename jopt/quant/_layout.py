"""Block layouts shared by the quantizers: one scale (or codebook) per block.

Every granularity is a way of cutting an array into equal blocks, each of which
gets its own quantization parameters:

* ``"tensor"`` -- one block, the whole array; parameters of shape ``()``.
* ``"channel"`` -- one block per index along ``axis`` (every other axis is
  reduced); parameters of shape ``(x.shape[axis],)``.
* ``"group"`` -- blocks of ``group_size`` contiguous entries along ``axis``;
  parameters of ``x``'s shape with ``shape[axis]`` replaced by
  ``shape[axis] // group_size``.

:func:`to_blocks` reshapes an array to ``(num_blocks, block_len)`` and
:func:`from_blocks` undoes it; :func:`params_to_blocks` and
:func:`params_from_blocks` do the same for per-block parameters.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jopt._core import validate
from jopt._core.tree import compute_dtype

__all__ = ["Layout", "make_layout", "to_blocks", "from_blocks", "params_to_blocks",
           "params_from_blocks", "check_bits", "check_finite", "GRANULARITIES"]

GRANULARITIES = ("tensor", "channel", "group")


class Layout(NamedTuple):
  """Static description of how an array of ``shape`` is cut into blocks."""

  shape: tuple[int, ...]
  granularity: str
  axis: int | None
  group_size: int | None

  @property
  def param_shape(self) -> tuple[int, ...]:
    """The public shape of per-block parameters (scales, zero points)."""
    if self.granularity == "tensor":
      return ()
    if self.granularity == "channel":
      return (self.shape[self.axis],)
    shape = list(self.shape)
    shape[self.axis] //= self.group_size
    return tuple(shape)

  @property
  def num_blocks(self) -> int:
    return int(np.prod(self.param_shape, dtype=np.int64))


def check_bits(bits: Any, where: str, low: int = 2, high: int = 8) -> int:
  """``bits`` as an int in ``[low, high]``, else a ``ValueError`` naming ``bits``."""
  b = validate.static_int("bits", bits, where, 0)
  if not low <= b <= high:
    raise ValueError(f"{where}bits={b} is outside the supported range {low}..{high};"
                     f" pass an integer number of bits from {low} to {high}.")
  return b


def check_finite(name: str, x: Any, where: str) -> None:
  """Raise naming ``name`` when a concrete ``x`` holds NaN or Inf (traced: unchecked)."""
  if validate.is_concrete(x) and not bool(jnp.all(jnp.isfinite(x))):
    raise ValueError(f"{where}{name} contains NaN or Inf values; quantization ranges"
                     f" need finite data. Remove or replace the non-finite entries of"
                     f" {name} first (e.g. jnp.nan_to_num).")


def make_layout(shape: tuple[int, ...], granularity: str, axis: Any, group_size: Any,
                where: str) -> Layout:
  """Check the granularity arguments against ``shape``; return the :class:`Layout`."""
  shape = tuple(int(d) for d in shape)
  validate.check_choice("granularity", granularity, GRANULARITIES, where)
  if granularity != "group" and group_size is not None:
    raise ValueError(f"{where}group_size={group_size!r} is only used with"
                     f" granularity='group', not {granularity!r}; drop group_size or"
                     " pass granularity='group'.")
  if granularity == "tensor":
    return Layout(shape, "tensor", None, None)
  if not shape:
    raise ValueError(f"{where}granularity={granularity!r} needs an axis, but x is a"
                     " scalar; use granularity='tensor'.")
  ax = None
  if isinstance(axis, (int, np.integer)) and not isinstance(axis, (bool, np.bool_)):
    ax = int(axis) + len(shape) if axis < 0 else int(axis)
  if ax is None or not 0 <= ax < len(shape):
    raise ValueError(f"{where}axis={axis!r} is out of range for x of shape {shape}"
                     f" (rank {len(shape)}); pass an integer in [-{len(shape)},"
                     f" {len(shape) - 1}].")
  if granularity == "channel":
    return Layout(shape, "channel", ax, None)
  if group_size is None:
    raise ValueError(f"{where}granularity='group' needs group_size (the number of"
                     " contiguous entries along axis that share a scale), e.g. 64.")
  g = validate.check_positive_int("group_size", group_size, where)
  if shape[ax] % g:
    raise ValueError(f"{where}group_size={g} does not divide x.shape[{ax}]={shape[ax]}"
                     f" (x has shape {shape}); pass a group_size that divides it or"
                     " another axis.")
  return Layout(shape, "group", ax, g)


def to_blocks(x: jax.Array, layout: Layout) -> jax.Array:
  """``x`` (of ``layout.shape``) as a ``(num_blocks, block_len)`` matrix."""
  if layout.granularity == "tensor":
    return x.reshape(1, -1)
  if layout.granularity == "channel":
    moved = jnp.moveaxis(x, layout.axis, 0)  # explicit block length: -1 fails for size 0
    return moved.reshape(moved.shape[0], math.prod(moved.shape[1:]))
  return jnp.moveaxis(x, layout.axis, -1).reshape(-1, layout.group_size)


def blocks_of(x: Any, granularity: str, axis: Any, group_size: Any,
              where: str) -> tuple[jax.Array, Layout, Any, jax.Array]:
  """``x`` checked (a finite real floating array), its layout, compute dtype and blocks.

  The common first step of :func:`jopt.quant.quantize` and
  :func:`jopt.quant.fake_quant`: ``(x, layout, cdt, to_blocks(x.astype(cdt)))``.
  """
  if not isinstance(x, jax.Array):
    x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"{where}x must be a real floating array, got dtype {x.dtype};"
                    " cast it with x.astype(jnp.float32).")
  check_finite("x", x, where)
  layout = make_layout(x.shape, granularity, axis, group_size, where)
  cdt = compute_dtype(x.dtype, "x")
  return x, layout, cdt, to_blocks(x.astype(cdt), layout)


def from_blocks(b: jax.Array, layout: Layout) -> jax.Array:
  """Undo :func:`to_blocks`."""
  shape, ax = layout.shape, layout.axis
  if layout.granularity == "tensor":
    return b.reshape(shape)
  moved = (shape[ax],) + shape[:ax] + shape[ax + 1:] if layout.granularity == "channel" \
      else shape[:ax] + shape[ax + 1:] + (shape[ax],)
  out = b.reshape(moved)
  return jnp.moveaxis(out, 0 if layout.granularity == "channel" else -1, ax)


def params_to_blocks(p: jax.Array, layout: Layout, trailing: int = 0) -> jax.Array:
  """Per-block parameters (public shape, plus ``trailing`` axes) as ``(num_blocks, ...)``."""
  tail = p.shape[p.ndim - trailing:] if trailing else ()
  if layout.granularity == "group":
    p = jnp.moveaxis(p, layout.axis, len(layout.shape) - 1)
  return p.reshape((layout.num_blocks,) + tail)


def params_from_blocks(p: jax.Array, layout: Layout, trailing: int = 0) -> jax.Array:
  """Undo :func:`params_to_blocks`."""
  tail = p.shape[1:1 + trailing] if trailing else ()
  if layout.granularity != "group":
    return p.reshape(layout.param_shape + tail)
  ps = layout.param_shape
  ax = layout.axis
  moved = ps[:ax] + ps[ax + 1:] + (ps[ax],)
  return jnp.moveaxis(p.reshape(moved + tail), len(ps) - 1, ax)
