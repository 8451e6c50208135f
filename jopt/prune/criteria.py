r"""Pruning criteria: the per-entry importance scores a mask is ranked by.

A score is non-negative and larger means *more* important; the pruning mask
removes the lowest-scored entries (or groups of entries, see
:mod:`jopt.prune.granularity`). Three criteria:

* ``"magnitude"`` -- :math:`|w|` (Han et al. 2015);
* ``"saliency"`` -- :math:`|w \cdot g|`, the first-order Taylor estimate of the
  loss change when :math:`w` is set to zero (Molchanov et al. 2017 / 2019);
* ``"random"`` -- i.i.d. uniform scores (the usual baseline).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jopt._core.tree import compute_dtype

__all__ = ["CRITERIA", "score", "score_dtype"]

CRITERIA = ("magnitude", "random", "saliency")


def score_dtype(dtype: Any) -> Any:
  """The real dtype scores of a ``dtype`` parameter are computed in (>= float32)."""
  dtype = compute_dtype(dtype, "pruned parameters")
  if jnp.issubdtype(dtype, jnp.complexfloating):
    return jnp.finfo(dtype).dtype
  return dtype


def score(criterion: str, p: jax.Array, g: jax.Array | None, key: jax.Array) -> jax.Array:
  r"""The importance score of every entry of one parameter array.

  .. math::
    \text{magnitude: } |w_i| \qquad
    \text{saliency: } |w_i\, g_i| \qquad
    \text{random: } u_i \sim U[0, 1)

  Complex entries use the modulus. Scores are real, in at least float32
  (float64 for float64 parameters). The random scores depend only on ``key``
  (fixed per leaf by :func:`jopt.prune.prune`), so every mask update ranks the
  entries the same way and the masks of a rising sparsity target are nested.

  Args:
    criterion: one of :data:`CRITERIA`.
    p: the parameter array.
    g: its gradient (needed by ``"saliency"`` only).
    key: a PRNG key (used by ``"random"`` only).

  Returns:
    A real array shaped like ``p``.

  Example:
    >>> score("magnitude", jnp.array([-3.0, 1.0]), None, jax.random.key(0))
    Array([3., 1.], dtype=float32)

  Reference: Han et al., *Learning both Weights and Connections for Efficient
  Neural Networks*, NeurIPS 2015 (magnitude); Molchanov et al., *Pruning
  Convolutional Neural Networks for Resource Efficient Inference*, ICLR 2017,
  and *Importance Estimation for Neural Network Pruning*, CVPR 2019 (the
  first-order Taylor saliency :math:`|w g|`; they average it over minibatches,
  here it is the gradient of the step at which the mask is updated).
  """
  dt = score_dtype(p.dtype)
  if criterion == "magnitude":
    return jnp.abs(p).astype(dt)
  if criterion == "saliency":
    if g is None:
      raise ValueError("prune: criterion='saliency' needs the gradient.")
    pc = p.astype(compute_dtype(p.dtype))
    gc = g.astype(pc.dtype)
    return jnp.abs(pc * gc).astype(dt)
  if criterion == "random":
    return jax.random.uniform(key, p.shape, dt)
  raise ValueError(f"prune: criterion={criterion!r} is not one of {CRITERIA!r}.")
