"""Color ops against a NumPy / colorsys transcription, fed the same random draws.

Each op draws its per-example parameters from ``jax.random.split(key, N)``
(documented: one key is split into one per example); the references below
recompute those draws and apply the documented formula in float64.
"""

from __future__ import annotations

import colorsys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jopt.augment as aug

N, H, W = 8, 4, 5


def _x(seed=0, low=0.0, high=1.0):
  return np.random.default_rng(seed).uniform(low, high, (N, H, W, 3))


def _draws(key, shape=()):
  keys = jax.random.split(key, N)
  return np.asarray(jax.vmap(lambda k: jax.random.uniform(k, shape, jnp.float64))(keys))


def _hsv_map(img, fn):
  out = np.empty_like(img)
  for idx in np.ndindex(img.shape[:-1]):
    out[idx] = colorsys.hsv_to_rgb(*fn(*colorsys.rgb_to_hsv(*img[idx])))
  return out


def _bright(img, d):
  return np.clip(img + d, 0, 1)


def _contrast(img, f):
  mean = img.mean(axis=(0, 1), keepdims=True)
  return np.clip(f * (img - mean) + mean, 0, 1)


def _saturation(img, f):
  return np.clip(_hsv_map(img, lambda h, s, v: (h, min(max(s * f, 0.0), 1.0), v)), 0, 1)


def _hue(img, d):
  return np.clip(_hsv_map(img, lambda h, s, v: ((h + d) % 1.0, s, v)), 0, 1)


CASES = [  # op, its argument, the reference, the parameter from a U[0, 1) draw u
    (aug.random_brightness, {"max_delta": 0.3}, _bright, lambda u: -0.3 + 0.6 * u),
    (aug.random_contrast, {"strength": 0.5}, _contrast, lambda u: 0.5 + 1.0 * u),
    (aug.random_contrast, {"strength": 1.5}, _contrast, lambda u: 0.0 + 2.5 * u),
    (aug.random_saturation, {"strength": 0.7}, _saturation, lambda u: 0.3 + 1.4 * u),
    (aug.random_hue, {"max_delta": 0.4}, _hue, lambda u: -0.4 + 0.8 * u),
]


@pytest.mark.parametrize("op, kwargs, ref, param", CASES)
def test_color_op_matches_its_formula_per_example(op, kwargs, ref, param, x64, record_property):
  del x64
  x = _x(1)
  key = jax.random.key(2)
  out = np.asarray(op(jnp.asarray(x), key=key, **kwargs))
  params = [param(u) for u in _draws(key)]
  assert len(set(np.round(params, 12))) == N  # different parameters per example
  err = max(float(np.max(np.abs(o - ref(xi, p)))) for xi, o, p in zip(x, out, params))
  record_property("max_abs_err", err)
  assert err < 1e-14, err


def test_brightness_clips_to_the_unit_range():
  x = jnp.full((N, 2, 2, 3), 0.95, jnp.float32)
  out = aug.random_brightness(x, key=jax.random.key(0), max_delta=0.5)
  assert float(out.max()) == 1.0 and float(out.min()) >= 0.45


@pytest.mark.parametrize("random_order", [False, True])
def test_color_jitter_matches_the_four_ops_in_the_drawn_order(random_order, x64, record_property):
  del x64
  x = _x(3)
  key = jax.random.key(4)
  b, c, s, h = 0.2, 0.4, 0.6, 0.15
  out = np.asarray(aug.color_jitter(jnp.asarray(x), key=key, brightness=b, contrast=c,
                                    saturation=s, hue=h, random_order=random_order))
  orders, err = set(), 0.0
  for xi, o, u in zip(x, out, _draws(key, (8,))):
    params = (-b + 2 * b * u[0], 1 - c + 2 * c * u[1], 1 - s + 2 * s * u[2], -h + 2 * h * u[3])
    order = tuple(np.argsort(u[4:])) if random_order else (0, 1, 2, 3)
    orders.add(order)
    y = xi
    for i in order:
      y = (_bright, _contrast, _saturation, _hue)[i](y, params[i])
    err = max(err, float(np.max(np.abs(o - y))))
  record_property("max_abs_err", err)
  assert err < 1e-14, err
  assert len(orders) >= 5 if random_order else orders == {(0, 1, 2, 3)}  # 24 orders, 8 draws


@pytest.mark.parametrize("op, kwargs", [(aug.random_hue, {"max_delta": 0.1}),
                                        (aug.random_saturation, {"strength": 0.1}),
                                        (aug.color_jitter, {"hue": 0.1})])
def test_color_ops_need_rgb(op, kwargs):
  with pytest.raises(ValueError, match="needs RGB images .3 channels"):
    op(jnp.zeros((2, 4, 4, 1)), key=jax.random.key(0), **kwargs)


def test_hue_range_is_checked():
  with pytest.raises(ValueError, match=r"max_delta=0.6 is outside the accepted range \[0, 0.5\]"):
    aug.random_hue(jnp.zeros((1, 2, 2, 3)), key=jax.random.key(0), max_delta=0.6)
