"""Post-training calibration: quantization ranges from sample batches.

:func:`calibrate` takes the samples at once (a weight, or a list of activation
batches) and returns a :class:`QuantRange` that :func:`jopt.quant.quantize`
accepts as ``clip_range``. For activations seen one batch at a time, a running
observer (:func:`observer_init`, :func:`observer_update`, :func:`observer_range`)
keeps the min / max and, optionally, a histogram in a jit-able state.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt._core import validate
from jopt._core.tree import compute_dtype
from jopt.quant import _layout
from jopt.quant.linear import SCHEMES, linear_codes, linear_values, scale_and_zero_point

__all__ = ["QuantRange", "calibrate", "mse_clip", "ObserverState", "observer_init",
           "observer_update", "observer_range", "CALIBRATIONS"]

CALIBRATIONS = ("minmax", "percentile", "mse")


class QuantRange(NamedTuple):
  """A quantization range per tensor (0-d arrays) or per channel (1-D arrays).

  Attributes:
    min: the lower end of the range.
    max: the upper end of the range.
  """

  min: jax.Array
  max: jax.Array


QuantRange.__module__ = "jopt.quant"


class ObserverState(NamedTuple):
  """State of the running observer (:func:`observer_update`); arrays only.

  Attributes:
    count: int32, the number of batches seen.
    min: running minimum, ``()`` per tensor or ``(C,)`` per channel (``+inf`` before
      the first batch).
    max: running maximum (``-inf`` before the first batch).
    histogram: ``(bins,)`` counts of the values over ``[-limit, limit]``; a
      one-element placeholder ``(1,)`` when no histogram is kept (``bins`` is a
      multiple of 4, so this is unambiguous; a zero-size array would not
      checkpoint: orbax refuses to save arrays of size 0).
    limit: the histogram's half-width; it doubles (merging pairs of bins) when a
      batch exceeds it, so no value is ever clipped.
  """

  count: jax.Array
  min: jax.Array
  max: jax.Array
  histogram: jax.Array
  limit: jax.Array


ObserverState.__module__ = "jopt.quant"


def _fake(x, lo, hi, bits, scheme):
  s, z = scale_and_zero_point(lo, hi, bits=bits, scheme=scheme)
  return linear_values(linear_codes(x, s, z, bits=bits, scheme=scheme), s, z)


def mse_clip(values: Any, lo: Any, hi: Any, *, bits: int = 8, scheme: str = "symmetric",
             grid_size: int = 100, weights: Any = None) -> QuantRange:
  r"""MSE-optimal clipping: the ratio of the range that minimizes the quantization error.

  For each row of ``values`` (a block), with ratios
  :math:`\alpha_i = i / G`, :math:`i = 1..G`, and :math:`Q_r` the linear
  quantize-dequantize with range :math:`r`:

  .. math::
    \alpha^* = \arg\min_{\alpha_i} \sum_j w_j\,\big(v_j - Q_{[\alpha_i lo,\ \alpha_i hi]}(v_j)\big)^2,
    \qquad \text{range} = [\alpha^* lo,\ \alpha^* hi]

  (ties to the smallest ratio).

  Args:
    values: ``(num_blocks, n)`` samples (or a 1-D array, one block).
    lo: ``(num_blocks,)`` lower ends of the full range (e.g. the min).
    hi: ``(num_blocks,)`` upper ends of the full range.
    bits: bits of the quantizer, 2..8.
    scheme: ``"symmetric"`` or ``"asymmetric"``.
    grid_size: :math:`G`, the number of ratios tried.
    weights: optional ``(num_blocks, n)`` weights :math:`w_j` (histogram counts).

  Returns:
    A :class:`QuantRange` of ``lo``'s shape.

  Example:
    >>> v = jnp.concatenate([jnp.linspace(-1.0, 1.0, 9999), jnp.array([20.0])])
    >>> r = jopt.quant.mse_clip(v, -20.0, 20.0, bits=4)
    >>> float(r.max) < 20.0
    True

  Reference: Nagel et al., *A White Paper on Neural Network Quantization*,
  2021, §3.5 (MSE range setting by a grid search).
  """
  v = jnp.asarray(values)
  one = v.ndim == 1
  v = v[None] if one else v
  w = jnp.ones_like(v) if weights is None else jnp.asarray(weights).astype(v.dtype).reshape(v.shape)
  lo = jnp.asarray(lo).astype(v.dtype).reshape(-1)
  hi = jnp.asarray(hi).astype(v.dtype).reshape(-1)
  g = validate.check_positive_int("grid_size", grid_size, "mse_clip: ")
  alphas = jnp.arange(1, g + 1, dtype=v.dtype) / g

  def err(a):
    fq = _fake(v, (a * lo)[:, None], (a * hi)[:, None], bits, scheme)
    return jnp.sum(w * (v - fq) ** 2, axis=1)

  errors = jax.lax.map(err, alphas)            # (G, num_blocks)
  best = alphas[jnp.argmin(errors, axis=0)]
  out = QuantRange(best * lo, best * hi)
  return QuantRange(out.min[0], out.max[0]) if one else out


def _stack(samples: Any, where: str) -> jax.Array:
  if isinstance(samples, (list, tuple)):
    if not samples:
      raise ValueError(f"{where}samples is empty; pass an array or a non-empty list of"
                       " batches.")
    arrs = [jnp.asarray(s) for s in samples]
    tails = {a.shape[1:] for a in arrs}
    if len(tails) > 1 or arrs[0].ndim == 0:
      raise ValueError(f"{where}samples are batches of shapes"
                       f" {[a.shape for a in arrs]}; they must agree after the leading"
                       " (batch) axis, which is concatenated.")
    x = jnp.concatenate(arrs, axis=0)
  else:
    x = jnp.asarray(samples)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"{where}samples must be floating, got dtype {x.dtype}.")
  _layout.check_finite("samples", x, where)
  return x.astype(compute_dtype(x.dtype, "samples"))


def calibrate(samples: Any, method: str = "minmax", *, bits: int = 8,
              scheme: str = "symmetric", granularity: str = "tensor", axis: int = -1,
              percentile: float = 99.99, grid_size: int = 100) -> QuantRange:
  r"""A quantization range from sample data: min-max, percentile or MSE-optimal clipping.

  Per block (the tensor, or each channel along ``axis``):

  * ``"minmax"``: :math:`[\min x, \max x]`.
  * ``"percentile"``: symmetric :math:`[-P_p(|x|), P_p(|x|)]`; asymmetric
    :math:`[P_{100-p}(x), P_p(x)]` (NumPy's linear-interpolation percentiles).
  * ``"mse"``: the min-max range scaled by the ratio
    :math:`\alpha \in \{1/G, 2/G, \dots, 1\}` that minimizes
    :math:`\|x - Q(x)\|^2` (:func:`mse_clip`, :math:`G` = ``grid_size``).

  Args:
    samples: an array, or a list of batches concatenated along axis 0.
    method: ``"minmax"``, ``"percentile"`` or ``"mse"``.
    bits: bits of the quantizer the range is for (``"mse"``), 2..8.
    scheme: ``"symmetric"`` or ``"asymmetric"``.
    granularity: ``"tensor"`` or ``"channel"``.
    axis: the channel axis (``"channel"``).
    percentile: :math:`p` in (0, 100] (``"percentile"``).
    grid_size: :math:`G`, ratios tried (``"mse"``).

  Returns:
    A :class:`QuantRange` (0-d per tensor, ``(C,)`` per channel).

  Example:
    >>> r = jopt.quant.calibrate([jnp.array([[-1.0, 2.0]]), jnp.array([[0.5, 3.0]])])
    >>> float(r.min), float(r.max)
    (-1.0, 3.0)

  Reference: Nagel et al., *A White Paper on Neural Network Quantization*,
  2021, §3.5 (min-max, percentile and MSE range setting).
  """
  where = "calibrate: "
  validate.check_choice("method", method, CALIBRATIONS, where)
  validate.check_choice("scheme", scheme, SCHEMES, where)
  validate.check_choice("granularity", granularity, ("tensor", "channel"), where)
  bits = _layout.check_bits(bits, where)
  validate.check_range("percentile", percentile, 0.0, 100.0, low_open=True, where=where)
  grid_size = validate.check_positive_int("grid_size", grid_size, where)
  x = _stack(samples, where)
  layout = _layout.make_layout(x.shape, granularity, axis, None, where)
  xb = _layout.to_blocks(x, layout)
  if method == "percentile":
    if scheme == "symmetric":
      hi = jnp.percentile(jnp.abs(xb), percentile, axis=1)
      lo = -hi
    else:
      lo = jnp.percentile(xb, 100.0 - percentile, axis=1)
      hi = jnp.percentile(xb, percentile, axis=1)
  else:
    lo, hi = jnp.min(xb, axis=1), jnp.max(xb, axis=1)
    if method == "mse":
      if scheme == "symmetric":
        hi = jnp.maximum(jnp.abs(lo), jnp.abs(hi))
        lo = -hi
      lo, hi = mse_clip(xb, lo, hi, bits=bits, scheme=scheme, grid_size=grid_size)
  return QuantRange(lo.reshape(layout.param_shape), hi.reshape(layout.param_shape))


def observer_init(num_channels: int | None = None, *, bins: int = 0,
                  dtype: Any = jnp.float32) -> ObserverState:
  r"""The empty state of a running min / max (and histogram) observer.

  .. math:: m_0 = +\infty,\quad M_0 = -\infty,\quad h_0 = 0

  Args:
    num_channels: None for one range per tensor, or the number of channels
      :math:`C` for one per channel.
    bins: histogram bins (a multiple of 4; 0 for none). Per tensor only.
    dtype: the dtype of the min, max, limit and counts.

  Returns:
    An :class:`ObserverState`.

  Example:
    >>> jopt.quant.observer_init(bins=8).histogram.shape
    (8,)

  Reference: the min-max and histogram observers of PyTorch's
  ``torch.ao.quantization`` (``MinMaxObserver``, ``HistogramObserver``).
  """
  where = "observer_init: "
  shape = () if num_channels is None else (validate.check_positive_int(
      "num_channels", num_channels, where),)
  bins = validate.static_int("bins", bins, where, 0)
  if bins % 4:
    raise ValueError(f"{where}bins={bins} must be a multiple of 4 (the histogram"
                     " doubles its range by merging pairs of bins around zero).")
  if bins and shape:
    raise ValueError(f"{where}bins={bins} with num_channels={num_channels}: the"
                     " histogram is kept per tensor; pass bins=0 for a per-channel"
                     " observer or num_channels=None.")
  return ObserverState(jnp.zeros((), jnp.int32), jnp.full(shape, jnp.inf, dtype),
                       jnp.full(shape, -jnp.inf, dtype), jnp.zeros((bins or 1,), dtype),
                       jnp.zeros((), dtype))


def _bins(histogram: jax.Array) -> int:
  """The number of histogram bins, 0 for the one-element 'no histogram' placeholder."""
  n = histogram.shape[0]
  return n if n >= 4 else 0


def _merge(h: jax.Array) -> jax.Array:
  """The histogram over twice the range: pairs of bins summed, in the middle half."""
  b = h.shape[0]
  return jnp.zeros_like(h).at[b // 4: 3 * b // 4].set(h.reshape(b // 2, 2).sum(1))


def observer_update(state: ObserverState, x: Any, *, axis: int = -1) -> ObserverState:
  r"""Fold one batch into the observer: running min / max and the histogram.

  .. math::
    m \leftarrow \min(m, \min x), \quad M \leftarrow \max(M, \max x), \quad
    h \leftarrow h + \operatorname{hist}(x; [-L, L])

  where :math:`L` starts at the first batch's largest magnitude and doubles
  (summing pairs of bins) while a batch exceeds it. Jit-able.

  Args:
    state: an :class:`ObserverState`.
    x: a batch; per channel, ``x.shape[axis]`` must equal the channel count.
    axis: the channel axis (per-channel observers).

  Returns:
    The new :class:`ObserverState`.

  Example:
    >>> s = jopt.quant.observer_update(jopt.quant.observer_init(), jnp.array([-1.0, 2.0]))
    >>> float(s.min), float(s.max), int(s.count)
    (-1.0, 2.0, 1)

  Reference: PyTorch's ``MinMaxObserver`` and ``HistogramObserver``
  (``torch.ao.quantization``); here the histogram range grows by doubling.
  """
  where = "observer_update: "
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"{where}x must be floating, got dtype {x.dtype}.")
  _layout.check_finite("x", x, where)
  x = x.astype(state.min.dtype)
  if state.min.ndim:
    layout = _layout.make_layout(x.shape, "channel", axis, None, where)
    if x.shape[layout.axis] != state.min.shape[0]:
      raise ValueError(f"{where}x.shape[{layout.axis}]={x.shape[layout.axis]}, but the"
                       f" observer has {state.min.shape[0]} channels; pass the channel"
                       " axis as axis=.")
    xb = _layout.to_blocks(x, layout)
  else:
    xb = x.reshape(1, -1)
  lo = jnp.minimum(state.min, jnp.min(xb, axis=1).reshape(state.min.shape))
  hi = jnp.maximum(state.max, jnp.max(xb, axis=1).reshape(state.max.shape))
  hist, limit = state.histogram, state.limit
  bins = _bins(hist)
  if bins:
    amax = jnp.max(jnp.abs(xb))
    limit = jnp.where(limit > 0, limit, jnp.where(amax > 0, amax, jnp.ones_like(amax)))
    hist, limit = jax.lax.while_loop(lambda c: amax > c[1],
                                     lambda c: (_merge(c[0]), c[1] * 2), (hist, limit))
    idx = jnp.floor((xb.reshape(-1) + limit) / (2 * limit) * bins)
    idx = jnp.clip(idx, 0, bins - 1).astype(jnp.int32)
    hist = hist.at[idx].add(jnp.ones((), hist.dtype))
  return ObserverState(state.count + 1, lo, hi, hist, limit)


def _hist_quantile(h: jax.Array, edges_lo: jax.Array, width: jax.Array, q: jax.Array):
  cdf = jnp.cumsum(h) / jnp.sum(h)
  i = jnp.clip(jnp.searchsorted(cdf, q, side="left"), 0, h.shape[0] - 1)
  prev = jnp.where(i > 0, cdf[jnp.maximum(i - 1, 0)], 0)
  frac = jnp.clip((q - prev) / jnp.maximum(cdf[i] - prev, 1e-30), 0, 1)
  return edges_lo + (i.astype(h.dtype) + frac) * width


def observer_range(state: ObserverState, method: str = "minmax", *, bits: int = 8,
                   scheme: str = "symmetric", percentile: float = 99.99,
                   grid_size: int = 100) -> QuantRange:
  r"""The quantization range an observer's state gives: min-max, percentile or MSE.

  ``"minmax"`` is :math:`[m, M]`. ``"percentile"`` and ``"mse"`` need a
  histogram: percentiles interpolate linearly inside a bin (symmetric on the
  histogram of :math:`|x|`), and MSE is :func:`mse_clip` on the bin centres
  weighted by the counts, starting from :math:`[m, M]`.

  Args:
    state: an :class:`ObserverState` that has seen at least one batch.
    method: ``"minmax"``, ``"percentile"`` or ``"mse"``.
    bits: bits of the quantizer (``"mse"``).
    scheme: ``"symmetric"`` or ``"asymmetric"``.
    percentile: :math:`p` in (0, 100].
    grid_size: ratios tried (``"mse"``).

  Returns:
    A :class:`QuantRange`.

  Example:
    >>> s = jopt.quant.observer_update(jopt.quant.observer_init(), jnp.array([-1.0, 2.0]))
    >>> float(jopt.quant.observer_range(s).max)
    2.0

  Reference: Nagel et al., *A White Paper on Neural Network Quantization*,
  2021, §3.5; PyTorch's ``HistogramObserver``.
  """
  where = "observer_range: "
  validate.check_choice("method", method, CALIBRATIONS, where)
  validate.check_choice("scheme", scheme, SCHEMES, where)
  bits = _layout.check_bits(bits, where)
  validate.check_range("percentile", percentile, 0.0, 100.0, low_open=True, where=where)
  if validate.is_concrete(state.count) and int(state.count) == 0:
    raise ValueError(f"{where}state has seen no batch yet; call observer_update first.")
  if method == "minmax":
    return QuantRange(state.min, state.max)
  h = state.histogram
  b = _bins(h)
  if b == 0:
    raise ValueError(f"{where}method={method!r} needs a histogram; make the observer"
                     " with observer_init(bins=...) (e.g. 2048), or use method='minmax'.")
  width = 2 * state.limit / b
  amax = jnp.maximum(jnp.abs(state.min), jnp.abs(state.max))
  if method == "percentile":
    if scheme == "symmetric":
      folded = h[b // 2:] + h[:b // 2][::-1]
      top = _hist_quantile(folded, jnp.zeros_like(width), width, percentile / 100.0)
      top = jnp.minimum(top, amax)
      return QuantRange(-top, top)
    lo = _hist_quantile(h, -state.limit, width, (100.0 - percentile) / 100.0)
    hi = _hist_quantile(h, -state.limit, width, percentile / 100.0)
    return QuantRange(jnp.maximum(lo, state.min), jnp.minimum(hi, state.max))
  centres = -state.limit + (jnp.arange(b, dtype=h.dtype) + 0.5) * width
  lo, hi = (-amax, amax) if scheme == "symmetric" else (state.min, state.max)
  return mse_clip(centres, lo, hi, bits=bits, scheme=scheme, grid_size=grid_size,
                  weights=h)
