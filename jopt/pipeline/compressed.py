r"""What the pipeline carries from stage to stage: float params, masks and a quantization spec.

A :class:`CompressedModel` is the current model (its apply function), its float
parameters, the pruning masks (a tree of ``bool`` arrays, or None before any
Prune stage) and the quantization spec (a :class:`QuantSpec`, or None before
any Quantize stage). The model the pipeline *stores* and evaluates is

.. math:: \hat\theta = \operatorname{dequantize}(Q(m \odot \theta))

with :math:`Q` the spec's quantizer on the quantized leaves (floating leaves
with ``ndim >= 2``: kernels, embeddings, filters; biases and norms stay float)
and the identity on the others. Training stages see the same values in the
forward pass (:meth:`CompressedModel.forward_params`: quantize-dequantize with a
straight-through gradient), so training and evaluation agree.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jopt.quant.qarray import QuantizedArray
from jopt.quant.qat import fake_quant
from jopt.quant.quantizer import quantize

__all__ = ["QuantSpec", "CompressedModel", "quantizes"]


def quantizes(leaf: Any) -> bool:
  """True for the leaves a :class:`QuantSpec` quantizes: floating with ``ndim >= 2``."""
  return bool(jnp.issubdtype(jnp.result_type(leaf), jnp.floating) and jnp.ndim(leaf) >= 2)


@dataclasses.dataclass(frozen=True)
class QuantSpec:
  r"""How the pipeline quantizes the weight matrices: :func:`jopt.quant.quantize` keywords.

  Every floating leaf with ``ndim >= 2`` is stored as
  ``jopt.quant.quantize(w, bits, method=..., granularity=..., axis=...,
  group_size=..., scheme=...)``; k-means always runs with ``keep_zeros=True``
  (code 0 is an exact 0.0, the non-zeros share :math:`2^b - 1` centroids), so
  pruned weights stay exactly zero whatever the stage order.

  Attributes:
    bits: bits per code, 2..8 (4 for ``"nf4"``).
    method: ``"linear"``, ``"kmeans"``, ``"nf4"`` or ``"log2"``.
    granularity: ``"tensor"``, ``"channel"`` or ``"group"``.
    axis: the channel axis, or the axis groups run along.
    group_size: entries per group (``granularity="group"``).
    scheme: ``"symmetric"`` / ``"asymmetric"`` for linear; None otherwise.
  """

  bits: int
  method: str = "linear"
  granularity: str = "tensor"
  axis: int = -1
  group_size: int | None = None
  scheme: str | None = None

  def kwargs(self) -> dict[str, Any]:
    """The keywords of :func:`jopt.quant.quantize` (``keep_zeros`` for k-means)."""
    kw: dict[str, Any] = {"method": self.method, "granularity": self.granularity,
                          "axis": self.axis, "group_size": self.group_size}
    if self.method == "linear":
      kw["scheme"] = self.scheme or "symmetric"
    if self.method == "kmeans":
      kw["keep_zeros"] = True
    return kw

  def quantize(self, leaf: Any) -> QuantizedArray:
    """The stored :class:`jopt.quant.QuantizedArray` of one (masked) leaf."""
    return quantize(leaf, self.bits, **self.kwargs())

  def quantize_jit(self, leaf: Any) -> QuantizedArray:
    """:meth:`quantize`, compiled once per spec (and leaf shape)."""
    return _compiled(self)(leaf)

  def fake(self, leaf: jax.Array) -> jax.Array:
    r"""Quantize-dequantize in the forward pass, straight-through gradient backward.

    Linear: :func:`jopt.quant.fake_quant` (bit for bit the stored values). Other
    methods: :math:`\mathrm{sg}(\hat w) + (w - \mathrm{sg}(w))`, whose forward value is
    exactly :math:`\hat w` and whose gradient is the identity.
    """
    if self.method == "linear":
      return fake_quant(leaf, self.bits, scheme=self.scheme or "symmetric",
                        granularity=self.granularity, axis=self.axis,
                        group_size=self.group_size)
    stored = jax.lax.stop_gradient(self.quantize(jax.lax.stop_gradient(leaf)).dequantize())
    return stored + (leaf - jax.lax.stop_gradient(leaf))

  def to_dict(self) -> dict[str, Any]:
    """A JSON-ready dict (see :meth:`from_dict`)."""
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "QuantSpec":
    """The spec back from :meth:`to_dict`."""
    return cls(**d)


QuantSpec.__module__ = "jopt.pipeline"


@jax.jit
def _dequantize(q: QuantizedArray) -> jax.Array:
  return q.dequantize()


@functools.lru_cache(maxsize=64)
def _compiled(spec: QuantSpec) -> Callable[[Any], QuantizedArray]:
  return jax.jit(spec.quantize)


def _masked(params: Any, masks: Any) -> Any:
  if masks is None:
    return params
  return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros((), jnp.result_type(p))),
                      params, masks)


@dataclasses.dataclass(frozen=True)
class CompressedModel:
  r"""The pipeline's model at one point: apply function, float params, masks, quantization.

  .. math:: \hat\theta = \operatorname{dequantize}(Q(m \odot \theta))

  Attributes:
    apply: ``apply(params, x) -> logits``.
    params: the float parameters (pruned entries are exactly 0.0).
    masks: a tree of ``bool`` arrays like ``params`` (``False`` = pruned), or None.
    quant: a :class:`QuantSpec`, or None for float storage.

  Example:
    >>> from jopt import pipeline as pl
    >>> params = {"w": jnp.array([[0.5, -1.0], [0.25, 2.0]]), "b": jnp.ones(2)}
    >>> masks = {"w": jnp.array([[True, True], [False, True]]), "b": jnp.ones(2, bool)}
    >>> cm = pl.CompressedModel(lambda p, x: x @ p["w"] + p["b"], params, masks,
    ...                         pl.QuantSpec(bits=2, method="kmeans"))
    >>> print(np.asarray(cm.stored_params()["w"]).round(4))  # 3 non-zeros, 3 centroids
    [[ 0.5 -1. ]
     [ 0.   2. ]]
    >>> cm.quantized_params()["w"].bits
    2

    After a run, ``report.model`` is the final one: ``report.model.stored_params()``
    is what ``report.stages[-1]`` evaluated.
  """

  apply: Callable[[Any, Any], Any]
  params: Any
  masks: Any = None
  quant: QuantSpec | None = None

  def masked_params(self) -> Any:
    """The float params with the masks applied (:math:`m \\odot \\theta`)."""
    return _masked(self.params, self.masks)

  def quantized_params(self) -> Any:
    """The stored tree: :class:`jopt.quant.QuantizedArray` leaves where quantized, else arrays."""
    params = self.masked_params()
    if self.quant is None:
      return params
    spec = self.quant
    return jax.tree.map(lambda p: spec.quantize_jit(p) if quantizes(p) else p, params)

  def stored_params(self, quantized: Any = None) -> Any:
    """The dense tree the pipeline evaluates: masked, quantized, dequantized.

    ``quantized``: :meth:`quantized_params`' output, when already computed.
    """
    tree = self.quantized_params() if quantized is None else quantized
    is_q = lambda x: isinstance(x, QuantizedArray)  # noqa: E731
    return jax.tree.map(lambda x: _dequantize(x) if is_q(x) else x, tree, is_leaf=is_q)

  def forward_params(self, params: Any) -> Any:
    """``params`` as a training step's forward pass sees them: fake-quantized (STE) per the spec."""
    if self.quant is None:
      return params
    spec = self.quant
    return jax.tree.map(lambda p: spec.fake(p) if quantizes(p) else p, params)

  def replace(self, **changes: Any) -> "CompressedModel":
    """A copy with some fields changed (``dataclasses.replace``)."""
    return dataclasses.replace(self, **changes)


CompressedModel.__module__ = "jopt.pipeline"


def host(tree: Any) -> Any:
  """Every array leaf as a NumPy array (for byte counts and JSON)."""
  return jax.tree.map(np.asarray, tree)
