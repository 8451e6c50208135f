r"""Mixing ops that change labels too: mixup and cutmix.

Both pair example :math:`n` with example :math:`\pi(n)` of one random
permutation of the batch and return mixed labels. Labels are one-hot or soft
``(N, K)`` float arrays; their rows summing to one stay summing to one.
The permutation is a batch-level draw, so ``key`` is one PRNG key here (not
a batch of keys).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt.augment._common import (check_images, check_number, compute_dtype,
                                  example_keys)

__all__ = ["mixup", "cutmix"]


def _check_labels(op: str, labels: Any, n: int) -> jax.Array:
  if not (hasattr(labels, "dtype") and hasattr(labels, "shape")):
    labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.floating):
    raise TypeError(
        f"{op}: labels has dtype {labels.dtype}, but mixing needs one-hot or soft"
        " float labels of shape (N, K); pass jax.nn.one_hot(labels, num_classes).")
  if labels.ndim != 2 or labels.shape[0] != n:
    raise ValueError(
        f"{op}: labels must have shape (N, K) = ({n}, num_classes) to match images,"
        f" got {tuple(labels.shape)}; for integer class ids pass"
        " jax.nn.one_hot(labels, num_classes).")
  return jnp.asarray(labels)


def _batch_key(op: str, key: Any) -> jax.Array:
  """The one key of a batch-level draw; a batch of keys is an error."""
  arr = key if hasattr(key, "dtype") else np.asarray(key)
  typed = jax.dtypes.issubdtype(arr.dtype, jax.dtypes.prng_key)
  if np.ndim(arr) == (1 if typed else 2):
    raise ValueError(
        f"{op}: key must be one PRNG key (the partner permutation is drawn once per"
        f" batch), got a batch of {np.shape(arr)[0]} keys; pass jax.random.key(seed).")
  return example_keys(op, key, 1)[0]


def _lambdas(key: jax.Array, alpha: Any, n: int, per_example: bool, dtype: Any) -> jax.Array:
  """``Beta(alpha, alpha)`` draws, shape ``(n,)`` (one repeated unless per example);
  1 (no mixing) when ``alpha == 0``, as Zhang et al.'s code."""
  a = jnp.asarray(alpha, dtype)
  safe = jnp.where(a > 0, a, jnp.ones((), dtype))
  lam = jax.random.beta(key, safe, safe, (n,) if per_example else (), dtype)
  return jnp.broadcast_to(jnp.where(a > 0, lam, jnp.ones((), dtype)), (n,))


def _mix(a: jax.Array, b: jax.Array, lam: jax.Array) -> jax.Array:
  """``lam * a + (1 - lam) * b`` per example, in float32 (or float64), in ``a``'s dtype."""
  ct = compute_dtype(a.dtype)
  lam = lam.astype(ct).reshape((-1,) + (1,) * (a.ndim - 1))
  return (lam * a.astype(ct) + (1 - lam) * b.astype(ct)).astype(a.dtype)


def _check_flag(op: str, per_example: Any) -> None:
  if not isinstance(per_example, bool):
    raise TypeError(f"{op}: per_example={per_example!r} must be a Python bool (static).")


def mixup(images: Any, labels: Any, *, key: Any, alpha: Any = 1.0,
          per_example: bool = False) -> tuple[jax.Array, jax.Array]:
  r"""Blend each example and its label with a randomly paired partner from the batch.

  jopt's own: dm-pix has no mixing ops. With a random permutation :math:`\pi`
  of the batch and :math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)`,

  .. math:: \tilde x_n = \lambda x_n + (1 - \lambda) x_{\pi(n)}, \qquad
     \tilde y_n = \lambda y_n + (1 - \lambda) y_{\pi(n)}

  One :math:`\lambda` for the whole batch, as Zhang et al. (2018) and their
  code; ``per_example=True`` draws one per example (timm's ``"elem"`` mode).
  ``alpha=0`` means :math:`\lambda = 1`: the identity. A convex blend keeps
  [0, 1] images in [0, 1] and rows of ``labels`` that sum to one summing to
  one. Arithmetic in float32 (or float64); images and labels keep their dtypes.

  Args:
    images: float array ``(N, H, W, C)``, values in [0, 1].
    labels: float array ``(N, K)``, one-hot or soft (integer class ids: use
      ``jax.nn.one_hot(labels, K)``).
    key: one PRNG key (the permutation is drawn once per batch).
    alpha: :math:`\alpha \ge 0`.
    per_example: Python bool (static), one :math:`\lambda` per example.

  Returns:
    ``(images, labels)``, mixed.

  Example:
    >>> import jopt.augment as aug
    >>> images = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3))
    >>> classes = jnp.array([3, 1, 4, 1])
    >>> mix = jax.jit(aug.mixup, static_argnames="alpha")
    >>> x, y = mix(images, jax.nn.one_hot(classes, 10), key=jax.random.key(1), alpha=0.2)
    >>> x.shape, y.shape
    ((4, 8, 8, 3), (4, 10))
    >>> bool(jnp.allclose(y.sum(axis=1), 1.0))          # mixed labels still sum to one
    True
    >>> bool(jnp.allclose(x.mean(axis=0), images.mean(axis=0), atol=1e-6))  # batch mean kept
    True

  Reference: Zhang et al., *mixup: Beyond Empirical Risk Minimization*, ICLR 2018.
  """
  op = "mixup"
  images = check_images(op, images)
  n = images.shape[0]
  labels = _check_labels(op, labels, n)
  alpha = check_number(op, "alpha", alpha, 0.0)
  _check_flag(op, per_example)
  k_perm, k_lam = jax.random.split(_batch_key(op, key))
  perm = jax.random.permutation(k_perm, n)
  lam = _lambdas(k_lam, alpha, n, per_example, compute_dtype(images.dtype))
  return _mix(images, images[perm], lam), _mix(labels, labels[perm], lam)


def _box_1d(key: jax.Array, size: int, cut: jax.Array) -> jax.Array:
  """The mask ``[c - cut//2, c + cut//2)`` clipped to ``[0, size)``, ``c ~ U{0..size-1}``."""
  c = jax.random.randint(key, cut.shape, 0, size, dtype=jnp.int32)
  lo = c - cut // 2
  hi = c + cut // 2
  r = jnp.arange(size, dtype=jnp.int32)
  return (r >= lo[..., None]) & (r < hi[..., None])


def cutmix(images: Any, labels: Any, *, key: Any, alpha: Any = 1.0,
           per_example: bool = False) -> tuple[jax.Array, jax.Array]:
  r"""Paste a random box from a paired partner into each example; mix labels by area.

  jopt's own: dm-pix has no mixing ops. With a random permutation :math:`\pi`,
  :math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)`, a box of side
  :math:`\lfloor H\sqrt{1-\lambda}\rfloor \times \lfloor W\sqrt{1-\lambda}\rfloor`
  centered at a uniform pixel and clipped to the image (the mask :math:`M`,
  1 inside the box),

  .. math:: \tilde x_n = (1 - M) \odot x_n + M \odot x_{\pi(n)}, \qquad
     \tilde y_n = \lambda' y_n + (1 - \lambda') y_{\pi(n)},\quad
     \lambda' = 1 - \frac{\sum M}{H W}

  so the label weight is the box's actual area after clipping, as in Yun et
  al.'s code (whose box spans ``[c - s//2, c + s//2)``, which we keep). One
  :math:`\lambda` and box for the batch, as the paper; ``per_example=True``
  draws them per example. ``alpha=0`` is the identity (no box). Works for any
  number of channels; images and labels keep their dtypes.

  Args:
    images: float array ``(N, H, W, C)``, values in [0, 1].
    labels: float array ``(N, K)``, one-hot or soft (integer class ids: use
      ``jax.nn.one_hot(labels, K)``).
    key: one PRNG key (the permutation is drawn once per batch).
    alpha: :math:`\alpha \ge 0`.
    per_example: Python bool (static), one :math:`\lambda` and box per example.

  Returns:
    ``(images, labels)``, mixed.

  Example:
    >>> import jopt.augment as aug
    >>> images = jnp.arange(4.0)[:, None, None, None] * jnp.ones((4, 8, 8, 3))  # image n is n
    >>> labels = jax.nn.one_hot(jnp.arange(4), 4)
    >>> x, y = jax.jit(aug.cutmix)(images, labels, key=jax.random.key(1))
    >>> x.shape, y.shape
    ((4, 8, 8, 3), (4, 4))
    >>> own = (x == images).mean(axis=(1, 2, 3))   # the share of each example's own pixels
    >>> bool(jnp.allclose(own, jnp.diag(y)))         # is its own label's weight
    True

  Reference: Yun et al., *CutMix: Regularization Strategy to Train Strong
  Classifiers with Localizable Features*, ICCV 2019.
  """
  op = "cutmix"
  images = check_images(op, images)
  n, h, w, _ = images.shape
  labels = _check_labels(op, labels, n)
  alpha = check_number(op, "alpha", alpha, 0.0)
  _check_flag(op, per_example)
  ct = compute_dtype(images.dtype)
  k_perm, k_lam, k_h, k_w = jax.random.split(_batch_key(op, key), 4)
  perm = jax.random.permutation(k_perm, n)
  lam = _lambdas(k_lam, alpha, n, per_example, ct)
  rat = jnp.sqrt(1 - lam)
  cut_h = jnp.floor(h * rat).astype(jnp.int32)
  cut_w = jnp.floor(w * rat).astype(jnp.int32)
  if not per_example:
    cut_h, cut_w = cut_h[:1], cut_w[:1]
  rows, cols = _box_1d(k_h, h, cut_h), _box_1d(k_w, w, cut_w)  # (n or 1, H), (n or 1, W)
  mask = rows[:, :, None] & cols[:, None, :]
  area = jnp.sum(rows, axis=1, dtype=jnp.int32) * jnp.sum(cols, axis=1, dtype=jnp.int32)
  lam_adj = jnp.broadcast_to(1 - area.astype(ct) / (h * w), (n,))
  out = jnp.where(mask[..., None], images[perm], images)
  return out, _mix(labels, labels[perm], lam_adj)
