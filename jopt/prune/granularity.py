r"""Pruning granularities: which entries are removed together, and how a group is scored.

Every granularity turns a per-entry score array (:mod:`jopt.prune.criteria`)
into a 1-D array of *group* scores and back from a per-group keep decision to
a boolean mask shaped like the parameter. Kernels follow Flax's layout: a
Dense kernel is ``(in, out)``, a convolution kernel ``HWIO`` (spatial axes,
then input channels, then output channels), so the input axis is ``-2`` and
the output axis ``-1``.

* ``"weight"`` -- every entry is its own group (unstructured).
* ``"neuron"`` -- whole output units: the columns ``w[..., j]`` of a Dense
  kernel; the group score is the mean entry score of the column.
* ``"channel"`` -- whole convolution filters: the slices ``w[..., o]`` of an
  HWIO kernel (the same rule as ``"neuron"``, named for conv kernels); with
  the magnitude criterion the score is the mean :math:`|w|`, Li et al.'s L1
  filter norm divided by the (per-layer constant) filter size.
* ``"block"`` -- ``(b_in, b_out)`` tiles of the last two axes (at each
  spatial tap of a conv kernel), scored by the RMS of the entry scores (the
  block's L2 norm over :math:`\sqrt{b_{in} b_{out}}`).
* ``"layer"`` -- a whole leaf, scored by its mean entry score: for dropping
  entire residual branches or identity-shaped layers, ranked across leaves.
* ``"n_m"`` -- N:M semi-structured sparsity: in every run of M consecutive
  entries along the input axis (axis 0 of a Dense kernel, the I axis of an
  HWIO kernel) at most N are kept, the pattern of NVIDIA's 2:4 sparse tensor
  cores. It fixes the sparsity at :math:`1 - N/M` and is not ranked globally.

Dividing a group's score by its size (mean, RMS) leaves the ranking inside a
leaf unchanged and makes groups of different sizes comparable for
``scope="global"``.
"""

from __future__ import annotations

import math
import jax
import jax.numpy as jnp

__all__ = ["GRANULARITIES", "check_shape", "group_scores", "expand", "rank_keep",
           "n_m_keep", "num_groups"]

GRANULARITIES = ("weight", "n_m", "block", "neuron", "channel", "layer")


def check_shape(granularity: str, shape: tuple[int, ...], path: str,
                n_m: tuple[int, int] | None, block: tuple[int, int] | None) -> None:
  """Raise ``ValueError`` unless a leaf of ``shape`` can be pruned this way."""
  where = "prune: "
  if len(shape) == 0:
    raise ValueError(f"{where}{path} is a scalar; a pruning filter must select arrays"
                     " with ndim >= 1 (the default filter selects ndim >= 2).")
  if granularity in ("n_m", "block", "neuron", "channel") and len(shape) < 2:
    raise ValueError(f"{where}granularity={granularity!r} needs kernels with ndim >= 2"
                     f" (Dense (in, out) or conv HWIO), but {path} has shape {shape}."
                     " Leave it out with filter= (the default filter keeps ndim >= 2).")
  if granularity == "n_m":
    n, m = n_m
    if shape[-2] % m:
      raise ValueError(f"{where}n_m={n_m!r}: the input axis (-2) of {path}, shape {shape},"
                       f" has length {shape[-2]}, not divisible by M={m}. Leave the leaf"
                       " out with filter= or choose an M that divides it.")
  if granularity == "block":
    bi, bo = block
    if shape[-2] % bi or shape[-1] % bo:
      raise ValueError(f"{where}block={block!r} does not tile the last two axes of {path},"
                       f" shape {shape}: both {shape[-2]} % {bi} and {shape[-1]} % {bo}"
                       " must be 0. Leave the leaf out with filter= or change block=.")


def num_groups(granularity: str, shape: tuple[int, ...],
               block: tuple[int, int] | None) -> int:
  """How many groups a leaf of ``shape`` has (the units its pruning count is in)."""
  if granularity == "weight":
    return math.prod(shape)
  if granularity in ("neuron", "channel"):
    return shape[-1]
  if granularity == "block":
    return math.prod(shape[:-2]) * (shape[-2] // block[0]) * (shape[-1] // block[1])
  if granularity == "layer":
    return 1
  raise ValueError(f"prune: granularity {granularity!r} has no groups to rank.")


def _blocked(s: jax.Array, block: tuple[int, int]) -> jax.Array:
  bi, bo = block
  lead = s.shape[:-2]
  return s.reshape(*lead, s.shape[-2] // bi, bi, s.shape[-1] // bo, bo)


def group_scores(granularity: str, s: jax.Array, block: tuple[int, int] | None) -> jax.Array:
  r"""The 1-D array of group scores of one leaf's entry scores ``s``.

  .. math::
    \text{weight: } s_i \quad
    \text{neuron/channel: } \tfrac{1}{|G_j|}\sum_{i \in G_j} s_i \quad
    \text{block: } \Big(\tfrac{1}{|B|}\sum_{i \in B} s_i^2\Big)^{1/2} \quad
    \text{layer: } \tfrac{1}{n}\sum_i s_i

  Groups are listed in row-major order of their position in the leaf.
  """
  if granularity == "weight":
    return s.reshape(-1)
  if granularity in ("neuron", "channel"):
    return jnp.mean(s.reshape(-1, s.shape[-1]), axis=0)
  if granularity == "block":
    b = _blocked(s, block)
    return jnp.sqrt(jnp.mean(b * b, axis=(-3, -1))).reshape(-1)
  if granularity == "layer":
    return jnp.mean(s).reshape(1)
  raise ValueError(f"prune: granularity {granularity!r} has no groups to rank.")


def expand(granularity: str, keep: jax.Array, shape: tuple[int, ...],
           block: tuple[int, int] | None) -> jax.Array:
  """The boolean mask of a leaf of ``shape`` from its per-group ``keep`` flags."""
  if granularity == "weight":
    return keep.reshape(shape)
  if granularity in ("neuron", "channel"):
    return jnp.broadcast_to(keep, shape)
  if granularity == "block":
    bi, bo = block
    g = keep.reshape(*shape[:-2], shape[-2] // bi, 1, shape[-1] // bo, 1)
    return jnp.broadcast_to(g, (*shape[:-2], shape[-2] // bi, bi, shape[-1] // bo, bo)
                            ).reshape(shape)
  if granularity == "layer":
    return jnp.broadcast_to(keep.reshape(()), shape)
  raise ValueError(f"prune: granularity {granularity!r} has no groups to rank.")


def rank_keep(scores: jax.Array, k: jax.Array) -> jax.Array:
  r"""Keep flags that prune exactly the ``k`` lowest of a 1-D ``scores`` array.

  .. math:: \text{keep}_i = [\operatorname{rank}(i) \ge k]

  where :math:`\operatorname{rank}` is the position in a stable ascending sort:
  ties are broken by position, the lower index pruned first. NaN scores sort
  last (kept). ``k`` may be traced; it is clipped to ``[0, n]``.
  """
  n = scores.shape[0]
  order = jnp.argsort(scores, stable=True)
  ranks = jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
  return ranks >= jnp.clip(k, 0, n).astype(jnp.int32)


def n_m_keep(s: jax.Array, n_m: tuple[int, int]) -> jax.Array:
  r"""The N:M keep mask of entry scores ``s``: the N best of every M along axis -2.

  .. math:: \text{keep}_i = [\operatorname{rank}_{G(i)}(i) \ge M - N]

  with the rank inside the group :math:`G(i)` of M consecutive entries of the
  input axis, from a stable ascending sort (ties: the lower index pruned first).
  """
  n, m = n_m
  shape = s.shape
  g = s.reshape(*shape[:-2], shape[-2] // m, m, shape[-1])
  order = jnp.argsort(g, axis=-2, stable=True)
  ranks = jnp.argsort(order, axis=-2, stable=True)
  return (ranks >= m - n).reshape(shape)

