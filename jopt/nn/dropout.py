"""The dropout family: element, feature-map (spatial) and per-example (drop path) masks.

All three are inverted dropout: at training time the kept values are scaled by
:math:`1/(1-p)` so that the expected output equals the input, and evaluation
(``train=False``) returns ``x`` itself, with no scaling and no key needed.
They differ only in the shape of the Bernoulli mask, which is broadcast over
the rest of ``x``:

* :func:`dropout`: one draw per element;
* :func:`spatial_dropout`: one draw per (example, channel), a whole feature map
  is kept or zeroed;
* :func:`drop_path`: one draw per example, a whole residual branch is kept or
  zeroed (stochastic depth).

The mask is drawn as ``uniform(key, mask_shape, float32) < 1 - rate``
(:func:`jax.random.bernoulli` with a float32 probability), so the same key gives
the same mask with or without ``jax_enable_x64``. Kept values are multiplied
by :math:`1/(1-p)` (as torch does), computed in float32 for inputs below 32 bits
and in ``x``'s dtype otherwise; the output has ``x``'s dtype.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jopt._core.validate import check_range, is_concrete
from jopt.nn._common import (check_float, check_key, check_train, normalize_axis,
                             stat_dtype)

__all__ = ["dropout", "spatial_dropout", "drop_path"]


def _check_rate(where: str, rate: Any) -> bool:
  """Check a concrete ``rate`` is in [0, 1); True when it is concretely 0."""
  if not is_concrete(rate):
    return False
  if not isinstance(rate, (bool, np.bool_)):
    try:
      arr = np.asarray(rate)
    except Exception:  # pylint: disable=broad-except
      arr = None
    if arr is not None and arr.shape == () and np.issubdtype(arr.dtype, np.number):
      if float(arr) == 1.0:
        raise ValueError(
            f"{where}rate=1 would drop every value and scale by 1/(1-rate) = inf;"
            " pass a rate in [0, 1), or remove the layer (or its branch) instead.")
  check_range("rate", rate, 0.0, 1.0, high_open=True, where=where)
  return float(np.asarray(rate)) == 0.0


def _masked(x: jax.Array, rate: Any, key: jax.Array,
            mask_shape: Sequence[int]) -> jax.Array:
  """``x * mask / (1 - rate)`` with ``mask ~ Bernoulli(1 - rate)`` of ``mask_shape``."""
  keep32 = jnp.asarray(1.0, jnp.float32) - jnp.asarray(rate).astype(jnp.float32)
  mask = jax.random.bernoulli(key, keep32, tuple(mask_shape))
  cdt = stat_dtype(x)
  inv_keep = jnp.asarray(1.0, cdt) / (jnp.asarray(1.0, cdt) - jnp.asarray(rate).astype(cdt))
  kept = x.astype(cdt) * inv_keep
  return jnp.where(mask, kept, jnp.zeros((), cdt)).astype(x.dtype)


def _prepare(where: str, x: Any, rate: Any, key: Any, train: Any):
  """Common checks; returns ``(x_array, key)`` or ``None`` when ``x`` passes through."""
  xa = check_float(where, x)
  is_zero = _check_rate(where, rate)
  if not check_train(where, train) or is_zero:
    return None
  return xa, check_key(where, key)


def dropout(x: Any, rate: Any, *, key: Any, train: bool = True) -> jax.Array:
  r"""Inverted dropout: zero each element with probability ``rate``, rescale the rest.

  .. math::
    y_i = \frac{m_i\, x_i}{1 - p}, \qquad m_i \sim \mathrm{Bernoulli}(1 - p)
    \ \text{independently},

  so :math:`\mathbb{E}[y_i] = x_i`. With ``train=False`` (or ``rate == 0``)
  ``x`` itself is returned and ``key`` may be ``None``.

  Args:
    x: a real floating array (its dtype is kept; bf16 in, bf16 out).
    rate: the drop probability :math:`p \in [0, 1)`; a concrete value is
      checked, a traced one (inside ``jit``) is used as given. ``rate=1`` is
      refused (it would divide by zero): remove the layer instead.
    key: one PRNG key, typed (``jax.random.key``) or raw
      (``jax.random.PRNGKey``). The same key gives the same mask. For one key
      per example, ``jax.vmap`` over the examples and the keys.
    train: a Python bool; ``False`` returns ``x`` unchanged.

  Returns:
    An array like ``x``.

  Example:
    >>> x = jnp.ones((2, 4))
    >>> y = jopt.nn.dropout(x, 0.5, key=jax.random.key(0))
    >>> sorted(set(np.asarray(y).ravel().tolist()))
    [0.0, 2.0]
    >>> jopt.nn.dropout(x, 0.5, key=None, train=False) is x
    True
    >>> keys = jax.random.split(jax.random.key(1), 2)
    >>> jax.vmap(lambda xi, k: jopt.nn.dropout(xi, 0.5, key=k))(x, keys).shape
    (2, 4)

  Reference: Srivastava et al., *Dropout: A Simple Way to Prevent Neural
  Networks from Overfitting*, JMLR 2014 (the inverted form, scaling at training
  time, as ``torch.nn.functional.dropout`` and ``flax.nnx.Dropout`` do).
  """
  where = "dropout: "
  prepared = _prepare(where, x, rate, key, train)
  if prepared is None:
    return x
  xa, key = prepared
  return _masked(xa, rate, key, xa.shape)


def spatial_dropout(x: Any, rate: Any, *, key: Any, train: bool = True,
                    channel_axis: int = -1) -> jax.Array:
  r"""Spatial dropout: zero whole feature maps, one draw per (example, channel).

  For ``x`` of shape :math:`(N, \dots, C)` (NHWC by default),

  .. math::
    y_{n, \dots, c} = \frac{m_{n c}\, x_{n, \dots, c}}{1 - p}, \qquad
    m_{n c} \sim \mathrm{Bernoulli}(1 - p),

  the mask broadcast over every axis other than the leading (example) axis and
  ``channel_axis``. Neighbouring activations in a feature map are strongly
  correlated, so element dropout barely regularises convolutions; dropping
  whole maps does. With ``channel_axis=1`` on NCHW input this is
  ``torch.nn.Dropout2d`` (``Dropout3d`` on NCDHW).

  Args:
    x: a real floating array of rank >= 3 whose leading axis is the examples
      (under ``jax.vmap`` over examples, pass ``x[None]`` and take ``[0]``).
    rate: the drop probability :math:`p \in [0, 1)` of each feature map.
    key: one PRNG key (typed or raw), as in :func:`dropout`.
    train: a Python bool; ``False`` returns ``x`` unchanged.
    channel_axis: the channel axis (default -1, NHWC); not the leading axis.

  Returns:
    An array like ``x``.

  Example:
    >>> x = jnp.ones((2, 3, 3, 4))   # NHWC
    >>> y = jopt.nn.spatial_dropout(x, 0.5, key=jax.random.key(0))
    >>> bool(jnp.all(y == y[:, :1, :1, :]))   # each map all kept or all zero
    True

  Reference: Tompson et al., *Efficient Object Localization Using
  Convolutional Networks*, CVPR 2015 (SpatialDropout); ``torch.nn.Dropout2d``.
  """
  where = "spatial_dropout: "
  xa = check_float(where, x)
  if xa.ndim < 3:
    raise ValueError(
        f"spatial_dropout: x has shape {xa.shape}, but it needs rank >= 3 (examples,"
        " spatial axes..., channels, e.g. NHWC); for rank-2 (N, C) features use"
        " dropout.")
  ax = normalize_axis(where, "channel_axis", channel_axis, xa.ndim)
  if ax == 0:
    raise ValueError(
        "spatial_dropout: channel_axis names the leading axis, which holds the"
        " examples; pass the channel axis (-1 for NHWC, 1 for NCHW).")
  prepared = _prepare(where, x, rate, key, train)
  if prepared is None:
    return x
  xa, key = prepared
  shape = [1] * xa.ndim
  shape[0], shape[ax] = xa.shape[0], xa.shape[ax]
  return _masked(xa, rate, key, shape)


def drop_path(x: Any, rate: Any, *, key: Any, train: bool = True) -> jax.Array:
  r"""Stochastic depth: zero a residual branch's whole output per example.

  For a residual block :math:`h = x + f(x)`, apply this to the branch output
  *before the addition*: ``h = x + drop_path(f(x), rate, key=key)``. For
  ``x`` of shape :math:`(N, \dots)`,

  .. math::
    y_{n, \dots} = \frac{b_n\, x_{n, \dots}}{1 - p}, \qquad
    b_n \sim \mathrm{Bernoulli}(1 - p),

  one draw per leading-axis example. Applied to the block's output it would
  drop the identity path too, which is not stochastic depth.

  Args:
    x: a real floating array of rank >= 1, the residual branch's output, its
      leading axis the examples.
    rate: the probability :math:`p \in [0, 1)` that an example's branch is
      dropped (often increased linearly with depth).
    key: one PRNG key (typed or raw), as in :func:`dropout`.
    train: a Python bool; ``False`` returns ``x`` unchanged.

  Returns:
    An array like ``x``.

  Example:
    >>> x, branch = jnp.ones((4, 8)), jnp.full((4, 8), 0.5)
    >>> h = x + jopt.nn.drop_path(branch, 0.25, key=jax.random.key(0))
    >>> h.shape, bool(jnp.all(h == h[:, :1]))   # each example's branch: all kept or all dropped
    ((4, 8), True)
    >>> bool(jnp.all((h == 1.0) | jnp.isclose(h, 1.0 + 0.5 / 0.75)))   # dropped, or 0.5 / (1 - p)
    True

  Reference: Huang et al., *Deep Networks with Stochastic Depth*, ECCV 2016.
  The paper scales the branch by :math:`1-p` at test time; this follows the
  inverted convention of timm's ``DropPath`` (``scale_by_keep=True``): kept
  branches are scaled by :math:`1/(1-p)` at training time and evaluation is
  the identity.
  """
  where = "drop_path: "
  xa = check_float(where, x)
  if xa.ndim < 1:
    raise ValueError(
        "drop_path: x is a scalar, but it needs a leading axis of examples; pass"
        " the batched branch output (N, ...).")
  prepared = _prepare(where, x, rate, key, train)
  if prepared is None:
    return x
  xa, key = prepared
  shape = (xa.shape[0],) + (1,) * (xa.ndim - 1)
  return _masked(xa, rate, key, shape)
