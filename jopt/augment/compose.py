"""Composition: apply ops in sequence, or one op chosen at random per example.

An *op* is any function ``op(images, *, key) -> images`` that keeps the
shape: every random op of jopt.augment with its other arguments bound
(``functools.partial(aug.random_crop, padding=4)``), or a lambda. Mixing ops
(which take and return labels) do not fit; call them after the pipeline.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jopt.augment._common import check_images, check_probability, example_keys

__all__ = ["sequence", "random_choice", "random_apply"]

Op = Callable[..., jax.Array]


def _check_ops(where: str, ops: Sequence[Any]) -> tuple[Op, ...]:
  ops = tuple(ops)
  for i, f in enumerate(ops):
    if not callable(f):
      raise TypeError(f"{where}: op {i} is {f!r}, not a function op(images, *, key) -> images;"
                      " bind its arguments with functools.partial or a lambda.")
  return ops


def _split_per_example(keys: jax.Array, m: int) -> jax.Array:
  """``(N,)`` keys -> ``(m, N)``: an independent key per op and example."""
  return jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, m))(keys), 0, 1)


def _run(where: str, i: int, f: Op, images: jax.Array, keys: jax.Array) -> jax.Array:
  out = f(images, key=keys)
  if getattr(out, "shape", None) != images.shape or out.dtype != images.dtype:
    raise ValueError(
        f"{where}: op {i} returned shape {getattr(out, 'shape', None)} and dtype"
        f" {getattr(out, 'dtype', None)} for images of shape {images.shape} and dtype"
        f" {images.dtype}; composed ops must keep both (resize before composing).")
  return out


def sequence(*ops: Op) -> Op:
  r"""Chain ops: the composed op applies each in turn, with independent keys.

  jopt's own: dm-pix has no composition. For ops :math:`f_1, \dots, f_m`
  and example :math:`n` with key :math:`k_n`,

  .. math:: y_n = f_m(\cdots f_2(f_1(x_n; k_{n,1}); k_{n,2}) \cdots; k_{n,m}),
     \qquad (k_{n,1}, \dots, k_{n,m}) = \mathrm{split}(k_n, m)

  The result is itself an op ``op(images, *, key)`` that accepts one key or a
  batch of ``N`` keys, and composes again. ``sequence()`` is the identity.

  Args:
    *ops: functions ``op(images, *, key) -> images`` that keep shape and dtype.

  Returns:
    The composed op.

  Example:
    >>> import functools
    >>> import jopt.augment as aug
    >>> train_aug = aug.sequence(
    ...     functools.partial(aug.random_crop, padding=4),
    ...     aug.random_flip_left_right,
    ...     functools.partial(aug.cutout, size=4))
    >>> images = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3))
    >>> out = jax.jit(train_aug)(images, key=jax.random.key(1))
    >>> out.shape, out.dtype
    ((4, 8, 8, 3), dtype('float32'))
    >>> flip = functools.partial(aug.random_flip_left_right, p=1.0)
    >>> bool(jnp.array_equal(aug.sequence(flip, flip)(images, key=jax.random.key(1)), images))
    True

  Reference: torchvision's ``transforms.Compose``, with keys instead of a global RNG.
  """
  ops = _check_ops("sequence", ops)

  def apply(images: Any, *, key: Any) -> jax.Array:
    images = check_images("sequence", images)
    keys = example_keys("sequence", key, images.shape[0])
    if not ops:
      return images
    sub = _split_per_example(keys, len(ops))
    for i, f in enumerate(ops):
      images = _run("sequence", i, f, images, sub[i])
    return images

  return apply


def random_choice(ops: Sequence[Op], p: Sequence[Any] | None = None) -> Op:
  r"""Build an op that applies one of ``ops``, chosen at random for each example.

  jopt's own: dm-pix has no composition. Example :math:`n` draws
  :math:`j_n \sim \mathrm{Categorical}(p)` (uniform when ``p`` is None) and

  .. math:: y_n = f_{j_n}(x_n; k_{n, j_n})

  Every op runs on the whole batch and each example keeps the result of its
  own choice (XLA has no per-example branches), so the cost is the sum of the
  ops' costs. The result is an op ``op(images, *, key)``.

  Args:
    ops: a non-empty sequence of functions ``op(images, *, key) -> images``
      that keep shape and dtype.
    p: probabilities, one per op, each >= 0, summing to 1; or None (uniform).

  Returns:
    The composed op.

  Example:
    >>> import functools
    >>> import jopt.augment as aug
    >>> lr = functools.partial(aug.random_flip_left_right, p=1.0)
    >>> ud = functools.partial(aug.random_flip_up_down, p=1.0)
    >>> pick = aug.random_choice([lr, ud], p=[0.7, 0.3])
    >>> images = jax.random.uniform(jax.random.key(0), (8, 4, 4, 3))
    >>> out = pick(images, key=jax.random.key(1))
    >>> is_lr = jnp.all(out == images[:, :, ::-1], axis=(1, 2, 3))
    >>> is_ud = jnp.all(out == images[:, ::-1], axis=(1, 2, 3))
    >>> bool(jnp.all(is_lr != is_ud))      # every example got exactly one of the two
    True

  Reference: torchvision's ``transforms.RandomChoice`` (which picks one op
  per call; here, per example).
  """
  where = "random_choice"
  if callable(ops):
    raise TypeError(f"{where}: ops must be a sequence of ops, got one function; pass [op].")
  ops = _check_ops(where, ops)
  if not ops:
    raise ValueError(f"{where}: ops is empty; pass at least one op.")
  if p is None:
    probs = np.full(len(ops), 1 / len(ops))
  else:
    probs = np.asarray(p, dtype=np.float64)
    if probs.shape != (len(ops),):
      raise ValueError(f"{where}: p has shape {probs.shape}, but there are {len(ops)} ops;"
                       " pass one probability per op.")
    if not np.all(np.isfinite(probs)) or np.any(probs < 0) or not math.isclose(
        float(probs.sum()), 1.0, rel_tol=1e-6, abs_tol=1e-6):
      raise ValueError(f"{where}: p={list(p)!r} must be finite, >= 0 and sum to 1.")
  logits = np.log(np.where(probs > 0, probs, 1.0)) + np.where(probs > 0, 0.0, -np.inf)

  def apply(images: Any, *, key: Any) -> jax.Array:
    images = check_images(where, images)
    keys = example_keys(where, key, images.shape[0])
    sub = _split_per_example(keys, len(ops) + 1)
    choice = jax.vmap(lambda k: jax.random.categorical(
        k, jnp.asarray(logits, jnp.float32)))(sub[-1]).astype(jnp.int32)
    outs = [_run(where, i, f, images, sub[i]) for i, f in enumerate(ops)]
    if len(outs) == 1:
      return outs[0]
    which = jnp.broadcast_to(choice[:, None, None, None], images.shape)
    return jax.lax.select_n(which, *outs)

  return apply


def random_apply(op: Op, p: Any = 0.5) -> Op:
  r"""Build an op that applies ``op`` to each example with probability ``p``, else keeps it.

  jopt's own: dm-pix has no composition. Example :math:`n` draws
  :math:`b_n \sim \mathrm{Bernoulli}(p)` and

  .. math:: y_n = f(x_n; k_n')\ \text{if}\ b_n = 1,\ \text{else}\ x_n

  ``op`` runs on the whole batch (XLA has no per-example branches) and each
  example keeps its result or its input. ``p=0`` is the identity. The
  result is an op ``op(images, *, key)``.

  Args:
    op: a function ``op(images, *, key) -> images`` that keeps shape and dtype.
    p: probability in [0, 1] that an example gets ``op``.

  Returns:
    The composed op.

  Example:
    >>> import functools
    >>> import jopt.augment as aug
    >>> jitter = aug.random_apply(functools.partial(aug.color_jitter, brightness=0.8,
    ...     contrast=0.8, saturation=0.8, hue=0.2), p=0.8)   # SimCLR's color distortion
    >>> images = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3))
    >>> out = jax.jit(jitter)(images, key=jax.random.key(1))
    >>> out.shape, bool(jnp.all((out >= 0) & (out <= 1)))
    ((4, 8, 8, 3), True)
    >>> flip = functools.partial(aug.random_flip_left_right, p=1.0)
    >>> out = aug.random_apply(flip, p=0.5)(images, key=jax.random.key(1))
    >>> kept = jnp.all(out == images, axis=(1, 2, 3))
    >>> flipped = jnp.all(out == images[:, :, ::-1], axis=(1, 2, 3))
    >>> bool(jnp.all(kept != flipped))    # each example: itself or its mirror
    True

  Reference: torchvision's ``transforms.RandomApply`` (which decides once per
  call; here, per example); Chen et al., *A Simple Framework for Contrastive
  Learning of Visual Representations*, ICML 2020 (color jitter with p = 0.8).
  """
  where = "random_apply"
  (op,) = _check_ops(where, (op,))
  p = check_probability(where, p)

  def apply(images: Any, *, key: Any) -> jax.Array:
    images = check_images(where, images)
    keys = example_keys(where, key, images.shape[0])
    sub = _split_per_example(keys, 2)
    out = _run(where, 0, op, images, sub[0])
    on = jax.vmap(lambda k: jax.random.bernoulli(k, p))(sub[1])
    return jnp.where(on[:, None, None, None], out, images)

  return apply
