"""Properties every jopt.augment op must have, over one registry of all ops.

Range kept, determinism, per-example randomness, one key vs a batch of keys,
magnitude 0 is the identity (jit, vmap and dtypes:
tests/test_augment_jit_vmap_dtype.py). Shapes are tiny and every op is jitted
once per input signature: XLA compiles dominate the run.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jopt.augment as aug

N, H, W = 6, 8, 8


class Entry(NamedTuple):
  op: Callable[..., Any]           # op(images, *, key) -> images
  zero: Callable[..., Any] | None  # the same op at magnitude 0, or None
  batch_keys: bool = True          # accepts a batch of keys (mixup/cutmix: one key)
  mixes: bool = False              # mixes examples (identical inputs give identical outputs)


def _labels(n):
  return jax.nn.one_hot(jnp.arange(n) % 3, 3)


def _mixup(images, *, key, alpha=1.0):
  return aug.mixup(images, _labels(images.shape[0]), key=key, alpha=alpha, per_example=True)[0]


def _cutmix(images, *, key, alpha=1.0):
  return aug.cutmix(images, _labels(images.shape[0]), key=key, alpha=alpha, per_example=True)[0]


P = functools.partial
REGISTRY = {
    "flip_left_right": Entry(P(aug.random_flip_left_right, p=0.5),
                             P(aug.random_flip_left_right, p=0.0)),
    "flip_up_down": Entry(P(aug.random_flip_up_down, p=0.5), P(aug.random_flip_up_down, p=0.0)),
    "affine": Entry(P(aug.random_affine, degrees=40, translate=(0.2, 0.1), scale=(0.7, 1.3),
                      shear=(-10, 10, -5, 5), fill=0.5),
                    P(aug.random_affine, fill=0.5)),
    "crop": Entry(P(aug.random_crop, padding=3, fill=0.25), P(aug.random_crop, padding=0)),
    "crop_reflect": Entry(P(aug.random_crop, padding=3, mode="reflect"), None),
    "resized_crop": Entry(P(aug.random_resized_crop, size=(H, W)), None),
    "brightness": Entry(P(aug.random_brightness, max_delta=0.5),
                        P(aug.random_brightness, max_delta=0.0)),
    "contrast": Entry(P(aug.random_contrast, strength=0.8), P(aug.random_contrast, strength=0.0)),
    "saturation": Entry(P(aug.random_saturation, strength=0.8),
                        P(aug.random_saturation, strength=0.0)),
    "hue": Entry(P(aug.random_hue, max_delta=0.5), P(aug.random_hue, max_delta=0.0)),
    "color_jitter": Entry(P(aug.color_jitter, brightness=0.5, contrast=0.5, saturation=0.5,
                            hue=0.2), P(aug.color_jitter)),
    "gaussian_noise": Entry(P(aug.gaussian_noise, std=0.3), P(aug.gaussian_noise, std=0.0)),
    "cutout": Entry(P(aug.cutout, size=4, fill=0.5), P(aug.cutout, size=0)),
    "random_erasing": Entry(P(aug.random_erasing, p=1.0, fill="random"),
                            P(aug.random_erasing, p=1.0, scale=(0.0, 0.0))),
    "mixup": Entry(_mixup, P(_mixup, alpha=0.0), batch_keys=False, mixes=True),
    "cutmix": Entry(_cutmix, P(_cutmix, alpha=0.0), batch_keys=False, mixes=True),
    "sequence": Entry(aug.sequence(P(aug.random_crop, padding=2), aug.random_flip_left_right,
                                   P(aug.random_hue, max_delta=0.3)),
                      aug.sequence(P(aug.random_crop, padding=0), P(aug.random_hue, max_delta=0))),
    "random_choice": Entry(aug.random_choice([P(aug.random_brightness, max_delta=0.5),
                                              P(aug.cutout, size=3)], p=[0.5, 0.5]),
                           aug.random_choice([P(aug.random_brightness, max_delta=0.0),
                                              P(aug.cutout, size=0)])),
    "random_apply": Entry(aug.random_apply(P(aug.random_hue, max_delta=0.4), p=0.5),
                          aug.random_apply(P(aug.random_hue, max_delta=0.4), p=0.0)),
    "rand_augment": Entry(aug.rand_augment(num_ops=2, magnitude=9),
                          aug.rand_augment(num_ops=3, magnitude=0,
                                           ops=[o for o in aug.RAND_AUGMENT_OPS
                                                if o not in ("auto_contrast", "equalize")])),
}
NAMES = sorted(REGISTRY)
ZERO_NAMES = sorted(n for n in NAMES if REGISTRY[n].zero is not None)


@functools.lru_cache(maxsize=None)
def _jitted(name: str, which: str = "op"):
  entry = REGISTRY[name]
  return jax.jit(lambda x, k: getattr(entry, which)(x, key=k))


def _images(seed=0, n=N, dtype=jnp.float32):
  x = np.random.default_rng(seed).uniform(0, 1, (n, H, W, 3))
  x[0, :2] = 0.0   # exact 0 and 1 pixels: the edges of the range
  x[1, :2] = 1.0
  return jnp.asarray(x, dtype)


@pytest.mark.parametrize("name", NAMES)
def test_range_shape_determinism_and_per_example_randomness(name):
  f = _jitted(name)
  x = _images()
  key = jax.random.key(0)
  y = f(x, key)
  assert y.shape == x.shape and y.dtype == x.dtype
  assert bool(jnp.all(jnp.isfinite(y))) and float(y.min()) >= 0 and float(y.max()) <= 1
  np.testing.assert_array_equal(y, f(x, key))  # same key, same result
  assert not np.array_equal(y, f(x, jax.random.key(1))), "a new key changed nothing"
  if REGISTRY[name].mixes:
    return  # per-example mixing parameters: tests/test_augment_noise_mixing.py
  # identical examples, different keys: not all outputs the same
  same = jnp.broadcast_to(x[2:3], x.shape)
  ys = np.asarray(f(same, key))
  assert any(not np.array_equal(ys[0], ys[i]) for i in range(1, N)), \
      "every example got the same random parameters"


@pytest.mark.parametrize("name", [n for n in NAMES if REGISTRY[n].batch_keys])
def test_batch_of_keys_equals_one_key(name):
  x = _images(1)
  key = jax.random.key(3)
  y = _jitted(name)(x, key)
  typed = jax.random.split(key, N)
  np.testing.assert_array_equal(y, _jitted(name)(x, typed))
  with pytest.raises(ValueError, match="batch of 5 keys but images has 6"):
    REGISTRY[name].op(x, key=typed[:5])


@pytest.mark.parametrize("name", ["flip_left_right", "crop", "color_jitter", "sequence",
                                  "mixup"])
def test_raw_prng_keys_accepted(name):
  x = _images(2)
  key = jax.random.key(4)
  y = _jitted(name)(x, key)
  np.testing.assert_array_equal(y, _jitted(name)(x, jax.random.key_data(key)))
  if REGISTRY[name].batch_keys:
    raw = jax.random.key_data(jax.random.split(key, N))
    np.testing.assert_array_equal(y, _jitted(name)(x, raw))


@pytest.mark.parametrize("name", ZERO_NAMES)
def test_magnitude_zero_is_the_identity(name):
  x = _images(7)
  np.testing.assert_array_equal(_jitted(name, "zero")(x, jax.random.key(6)), x)


# ---------------------------------------------------------------- bad input
_IMG = jnp.zeros((2, 4, 4, 3))
_K = jax.random.key(0)


@pytest.mark.parametrize("name", NAMES)
def test_bad_images_raise_naming_images_and_the_fix(name):
  op = REGISTRY[name].op
  with pytest.raises(TypeError, match=r"images has dtype uint8.*astype\(jnp.float32\) / 255"):
    op(jnp.zeros((2, 4, 4, 3), jnp.uint8), key=_K)
  with pytest.raises(ValueError, match=r"NHWC .* got shape \(4, 4, 3\); for one HWC image pass"
                                       r" images\[None\]"):
    op(jnp.zeros((4, 4, 3)), key=_K)
  with pytest.raises(TypeError, match="key must be a PRNG key"):
    op(_IMG, key=jnp.zeros((2,), jnp.float32))


BAD_ARGUMENTS = [
    (P(aug.random_flip_left_right, p=1.5), r"p=1.5 is outside the accepted range \[0, 1\]"),
    (P(aug.random_flip_up_down, p=-0.1), r"p=-0.1 is outside"),
    (P(aug.cutout, size=2, p=2), r"cutout: p=2.0 is outside"),
    (P(aug.random_erasing, p=-1), r"random_erasing: p=-1.0 is outside"),
    (P(aug.random_brightness, max_delta=-0.1), r"max_delta=-0.1 is outside .*\[0, inf\)"),
    (P(aug.random_contrast, strength=-1), r"strength=-1.0 is outside"),
    (P(aug.random_saturation, strength=float("nan")), r"strength=nan is outside"),
    (P(aug.random_hue, max_delta=-0.2), r"max_delta=-0.2 is outside"),
    (P(aug.color_jitter, saturation=-0.5), r"color_jitter: saturation=-0.5 is outside"),
    (P(aug.gaussian_noise, std=-1), r"std=-1.0 is outside"),
    (P(aug.cutout, size=-1), r"size=-1 must be an integer >= 0"),
    (P(aug.random_crop, padding=-2), r"padding=-2 must be an integer >= 0"),
    (P(aug.random_crop, padding=1, mode="wrap"), r"mode='wrap' is not one of"),
    (P(aug.random_affine, degrees=-5), r"degrees=-5.0 is outside"),
    (P(aug.random_affine, degrees=(10, 5)), r"degrees=\(10, 5\) has lo > hi"),
    (P(aug.random_affine, translate=(1.5, 0)), r"translate\[0\]=1.5 is outside"),
    (P(aug.random_affine, scale=(0, 1)), r"scale\[0\]=0.0 is outside .*\(0, inf\)"),
    (P(aug.random_affine, shear=95), r"shear=95.0 is outside"),
    (P(aug.random_affine, shear=(1, 2, 3)), r"shear=\(1, 2, 3\) must be a number"),
    (P(aug.random_resized_crop, size=0), r"size=0 must be an integer >= 1"),
    (P(aug.random_resized_crop, size=4, scale=(0.5, 0.1)), r"scale=\(0.5, 0.1\) has lo > hi"),
    (P(aug.random_resized_crop, size=4, ratio=(0, 1)), r"ratio\[0\]=0.0 is outside"),
    (P(aug.random_erasing, scale=(0.1, 1.5)), r"scale\[1\]=1.5 is outside .*\[0, 1\]"),
    (P(aug.random_erasing, fill="noise"), r"fill='noise' must be a number or 'random'"),
]


@pytest.mark.parametrize("call, message", BAD_ARGUMENTS)
def test_bad_arguments_raise_naming_the_argument(call, message):
  with pytest.raises(ValueError, match=message):
    call(_IMG, key=_K)


def test_missing_key_says_how_to_pass_one():
  with pytest.raises(TypeError, match=r"key is required \(keyword-only\)"):
    aug.random_flip_left_right(_IMG, key=None)


def test_traced_arguments_pass_unchecked_and_are_used():
  f = jax.jit(lambda x, p, d: aug.random_brightness(
      aug.random_flip_left_right(x, key=_K, p=p), key=_K, max_delta=d))
  x = _images()
  np.testing.assert_array_equal(f(x, 1.0, 0.0), jnp.flip(x, 2))


# ---------------------------------------------------------------- docstrings
PUBLIC = [n for n in aug.__all__ if callable(getattr(aug, n))]


@pytest.mark.parametrize("name", PUBLIC)
def test_public_functions_document_math_args_example_reference_and_source(name):
  doc = inspect.getdoc(getattr(aug, name))
  summary = doc.splitlines()[0]
  assert summary.strip() and len(summary) <= 100, summary
  for section in ("Args:", "Returns:", "Example:", "Reference:"):
    assert section in doc, (name, section)
  assert ":math:" in doc or ".. math::" in doc, name
  assert "dm-pix" in doc, f"{name} does not say whether it is dm-pix's op or jopt's own"
