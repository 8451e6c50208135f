r"""Quantization-aware training: fake quantization with a clipped straight-through estimator.

:func:`fake_quant` rounds an array onto the grid :func:`jopt.quant.quantize`
would use and returns the dequantized values in the input's dtype -- bit for
bit ``quantize(x, ...).dequantize()`` for the linear quantizer -- while its
gradient is the *clipped* straight-through estimator (STE): 1 inside the
clipping range, 0 outside. :func:`fake_quant_params` does the same to a whole
parameter tree, with the rules by path of :func:`jopt.quant.quantize_params`,
so QAT is one call inside the loss::

    loss = loss_fn(jopt.quant.fake_quant_params(params, {"*/kernel": 4}), batch)

Activations. Fake-quantize activations inside the model function with a range
from the running observer of :mod:`jopt.quant.calibrate`: keep an
:class:`~jopt.quant.ObserverState` per quantized activation beside the params
(it is a pytree of arrays, so it jit-s and checkpoints), fold each batch in with
``observer_update`` (outside the gradient, e.g. on ``jax.lax.stop_gradient(h)``),
and quantize with the range it gives::

    h = x @ w1 + b1
    obs = jopt.quant.observer_update(obs, jax.lax.stop_gradient(h))
    h = jopt.quant.fake_quant(h, 8, clip_range=jopt.quant.observer_range(obs))

With a ``clip_range`` the clipped STE stops the gradient of activations that
fall outside the range, as Jacob et al. (2018) train; without one the range is
the batch's own min / max and every entry passes its gradient. The integer
kernels of :mod:`jopt.quant.integer` take the same range as ``x_range``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from jopt._core import validate
from jopt.quant import _layout
from jopt.quant.linear import SCHEMES, linear_codes, linear_values, scale_and_zero_point
from jopt.quant.quantizer import _block_range
from jopt.quant.tree import map_rules

__all__ = ["fake_quant", "fake_quant_params"]

_WHERE = "fake_quant: "
_PWHERE = "fake_quant_params: "
_LEAF_KEYS = ("bits", "scheme", "granularity", "axis", "group_size", "clip_range", "method")


def _grid(xb: jax.Array, lo: jax.Array, hi: jax.Array, bits: int, scheme: str,
          clipped: bool) -> jax.Array:
  """Dequantized blocks, exactly as :func:`jopt.quant.quantize` then ``dequantize``."""
  if clipped:
    xb = jnp.clip(xb, lo[:, None], hi[:, None])
  scale, z = scale_and_zero_point(lo, hi, bits=bits, scheme=scheme)
  q = linear_codes(xb, scale[:, None], z[:, None], bits=bits, scheme=scheme)
  return linear_values(q, scale[:, None], z[:, None] if scheme == "asymmetric" else 0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _fq(xb, lo, hi, bits, scheme, clipped):
  return _grid(xb, lo, hi, bits, scheme, clipped)


def _fq_fwd(xb, lo, hi, bits, scheme, clipped):
  inside = (xb >= lo[:, None]) & (xb <= hi[:, None])
  return _grid(xb, lo, hi, bits, scheme, clipped), (inside, lo, hi)


def _fq_bwd(bits, scheme, clipped, res, g):
  del bits, scheme, clipped
  inside, lo, hi = res
  return (jnp.where(inside, g, jnp.zeros((), g.dtype)), jnp.zeros_like(lo),
          jnp.zeros_like(hi))


_fq.defvjp(_fq_fwd, _fq_bwd)


def fake_quant(x: Any, bits: int = 8, *, scheme: str = "symmetric",
               granularity: str = "tensor", axis: int = -1, group_size: int | None = None,
               clip_range: Any = None) -> jax.Array:
  r"""Quantize-dequantize ``x`` in the forward pass; the clipped straight-through gradient backward.

  Per block (the tensor, each channel along ``axis``, or each group of
  ``group_size`` entries along ``axis``) with range :math:`[l, h]` -- the
  block's min / max, or ``clip_range`` -- and :math:`S, Z` from
  :func:`jopt.quant.scale_and_zero_point`:

  .. math::
    \hat x = S\,\bigl(\operatorname{clip}(\operatorname{round}(\operatorname{clip}(x, l, h) / S)
      + Z,\ q_{\min},\ q_{\max}) - Z\bigr), \qquad
    \frac{\partial \hat x}{\partial x} = \mathbb 1[\,l \le x \le h\,]

  The forward value is bit for bit ``jopt.quant.quantize(x, bits, ...).dequantize()``
  (same scale, rounding and clipping; no packing). The gradient is the clipped
  STE: 1 inside the closed range -- the endpoints :math:`l` and :math:`h` count
  as inside -- and 0 outside, where the forward value is constant. Without
  ``clip_range`` every entry lies in its block's own ``[min, max]``, so the
  gradient is 1 everywhere (the plain STE). The range, and so :math:`S` and
  :math:`Z`, are treated as constants: no gradient flows to ``clip_range`` or,
  through the min / max, to ``x`` (they are ``stop_gradient``-ed).

  Args:
    x: a floating array (bfloat16 / float16 compute in float32 and return
      in their own dtype).
    bits: bits per code, 2..8.
    scheme: ``"symmetric"`` (restricted range, :math:`Z = 0`) or ``"asymmetric"``.
    granularity: ``"tensor"``, ``"channel"`` or ``"group"``.
    axis: the channel axis, or the axis the groups run along.
    group_size: entries per group (granularity ``"group"`` only).
    clip_range: optional ``(min, max)`` per block, e.g. a
      :class:`jopt.quant.QuantRange` from :func:`jopt.quant.calibrate` or
      :func:`jopt.quant.observer_range`.

  Returns:
    The fake-quantized array, with ``x``'s shape and dtype.

  Example:
    >>> x = jnp.array([-1.0, 0.3, 2.0])
    >>> jopt.quant.fake_quant(x, 2, clip_range=(-1.0, 1.0)).tolist()
    [-1.0, 0.0, 1.0]
    >>> jax.grad(lambda v: jopt.quant.fake_quant(v, 2, clip_range=(-1.0, 1.0)).sum())(x).tolist()
    [1.0, 1.0, 0.0]

  Reference: Bengio et al., *Estimating or Propagating Gradients Through
  Stochastic Neurons for Conditional Computation*, 2013 (the straight-through
  estimator); Jacob et al., *Quantization and Training of Neural Networks for
  Efficient Integer-Arithmetic-Only Inference*, CVPR 2018, §3 (fake
  quantization, gradients stopped outside the range); Krishnamoorthi,
  *Quantizing deep convolutional networks for efficient inference: A
  whitepaper*, 2018, §3.
  """
  bits = _layout.check_bits(bits, _WHERE)
  validate.check_choice("scheme", scheme, SCHEMES, _WHERE)
  x, layout, cdt, xb = _layout.blocks_of(x, granularity, axis, group_size, _WHERE)
  try:
    lo, hi = _block_range(jax.lax.stop_gradient(xb), clip_range, layout)
  except (TypeError, ValueError) as e:
    raise type(e)(str(e).replace("quantize: ", _WHERE)) from None
  lo, hi = jax.lax.stop_gradient(lo), jax.lax.stop_gradient(hi)
  v = _fq(xb, lo, hi, bits, scheme, clip_range is not None)
  return _layout.from_blocks(v, layout).astype(x.dtype)


def _fake_leaf(name: str, leaf: Any, kw: dict[str, Any]) -> jax.Array:
  extra = sorted(set(kw) - set(_LEAF_KEYS))
  if extra:
    raise TypeError(f"{_PWHERE}parameter {name!r}: unknown keywords {extra}; fake_quant"
                    f" takes {list(_LEAF_KEYS[:-1])}.")
  kw = dict(kw)
  method = kw.pop("method", "linear")
  if method != "linear":
    raise ValueError(f"{_PWHERE}parameter {name!r}: method={method!r}, but fake"
                     " quantization is linear only; drop method or quantize this leaf"
                     " after training with jopt.quant.quantize_params.")
  try:
    return fake_quant(leaf, **kw)
  except (ValueError, TypeError) as e:
    raise type(e)(f"{_PWHERE}parameter {name!r}: {e}") from None


def fake_quant_params(params: Any, rules: Any = None, default_bits: int = 8,
                      **kwargs: Any) -> Any:
  r"""Fake-quantize a parameter tree by path rules, for use inside a loss (QAT).

  Leaf by leaf, with the same rules as :func:`jopt.quant.quantize_params`
  (glob patterns matched against the ``a/b/kernel`` path, first match wins;
  ``None`` keeps a leaf in float, an int gives its bits, a dict gives
  :func:`fake_quant` keywords; unmatched floating leaves with
  :math:`\operatorname{ndim} \ge 2` use ``default_bits`` and ``kwargs``, other
  leaves -- biases, norm scales -- stay as they are):

  .. math:: \theta_p \mapsto \operatorname{fake\_quant}_{r(p)}(\theta_p),
    \qquad \frac{\partial}{\partial \theta_p} = \mathbb 1[l \le \theta_p \le h]

  After training, ``jopt.quant.quantize_params(params, rules, default_bits,
  **kwargs)`` with the same arguments stores exactly the values this trained on.

  Args:
    params: a pytree of arrays (``flax.nnx.Variable`` leaves are unwrapped).
    rules: None, a dict ``{pattern: spec}`` or a list of ``(pattern, spec)``;
      a pattern that matches no leaf is an error.
    default_bits: bits of the leaves without a rule.
    **kwargs: defaults for :func:`fake_quant` (``scheme``, ``granularity``,
      ``axis``, ``group_size``, ``clip_range``).

  Returns:
    A tree of the params' structure with fake-quantized leaves.

  Example:
    >>> p = {"dense": {"kernel": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "bias": jnp.ones(3)}}
    >>> q = jopt.quant.fake_quant_params(p, {"*/kernel": 2})
    >>> q["dense"]["kernel"].tolist()[0], q["dense"]["bias"].tolist()
    ([-1.0, -1.0, 0.0], [1.0, 1.0, 1.0])

  Reference: Jacob et al., CVPR 2018, §3 (weights fake-quantized in the
  forward pass, float weights updated); the rule-by-path style of qwix's
  ``QuantizationRule``.
  """
  return map_rules(params, rules, default_bits, kwargs, _fake_leaf,
                   where=_PWHERE, verb="fake-quantized")
