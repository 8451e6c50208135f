"""jopt.nn dropout family: mask statistics, exact scaling, keys, vmap / jit, dtypes, errors.

The statistical tests draw one mask of ~200k Bernoulli trials from a fixed key
and check the kept count against the exact binomial 99.9% interval
(``scipy.stats.binom.ppf``) and the output mean against a 99.9% CLT bound:
with fixed keys they are deterministic, and a wrong keep probability (e.g.
``rate`` used as the keep probability, or a mask shared across channels) falls
far outside them.
"""

import doctest
import importlib
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

import jopt
import jopt.nn as jnn

Z999 = sps.norm.ppf(0.9995)    # two-sided 99.9%: 3.29


def _binom_interval(n, keep):
  return sps.binom.ppf(0.0005, n, keep), sps.binom.ppf(0.9995, n, keep)


def _inv_keep(rate):
  """1 / (1 - rate) as the float32 factor the kept values are multiplied by (torch's way)."""
  return np.float32(1) / (np.float32(1) - np.float32(rate))


def _keys(kind, seed):
  return jax.random.key(seed) if kind == "typed" else jax.random.PRNGKey(seed)


@pytest.mark.parametrize("kind", ["typed", "raw"])
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_dropout_kept_fraction_and_mean(kind, rate):
  n = 200_000
  x = jnp.asarray(np.random.default_rng(0).uniform(1.0, 2.0, size=(400, 500)), jnp.float32)
  y = np.asarray(jnn.dropout(x, rate, key=_keys(kind, 3)))
  xs = np.asarray(x)
  kept = y != 0
  keep = 1.0 - rate
  lo, hi = _binom_interval(n, keep)
  assert lo <= kept.sum() <= hi, (kept.sum(), lo, hi)
  # kept values are exactly x * (1 / (1 - rate)) in float32; dropped ones exactly 0
  np.testing.assert_array_equal(y[kept], xs[kept] * _inv_keep(rate))
  # mean preserved: sum(y - x) has mean 0 and variance sum(x^2) * rate / keep
  # (independent terms of bounded variance, n = 200k: the CLT bound applies)
  bound = Z999 * np.sqrt(np.sum(xs.astype(np.float64) ** 2) * rate / keep) / n
  assert abs(y.astype(np.float64).mean() - xs.astype(np.float64).mean()) <= bound


def test_typed_and_raw_keys_give_the_same_mask():
  x = jnp.ones((64, 32))
  a = jnn.dropout(x, 0.3, key=jax.random.key(7))
  b = jnn.dropout(x, 0.3, key=jax.random.PRNGKey(7))
  np.testing.assert_array_equal(a, b)


def test_deterministic_per_key():
  x = jnp.ones((64, 32))
  a = jnn.dropout(x, 0.5, key=jax.random.key(1))
  np.testing.assert_array_equal(a, jnn.dropout(x, 0.5, key=jax.random.key(1)))
  assert not np.array_equal(a, jnn.dropout(x, 0.5, key=jax.random.key(2)))


@pytest.mark.parametrize("fn", [jnn.dropout, jnn.spatial_dropout, jnn.drop_path])
def test_eval_and_rate_zero_return_x_itself(fn):
  x = jnp.ones((2, 3, 3, 4))
  assert fn(x, 0.5, key=None, train=False) is x
  assert fn(x, 0.0, key=None) is x
  assert fn(x, 0, key=jax.random.key(0)) is x


def test_vmap_per_example_keys():
  xs = jnp.ones((8, 256))
  keys = jax.random.split(jax.random.key(0), 8)
  f = jax.vmap(lambda x, k: jnn.dropout(x, 0.5, key=k))
  y = np.asarray(f(xs, keys))
  # one call per example gives the same rows
  for i in range(8):
    np.testing.assert_array_equal(y[i], jnn.dropout(xs[i], 0.5, key=keys[i]))
  masks = y != 0
  assert all(not np.array_equal(masks[0], masks[i]) for i in range(1, 8))
  same = np.asarray(f(xs, jnp.stack([keys[3]] * 8)))
  assert all(np.array_equal(same[0], same[i]) for i in range(8))
  # raw keys too
  raw = jax.random.split(jax.random.PRNGKey(0), 8)
  np.testing.assert_array_equal(f(xs, raw), f(xs, jax.vmap(jax.random.wrap_key_data)(raw)))
  # evaluation under vmap is the identity
  ev = jax.vmap(lambda x, k: jnn.dropout(x, 0.5, key=k, train=False))(xs, keys)
  np.testing.assert_array_equal(ev, xs)


@pytest.mark.parametrize("fn", [jnn.dropout, jnn.spatial_dropout, jnn.drop_path])
def test_jit_matches_eager_also_with_traced_rate(fn):
  x = jax.random.normal(jax.random.key(0), (4, 5, 5, 6))
  key = jax.random.key(3)
  eager = fn(x, 0.4, key=key)
  np.testing.assert_array_equal(jax.jit(lambda x, k: fn(x, 0.4, key=k))(x, key), eager)
  traced = jax.jit(lambda x, r, k: fn(x, r, key=k))(x, jnp.float32(0.4), key)
  np.testing.assert_array_equal(traced, eager)
  static_train = jax.jit(lambda x, k, train: fn(x, 0.4, key=k, train=train),
                         static_argnames="train")
  np.testing.assert_array_equal(static_train(x, key, train=False), x)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
@pytest.mark.parametrize("fn", [jnn.dropout, jnn.spatial_dropout, jnn.drop_path])
def test_dtype_kept_and_scaling_in_float32(dtype, fn):
  x = jax.random.normal(jax.random.key(0), (8, 4, 4, 16)).astype(dtype)
  y = fn(x, 0.3, key=jax.random.key(1))
  assert y.dtype == dtype
  kept = np.asarray(y.astype(jnp.float32)) != 0
  expect = (np.asarray(x.astype(jnp.float32)) * _inv_keep(0.3)).astype(dtype)
  np.testing.assert_array_equal(np.asarray(y)[kept], expect[kept])


def test_float64_kept(x64):
  x = jnp.ones((16, 16), jnp.float64)
  y = jnn.dropout(x, 0.25, key=jax.random.key(0))
  assert y.dtype == jnp.float64
  np.testing.assert_array_equal(np.unique(np.asarray(y)), [0.0, 1.0 / 0.75])


def test_spatial_dropout_whole_maps_nhwc():
  n, h, w, c = 500, 2, 2, 100            # 50k maps, 200k elements
  x = jnp.asarray(np.random.default_rng(1).uniform(1.0, 2.0, size=(n, h, w, c)), jnp.float32)
  y = np.asarray(jnn.spatial_dropout(x, 0.4, key=jax.random.key(5)))
  kept = y != 0
  per_map = kept.reshape(n, h * w, c)
  assert np.all(per_map.all(axis=1) | ~per_map.any(axis=1)), "a map was partly dropped"
  lo, hi = _binom_interval(n * c, 0.6)
  assert lo <= per_map[:, 0, :].sum() <= hi
  np.testing.assert_array_equal(y[kept], np.asarray(x)[kept] * _inv_keep(0.4))
  # the maps of different examples are drawn independently
  assert not np.array_equal(per_map[0, 0], per_map[1, 0])


def test_spatial_dropout_nchw_and_5d():
  x = jnp.ones((64, 8, 3, 3))            # NCHW, like torch.nn.Dropout2d
  y = np.asarray(jnn.spatial_dropout(x, 0.5, key=jax.random.key(0), channel_axis=1))
  maps = (y != 0).reshape(64, 8, 9)
  assert np.all(maps.all(-1) | ~maps.any(-1))
  assert 0 < maps.all(-1).sum() < 64 * 8
  x5 = jnp.ones((16, 2, 3, 3, 8))        # NDHWC
  y5 = np.asarray(jnn.spatial_dropout(x5, 0.5, key=jax.random.key(0)))
  maps5 = (y5 != 0).reshape(16, 18, 8)
  assert np.all(maps5.all(1) | ~maps5.any(1))


def test_drop_path_per_example():
  n = 20_000
  x = jnp.asarray(np.random.default_rng(2).uniform(1.0, 2.0, size=(n, 3, 4)), jnp.float32)
  y = np.asarray(jnn.drop_path(x, 0.2, key=jax.random.key(9)))
  kept = (y != 0).reshape(n, -1)
  assert np.all(kept.all(1) | ~kept.any(1)), "an example was partly dropped"
  lo, hi = _binom_interval(n, 0.8)
  assert lo <= kept[:, 0].sum() <= hi
  np.testing.assert_array_equal(y[y != 0], np.asarray(x)[y != 0] * _inv_keep(0.2))
  # a residual block: dropped examples pass their input through unchanged
  h = np.asarray(x + jnn.drop_path(x, 0.2, key=jax.random.key(9)))
  np.testing.assert_array_equal(h[~kept[:, 0]], np.asarray(x)[~kept[:, 0]])


def test_errors_name_the_argument():
  x = jnp.ones((4, 3, 3, 2))
  k = jax.random.key(0)
  with pytest.raises(ValueError, match=r"dropout: rate=1 .*remove the layer"):
    jnn.dropout(x, 1.0, key=k)
  for bad in (-0.1, 1.5, float("nan")):
    with pytest.raises(ValueError, match=r"dropout: rate="):
      jnn.dropout(x, bad, key=k)
  with pytest.raises(TypeError, match="rate"):
    jnn.dropout(x, "0.5", key=k)
  with pytest.raises(ValueError, match=r"drop_path: key is None"):
    jnn.drop_path(x, 0.5, key=None)
  with pytest.raises(TypeError, match=r"dropout: x has dtype int32"):
    jnn.dropout(jnp.ones((3,), jnp.int32), 0.5, key=k)
  with pytest.raises(TypeError, match=r"x has dtype bool"):
    jnn.drop_path(jnp.ones((3,), bool), 0.5, key=k, train=False)
  with pytest.raises(ValueError, match=r"key has shape \(3,\).*vmap"):
    jnn.dropout(x, 0.5, key=jax.random.split(k, 3))
  with pytest.raises(ValueError, match=r"key has dtype uint32 and shape \(3, 2\)"):
    jnn.dropout(x, 0.5, key=jax.random.split(jax.random.PRNGKey(0), 3))
  with pytest.raises(TypeError, match=r"train is a traced value"):
    jax.jit(lambda t: jnn.dropout(x, 0.5, key=k, train=t))(True)
  with pytest.raises(TypeError, match=r"train='yes'"):
    jnn.dropout(x, 0.5, key=k, train="yes")
  with pytest.raises(ValueError, match=r"spatial_dropout: x has shape \(4, 2\).*rank >= 3"):
    jnn.spatial_dropout(jnp.ones((4, 2)), 0.5, key=k)
  with pytest.raises(ValueError, match=r"spatial_dropout: channel_axis names the leading"):
    jnn.spatial_dropout(x, 0.5, key=k, channel_axis=0)
  with pytest.raises(ValueError, match=r"spatial_dropout: channel_axis=4 is out of range"):
    jnn.spatial_dropout(x, 0.5, key=k, channel_axis=4)
  with pytest.raises(ValueError, match=r"drop_path: x is a scalar"):
    jnn.drop_path(jnp.float32(1.0), 0.5, key=k)


def test_docstring_examples_run():
  finder = doctest.DocTestFinder()
  runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
  globs = dict(jax=jax, jnp=jnp, np=np, jopt=jopt)
  module = importlib.import_module("jopt.nn.dropout")   # jopt.nn.dropout is also the function
  tests = [t for t in finder.find(module, globs=globs) if t.examples]
  assert {t.name.rsplit(".", 1)[-1] for t in tests} >= {"dropout", "spatial_dropout", "drop_path"}
  for t in tests:
    runner.run(t)
  assert runner.failures == 0


@pytest.mark.parametrize("name", jnn.__all__)
def test_every_jopt_nn_name_is_documented(name):
  """The house docstring for all of jopt.nn (what tests/test_docstrings.py checks
  for the names in jopt.__all__): summary, math, Args, Returns, Example, Reference."""
  doc = inspect.getdoc(getattr(jnn, name))
  assert doc, name
  assert 0 < len(doc.splitlines()[0]) <= 100
  if inspect.isfunction(getattr(jnn, name)):
    for part in ("Args:", "Returns:", "Example:", "Reference:", ">>> "):
      assert part in doc, (name, part)
    assert ":math:" in doc or ".. math::" in doc, name
