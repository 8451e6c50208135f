"""jopt.quant QAT: fake_quant (clipped STE), fake_quant_params, sparsity-preserving QAT,
zero-preserving k-means (Han et al. 2016)."""

import doctest
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import jopt
from jopt import quant

shapes = st.sampled_from([(4, 6), (2, 3, 4)])
arrays = shapes.flatmap(lambda s: hnp.arrays(
    np.float64, s, elements=st.floats(-100, 100, allow_subnormal=False)))


def np_fake(x, bits, scheme, lo, hi):
  """NumPy transcription of per-tensor fake quantization (Jacob et al. 2018, eq. 1)."""
  x = np.clip(np.asarray(x, np.float64), lo, hi)
  tiny = np.finfo(np.float64).tiny
  if scheme == "symmetric":
    qmax = 2 ** (bits - 1) - 1
    s = max(max(abs(lo), abs(hi)) / qmax, tiny)
    return s * np.clip(np.round(x / s), -qmax, qmax)
  qmax = 2 ** bits - 1
  lo, hi = min(lo, 0.0), max(hi, 0.0)
  s = max((hi - lo) / qmax, tiny)
  z = np.clip(np.round(-lo / s), 0, qmax)
  return s * (np.clip(np.round(x / s) + z, 0, qmax) - z)


def _layout_kwargs(granularity, x):
  if granularity == "tensor":
    return {}
  if granularity == "channel":
    return {"axis": 0}
  last = x.shape[-1]
  return {"axis": -1, "group_size": next(g for g in (3, 2, 1) if last % g == 0)}


@settings(max_examples=15, deadline=None)
@given(x=arrays, bits=st.integers(2, 8), scheme=st.sampled_from(["symmetric", "asymmetric"]),
       granularity=st.sampled_from(["tensor", "channel", "group"]), f64=st.booleans())
def test_fake_quant_is_bit_exact_quantize_dequantize(x, bits, scheme, granularity, f64):
  with jax.enable_x64(f64):
    xa = jnp.asarray(x, jnp.float64 if f64 else jnp.float32)
    kw = dict(scheme=scheme, granularity=granularity, **_layout_kwargs(granularity, x))
    got = quant.fake_quant(xa, bits, **kw)
    want = quant.quantize(xa, bits, **kw).dequantize()
    assert got.dtype == xa.dtype
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@settings(max_examples=40, deadline=None)
@given(x=arrays, bits=st.integers(2, 8), scheme=st.sampled_from(["symmetric", "asymmetric"]),
       r=st.tuples(st.floats(-50, 0), st.floats(0, 50)))
def test_fake_quant_with_clip_range_matches_numpy_and_quantize(x, bits, scheme, r):
  lo, hi = r
  with jax.enable_x64(True):
    got = np.asarray(quant.fake_quant(jnp.asarray(x), bits, scheme=scheme, clip_range=r))
    want = quant.quantize(jnp.asarray(x), bits, scheme=scheme, clip_range=r).dequantize()
    np.testing.assert_array_equal(got, np.asarray(want))
    np.testing.assert_allclose(got, np_fake(x, bits, scheme, lo, hi), rtol=0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(x=hnp.arrays(np.float64, (3, 8), elements=st.floats(-4, 4)),
       bits=st.integers(2, 8), scheme=st.sampled_from(["symmetric", "asymmetric"]),
       per_channel=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_ste_gradient_equals_its_definition(x, bits, scheme, per_channel, seed):
  rng = np.random.default_rng(seed)
  if per_channel:
    lo, hi = -rng.uniform(0.5, 3, 3), rng.uniform(0.5, 3, 3)
    kw = dict(granularity="channel", axis=0)
    lo_b, hi_b = lo[:, None], hi[:, None]
  else:
    lo, hi = -rng.uniform(0.5, 3), rng.uniform(0.5, 3)
    kw = {}
    lo_b, hi_b = lo, hi
  x = x.copy()
  x[:, 0], x[:, 1] = np.broadcast_to(lo_b, (3, 1))[:, 0], np.broadcast_to(hi_b, (3, 1))[:, 0]
  cot = rng.normal(size=x.shape)
  with jax.enable_x64(True):
    def f(v):
      y = quant.fake_quant(v, bits, scheme=scheme, clip_range=(jnp.asarray(lo), jnp.asarray(hi)),
                           **kw)
      return jnp.sum(y * jnp.asarray(cot))
    g = np.asarray(jax.grad(f)(jnp.asarray(x)))
  inside = (x >= lo_b) & (x <= hi_b)          # endpoints count as inside
  np.testing.assert_array_equal(g, np.where(inside, cot, 0.0))
  assert np.all(g[:, :2] == cot[:, :2])


def test_ste_without_clip_range_passes_every_gradient_and_none_to_the_range():
  x = jnp.array([[-3.0, 0.1, 2.0], [0.5, -0.2, 1.0]])
  g = jax.grad(lambda v: jnp.sum(quant.fake_quant(v, 3, granularity="channel", axis=0) * v))(x)
  # d/dx sum(fq(x) * x) = fq(x) + x * STE(=1): the min/max carry no gradient.
  np.testing.assert_array_equal(g, quant.fake_quant(x, 3, granularity="channel", axis=0) + x)
  r = jax.grad(lambda hi: jnp.sum(quant.fake_quant(x, 4, clip_range=(-hi, hi))))(1.0)
  assert float(r) == 0.0


def test_jit_vmap_and_bfloat16():
  x = jax.random.normal(jax.random.key(0), (5, 16))
  f = jax.jit(lambda v: quant.fake_quant(v, 4, scheme="asymmetric"))
  ref = jax.jit(lambda v: quant.quantize(v, 4, scheme="asymmetric").dequantize())
  np.testing.assert_array_equal(f(x), ref(x))
  # eager vs jit: XLA's fusion may round the scale division differently (1 ulp)
  np.testing.assert_allclose(f(x), quant.fake_quant(x, 4, scheme="asymmetric"),
                             rtol=3e-7, atol=0)
  rows = jax.vmap(lambda v: quant.fake_quant(v, 4))(x)
  np.testing.assert_array_equal(rows, jax.vmap(lambda v: quant.quantize(v, 4).dequantize())(x))
  for i in range(5):                          # one scale per row, as a loop would give
    np.testing.assert_allclose(rows[i], quant.quantize(x[i], 4).dequantize(), rtol=3e-7)
  xb = x.astype(jnp.bfloat16)
  yb = jax.jit(lambda v: quant.fake_quant(v, 8, granularity="group", group_size=8))(xb)
  assert yb.dtype == jnp.bfloat16
  np.testing.assert_array_equal(
      yb, quant.quantize(xb, 8, granularity="group", group_size=8).dequantize())
  gb = jax.grad(lambda v: jnp.sum(quant.fake_quant(v, 8, clip_range=(-1.0, 1.0))))(xb)
  assert gb.dtype == jnp.bfloat16
  np.testing.assert_array_equal(gb, (jnp.abs(xb) <= 1).astype(jnp.bfloat16))


def test_fake_quant_bad_input():
  x = jnp.ones((4, 4))
  with pytest.raises(ValueError, match="bits=9"):
    quant.fake_quant(x, 9)
  with pytest.raises(ValueError, match="scheme"):
    quant.fake_quant(x, 8, scheme="affine")
  with pytest.raises(TypeError, match="floating"):
    quant.fake_quant(jnp.ones(3, jnp.int32))
  with pytest.raises(ValueError, match="NaN"):
    quant.fake_quant(jnp.array([1.0, jnp.nan]))
  with pytest.raises(ValueError, match="fake_quant: clip_range"):
    quant.fake_quant(x, 8, granularity="channel", clip_range=(jnp.zeros(3), jnp.ones(3)))
  with pytest.raises(ValueError, match="min > max"):
    quant.fake_quant(x, 8, clip_range=(1.0, -1.0))
  with pytest.raises(ValueError, match="group_size"):
    quant.fake_quant(x, 8, granularity="group", group_size=3)


PARAMS = {"dense": {"kernel": jnp.linspace(-1.0, 2.0, 12).reshape(3, 4),
                    "bias": jnp.linspace(0.1, 0.4, 4)},
          "out": {"kernel": jnp.linspace(1.0, -3.0, 8).reshape(4, 2), "bias": jnp.ones(2)}}


def test_fake_quant_params_matches_quantize_params_and_keeps_biases():
  rules = {"dense/*": {"bits": 4, "scheme": "asymmetric"}, "out/kernel": 3}
  kw = dict(granularity="channel", axis=-1)
  got = quant.fake_quant_params(PARAMS, rules, **kw)
  want = quant.dequantize_params(quant.quantize_params(PARAMS, rules, **kw))
  for path in (("dense", "kernel"), ("dense", "bias"), ("out", "kernel"), ("out", "bias")):
    a, b = got[path[0]][path[1]], want[path[0]][path[1]]
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(got["out"]["bias"], PARAMS["out"]["bias"])
  # a rule over a bias fake-quantizes it (4-bit asymmetric changes these values)
  assert not np.array_equal(got["dense"]["bias"], PARAMS["dense"]["bias"])


def test_fake_quant_params_in_a_loss_gives_the_ste_gradient():
  x = jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)

  def model(p):
    return jnp.sum(jnp.tanh(x @ p["dense"]["kernel"] + p["dense"]["bias"]) @ p["out"]["kernel"])

  g = jax.jit(jax.grad(lambda p: model(quant.fake_quant_params(p, default_bits=4))))(PARAMS)
  # the plain STE is the identity backward: the gradient is the float gradient at fq(params)
  want = jax.jit(lambda p: jax.grad(model)(quant.fake_quant_params(p, default_bits=4)))(PARAMS)
  jax.tree.map(np.testing.assert_array_equal, g, want)


def test_fake_quant_params_bad_rules():
  with pytest.raises(ValueError, match="match no parameter"):
    quant.fake_quant_params(PARAMS, {"conv/*": 4})
  with pytest.raises(ValueError, match="linear only"):
    quant.fake_quant_params(PARAMS, {"*/kernel": {"method": "kmeans"}})
  with pytest.raises(TypeError, match="default_bits"):
    quant.fake_quant_params(PARAMS, bits=4)
  with pytest.raises(ValueError, match="'out/kernel'.*bits=1"):
    quant.fake_quant_params(PARAMS, {"out/kernel": 1})
  with pytest.raises(TypeError, match="unknown keywords"):
    quant.fake_quant_params(PARAMS, {"out/kernel": {"iters": 3}})


def test_activation_recipe_with_the_running_observer():
  key = jax.random.key(3)
  w = jax.random.normal(key, (4, 8))
  batches = [jax.random.normal(jax.random.fold_in(key, i), (16, 4)) for i in range(3)]
  obs = quant.observer_init()
  for b in batches:
    obs = quant.observer_update(obs, b @ w)
  rng = quant.observer_range(obs)

  @jax.jit
  def model(w, x, r):
    return quant.fake_quant(x @ w, 8, clip_range=r)

  x = 3.0 * batches[0]                       # wider than what the observer saw
  h = x @ w
  np.testing.assert_array_equal(model(w, x, rng),
                                quant.quantize(h, 8, clip_range=rng).dequantize())
  g = jax.grad(lambda v: jnp.sum(model(v, x, rng)))(w)
  inside = ((h >= rng.min) & (h <= rng.max)).astype(jnp.float32)
  np.testing.assert_allclose(g, x.T @ inside, rtol=1e-6, atol=1e-5)
  assert float(jnp.mean(inside)) < 1.0        # some activations were clipped


@pytest.mark.parametrize("scheme,granularity", [("symmetric", "tensor"),
                                                ("asymmetric", "channel")])
def test_sparsity_preserving_qat(scheme, granularity):
  key = jax.random.key(0)
  k1, k2, k3, k4 = jax.random.split(key, 4)
  params = {"l1": {"kernel": jax.random.normal(k1, (6, 16)) * 0.5, "bias": jnp.zeros(16)},
            "l2": {"kernel": jax.random.normal(k2, (16, 3)) * 0.5, "bias": jnp.zeros(3)}}
  x = jax.random.normal(k3, (32, 6))
  y = jax.random.randint(k4, (32,), 0, 3)
  kw = dict(scheme=scheme, granularity=granularity, axis=-1)

  def loss(p):
    q = quant.fake_quant_params(p, default_bits=4, **kw)
    h = jax.nn.relu(x @ q["l1"]["kernel"] + q["l1"]["bias"])
    return optax.softmax_cross_entropy_with_integer_labels(
        h @ q["l2"]["kernel"] + q["l2"]["bias"], y).mean()

  tx = jopt.prune(jopt.adam(1e-2), 0.6)
  state = tx.init(params)

  @jax.jit
  def step(p, s):
    l, g = jax.value_and_grad(loss)(p)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s, l

  losses = []
  for _ in range(8):
    params, state, l = step(params, state)
    losses.append(float(l))
  assert losses[-1] < losses[0]
  fq = quant.fake_quant_params(params, default_bits=4, **kw)
  for name in ("l1", "l2"):
    w, m = params[name]["kernel"], state.masks[name]["kernel"]
    assert abs(float(jnp.mean(m)) - 0.4) < 0.05
    assert bool(jnp.all(jnp.where(m, True, w == 0)))
    assert bool(jnp.all(jnp.where(m, True, fq[name]["kernel"] == 0)))
    assert bool(jnp.any(fq[name]["kernel"][m] != 0))


def np_lloyd(v, k, iters, lo, hi):
  """NumPy Lloyd loop (Han et al. 2016, linear init; empty clusters keep their centroid)."""
  c = lo + (hi - lo) * np.arange(k) / max(k - 1, 1)
  for _ in range(iters):
    a = np.argmin(np.abs(v[:, None] - c[None, :]), axis=1)
    for j in range(k):
      if np.any(a == j):
        c[j] = v[a == j].mean()
    c = np.sort(c)
  return c, np.argmin(np.abs(v[:, None] - c[None, :]), axis=1)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2 ** 16), bits=st.integers(2, 4), density=st.floats(0.2, 0.9))
def test_kmeans_keep_zeros_keeps_zeros_and_clusters_the_rest(seed, bits, density):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(4, 24)) * (rng.uniform(size=(4, 24)) < density)
  w[0, 0] = 0.0
  with jax.enable_x64(True):
    qa = quant.quantize(jnp.asarray(w), bits, method="kmeans", keep_zeros=True,
                        granularity="channel", axis=0, iters=10)
    d = np.asarray(qa.dequantize())
    codes = np.asarray(qa.codes)
  assert np.all((d == 0) == (w == 0))
  assert np.all(codes[w == 0] == 0) and np.all(codes[w != 0] >= 1)
  assert np.all(np.asarray(qa.codebook)[:, 0] == 0.0)
  n = w.size
  assert qa.nbytes == -(-n * bits // 8) + 4 * 2 ** bits * 8   # float64 codebook of 2^b
  for r in range(4):
    v = w[r][w[r] != 0]
    if v.size == 0:
      continue
    c, a = np_lloyd(v, 2 ** bits - 1, 10, v.min(), v.max())
    np.testing.assert_allclose(np.asarray(qa.codebook)[r, 1:], c, rtol=0, atol=1e-12)
    # ties between two centroids can break either way; compare values, not indices
    np.testing.assert_allclose(d[r][w[r] != 0], c[a], rtol=0, atol=1e-12)


def test_kmeans_keep_zeros_bad_input_and_all_zero_block():
  x = jnp.zeros((4, 4))
  np.testing.assert_array_equal(
      quant.quantize(x, 2, method="kmeans", keep_zeros=True).dequantize(), x)
  with pytest.raises(ValueError, match="keep_zeros=True applies to method='kmeans'"):
    quant.quantize(x, 4, keep_zeros=True)
  with pytest.raises(TypeError, match="keep_zeros must be True or False"):
    quant.quantize(x, 4, method="kmeans", keep_zeros=1)
  plain = quant.quantize(jnp.array([0.0, 0.0, 1.0, 1.1, 3.0]), 1 + 1, method="kmeans")
  kept = quant.quantize(jnp.array([0.0, 0.0, 1.0, 1.1, 3.0]), 2, method="kmeans",
                        keep_zeros=True)
  assert kept.dequantize().tolist()[:2] == [0.0, 0.0]
  assert plain.nbytes == kept.nbytes
  tree = quant.quantize_params({"k": jnp.array([[0.0, 1.0], [2.0, 0.0]])}, method="kmeans",
                               keep_zeros=True, default_bits=2)
  np.testing.assert_array_equal(tree["k"].dequantize(), [[0.0, 1.0], [2.0, 0.0]])


def test_docstring_examples_run():
  runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
  globs = dict(jax=jax, jnp=jnp, np=np, jopt=jopt)
  names = set()
  for m in ("qat", "integer"):
    module = importlib.import_module(f"jopt.quant.{m}")
    for t in doctest.DocTestFinder().find(module, globs=globs):
      if t.examples:
        names.add(t.name.rsplit(".", 1)[-1])
        runner.run(t)
  assert runner.failures == 0
  assert {"fake_quant", "fake_quant_params", "int8_dense", "int8_conv",
          "quantize_input"} <= names
