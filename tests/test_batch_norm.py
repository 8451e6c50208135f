"""jopt.nn.batch_norm against torch.nn.BatchNorm1d/2d and flax.nnx.BatchNorm in float64.

Each parity run feeds 20 random training batches (non-zero mean, non-unit
variance) through both implementations, comparing the output and both running
statistics after every step, then one evaluation batch. Gradients (train and
eval mode) are compared with torch autograd on the same inputs. The measured
maximum errors are recorded as test properties.
"""

import doctest
import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import jopt
import jopt.nn as jnn

STEPS = 20

# name: (torch class, NC... shape, permutation from torch's layout to ours, axis)
LAYOUTS = {
    "nc": (torch.nn.BatchNorm1d, (16, 5), None, 1),
    "ncl": (torch.nn.BatchNorm1d, (8, 5, 6), None, 1),
    "nlc": (torch.nn.BatchNorm1d, (8, 5, 6), (0, 2, 1), -1),
    "nchw": (torch.nn.BatchNorm2d, (4, 3, 5, 5), None, 1),
    "nhwc": (torch.nn.BatchNorm2d, (4, 3, 5, 5), (0, 2, 3, 1), -1),
}


def _batch(rng, shape):
  c = shape[1]
  loc = rng.normal(size=c) * 3
  spread = rng.uniform(0.5, 3.0, size=c)
  b = [1] * len(shape)
  b[1] = c
  return rng.normal(size=shape) * spread.reshape(b) + loc.reshape(b)


def _ours(x, perm):
  return jnp.asarray(x if perm is None else np.transpose(x, perm))


def _back(y, perm):
  y = np.asarray(y)
  return y if perm is None else np.transpose(y, np.argsort(perm))


def _max_err(a, b):
  """(max abs error, max abs error / max |reference|)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  err = float(np.max(np.abs(a - b)))
  return err, err / float(np.max(np.abs(b)))


@functools.lru_cache(maxsize=None)
def _step(train, axis, momentum=None, decay=None, running_var="unbiased"):
  return jax.jit(functools.partial(jnn.batch_norm, train=train, axis=axis, momentum=momentum,
                                   decay=decay, running_var=running_var))


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("momentum", [0.1, 0.3])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_matches_torch_batchnorm_float64(layout, momentum, affine, x64, record_property):
  cls, shape, perm, axis = LAYOUTS[layout]
  c = shape[1]
  rng = np.random.default_rng([list(LAYOUTS).index(layout), int(momentum * 10), affine])
  tbn = cls(c, momentum=momentum, affine=affine, dtype=torch.float64)
  scale = bias = None
  if affine:
    with torch.no_grad():
      tbn.weight.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, size=c)))
      tbn.bias.copy_(torch.from_numpy(rng.normal(size=c)))
    scale = jnp.asarray(tbn.weight.detach().numpy())
    bias = jnp.asarray(tbn.bias.detach().numpy())
  stats = jnn.batch_norm_stats(c, jnp.float64)
  train = _step(True, axis, momentum)
  errs = {"y": 0.0, "mean": 0.0, "var": 0.0}
  rel = dict(errs)
  tbn.train()
  for _ in range(STEPS):
    x = _batch(rng, shape)
    with torch.no_grad():
      ty = tbn(torch.from_numpy(x)).numpy()
    y, stats = train(_ours(x, perm), scale, bias, stats)
    assert y.dtype == jnp.float64 and stats.mean.dtype == jnp.float64
    for k, got, want in (("y", _back(y, perm), ty), ("mean", stats.mean, tbn.running_mean),
                         ("var", stats.var, tbn.running_var)):
      a, r = _max_err(got, np.asarray(want))
      errs[k], rel[k] = max(errs[k], a), max(rel[k], r)
  tbn.eval()
  x = _batch(rng, shape)
  with torch.no_grad():
    ty = tbn(torch.from_numpy(x)).numpy()
  y_eval, same = _step(False, axis, momentum)(_ours(x, perm), scale, bias, stats)
  errs["y_eval"], rel["y_eval"] = _max_err(_back(y_eval, perm), ty)
  np.testing.assert_array_equal(same.mean, stats.mean)
  np.testing.assert_array_equal(same.var, stats.var)
  for k, v in errs.items():
    record_property(f"max_abs_err_{k}", v)
    record_property(f"max_rel_err_{k}", rel[k])
  # y and the running stats are O(1)-O(10): measured <= 8.9e-15 over the 20 cases,
  # mostly torch's rounding (against an extended-precision reference, torch's
  # batch-norm output is off by up to 2.4e-15 on such data, jopt's by 8.3e-16)
  assert max(errs.values()) <= 2e-14, errs


@pytest.mark.parametrize("fast_variance", [True, False])
def test_matches_flax_nnx_batchnorm_float64(fast_variance, x64, standard_promotion,
                                            record_property):
  """decay=0.99 with running_var="biased" is nnx.BatchNorm(momentum=0.99): use_running_average
  =False normalizes with the batch and updates the stats; =True uses and keeps them."""
  c = 4
  rng = np.random.default_rng(11)
  fbn = nnx.BatchNorm(c, momentum=0.99, epsilon=1e-5, dtype=jnp.float64,
                      param_dtype=jnp.float64, use_fast_variance=fast_variance,
                      rngs=nnx.Rngs(0))
  fbn.scale[...] = jnp.asarray(rng.uniform(0.5, 2.0, size=c))
  fbn.bias[...] = jnp.asarray(rng.normal(size=c))
  # nnx.BatchNorm creates its mean / var as float32 whatever dtype= says, and
  # writing float64 batch statistics into them would round (a FutureWarning
  # here); give it float64 statistics so that the whole comparison is float64
  fbn.mean = nnx.BatchStat(jnp.zeros((c,), jnp.float64))
  fbn.var = nnx.BatchStat(jnp.ones((c,), jnp.float64))
  stats = jnn.batch_norm_stats(c, jnp.float64)
  train = _step(True, -1, None, 0.99, "biased")
  errs = {"y": 0.0, "mean": 0.0, "var": 0.0}
  rel = dict(errs)
  for _ in range(STEPS):
    x = jnp.asarray(np.transpose(_batch(rng, (6, c, 3, 3)), (0, 2, 3, 1)))
    with standard_promotion:
      fy = fbn(x, use_running_average=False)
    y, stats = train(x, fbn.scale[...], fbn.bias[...], stats)
    for k, got, want in (("y", y, fy), ("mean", stats.mean, fbn.mean[...]),
                         ("var", stats.var, fbn.var[...])):
      a, r = _max_err(got, want)
      errs[k], rel[k] = max(errs[k], a), max(rel[k], r)
  x = jnp.asarray(np.transpose(_batch(rng, (6, c, 3, 3)), (0, 2, 3, 1)))
  before = (np.asarray(fbn.mean[...]), np.asarray(fbn.var[...]))
  with standard_promotion:
    fy = fbn(x, use_running_average=True)
  np.testing.assert_array_equal(fbn.mean[...], before[0])   # eval leaves flax's stats alone
  y_eval, _ = _step(False, -1, None, 0.99, "biased")(x, fbn.scale[...], fbn.bias[...], stats)
  errs["y_eval"], rel["y_eval"] = _max_err(y_eval, fy)
  for k, v in errs.items():
    record_property(f"max_abs_err_{k}", v)
    record_property(f"max_rel_err_{k}", rel[k])
  # flax's fast variance E[x^2] - E[x]^2 (the default) loses a few ulps of the
  # squared mean (up to ~80 here): measured 5.4e-14 with it, 4.0e-15 without
  assert max(errs.values()) <= (1e-13 if fast_variance else 1e-14), errs


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("layout", ["ncl", "nhwc"])
def test_gradients_match_torch_autograd_float64(layout, train, x64, record_property):
  cls, shape, perm, axis = LAYOUTS[layout]
  c = shape[1]
  rng = np.random.default_rng(5)
  x = _batch(rng, shape)
  w, b = rng.uniform(0.5, 2.0, size=c), rng.normal(size=c)
  cot = rng.normal(size=shape)
  rm, rv = rng.normal(size=c), rng.uniform(0.5, 2.0, size=c)
  tbn = cls(c, momentum=0.1, dtype=torch.float64)
  with torch.no_grad():
    tbn.weight.copy_(torch.from_numpy(w))
    tbn.bias.copy_(torch.from_numpy(b))
    tbn.running_mean.copy_(torch.from_numpy(rm))
    tbn.running_var.copy_(torch.from_numpy(rv))
  tbn.train(train)
  tx = torch.from_numpy(x).requires_grad_(True)
  (tbn(tx) * torch.from_numpy(cot)).sum().backward()
  want = (tx.grad.numpy(), tbn.weight.grad.numpy(), tbn.bias.grad.numpy())

  stats = jnn.BatchNormStats(jnp.asarray(rm), jnp.asarray(rv))

  def loss(x, scale, bias):
    y, _ = jnn.batch_norm(x, scale, bias, stats, train=train, axis=axis)
    return jnp.sum(y * _ours(cot, perm))

  gx, gs, gb = jax.grad(loss, argnums=(0, 1, 2))(_ours(x, perm), jnp.asarray(w), jnp.asarray(b))
  pairs = [_max_err(_back(gx, perm), want[0]), _max_err(gs, want[1]), _max_err(gb, want[2])]
  errs = [a for a, _ in pairs]
  record_property("max_abs_err_grad_x_scale_bias", errs)
  record_property("max_rel_err_grad_x_scale_bias", [r for _, r in pairs])
  # gradients are O(1)-O(100) (scale's sums over the batch): measured <= 2.3e-14
  assert max(errs) <= 5e-14, errs


def test_new_stats_carry_no_gradient():
  x = jax.random.normal(jax.random.key(0), (8, 3))
  g = jax.grad(lambda x: jnp.sum(jnn.batch_norm(x, None, None, jnn.batch_norm_stats(3),
                                                train=True)[1].var))(x)
  np.testing.assert_array_equal(g, jnp.zeros_like(x))


def test_momentum_default_decay_and_traced():
  x = jax.random.normal(jax.random.key(0), (8, 3)) * 2 + 1
  s0 = jnn.batch_norm_stats(3)
  y0, d = jnn.batch_norm(x, None, None, s0, train=True)
  y1, m = jnn.batch_norm(x, None, None, s0, train=True, momentum=0.1)
  np.testing.assert_array_equal(y0, y1)
  np.testing.assert_array_equal(d.mean, m.mean)
  np.testing.assert_array_equal(d.var, m.var)
  _, dec = jnn.batch_norm(x, None, None, s0, train=True, decay=0.9)
  np.testing.assert_allclose(dec.var, m.var, rtol=1e-6)
  # an independent transcription of both conventions on concrete numbers
  xs = np.asarray(x, np.float64)
  bm, bv = xs.mean(0), xs.var(0)
  np.testing.assert_allclose(m.mean, 0.1 * bm, rtol=1e-6)
  np.testing.assert_allclose(m.var, 0.9 + 0.1 * bv * 8 / 7, rtol=1e-6)
  _, fl = jnn.batch_norm(x, None, None, s0, train=True, decay=0.99, running_var="biased")
  np.testing.assert_allclose(fl.var, 0.99 + 0.01 * bv, rtol=1e-6)
  np.testing.assert_allclose(fl.mean, 0.01 * bm, rtol=1e-5)
  # a traced momentum (changed between steps without a recompile)
  f = jax.jit(lambda x, s, mom: jnn.batch_norm(x, None, None, s, train=True, momentum=mom))
  _, t = f(x, s0, jnp.float32(0.1))
  np.testing.assert_allclose(t.var, m.var, rtol=1e-6)
  # momentum=0 freezes, momentum=1 keeps only the batch
  _, frozen = jnn.batch_norm(x, None, None, s0, train=True, momentum=0.0)
  np.testing.assert_array_equal(frozen.var, s0.var)
  _, last = jnn.batch_norm(x, None, None, s0, train=True, momentum=1.0, running_var="biased")
  np.testing.assert_allclose(last.var, bv, rtol=1e-5)


def test_eval_returns_stats_unchanged_and_uses_them():
  x = jax.random.normal(jax.random.key(1), (5, 2, 3))
  stats = jnn.BatchNormStats(jnp.array([0.5, -1.0]), jnp.array([4.0, 0.25]))
  y, out = jnn.batch_norm(x, jnp.array([2.0, 1.0]), jnp.array([0.0, 1.0]), stats, train=False,
                          axis=1, eps=0.0)
  assert out is stats
  xs = np.asarray(x, np.float64)
  want = (xs - np.array([0.5, -1.0])[None, :, None]) / np.sqrt([4.0, 0.25])[None, :, None]
  want = want * np.array([2.0, 1.0])[None, :, None] + np.array([0.0, 1.0])[None, :, None]
  np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)
  # a plain (mean, var) pair works too; one value per feature is fine in eval
  y1, _ = jnn.batch_norm(x[:1, :, :1], None, None, tuple(stats), train=False, axis=1)
  assert y1.shape == (1, 2, 1)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_computes_in_float32(dtype):
  x = (jax.random.normal(jax.random.key(2), (16, 4, 4, 3)) * 3 + 2).astype(dtype)
  scale, bias = jnp.array([1.0, 2.0, 0.5]), jnp.array([0.0, 0.1, -0.2])
  s0 = jnn.batch_norm_stats(3)
  for train in (True, False):
    y, s = jnn.batch_norm(x, scale, bias, s0, train=train)
    y32, s32 = jnn.batch_norm(x.astype(jnp.float32), scale, bias, s0, train=train)
    assert y.dtype == dtype and s.mean.dtype == jnp.float32 and s.var.dtype == jnp.float32
    np.testing.assert_array_equal(y, y32.astype(dtype))
    np.testing.assert_array_equal(s.mean, s32.mean)
    np.testing.assert_array_equal(s.var, s32.var)


def test_stats_keep_their_dtype(x64):
  x = jax.random.normal(jax.random.key(2), (8, 3)).astype(jnp.float32)
  y, s = jnn.batch_norm(x, None, None, jnn.batch_norm_stats(3, jnp.float64), train=True)
  assert y.dtype == jnp.float32 and s.mean.dtype == jnp.float64 and s.var.dtype == jnp.float64


def test_errors_name_the_argument():
  x = jnp.ones((4, 3))
  s = jnn.batch_norm_stats(3)
  bn = functools.partial(jnn.batch_norm, train=True)
  with pytest.raises(ValueError, match=r"batch_norm: stats.mean has shape \(4,\).*shape \(3,\)"):
    bn(x, None, None, jnn.batch_norm_stats(4))
  with pytest.raises(ValueError, match=r"stats.var has shape \(3, 1\).*batch_norm_stats\(3\)"):
    bn(x, None, None, jnn.BatchNormStats(s.mean, s.var[:, None]))
  with pytest.raises(TypeError, match=r"batch_norm: stats must be a BatchNormStats"):
    bn(x, None, None, {"mean": s.mean, "var": s.var})
  with pytest.raises(TypeError, match=r"stats.mean has dtype int32"):
    bn(x, None, None, jnn.BatchNormStats(jnp.zeros(3, jnp.int32), s.var))
  with pytest.raises(ValueError, match=r"batch_norm: scale has shape \(4,\).*\(3,\)"):
    bn(x, jnp.ones(4), None, s)
  with pytest.raises(ValueError, match=r"batch_norm: bias has shape \(1, 3\)"):
    bn(x, None, jnp.ones((1, 3)), s)
  with pytest.raises(TypeError, match=r"batch_norm: x has dtype int32"):
    bn(jnp.ones((4, 3), jnp.int32), None, None, s)
  with pytest.raises(ValueError, match=r"batch_norm: axis=2 is out of range"):
    bn(x, None, None, s, axis=2)
  with pytest.raises(ValueError, match=r"batch_norm: running_var='sample'"):
    bn(x, None, None, s, running_var="sample")
  with pytest.raises(ValueError, match=r"both momentum=0.1 and decay=0.9"):
    bn(x, None, None, s, momentum=0.1, decay=0.9)
  with pytest.raises(ValueError, match=r"batch_norm: momentum=1.5"):
    bn(x, None, None, s, momentum=1.5)
  with pytest.raises(ValueError, match=r"batch_norm: decay=-0.1"):
    bn(x, None, None, s, decay=-0.1)
  with pytest.raises(ValueError, match=r"batch_norm: eps=-1"):
    bn(x, None, None, s, eps=-1.0)
  with pytest.raises(ValueError, match=r"n=1 .*torch refuses"):
    bn(jnp.ones((1, 3)), None, None, s)
  bn(jnp.ones((1, 3, 2)), None, None, jnn.batch_norm_stats(2))   # n = 3: fine, as in torch
  with pytest.raises(TypeError, match=r"train is a traced value"):
    jax.jit(lambda t: jnn.batch_norm(x, None, None, s, train=t))(True)
  with pytest.raises(TypeError, match="train"):
    jnn.batch_norm(x, None, None, s)   # pylint: disable=missing-kwoa
  with pytest.raises(ValueError, match=r"batch_norm_stats: num_features=0"):
    jnn.batch_norm_stats(0)
  with pytest.raises(TypeError, match=r"batch_norm_stats: dtype=int32"):
    jnn.batch_norm_stats(3, jnp.int32)


def test_state_class_and_docstring_examples():
  assert jnn.BatchNormStats.__module__ == "jopt" and jnn.BatchNormStats.__doc__
  assert jnn.BatchNormStats._fields == ("mean", "var")
  module = importlib.import_module("jopt.nn.batch_norm")   # the name is also the function
  runner = doctest.DocTestRunner()
  globs = dict(jax=jax, jnp=jnp, np=np, jopt=jopt)
  tests = [t for t in doctest.DocTestFinder().find(module, globs=globs) if t.examples]
  assert {t.name.rsplit(".", 1)[-1] for t in tests} == {"batch_norm", "batch_norm_stats"}
  for t in tests:
    runner.run(t)
  assert runner.failures == 0
