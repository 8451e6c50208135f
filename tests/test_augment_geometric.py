"""Flips, crops, resized crops and affine warps against NumPy, torch and scipy references."""

from __future__ import annotations

import math

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import torch

import jopt.augment as aug
from jopt.augment import crop as crop_mod
from jopt.augment import geometric as geo


def _x(n, h, w, c=3, seed=0, dtype=np.float32):
  return np.random.default_rng(seed).uniform(0, 1, (n, h, w, c)).astype(dtype)


# ---------------------------------------------------------------- flips
@pytest.mark.parametrize("op, axis", [(aug.random_flip_left_right, 2),
                                      (aug.random_flip_up_down, 1)])
def test_flip_with_p1_is_numpy_flip_and_twice_is_identity(op, axis):
  x = _x(4, 5, 6)
  key = jax.random.key(0)
  once = op(x, key=key, p=1.0)
  np.testing.assert_array_equal(once, np.flip(x, axis))
  np.testing.assert_array_equal(op(once, key=jax.random.key(1), p=1), x)
  np.testing.assert_array_equal(op(x, key=key, p=0.0), x)


@pytest.mark.parametrize("op, axis", [(aug.random_flip_left_right, 2),
                                      (aug.random_flip_up_down, 1)])
def test_flip_is_decided_per_example(op, axis):
  x = _x(32, 4, 4, 1, seed=1)
  out = np.asarray(jax.jit(lambda x, k: op(x, key=k))(x, jax.random.key(2)))
  flipped = [np.array_equal(o, np.flip(xi, axis - 1)) for o, xi in zip(out, x)]
  kept = [np.array_equal(o, xi) for o, xi in zip(out, x)]
  assert all(f or k for f, k in zip(flipped, kept))
  assert 4 <= sum(flipped) <= 28, sum(flipped)  # Binomial(32, 1/2): 4..28 has p > 1 - 1e-5


# ---------------------------------------------------------------- padded random crop
def _find_offsets(out, padded, h, w):
  """The offset (i, j) at which each output is a slice of its padded input."""
  offsets = []
  for o, p in zip(out, padded):
    hits = [(i, j) for i in range(p.shape[0] - h + 1) for j in range(p.shape[1] - w + 1)
            if np.array_equal(o, p[i:i + h, j:j + w])]
    assert len(hits) >= 1, "the crop is no slice of the padded input"
    offsets.append(hits[0])
  return offsets


@pytest.mark.parametrize("mode, pad", [("constant", 2), ("reflect", 2), ("edge", 2),
                                       ("symmetric", 2), ("reflect", 7)])
def test_random_crop_is_a_slice_of_the_numpy_padded_input(mode, pad):
  n, h, w = 64, 5, 6
  x = _x(n, h, w, seed=3)
  out = np.asarray(jax.jit(lambda x, k: aug.random_crop(x, key=k, padding=pad, mode=mode,
                                                        fill=0.3))(x, jax.random.key(4)))
  kwargs = {"constant_values": np.float32(0.3)} if mode == "constant" else {}
  padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=mode, **kwargs)
  offsets = _find_offsets(out, padded, h, w)
  rows, cols = {i for i, _ in offsets}, {j for _, j in offsets}
  if pad == 2:  # every offset 0..2P is drawn
    assert rows == set(range(2 * pad + 1)) and cols == set(range(2 * pad + 1)), offsets
  assert len(set(offsets)) >= 10


# ---------------------------------------------------------------- random resized crop
def _torch_resize(crop, size, antialias):
  t = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None]
  out = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False,
                                        antialias=antialias)
  return out[0].numpy().transpose(1, 2, 0)


@pytest.mark.parametrize("antialias", [False, True])
def test_resize_of_a_box_matches_torch_interpolate_of_the_crop(antialias, x64, record_property):
  del x64
  x = _x(6, 20, 24, seed=5, dtype=np.float64)
  # shrink, enlarge, mixed, whole image, one pixel, a thin strip
  boxes = np.array([[2, 3, 15, 17], [5, 6, 4, 5], [0, 0, 20, 3], [0, 0, 20, 24],
                    [7, 9, 1, 1], [1, 0, 13, 24]], np.int32)
  size = (9, 11)
  out = np.asarray(crop_mod.resize_boxes(jnp.asarray(x), jnp.asarray(boxes), size, antialias))
  err = 0.0
  for xi, (t, l, h, w), o in zip(x, boxes, out):
    ref = _torch_resize(xi[t:t + h, l:l + w], size, antialias)
    err = max(err, float(np.max(np.abs(o - ref))))
  record_property("max_abs_err_vs_torch", err)
  assert err < 1e-14, err


def _torchvision_box(u, height, width, scale, ratio):
  """torchvision's RandomResizedCrop.get_params, transcribed, fed our uniform draws."""
  area = height * width
  lr = (math.log(ratio[0]), math.log(ratio[1]))
  for a in range(10):
    target = area * (scale[0] + (scale[1] - scale[0]) * u[a])
    aspect = math.exp(lr[0] + (lr[1] - lr[0]) * u[10 + a])
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return (min(int(u[20] * (height - h + 1)), height - h),
              min(int(u[21] * (width - w + 1)), width - w), h, w)
  in_ratio = width / height
  if in_ratio < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    h, w = height, int(round(height * max(ratio)))
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


@pytest.mark.parametrize("scale, ratio", [((0.08, 1.0), (3 / 4, 4 / 3)),
                                          ((0.5, 0.9), (0.2, 5.0)),
                                          ((2.0, 3.0), (3 / 4, 4 / 3)),   # never fits
                                          ((2.0, 3.0), (2.0, 3.0))])
def test_crop_boxes_follow_torchvisions_rule(scale, ratio):
  height, width, n = 20, 30, 200
  keys = jax.random.split(jax.random.key(6), n)
  boxes = np.asarray(crop_mod.sample_crop_boxes(keys, height, width, scale, ratio,
                                                jnp.float32))
  draws = np.asarray(jax.vmap(lambda k: jax.random.uniform(k, (22,), jnp.float32))(keys))
  want = np.array([_torchvision_box(u.astype(np.float64), height, width, scale, ratio)
                   for u in draws])
  # float32 draws: a rounding tie could go the other way; none should here
  np.testing.assert_array_equal(boxes, want)
  assert np.all(boxes[:, 0] + boxes[:, 2] <= height) and np.all(boxes[:, 1] + boxes[:, 3] <= width)
  if scale[0] < 1:
    assert len({tuple(b) for b in boxes}) > n // 2  # per-example boxes


def test_random_resized_crop_of_the_whole_image_is_torch_interpolate(x64):
  del x64
  x = _x(3, 12, 18, seed=7, dtype=np.float64)
  out = aug.random_resized_crop(x, key=jax.random.key(8), size=(7, 5), scale=(1.0, 1.0),
                                ratio=(18 / 12, 18 / 12))
  for xi, o in zip(x, np.asarray(out)):
    np.testing.assert_allclose(o, _torch_resize(xi, (7, 5), True), rtol=0, atol=1e-14)


# ---------------------------------------------------------------- affine
def _shift(x, dx, dy, fill):
  """``x`` (H, W, C) moved right by dx and down by dy; uncovered pixels = fill."""
  out = np.full_like(x, fill)
  h, w = x.shape[:2]
  out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
      x[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
  return out


def test_integer_translation_is_a_numpy_shift_with_fill_in_the_drawn_direction():
  n, h, w = 16, 8, 10
  x = _x(n, h, w, seed=9)
  key = jax.random.key(10)
  out = np.asarray(aug.random_affine(x, key=key, translate=(0.2, 0.25), fill=0.5))
  draws = np.asarray(jax.vmap(lambda k: jax.random.uniform(k, (6,)))(jax.random.split(key, n)))
  shifts = set()
  for xi, o, u in zip(x, out, draws):
    dx = int(np.round(-0.2 * w + 0.4 * w * u[1]))  # tx ~ U(-a W, a W), rounded
    dy = int(np.round(-0.25 * h + 0.5 * h * u[2]))
    np.testing.assert_array_equal(o, _shift(xi, dx, dy, np.float32(0.5)))
    shifts.add((dx, dy))
  assert len(shifts) >= 5, shifts


def test_translation_with_nearest_mode_repeats_the_edge():
  x = _x(8, 6, 6, seed=11)
  key = jax.random.key(12)
  out = np.asarray(aug.random_affine(x, key=key, translate=(0.34, 0.34), mode="nearest"))
  draws = np.asarray(jax.vmap(lambda k: jax.random.uniform(k, (6,)))(jax.random.split(key, 8)))
  for xi, o, u in zip(x, out, draws):
    dx = int(np.round(-0.34 * 6 + 0.68 * 6 * u[1]))
    dy = int(np.round(-0.34 * 6 + 0.68 * 6 * u[2]))
    rows = np.clip(np.arange(6) - dy, 0, 5)
    cols = np.clip(np.arange(6) - dx, 0, 5)
    np.testing.assert_array_equal(o, xi[rows][:, cols])


@pytest.mark.parametrize("degrees, k", [(90, 1), (-90, -1), (180, 2)])
def test_quarter_turns_are_np_rot90_counter_clockwise(degrees, k, record_property):
  x = _x(3, 7, 7, seed=13)
  out = np.asarray(aug.random_affine(x, key=jax.random.key(14), degrees=(degrees, degrees)))
  ref = np.rot90(x, k, axes=(1, 2))
  err = float(np.max(np.abs(out - ref)))
  record_property("max_abs_err_vs_rot90", err)
  assert err < 1.5e-6, err  # float32 cos(pi/2) = -4e-8; no border pixel lost to the fill


def test_sign_conventions_of_shear():
  x = np.zeros((1, 9, 9, 1), np.float32)
  x[0, 8, 4] = 1.0   # bottom row, center column
  x[0, 4, 8] = 0.5   # right column, center row
  out = np.asarray(aug.random_affine(x, key=jax.random.key(0), shear=(20, 20, 0, 0)))[0, ..., 0]
  # phi_x > 0: x' = x + tan(20 deg) * (y - c): the bottom pixel moves right by 1.46 px
  assert out[8, 5] > 0.4 and out[8, 6] > 0.4 and out[8, :5].max() == 0
  out = np.asarray(aug.random_affine(x, key=jax.random.key(0), shear=(0, 0, 20, 20)))[0, ..., 0]
  # phi_y > 0: the right column moves down
  assert out[5, 8] > 0.2 and out[6, 8] > 0.2 and out[:5, 8].max() == 0


def _scipy_warp(x, a_xy, t_xy, fill):
  """scipy's order-1 constant-mode warp of the forward map p' = c + A (p - c) + t."""
  h, w = x.shape[:2]
  inv = np.linalg.inv(a_xy)
  perm = np.array([[0.0, 1.0], [1.0, 0.0]])
  m_rc = perm @ inv @ perm
  c_rc = np.array([(h - 1) / 2, (w - 1) / 2])
  off = c_rc - m_rc @ (c_rc + perm @ t_xy)
  return np.stack([scipy.ndimage.affine_transform(x[..., ch], m_rc, off, order=1,
                                                  mode="constant", cval=fill)
                   for ch in range(x.shape[-1])], axis=-1)


def test_rotation_scale_shear_match_scipy(x64, record_property):
  del x64
  x = _x(2, 11, 13, seed=15, dtype=np.float64)
  theta, s, phx, phy = 25.0, 1.2, 10.0, -5.0
  out = np.asarray(aug.random_affine(x, key=jax.random.key(16), degrees=(theta, theta),
                                     scale=(s, s), shear=(phx, phx, phy, phy), fill=0.25))
  th, kx, ky = np.radians(theta), np.tan(np.radians(phx)), np.tan(np.radians(phy))
  rot = np.array([[np.cos(th), np.sin(th)], [-np.sin(th), np.cos(th)]])
  shear = np.array([[1, 0], [ky, 1]]) @ np.array([[1, kx], [0, 1]])
  a = s * rot @ shear
  err = max(float(np.max(np.abs(o - _scipy_warp(xi, a, np.zeros(2), 0.25))))
            for xi, o in zip(x, out))
  record_property("max_abs_err_vs_scipy", err)
  assert err < 1e-14, err


def test_warp_equals_dm_pix_affine_transform(x64, record_property):
  del x64
  x = jnp.asarray(_x(1, 10, 12, seed=17, dtype=np.float64)[0])
  a = geo.affine_matrix(jnp.asarray(0.4), 0.9, jnp.asarray(0.2), jnp.asarray(-0.1))
  t = jnp.asarray([1.5, -2.25])
  ours = geo.affine_warp(x, a, t, mode="nearest")
  rr, rc, cr, cc, off_r, off_c = geo.pull_coefficients(a, t, 10, 12, jnp.float64)
  mat = jnp.array([[rr, rc, 0, off_r], [cr, cc, 0, off_c], [0, 0, 1, 0]])
  with jax.numpy_dtype_promotion("standard"):
    ref = pix.affine_transform(x, mat, mode="nearest")
  err = float(jnp.max(jnp.abs(ours - ref)))
  record_property("max_abs_err_vs_pix", err)
  assert err < 1e-14, err
