"""Noise and occlusion: additive Gaussian noise, cutout, random erasing."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from jopt._core.validate import static_int
from jopt.augment._common import (check_images, check_interval, check_number,
                                  check_probability, compute_dtype, example_keys,
                                  lerp, per_example, randint_below)

__all__ = ["gaussian_noise", "cutout", "random_erasing"]

_ATTEMPTS = 10


def gaussian_noise(images: Any, *, key: Any, std: Any) -> jax.Array:
  r"""Add independent Gaussian noise to every pixel, then clip to [0, 1].

  jopt's own: dm-pix has no additive noise.

  .. math:: y = \mathrm{clip}(x + \sigma\, \varepsilon, 0, 1), \qquad
     \varepsilon_{n,h,w,c} \sim \mathcal N(0, 1)

  with the noise of example :math:`n` drawn from its own key. Works for any
  number of channels; noise is drawn in float32 (or float64) and the result
  cast to the input dtype. ``std=0`` returns the input unchanged.

  Args:
    images: float array ``(N, H, W, C)``, values in [0, 1].
    key: one PRNG key (split into one per example) or ``N`` keys.
    std: :math:`\sigma \ge 0`, in units of the [0, 1] pixel range.

  Returns:
    The noisy images, same shape and dtype.

  Example:
    >>> import jopt.augment as aug
    >>> gray = jnp.full((4, 8, 8, 3), 0.5)
    >>> out = aug.gaussian_noise(gray, key=jax.random.key(1), std=0.05)
    >>> round(float(jnp.std(out - gray)), 2)     # the sample std of 768 draws
    0.05
    >>> bool(jnp.array_equal(aug.gaussian_noise(gray, key=jax.random.key(1), std=0.0), gray))
    True

  Reference: torchvision's ``GaussianNoise(mean=0, sigma, clip=True)``.
  """
  op = "gaussian_noise"
  images = check_images(op, images)
  std = check_number(op, "std", std, 0.0)
  keys = example_keys(op, key, images.shape[0])
  ct = compute_dtype(images.dtype)

  def one(k, x):
    noisy = jnp.clip(x.astype(ct) + jnp.asarray(std, ct) * jax.random.normal(k, x.shape, ct),
                     0, 1)
    return jnp.where(jnp.asarray(std, ct) == 0, x, noisy.astype(x.dtype))

  return per_example(one, keys, images)


def _fill_box(k: jax.Array, x: jax.Array, rows: jax.Array, cols: jax.Array,
              fill: Any) -> jax.Array:
  """``x`` with the pixels where ``rows[:, None] & cols[None, :]`` replaced by ``fill``
  (a number, or ``"random"``: uniform noise in [0, 1) drawn from ``k``)."""
  box = (rows[:, None] & cols[None, :])[:, :, None]
  if isinstance(fill, str):
    value = jax.random.uniform(k, x.shape, compute_dtype(x.dtype)).astype(x.dtype)
  else:
    value = jnp.asarray(fill, x.dtype)
  return jnp.where(box, value, x)


def _check_fill(op: str, fill: Any) -> Any:
  if isinstance(fill, str):
    if fill != "random":
      raise ValueError(f"{op}: fill={fill!r} must be a number or 'random'.")
    return fill
  return check_number(op, "fill", fill)


def cutout(images: Any, *, key: Any, size: int, fill: Any = 0.0, p: Any = 1.0) -> jax.Array:
  r"""Blank out a ``size`` x ``size`` square at a random center in each image.

  jopt's own: dm-pix has no occlusion ops. Per example, with probability
  :math:`p`, the center :math:`(c_h, c_w)` is a uniform pixel and

  .. math:: y_{h,w,c} = \text{fill} \quad \text{for}\ h \in [t, t + S) \cap [0, H),\
     w \in [l, l + S) \cap [0, W), \qquad t = c_h - \lfloor S/2 \rfloor,\
     l = c_w - \lfloor S/2 \rfloor

  clipped at the borders (so a square near an edge is partly outside, as in
  the paper). ``size=0`` or ``p=0`` is the identity. Works for any number of
  channels.

  Args:
    images: float array ``(N, H, W, C)``, values in [0, 1].
    key: one PRNG key (split into one per example) or ``N`` keys.
    size: the square's side :math:`S`, an integer >= 0 (static).
    fill: the value written into the square, or ``"random"`` for uniform
      noise in [0, 1).
    p: probability in [0, 1] that an example gets a square.

  Returns:
    The images with their squares, same shape and dtype.

  Example:
    >>> import jopt.augment as aug
    >>> ones = jnp.ones((4, 8, 8, 1))
    >>> out = aug.cutout(ones, key=jax.random.key(1), size=4)
    >>> blanked = (out == 0).sum(axis=(1, 2, 3))  # 4 x 4 = 16, fewer where it leaves the image
    >>> bool(jnp.all((blanked > 0) & (blanked <= 16)))
    True

  Reference: DeVries & Taylor, *Improved Regularization of Convolutional
  Neural Networks with Cutout*, 2017. Departure: their code spans
  ``[c - S//2, c + S//2)``, one pixel short for odd :math:`S`; ours is
  :math:`S` wide.
  """
  op = "cutout"
  images = check_images(op, images)
  s = static_int("size", size, f"{op}: ", 0)
  fill = _check_fill(op, fill)
  p = check_probability(op, p)
  n, h, w, _ = images.shape
  keys = example_keys(op, key, n)
  ct = compute_dtype(images.dtype)

  def one(k, x):
    k, kf = jax.random.split(k) if isinstance(fill, str) else (k, None)
    u = jax.random.uniform(k, (3,), ct)
    top = randint_below(u[0], h) - s // 2
    left = randint_below(u[1], w) - s // 2
    on = u[2] < p
    r = jnp.arange(h, dtype=jnp.int32)
    c = jnp.arange(w, dtype=jnp.int32)
    rows = (r >= top) & (r < top + s) & on
    cols = (c >= left) & (c < left + s)
    return _fill_box(kf, x, rows, cols, fill)

  return per_example(one, keys, images)


def random_erasing(images: Any, *, key: Any, p: Any = 0.5, scale: Any = (0.02, 0.33),
                   ratio: Any = (0.3, 3.3), fill: Any = 0.0) -> jax.Array:
  r"""Erase a random rectangle of random area and aspect ratio, with probability ``p``.

  jopt's own: dm-pix has no occlusion ops. Per example, with probability
  :math:`p`, as torchvision's ``RandomErasing``: up to 10 tries of

  .. math:: a \sim U(\text{scale})\, H W, \quad r = e^{u},\ u \sim U(\log r_0, \log r_1),
     \quad h = [\sqrt{a r}],\ w = [\sqrt{a / r}]

  (:math:`r` is height / width; :math:`[\cdot]` rounds half to even); the first
  box with :math:`h < H` and :math:`w < W` is placed at a uniform integer
  offset and filled; if none fits the image is left unchanged. ``p=0`` or
  ``scale=(0, 0)`` is the identity. Works for any number of channels.

  Args:
    images: float array ``(N, H, W, C)``, values in [0, 1].
    key: one PRNG key (split into one per example) or ``N`` keys.
    p: probability in [0, 1] that an example is erased.
    scale: ``(lo, hi)`` in [0, 1], the erased area as a fraction of the image.
    ratio: ``(lo, hi)`` with ``0 < lo <= hi``, the box aspect height / width.
    fill: the value written into the box, or ``"random"`` for uniform noise
      in [0, 1) (torchvision's ``"random"`` draws standard normal noise, which
      leaves [0, 1]).

  Returns:
    The erased images, same shape and dtype.

  Example:
    >>> import jopt.augment as aug
    >>> ones = jnp.ones((4, 8, 8, 1))
    >>> out = aug.random_erasing(ones, key=jax.random.key(1), p=1.0)
    >>> hole = out[..., 0] == 0
    >>> rows, cols = hole.any(axis=2).sum(axis=1), hole.any(axis=1).sum(axis=1)
    >>> bool(jnp.all(hole.sum(axis=(1, 2)) == rows * cols))   # each hole is one rectangle
    True
    >>> bool(jnp.array_equal(aug.random_erasing(ones, key=jax.random.key(1), p=0.0), ones))
    True

  Reference: Zhong et al., *Random Erasing Data Augmentation*, AAAI 2020;
  torchvision's ``RandomErasing`` (same box rule and defaults).
  """
  op = "random_erasing"
  images = check_images(op, images)
  p = check_probability(op, p)
  sc = check_interval(op, "scale", scale, 0.0, 1.0)
  rt = check_interval(op, "ratio", ratio, 0.0, None, low_open=True)
  if not all(isinstance(v, float) for v in rt):
    raise TypeError(f"{op}: ratio must be concrete numbers, not traced values.")
  fill = _check_fill(op, fill)
  n, h, w, _ = images.shape
  keys = example_keys(op, key, n)
  ct = compute_dtype(images.dtype)
  log_lo, log_hi = math.log(rt[0]), math.log(rt[1])

  def one(k, x):
    k, kf = jax.random.split(k) if isinstance(fill, str) else (k, None)
    u = jax.random.uniform(k, (2 * _ATTEMPTS + 3,), ct)
    target = (h * w) * lerp(u[:_ATTEMPTS], sc[0], sc[1])
    aspect = jnp.exp(lerp(u[_ATTEMPTS:2 * _ATTEMPTS], log_lo, log_hi))
    hs = jnp.round(jnp.sqrt(target * aspect)).astype(jnp.int32)
    ws = jnp.round(jnp.sqrt(target / aspect)).astype(jnp.int32)
    ok = (hs < h) & (ws < w)
    first = jnp.argmax(ok)
    bh, bw = hs[first], ws[first]
    top = randint_below(u[-3], h - bh + 1)
    left = randint_below(u[-2], w - bw + 1)
    on = (u[-1] < p) & ok.any()
    r = jnp.arange(h, dtype=jnp.int32)
    c = jnp.arange(w, dtype=jnp.int32)
    rows = (r >= top) & (r < top + bh) & on
    cols = (c >= left) & (c < left + bw)
    return _fill_box(kf, x, rows, cols, fill)

  return per_example(one, keys, images)
