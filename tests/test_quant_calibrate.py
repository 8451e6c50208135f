"""jopt.quant calibration: min-max, percentile, MSE clipping, the running observer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jopt import quant


def _data(seed=0, shape=(64, 5)):
  """Heavy-tailed (Student-t, 2 dof) samples: clipping matters."""
  return np.random.default_rng(seed).standard_t(2, size=shape)


def np_fake(x, lo, hi, bits, scheme):
  if scheme == "symmetric":
    qmax = 2 ** (bits - 1) - 1
    s = max(max(abs(lo), abs(hi)) / qmax, np.finfo(np.float64).tiny)
    return s * np.clip(np.round(x / s), -qmax, qmax)
  qmax = 2 ** bits - 1
  lo, hi = min(lo, 0.0), max(hi, 0.0)
  s = max((hi - lo) / qmax, np.finfo(np.float64).tiny)
  z = np.clip(np.round(-lo / s), 0, qmax)
  return s * (np.clip(np.round(x / s) + z, 0, qmax) - z)


def np_mse(x, bits, scheme, grid):
  """NumPy transcription of Nagel et al.'s grid search over clipping ratios i / grid."""
  x = np.asarray(x, np.float64).reshape(-1)
  lo, hi = x.min(), x.max()
  if scheme == "symmetric":
    hi = max(-lo, hi)
    lo = -hi
  best, best_a = np.inf, None
  for i in range(1, grid + 1):
    a = i / grid
    e = np.sum((x - np_fake(x, a * lo, a * hi, bits, scheme)) ** 2)
    if e < best:
      best, best_a = e, a
  return best_a * lo, best_a * hi


def test_minmax_per_tensor_and_channel_over_batches(x64):
  batches = [_data(i, (8, 3, 5)) for i in range(3)]
  allx = np.concatenate(batches)
  r = quant.calibrate([jnp.asarray(b) for b in batches])
  assert r.min.shape == () and float(r.min) == allx.min() and float(r.max) == allx.max()
  r = quant.calibrate([jnp.asarray(b) for b in batches], granularity="channel", axis=1)
  np.testing.assert_array_equal(r.min, allx.min((0, 2)))
  np.testing.assert_array_equal(r.max, allx.max((0, 2)))
  qa = quant.quantize(jnp.asarray(allx), 8, scheme="asymmetric", granularity="channel",
                      axis=1, clip_range=r)
  ref = quant.quantize(jnp.asarray(allx), 8, scheme="asymmetric", granularity="channel",
                       axis=1)
  np.testing.assert_array_equal(qa.codes, ref.codes)


@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
def test_percentile_matches_numpy(x64, scheme):
  x = _data(1, (200, 4))
  r = quant.calibrate(jnp.asarray(x), "percentile", percentile=99.0, scheme=scheme,
                      granularity="channel")
  if scheme == "symmetric":
    hi = np.percentile(np.abs(x), 99.0, axis=0)
    np.testing.assert_allclose(r.max, hi, rtol=1e-15)
    np.testing.assert_allclose(r.min, -hi, rtol=1e-15)
  else:
    np.testing.assert_allclose(r.min, np.percentile(x, 1.0, axis=0), rtol=1e-15)
    np.testing.assert_allclose(r.max, np.percentile(x, 99.0, axis=0), rtol=1e-15)


@pytest.mark.parametrize("bits,scheme", [(4, "symmetric"), (3, "asymmetric"), (8, "symmetric")])
def test_mse_matches_numpy_grid_search_and_beats_minmax(x64, bits, scheme):
  x = _data(2, (300, 3))
  r = quant.calibrate(jnp.asarray(x), "mse", bits=bits, scheme=scheme, grid_size=50,
                      granularity="channel")
  for j in range(3):
    lo, hi = np_mse(x[:, j], bits, scheme, 50)
    np.testing.assert_allclose([r.min[j], r.max[j]], [lo, hi], rtol=1e-15)
  err = lambda q: float(jnp.sum((q.dequantize() - x) ** 2))
  clipped = quant.quantize(jnp.asarray(x), bits, scheme=scheme, granularity="channel",
                           clip_range=r)
  full = quant.quantize(jnp.asarray(x), bits, scheme=scheme, granularity="channel")
  assert err(clipped) <= err(full)
  if bits < 8:
    full_hi = np.abs(x).max(0) if scheme == "symmetric" else x.max(0)
    assert np.all(np.asarray(r.max) < full_hi)    # heavy tails get clipped


def test_observer_min_max_matches_concatenation_and_jits():
  batches = [jnp.asarray(_data(i, (16, 4)), jnp.float32) for i in range(4)]
  upd = jax.jit(quant.observer_update)
  s = quant.observer_init()
  sc = quant.observer_init(num_channels=4)
  for b in batches:
    s = upd(s, b)
    sc = jax.jit(quant.observer_update, static_argnames="axis")(sc, b, axis=1)
  allx = np.concatenate([np.asarray(b) for b in batches])
  assert int(s.count) == 4 and s.count.dtype == jnp.int32
  assert float(s.min) == allx.min() and float(s.max) == allx.max()
  np.testing.assert_array_equal(sc.min, allx.min(0))
  np.testing.assert_array_equal(sc.max, allx.max(0))
  r = quant.observer_range(sc)
  np.testing.assert_array_equal(r.max, allx.max(0))
  assert all(isinstance(v, jax.Array) for v in s)


def test_observer_histogram_grows_by_merging_and_matches_a_direct_count(x64):
  rng = np.random.default_rng(3)
  batches = [rng.normal(size=500) * scale for scale in (0.5, 1.0, 3.0, 2.0)]
  s = quant.observer_init(bins=64, dtype=jnp.float64)
  for b in batches:
    s = jax.jit(quant.observer_update)(s, jnp.asarray(b))
  allx = np.concatenate(batches)
  limit = float(s.limit)
  assert limit >= np.abs(allx).max() and float(s.histogram.sum()) == allx.size
  # the first batch set the range; each later overflow doubled it
  first = np.abs(batches[0]).max()
  assert limit / first == 2 ** np.ceil(np.log2(np.abs(allx).max() / first))
  direct, _ = np.histogram(allx, bins=64, range=(-limit, limit))
  np.testing.assert_array_equal(s.histogram, direct)
  width = 2 * limit / 64
  r = quant.observer_range(s, "percentile", percentile=99.0)
  assert abs(float(r.max) - np.percentile(np.abs(allx), 99.0)) <= width
  r = quant.observer_range(s, "percentile", percentile=99.0, scheme="asymmetric")
  assert abs(float(r.min) - np.percentile(allx, 1.0)) <= width
  assert abs(float(r.max) - np.percentile(allx, 99.0)) <= width
  m = quant.observer_range(s, "mse", bits=4)
  ref = quant.calibrate(jnp.asarray(allx), "mse", bits=4)
  assert abs(float(m.max) - float(ref.max)) <= 2 * width, (float(m.max), float(ref.max))


def test_calibration_bad_input_names_the_argument():
  x = jnp.ones((4, 3))
  for bad in (jnp.nan, jnp.inf, -jnp.inf):
    with pytest.raises(ValueError, match="calibrate: samples contains NaN or Inf"):
      quant.calibrate([x, x.at[0, 0].set(bad)])
    with pytest.raises(ValueError, match="observer_update: x contains NaN or Inf"):
      quant.observer_update(quant.observer_init(), x.at[1, 1].set(bad))
  with pytest.raises(ValueError, match="calibrate: method='max' is not one of"):
    quant.calibrate(x, "max")
  with pytest.raises(ValueError, match="calibrate: percentile=0.0 is outside"):
    quant.calibrate(x, "percentile", percentile=0.0)
  with pytest.raises(ValueError, match="calibrate: percentile=101.0 is outside"):
    quant.calibrate(x, "percentile", percentile=101.0)
  with pytest.raises(ValueError, match="calibrate: bits=1 is outside"):
    quant.calibrate(x, "mse", bits=1)
  with pytest.raises(ValueError, match="calibrate: granularity='group' is not one of"):
    quant.calibrate(x, granularity="group")
  with pytest.raises(ValueError, match="calibrate: axis=5 is out of range"):
    quant.calibrate(x, granularity="channel", axis=5)
  with pytest.raises(ValueError, match="calibrate: samples are batches of shapes"):
    quant.calibrate([jnp.ones((2, 3)), jnp.ones((2, 4))])
  with pytest.raises(ValueError, match="calibrate: samples is empty"):
    quant.calibrate([])
  with pytest.raises(ValueError, match="calibrate: grid_size=0 must be an integer >= 1"):
    quant.calibrate(x, "mse", grid_size=0)
  with pytest.raises(ValueError, match="observer_init: bins=6 must be a multiple of 4"):
    quant.observer_init(bins=6)
  with pytest.raises(ValueError, match="observer_init: bins=8 with num_channels=3"):
    quant.observer_init(3, bins=8)
  with pytest.raises(ValueError, match="observer_update: x.shape\\[1\\]=3, but the observer"):
    quant.observer_update(quant.observer_init(4), x, axis=1)
  with pytest.raises(ValueError, match="observer_range: state has seen no batch"):
    quant.observer_range(quant.observer_init())
  s = quant.observer_update(quant.observer_init(), x)
  with pytest.raises(ValueError, match="observer_range: method='mse' needs a histogram"):
    quant.observer_range(s, "mse")
