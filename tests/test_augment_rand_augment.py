"""RandAugment: its PIL-style ops against PIL itself, its magnitude map, and the policy."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from PIL import Image, ImageEnhance, ImageOps

import jopt.augment as aug
from jopt.augment import _enhance as en
from jopt.augment import geometric as geo

N, H, W = 8, 9, 11
MAGNITUDE_OPS = [o for o in aug.RAND_AUGMENT_OPS
                 if o not in ("identity", "auto_contrast", "equalize")]


def _u8(seed=0, low=0, high=256):
  return np.random.default_rng(seed).integers(low, high, (12, 10, 3), dtype=np.uint8)


def _err255(mine, pil):
  return float(np.max(np.abs(np.asarray(mine) - np.asarray(pil) / 255.0))) * 255


# ---------------------------------------------------------------- the ops against PIL
@pytest.mark.parametrize("factor", [0.1, 0.55, 1.0, 1.45, 1.9])
@pytest.mark.parametrize("name", ["brightness", "color", "contrast", "sharpness"])
def test_enhance_ops_match_pil_to_its_8_bit_rounding(name, factor, x64, record_property):
  del x64
  u8 = _u8(1)
  pil = getattr(ImageEnhance, name.capitalize())(Image.fromarray(u8)).enhance(factor)
  err = _err255(getattr(en, name)(jnp.asarray(u8 / 255.0), factor), pil)
  record_property("max_abs_err_in_255ths", err)
  # PIL rounds its degenerate image and its output to 8 bits: half a level each,
  # the first scaled by |1 - factor|; factor 1 is exactly the input
  assert err <= 1.0 + 0.5 * abs(1 - factor) + 1e-9, err
  if factor == 1.0:
    assert err == 0.0


@pytest.mark.parametrize("bits", [1, 4, 5, 7, 8])
def test_posterize_matches_pil(bits, x64):
  del x64
  u8 = _u8(2)
  assert _err255(en.posterize(jnp.asarray(u8 / 255.0), jnp.asarray(bits)),
                 ImageOps.posterize(Image.fromarray(u8), bits)) < 1e-9  # float rounding


@pytest.mark.parametrize("threshold", [0, 1, 100, 255, 256])
def test_solarize_matches_pil(threshold, x64):
  del x64
  u8 = _u8(3)
  assert _err255(en.solarize(jnp.asarray(u8 / 255.0), threshold / 255),
                 ImageOps.solarize(Image.fromarray(u8), threshold)) < 1e-9


@pytest.mark.parametrize("low, high", [(0, 256), (90, 140), (7, 8)])
def test_equalize_and_autocontrast_match_pil(low, high, x64, record_property):
  del x64
  u8 = _u8(4, low, high)
  u8[:4, :, 2] = 200  # a channel with two values only
  x = jnp.asarray(u8 / 255.0)
  assert _err255(en.equalize(x), ImageOps.equalize(Image.fromarray(u8))) < 1e-9
  err = _err255(en.auto_contrast(x), ImageOps.autocontrast(Image.fromarray(u8)))
  record_property("autocontrast_max_abs_err_in_255ths", err)
  assert err < 1.0, err  # PIL truncates its lookup table to whole levels


# ---------------------------------------------------------------- the magnitude map
def _one_op_draws(key, n=N, dtype=jnp.float64):
  keys = jax.random.split(key, n)
  return np.asarray(jax.vmap(lambda k: jax.random.uniform(k, (2,), dtype))(keys))


def _scipy_shift(img, dy, dx, fill):
  return np.stack([scipy.ndimage.shift(img[..., c], (dy, dx), order=1, mode="constant",
                                       cval=fill) for c in range(img.shape[-1])], axis=-1)


@pytest.mark.parametrize("name", MAGNITUDE_OPS)
def test_each_op_at_magnitude_7_takes_the_documented_parameter(name, x64, record_property):
  del x64
  x = np.random.default_rng(5).uniform(0, 1, (N, H, W, 3))
  key = jax.random.key(6)
  out = np.asarray(aug.rand_augment(1, 7, ops=[name], fill=0.5)(jnp.asarray(x), key=key))
  m, err, signs = 0.7, 0.0, set()
  for xi, o, u in zip(x, out, _one_op_draws(key)):
    sign = 1.0 if u[1] < 0.5 else -1.0
    signs.add(sign)
    xj = jnp.asarray(xi)
    if name in ("brightness", "color", "contrast", "sharpness"):
      ref = getattr(en, name)(xj, 1 + 0.9 * sign * m)
    elif name == "posterize":
      ref = en.posterize(xj, jnp.asarray(5))  # 8 - round(2.8) bits
    elif name == "solarize":
      ref = np.where(xi < (256 / 255) * 0.3, xi, 1 - xi)
    elif name == "rotate":
      ref = geo.affine_warp(xj, geo.affine_matrix(jnp.asarray(math.radians(21 * sign)), 1, 0.0,
                                                  0.0), jnp.zeros(2), fill=0.5)
    elif name.startswith("shear"):
      k = 0.3 * m * sign
      deg = math.degrees(math.atan(k))
      shear = (deg, deg, 0, 0) if name == "shear_x" else (0, 0, deg, deg)
      ref = aug.random_affine(xj[None], key=jax.random.key(0), shear=shear, fill=0.5)[0]
    else:
      t = 150 / 331 * m * sign
      ref = (_scipy_shift(xi, 0, t * W, 0.5) if name == "translate_x"
             else _scipy_shift(xi, t * H, 0, 0.5))
    err = max(err, float(np.max(np.abs(o - np.asarray(ref)))))
  record_property("max_abs_err", err)
  assert err < 1e-14, err
  if name not in ("posterize", "solarize"):
    assert signs == {1.0, -1.0}


def test_magnitude_zero_is_the_identity_for_every_magnitude_driven_op():
  x = jnp.asarray(np.random.default_rng(7).uniform(0, 1, (N, H, W, 3)), jnp.float32)
  policy = jax.jit(aug.rand_augment(4, 0, ops=MAGNITUDE_OPS))
  np.testing.assert_array_equal(policy(x, key=jax.random.key(8)), x)
  np.testing.assert_array_equal(aug.rand_augment(0, 10)(x, key=jax.random.key(8)), x)


def test_ops_are_drawn_per_example_from_the_whole_list():
  n = 64
  x = jnp.asarray(np.random.default_rng(9).uniform(0, 1, (1, H, W, 3)), jnp.float32)
  x = jnp.broadcast_to(x, (n, H, W, 3))
  key = jax.random.key(10)
  out = np.asarray(jax.jit(aug.rand_augment(1, 10))(x, key=key))
  # which op each example drew, from the same draws, and its result
  draws = _one_op_draws(key, n, jnp.float32)
  picks = [aug.RAND_AUGMENT_OPS[min(int(u[0] * 14), 13)] for u in draws]
  assert len(set(picks)) >= 12
  for o, name in zip(out, picks):
    if name == "identity":
      np.testing.assert_array_equal(o, x[0])
    elif name == "equalize":
      np.testing.assert_array_equal(o, en.equalize(x[0]))
  assert len({o.tobytes() for o in out}) >= 12


def test_ops_without_color_work_on_any_channel_count():
  x = jnp.asarray(np.random.default_rng(11).uniform(0, 1, (4, H, W, 1)), jnp.float32)
  ops = [o for o in aug.RAND_AUGMENT_OPS if o not in ("color", "contrast")]
  out = jax.jit(aug.rand_augment(2, 5, ops=ops))(x, key=jax.random.key(0))
  assert out.shape == x.shape
  with pytest.raises(ValueError, match="needs RGB images"):
    aug.rand_augment(2, 5)(x, key=jax.random.key(0))


def test_rand_augment_checks_its_arguments():
  with pytest.raises(ValueError, match=r"magnitude=11.0 is outside the accepted range \[0, 10\]"):
    aug.rand_augment(2, 11)
  with pytest.raises(ValueError, match=r"magnitude=-1.0 is outside"):
    aug.rand_augment(2, -1)
  with pytest.raises(ValueError, match="num_ops=-1 must be an integer >= 0"):
    aug.rand_augment(-1, 5)
  with pytest.raises(ValueError, match="unknown: \\['blur'\\]"):
    aug.rand_augment(2, 5, ops=["rotate", "blur"])
  with pytest.raises(TypeError, match="got the string 'rotate'"):
    aug.rand_augment(2, 5, ops="rotate")
