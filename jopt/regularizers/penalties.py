"""Loss-side penalties: L1, L2 (one half of the squared norm) and elastic net.

These are plain functions ``params -> scalar`` to add to a loss before
``jax.grad``. They select the parameters they penalize with a mask; by default
:func:`weights_mask`, i.e. every leaf with ``ndim >= 2`` (kernels, embeddings,
convolution filters), which skips biases and normalization scales (1-D) and
scalars. The transform-side counterparts are :func:`jopt.add_decayed_weights`
(coupled L2 before an optimizer, decoupled decay after it) and
:func:`jopt.regularizers.proximal_l1` (exact zeros for L1).

Masks, everywhere in this module and in ``proximal_l1``:

* ``None`` -- the default rule, :func:`weights_mask` (``ndim >= 2``);
* ``True`` / ``False`` -- every leaf / no leaf;
* a tree of Python bools shaped like the params, or a prefix of it (one bool
  for a whole subtree, as ``optax.masked`` accepts);
* a function ``params -> such a tree``, e.g. ``jopt.regularizers.weights_mask``
  or ``lambda p: {"encoder": True, "head": False}``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from jopt._core import validate
from jopt._core.leafwise import resolve_mask
from jopt._core.tree import leaf_paths, unwrap_variables

__all__ = ["l1_penalty", "l2_penalty", "elastic_net_penalty", "weights_mask", "mask_flags"]


def weights_mask(params: Any) -> Any:
  r"""The default regularization mask: True for leaves with ``ndim >= 2``.

  .. math:: m(\theta_i) = [\operatorname{ndim}(\theta_i) \ge 2]

  Matrices and higher-rank tensors (dense kernels, convolution filters,
  embeddings) are selected; biases, normalization scales and offsets (1-D)
  and scalars are not, the usual practice for weight decay and L1.
  ``flax.nnx.Variable`` leaves are unwrapped first, so the result has the
  structure of the plain-array tree.

  Args:
    params: a pytree of arrays (a dict, ``nnx.State``, a Linen ``params``).

  Returns:
    A tree of Python bools with the (unwrapped) structure of ``params``.

  Example:
    >>> jopt.regularizers.weights_mask({"w": jnp.ones((3, 2)), "b": jnp.ones(2)})
    {'b': False, 'w': True}

  Reference: the parameter-group convention of, e.g., Loshchilov & Hutter,
  *Decoupled Weight Decay Regularization*, ICLR 2019 (no decay on biases and
  normalization parameters), as in ``timm``'s and Hugging Face's trainers.
  """
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, unwrap_variables(params))


def mask_flags(mask: Any, params: Any, where: str) -> list[bool]:
  """One bool per leaf of ``params`` (already unwrapped) for a regularizer mask.

  ``None`` means :func:`weights_mask`. A mask that does not fit raises a
  ``ValueError`` naming ``mask`` and the structure it had to match.
  """
  n = len(jax.tree.leaves(params))
  try:
    return resolve_mask(weights_mask if mask is None else mask, params, n, where)
  except ValueError as e:
    raise ValueError(
        f"{e} Expected a tree (or a prefix) of Python bools with the params'"
        f" structure {jax.tree.structure(params)}, True/False, None for the default"
        " (leaves with ndim >= 2), or a function params -> such a tree.") from None


def _promote(a: Any, b: Any) -> Any:
  """The standard JAX promotion of two dtypes, also under strict promotion."""
  with jax.numpy_dtype_promotion("standard"):
    return jnp.promote_types(a, b)


def _real_dtype(dtype: Any) -> Any:
  dtype = jnp.dtype(dtype)
  if jnp.issubdtype(dtype, jnp.complexfloating):
    return jnp.finfo(dtype).dtype
  return dtype


def _check_strength(name: str, value: Any, where: str) -> None:
  if validate.is_schedule(value):
    raise TypeError(f"{where}{name} must be a number or a 0-d array, not a schedule: a"
                    " penalty has no step count; pass the current value.")
  validate.check_range(name, value, 0.0, where=where)


def _selected(params: Any, mask: Any, dtype: Any, where: str):
  """The penalized leaves, the accumulation dtype and the result dtype."""
  params = unwrap_variables(params)
  leaves = [jnp.asarray(x) for x in jax.tree.leaves(params)]
  flags = mask_flags(mask, params, where)
  paths = leaf_paths(params)
  chosen = []
  for path, x, f in zip(paths, leaves, flags):
    if f and not jnp.issubdtype(x.dtype, jnp.inexact):
      raise TypeError(
          f"{where}{path} has dtype {x.dtype}, but penalties need floating or complex"
          " leaves. Leave it out with mask= (e.g. mask=lambda p: jax.tree.map("
          "lambda x: jnp.issubdtype(x.dtype, jnp.floating) and x.ndim >= 2, p)) or"
          " remove it from the tree.")
    if f:
      chosen.append(x)
  if dtype is not None:
    out = jnp.dtype(dtype)
    if not jnp.issubdtype(out, jnp.floating):
      raise TypeError(f"{where}dtype={out} must be a real floating dtype.")
  else:
    pool = chosen or [x for x in leaves if jnp.issubdtype(x.dtype, jnp.inexact)]
    if pool:
      out = functools.reduce(_promote, [_real_dtype(x.dtype) for x in pool])
    else:
      out = jnp.dtype(jnp.result_type(float))
  acc = _promote(out, jnp.float32)
  return chosen, acc, out


def _abs_sum(x: jax.Array, acc: Any) -> jax.Array:
  if jnp.issubdtype(x.dtype, jnp.complexfloating):
    return jnp.sum(jnp.abs(x).astype(acc))
  # x * sign(x) is |x| exactly, and its gradient is sign(x), 0 at 0 (as torch's
  # abs); jnp.abs's gradient at 0 is 1, which would push exact zeros off zero
  x = x.astype(acc)
  return jnp.sum(x * jnp.sign(x))


def _sq_sum(x: jax.Array, acc: Any) -> jax.Array:
  if jnp.issubdtype(x.dtype, jnp.complexfloating):
    re, im = x.real.astype(acc), x.imag.astype(acc)
    return jnp.sum(re * re + im * im)
  x = x.astype(acc)
  return jnp.sum(x * x)


def _total(fn, leaves, acc):
  total = jnp.zeros((), acc)
  for x in leaves:
    total = total + fn(x, acc)
  return total


def l1_penalty(params: Any, mask: Any = None, *, strength: Any = 1.0,
               dtype: Any = None) -> jax.Array:
  r"""The L1 penalty :math:`\lambda \sum_i |\theta_i|` over the masked leaves.

  .. math:: R(\theta) = \lambda \sum_{\text{leaves } w \in \text{mask}} \sum_j |w_j|

  Added to a loss and minimized with (stochastic) gradient descent it uses the
  subgradient :math:`\lambda\,\operatorname{sign}(w)` (0 at 0), which shrinks
  weights but practically never makes them exactly zero; for exact zeros put
  :func:`jopt.regularizers.proximal_l1` after the optimizer instead.

  Complex leaves use the modulus :math:`|w_j|`. Each leaf is summed in at least
  float32; the result has the params' real floating dtype (float32 params give
  float32, also under ``jax_enable_x64``; bfloat16 params give bfloat16). With
  mixed dtypes the result is their promotion (float32 and bfloat16 give
  float32, float32 and float64 give float64); pass ``dtype=`` to choose.

  Args:
    params: a pytree of floating or complex arrays (``nnx.State`` and
      ``nnx.Variable`` leaves are unwrapped).
    mask: which leaves are penalized: ``None`` (default) is
      :func:`weights_mask`, leaves with ``ndim >= 2`` (no biases or
      normalization scales); ``True`` all, ``False`` none; a tree or prefix of
      Python bools; or a function ``params -> tree``.
    strength: :math:`\lambda \ge 0`, a number or a 0-d array (traced values
      pass unchecked).
    dtype: the result's dtype (default: as described above).

  Returns:
    A 0-d array.

  Example:
    >>> params = {"w": jnp.array([[1.0, -2.0], [0.5, 0.0]]), "b": jnp.array([3.0])}
    >>> penalty = jopt.regularizers.l1_penalty(params, strength=0.1)
    >>> print(round(float(penalty), 4))   # 0.1 * (1 + 2 + 0.5); the 1-D bias is not penalized
    0.35
    >>> loss = lambda p: jnp.sum(p["w"] ** 2) / 2 + jopt.regularizers.l1_penalty(p, strength=0.1)
    >>> g = jax.grad(loss)(params)
    >>> print(np.asarray(g["w"]).round(4), g["b"])   # w + 0.1 * sign(w), with sign(0) = 0
    [[ 1.1 -2.1]
     [ 0.6  0. ]] [0.]

  Reference: Tibshirani, *Regression Shrinkage and Selection via the Lasso*,
  JRSS-B 1996.
  """
  where = "l1_penalty: "
  _check_strength("strength", strength, where)
  leaves, acc, out = _selected(params, mask, dtype, where)
  lam = jnp.asarray(strength).astype(acc)
  return (lam * _total(_abs_sum, leaves, acc)).astype(out)


def l2_penalty(params: Any, mask: Any = None, *, strength: Any = 1.0,
               dtype: Any = None) -> jax.Array:
  r"""One half of the squared L2 norm times :math:`\lambda`, over the masked leaves.

  .. math:: R(\theta) = \frac{\lambda}{2} \sum_{\text{leaves } w \in \text{mask}} \sum_j |w_j|^2,
            \qquad \nabla_w R = \lambda\, w

  Note the factor **one half**: the gradient is exactly :math:`\lambda w`, so
  this penalty in the loss with plain SGD is ``torch.optim.SGD(...,
  weight_decay=strength)`` on the same parameters (a ``weight_decay=0`` group
  for the rest) and ``optax.chain(jopt.add_decayed_weights(strength, mask),
  jopt.sgd(lr))`` with the same mask (coupled L2). It is *not* AdamW's decoupled decay:
  with an adaptive optimizer the gradient :math:`\lambda w` is rescaled like
  every other gradient (use ``jopt.adamw(..., mask=...)`` for decoupled decay).

  Complex leaves use :math:`|w_j|^2`. dtypes as :func:`l1_penalty`.

  Args:
    params: a pytree of floating or complex arrays (``nnx`` leaves unwrapped).
    mask: as :func:`l1_penalty`; default :func:`weights_mask` (``ndim >= 2``).
    strength: :math:`\lambda \ge 0`, a number or a 0-d array.
    dtype: the result's dtype (default: the params' real floating dtype).

  Returns:
    A 0-d array.

  Example:
    >>> params = {"w": jnp.array([[1.0, -2.0], [0.5, 0.0]]), "b": jnp.array([3.0])}
    >>> penalty = jopt.regularizers.l2_penalty(params, strength=0.1)
    >>> print(round(float(penalty), 4))   # 0.1 / 2 * (1 + 4 + 0.25); the 1-D bias is not penalized
    0.2625
    >>> loss = lambda p: jnp.sum(p["w"]) + jopt.regularizers.l2_penalty(p, strength=0.1)
    >>> g = jax.grad(loss)(params)
    >>> print(np.asarray(g["w"]).round(4), g["b"])   # 1 + 0.1 * w
    [[1.1  0.8 ]
     [1.05 1.  ]] [0.]

  Reference: Tikhonov regularization / ridge regression, Hoerl & Kennard,
  *Ridge Regression*, Technometrics 1970; the one-half convention of
  Krogh & Hertz, *A Simple Weight Decay Can Improve Generalization*, 1991.
  """
  where = "l2_penalty: "
  _check_strength("strength", strength, where)
  leaves, acc, out = _selected(params, mask, dtype, where)
  lam = jnp.asarray(strength).astype(acc)
  return (lam * (0.5 * _total(_sq_sum, leaves, acc))).astype(out)


def elastic_net_penalty(params: Any, mask: Any = None, *, l1: Any, l2: Any,
                        dtype: Any = None) -> jax.Array:
  r"""Elastic net: an L1 penalty plus one half of a squared L2 penalty.

  .. math:: R(\theta) = \lambda_1 \sum_j |w_j| + \frac{\lambda_2}{2} \sum_j |w_j|^2

  over the masked leaves; equal to ``l1_penalty(params, mask, strength=l1) +
  l2_penalty(params, mask, strength=l2)``. Both strengths are required
  keywords (no default mixing ratio is more natural than another). Note that
  scikit-learn's ``ElasticNet(alpha, l1_ratio)`` is :math:`\lambda_1 =
  \alpha\rho` and :math:`\lambda_2 = \alpha (1 - \rho)` with this one-half
  convention (its data term is also divided by :math:`2 n`).

  Args:
    params: a pytree of floating or complex arrays (``nnx`` leaves unwrapped).
    mask: as :func:`l1_penalty`; default :func:`weights_mask` (``ndim >= 2``).
    l1: :math:`\lambda_1 \ge 0`, a number or a 0-d array.
    l2: :math:`\lambda_2 \ge 0`, a number or a 0-d array.
    dtype: the result's dtype (default: the params' real floating dtype).

  Returns:
    A 0-d array.

  Example:
    >>> params = {"w": jnp.array([[1.0, -2.0], [0.5, 0.0]]), "b": jnp.array([3.0])}
    >>> reg = jopt.regularizers.elastic_net_penalty(params, l1=0.1, l2=0.01)
    >>> print(round(float(reg), 4))   # 0.1 * 3.5 + 0.01 / 2 * 5.25
    0.3762

  Reference: Zou & Hastie, *Regularization and Variable Selection via the
  Elastic Net*, JRSS-B 2005 (the "naive" elastic net penalty).
  """
  where = "elastic_net_penalty: "
  _check_strength("l1", l1, where)
  _check_strength("l2", l2, where)
  leaves, acc, out = _selected(params, mask, dtype, where)
  a = jnp.asarray(l1).astype(acc)
  b = jnp.asarray(l2).astype(acc)
  return (a * _total(_abs_sum, leaves, acc)
          + b * (0.5 * _total(_sq_sum, leaves, acc))).astype(out)
