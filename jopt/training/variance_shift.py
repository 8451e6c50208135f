"""The variance shift of batch norm after dropout: running variance vs the variance at test time.

Li et al. (CVPR 2019) explain why dropout placed *before* batch norm often hurts:
in training, a BN layer behind dropout sees inputs whose variance is inflated
by the dropout mask (inverted dropout scales kept units by :math:`1/(1-p)`),
and its running variance accumulates that inflated variance; at test time
dropout is the identity, the input variance is smaller, and BN normalizes it
with the wrong (training) variance. :func:`variance_shift` measures exactly
that for a trained :class:`RegMLP` or :class:`RegCNN`, one number per BN layer.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt.training.regularized_models import RegCNN, RegMLP

__all__ = ["variance_shift"]


def variance_shift(model: RegMLP | RegCNN, params: Any, stats: Any,
                   x: Any) -> dict[str, np.ndarray]:
  r"""Per BN layer: the running variance over the variance of its input at test time.

  Runs ``model`` in eval mode on ``x`` (dropout off, batch norm on its
  running statistics, as at test time) and takes, for BN layer :math:`l` and
  channel :math:`c`, the biased variance :math:`\sigma^2_{\text{test},lc}` of
  the layer's input over the examples (and the spatial positions, for a CNN)
  against the running variance :math:`\hat\sigma^2_{lc}` accumulated in
  training:

  .. math::
    r_{lc} = \frac{\hat\sigma^2_{lc}}{\sigma^2_{\text{test},lc}}, \qquad
    \text{ratio}_l = \frac1C \sum_c r_{lc}, \qquad
    \text{shift}_l = \frac1C \sum_c \max(r_{lc},\ 1 / r_{lc})

  ``shift`` is Li et al.'s per-layer measure (their Figure 1 plots
  :math:`\max(\text{moving\_var}/\text{real\_var},\ \text{real\_var}/\text{moving\_var})`,
  1 when there is no shift), averaged here over the channels; ``ratio`` keeps
  the direction (> 1: BN divides by a variance larger than the test input's,
  the dropout-before-BN case). Channels whose test variance is 0 (dead
  units) are left out of both means.

  Args:
    model: a :class:`RegMLP` or :class:`RegCNN` with ``batch_norm=True``.
    params, stats: the trained parameters and BN statistics.
    x: test inputs, ``(n, features)`` for an MLP or ``(n, H, W, C)`` for a CNN.

  Returns:
    ``{"ratio": (L,), "shift": (L,)}``, float64 NumPy arrays, one entry per BN layer.

  Example:
    >>> from jopt.training import RegMLP, fit, lab_data, load_digits, variance_shift
    >>> model = RegMLP(hidden=(64, 64), dropout=0.5, batch_norm=True, order="dropout_bn")
    >>> lab = lab_data(load_digits())
    >>> result = fit(model, jopt.adam(1e-3), lab, steps=50)
    >>> shift = variance_shift(model, result.params, result.stats, lab.test.x)
    >>> shift["shift"].shape, bool((shift["shift"] >= 1.0).all())  # 1.0: no shift
    ((2,), True)

  Reference: Li, Chen, Hu & Yang, *Understanding the Disharmony between Dropout
  and Batch Normalization by Variance Shift*, CVPR 2019 (Section 3, Figure 1).
  """
  if not getattr(model, "batch_norm", False):
    raise ValueError("variance_shift: the model has no batch norm (batch_norm=False), so"
                     " there is no running variance to compare; pass a model with"
                     " batch_norm=True.")
  x = jnp.asarray(x)
  _, _, inputs = jax.jit(lambda p, s, v: model.forward(p, s, v, train=False))(params, stats, x)
  ratios, shifts = [], []
  for h, s in zip(inputs, stats):
    h = np.asarray(jax.device_get(h), np.float64)
    test_var = h.reshape(-1, h.shape[-1]).var(axis=0)
    running = np.asarray(jax.device_get(s.var), np.float64)
    live = test_var > 0
    r = running[live] / test_var[live]
    ratios.append(float(r.mean()) if r.size else float("nan"))
    shifts.append(float(np.maximum(r, 1 / r).mean()) if r.size else float("nan"))
  return {"ratio": np.asarray(ratios), "shift": np.asarray(shifts)}
