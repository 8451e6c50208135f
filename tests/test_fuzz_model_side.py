"""Property-based fuzzing of jopt's model-side functions (issue 12, part 4a).

jopt.nn (dropout family, batch / layer / group norm), jopt.augment (every op and
combinator), jopt.quant (quantize / dequantize, fake quant, the code functions, bit
packing, calibration), jopt.distill's losses, jopt.prune's accounting functions and
(the schedules, ``step -> value``, are fuzzed in tests/test_fuzz_transforms.py, which
drives them). Inputs are finite,
shapes come from small palettes (0-d, empty, small, one 2**16-element array where the
function takes any shape) in float32 / bfloat16 / float16, hyperparameters are drawn
over their documented ranges with the edges. Properties: the documented output shape
and dtype, finite output for finite input, and only the documented errors (a
``ValueError`` or ``TypeError`` whose message names the argument).

Deeper run: ``JOPT_FUZZ_EXAMPLES=500 python -m pytest tests/test_fuzz_model_side.py``.

Documented limitations encoded in the strategies:

* normalization with ``eps = 0`` on a constant input (zero variance) is 0/0; ``eps = 0``
  is drawn only with non-constant inputs.
* ``distill_loss`` on an empty batch is a mean over no examples (NaN, as torch's
  ``kl_div(reduction="batchmean")``); batches are drawn non-empty.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jopt
from tests import fuzz

aug = jopt.augment
quant = jopt.quant


@pytest.fixture(scope="module", autouse=True)
def _tally():
  yield
  fuzz.dump_tally()


def _key(seed):
  return jax.random.key(seed)


def _like(out, shape, dtype, tag):
  assert tuple(out.shape) == tuple(shape), (tag, out.shape, shape)
  assert out.dtype == jnp.dtype(dtype), (tag, out.dtype, dtype)
  assert fuzz.finite(out), (tag, out)


# ---------------------------------------------------------------------------
# jopt.nn
# ---------------------------------------------------------------------------


@fuzz.fuzz_settings(8)
@given(dtype=fuzz.dtypes(), shape=fuzz.shapes(), fill=fuzz.values(10.0),
       rate=st.sampled_from([0.0, 0.999]) | st.floats(0.0, 0.999), seed=st.integers(0, 99),
       train=st.booleans())
def test_dropout_fuzz(dtype, shape, fill, rate, seed, train):
  fuzz.count("nn:dropout", f"dtype:{fuzz.dtype_name(dtype)}", f"shape:{shape}")
  x = fill(shape, dtype)
  _like(jopt.nn.dropout(x, rate, key=_key(seed), train=train), shape, dtype, "dropout")


_RANK3 = [(2, 3, 4), (0, 2, 3), (1, 1, 1), (2, 4, 4, 3), (2, 0, 3)]


@fuzz.fuzz_settings(8)
@given(dtype=fuzz.dtypes(), shape=st.sampled_from(_RANK3), fill=fuzz.values(10.0),
       rate=st.sampled_from([0.0, 0.999]) | st.floats(0.0, 0.999), seed=st.integers(0, 99),
       which=st.sampled_from(["spatial_dropout", "drop_path"]))
def test_spatial_dropout_and_drop_path_fuzz(dtype, shape, fill, rate, seed, which):
  fuzz.count(f"nn:{which}", f"dtype:{fuzz.dtype_name(dtype)}", f"shape:{shape}")
  x = fill(shape, dtype)
  out = getattr(jopt.nn, which)(x, rate, key=_key(seed))
  _like(out, shape, dtype, which)


@pytest.mark.parametrize("fn", [jopt.nn.dropout, jopt.nn.spatial_dropout, jopt.nn.drop_path])
@pytest.mark.parametrize("rate", [1.0, -1e-6, 1.5, math.nan])
def test_dropout_family_rejects_rate(fn, rate):
  fuzz.count("nn:out_of_range")
  with pytest.raises(ValueError) as e:
    fn(jnp.ones((2, 3, 4)), rate, key=_key(0))
  fuzz.raises_naming(e, "rate")


@st.composite
def _norm_input(draw, shapes):
  dtype = draw(fuzz.dtypes())
  shape = draw(st.sampled_from(shapes))
  x = draw(fuzz.values(10.0))(shape, dtype)
  eps = draw(st.sampled_from([0.0, 1e-5]) | st.floats(1e-6, 1.0))
  if eps == 0.0:
    # documented limitation: zero variance with eps = 0 is 0/0
    x = jnp.asarray(np.random.default_rng(draw(st.integers(0, 99))).uniform(
        1, 10, shape) * np.resize([1.0, -1.0], shape), dtype)
  return dtype, shape, x, eps


@fuzz.fuzz_settings(6)
@given(case=_norm_input([(2, 3), (4, 2, 2, 3), (1, 3), (2, 5), (3, 1, 2)]),
       train=st.booleans(), with_affine=st.booleans(),
       momentum=st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0),
       running_var=st.sampled_from(["unbiased", "biased"]))
def test_batch_norm_fuzz(case, train, with_affine, momentum, running_var):
  dtype, shape, x, eps = case
  fuzz.count("nn:batch_norm", f"dtype:{fuzz.dtype_name(dtype)}", f"shape:{shape}")
  c = shape[-1]
  n = math.prod(shape[:-1])
  if eps == 0.0 and n < 2:
    eps = 1e-5  # one example per feature has zero batch variance: the eps = 0 limitation
  stats = jopt.nn.batch_norm_stats(c)
  scale = jnp.ones((c,), dtype) if with_affine else None
  bias = jnp.zeros((c,), dtype) if with_affine else None
  if train and n < 2:
    # documented: training refuses one value per feature (its unbiased variance is 0/0)
    with pytest.raises(ValueError) as e:
      jopt.nn.batch_norm(x, scale, bias, stats, train=True, momentum=momentum, eps=eps)
    fuzz.raises_naming(e, "x has shape")
    return
  y, new = jopt.nn.batch_norm(x, scale, bias, stats, train=train, momentum=momentum, eps=eps,
                              running_var=running_var)
  _like(y, shape, dtype, "batch_norm")
  assert jax.tree.map(lambda a: (a.shape, a.dtype), new) == jax.tree.map(
      lambda a: (a.shape, a.dtype), stats)
  assert fuzz.finite(new)


@fuzz.fuzz_settings(8)
@given(case=_norm_input([(), (3,), (2, 3), (2, 3, 4), fuzz.LARGE, (2, 1)]),
       with_affine=st.booleans(), last_two=st.booleans())
def test_layer_norm_fuzz(case, with_affine, last_two):
  dtype, shape, x, eps = case
  fuzz.count("nn:layer_norm", f"dtype:{fuzz.dtype_name(dtype)}", f"shape:{shape}")
  if len(shape) == 0:
    with pytest.raises(ValueError) as e:
      jopt.nn.layer_norm(x, None, None, eps=eps)
    fuzz.raises_naming(e, "axis", "x")
    return
  axis = (-2, -1) if last_two and len(shape) >= 2 else -1
  nshape = shape[-2:] if axis == (-2, -1) else shape[-1:]
  if eps == 0.0 and math.prod(nshape) < 2:
    eps = 1e-5
  scale = jnp.ones(nshape, dtype) if with_affine else None
  bias = jnp.zeros(nshape, dtype) if with_affine else None
  _like(jopt.nn.layer_norm(x, scale, bias, axis=axis, eps=eps), shape, dtype, "layer_norm")


@fuzz.fuzz_settings(6)
@given(case=_norm_input([(2, 4), (2, 3, 3, 6), (1, 2, 4), (0, 2, 4)]), g=st.sampled_from([1, 2]),
       with_affine=st.booleans())
def test_group_norm_fuzz(case, g, with_affine):
  dtype, shape, x, eps = case
  fuzz.count("nn:group_norm", f"dtype:{fuzz.dtype_name(dtype)}", f"shape:{shape}")
  c = shape[-1]
  if eps == 0.0 and math.prod(shape[1:]) // g < 2:
    eps = 1e-5
  scale = jnp.ones((c,), dtype) if with_affine else None
  bias = jnp.zeros((c,), dtype) if with_affine else None
  _like(jopt.nn.group_norm(x, scale, bias, num_groups=g, eps=eps), shape, dtype, "group_norm")


@pytest.mark.parametrize("call,name", [
    (lambda: jopt.nn.group_norm(jnp.ones((2, 6)), None, None, num_groups=4), "num_groups"),
    (lambda: jopt.nn.group_norm(jnp.ones((2, 6)), None, None, num_groups=2, eps=-1.0), "eps"),
    (lambda: jopt.nn.layer_norm(jnp.ones((2, 6)), None, None, eps=math.nan), "eps"),
    (lambda: jopt.nn.layer_norm(jnp.ones((2, 6)), None, None, axis=2), "axis"),
    (lambda: jopt.nn.batch_norm(jnp.ones((2, 3)), None, None, jopt.nn.batch_norm_stats(3),
                                train=True, momentum=1.5), "momentum"),
    (lambda: jopt.nn.batch_norm(jnp.ones((2, 3)), None, None, jopt.nn.batch_norm_stats(4),
                                train=True), "stats"),
])
def test_norms_reject_bad_arguments(call, name):
  fuzz.count("nn:out_of_range")
  with pytest.raises((ValueError, TypeError)) as e:
    call()
  fuzz.raises_naming(e, name)


# ---------------------------------------------------------------------------
# jopt.augment
# ---------------------------------------------------------------------------

_IMAGES = [(2, 5, 7, 3), (1, 1, 1, 3), (0, 4, 4, 3), (3, 8, 8, 3)]
_GRAY = [(2, 5, 7, 1), (1, 6, 6, 2)]

_p = st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0)
_nonneg = st.sampled_from([0.0, 2.0]) | st.floats(0.0, 2.0)


def _pair(lo, hi):
  return st.tuples(st.floats(lo, hi), st.floats(lo, hi)).map(lambda t: (min(t), max(t)))


_OPS = {
    "random_brightness": (True, dict(max_delta=_nonneg)),
    "random_contrast": (True, dict(strength=_nonneg)),
    "random_saturation": (True, dict(strength=_nonneg)),
    "random_hue": (True, dict(max_delta=st.sampled_from([0.0, 0.5]) | st.floats(0.0, 0.5))),
    "color_jitter": (True, dict(brightness=_nonneg, contrast=_nonneg, saturation=_nonneg,
                                hue=st.floats(0.0, 0.5), random_order=st.booleans())),
    "random_flip_left_right": (False, dict(p=_p)),
    "random_flip_up_down": (False, dict(p=_p)),
    "random_affine": (False, dict(degrees=st.floats(0.0, 180.0), translate=st.tuples(
        st.floats(0.0, 1.0), st.floats(0.0, 1.0)), scale=_pair(0.1, 2.0),
        shear=st.floats(0.0, 89.0), mode=st.sampled_from(["constant", "nearest"]))),
    "random_crop": (False, dict(padding=st.integers(0, 9), mode=st.sampled_from(
        ["constant", "reflect", "edge", "symmetric"]))),
    "gaussian_noise": (False, dict(std=_nonneg)),
    "cutout": (False, dict(size=st.integers(0, 9), p=_p,
                           fill=st.sampled_from([0.0, 0.5, "random"]))),
    "random_erasing": (False, dict(p=_p, scale=_pair(0.0, 1.0), ratio=_pair(0.1, 10.0),
                                   fill=st.sampled_from([0.0, "random"]))),
}


@pytest.mark.parametrize("op", sorted(_OPS))
@fuzz.fuzz_settings(3)
@given(data=st.data())
def test_augment_op_fuzz(op, data):
  rgb, kw_strategies = _OPS[op]
  shape = data.draw(st.sampled_from(_IMAGES if rgb else _IMAGES + _GRAY))
  dtype = data.draw(fuzz.dtypes())
  x = data.draw(fuzz.values(1.0))(shape, dtype)
  x = jnp.abs(x)  # images in [0, 1]
  kw = {k: data.draw(s) for k, s in kw_strategies.items()}
  fuzz.count(f"augment:{op}", f"dtype:{fuzz.dtype_name(dtype)}", f"shape:{shape}")
  out = getattr(aug, op)(x, key=_key(data.draw(st.integers(0, 99))), **kw)
  _like(out, shape, dtype, f"{op}{kw}")


@fuzz.fuzz_settings(3)
@given(shape=st.sampled_from(_IMAGES + _GRAY), dtype=fuzz.dtypes(), fill=fuzz.values(1.0),
       size=st.sampled_from([1, 4, (3, 5)]), scale=_pair(0.05, 1.0), ratio=_pair(0.5, 2.0),
       antialias=st.booleans(), seed=st.integers(0, 99))
def test_random_resized_crop_fuzz(shape, dtype, fill, size, scale, ratio, antialias, seed):
  fuzz.count("augment:random_resized_crop", f"dtype:{fuzz.dtype_name(dtype)}")
  x = jnp.abs(fill(shape, dtype))
  hw = (size, size) if isinstance(size, int) else size
  out = aug.random_resized_crop(x, key=_key(seed), size=size, scale=scale, ratio=ratio,
                                antialias=antialias)
  _like(out, (shape[0], *hw, shape[3]), dtype, "random_resized_crop")


@fuzz.fuzz_settings(2)
@given(shape=st.sampled_from([(2, 5, 7, 3), (1, 4, 4, 1), (4, 3, 3, 3)]), dtype=fuzz.dtypes(),
       fill=fuzz.values(1.0), alpha=st.sampled_from([0.0, 1.0]) | st.floats(0.0, 5.0),
       per_example=st.booleans(), which=st.sampled_from(["mixup", "cutmix"]),
       seed=st.integers(0, 99))
def test_mixing_fuzz(shape, dtype, fill, alpha, per_example, which, seed):
  fuzz.count(f"augment:{which}", f"dtype:{fuzz.dtype_name(dtype)}")
  x = jnp.abs(fill(shape, dtype))
  labels = jax.nn.one_hot(jnp.arange(shape[0]) % 3, 3, dtype=dtype)
  out, lab = getattr(aug, which)(x, labels, key=_key(seed), alpha=alpha, per_example=per_example)
  _like(out, shape, dtype, which)
  _like(lab, labels.shape, dtype, which)


@fuzz.fuzz_settings(2)
@given(shape=st.sampled_from(_IMAGES), dtype=fuzz.dtypes(), fill=fuzz.values(1.0),
       num_ops=st.integers(0, 3), magnitude=st.sampled_from([0.0, 10.0]) | st.floats(0.0, 10.0),
       p=_p, seed=st.integers(0, 99))
def test_rand_augment_and_combinators_fuzz(shape, dtype, fill, num_ops, magnitude, p, seed):
  fuzz.count("augment:rand_augment", "augment:combinators", f"dtype:{fuzz.dtype_name(dtype)}")
  x = jnp.abs(fill(shape, dtype))
  ra = aug.rand_augment(num_ops, magnitude)
  flip = lambda im, *, key: aug.random_flip_left_right(im, key=key, p=1.0)
  noise = lambda im, *, key: aug.gaussian_noise(im, key=key, std=0.1)
  for fn in (ra, aug.random_apply(flip, p), aug.sequence(flip, noise),
             aug.random_choice([flip, noise], [p, 1.0 - p])):
    _like(fn(x, key=_key(seed)), shape, dtype, "combinator")


@pytest.mark.parametrize("call,name", [
    (lambda x: aug.random_hue(x, key=_key(0), max_delta=0.6), "max_delta"),
    (lambda x: aug.random_flip_left_right(x, key=_key(0), p=1.5), "p"),
    (lambda x: aug.gaussian_noise(x, key=_key(0), std=-1.0), "std"),
    (lambda x: aug.random_crop(x, key=_key(0), padding=-1), "padding"),
    (lambda x: aug.cutout(x, key=_key(0), size=-1), "size"),
    (lambda x: aug.random_contrast(x, key=_key(0), strength=math.nan), "strength"),
    (lambda x: aug.random_brightness(x.astype(jnp.int32), key=_key(0), max_delta=0.1), "images"),
    (lambda x: aug.random_brightness(x[0], key=_key(0), max_delta=0.1), "images"),
    (lambda x: aug.random_affine(x, key=_key(0), scale=(0.0, 1.0)), "scale"),
    (lambda x: aug.random_resized_crop(x, key=_key(0), size=0), "size"),
    (lambda x: aug.rand_augment(2, 11)(x, key=_key(0)), "magnitude"),
])
def test_augment_rejects_bad_arguments(call, name):
  fuzz.count("augment:out_of_range")
  with pytest.raises((ValueError, TypeError)) as e:
    call(jnp.full((2, 4, 4, 3), 0.5, jnp.float32))
  fuzz.raises_naming(e, name)


# ---------------------------------------------------------------------------
# jopt.quant
# ---------------------------------------------------------------------------


@st.composite
def _quant_case(draw):
  dtype = draw(fuzz.dtypes())
  shape = draw(fuzz.shapes())
  x = draw(fuzz.values(draw(st.sampled_from([1.0, 10.0]))))(shape, dtype)
  bits = draw(st.integers(2, 8))
  scheme = draw(st.sampled_from(["symmetric", "asymmetric"]))
  return dtype, shape, x, bits, scheme


@fuzz.fuzz_settings(4)
@given(case=_quant_case(), method=st.sampled_from(["linear", "log2", "nf4", "kmeans"]),
       granularity=st.sampled_from(["tensor", "channel"]))
def test_quantize_dequantize_fuzz(case, method, granularity):
  dtype, shape, x, bits, scheme = case
  if method == "kmeans" and math.prod(shape) > 64:
    shape, x = (2, 3), x.reshape(-1)[:6].reshape(2, 3) if x.size >= 6 else jnp.ones((2, 3), dtype)
  if granularity == "channel" and len(shape) == 0:
    granularity = "tensor"  # channel needs an axis; the 0-d error is checked below
  fuzz.count(f"quant:quantize_{method}", f"dtype:{fuzz.dtype_name(dtype)}", f"shape:{shape}")
  kw = dict(bits=4 if method == "nf4" else bits, method=method, granularity=granularity)
  if method == "linear":
    kw["scheme"] = scheme
  q = quant.quantize(x, **kw)
  out = q.dequantize()
  _like(out, shape, dtype, f"quantize{kw}")
  codes = q.codes
  assert tuple(codes.shape) == tuple(shape)
  if method == "linear" and x.size:
    lo, hi = quant.code_range(kw["bits"], scheme)
    assert int(jnp.min(codes)) >= lo and int(jnp.max(codes)) <= hi


@fuzz.fuzz_settings(5)
@given(case=_quant_case(), granularity=st.sampled_from(["tensor", "channel"]))
def test_fake_quant_fuzz(case, granularity):
  dtype, shape, x, bits, scheme = case
  if len(shape) == 0:
    granularity = "tensor"
  fuzz.count("quant:fake_quant", f"dtype:{fuzz.dtype_name(dtype)}", f"shape:{shape}")
  out = quant.fake_quant(x, bits, scheme=scheme, granularity=granularity)
  _like(out, shape, dtype, "fake_quant")
  if x.size:
    g = jax.grad(lambda v: jnp.sum(quant.fake_quant(v, bits, scheme=scheme,
                                                    granularity=granularity).astype(jnp.float32)))(x)
    _like(g, shape, dtype, "fake_quant grad")


@fuzz.fuzz_settings(5)
@given(kind=fuzz.tree_kinds(), shape=fuzz.shapes(large=False), dtype=fuzz.dtypes(),
       fill=fuzz.values(5.0), bits=st.integers(2, 8))
def test_fake_quant_and_quantize_params_fuzz(kind, shape, dtype, fill, bits):
  fuzz.count("quant:params", f"tree:{kind}", f"dtype:{fuzz.dtype_name(dtype)}")
  params = fuzz.pure(fuzz.build_tree(kind, shape, dtype, fill))
  fq = quant.fake_quant_params(params, default_bits=bits)
  assert jax.tree.structure(fq) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(fq), jax.tree.leaves(params)):
    _like(a, b.shape, b.dtype, "fake_quant_params")
  qp = quant.quantize_params(params, default_bits=bits)
  deq = quant.dequantize_params(qp)
  assert jax.tree.structure(deq) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(deq), jax.tree.leaves(params)):
    _like(a, b.shape, b.dtype, "quantize_params")
  report = quant.size_report(qp)
  assert report is not None


@fuzz.fuzz_settings(3)
@given(case=_quant_case())
def test_code_functions_fuzz(case):
  dtype, shape, x, bits, scheme = case
  fuzz.count("quant:codes", f"dtype:{fuzz.dtype_name(dtype)}", f"shape:{shape}")
  amax = jnp.max(jnp.abs(x.astype(jnp.float32))) if x.size else jnp.float32(0)
  lo, hi = (-amax, amax) if scheme == "symmetric" else (jnp.minimum(-amax, 0), amax)
  scale, zp = quant.scale_and_zero_point(lo, hi, bits=bits, scheme=scheme)
  assert fuzz.finite((scale, zp)) and float(scale) > 0
  codes = quant.linear_codes(x, scale, zp, bits=bits, scheme=scheme)
  clo, chi = quant.code_range(bits, scheme)
  if x.size:
    assert clo <= int(jnp.min(codes)) and int(jnp.max(codes)) <= chi
  vals = quant.linear_values(codes, scale, zp)
  assert tuple(vals.shape) == tuple(shape) and fuzz.finite(vals)
  s2 = quant.log2_scale(amax)
  assert fuzz.finite(s2)
  c2 = quant.log2_codes(x, s2, bits=bits)
  assert tuple(c2.shape) == tuple(shape) and fuzz.finite(quant.log2_values(c2, s2, bits=bits))
  c4 = quant.nf4_codes(x, jnp.maximum(amax, 1e-6))
  assert tuple(c4.shape) == tuple(shape) and fuzz.finite(quant.nf4_values(c4, amax))


@fuzz.fuzz_settings(5)
@given(bits=st.integers(1, 8), size=st.sampled_from([0, 1, 7, 8, 9, 1000]),
       seed=st.integers(0, 99))
def test_pack_unpack_roundtrip_fuzz(bits, size, seed):
  fuzz.count("quant:pack_bits")
  codes = jnp.asarray(np.random.default_rng(seed).integers(0, 2**bits, size), jnp.uint8)
  packed = quant.pack_bits(codes, bits)
  assert packed.size == quant.packed_nbytes(size, bits)
  np.testing.assert_array_equal(np.asarray(quant.unpack_bits(packed, bits, size)), np.asarray(codes))


@fuzz.fuzz_settings(6)
@given(dtype=fuzz.dtypes(), shape=st.sampled_from([(3,), (2, 3), (4, 2, 3), fuzz.LARGE]),
       fill=fuzz.values(10.0), method=st.sampled_from(["minmax", "percentile", "mse"]),
       scheme=st.sampled_from(["symmetric", "asymmetric"]), bits=st.integers(2, 8),
       granularity=st.sampled_from(["tensor", "channel"]))
def test_calibrate_and_observer_fuzz(dtype, shape, fill, method, scheme, bits, granularity):
  fuzz.count("quant:calibrate", f"dtype:{fuzz.dtype_name(dtype)}")
  x = fill(shape, dtype)
  r = quant.calibrate(x, method, bits=bits, scheme=scheme, granularity=granularity)
  assert fuzz.finite(r)
  ch = shape[-1] if granularity == "channel" else None
  obs = quant.observer_update(quant.observer_init(ch), x)
  assert fuzz.finite(obs)
  assert fuzz.finite(quant.observer_range(obs, "minmax", bits=bits, scheme=scheme))


@pytest.mark.parametrize("call,name", [
    (lambda: quant.quantize(jnp.ones(4), 9), "bits"),
    (lambda: quant.quantize(jnp.ones(4), 8, method="foo"), "method"),
    (lambda: quant.quantize(jnp.ones(4), 8, scheme="foo"), "scheme"),
    (lambda: quant.quantize(jnp.ones((2, 4)), 8, granularity="group", group_size=3), "group_size"),
    (lambda: quant.fake_quant(jnp.ones(4), 1), "bits"),
    # code_range, pack_bits and unpack_bits took any bits silently (fixed by this fuzzing)
    (lambda: quant.code_range(0), "bits"),
    (lambda: quant.code_range(9, "asymmetric"), "bits"),
    (lambda: quant.pack_bits(jnp.zeros(4, jnp.uint8), 9), "bits"),
    (lambda: quant.pack_bits(jnp.zeros(4, jnp.uint8), 0), "bits"),
    (lambda: quant.unpack_bits(jnp.zeros(4, jnp.uint8), 9, 2), "bits"),
    (lambda: quant.calibrate(jnp.ones(4), "foo"), "method"),
])
def test_quant_rejects_bad_arguments(call, name):
  fuzz.count("quant:out_of_range")
  with pytest.raises((ValueError, TypeError)) as e:
    call()
  fuzz.raises_naming(e, name)


# ---------------------------------------------------------------------------
# jopt.distill
# ---------------------------------------------------------------------------


@fuzz.fuzz_settings(6)
@given(dtype=fuzz.dtypes(), shape=st.sampled_from([(4, 5), (1, 2), (2, 3, 7)]),
       fill=fuzz.values(30.0), temperature=st.sampled_from([1e-2, 1.0, 20.0]) | st.floats(0.05, 20.0),
       alpha=st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0), with_labels=st.booleans())
def test_distill_loss_fuzz(dtype, shape, fill, temperature, alpha, with_labels):
  fuzz.count("distill:distill_loss", f"dtype:{fuzz.dtype_name(dtype)}", f"shape:{shape}")
  s, t = fill(shape, dtype), fill(shape, dtype)[..., ::-1]
  labels = None
  if with_labels:
    labels = jnp.arange(math.prod(shape[:-1]), dtype=jnp.int32).reshape(shape[:-1]) % shape[-1]
  elif alpha != 1.0:
    alpha = 1.0  # documented: without labels, alpha must be 1 (checked below)
  out = jopt.distill.distill_loss(s, t, labels, temperature=temperature, alpha=alpha)
  assert out.shape == () and fuzz.finite(out), out
  st_ = jopt.distill.soft_targets(t, temperature)
  _like(st_, shape, st_.dtype, "soft_targets")


@fuzz.fuzz_settings(3)
@given(dtype=fuzz.dtypes(), shape=st.sampled_from([(2, 4, 4, 3), (1, 1, 1, 1), (3, 2, 5, 4)]),
       fill=fuzz.values(10.0), p=st.sampled_from([1, 2, 4]))
def test_feature_losses_fuzz(dtype, shape, fill, p):
  fuzz.count("distill:features", f"dtype:{fuzz.dtype_name(dtype)}")
  s, t = fill(shape, dtype), jnp.flip(fill(shape, dtype), 0)
  am = jopt.distill.attention_map(s, p)
  assert fuzz.finite(am) and am.shape[0] == shape[0]
  out = jopt.distill.attention_transfer_loss(s, t, p)
  assert out.shape == () and fuzz.finite(out), out
  proj = jopt.distill.init_hint_projection(_key(0), shape[-1], shape[-1] + 1, dtype=dtype)
  t2 = jnp.concatenate([t, t[..., :1]], -1)
  h = jopt.distill.hint_loss(s, t2, proj)
  assert h.shape == () and fuzz.finite(h), h


@fuzz.fuzz_settings(6)
@given(dtype=fuzz.dtypes(), shape=st.sampled_from([(4, 3), (2, 5), (6, 2), (3, 1)]),
       fill=fuzz.values(10.0))
def test_rkd_losses_fuzz(dtype, shape, fill):
  fuzz.count("distill:rkd", f"dtype:{fuzz.dtype_name(dtype)}")
  s, t = fill(shape, dtype), jnp.flip(fill(shape, dtype), 0)
  if shape[0] < 3:  # documented: angles need triplets
    with pytest.raises(ValueError) as e:
      jopt.distill.rkd_angle_loss(s, t)
    fuzz.raises_naming(e, "batch")
  for fn in ((jopt.distill.rkd_distance_loss, jopt.distill.rkd_angle_loss) if shape[0] >= 3
             else (jopt.distill.rkd_distance_loss,)):
    out = fn(s, t)
    assert out.shape == () and fuzz.finite(out), (fn.__name__, out)


@pytest.mark.parametrize("call,name", [
    (lambda: jopt.distill.distill_loss(jnp.ones((2, 3)), jnp.ones((2, 3)), temperature=0.0,
                                       alpha=1.0), "temperature"),
    (lambda: jopt.distill.distill_loss(jnp.ones((2, 3)), jnp.ones((2, 3)), temperature=1.0,
                                       alpha=1.5), "alpha"),
    (lambda: jopt.distill.distill_loss(jnp.ones((2, 3)), jnp.ones((2, 4)), temperature=1.0,
                                       alpha=1.0), "teacher_logits"),
    (lambda: jopt.distill.soft_targets(jnp.ones((2, 3)), -1.0), "temperature"),
])
def test_distill_rejects_bad_arguments(call, name):
  fuzz.count("distill:out_of_range")
  with pytest.raises((ValueError, TypeError)) as e:
    call()
  fuzz.raises_naming(e, name)


# ---------------------------------------------------------------------------
# jopt.prune accounting
# ---------------------------------------------------------------------------


@fuzz.fuzz_settings(10)
@given(kind=fuzz.tree_kinds(), shape=fuzz.shapes(), dtype=fuzz.dtypes(), fill=fuzz.values(1.0),
       density=st.floats(0.0, 1.0), seed=st.integers(0, 99), index_bits=st.integers(1, 8))
def test_prune_accounting_fuzz(kind, shape, dtype, fill, density, seed, index_bits):
  fuzz.count("prune:accounting", f"tree:{kind}", f"dtype:{fuzz.dtype_name(dtype)}")
  rng = np.random.default_rng(seed)
  params = fuzz.pure(fuzz.build_tree(kind, shape, dtype, lambda s, d: jnp.asarray(
      np.asarray(fill(s, d), np.float32) * (rng.random(s) < density), d)))
  rep = jopt.prune.sparsity_report(params)
  assert fuzz.finite(jnp.asarray(rep.sparsity)) and 0.0 <= float(rep.sparsity) <= 1.0
  bm = jopt.prune.to_bitmask(params, filter=True)
  back = jopt.prune.from_bitmask(bm)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
  assert jopt.prune.nbytes(bm) >= 0
  leaf = np.asarray(jax.tree.leaves(params)[0], np.float32)
  gaps, vals = jopt.prune.relative_index_encode(leaf, index_bits)
  np.testing.assert_array_equal(jopt.prune.relative_index_decode(gaps, vals, leaf.shape), leaf)
  assert jopt.prune.relative_index_count(leaf, index_bits) == gaps.size
  assert jopt.prune.relative_index_nbytes(leaf, 8, index_bits) >= 0


@fuzz.fuzz_settings(6)
@given(s=st.sampled_from([0.0, 0.99]) | st.floats(0.0, 0.99),
       shapes=st.lists(st.sampled_from([(3, 3), (4, 2), (8, 3, 3, 4), (10,)]), min_size=1,
                       max_size=4))
def test_erk_densities_fuzz(s, shapes):
  fuzz.count("prune:erk")
  d = jopt.prune.erk_densities(jnp.float32(s), shapes)
  assert d.shape == (len(shapes),) and fuzz.finite(d)
  assert bool(jnp.all((d >= 0) & (d <= 1))), d


@pytest.mark.parametrize("shape,granularity", [((0,), "tensor"), ((2, 0), "tensor"),
                                               ((2, 0), "channel"), ((0, 3), "channel")])
@pytest.mark.parametrize("method", ["linear", "log2", "nf4", "kmeans"])
def test_quantize_zero_size_regression(shape, granularity, method):
  # found by test_quantize_dequantize_fuzz: a zero-size x crashed (numpy's "zero-size
  # array to reduction operation min" for tensor, ZeroDivisionError for channel)
  x = jnp.ones(shape, jnp.bfloat16)
  q = quant.quantize(x, 4, method=method, granularity=granularity)
  assert q.codes.shape == shape
  _like(q.dequantize(), shape, jnp.bfloat16, "quantize(empty)")
  _like(quant.fake_quant(x, 4, granularity=granularity), shape, jnp.bfloat16, "fake_quant(empty)")


def test_random_resized_crop_tiny_image_regression():
  # found by test_random_resized_crop_fuzz: on a 1x1 image no try fits, and the
  # center-crop fallback rounded round(1 * 0.5) to a 0-pixel box, giving NaN
  x = jnp.full((1, 1, 1, 3), 0.5, jnp.float32)
  out = aug.random_resized_crop(x, key=_key(0), size=2, scale=(0.5, 0.5), ratio=(0.5, 0.5))
  np.testing.assert_array_equal(np.asarray(out), np.full((1, 2, 2, 3), 0.5, np.float32))
  tall = jnp.full((1, 1, 1, 3), 0.25, jnp.float32)
  out = aug.random_resized_crop(tall, key=_key(1), size=1, scale=(0.5, 0.5), ratio=(2.0, 3.0))
  np.testing.assert_array_equal(np.asarray(out), np.full((1, 1, 1, 3), 0.25, np.float32))
