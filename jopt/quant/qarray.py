r"""The quantized array: packed integer codes plus the parameters that decode them.

Storage. A :class:`QuantizedArray` stores the codes of all ``n`` entries as one
little-endian bit stream of ``bits`` bits per code (:func:`pack_bits`): code
``i`` occupies stream bits ``[i*bits, (i+1)*bits)``, and byte ``j`` holds
stream bits ``[8j, 8j+8)``, least significant first. So 4-bit codes go two to
a byte (code ``2j`` in the low nibble of byte ``j``), 2-bit codes four to a
byte, and 3-, 5-, 6- and 7-bit codes are not rounded up to a byte. Beside the
codes it stores, per block (tensor, channel or group), a scale, a ``uint8``
zero point (asymmetric linear only) and a codebook of ``2 ** bits`` centroids
(k-means only). The true size is

.. math::
  \text{nbytes} = \left\lceil \frac{n\,b}{8} \right\rceil
  + N_{\text{blocks}}\,(s + [\text{asym}] + [\text{kmeans}]\,2^b s)

with :math:`s` the bytes of one scale (4 for float32). The NF4 levels and the
power-of-two grid are fixed by the method and not stored.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt.quant import _layout
from jopt.quant.linear import linear_values
from jopt.quant.nonlinear import log2_values, nf4_values

__all__ = ["QuantizedArray", "pack_bits", "unpack_bits", "packed_nbytes"]


def packed_nbytes(size: int, bits: int) -> int:
  r"""The bytes of ``size`` codes of ``bits`` bits in a packed bit stream.

  .. math:: \lceil n\,b / 8 \rceil

  Args:
    size: the number of codes :math:`n`.
    bits: bits per code :math:`b`.

  Returns:
    A Python int.

  Example:
    >>> jopt.quant.packed_nbytes(5, 4), jopt.quant.packed_nbytes(8, 3)
    (3, 3)

  Reference: the packed storage of QLoRA's and bitsandbytes' 4-bit tensors
  (Dettmers et al., 2023), generalized to any bit width.
  """
  return -(-int(size) * int(bits) // 8)


def pack_bits(codes: Any, bits: int) -> jax.Array:
  r"""Pack unsigned ``bits``-bit codes into a little-endian ``uint8`` bit stream.

  .. math:: \text{byte}_j = \sum_{t=0}^{7} 2^t\,\beta_{8j+t}, \qquad
    \beta_{ib + r} = \lfloor u_i / 2^r \rfloor \bmod 2

  Args:
    codes: integers in :math:`[0, 2^b - 1]` (any shape; flattened row-major).
    bits: bits per code, 1..8.

  Returns:
    A 1-D ``uint8`` array of :func:`packed_nbytes` bytes (the last one zero-padded).

  Example:
    >>> jopt.quant.pack_bits(jnp.array([1, 2, 15]), 4)
    Array([33, 15], dtype=uint8)

  Reference: the nibble packing of bitsandbytes' 4-bit storage (Dettmers et
  al., *QLoRA*, 2023), here for any bit width.
  """
  bits = _layout.check_bits(bits, "pack_bits: ", 1, 8)
  flat = jnp.asarray(codes).reshape(-1).astype(jnp.uint8)
  if bits == 8:
    return flat
  shifts = jnp.arange(bits, dtype=jnp.uint8)
  stream = ((flat[:, None] >> shifts) & 1).reshape(-1)
  stream = jnp.pad(stream, (0, (-stream.shape[0]) % 8))
  weights = jnp.arange(8, dtype=jnp.uint8)
  return jnp.sum(stream.reshape(-1, 8) << weights, axis=1, dtype=jnp.uint8)


def unpack_bits(packed: Any, bits: int, size: int) -> jax.Array:
  r"""Unpack the first ``size`` codes of ``bits`` bits from a :func:`pack_bits` stream.

  .. math:: u_i = \sum_{r=0}^{b-1} 2^r\,\beta_{ib + r}

  Args:
    packed: the ``uint8`` stream.
    bits: bits per code, 1..8.
    size: the number of codes to read.

  Returns:
    A 1-D ``uint8`` array of ``size`` codes.

  Example:
    >>> jopt.quant.unpack_bits(jnp.array([33, 15], jnp.uint8), 4, 3)
    Array([ 1,  2, 15], dtype=uint8)

  Reference: the inverse of :func:`pack_bits`.
  """
  bits = _layout.check_bits(bits, "unpack_bits: ", 1, 8)
  packed = jnp.asarray(packed).astype(jnp.uint8).reshape(-1)
  if bits == 8:
    return packed[:size]
  stream = ((packed[:, None] >> jnp.arange(8, dtype=jnp.uint8)) & 1).reshape(-1)
  stream = stream[:size * bits].reshape(size, bits)
  return jnp.sum(stream << jnp.arange(bits, dtype=jnp.uint8), axis=1, dtype=jnp.uint8)


@jax.tree_util.register_pytree_node_class
class QuantizedArray:
  """A quantized array: packed codes, per-block scales, zero points or a codebook.

  A registered pytree: its children are the arrays actually stored
  (``packed``, ``scale``, ``zero_point`` or None, ``codebook`` or None); the
  shape, dtype, bits, method, scheme and block layout are static metadata, so
  a ``QuantizedArray`` passes through ``jit``, ``tree.map`` and checkpointers.
  Make one with :func:`jopt.quant.quantize`.

  Attributes:
    packed: the ``uint8`` bit stream of codes (see the module docstring).
    scale: per-block scales, shape ``() / (C,) / group shape`` (None for k-means).
    zero_point: ``uint8`` zero points (asymmetric linear), else None.
    codebook: per-block centroids, the scale's shape plus ``(2**bits,)``
      (k-means), else None.
    shape, dtype, bits, method, scheme, granularity, axis, group_size: metadata.
  """

  def __init__(self, packed, scale, zero_point, codebook, *, shape, dtype, bits, method,
               scheme, granularity, axis, group_size):
    self.packed = packed
    self.scale = scale
    self.zero_point = zero_point
    self.codebook = codebook
    self.shape = tuple(shape)
    self.dtype = jnp.dtype(dtype)
    self.bits = int(bits)
    self.method = method
    self.scheme = scheme
    self.granularity = granularity
    self.axis = axis
    self.group_size = group_size

  # -- pytree ----------------------------------------------------------------
  def _meta(self):
    return (self.shape, self.dtype, self.bits, self.method, self.scheme,
            self.granularity, self.axis, self.group_size)

  def tree_flatten(self):
    return (self.packed, self.scale, self.zero_point, self.codebook), self._meta()

  @classmethod
  def tree_unflatten(cls, meta, children):
    names = ("shape", "dtype", "bits", "method", "scheme", "granularity", "axis",
             "group_size")
    return cls(*children, **dict(zip(names, meta)))

  # -- views -----------------------------------------------------------------
  @property
  def layout(self) -> _layout.Layout:
    return _layout.Layout(self.shape, self.granularity, self.axis, self.group_size)

  @property
  def size(self) -> int:
    return int(np.prod(self.shape, dtype=np.int64))

  @property
  def ndim(self) -> int:
    return len(self.shape)

  @property
  def stored_codes(self) -> jax.Array:
    """The unsigned codes as stored (before any offset), int32, shaped like the array."""
    u = unpack_bits(self.packed, self.bits, self.size)
    return u.astype(jnp.int32).reshape(self.shape)

  @property
  def codes(self) -> jax.Array:
    """The integer codes, int32, shaped like the array.

    Signed in :math:`[-(2^{b-1}-1), 2^{b-1}-1]` for symmetric linear; the
    unsigned stored code otherwise (asymmetric codes, sign-and-exponent codes,
    codebook or NF4 indices).
    """
    u = self.stored_codes
    if self.method == "linear" and self.scheme == "symmetric":
      return u - (2 ** (self.bits - 1) - 1)
    return u

  @property
  def nbytes(self) -> int:
    """The bytes actually stored: packed codes, scales, zero points and codebook."""
    leaves = [self.packed, self.scale, self.zero_point, self.codebook]
    return int(sum(int(np.prod(a.shape, dtype=np.int64)) * jnp.dtype(a.dtype).itemsize
                   for a in leaves if a is not None))

  def dequantize(self) -> jax.Array:
    """The array the codes stand for, in the original dtype and shape."""
    layout = self.layout
    q = _layout.to_blocks(self.codes, layout)
    s = None if self.scale is None else _layout.params_to_blocks(self.scale, layout)[:, None]
    if self.method == "linear":
      z = 0 if self.zero_point is None else \
          _layout.params_to_blocks(self.zero_point, layout)[:, None]
      v = linear_values(q, s, z)
    elif self.method == "log2":
      v = log2_values(q, s, bits=self.bits)
    elif self.method == "nf4":
      v = nf4_values(q, s)
    else:
      book = _layout.params_to_blocks(self.codebook, layout, trailing=1)
      v = jnp.take_along_axis(book, q, axis=1)
    return _layout.from_blocks(v, layout).astype(self.dtype)

  def __repr__(self) -> str:
    extra = f", scheme={self.scheme!r}" if self.method == "linear" else ""
    if self.granularity == "group":
      extra += f", axis={self.axis}, group_size={self.group_size}"
    elif self.granularity == "channel":
      extra += f", axis={self.axis}"
    try:
      size = f", nbytes={self.nbytes}"
    except Exception:  # pylint: disable=broad-except
      size = ""
    return (f"QuantizedArray(shape={self.shape}, dtype={self.dtype.name},"
            f" bits={self.bits}, method={self.method!r}{extra},"
            f" granularity={self.granularity!r}{size})")


QuantizedArray.__module__ = "jopt.quant"
