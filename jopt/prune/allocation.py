"""Per-layer pruning counts from one target sparsity: uniform or Erdős–Rényi-Kernel (ERK).

Both work on traced targets (a sparsity schedule evaluated inside ``jit``):
the leaf shapes are static, the target a 0-d array, the counts int32 arrays.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

__all__ = ["ALLOCATIONS", "round_count", "uniform_counts", "erk_densities", "erk_counts"]

ALLOCATIONS = ("uniform", "erk")


def round_count(s: jax.Array, n: int) -> jax.Array:
  r"""How many of ``n`` units a target ``s`` prunes: :math:`\lfloor s n + \tfrac12 \rfloor`.

  Rounding half up (``0.25`` of 10 prunes 3), computed in ``s``'s dtype,
  clipped to ``[0, n]``; an int32 0-d array.
  """
  s = jnp.asarray(s)
  k = jnp.floor(s * jnp.asarray(n, s.dtype) + jnp.asarray(0.5, s.dtype))
  return jnp.clip(k, 0, n).astype(jnp.int32)


def uniform_counts(s: jax.Array, sizes: Sequence[int]) -> list[jax.Array]:
  r"""Every leaf pruned at the same target: :math:`k_l = \lfloor s\, n_l + \tfrac12 \rfloor`."""
  return [round_count(s, n) for n in sizes]


def erk_densities(s: jax.Array, shapes: Sequence[tuple[int, ...]]) -> jax.Array:
  r"""ERK densities :math:`d_l` whose size-weighted mean is :math:`1 - s`.

  .. math::
    d_l = \min\Big(1,\ \epsilon\,\frac{\sum_j h^l_j}{\prod_j h^l_j}\Big), \qquad
    \sum_l d_l\, n_l = (1 - s) \sum_l n_l

  for a leaf of shape :math:`(h^l_1, \ldots)` with :math:`n_l` entries. A leaf
  whose density would exceed 1 is made dense and :math:`\epsilon` is solved
  again over the rest (Evci et al.'s loop; :math:`\epsilon` only grows, so all
  leaves past 1 are made dense at once, which reaches the same fixed point).

  Args:
    s: the global target sparsity in ``[0, 1)`` (a number or a 0-d array,
      traced values too).
    shapes: the shapes of the pruned leaves.

  Returns:
    A float array of one density per leaf, in ``s``'s dtype.

  Example:
    >>> shapes = [(3, 3, 3, 16), (512, 64), (64, 10)]
    >>> d = jopt.prune.erk_densities(jnp.float32(0.9), shapes)
    >>> [round(v, 4) for v in d.tolist()]   # eps = 3384/675 times 25/432, 576/32768, 74/640
    [0.2901, 0.0881, 0.5797]
    >>> n = jnp.array([432.0, 32768.0, 640.0])   # entries per leaf
    >>> round(float((d * n).sum() / n.sum()), 4)   # the size-weighted density is 1 - s
    0.1

  Reference: Evci et al., *Rigging the Lottery: Making All Tickets Winners*,
  ICML 2020 (sec. 3, Erdős–Rényi-Kernel; the dense-layer loop of their
  ``sparse_utils.get_sparsities``, ``erk_power_scale=1``). Unlike their code no
  layer is kept dense by name: pass such leaves out of ``filter=``.
  """
  s = jnp.asarray(s)
  dt = s.dtype
  n = jnp.asarray([math.prod(sh) for sh in shapes], dt)
  raw = jnp.asarray([sum(sh) / math.prod(sh) for sh in shapes], dt)
  budget = (1 - s) * jnp.sum(n)

  def eps_of(dense):
    rhs = budget - jnp.sum(jnp.where(dense, n, 0))
    div = jnp.sum(jnp.where(dense, 0, raw * n))
    return jnp.where(div > 0, rhs / jnp.where(div > 0, div, 1), 0)

  def body(_, dense):
    return dense | (eps_of(dense) * raw > 1)

  dense = jax.lax.fori_loop(0, len(shapes), body, jnp.zeros(len(shapes), bool))
  return jnp.where(dense, 1, jnp.clip(eps_of(dense) * raw, 0, 1)).astype(dt)


def erk_counts(s: jax.Array, shapes: Sequence[tuple[int, ...]]) -> list[jax.Array]:
  r"""Per-leaf pruning counts from ERK densities, summing exactly to the global count.

  .. math::
    t_l = (1 - d_l)\, n_l, \qquad K = \lfloor s N + \tfrac12 \rfloor, \qquad
    k_l = \lfloor t_l \rfloor + [\,l \text{ among the } K - \textstyle\sum_l \lfloor t_l
    \rfloor \text{ largest } t_l - \lfloor t_l \rfloor\,]

  (largest-remainder rounding; ties to the earlier leaf), so the pruned total
  is exactly :math:`K` of the :math:`N` selected entries.
  """
  s = jnp.asarray(s)
  sizes = [math.prod(sh) for sh in shapes]
  n = jnp.asarray(sizes, s.dtype)
  t = (1 - erk_densities(s, shapes)) * n
  base = jnp.clip(jnp.floor(t), 0, n)
  total = round_count(s, sum(sizes))
  extra = jnp.clip(total - jnp.sum(base).astype(jnp.int32), 0, len(sizes))
  frac = jnp.where(base < n, t - base, -1)
  order = jnp.argsort(-frac, stable=True)
  ranks = jnp.zeros(len(sizes), jnp.int32).at[order].set(jnp.arange(len(sizes), dtype=jnp.int32))
  k = base.astype(jnp.int32) + (ranks < extra).astype(jnp.int32)
  return [k[i] for i in range(len(sizes))]
