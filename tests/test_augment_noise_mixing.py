"""Gaussian noise, cutout, random erasing, mixup and cutmix against transcriptions and counts."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jopt.augment as aug

N, H, W = 8, 9, 10


def _x(seed=0, n=N):
  return np.random.default_rng(seed).uniform(0, 1, (n, H, W, 3))


def _keys(key, n=N):
  return jax.random.split(key, n)


# ---------------------------------------------------------------- noise and occlusion
def test_gaussian_noise_is_x_plus_std_normal_clipped(x64):
  del x64
  x = _x(1)
  key = jax.random.key(2)
  out = np.asarray(aug.gaussian_noise(jnp.asarray(x), key=key, std=0.2))
  noise = np.asarray(jax.vmap(lambda k: jax.random.normal(k, (H, W, 3), jnp.float64))(_keys(key)))
  np.testing.assert_array_equal(out, np.clip(x + 0.2 * noise, 0, 1))
  assert 0.17 < np.std(noise * 0.2) < 0.23


def _box_mask(top, left, bh, bw):
  rows = (np.arange(H) >= top) & (np.arange(H) < top + bh)
  cols = (np.arange(W) >= left) & (np.arange(W) < left + bw)
  return rows[:, None] & cols[None, :]


def test_cutout_fills_a_size_square_at_a_uniform_center(x64):
  del x64
  x, size = _x(3, 32), 4
  key = jax.random.key(4)
  out = np.asarray(aug.cutout(jnp.asarray(x), key=key, size=size, fill=0.5))
  draws = np.asarray(jax.vmap(lambda k: jax.random.uniform(k, (3,), jnp.float64))(
      _keys(key, 32)))
  areas, centers = [], set()
  for xi, o, u in zip(x, out, draws):
    cy, cx = min(int(u[0] * H), H - 1), min(int(u[1] * W), W - 1)
    mask = _box_mask(cy - size // 2, cx - size // 2, size, size)
    np.testing.assert_array_equal(o, np.where(mask[..., None], 0.5, xi))
    areas.append(mask.sum())
    centers.add((cy, cx))
  assert max(areas) == size * size and min(areas) < size * size  # cut by the border
  assert len(centers) >= 20


def _torchvision_erase_box(u, scale, ratio):
  """torchvision's RandomErasing.get_params, transcribed, fed our uniform draws."""
  lr = (math.log(ratio[0]), math.log(ratio[1]))
  for a in range(10):
    area = H * W * (scale[0] + (scale[1] - scale[0]) * u[a])
    aspect = math.exp(lr[0] + (lr[1] - lr[0]) * u[10 + a])
    h = int(round(math.sqrt(area * aspect)))
    w = int(round(math.sqrt(area / aspect)))
    if h < H and w < W:
      return min(int(u[20] * (H - h + 1)), H - h), min(int(u[21] * (W - w + 1)), W - w), h, w
  return None


@pytest.mark.parametrize("p, scale, ratio", [(1.0, (0.02, 0.33), (0.3, 3.3)),
                                             (0.5, (0.1, 0.9), (0.5, 2.0))])
def test_random_erasing_follows_torchvisions_rule(p, scale, ratio, x64):
  del x64
  x = _x(5, 32)
  key = jax.random.key(6)
  out = np.asarray(aug.random_erasing(jnp.asarray(x), key=key, p=p, scale=scale, ratio=ratio,
                                      fill=0.25))
  draws = np.asarray(jax.vmap(lambda k: jax.random.uniform(k, (23,), jnp.float64))(
      _keys(key, 32)))
  erased = 0
  for xi, o, u in zip(x, out, draws):
    box = _torchvision_erase_box(u, scale, ratio)
    if box is None or not u[22] < p:
      np.testing.assert_array_equal(o, xi)
      continue
    erased += 1
    np.testing.assert_array_equal(o, np.where(_box_mask(*box)[..., None], 0.25, xi))
  assert (erased == 32) if p == 1.0 and scale[1] < 0.5 else 5 < erased < 27


def test_random_fill_is_uniform_noise_in_the_box():
  x = jnp.full((4, H, W, 3), 2.0)  # out of range on purpose: erased pixels are in [0, 1)
  out = np.asarray(aug.random_erasing(x, key=jax.random.key(0), p=1.0, fill="random"))
  erased = out[out != 2.0]
  assert erased.size > 0 and erased.min() >= 0 and erased.max() < 1
  assert len(np.unique(erased)) == erased.size  # noise, not a constant


# ---------------------------------------------------------------- mixup and cutmix
def _partner(labels_out):
  """Recover (lambda, partner) from mixed identity one-hot labels."""
  lam, part = [], []
  for n, row in enumerate(labels_out):
    others = [k for k in np.flatnonzero(row > 0) if k != n]
    part.append(others[0] if others else n)
    lam.append(row[n])
  return np.array(lam), np.array(part)


@pytest.mark.parametrize("per_example", [False, True])
def test_mixup_blends_images_and_labels_with_one_lambda(per_example, x64):
  del x64
  x = _x(7)
  labels = np.eye(N)
  xo, yo = aug.mixup(jnp.asarray(x), jnp.asarray(labels), key=jax.random.key(8), alpha=0.4,
                     per_example=per_example)
  xo, yo = np.asarray(xo), np.asarray(yo)
  np.testing.assert_allclose(yo.sum(axis=1), 1.0, rtol=0, atol=1e-15)
  lam, part = _partner(yo)
  moved = part != np.arange(N)
  assert moved.sum() >= N - 2 and sorted(part) == list(range(N))  # a permutation
  assert np.all((lam[moved] > 0) & (lam[moved] < 1))
  assert len(set(np.round(lam[moved], 12))) == (moved.sum() if per_example else 1)
  np.testing.assert_allclose(yo[np.arange(N), part][moved], 1 - lam[moved], rtol=0, atol=1e-15)
  ref = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * x[part]
  np.testing.assert_allclose(xo[moved], ref[moved], rtol=0, atol=1e-15)


@pytest.mark.parametrize("per_example", [False, True])
def test_cutmix_label_weight_is_the_counted_pasted_area(per_example, x64):
  del x64
  n = 16
  values = (np.arange(n) + 1.0) / (n + 1)
  x = np.broadcast_to(values[:, None, None, None], (n, H, W, 2)).copy()  # constant per example
  labels = np.eye(n)
  boxes = set()
  for seed in range(3):
    xo, yo = aug.cutmix(jnp.asarray(x), jnp.asarray(labels), key=jax.random.key(seed),
                        alpha=1.0, per_example=per_example)
    xo, yo = np.asarray(xo), np.asarray(yo)
    np.testing.assert_allclose(yo.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    _, part = _partner(yo)
    for i in range(n):
      pasted = xo[i, ..., 0] == values[part[i]]
      if part[i] == i:
        continue
      rows, cols = np.flatnonzero(pasted.any(1)), np.flatnonzero(pasted.any(0))
      if pasted.any():  # the pasted pixels form one rectangle
        assert pasted.sum() == len(rows) * len(cols)
        assert rows[-1] - rows[0] + 1 == len(rows) and cols[-1] - cols[0] + 1 == len(cols)
        boxes.add((seed, rows[0], cols[0], len(rows), len(cols)))
      np.testing.assert_allclose(yo[i, part[i]], pasted.sum() / (H * W), rtol=0, atol=1e-15)
      np.testing.assert_allclose(yo[i, i], 1 - pasted.sum() / (H * W), rtol=0, atol=1e-15)
  # one box per batch, or one per example
  assert len(boxes) >= (20 if per_example else 2) and (per_example or len(boxes) <= 3)


def test_mixing_checks_labels_and_key():
  x = jnp.zeros((4, 3, 3, 3))
  for op in (aug.mixup, aug.cutmix):
    with pytest.raises(TypeError, match=r"labels has dtype int32.*jax.nn.one_hot"):
      op(x, jnp.arange(4), key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"labels must have shape \(N, K\) = \(4, num_classes\)"):
      op(x, jnp.zeros((3, 5)), key=jax.random.key(0))
    with pytest.raises(ValueError, match="key must be one PRNG key .* batch of 4 keys"):
      op(x, jnp.zeros((4, 5)), key=jax.random.split(jax.random.key(0), 4))
    with pytest.raises(ValueError, match=r"alpha=-1.0 is outside the accepted range \[0, inf\)"):
      op(x, jnp.zeros((4, 5)), key=jax.random.key(0), alpha=-1.0)
    y0 = jax.nn.one_hot(jnp.arange(4), 4)
    xo, yo = op(x + 0.5, y0, key=jax.random.key(0), alpha=0.0)
    np.testing.assert_array_equal(xo, x + 0.5)
    np.testing.assert_array_equal(yo, y0)
