"""jopt.quant linear quantization: NumPy reference, error bound, idempotence, codes, jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from jopt import quant

SHAPES = [(7,), (4, 6), (2, 3, 4)]


def _np_blocks(x, granularity, axis, group_size):
  """x as (num_blocks, block_len) in NumPy, written independently of jopt's layout."""
  if granularity == "tensor":
    return x.reshape(1, -1)
  if granularity == "channel":
    return np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
  y = np.moveaxis(x, axis, -1)
  return y.reshape(y.shape[:-1] + (y.shape[-1] // group_size, group_size)).reshape(
      -1, group_size)


def np_linear(x, bits, scheme, granularity="tensor", axis=-1, group_size=None):
  """NumPy transcription of Jacob et al.'s affine quantizer: codes and values per block."""
  b = _np_blocks(np.asarray(x, np.float64), granularity, axis, group_size)
  lo, hi = b.min(1, keepdims=True), b.max(1, keepdims=True)
  tiny = np.finfo(np.float64).tiny
  if scheme == "symmetric":
    qmax = 2 ** (bits - 1) - 1
    s = np.maximum(np.maximum(-lo, hi) / qmax, tiny)
    q = np.clip(np.round(b / s), -qmax, qmax)
    return q, s * q, s, None
  qmax = 2 ** bits - 1
  lo, hi = np.minimum(lo, 0), np.maximum(hi, 0)
  s = np.maximum((hi - lo) / qmax, tiny)
  z = np.clip(np.round(-lo / s), 0, qmax)
  q = np.clip(np.round(b / s) + z, 0, qmax)
  return q, s * (q - z), s, z


def _layout_kwargs(shape, choice):
  if choice == 0:
    return {}
  if choice == 1:
    return dict(granularity="channel", axis=len(shape) - 1)
  ax = 0 if shape[0] % 2 == 0 else len(shape) - 1
  g = 2 if shape[ax] % 2 == 0 else shape[ax]
  return dict(granularity="group", axis=ax, group_size=g)


arrays = st.sampled_from(SHAPES).flatmap(lambda s: hnp.arrays(
    np.float64, s, elements=st.floats(-1e3, 1e3, allow_subnormal=False)))


@settings(max_examples=30, deadline=None)
@given(x=arrays, bits=st.integers(2, 8), scheme=st.sampled_from(["symmetric", "asymmetric"]),
       gran=st.integers(0, 2))
def test_matches_numpy_and_error_is_at_most_half_a_step(x, bits, scheme, gran):
  with jax.enable_x64(True):
    kw = _layout_kwargs(x.shape, gran)
    qa = quant.quantize(jnp.asarray(x), bits, scheme=scheme, **kw)
    q, v, s, _ = np_linear(x, bits, scheme, kw.get("granularity", "tensor"),
                           kw.get("axis", -1), kw.get("group_size"))
    codes = _np_blocks(np.asarray(qa.codes), kw.get("granularity", "tensor"),
                       kw.get("axis", -1), kw.get("group_size"))
    np.testing.assert_array_equal(codes, q)
    deq = np.asarray(qa.dequantize())
    ref = _np_blocks(deq, kw.get("granularity", "tensor"), kw.get("axis", -1),
                     kw.get("group_size"))
    np.testing.assert_allclose(ref, v, rtol=2e-15, atol=0)   # measured 3.5e-16
    err = np.abs(_np_blocks(x, kw.get("granularity", "tensor"), kw.get("axis", -1),
                            kw.get("group_size")) - ref)
    assert np.all(err <= s / 2 * (1 + 1e-9)), (err.max(), s.min())


@settings(max_examples=30, deadline=None)
@given(x=arrays, bits=st.integers(2, 8), scheme=st.sampled_from(["symmetric", "asymmetric"]),
       gran=st.integers(0, 2))
def test_idempotent_and_codes_in_range(x, bits, scheme, gran):
  with jax.enable_x64(True):
    kw = _layout_kwargs(x.shape, gran)
    qa = quant.quantize(jnp.asarray(x), bits, scheme=scheme, **kw)
    again = quant.quantize(qa.dequantize(), bits, scheme=scheme, **kw)
    np.testing.assert_array_equal(np.asarray(again.codes), np.asarray(qa.codes))
    lo, hi = quant.code_range(bits, scheme)
    codes = np.asarray(qa.codes)
    assert codes.min() >= lo and codes.max() <= hi
    if scheme == "asymmetric":
      z = np.asarray(qa.zero_point)
      assert z.dtype == np.uint8 and z.min() >= 0 and z.max() <= hi
    else:
      assert qa.zero_point is None


def test_code_ranges_restricted_symmetric_and_full_asymmetric():
  assert quant.code_range(8) == (-127, 127)
  assert quant.code_range(2) == (-1, 1)
  assert quant.code_range(8, "asymmetric") == (0, 255)
  x = jnp.array([-1.0, -0.5, 0.0, 0.5, 1.0])
  np.testing.assert_array_equal(quant.quantize(x, 8).codes, [-127, -64, 0, 64, 127])
  # the restricted range is symmetric: -x quantizes to -q exactly
  y = jax.random.normal(jax.random.key(0), (50,))
  np.testing.assert_array_equal(quant.quantize(-y, 4).codes, -quant.quantize(y, 4).codes)
  qa = quant.quantize(x, 8, scheme="asymmetric")
  # 0.0 is exactly representable (the zero point is an integer code)
  assert int(qa.zero_point) in (127, 128) and float(qa.dequantize()[2]) == 0.0


@pytest.mark.parametrize("shape,kw,scale_shape", [
    ((6, 4), dict(granularity="channel", axis=-1), (4,)),
    ((6, 4), dict(granularity="channel", axis=0), (6,)),
    ((2, 3, 8), dict(granularity="channel", axis=1), (3,)),
    ((6, 8), dict(granularity="group", axis=-1, group_size=4), (6, 2)),
    ((6, 8), dict(granularity="group", axis=0, group_size=3), (2, 8)),
    ((2, 6, 4), dict(granularity="group", axis=1, group_size=2), (2, 3, 4)),
    ((6, 4), {}, ()),
])
def test_per_block_scale_shapes_and_values(shape, kw, scale_shape):
  x = jax.random.normal(jax.random.key(1), shape)
  qa = quant.quantize(x, 8, scheme="asymmetric", **kw)
  assert qa.scale.shape == scale_shape and qa.zero_point.shape == scale_shape
  # each scale is its block's (max - min) / 255 (range widened to contain 0)
  xn = np.asarray(x, np.float64)
  if kw.get("granularity") == "channel":
    ax = kw["axis"] % len(shape)
    red = tuple(i for i in range(len(shape)) if i != ax)
    lo, hi = np.minimum(xn.min(red), 0), np.maximum(xn.max(red), 0)
  elif kw.get("granularity") == "group":
    ax, g = kw["axis"] % len(shape), kw["group_size"]
    y = xn.reshape(shape[:ax] + (shape[ax] // g, g) + shape[ax + 1:])
    lo, hi = np.minimum(y.min(ax + 1), 0), np.maximum(y.max(ax + 1), 0)
  else:
    lo, hi = min(xn.min(), 0), max(xn.max(), 0)
  np.testing.assert_allclose(qa.scale, (hi - lo) / 255, rtol=2e-7)


def test_float32_and_bfloat16_inputs_keep_their_dtype():
  x = jax.random.normal(jax.random.key(2), (8, 8))
  for dt in (jnp.float32, jnp.bfloat16, jnp.float16):
    qa = quant.quantize(x.astype(dt), 8, granularity="channel")
    assert qa.dequantize().dtype == dt and qa.scale.dtype == jnp.float32
  err = jnp.abs(quant.quantize(x, 8).dequantize() - x).max()
  assert float(err) <= float(jnp.abs(x).max()) / 127 / 2 * (1 + 1e-5)


def test_clip_range_clips_and_fixes_the_scale():
  x = jnp.array([-4.0, -1.0, 0.25, 1.0, 3.0])
  qa = quant.quantize(x, 8, clip_range=(jnp.float32(-1.0), jnp.float32(1.0)))
  np.testing.assert_allclose(qa.dequantize(), [-1.0, -1.0, 32 / 127, 1.0, 1.0], rtol=1e-6)
  r = quant.QuantRange(jnp.zeros(3), jnp.array([1.0, 2.0, 4.0]))
  qa = quant.quantize(jnp.ones((5, 3)) * 2.0, 8, scheme="asymmetric", granularity="channel",
                      clip_range=r)
  np.testing.assert_allclose(qa.dequantize()[0, :2], [1.0, 2.0], rtol=1e-6)
  assert abs(float(qa.dequantize()[0, 2]) - 2.0) <= 4.0 / 255 / 2 * (1 + 1e-6)


def test_jit_of_quantize_and_dequantize():
  x = jax.random.normal(jax.random.key(3), (6, 8))
  for kw in (dict(bits=4, granularity="channel", axis=0),
             dict(bits=3, scheme="asymmetric", granularity="group", group_size=4),
             dict(bits=8)):
    eager = quant.quantize(x, **kw)
    jitted = jax.jit(lambda v, kw=kw: quant.quantize(v, **kw))(x)
    assert isinstance(jitted, quant.QuantizedArray) and jitted.nbytes == eager.nbytes
    np.testing.assert_array_equal(jitted.packed, eager.packed)
    deq = jax.jit(lambda qa: qa.dequantize())(eager)
    np.testing.assert_array_equal(deq, eager.dequantize())
    np.testing.assert_array_equal(jax.jit(lambda v, kw=kw: quant.quantize(v, **kw)
                                          .dequantize())(x), eager.dequantize())


def test_bad_input_names_the_argument():
  x = jnp.ones((4, 6))
  for bits in (1, 9, 0):
    with pytest.raises(ValueError, match=rf"quantize: bits={bits} is outside .*2\.\.8"):
      quant.quantize(x, bits)
  with pytest.raises(TypeError, match="quantize: bits=4.5"):
    quant.quantize(x, 4.5)
  with pytest.raises(ValueError, match="quantize: axis=2 is out of range"):
    quant.quantize(x, 8, granularity="channel", axis=2)
  with pytest.raises(ValueError, match="quantize: axis=-3 is out of range"):
    quant.quantize(x, 8, granularity="group", axis=-3, group_size=2)
  with pytest.raises(ValueError, match=r"quantize: group_size=4 does not divide x.shape\[1\]=6"):
    quant.quantize(x, 8, granularity="group", group_size=4)
  with pytest.raises(ValueError, match="quantize: granularity='group' needs group_size"):
    quant.quantize(x, 8, granularity="group")
  with pytest.raises(ValueError, match="quantize: group_size=2 is only used with"):
    quant.quantize(x, 8, granularity="channel", group_size=2)
  with pytest.raises(ValueError, match="quantize: group_size=0 must be an integer >= 1"):
    quant.quantize(x, 8, granularity="group", group_size=0)
  with pytest.raises(ValueError, match="quantize: granularity='row' is not one of"):
    quant.quantize(x, 8, granularity="row")
  with pytest.raises(ValueError, match="quantize: granularity='channel' needs an axis"):
    quant.quantize(jnp.float32(1.0), 8, granularity="channel")
  with pytest.raises(ValueError, match="quantize: method='uniform' is not one of"):
    quant.quantize(x, 8, method="uniform")
  with pytest.raises(ValueError, match="quantize: scheme='signed' is not one of"):
    quant.quantize(x, 8, scheme="signed")
  for bad in (jnp.nan, jnp.inf):
    with pytest.raises(ValueError, match="quantize: x contains NaN or Inf"):
      quant.quantize(x.at[1, 2].set(bad), 8)
  with pytest.raises(TypeError, match="quantize: x must be a real floating array"):
    quant.quantize(jnp.ones((3,), jnp.int32), 8)
  with pytest.raises(ValueError, match=r"quantize: clip_range's min has shape \(3,\)"):
    quant.quantize(x, 8, granularity="channel", clip_range=(jnp.zeros(3), jnp.ones(3)))
  with pytest.raises(ValueError, match="quantize: clip_range has min > max"):
    quant.quantize(x, 8, clip_range=(1.0, 0.0))
  with pytest.raises(ValueError, match="quantize: clip_range contains NaN"):
    quant.quantize(x, 8, clip_range=(jnp.nan, 1.0))
  with pytest.raises(TypeError, match="quantize: clip_range must be a"):
    quant.quantize(x, 8, clip_range=3.0)


def test_float32_round_trip_is_idempotent_for_every_method():
  x = jax.random.normal(jax.random.key(4), (16, 16)) * 3
  for kw in (dict(bits=8), dict(bits=4, scheme="asymmetric"), dict(bits=3, granularity="channel"),
             dict(method="nf4", granularity="group", group_size=8), dict(method="log2", bits=5)):
    qa = quant.quantize(x, **kw)
    np.testing.assert_array_equal(quant.quantize(qa.dequantize(), **kw).codes, qa.codes)
