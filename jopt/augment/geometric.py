"""Geometric ops: random flips and one random affine warp (rotate, translate, scale, shear)."""

from __future__ import annotations

import math
from typing import Any

import dm_pix as pix
import jax
import jax.numpy as jnp

from jopt.augment._common import (check_choice, check_images, check_interval,
                                  check_number, check_probability, compute_dtype,
                                  example_keys, lerp, per_example)

__all__ = ["random_flip_left_right", "random_flip_up_down", "random_affine", "affine_warp",
           "affine_matrix", "pull_coefficients", "bilinear_sample"]

# a source point this close (in pixels) to the image still counts as inside, so
# exact quarter turns, whose coordinates carry ~1e-7 rounding, keep their borders.
_INSIDE_TOL = 1e-3


def random_flip_left_right(images: Any, *, key: Any, p: Any = 0.5) -> jax.Array:
  r"""Mirror each image left-right (the width axis) with probability ``p``.

  dm-pix's ``pix.random_flip_left_right`` per example, under ``jax.vmap``:

  .. math:: y_{n,h,w,c} = x_{n,h,W-1-w,c}\ \text{if}\ b_n = 1,\ \text{else}\ x_{n,h,w,c},
     \qquad b_n \sim \mathrm{Bernoulli}(p)

  Works for any number of channels; the output has the input's dtype.

  Args:
    images: float array ``(N, H, W, C)``, values in [0, 1].
    key: one PRNG key (split into one per example) or ``N`` keys.
    p: probability in [0, 1] that an example is flipped.

  Returns:
    The images, each flipped or not.

  Example:
    >>> import jopt.augment as aug
    >>> images = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3))
    >>> out = aug.random_flip_left_right(images, key=jax.random.key(1))
    >>> out.shape, out.dtype
    ((4, 8, 8, 3), dtype('float32'))
    >>> back = aug.random_flip_left_right(out, key=jax.random.key(1))  # same key, same flips
    >>> bool(jnp.array_equal(back, images))
    True
    >>> always = aug.random_flip_left_right(images, key=jax.random.key(1), p=1.0)
    >>> bool(jnp.array_equal(always, images[:, :, ::-1]))
    True

  Reference: torchvision's ``RandomHorizontalFlip``; dm-pix's ``random_flip_left_right``.
  """
  op = "random_flip_left_right"
  images = check_images(op, images)
  p = check_probability(op, p)
  keys = example_keys(op, key, images.shape[0])
  return per_example(lambda k, x: pix.random_flip_left_right(k, x, probability=p),
                     keys, images)


def random_flip_up_down(images: Any, *, key: Any, p: Any = 0.5) -> jax.Array:
  r"""Mirror each image up-down (the height axis) with probability ``p``.

  dm-pix's ``pix.random_flip_up_down`` per example, under ``jax.vmap``:

  .. math:: y_{n,h,w,c} = x_{n,H-1-h,w,c}\ \text{if}\ b_n = 1,\ \text{else}\ x_{n,h,w,c},
     \qquad b_n \sim \mathrm{Bernoulli}(p)

  Args:
    images: float array ``(N, H, W, C)``, values in [0, 1].
    key: one PRNG key (split into one per example) or ``N`` keys.
    p: probability in [0, 1] that an example is flipped.

  Returns:
    The images, each flipped or not.

  Example:
    >>> import jopt.augment as aug
    >>> images = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3))
    >>> out = aug.random_flip_up_down(images, key=jax.random.key(1), p=0.5)
    >>> out.shape, out.dtype
    ((4, 8, 8, 3), dtype('float32'))
    >>> back = aug.random_flip_up_down(out, key=jax.random.key(1), p=0.5)  # same flips again
    >>> bool(jnp.array_equal(back, images))
    True
    >>> always = aug.random_flip_up_down(images, key=jax.random.key(1), p=1.0)
    >>> bool(jnp.array_equal(always, images[:, ::-1]))
    True

  Reference: torchvision's ``RandomVerticalFlip``; dm-pix's ``random_flip_up_down``.
  """
  op = "random_flip_up_down"
  images = check_images(op, images)
  p = check_probability(op, p)
  keys = example_keys(op, key, images.shape[0])
  return per_example(lambda k, x: pix.random_flip_up_down(k, x, probability=p),
                     keys, images)


def pull_coefficients(matrix: jax.Array, translation: jax.Array, h: int, w: int,
                      dtype: Any) -> tuple[jax.Array, ...]:
  r"""``(rr, rc, cr, cc, off_r, off_c)``: the inverse ("pull") map in (row, col)
  order, ``src_row = rr * row + rc * col + off_r`` and likewise ``src_col``, of
  the forward map :math:`p' = c + A(p - c) + t` (not public).

  ``p = (x, y)`` is (column, row) with rows growing downwards, ``c`` the image
  center ``((W-1)/2, (H-1)/2)``, ``matrix`` the 2x2 ``A`` and ``translation``
  ``t`` in pixels. The same numbers, as the rows ``[rr, rc, 0, off_r]``,
  ``[cr, cc, 0, off_c]``, ``[0, 0, 1, 0]``, are ``pix.affine_transform``'s matrix.
  """
  a, b = matrix[0, 0].astype(dtype), matrix[0, 1].astype(dtype)
  c, d = matrix[1, 0].astype(dtype), matrix[1, 1].astype(dtype)
  t = translation.astype(dtype)
  det = a * d - b * c
  rr, rc, cr, cc = a / det, -c / det, -b / det, d / det
  cy, cx = (h - 1) / 2, (w - 1) / 2
  sy, sx = cy + t[1], cx + t[0]
  return rr, rc, cr, cc, cy - (rr * sy + rc * sx), cx - (cr * sy + cc * sx)


def bilinear_sample(image: jax.Array, src_r: jax.Array, src_c: jax.Array) -> jax.Array:
  """Sample ``image`` (H, W, C) at fractional ``(src_r, src_c)`` (H', W') with 4-tap
  bilinear weights, edge pixels repeated outside (dm-pix's ``"nearest"`` mode);
  at integer coordinates the result is the pixel itself, exactly (not public)."""
  h, w = image.shape[0], image.shape[1]
  src_r = jnp.clip(src_r, -2, h + 1)  # far outside is all edge; keeps the int cast defined
  src_c = jnp.clip(src_c, -2, w + 1)
  r0f, c0f = jnp.floor(src_r), jnp.floor(src_c)
  fr, fc = (src_r - r0f)[..., None], (src_c - c0f)[..., None]
  r0, c0 = r0f.astype(jnp.int32), c0f.astype(jnp.int32)

  def at(r, c):
    return image[jnp.clip(r, 0, h - 1), jnp.clip(c, 0, w - 1)]

  top = at(r0, c0) * (1 - fc) + at(r0, c0 + 1) * fc
  bottom = at(r0 + 1, c0) * (1 - fc) + at(r0 + 1, c0 + 1) * fc
  return top * (1 - fr) + bottom * fr


def affine_warp(image: jax.Array, matrix: jax.Array, translation: jax.Array, *,
                fill: Any = 0.0, mode: str = "constant") -> jax.Array:
  r"""Warp one HWC image by the forward map :math:`p' = c + A(p - c) + t` (not public).

  Pull resampling (see :func:`pull_coefficients`) with :func:`bilinear_sample`,
  which gives ``pix.affine_transform(image, matrix, mode="nearest")``'s values
  (test-checked) without its 8-tap interpolation over the (H, W, C) volume.
  For ``mode="constant"`` an output pixel whose source lies outside the image
  (by more than 1e-3 px) is then set to ``fill``, as dm-pix's constant mode.
  """
  h, w = image.shape[0], image.shape[1]
  ct = compute_dtype(image.dtype)
  rr, rc, cr, cc, off_r, off_c = pull_coefficients(matrix, translation, h, w, ct)
  rows = jnp.arange(h, dtype=ct)[:, None]
  cols = jnp.arange(w, dtype=ct)[None, :]
  src_r = rr * rows + rc * cols + off_r
  src_c = cr * rows + cc * cols + off_c
  out = bilinear_sample(image.astype(ct), src_r, src_c)
  if mode == "constant":
    inside = ((src_r >= -_INSIDE_TOL) & (src_r <= h - 1 + _INSIDE_TOL)
              & (src_c >= -_INSIDE_TOL) & (src_c <= w - 1 + _INSIDE_TOL))
    out = jnp.where(inside[:, :, None], out, jnp.asarray(fill, ct))
  return out.astype(image.dtype)


def _shear_ranges(op: str, shear: Any) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
  if isinstance(shear, (tuple, list)) and len(shear) == 4:
    return (check_interval(op, "shear[0:2]", tuple(shear[:2]), -89.9, 89.9),
            check_interval(op, "shear[2:4]", tuple(shear[2:]), -89.9, 89.9))
  if isinstance(shear, (tuple, list)) and len(shear) != 2:
    raise ValueError(f"{op}: shear={shear!r} must be a number s >= 0 (x shear in (-s, s)),"
                     " a pair (x range) or a 4-tuple (x range, y range), in degrees.")
  return check_interval(op, "shear", shear, -89.9, 89.9, symmetric=True), (0.0, 0.0)


def random_affine(images: Any, *, key: Any, degrees: Any = 0.0, translate: Any = (0.0, 0.0),
                  scale: Any = (1.0, 1.0), shear: Any = 0.0, fill: Any = 0.0,
                  mode: str = "constant") -> jax.Array:
  r"""Rotate, translate, scale and shear each image by its own random affine map.

  jopt's own sampler: one matrix per example, warped with a 4-tap bilinear
  gather that returns ``pix.affine_transform``'s values for the same matrix
  (its "pull" convention, test-checked to float rounding) but runs tens of
  times faster on CPU than dm-pix's 8-tap interpolation over the (H, W, C)
  volume (``benchmarks/AUGMENT.md``). In pixel coordinates
  :math:`p = (x, y)` = (column, row), rows growing *downwards*, about the
  image center :math:`c = ((W-1)/2, (H-1)/2)`, an input point moves to

  .. math::
     p' = c + R(\theta)\, s\, \begin{pmatrix}1 & k_x\\ k_y & 1 + k_x k_y\end{pmatrix} (p - c)
          + t, \qquad R(\theta) = \begin{pmatrix}\cos\theta & \sin\theta\\
          -\sin\theta & \cos\theta\end{pmatrix}

  with :math:`k_x = \tan\phi_x`, :math:`k_y = \tan\phi_y` (the shear matrix
  is :math:`\mathrm{Sh}_y(\phi_y)\,\mathrm{Sh}_x(\phi_x)`, so its determinant
  is 1). Sign conventions: :math:`\theta > 0` turns the image
  *counter-clockwise* as displayed (as ``np.rot90``, ``pix.rotate`` and
  torchvision's ``rotate``); :math:`t_x > 0` moves the content right and
  :math:`t_y > 0` down; :math:`s > 1` enlarges it; :math:`\phi_x > 0` pushes
  the lower rows right (:math:`x' = x + k_x y`), :math:`\phi_y > 0` the right
  columns down. Per example :math:`\theta \sim U(\text{degrees})`,
  :math:`t_x \sim U(-a W, a W)`, :math:`t_y \sim U(-b H, b H)` rounded to
  whole pixels (as torchvision's ``RandomAffine``), :math:`s \sim U(\text{scale})`,
  :math:`\phi_x, \phi_y \sim U` of their ranges. All zero ranges give the
  identity exactly.

  Output pixels whose source falls outside the image get ``fill``
  (``mode="constant"``) or the nearest edge pixel (``mode="nearest"``). Works
  for any number of channels; arithmetic in float32 (or float64) and the
  result in the input dtype.

  Args:
    images: float array ``(N, H, W, C)``, values in [0, 1].
    key: one PRNG key (split into one per example) or ``N`` keys.
    degrees: rotation range in degrees: ``d >= 0`` for :math:`(-d, d)`, or a
      pair ``(lo, hi)``.
    translate: ``(a, b)`` in [0, 1], the largest shift as a fraction of the
      width and of the height.
    scale: ``(lo, hi)`` with ``0 < lo <= hi``, the zoom factor range.
    shear: shear angles in degrees (each in (-90, 90)): ``s >= 0`` for
      :math:`\phi_x \in (-s, s)`, a pair for the :math:`\phi_x` range, or a
      4-tuple ``(x_lo, x_hi, y_lo, y_hi)``.
    fill: the value of pixels from outside the image (``mode="constant"``).
    mode: ``"constant"`` or ``"nearest"`` (static).

  Returns:
    The warped images, same shape and dtype.

  Example:
    >>> import jopt.augment as aug
    >>> images = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3))
    >>> warp = jax.jit(aug.random_affine,
    ...                static_argnames=("degrees", "translate", "scale", "shear"))
    >>> out = warp(images, key=jax.random.key(1), degrees=15, translate=(0.1, 0.1),
    ...            scale=(0.9, 1.1), shear=10)
    >>> out.shape, out.dtype
    ((4, 8, 8, 3), dtype('float32'))
    >>> quarter = warp(images, key=jax.random.key(1), degrees=(90, 90))
    >>> bool(jnp.allclose(quarter, jnp.rot90(images, axes=(1, 2)), atol=1e-6))  # counter-clockwise
    True

  Reference: torchvision's ``RandomAffine`` (same parameter ranges and
  integer translations; its angle is clockwise-positive, ours
  counter-clockwise, and we interpolate bilinearly where its default is
  nearest); ``scipy.ndimage.affine_transform(order=1, mode="constant")`` and
  dm-pix's ``affine_transform`` give the same warp (test-checked).
  """
  op = "random_affine"
  images = check_images(op, images)
  deg = check_interval(op, "degrees", degrees, symmetric=True)
  if not isinstance(translate, (tuple, list)) or len(translate) != 2:
    raise ValueError(f"{op}: translate={translate!r} must be a pair (a, b) of fractions"
                     " of the width and the height, each in [0, 1].")
  ta = check_number(op, "translate[0]", translate[0], 0.0, 1.0)
  tb = check_number(op, "translate[1]", translate[1], 0.0, 1.0)
  sc = check_interval(op, "scale", scale, 0.0, None, low_open=True)
  shx, shy = _shear_ranges(op, shear)
  fill = check_number(op, "fill", fill)
  check_choice(op, "mode", mode, ("constant", "nearest"))
  n, h, w = images.shape[:3]
  keys = example_keys(op, key, n)
  ct = compute_dtype(images.dtype)
  rad = math.pi / 180

  def one(k, x):
    u = jax.random.uniform(k, (6,), ct)
    theta = lerp(u[0], deg[0], deg[1]) * rad
    tx = jnp.round(lerp(u[1], -ta * w, ta * w))
    ty = jnp.round(lerp(u[2], -tb * h, tb * h))
    s = lerp(u[3], sc[0], sc[1])
    kx = jnp.tan(lerp(u[4], shx[0], shx[1]) * rad)
    ky = jnp.tan(lerp(u[5], shy[0], shy[1]) * rad)
    return affine_warp(x, affine_matrix(theta, s, kx, ky), jnp.stack([tx, ty]),
                       fill=fill, mode=mode)

  return per_example(one, keys, images)


def affine_matrix(theta: jax.Array, s: Any, kx: Any, ky: Any) -> jax.Array:
  r"""The 2x2 forward matrix :math:`R(\theta)\, s\, \mathrm{Sh}_y(k_y)\,
  \mathrm{Sh}_x(k_x)` in (x, y-down) coordinates (not public)."""
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  kx = jnp.asarray(kx, cos.dtype)
  ky = jnp.asarray(ky, cos.dtype)
  s = jnp.asarray(s, cos.dtype)
  kxy = 1 + kx * ky
  # R @ Sh written out (no matmul, so no reduced-precision matrix unit on TPU)
  return s * jnp.stack([jnp.stack([cos + sin * ky, cos * kx + sin * kxy]),
                        jnp.stack([cos * ky - sin, cos * kxy - sin * kx])])
