"""Crops: padded random crop (CIFAR style) and random resized crop (Inception style)."""

from __future__ import annotations

import math
from typing import Any

import dm_pix as pix
import jax
import jax.numpy as jnp

from jopt._core.validate import static_int
from jopt.augment._common import (check_choice, check_images, check_interval,
                                  check_number, compute_dtype, example_keys, lerp,
                                  per_example, randint_below, static_size)

__all__ = ["random_crop", "random_resized_crop", "sample_crop_boxes", "resize_boxes"]

_PAD_MODES = ("constant", "reflect", "edge", "symmetric")
_ATTEMPTS = 10  # torchvision's RandomResizedCrop / RandomErasing try 10 boxes


def random_crop(images: Any, *, key: Any, padding: int = 4, mode: str = "constant",
                fill: Any = 0.0) -> jax.Array:
  r"""Pad every side by ``padding`` pixels, then crop back to the input size at a random offset.

  The CIFAR-10 recipe (pad 4, crop 32): dm-pix's ``pix.pad_to_size`` on the
  batch, then ``pix.random_crop`` per example. With :math:`P` = ``padding``
  and the padded image :math:`\tilde x`,

  .. math:: y_{h,w} = \tilde x_{i + h,\, j + w}, \qquad i, j \sim U\{0, \dots, 2P\}

  independently per example, so :math:`i = j = P` returns the input and
  ``padding=0`` is the identity. Works for any number of channels; the output
  has the input's shape and dtype.

  Args:
    images: float array ``(N, H, W, C)``, values in [0, 1].
    key: one PRNG key (split into one per example) or ``N`` keys.
    padding: integer >= 0 (static), pixels added on each side.
    mode: ``"constant"`` (with ``fill``), ``"reflect"``, ``"edge"`` or
      ``"symmetric"``, as ``jnp.pad`` and ``np.pad`` (static; a padding
      wider than the image reflects repeatedly, as NumPy).
    fill: the padding value for ``mode="constant"``.

  Returns:
    The cropped images, same shape and dtype.

  Example:
    >>> import jopt.augment as aug
    >>> images = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3))
    >>> out = aug.random_crop(images, key=jax.random.key(1), padding=4)
    >>> out.shape, out.dtype
    ((4, 8, 8, 3), dtype('float32'))
    >>> bool(jnp.array_equal(aug.random_crop(images, key=jax.random.key(1), padding=0), images))
    True

  Reference: torchvision's ``RandomCrop(size, padding)``; He et al., *Deep
  Residual Learning for Image Recognition*, CVPR 2016 (the CIFAR-10 setup).
  """
  op = "random_crop"
  images = check_images(op, images)
  pad = static_int("padding", padding, f"{op}: ", 0)
  check_choice(op, "mode", mode, _PAD_MODES)
  fill = check_number(op, "fill", fill)
  n, h, w, c = images.shape
  keys = example_keys(op, key, n)
  if pad == 0:
    return images
  kwargs = {"constant_values": jnp.asarray(fill, images.dtype)} if mode == "constant" else {}
  padded = pix.pad_to_size(images, h + 2 * pad, w + 2 * pad, mode=mode, pad_kwargs=kwargs)
  return per_example(lambda k, x: pix.random_crop(k, x, (h, w, c)), keys, padded)


def sample_crop_boxes(keys: jax.Array, height: int, width: int, scale: tuple[Any, Any],
                      ratio: tuple[Any, Any], dtype: Any) -> jax.Array:
  """Boxes ``(N, 4)`` int32 ``(top, left, h, w)``, one per key, as torchvision's
  ``RandomResizedCrop.get_params`` draws them (not public): up to 10 tries of
  an area fraction ~ U(scale) and a log-uniform aspect w/h ~ ratio, the first
  that fits, else the center crop with the aspect clamped into ``ratio``."""
  area = height * width
  log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])

  def one(k):
    u = jax.random.uniform(k, (2 * _ATTEMPTS + 2,), dtype)
    target = area * lerp(u[:_ATTEMPTS], scale[0], scale[1])
    aspect = jnp.exp(lerp(u[_ATTEMPTS:2 * _ATTEMPTS], log_lo, log_hi))
    ws = jnp.round(jnp.sqrt(target * aspect)).astype(jnp.int32)
    hs = jnp.round(jnp.sqrt(target / aspect)).astype(jnp.int32)
    ok = (ws > 0) & (ws <= width) & (hs > 0) & (hs <= height)
    first = jnp.argmax(ok)
    # the fallback: the whole image, or its center with the aspect clamped into ratio
    in_ratio = width / height
    if in_ratio < ratio[0]:
      fw, fh = width, max(1, int(round(width / ratio[0])))  # >= 1: a 0-pixel box is 0/0
    elif in_ratio > ratio[1]:
      fw, fh = max(1, int(round(height * ratio[1]))), height
    else:
      fw, fh = width, height
    found = ok.any()
    bh = jnp.where(found, hs[first], fh)
    bw = jnp.where(found, ws[first], fw)
    top = jnp.where(found, randint_below(u[-2], height - bh + 1), (height - fh) // 2)
    left = jnp.where(found, randint_below(u[-1], width - bw + 1), (width - fw) // 2)
    return jnp.stack([top, left, bh, bw]).astype(jnp.int32)

  return jax.vmap(one)(keys)


def _axis_weights(start: jax.Array, length: jax.Array, out_size: int, in_size: int,
                  antialias: bool, dtype: Any) -> jax.Array:
  """``(out_size, in_size)`` resampling weights of the box ``[start, start+length)``.

  Output pixel ``o`` is centered at input position ``start + (o + 1/2) * s``
  (``s = length / out_size``, half-pixel centers, ``align_corners=False``);
  input pixel ``k`` inside the box weighs ``max(0, 1 - |k + 1/2 - center| / r)``
  with ``r = max(s, 1)`` when antialiasing (a triangle stretched over the
  pixels an output pixel covers) and ``r = 1`` (bilinear) otherwise; weights
  are normalized over the box, so nothing outside the box is sampled.
  """
  s = length.astype(dtype) / out_size
  r = jnp.maximum(s, 1) if antialias else jnp.ones((), dtype)
  centers = start.astype(dtype) + (jnp.arange(out_size, dtype=dtype) + 0.5) * s
  k = jnp.arange(in_size, dtype=jnp.int32)
  wts = jnp.maximum(0, 1 - jnp.abs(k.astype(dtype)[None, :] + 0.5 - centers[:, None]) / r)
  inside = (k >= start) & (k < start + length)
  wts = jnp.where(inside[None, :], wts, jnp.zeros((), dtype))
  return wts / jnp.sum(wts, axis=1, keepdims=True)


def resize_boxes(images: jax.Array, boxes: jax.Array, size: tuple[int, int],
                 antialias: bool) -> jax.Array:
  """Crop each image to its box ``(top, left, h, w)`` and resize it to ``size`` (not public)."""
  ct = compute_dtype(images.dtype)
  _, h, w, _ = images.shape

  def one(x, box):
    wr = _axis_weights(box[0], box[2], size[0], h, antialias, ct)
    wc = _axis_weights(box[1], box[3], size[1], w, antialias, ct)
    hi = jax.lax.Precision.HIGHEST
    rows = jnp.einsum("oh,hwc->owc", wr, x.astype(ct), precision=hi)
    return jnp.einsum("owc,pw->opc", rows, wc, precision=hi)

  return jax.vmap(one)(images, boxes).astype(images.dtype)


def random_resized_crop(images: Any, *, key: Any, size: Any, scale: Any = (0.08, 1.0),
                        ratio: Any = (3 / 4, 4 / 3), antialias: bool = True) -> jax.Array:
  r"""Crop a random box of random area and aspect ratio, and resize it to ``size``.

  jopt's own: dm-pix has no resized crop. Per example, as torchvision's
  ``RandomResizedCrop``: up to 10 tries of

  .. math:: a \sim U(\text{scale})\, H W, \quad r = e^{u},\ u \sim U(\log r_0, \log r_1),
     \quad w = [\sqrt{a r}],\ h = [\sqrt{a / r}]

  (:math:`[\cdot]` rounds half to even), the first box with :math:`0 < h \le H`,
  :math:`0 < w \le W` placed at a uniform integer offset; if none fits, the
  central crop with its aspect clamped into ``ratio``. The box is resized to
  ``size`` with bilinear weights on half-pixel centers (``align_corners=False``)
  that, like torchvision's crop-then-resize, never sample outside the box
  (``jax.image.scale_and_translate`` would blend in the neighbouring pixels);
  ``antialias=True`` widens the kernel when shrinking, as torch's
  ``antialias=True``. The weights are matrices :math:`A_h` ``(out_h, H)`` and
  :math:`A_w` ``(out_w, W)``, so :math:`y = A_h\, x\, A_w^\top` per channel.

  Works for any number of channels; arithmetic in float32 (or float64), the
  result in the input dtype. Bilinear weights are convex, so values stay in
  the input's range.

  Args:
    images: float array ``(N, H, W, C)``, values in [0, 1].
    key: one PRNG key (split into one per example) or ``N`` keys.
    size: output size, an int or ``(height, width)`` (static).
    scale: ``(lo, hi)`` with ``0 < lo <= hi``, the box area as a fraction of the image.
    ratio: ``(lo, hi)`` with ``0 < lo <= hi``, the box aspect ratio width / height.
    antialias: widen the bilinear kernel when downscaling (static).

  Returns:
    Images of shape ``(N, size_h, size_w, C)`` and the input dtype.

  Example:
    >>> import jopt.augment as aug
    >>> images = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3))
    >>> crop = jax.jit(aug.random_resized_crop, static_argnames=("size", "scale", "ratio"))
    >>> out = crop(images, key=jax.random.key(1), size=4)
    >>> out.shape, out.dtype
    ((4, 4, 4, 3), dtype('float32'))
    >>> bool((out.min() >= images.min()) & (out.max() <= images.max()))  # convex weights
    True
    >>> whole = crop(images, key=jax.random.key(1), size=8, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    >>> bool(jnp.array_equal(whole, images))   # the whole image, resized to its own size
    True

  Reference: Szegedy et al., *Going Deeper with Convolutions*, CVPR 2015 (the
  box distribution); torchvision's ``RandomResizedCrop`` (matched: same box
  rule, and the resize equals ``torch.nn.functional.interpolate(crop,
  mode="bilinear", align_corners=False, antialias=...)``).
  """
  op = "random_resized_crop"
  images = check_images(op, images)
  out_size = static_size(op, "size", size)
  sc = check_interval(op, "scale", scale, 0.0, None, low_open=True)
  rt = check_interval(op, "ratio", ratio, 0.0, None, low_open=True)
  for name, pair in (("scale", sc), ("ratio", rt)):
    if not all(isinstance(v, float) for v in pair):
      raise TypeError(f"{op}: {name} fixes the box rule, so it must be concrete numbers,"
                      " not traced values.")
  if not isinstance(antialias, bool):
    raise TypeError(f"{op}: antialias={antialias!r} must be a Python bool (static).")
  n, h, w, _ = images.shape
  keys = example_keys(op, key, n)
  boxes = sample_crop_boxes(keys, h, w, sc, rt, compute_dtype(images.dtype))
  return resize_boxes(images, boxes, out_size, antialias)
