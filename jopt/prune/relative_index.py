r"""Deep Compression's relative-index sparse format: each non-zero with its gap, bit-packed.

Walking a flattened array, every stored entry carries the number of positions
skipped since the previous stored entry (a ``b``-bit gap) and its value; a gap
too long for ``b`` bits is bridged by filler entries (value 0) every
:math:`2^b` positions. :func:`relative_index_count` counts the stored entries
in closed form (vectorized), :func:`relative_index_encode` /
:func:`relative_index_decode` round-trip the format and
:func:`relative_index_nbytes` gives its exact packed size. They run on the host
on concrete arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["relative_index_count", "relative_index_encode", "relative_index_decode",
           "relative_index_nbytes"]

_WHERE = "relative_index: "


def _index_bits(index_bits: Any) -> int:
  if isinstance(index_bits, bool) or not isinstance(index_bits, (int, np.integer)):
    raise TypeError(f"{_WHERE}index_bits={index_bits!r} must be an integer in 1..8; pass an int.")
  if not 1 <= int(index_bits) <= 8:
    raise ValueError(f"{_WHERE}index_bits={index_bits!r} must be an integer in 1..8"
                     " (Deep Compression uses 5 for dense layers, 8 for convolutions).")
  return int(index_bits)


def _steps(flat: np.ndarray, span: int) -> tuple[np.ndarray, np.ndarray]:
  """Positions of the non-zeros and the fillers stored before each: ``(nz, fillers)``."""
  nz = np.flatnonzero(flat)
  prev = np.concatenate([[-1], nz[:-1]]).astype(np.int64)
  return nz, (nz - prev - 1) // span


def relative_index_count(x: Any, index_bits: int = 5) -> int:
  r"""The number of stored entries :math:`E` of the relative-index format (non-zeros + fillers).

  With the non-zeros at flat positions :math:`i_1 < \dots < i_k` and
  :math:`i_0 = -1`, a gap :math:`g_j = i_j - i_{j-1}` needs
  :math:`\lfloor (g_j - 1) / 2^b \rfloor` fillers before its entry:

  .. math:: E = \sum_{j=1}^{k} \left(1 + \left\lfloor \frac{g_j - 1}{2^b} \right\rfloor\right)

  Args:
    x: an array (flattened row-major).
    index_bits: :math:`b`, bits per gap (1..8).

  Returns:
    :math:`E`, a Python int.

  Example:
    >>> jopt.prune.relative_index_count(np.array([0., 3., 0., 0., 5.]), 1)  # a filler before 5
    3

  Reference: Han et al., *Deep Compression*, ICLR 2016, Sec. 3 and Fig. 2.
  """
  span = 1 << _index_bits(index_bits)
  nz, fillers = _steps(np.asarray(x).reshape(-1), span)
  return int(nz.size + fillers.sum())


def relative_index_encode(x: Any, index_bits: int = 5) -> tuple[np.ndarray, np.ndarray]:
  r"""Deep Compression's sparse format: each non-zero with the gap since the previous one.

  Walking the flattened array, entry :math:`k` stores :math:`d_k` = positions
  since the previous stored entry minus one, :math:`0 \le d_k < 2^{b}`; when
  the gap to the next non-zero is :math:`\ge 2^b` a filler entry (value 0) is
  stored at distance :math:`2^b`, as in Han et al. (Fig. 2):

  .. math:: p_k = p_{k-1} + d_k + 1, \qquad p_0 = -1

  Args:
    x: an array (flattened row-major).
    index_bits: :math:`b`, bits per gap (1..8).

  Returns:
    ``(gaps, values)``: uint8 gaps and the stored values (fillers as 0), of
    :func:`relative_index_count` entries each.

  Example:
    >>> gaps, values = jopt.prune.relative_index_encode(np.array([0., 3., 0., 0., 5.]), 2)
    >>> gaps.tolist(), values.tolist()     # 3 after 1 skipped entry, 5 after 2 more
    ([1, 2], [3.0, 5.0])

  Reference: Han et al., *Deep Compression*, ICLR 2016, Sec. 3 and Fig. 2.
  """
  span = 1 << _index_bits(index_bits)
  flat = np.asarray(x).reshape(-1)
  nz, fillers = _steps(flat, span)
  prev = np.concatenate([[-1], nz[:-1]]).astype(np.int64)
  last_gap = nz - prev - 1 - fillers * span            # the entry's own gap, < span
  per = fillers + 1                                     # entries per non-zero
  total = int(per.sum())
  gaps = np.full(total, span - 1, np.int64)
  values = np.zeros(total, flat.dtype)
  ends = np.cumsum(per) - 1                             # each non-zero is its run's last entry
  gaps[ends] = last_gap
  values[ends] = flat[nz]
  return gaps.astype(np.uint8), values


def relative_index_decode(gaps: np.ndarray, values: np.ndarray,
                          shape: tuple[int, ...]) -> np.ndarray:
  r"""Invert :func:`relative_index_encode`: position :math:`p_k = p_{k-1} + d_k + 1`.

  .. math:: w_{p_k} = v_k, \quad w_i = 0 \text{ elsewhere}

  Args:
    gaps: the uint8 gaps.
    values: the stored values.
    shape: the dense shape.

  Returns:
    The dense NumPy array.

  Example:
    >>> g, v = jopt.prune.relative_index_encode(np.array([0., 3., 0., 0., 5.]), 2)
    >>> jopt.prune.relative_index_decode(g, v, (5,)).tolist()
    [0.0, 3.0, 0.0, 0.0, 5.0]

  Reference: Han et al., ICLR 2016, Fig. 2.
  """
  out = np.zeros(int(np.prod(shape, dtype=np.int64)), values.dtype)
  pos = np.cumsum(np.asarray(gaps).astype(np.int64) + 1) - 1
  out[pos] = values
  return out.reshape(shape)


def relative_index_nbytes(x: Any, value_bits: int, index_bits: int = 5) -> int:
  r"""True bytes of :func:`relative_index_encode` with ``value_bits``-bit codes, bit-packed.

  .. math:: \text{bytes} = \left\lceil E\,(b_v + b_i) / 8 \right\rceil

  with :math:`E` the stored entries (:func:`relative_index_count`: non-zeros
  plus fillers). A codebook or scales are counted separately by the caller.

  Args:
    x: the sparse array.
    value_bits: bits per value code :math:`b_v` (e.g. 5 for 32 shared weights,
      32 for float32 values).
    index_bits: bits per gap :math:`b_i`.

  Returns:
    Bytes, an int.

  Example:
    >>> jopt.prune.relative_index_nbytes(np.array([0., 3., 0., 0., 5.]), 5, 2)  # 2 x 7 bits
    2

  Reference: Han et al., ICLR 2016 (5-bit relative indices for
  fully connected layers; its LeNet weights take 6 bits).
  """
  entries = relative_index_count(x, index_bits)
  return (entries * (int(value_bits) + int(index_bits)) + 7) // 8
