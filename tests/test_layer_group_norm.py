"""jopt.nn.layer_norm and group_norm against torch (outputs and autograd), float64.

torch works on NC... layouts; group_norm is compared on NCHW directly
(``channel_axis=1``) and on NHWC after transposing; layer_norm over trailing
axes is torch's ``normalized_shape`` and over a middle axis is torch's
layer_norm of the transposed array. Measured maximum errors are recorded.
"""

import doctest
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jopt
import jopt.nn as jnn


def _max_err(a, b):
  """(max abs error, max abs error / max |reference|)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  err = float(np.max(np.abs(a - b)))
  return err, err / float(np.max(np.abs(b)))


def _data(rng, shape):
  return rng.normal(size=shape) * 2.5 + 1.5


LN_CASES = {
    # name: (x shape, our axis, torch normalized_shape)
    "last": ((4, 6, 5), -1, (5,)),
    "last2": ((4, 6, 5), (-2, -1), (6, 5)),
    "last3": ((2, 3, 4, 5), (1, 2, 3), (3, 4, 5)),
    "last2_4d": ((2, 3, 4, 5), (2, 3), (4, 5)),
}


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("case", list(LN_CASES))
def test_layer_norm_matches_torch_float64(case, affine, x64, record_property):
  shape, axis, nshape = LN_CASES[case]
  rng = np.random.default_rng(list(LN_CASES).index(case))
  x = _data(rng, shape)
  w = rng.uniform(0.5, 2.0, size=nshape) if affine else None
  b = rng.normal(size=nshape) if affine else None
  t = lambda a: None if a is None else torch.from_numpy(a)
  want = F.layer_norm(torch.from_numpy(x), nshape, t(w), t(b), eps=1e-5).numpy()
  j = lambda a: None if a is None else jnp.asarray(a)
  y = jnn.layer_norm(jnp.asarray(x), j(w), j(b), axis=axis)
  assert y.dtype == jnp.float64
  # the module too (its own parameters)
  mod = torch.nn.LayerNorm(nshape, elementwise_affine=affine, dtype=torch.float64)
  with torch.no_grad():
    want_mod = mod(torch.from_numpy(x)).numpy()
  p = (jnp.asarray(mod.weight.detach().numpy()), jnp.asarray(mod.bias.detach().numpy())) \
      if affine else (None, None)
  y_mod = jnn.layer_norm(jnp.asarray(x), *p, axis=axis)
  a, r = _max_err(y, want)
  record_property("max_abs_err", a)
  record_property("max_rel_err", r)
  # |y| <= ~8: measured <= 1.4e-15
  assert a <= 5e-15
  assert _max_err(y_mod, want_mod)[0] <= 5e-15


def test_layer_norm_over_a_middle_axis(x64, record_property):
  """axis=1 of NCHW normalizes the channels at each pixel: torch's layer_norm on NHWC."""
  rng = np.random.default_rng(3)
  x = _data(rng, (2, 6, 3, 4))
  w, b = rng.uniform(0.5, 2.0, size=6), rng.normal(size=6)
  nhwc = torch.from_numpy(np.transpose(x, (0, 2, 3, 1)))
  want = np.transpose(F.layer_norm(nhwc, (6,), torch.from_numpy(w), torch.from_numpy(b)).numpy(),
                      (0, 3, 1, 2))
  y = jnn.layer_norm(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b), axis=1)
  a, _ = _max_err(y, want)
  record_property("max_abs_err", a)
  assert a <= 5e-15   # measured 8.9e-16


GN_GROUPS = [1, 2, 3, 6]   # 1 (layer-norm-like), in between, C (instance norm)


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "ncl"])
@pytest.mark.parametrize("groups", GN_GROUPS)
def test_group_norm_matches_torch_float64(groups, layout, x64, record_property):
  rng = np.random.default_rng(groups)
  shape = (3, 6, 5) if layout == "ncl" else (3, 6, 4, 5)
  x = _data(rng, shape)
  mod = torch.nn.GroupNorm(groups, 6, dtype=torch.float64)
  w, b = rng.uniform(0.5, 2.0, size=6), rng.normal(size=6)
  with torch.no_grad():
    mod.weight.copy_(torch.from_numpy(w))
    mod.bias.copy_(torch.from_numpy(b))
    want = mod(torch.from_numpy(x)).numpy()
  if layout == "nhwc":
    y = jnn.group_norm(jnp.asarray(np.transpose(x, (0, 2, 3, 1))), jnp.asarray(w), jnp.asarray(b),
                       num_groups=groups)
    y = np.transpose(np.asarray(y), (0, 3, 1, 2))
  else:
    y = jnn.group_norm(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b), num_groups=groups,
                       channel_axis=1)
  a, r = _max_err(y, want)
  record_property("max_abs_err", a)
  record_property("max_rel_err", r)
  # |y| <= ~8: measured <= 1.4e-15
  assert a <= 5e-15
  # without affine parameters: torch's functional form
  y0 = jnn.group_norm(jnp.asarray(x), None, None, num_groups=groups, channel_axis=1)
  want0 = F.group_norm(torch.from_numpy(x), groups, eps=1e-5).numpy()
  assert _max_err(y0, want0)[0] <= 5e-15


@pytest.mark.parametrize("fn", ["layer_norm", "group_norm"])
def test_gradients_match_torch_autograd_float64(fn, x64, record_property):
  rng = np.random.default_rng(7)
  x = _data(rng, (3, 6, 4, 5))
  cot = rng.normal(size=x.shape)
  if fn == "layer_norm":
    w, b = rng.uniform(0.5, 2.0, size=(4, 5)), rng.normal(size=(4, 5))
    tf = lambda x, w, b: F.layer_norm(x, (4, 5), w, b)
    jf = lambda x, w, b: jnn.layer_norm(x, w, b, axis=(2, 3))
  else:
    w, b = rng.uniform(0.5, 2.0, size=6), rng.normal(size=6)
    tf = lambda x, w, b: F.group_norm(x, 3, w, b)
    jf = lambda x, w, b: jnn.group_norm(x, w, b, num_groups=3, channel_axis=1)
  ts = [torch.from_numpy(a).requires_grad_(True) for a in (x, w, b)]
  (tf(*ts) * torch.from_numpy(cot)).sum().backward()
  grads = jax.grad(lambda *a: jnp.sum(jf(*a) * jnp.asarray(cot)), argnums=(0, 1, 2))(
      jnp.asarray(x), jnp.asarray(w), jnp.asarray(b))
  pairs = [_max_err(g, t.grad.numpy()) for g, t in zip(grads, ts)]
  record_property("max_abs_err_grad_x_scale_bias", [p[0] for p in pairs])
  record_property("max_rel_err_grad_x_scale_bias", [p[1] for p in pairs])
  # measured <= 5.4e-15 (O(1)-O(10) gradients)
  assert max(p[0] for p in pairs) <= 1e-14


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_computes_in_float32(dtype):
  x = (jax.random.normal(jax.random.key(0), (4, 3, 3, 8)) * 3 + 5).astype(dtype)
  s, b = jnp.linspace(0.5, 2.0, 8), jnp.linspace(-1.0, 1.0, 8)
  y = jnn.layer_norm(x, s, b)
  assert y.dtype == dtype
  np.testing.assert_array_equal(y, jnn.layer_norm(x.astype(jnp.float32), s, b).astype(dtype))
  g = jnn.group_norm(x, s, b, num_groups=4)
  assert g.dtype == dtype
  np.testing.assert_array_equal(
      g, jnn.group_norm(x.astype(jnp.float32), s, b, num_groups=4).astype(dtype))


def test_jit_and_vmap():
  x = jax.random.normal(jax.random.key(1), (4, 3, 3, 8))
  s, b = jnp.linspace(0.5, 2.0, 8), jnp.linspace(-1.0, 1.0, 8)
  ln = jnn.layer_norm(x, s, b)
  np.testing.assert_allclose(jax.jit(jnn.layer_norm)(x, s, b), ln, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(jax.vmap(lambda r: jnn.layer_norm(r, s, b))(x), ln,
                             rtol=1e-6, atol=1e-6)
  gn = jnn.group_norm(x, s, b, num_groups=2)
  f = jax.jit(lambda x: jnn.group_norm(x, s, b, num_groups=2))
  np.testing.assert_allclose(f(x), gn, rtol=1e-6, atol=1e-6)
  per_example = jax.vmap(lambda r: jnn.group_norm(r[None], s, b, num_groups=2)[0])(x)
  np.testing.assert_allclose(per_example, gn, rtol=1e-6, atol=1e-6)
  # a traced eps
  np.testing.assert_allclose(jax.jit(lambda e: jnn.layer_norm(x, s, b, eps=e))(1e-5), ln,
                             rtol=1e-6, atol=1e-6)


def test_errors_name_the_argument():
  x = jnp.ones((2, 4, 4, 6))
  with pytest.raises(ValueError, match=r"group_norm: x has C=6 channels .*num_groups=4"):
    jnn.group_norm(x, None, None, num_groups=4)
  with pytest.raises(ValueError, match=r"group_norm: num_groups=0"):
    jnn.group_norm(x, None, None, num_groups=0)
  with pytest.raises(ValueError, match=r"group_norm: channel_axis names the leading"):
    jnn.group_norm(x, None, None, num_groups=2, channel_axis=0)
  with pytest.raises(ValueError, match=r"group_norm: x has shape \(6,\).*rank >= 2"):
    jnn.group_norm(jnp.ones(6), None, None, num_groups=2)
  with pytest.raises(ValueError, match=r"group_norm: scale has shape \(4,\).*\(6,\)"):
    jnn.group_norm(x, jnp.ones(4), None, num_groups=2)
  with pytest.raises(ValueError, match=r"group_norm: eps=-0.1"):
    jnn.group_norm(x, None, None, num_groups=2, eps=-0.1)
  with pytest.raises(TypeError, match=r"group_norm: x has dtype int32"):
    jnn.group_norm(jnp.ones((2, 6), jnp.int32), None, None, num_groups=2)
  with pytest.raises(ValueError, match=r"layer_norm: scale has shape \(6,\).*\(4, 6\)"):
    jnn.layer_norm(x, jnp.ones(6), None, axis=(-2, -1))
  with pytest.raises(ValueError, match=r"layer_norm: bias has shape \(4, 6\).*\(6,\)"):
    jnn.layer_norm(x, None, jnp.ones((4, 6)))
  with pytest.raises(ValueError, match=r"layer_norm: axis=.*names an axis twice"):
    jnn.layer_norm(x, None, None, axis=(3, -1))
  with pytest.raises(ValueError, match=r"layer_norm: axis=4 is out of range"):
    jnn.layer_norm(x, None, None, axis=4)
  with pytest.raises(ValueError, match=r"layer_norm: axis=\(\) names no axis"):
    jnn.layer_norm(x, None, None, axis=())
  with pytest.raises(TypeError, match=r"layer_norm: axis=1.5 must be an int"):
    jnn.layer_norm(x, None, None, axis=1.5)
  with pytest.raises(TypeError, match=r"layer_norm: x has dtype int32"):
    jnn.layer_norm(jnp.ones((2, 6), jnp.int32), None, None)


@pytest.mark.parametrize("name", ["layer_norm", "group_norm"])
def test_docstring_examples_run(name):
  module = importlib.import_module(f"jopt.nn.{name}")   # the name is also the function
  runner = doctest.DocTestRunner()
  globs = dict(jax=jax, jnp=jnp, np=np, jopt=jopt)
  tests = [t for t in doctest.DocTestFinder().find(module, globs=globs) if t.examples]
  assert [t.name.rsplit(".", 1)[-1] for t in tests] == [name]
  for t in tests:
    runner.run(t)
  assert runner.failures == 0
