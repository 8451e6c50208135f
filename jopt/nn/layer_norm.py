"""Layer normalization: standardize each example over its feature axes."""

from __future__ import annotations

from typing import Any

import jax

from jopt._core.validate import check_range, is_concrete
from jopt.nn._common import (affine, check_float, check_param, normalize_axes,
                             stat_dtype, standardize)

__all__ = ["layer_norm"]


def layer_norm(x: Any, scale: Any, bias: Any, *, axis: Any = -1,
               eps: Any = 1e-5) -> jax.Array:
  r"""Layer normalization over ``axis``: per-example mean 0 and variance 1, then affine.

  With :math:`A` the normalized axes (``axis``) and :math:`H` the number of
  elements they hold, for every index of the other axes

  .. math::
    \mu = \tfrac1H \textstyle\sum_{A} x, \qquad
    \sigma^2 = \tfrac1H \textstyle\sum_{A} (x - \mu)^2, \qquad
    y = \gamma \odot \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta .

  ``axis=-1`` (or ``(-2, -1)``, ...) is ``torch.nn.functional.layer_norm`` with
  ``normalized_shape = x.shape[-1:]`` (or ``x.shape[-2:]``, ...); any other set
  of axes works the same way (e.g. ``axis=1`` normalizes the channels of NCHW
  input at each pixel). The same at training and evaluation time: no state.
  Statistics are computed in float32 for ``x`` below 32 bits and in ``x``'s
  dtype otherwise (two passes, biased variance); ``y`` has ``x``'s dtype.

  Args:
    x: a real floating array.
    scale: :math:`\gamma`, shaped like the normalized axes
      (``tuple(x.shape[a] for a in sorted(axis))``), or ``None``.
    bias: :math:`\beta`, shaped like ``scale``, or ``None``.
    axis: an int or a tuple of distinct ints, the axes normalized together.
    eps: :math:`\epsilon \ge 0`, added to the variance.

  Returns:
    An array like ``x``.

  Example:
    >>> x = jnp.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])
    >>> y = jopt.nn.layer_norm(x, jnp.ones(3), jnp.zeros(3), eps=0.0)
    >>> [round(v, 4) for v in y[1].tolist()]
    [-1.2247, 0.0, 1.2247]

  Reference: Ba, Kiros & Hinton, *Layer Normalization*, 2016;
  ``torch.nn.LayerNorm`` (same :math:`\epsilon` placement and biased variance).
  """
  where = "layer_norm: "
  xa = check_float(where, x)
  axes = normalize_axes(where, "axis", axis, xa.ndim)
  pshape = tuple(xa.shape[a] for a in axes)
  what = f"x normalized over axes {axes} of shape {xa.shape}"
  scale = check_param(where, "scale", scale, pshape, what)
  bias = check_param(where, "bias", bias, pshape, what)
  if is_concrete(eps):
    check_range("eps", eps, 0.0, where=where)
  y = standardize(xa.astype(stat_dtype(xa)), axes, eps)
  bshape = tuple(xa.shape[i] if i in axes else 1 for i in range(xa.ndim))
  return affine(y, scale, bias, bshape).astype(xa.dtype)
