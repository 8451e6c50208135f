r"""PIL-style pixel ops on one HWC image, for RandAugment (not public API).

jopt's own where dm-pix lacks them: PIL's ``ImageEnhance`` blends
(brightness, color, contrast, sharpness), posterize, autocontrast and
equalize; dm-pix's ``pix.solarize`` and ``pix.rgb_to_grayscale`` where it has
them. Inputs are float images in [0, 1] in float32 or float64; outputs are
clipped to [0, 1]. Each blend is :math:`(1 - f) d + f x` with :math:`d` the
op's degenerate image, so factor 1 returns :math:`x` exactly.
"""

from __future__ import annotations

import dm_pix as pix
import jax
import jax.numpy as jnp

from jopt.augment._common import pix_promotion

__all__ = ["blend", "brightness", "color", "contrast", "sharpness", "posterize",
           "solarize", "auto_contrast", "equalize"]


def blend(degenerate: jax.Array, x: jax.Array, factor: jax.Array) -> jax.Array:
  """PIL's ``Image.blend(degenerate, x, factor)``, clipped to [0, 1]."""
  return jnp.clip((1 - factor) * degenerate + factor * x, 0, 1)


def _gray(x: jax.Array) -> jax.Array:
  with pix_promotion():
    return pix.rgb_to_grayscale(x).astype(x.dtype)  # (H, W, 1), Rec. 601 luma as PIL's "L"


def brightness(x: jax.Array, factor: jax.Array) -> jax.Array:
  """``ImageEnhance.Brightness``: blend with black, i.e. ``factor * x``."""
  return blend(jnp.zeros_like(x), x, factor)


def color(x: jax.Array, factor: jax.Array) -> jax.Array:
  """``ImageEnhance.Color``: blend with the grayscale image (RGB only)."""
  return blend(_gray(x), x, factor)


def contrast(x: jax.Array, factor: jax.Array) -> jax.Array:
  """``ImageEnhance.Contrast``: blend with the mean of the grayscale image (RGB only)."""
  return blend(jnp.mean(_gray(x)), x, factor)


def sharpness(x: jax.Array, factor: jax.Array) -> jax.Array:
  """``ImageEnhance.Sharpness``: blend with PIL's SMOOTH filter (3x3, center 5, others 1,
  over 13) applied to the interior; border pixels are their own degenerate."""
  h, w = x.shape[0], x.shape[1]
  if h < 3 or w < 3:
    return x
  acc = 4 * x[1:-1, 1:-1]
  for dy in range(3):
    for dx in range(3):
      acc = acc + x[dy:h - 2 + dy, dx:w - 2 + dx]
  smooth = x.at[1:-1, 1:-1].set(acc / 13)
  return blend(smooth, x, factor)


def posterize(x: jax.Array, bits: jax.Array) -> jax.Array:
  """Keep the top ``bits`` bits of each 8-bit value ``round(255 x)``; 8 bits return ``x``."""
  v = jnp.round(x * 255)
  step = jnp.exp2((8 - bits).astype(x.dtype))
  out = jnp.floor(v / step) * step / 255
  return jnp.where(bits >= 8, x, out)


def solarize(x: jax.Array, threshold: jax.Array) -> jax.Array:
  """dm-pix's ``pix.solarize``: invert the values ``>= threshold``."""
  with pix_promotion():
    return pix.solarize(x, threshold).astype(x.dtype)


def auto_contrast(x: jax.Array) -> jax.Array:
  """``ImageOps.autocontrast(cutoff=0)``: stretch each channel to span [0, 1]; a
  constant channel is unchanged."""
  lo = jnp.min(x, axis=(0, 1), keepdims=True)
  hi = jnp.max(x, axis=(0, 1), keepdims=True)
  span = hi - lo
  safe = jnp.where(span > 0, span, jnp.ones((), x.dtype))
  return jnp.where(span > 0, jnp.clip((x - lo) / safe, 0, 1), x)


def _equalize_channel(x: jax.Array) -> jax.Array:
  """PIL's ``ImageOps.equalize`` of one channel (H, W) on its 8-bit values."""
  v = jnp.clip(jnp.round(x * 255), 0, 255).astype(jnp.int32)
  hist = jnp.bincount(v.ravel(), length=256)
  total = v.size
  last = hist[jnp.max(v)]  # the count of the brightest value present
  step = (total - last) // 255
  safe = jnp.maximum(step, 1)
  lut = (jnp.cumsum(hist) - hist + step // 2) // safe  # exclusive cumulative count
  out = jnp.clip(lut, 0, 255)[v].astype(x.dtype) / 255
  return jnp.where(step > 0, out, x)


def equalize(x: jax.Array) -> jax.Array:
  """``ImageOps.equalize``: per-channel histogram equalization on 8-bit values;
  a channel with too few distinct values to spread is unchanged (as PIL)."""
  return jax.vmap(_equalize_channel, in_axes=2, out_axes=2)(x)
