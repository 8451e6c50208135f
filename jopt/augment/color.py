"""Color ops on RGB images: brightness, contrast, saturation, hue, and color jitter.

All four follow dm-pix's (and ``tf.image``'s) definitions, which differ from
torchvision's: brightness is *added* (torchvision multiplies), contrast
stretches each channel about its own mean (torchvision: about the mean of the
grayscale image), saturation scales the HSV saturation (torchvision blends
with the grayscale image). These are the definitions SimCLR's color
distortion uses. Every op clips its result to [0, 1], and returns its input
bit for bit where the drawn parameter is neutral (delta 0, factor 1), so
strength 0 is the identity.
"""

from __future__ import annotations

from typing import Any, Callable

import dm_pix as pix
import jax
import jax.numpy as jnp

from jopt.augment._common import (check_images, check_number, compute_dtype,
                                  example_keys, keep_where, lerp, per_example,
                                  pix_promotion, uniform)

__all__ = ["random_brightness", "random_contrast", "random_saturation", "random_hue",
           "color_jitter"]


def _brightness(x: jax.Array, delta: jax.Array) -> jax.Array:
  with pix_promotion():
    out = pix.adjust_brightness(x, delta)
  return keep_where(delta == 0, x, jnp.clip(out, 0, 1))


def _contrast(x: jax.Array, factor: jax.Array) -> jax.Array:
  with pix_promotion():
    out = pix.adjust_contrast(x, factor)
  return keep_where(factor == 1, x, jnp.clip(out, 0, 1))


def _saturation(x: jax.Array, factor: jax.Array) -> jax.Array:
  with pix_promotion():
    out = pix.adjust_saturation(x, factor)
  return keep_where(factor == 1, x, jnp.clip(out, 0, 1))


def _hue(x: jax.Array, delta: jax.Array) -> jax.Array:
  with pix_promotion():
    out = pix.adjust_hue(x, delta)
  return keep_where(delta == 0, x, jnp.clip(out, 0, 1))


def _hsv_adjust(x: jax.Array, factor: jax.Array, delta: jax.Array) -> jax.Array:
  """Saturation factor and hue shift in one HSV round trip (dm-pix's conversions)."""
  with pix_promotion():
    hsv = pix.rgb_to_hsv(x)
    hue = (hsv[..., 0] + delta) % 1.0
    sat = jnp.clip(hsv[..., 1] * factor, 0, 1)
    out = pix.hsv_to_rgb(jnp.stack([hue, sat, hsv[..., 2]], axis=-1))
  return keep_where((factor == 1) & (delta == 0), x, jnp.clip(out, 0, 1))


def _factor_range(strength: Any) -> tuple[Any, Any]:
  """torchvision's ColorJitter range for a strength s: [max(0, 1 - s), 1 + s]."""
  if isinstance(strength, float):
    return max(0.0, 1.0 - strength), 1.0 + strength
  return jnp.maximum(0, 1 - strength), 1 + strength


def _one_param_op(op: str, images: Any, key: Any, draw: Callable[[jax.Array, Any], jax.Array],
                  apply: Callable[[jax.Array, jax.Array], jax.Array]) -> jax.Array:
  images = check_images(op, images, rgb=True)
  keys = example_keys(op, key, images.shape[0])
  ct = compute_dtype(images.dtype)

  def one(k, x):
    return apply(x.astype(ct), draw(k, ct)).astype(x.dtype)

  return per_example(one, keys, images)


def random_brightness(images: Any, *, key: Any, max_delta: Any) -> jax.Array:
  r"""Add a random brightness offset to each image, then clip to [0, 1].

  dm-pix's ``pix.adjust_brightness`` per example, with its own offset:

  .. math:: y = \mathrm{clip}(x + \delta, 0, 1), \qquad \delta \sim U(-d, d)

  Args:
    images: float RGB array ``(N, H, W, 3)``, values in [0, 1].
    key: one PRNG key (split into one per example) or ``N`` keys.
    max_delta: :math:`d \ge 0`; 0 is the identity.

  Returns:
    The adjusted images, same shape and dtype.

  Example:
    >>> import jopt.augment as aug
    >>> gray = jnp.full((4, 8, 8, 3), 0.5)
    >>> out = aug.random_brightness(gray, key=jax.random.key(1), max_delta=0.2)
    >>> delta = out - gray                  # one offset per image, |delta| <= 0.2
    >>> bool(jnp.all(delta == delta[:, :1, :1, :1])), bool(jnp.all(jnp.abs(delta) <= 0.2))
    (True, True)

  Reference: dm-pix's ``random_brightness`` (``tf.image.random_brightness``),
  plus the clip.
  """
  op = "random_brightness"
  d = check_number(op, "max_delta", max_delta, 0.0)
  return _one_param_op(op, images, key, lambda k, ct: uniform(k, -d, d, ct), _brightness)


def random_contrast(images: Any, *, key: Any, strength: Any) -> jax.Array:
  r"""Scale each image's contrast by a random factor about its per-channel mean; clip.

  dm-pix's ``pix.adjust_contrast`` per example, with its own factor:

  .. math:: y = \mathrm{clip}(f\,(x - \bar x_c) + \bar x_c, 0, 1),
     \qquad f \sim U(\max(0, 1 - s),\ 1 + s)

  where :math:`\bar x_c` is the mean of channel :math:`c` over the image.

  Args:
    images: float RGB array ``(N, H, W, 3)``, values in [0, 1].
    key: one PRNG key (split into one per example) or ``N`` keys.
    strength: :math:`s \ge 0` (torchvision's ``contrast``); 0 is the identity.

  Returns:
    The adjusted images, same shape and dtype.

  Example:
    >>> import jopt.augment as aug
    >>> images = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3), minval=0.25, maxval=0.75)
    >>> out = aug.random_contrast(images, key=jax.random.key(1), strength=0.4)
    >>> out.shape, out.dtype
    ((4, 8, 8, 3), dtype('float32'))
    >>> mean = lambda x: x.mean(axis=(1, 2))   # per image and channel; kept (nothing clipped)
    >>> bool(jnp.allclose(mean(out), mean(images), atol=1e-6))
    True

  Reference: dm-pix's ``adjust_contrast`` (``tf.image.adjust_contrast``);
  torchvision's ``ColorJitter`` for the factor range (it uses the grayscale mean).
  """
  op = "random_contrast"
  lo, hi = _factor_range(check_number(op, "strength", strength, 0.0))
  return _one_param_op(op, images, key, lambda k, ct: uniform(k, lo, hi, ct), _contrast)


def random_saturation(images: Any, *, key: Any, strength: Any) -> jax.Array:
  r"""Scale each image's HSV saturation by a random factor; clip.

  dm-pix's ``pix.adjust_saturation`` per example, with its own factor:

  .. math:: (h, s, v) = \mathrm{hsv}(x), \quad
     y = \mathrm{rgb}(h,\ \mathrm{clip}(f s, 0, 1),\ v), \quad f \sim U(\max(0, 1 - k),\ 1 + k)

  Args:
    images: float RGB array ``(N, H, W, 3)``, values in [0, 1].
    key: one PRNG key (split into one per example) or ``N`` keys.
    strength: :math:`k \ge 0` (torchvision's ``saturation``); 0 is the identity.

  Returns:
    The adjusted images, same shape and dtype.

  Example:
    >>> import jopt.augment as aug
    >>> images = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3))
    >>> out = aug.random_saturation(images, key=jax.random.key(1), strength=0.4)
    >>> out.shape, out.dtype
    ((4, 8, 8, 3), dtype('float32'))
    >>> bool(jnp.allclose(out.max(axis=-1), images.max(axis=-1), atol=1e-6))  # the value v is kept
    True

  Reference: dm-pix's ``adjust_saturation`` (``tf.image.adjust_saturation``);
  torchvision's ``ColorJitter`` for the factor range (it blends with grayscale).
  """
  op = "random_saturation"
  lo, hi = _factor_range(check_number(op, "strength", strength, 0.0))
  return _one_param_op(op, images, key, lambda k, ct: uniform(k, lo, hi, ct), _saturation)


def random_hue(images: Any, *, key: Any, max_delta: Any) -> jax.Array:
  r"""Rotate each image's hue by a random fraction of a turn; clip.

  dm-pix's ``pix.adjust_hue`` per example, with its own offset:

  .. math:: (h, s, v) = \mathrm{hsv}(x), \quad y = \mathrm{rgb}((h + \delta) \bmod 1,\ s,\ v),
     \quad \delta \sim U(-d, d)

  Args:
    images: float RGB array ``(N, H, W, 3)``, values in [0, 1].
    key: one PRNG key (split into one per example) or ``N`` keys.
    max_delta: :math:`d \in [0, 0.5]` in turns (0.5 is half the color wheel);
      0 is the identity.

  Returns:
    The adjusted images, same shape and dtype.

  Example:
    >>> import jopt.augment as aug
    >>> images = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3))
    >>> out = aug.random_hue(images, key=jax.random.key(1), max_delta=0.1)
    >>> out.shape, out.dtype
    ((4, 8, 8, 3), dtype('float32'))
    >>> spread = lambda x: jnp.stack([x.min(axis=-1), x.max(axis=-1)])
    >>> bool(jnp.allclose(spread(out), spread(images), atol=1e-6))  # s and v are kept
    True

  Reference: dm-pix's ``random_hue`` (``tf.image.random_hue``); torchvision's
  ``ColorJitter(hue=d)`` draws the same shift.
  """
  op = "random_hue"
  d = check_number(op, "max_delta", max_delta, 0.0, 0.5)
  return _one_param_op(op, images, key, lambda k, ct: uniform(k, -d, d, ct), _hue)


def color_jitter(images: Any, *, key: Any, brightness: Any = 0.0, contrast: Any = 0.0,
                 saturation: Any = 0.0, hue: Any = 0.0, random_order: bool = True
                 ) -> jax.Array:
  r"""Brightness, contrast, saturation and hue jitter, in a random order per example.

  The four dm-pix adjustments above, each with its own random parameter per
  example and a clip to [0, 1] after each:

  .. math:: \delta_b \sim U(-b, b),\ f_c \sim U(\max(0,1-c), 1+c),\
     f_s \sim U(\max(0,1-s), 1+s),\ \delta_h \sim U(-h, h)

  applied in an order drawn per example (``random_order=True``, as torchvision
  and SimCLR do) or in the fixed order brightness, contrast, saturation, hue.
  An op whose strength is 0 leaves the image unchanged, so all zeros is the
  identity. XLA has no per-example branches, so with a random order each of
  the four slots evaluates brightness, contrast and one HSV round trip (the
  chosen saturation or hue change, or none) and keeps the chosen result:
  about three times the work of the fixed order.

  Args:
    images: float RGB array ``(N, H, W, 3)``, values in [0, 1].
    key: one PRNG key (split into one per example) or ``N`` keys.
    brightness: :math:`b \ge 0`, the largest additive brightness offset.
    contrast: :math:`c \ge 0`, the contrast factor spread.
    saturation: :math:`s \ge 0`, the saturation factor spread.
    hue: :math:`h \in [0, 0.5]`, the largest hue shift in turns.
    random_order: Python bool (static).

  Returns:
    The jittered images, same shape and dtype.

  Example:
    >>> import jopt.augment as aug
    >>> images = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3))
    >>> jitter = jax.jit(aug.color_jitter)   # strengths traced: changing them never recompiles
    >>> out = jitter(images, key=jax.random.key(1), brightness=0.4, contrast=0.4,
    ...              saturation=0.4, hue=0.1)
    >>> out.shape, bool(jnp.all((out >= 0) & (out <= 1)))
    ((4, 8, 8, 3), True)
    >>> same = jitter(images, key=jax.random.key(1), brightness=0.0, contrast=0.0,
    ...               saturation=0.0, hue=0.0)
    >>> bool(jnp.array_equal(same, images))   # all strengths 0: the identity
    True

  Reference: Chen et al., *A Simple Framework for Contrastive Learning of
  Visual Representations* (SimCLR), ICML 2020, Appendix A (``color_jitter``
  with random order: the same four tf-style ops and clips; its brightness
  spread is our ``brightness``); torchvision's ``ColorJitter`` for the
  argument names and ranges (its brightness multiplies, ours adds).
  """
  op = "color_jitter"
  images = check_images(op, images, rgb=True)
  b = check_number(op, "brightness", brightness, 0.0)
  c = _factor_range(check_number(op, "contrast", contrast, 0.0))
  s = _factor_range(check_number(op, "saturation", saturation, 0.0))
  h = check_number(op, "hue", hue, 0.0, 0.5)
  if not isinstance(random_order, bool):
    raise TypeError(f"{op}: random_order={random_order!r} must be a Python bool (static).")
  keys = example_keys(op, key, images.shape[0])
  ct = compute_dtype(images.dtype)

  def one(k, x):
    u = jax.random.uniform(k, (8,), ct)
    db, fc = lerp(u[0], -b, b), lerp(u[1], c[0], c[1])
    fs, dh = lerp(u[2], s[0], s[1]), lerp(u[3], -h, h)
    y = x.astype(ct)
    if not random_order:
      y = _hue(_saturation(_contrast(_brightness(y, db), fc), fs), dh)
      return y.astype(x.dtype)
    # each slot: the chosen one of brightness / contrast (cheap, both computed),
    # then one HSV round trip that is the chosen saturation or hue change (or none)
    order = jnp.argsort(u[4:])  # a uniform random permutation of the four ops
    one_, zero = jnp.ones((), ct), jnp.zeros((), ct)
    for slot in range(4):
      op_i = order[slot]
      y = jnp.where(op_i == 0, _brightness(y, db), jnp.where(op_i == 1, _contrast(y, fc), y))
      y = _hsv_adjust(y, jnp.where(op_i == 2, fs, one_), jnp.where(op_i == 3, dh, zero))
    return y.astype(x.dtype)

  return per_example(one, keys, images)
