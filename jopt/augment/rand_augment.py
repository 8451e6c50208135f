"""RandAugment: a few ops drawn at random per example, all at one shared magnitude."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from jopt._core.validate import static_int
from jopt.augment import _enhance as en
from jopt.augment._common import (check_images, check_number, compute_dtype,
                                  example_keys, per_example, randint_below)
from jopt.augment.geometric import affine_matrix, affine_warp

__all__ = ["rand_augment", "RAND_AUGMENT_OPS", "MAX_MAGNITUDE"]

MAX_MAGNITUDE = 10.0
_GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
_PIXEL = ("identity", "auto_contrast", "equalize", "solarize", "color", "posterize",
          "contrast", "brightness", "sharpness")
RAND_AUGMENT_OPS = ("identity", "auto_contrast", "equalize", "rotate", "solarize", "color",
                    "posterize", "contrast", "brightness", "sharpness", "shear_x", "shear_y",
                    "translate_x", "translate_y")
"""The paper's 14 ops, in its order."""
_NEEDS_RGB = ("color", "contrast")
_NO_MAGNITUDE = ("identity", "auto_contrast", "equalize")

# the strongest setting (magnitude 10) of each op; each scales linearly with m / 10
_MAX_DEGREES = 30.0
_MAX_SHEAR = 0.3             # shear coefficient (tangent)
_MAX_TRANSLATE = 150 / 331   # fraction of the side, torchvision's 150 px at 331
_MAX_ENHANCE = 0.9           # factor 1 +- 0.9
_MAX_POSTERIZE = 4           # bits removed


def _pixel_op(name: str) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
  """``f(x, m, sign)`` for a pixel op; ``m`` = magnitude / 10 in [0, 1], ``sign`` +-1."""
  def enhance(fn):
    return lambda x, m, sign: fn(x, 1 + sign * _MAX_ENHANCE * m)
  table = {
      "identity": lambda x, m, sign: x,
      "auto_contrast": lambda x, m, sign: en.auto_contrast(x),
      "equalize": lambda x, m, sign: en.equalize(x),
      "solarize": lambda x, m, sign: en.solarize(x, (256 / 255) * (1 - m)),
      "posterize": lambda x, m, sign: en.posterize(
          x, 8 - jnp.round(_MAX_POSTERIZE * m).astype(jnp.int32)),
      "color": enhance(en.color),
      "contrast": enhance(en.contrast),
      "brightness": enhance(en.brightness),
      "sharpness": enhance(en.sharpness),
  }
  return table[name]


def _geometry(name: str, m: jax.Array, sign: jax.Array, h: int, w: int
              ) -> tuple[jax.Array, jax.Array]:
  """The forward matrix and translation of a geometric op (see ``random_affine``)."""
  zero = jnp.zeros_like(m)
  t0 = jnp.stack([zero, zero])
  if name == "rotate":
    return affine_matrix(sign * m * (_MAX_DEGREES * math.pi / 180), 1, zero, zero), t0
  if name == "shear_x":
    return affine_matrix(zero, 1, sign * _MAX_SHEAR * m, zero), t0
  if name == "shear_y":
    return affine_matrix(zero, 1, zero, sign * _MAX_SHEAR * m), t0
  eye = affine_matrix(zero, 1, zero, zero)
  if name == "translate_x":
    return eye, jnp.stack([sign * _MAX_TRANSLATE * m * w, zero])
  return eye, jnp.stack([zero, sign * _MAX_TRANSLATE * m * h])


def rand_augment(num_ops: int = 2, magnitude: Any = 9, *, ops: Sequence[str] | None = None,
                 fill: Any = 0.0) -> Callable[..., jax.Array]:
  r"""Build a RandAugment op: ``num_ops`` random ops per example at one magnitude.

  jopt's own policy (dm-pix has none), on dm-pix's ``affine_transform``,
  ``solarize`` and ``rgb_to_grayscale``. Each example, independently, draws
  ``num_ops`` ops uniformly with replacement from ``ops`` and applies them in
  turn, each at the magnitude :math:`M \in [0, 10]` (the paper's scale) and,
  for signed ops, a random sign :math:`\sigma = \pm 1`. With :math:`m = M/10`:

  .. math::
     \begin{array}{ll}
     \text{rotate: } \theta = 30^\circ \sigma m &
     \text{shear\_x/y: } k = 0.3 \sigma m \\
     \text{translate\_x/y: } t = \tfrac{150}{331} \sigma m \cdot \text{side} &
     \text{brightness, color, contrast, sharpness: } f = 1 + 0.9 \sigma m \\
     \text{posterize: } 8 - \operatorname{round}(4m) \text{ bits} &
     \text{solarize: invert } x \ge \tfrac{256}{255}(1 - m)
     \end{array}

  ``identity``, ``auto_contrast`` and ``equalize`` take no magnitude. The
  ops follow PIL's definitions, as the paper's code: brightness, color,
  contrast and sharpness blend with black, the grayscale image, its mean and
  a smoothed image (:math:`y = (1-f) d + f x`, clipped); posterize and
  equalize work on the 8-bit values :math:`\operatorname{round}(255 x)`.
  Geometric ops (see :func:`random_affine`'s conventions) turn about the
  center with bilinear sampling and fill the uncovered pixels with ``fill``;
  one warp per round serves all five (the chosen matrix, or the identity).

  At magnitude 0 every magnitude-driven op is the identity, exactly.

  Departures from the paper (Cubuk et al. 2020): the same 14 ops, but the
  magnitude-to-parameter map is torchvision's (factors :math:`1 \pm 0.9 m`
  where the paper's code uses :math:`0.1 + 1.8 m`, translations as a fraction
  of the image side, posterize keeping 8 down to 4 bits) with solarize's
  threshold going from above 1 (nothing inverted) down to 0, so magnitude 0
  is the identity for all; shears turn about the center (PIL's about the
  top-left corner); ops run on floats without rounding to 8 bits between
  them (except posterize and equalize). torchvision's ``magnitude=9`` of
  its 31 bins is :math:`M = 3` here.

  Args:
    num_ops: ops applied per example, an integer >= 0 (static).
    magnitude: :math:`M \in [0, 10]`, a number (or a traced scalar).
    ops: the names to draw from, a subset of :data:`RAND_AUGMENT_OPS`
      (default all 14). ``color`` and ``contrast`` need RGB images; the
      others work for any number of channels.
    fill: the value of pixels a geometric op uncovers.

  Returns:
    An op ``op(images, *, key) -> images`` for float ``(N, H, W, C)`` images
    in [0, 1], keeping shape and dtype (arithmetic in float32 or float64).

  Example:
    >>> import jopt.augment as aug
    >>> policy = aug.rand_augment(num_ops=2, magnitude=9)
    >>> images = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3))
    >>> out = jax.jit(policy)(images, key=jax.random.key(1))
    >>> out.shape, out.dtype
    ((4, 8, 8, 3), dtype('float32'))
    >>> calm = aug.rand_augment(num_ops=2, magnitude=0, ops=("rotate", "solarize", "brightness"))
    >>> bool(jnp.array_equal(jax.jit(calm)(images, key=jax.random.key(1)), images))  # magnitude 0
    True

  Reference: Cubuk et al., *RandAugment: Practical Automated Data
  Augmentation with a Reduced Search Space*, NeurIPS 2020; torchvision's
  ``RandAugment`` for the magnitude ranges.
  """
  where = "rand_augment"
  n_ops = static_int("num_ops", num_ops, f"{where}: ", 0)
  mag = check_number(where, "magnitude", magnitude, 0.0, MAX_MAGNITUDE)
  fill = check_number(where, "fill", fill)
  names = RAND_AUGMENT_OPS if ops is None else tuple(ops)
  if isinstance(ops, str):
    raise TypeError(f"{where}: ops must be a sequence of names, got the string {ops!r};"
                    f" pass ({ops!r},).")
  bad = [o for o in names if o not in RAND_AUGMENT_OPS]
  if bad or not names:
    raise ValueError(f"{where}: ops={ops!r} must be a non-empty subset of {RAND_AUGMENT_OPS}"
                     f" (unknown: {bad}).")
  rgb = any(o in _NEEDS_RGB for o in names)
  geo_idx = [i for i, o in enumerate(names) if o in _GEOMETRIC]
  pixel_fns = [_pixel_op(o) if o in _PIXEL else (lambda x, m, sign: x) for o in names]

  def apply(images: Any, *, key: Any) -> jax.Array:
    images = check_images(where, images, rgb=rgb)
    n, h, w, _ = images.shape
    keys = example_keys(where, key, n)
    ct = compute_dtype(images.dtype)
    m = jnp.asarray(mag, ct) / MAX_MAGNITUDE
    if geo_idx:
      eye = _geometry("rotate", jnp.zeros((), ct), jnp.ones((), ct), h, w)

    def one(k, x):
      y = x.astype(ct)
      u = jax.random.uniform(k, (2 * n_ops,), ct)
      for r in range(n_ops):
        choice = randint_below(u[2 * r], len(names))
        sign = jnp.where(u[2 * r + 1] < 0.5, jnp.ones((), ct), -jnp.ones((), ct))
        z = jax.lax.switch(choice, [lambda v, f=f: f(v, m, sign) for f in pixel_fns], y)
        if geo_idx:
          geoms = [_geometry(names[i], m, sign, h, w) for i in geo_idx]
          mats = jnp.stack([eye[0]] + [g[0] for g in geoms])
          trans = jnp.stack([eye[1]] + [g[1] for g in geoms])
          slot = jnp.zeros((), jnp.int32)
          for j, i in enumerate(geo_idx):
            slot = jnp.where(choice == i, j + 1, slot)
          warped = affine_warp(y, mats[slot], trans[slot], fill=fill)
          z = jnp.where(slot > 0, warped, z)
        y = z
      return y.astype(x.dtype)

    return per_example(one, keys, images)

  return apply
