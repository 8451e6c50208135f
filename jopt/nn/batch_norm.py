"""Batch normalization as a pure function: ``(y, new_stats) = batch_norm(x, ..., stats)``.

The running statistics are an explicit input and output (:class:`BatchNormStats`),
so the same function serves plain JAX, Flax NNX (``nnx.BatchStat`` variables),
Linen (the ``"batch_stats"`` collection) and data-parallel training, where
``axis_name`` averages the batch statistics over devices (synchronized batch norm).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt._core.finite import check_axis_name
from jopt._core.tree import unwrap_variables
from jopt._core.validate import check_choice, check_range, is_concrete
from jopt.nn._common import (affine, check_float, check_param, check_train, moments,
                             normalize_axis, stat_dtype)

__all__ = ["batch_norm", "batch_norm_stats", "BatchNormStats"]


class BatchNormStats(NamedTuple):
  """Running statistics of :func:`batch_norm`, one entry per feature.

  Attributes:
    mean: shape ``(C,)``, the running mean (starts at 0).
    var: shape ``(C,)``, the running variance (starts at 1); unbiased batch
      variances by default (torch's convention), see ``running_var``.
  """

  mean: jax.Array
  var: jax.Array


BatchNormStats.__module__ = "jopt"


def batch_norm_stats(num_features: int, dtype: Any = jnp.float32) -> BatchNormStats:
  r"""Initial running statistics for :func:`batch_norm`: mean 0, variance 1.

  .. math:: \hat\mu = 0, \qquad \hat\sigma^2 = 1 \quad (\text{per feature})

  Args:
    num_features: :math:`C`, the size of ``x``'s feature axis.
    dtype: a real floating dtype for both arrays (default float32). The
      running statistics are updated in this dtype whatever ``x``'s is.

  Returns:
    A :class:`BatchNormStats` of two arrays of shape ``(C,)``.

  Example:
    >>> stats = jopt.nn.batch_norm_stats(3)
    >>> stats.mean.tolist(), stats.var.tolist()
    ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])

  Reference: the initial ``running_mean`` / ``running_var`` of
  ``torch.nn.BatchNorm1d`` and the ``mean`` / ``var`` of ``flax.nnx.BatchNorm``.
  """
  if isinstance(num_features, bool) or not isinstance(num_features, int):
    raise TypeError(f"batch_norm_stats: num_features={num_features!r} must be an int >= 1.")
  if num_features < 1:
    raise ValueError(f"batch_norm_stats: num_features={num_features!r} must be an int >= 1.")
  dtype = jnp.dtype(dtype)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"batch_norm_stats: dtype={dtype} must be a real floating dtype.")
  return BatchNormStats(mean=jnp.zeros((num_features,), dtype),
                        var=jnp.ones((num_features,), dtype))


def _check_stats(where: str, stats: Any, c: int, axis: Any) -> BatchNormStats:
  """``stats`` as a :class:`BatchNormStats` of two real float arrays of shape ``(c,)``."""
  fix = (f"x has {c} features on axis {axis}, so stats needs mean and var of shape"
         f" ({c},); create them with jopt.nn.batch_norm_stats({c}).")
  if isinstance(stats, BatchNormStats):
    pair = tuple(stats)
  elif isinstance(stats, (tuple, list)) and len(stats) == 2:
    pair = tuple(stats)
  else:
    raise TypeError(f"{where}stats must be a BatchNormStats(mean, var), got"
                    f" {type(stats).__name__}; {fix}")
  pair = unwrap_variables(pair)
  out = []
  for name, v in zip(("mean", "var"), pair):
    v = jnp.asarray(v)
    if tuple(v.shape) != (c,):
      raise ValueError(f"{where}stats.{name} has shape {tuple(v.shape)}, but {fix}")
    if not jnp.issubdtype(v.dtype, jnp.floating):
      raise TypeError(f"{where}stats.{name} has dtype {v.dtype}; it must be a real float.")
    out.append(v)
  if isinstance(stats, BatchNormStats) and all(a is b for a, b in zip(out, stats)):
    return stats
  return BatchNormStats(*out)


def _ema_weights(where: str, momentum: Any, decay: Any) -> tuple[Any, Any]:
  """``(w_old, w_batch)`` of ``new = w_old * old + w_batch * batch`` for either convention."""
  if momentum is not None and decay is not None:
    raise ValueError(
        f"{where}both momentum={momentum!r} and decay={decay!r} were given; pass"
        " one: momentum (torch: new = (1 - momentum) * old + momentum * batch) or"
        " decay (flax: new = decay * old + (1 - decay) * batch), where decay ="
        " 1 - momentum.")
  if decay is not None:
    check_range("decay", decay, 0.0, 1.0, where=where)
    return decay, 1 - decay
  momentum = 0.1 if momentum is None else momentum
  check_range("momentum", momentum, 0.0, 1.0, where=where)
  return 1 - momentum, momentum


def _cast(v: Any, dtype: Any) -> Any:
  """A Python number as is (weak), an array cast to ``dtype``."""
  return v if isinstance(v, (int, float)) else jnp.asarray(v).astype(dtype)


def batch_norm(
    x: Any,
    scale: Any,
    bias: Any,
    stats: BatchNormStats,
    *,
    train: bool,
    momentum: Any = None,
    decay: Any = None,
    eps: Any = 1e-5,
    axis: int = -1,
    axis_name: Any = None,
    running_var: str = "unbiased",
) -> tuple[jax.Array, BatchNormStats]:
  r"""Batch normalization; returns the output and the updated running statistics.

  For features on ``axis`` (size :math:`C`) and the :math:`n` values of each
  feature in the batch (every other axis, over all devices of ``axis_name``):

  .. math::
    \mu_B = \tfrac1n \textstyle\sum_i x_i, \qquad
    \sigma_B^2 = \tfrac1n \textstyle\sum_i (x_i - \mu_B)^2, \qquad
    y = \gamma\, \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta,

  with :math:`(\mu, \sigma^2) = (\mu_B, \sigma_B^2)` when ``train=True`` and
  the running statistics :math:`(\hat\mu, \hat\sigma^2)` when ``train=False``.
  Training also updates the running statistics, with
  :math:`s^2_B = \frac{n}{n-1}\sigma_B^2` (``running_var="unbiased"``, torch) or
  :math:`s^2_B = \sigma_B^2` (``"biased"``, flax). The two conventions of the
  moving average, side by side (pass one of them; neither means torch's
  ``momentum=0.1``):

  .. math::
    \begin{array}{ll}
      \texttt{momentum}=m\ \text{(torch)}: &
        \hat\mu \leftarrow (1 - m)\,\hat\mu + m\,\mu_B, \quad
        \hat\sigma^2 \leftarrow (1 - m)\,\hat\sigma^2 + m\, s^2_B \\
      \texttt{decay}=d\ \text{(flax)}: &
        \hat\mu \leftarrow d\,\hat\mu + (1 - d)\,\mu_B, \quad
        \hat\sigma^2 \leftarrow d\,\hat\sigma^2 + (1 - d)\, s^2_B
    \end{array}

  so ``momentum=0.1`` is ``decay=0.9``; flax's default ``momentum=0.99`` of
  ``nnx.BatchNorm`` is ``decay=0.99`` here. torch's ``momentum=None``
  (a cumulative average) is not offered.

  Precision: statistics and the normalization are computed in float32 for
  ``x`` below 32 bits (bf16, f16) and in ``x``'s dtype otherwise; ``y`` has
  ``x``'s dtype and the running statistics keep their own dtype. The variance
  takes two passes over the data (the corrected two-pass algorithm of Chan,
  Golub & LeVeque, 1983: a mean, then the deviations from it, whose own mean
  corrects the first), never :math:`E[x^2] - E[x]^2`. The new statistics carry
  no gradient.

  Synchronized batch norm: inside ``jax.shard_map`` (or ``pmap``, or ``vmap``
  with an ``axis_name``) over a batch split into equal shards, ``axis_name``
  averages the per-device means and then the deviations' first and second
  moments with ``jax.lax.pmean`` (two all-reduces of :math:`C` and
  :math:`2C` values), and :math:`n` counts the elements on all devices, so every
  device computes what one device computes on the whole batch (to a few ulps:
  the sums are ordered differently). Under plain
  ``jit`` with a sharded batch no ``axis_name`` is needed: XLA inserts the
  reductions.

  Args:
    x: a real floating array with the features on ``axis``.
    scale: :math:`\gamma`, shape ``(C,)``, or ``None`` (no scale).
    bias: :math:`\beta`, shape ``(C,)``, or ``None`` (no bias).
    stats: the running statistics, a :class:`BatchNormStats` of shape-``(C,)``
      arrays (``nnx.BatchStat`` variables are unwrapped); see
      :func:`batch_norm_stats`.
    train: a Python bool: batch statistics and an update (``True``) or the
      running statistics unchanged (``False``).
    momentum: torch's :math:`m \in [0, 1]`, the weight of the new batch.
    decay: flax's :math:`d \in [0, 1]`, the weight of the old average.
    eps: :math:`\epsilon \ge 0`, added to the variance.
    axis: the feature axis (-1 for NHWC / (N, C); 1 for torch's NCHW / NCL).
    axis_name: a mapped axis name (or tuple of names) to average the batch
      statistics over, or ``None`` for this device's batch only.
    running_var: ``"unbiased"`` (torch) or ``"biased"`` (flax), the batch
      variance fed to the running average.

  Returns:
    ``(y, new_stats)``: ``y`` shaped like ``x`` in its dtype, and the updated
    :class:`BatchNormStats` (``stats`` unchanged when ``train=False``).

  Example:
    >>> x = jnp.arange(12.0).reshape(6, 2)
    >>> stats = jopt.nn.batch_norm_stats(2)
    >>> y, stats = jopt.nn.batch_norm(x, None, None, stats, train=True)
    >>> [round(v, 4) for v in y.mean(0).tolist()]      # batch statistics
    [0.0, 0.0]
    >>> [round(v, 4) for v in stats.mean.tolist()]     # 0.9 * 0 + 0.1 * (5, 6)
    [0.5, 0.6]
    >>> y_eval, same = jopt.nn.batch_norm(x, None, None, stats, train=False)
    >>> same is stats
    True

  Reference: Ioffe & Szegedy, *Batch Normalization: Accelerating Deep Network
  Training by Reducing Internal Covariate Shift*, ICML 2015 (Algorithm 1; the
  paper's inference statistics average many batches with the unbiased
  variance, here an exponential moving average). The running-variance and
  ``momentum`` conventions are those of ``torch.nn.BatchNorm1d/2d``; ``decay``
  with ``running_var="biased"`` is ``flax.nnx.BatchNorm``.
  """
  where = "batch_norm: "
  xa = check_float(where, x)
  train = check_train(where, train)
  ax = normalize_axis(where, "axis", axis, xa.ndim)
  c = xa.shape[ax]
  stats = _check_stats(where, stats, c, axis)
  what = f"x with {c} features on axis {axis}"
  scale = check_param(where, "scale", scale, (c,), what)
  bias = check_param(where, "bias", bias, (c,), what)
  check_choice("running_var", running_var, ("unbiased", "biased"), where)
  axis_name = check_axis_name(axis_name, where)
  w_old, w_batch = _ema_weights(where, momentum, decay)
  if is_concrete(eps):
    check_range("eps", eps, 0.0, where=where)

  cdt = stat_dtype(xa)
  bshape = tuple(c if i == ax else 1 for i in range(xa.ndim))
  red = tuple(i for i in range(xa.ndim) if i != ax)
  xc = xa.astype(cdt)
  eps_c = jnp.asarray(eps).astype(cdt)

  if not train:
    mean = stats.mean.astype(cdt)
    var = stats.var.astype(cdt)
    y = (xc - mean.reshape(bshape)) * jax.lax.rsqrt(var.reshape(bshape) + eps_c)
    return affine(y, scale, bias, bshape).astype(xa.dtype), stats

  n = math.prod(xa.shape[i] for i in red)
  if axis_name is not None:
    n *= jax.lax.axis_size(axis_name)
  if n < 2:
    raise ValueError(
        f"{where}x has shape {xa.shape}: training needs more than one value per"
        f" feature (n={n} on axis {axis}), since the batch variance of one value is"
        " 0 and its unbiased estimate divides by n - 1 = 0 (torch refuses this"
        " too). Use a larger batch, or train=False.")
  mean, var, centered = moments(xc, red, axis_name)
  mean, var = mean.reshape(c), var.reshape(c)
  y = centered * jax.lax.rsqrt(var.reshape(bshape) + eps_c)
  y = affine(y, scale, bias, bshape).astype(xa.dtype)

  sdt_m, sdt_v = stats.mean.dtype, stats.var.dtype
  batch_var = var * (n / (n - 1)) if running_var == "unbiased" else var
  new_mean = (_cast(w_old, sdt_m) * stats.mean
              + _cast(w_batch, sdt_m) * mean.astype(sdt_m))
  new_var = (_cast(w_old, sdt_v) * stats.var
             + _cast(w_batch, sdt_v) * batch_var.astype(sdt_v))
  new_stats = BatchNormStats(jax.lax.stop_gradient(new_mean.astype(sdt_m)),
                             jax.lax.stop_gradient(new_var.astype(sdt_v)))
  return y, new_stats
