"""Relational knowledge distillation (RKD): match the geometry of a batch, not each output.

The student copies the teacher's pairwise distances (scale-normalized) and the angles
its embeddings form in triplets, through a Huber loss. Embedding sizes may differ;
the batch (the set of examples related to each other) must be the same.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jopt.distill.logits import as_float, compute_dtype, safe_norm

__all__ = ["rkd_distance_loss", "rkd_angle_loss"]


def _check(student_emb: Any, teacher_emb: Any, where: str, minimum: int) -> tuple[jax.Array, ...]:
  s = as_float(student_emb, "student_emb", where, "embeddings")
  t = as_float(teacher_emb, "teacher_emb", where, "embeddings")
  for name, x in (("student_emb", s), ("teacher_emb", t)):
    if x.ndim != 2:
      raise ValueError(f"{where}{name} must be [batch, dim] (2-D), got shape {x.shape};"
                       f" flatten feature maps first: x.reshape(x.shape[0], -1).")
  if s.shape[0] != t.shape[0]:
    raise ValueError(f"{where}student_emb {s.shape} and teacher_emb {t.shape} must embed the"
                     f" same batch (the same number of rows); their dims may differ.")
  if s.shape[0] < minimum:
    raise ValueError(f"{where}the batch has {s.shape[0]} examples; relations need at least"
                     f" {minimum} ({'pairs' if minimum == 2 else 'triplets'}).")
  dtype = compute_dtype(s, t)
  return s.astype(dtype), jax.lax.stop_gradient(t.astype(dtype))


def _huber(x: jax.Array) -> jax.Array:
  """Huber loss with :math:`\\delta = 1` (torch's ``smooth_l1_loss`` with ``beta=1``)."""
  ax = jnp.abs(x)
  half = jnp.asarray(0.5, x.dtype)
  return jnp.where(ax < 1, half * x * x, ax - half)


def _normalized_distances(e: jax.Array, off: jax.Array) -> jax.Array:
  """``[N, N]`` distances divided by their mean over the pairs ``i != j`` (0 where it is 0)."""
  d = safe_norm(e[:, None, :] - e[None, :, :], axis=-1)
  n = e.shape[0]
  mu = jnp.sum(jnp.where(off, d, jnp.zeros_like(d))) / jnp.asarray(n * (n - 1), d.dtype)
  pos = mu > 0
  return jnp.where(pos, d / jnp.where(pos, mu, jnp.ones_like(mu)), jnp.zeros_like(d))


def rkd_distance_loss(student_emb: Any, teacher_emb: Any) -> jax.Array:
  r"""RKD distance loss: Huber distance between mean-normalized pairwise-distance matrices.

  With :math:`\psi_D(e_i, e_j) = \lVert e_i - e_j \rVert_2 / \mu`, where
  :math:`\mu` is the mean distance over the :math:`N(N-1)` ordered pairs
  :math:`i \ne j` of the batch, and :math:`l_1` Huber's loss with :math:`\delta = 1`:

  .. math::
    L = \frac{1}{N(N-1)} \sum_{i \ne j} l_1\big(\psi_D(s_i, s_j) - \psi_D(t_i, t_j)\big),
    \qquad l_1(x) = \begin{cases} x^2/2 & |x| < 1 \\ |x| - 1/2 & \text{else} \end{cases}

  The teacher's side is gradient-stopped. Departures: the paper *sums* over the
  pairs (multiply by :math:`N(N-1)` for its value); the authors' code averages
  over all :math:`N^2` entries, the zero diagonal included, and takes :math:`\mu`
  over the non-zero distances only (the same unless two embeddings coincide).
  Coinciding embeddings have distance 0 with a finite (zero) gradient; if every
  embedding coincides, :math:`\mu = 0` and the normalized distances are 0.
  Memory is :math:`O(N^2 d)` (distances from exact differences, not the Gram trick).

  Args:
    student_emb: ``[N, d_s]`` floating-point student embeddings, :math:`N \ge 2`.
    teacher_emb: ``[N, d_t]`` teacher embeddings of the same examples.

  Returns:
    The scalar loss, in at least float32.

  Example:
    >>> t = jax.random.normal(jax.random.key(0), (8, 16))
    >>> round(float(jopt.distill.rkd_distance_loss(3.0 * t, t)), 6)   # scale-free
    0.0

  Reference: Park, Kim, Lu & Cho, *Relational Knowledge Distillation*, CVPR 2019,
  section 3.2.1 (distance-wise distillation loss).
  """
  s, t = _check(student_emb, teacher_emb, "rkd_distance_loss: ", 2)
  return _distance_loss(s, t)


@jax.jit
def _distance_loss(s: jax.Array, t: jax.Array) -> jax.Array:
  n = s.shape[0]
  off = ~jnp.eye(n, dtype=bool)
  diff = _normalized_distances(s, off) - _normalized_distances(t, off)
  total = jnp.sum(jnp.where(off, _huber(diff), jnp.zeros_like(diff)))
  return total / jnp.asarray(n * (n - 1), s.dtype)


def _cosines(e: jax.Array) -> jax.Array:
  """``c[j, i, k] = <unit(e_i - e_j), unit(e_k - e_j)>``, the cosine of the angle at ``e_j``."""
  v = e[None, :, :] - e[:, None, :]          # v[j, i] = e_i - e_j
  n = safe_norm(v, axis=-1, keepdims=True)
  pos = n > 0
  u = jnp.where(pos, v / jnp.where(pos, n, jnp.ones_like(n)), jnp.zeros_like(v))
  return jnp.einsum("jid,jkd->jik", u, u)


def rkd_angle_loss(student_emb: Any, teacher_emb: Any) -> jax.Array:
  r"""RKD angle loss: Huber distance between the cosines of the angles every triplet forms.

  With :math:`\psi_A(e_i, e_j, e_k) = \langle \frac{e_i - e_j}{\lVert e_i - e_j\rVert},
  \frac{e_k - e_j}{\lVert e_k - e_j\rVert} \rangle` (the cosine of the angle at
  :math:`e_j`) and Huber's :math:`l_1` (:math:`\delta = 1`):

  .. math::
    L = \frac{1}{N(N-1)(N-2)} \sum_{i, j, k\ \text{distinct}}
        l_1\big(\psi_A(s_i, s_j, s_k) - \psi_A(t_i, t_j, t_k)\big)

  The teacher's side is gradient-stopped. Departures: the paper sums over the
  triplets; the authors' code averages over all :math:`N^3` index triples,
  degenerate ones included. A zero difference vector (two coinciding embeddings)
  counts as a zero unit vector, with a finite gradient. Memory is
  :math:`O(N^2 d + N^3)`.

  Args:
    student_emb: ``[N, d_s]`` floating-point student embeddings, :math:`N \ge 3`.
    teacher_emb: ``[N, d_t]`` teacher embeddings of the same examples.

  Returns:
    The scalar loss, in at least float32.

  Example:
    >>> t = jax.random.normal(jax.random.key(0), (8, 16))
    >>> round(float(jopt.distill.rkd_angle_loss(2.0 * t + 1.0, t)), 6)   # scale, shift
    0.0

  Reference: Park, Kim, Lu & Cho, *Relational Knowledge Distillation*, CVPR 2019,
  section 3.2.2 (angle-wise distillation loss).
  """
  s, t = _check(student_emb, teacher_emb, "rkd_angle_loss: ", 3)
  return _angle_loss(s, t)


@jax.jit
def _angle_loss(s: jax.Array, t: jax.Array) -> jax.Array:
  n = s.shape[0]
  i = jnp.arange(n)
  distinct = ((i[:, None, None] != i[None, :, None]) & (i[:, None, None] != i[None, None, :])
              & (i[None, :, None] != i[None, None, :]))
  diff = _cosines(s) - _cosines(t)
  total = jnp.sum(jnp.where(distinct, _huber(diff), jnp.zeros_like(diff)))
  return total / jnp.asarray(n * (n - 1) * (n - 2), s.dtype)
