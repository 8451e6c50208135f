"""Group normalization: standardize each example over groups of channels."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jopt._core.validate import check_positive_int, check_range, is_concrete
from jopt.nn._common import (affine, check_float, check_param, normalize_axis,
                             stat_dtype, standardize)

__all__ = ["group_norm"]


def group_norm(x: Any, scale: Any, bias: Any, *, num_groups: int, eps: Any = 1e-5,
               channel_axis: int = -1) -> jax.Array:
  r"""Group normalization: per-example statistics over contiguous groups of channels.

  The :math:`C` channels are split into :math:`G` = ``num_groups`` contiguous
  groups of :math:`C/G` (channels :math:`0..C/G-1` form group 0, as in torch).
  For each example :math:`n` and group :math:`g`, with :math:`S_{ng}` the
  group's channels at every spatial position (:math:`|S| = H W C / G`):

  .. math::
    \mu_{ng} = \tfrac{1}{|S|}\textstyle\sum_{S_{ng}} x, \qquad
    \sigma^2_{ng} = \tfrac{1}{|S|}\textstyle\sum_{S_{ng}} (x - \mu_{ng})^2, \qquad
    y_{n\dots c} = \gamma_c\, \frac{x_{n \dots c} - \mu_{ng}}{\sqrt{\sigma^2_{ng}
    + \epsilon}} + \beta_c .

  ``num_groups=1`` normalizes each example over all its values (LayerNorm over
  :math:`(H, W, C)`, with per-channel affine); ``num_groups=C`` is instance
  normalization. Independent of the batch size and the same at training and
  evaluation time. Statistics in float32 for ``x`` below 32 bits, else in
  ``x``'s dtype; ``y`` has ``x``'s dtype.

  Args:
    x: a real floating array of rank >= 2, the leading axis the examples
      (NHWC by default; ``channel_axis=1`` for torch's NCHW).
    scale: :math:`\gamma`, shape ``(C,)``, or ``None``.
    bias: :math:`\beta`, shape ``(C,)``, or ``None``.
    num_groups: :math:`G \ge 1`, a divisor of :math:`C`.
    eps: :math:`\epsilon \ge 0`, added to the variance.
    channel_axis: the channel axis (not the leading one).

  Returns:
    An array like ``x``.

  Example:
    >>> x = jax.random.normal(jax.random.key(0), (2, 4, 4, 8))   # NHWC
    >>> y = jopt.nn.group_norm(x, jnp.ones(8), jnp.zeros(8), num_groups=2)
    >>> g0 = y[0, :, :, :4]            # example 0, group 0
    >>> round(float(g0.mean()), 4) == 0.0, round(float(g0.std()), 3)
    (True, 1.0)

  Reference: Wu & He, *Group Normalization*, ECCV 2018;
  ``torch.nn.GroupNorm`` (same grouping, :math:`\epsilon` and biased variance).
  """
  where = "group_norm: "
  xa = check_float(where, x)
  if xa.ndim < 2:
    raise ValueError(
        f"{where}x has shape {xa.shape}, but it needs rank >= 2 (examples, ...,"
        " channels); under jax.vmap over examples, pass x[None] and take [0].")
  ax = normalize_axis(where, "channel_axis", channel_axis, xa.ndim)
  if ax == 0:
    raise ValueError(
        f"{where}channel_axis names the leading axis, which holds the examples;"
        " pass the channel axis (-1 for NHWC, 1 for NCHW).")
  g = check_positive_int("num_groups", num_groups, where)
  c = xa.shape[ax]
  if c % g:
    raise ValueError(
        f"{where}x has C={c} channels on axis {channel_axis}, which num_groups={g}"
        " does not divide; pass a num_groups that divides C.")
  what = f"x with C={c} channels on axis {channel_axis}"
  scale = check_param(where, "scale", scale, (c,), what)
  bias = check_param(where, "bias", bias, (c,), what)
  if is_concrete(eps):
    check_range("eps", eps, 0.0, where=where)

  xc = jnp.moveaxis(xa.astype(stat_dtype(xa)), ax, -1)    # (N, ..., C)
  grouped = xc.reshape(xc.shape[:-1] + (g, c // g))      # (N, ..., G, C/G)
  red = tuple(range(1, grouped.ndim - 2)) + (grouped.ndim - 1,)
  y = standardize(grouped, red, eps).reshape(xc.shape)
  y = affine(y, scale, bias, (c,))
  return jnp.moveaxis(y, -1, ax).astype(xa.dtype)
