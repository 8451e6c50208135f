"""jopt.quant integer inference: int8 x int8 (and packed int4) with int32 accumulation.

References: NumPy int64 matmul / convolution of the codes (exact accumulation), and the
fake-quantized float layer in float64 (Jacob et al. 2018: equal within one output step).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jopt import quant


def np_conv_nhwc(x, w, stride, pad):
  """NumPy int64 cross-correlation, NHWC x HWIO, explicit zero padding ((t, b), (l, r))."""
  x = np.pad(x.astype(np.int64), ((0, 0), pad[0], pad[1], (0, 0)))
  kh, kw, _, o = w.shape
  n, h, wd, _ = x.shape
  oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
  out = np.zeros((n, oh, ow, o), np.int64)
  for i in range(oh):
    for j in range(ow):
      patch = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
      out[:, i, j, :] = np.einsum("nhwc,hwco->no", patch, w.astype(np.int64))
  return out


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2 ** 16), bits=st.sampled_from([8, 4, 3]),
       per_channel=st.booleans())
def test_dense_accumulates_exactly_and_equals_fake_quant_within_one_step(seed, bits,
                                                                         per_channel):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(5, 24)) * 2
  w = rng.normal(size=(24, 6))
  b = rng.normal(size=6)
  gran = dict(granularity="channel", axis=-1) if per_channel else {}
  with jax.enable_x64(True):
    r = quant.calibrate(jnp.asarray(x[:3]))            # some inputs fall outside
    qw = quant.quantize(jnp.asarray(w), bits, **gran)
    acc, out_scale = quant.int8_dense(jnp.asarray(x), qw, x_range=r, return_accumulator=True)
    cx, sx = quant.quantize_input(jnp.asarray(x), r)
    assert acc.dtype == jnp.int32 and cx.dtype == jnp.int8
    np.testing.assert_array_equal(
        np.asarray(acc), np.asarray(cx).astype(np.int64) @ np.asarray(qw.codes).astype(np.int64))
    y = np.asarray(quant.int8_dense(jnp.asarray(x), qw, jnp.asarray(b), x_range=r))
    fake = np.asarray(quant.fake_quant(jnp.asarray(x), 8, clip_range=r))
    np.testing.assert_array_equal(fake, np.asarray(cx, np.float64) * float(sx))
    y_fake = fake @ np.asarray(qw.dequantize()) + b
    step = np.broadcast_to(np.asarray(out_scale), (6,))
  err = np.abs(y - y_fake)
  assert np.all(err <= step)                             # the stated bound: one step
  assert np.all(err <= 1e-12 * (np.abs(y_fake) + 1))     # what float64 actually gives


def test_dense_float32_error_is_a_tiny_fraction_of_a_step():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(8, 64)), jnp.float32)
  qw = quant.quantize(jnp.asarray(rng.normal(size=(64, 16)), jnp.float32), 8,
                      granularity="channel")
  r = quant.calibrate(x)
  y = quant.int8_dense(x, qw, x_range=r)
  y_fake = jnp.matmul(quant.fake_quant(x, 8, clip_range=r), qw.dequantize(),
                      precision=jax.lax.Precision.HIGHEST)
  _, step = quant.int8_dense(x, qw, x_range=r, return_accumulator=True)
  ratio = float(jnp.max(jnp.abs(y - y_fake) / step))
  assert y.dtype == jnp.float32 and ratio < 0.05, ratio


def test_int4_weights_stay_packed_and_match_the_unpacked_int8_path():
  rng = np.random.default_rng(1)
  w = jnp.asarray(rng.normal(size=(32, 8)), jnp.float32)
  q4 = quant.quantize(w, 4, granularity="channel")
  assert q4.packed.dtype == jnp.uint8 and q4.packed.shape == (32 * 8 // 2,)
  assert q4.nbytes == 32 * 8 // 2 + 8 * 4
  assert int(jnp.max(jnp.abs(q4.codes))) <= 7
  x = jnp.asarray(rng.normal(size=(3, 32)), jnp.float32)
  acc, s = quant.int8_dense(x, q4, x_range=(-2.0, 2.0), return_accumulator=True)
  cx, sx = quant.quantize_input(x, (-2.0, 2.0))
  np.testing.assert_array_equal(acc, np.asarray(cx, np.int64) @ np.asarray(q4.codes, np.int64))
  np.testing.assert_array_equal(s, sx * q4.scale)


@pytest.mark.parametrize("stride,padding", [(1, "SAME"), (2, "VALID"), (2, ((1, 0), (0, 1)))])
def test_conv_accumulates_exactly_and_equals_fake_quant(x64, stride, padding):
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(2, 7, 6, 3)))
  w = jnp.asarray(rng.normal(size=(3, 3, 3, 4)))
  b = jnp.asarray(rng.normal(size=4))
  qw = quant.quantize(w, 8, granularity="channel", axis=-1)
  r = quant.calibrate(x)
  acc, out_scale = quant.int8_conv(x, qw, x_range=r, strides=(stride, stride),
                                   padding=padding, return_accumulator=True)
  cx, _ = quant.quantize_input(x, r)
  pad = {"SAME": ((1, 1), (1, 1)), "VALID": ((0, 0), (0, 0))}.get(padding, padding) \
      if isinstance(padding, str) else padding
  np.testing.assert_array_equal(acc, np_conv_nhwc(np.asarray(cx), np.asarray(qw.codes),
                                                  stride, pad))
  y = quant.int8_conv(x, qw, b, x_range=r, strides=(stride, stride), padding=padding)
  y_fake = jax.lax.conv_general_dilated(
      quant.fake_quant(x, 8, clip_range=r), qw.dequantize(), (stride, stride), padding,
      dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=jax.lax.Precision.HIGHEST) + b
  err = np.abs(np.asarray(y - y_fake))
  assert np.all(err <= np.asarray(out_scale)) and err.max() < 1e-12


def test_depthwise_conv_and_int4_kernel(x64):
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(1, 5, 5, 4)))
  qw = quant.quantize(jnp.asarray(rng.normal(size=(3, 3, 1, 4))), 4, granularity="channel")
  acc, _ = quant.int8_conv(x, qw, x_range=(-3.0, 3.0), feature_group_count=4,
                           padding="VALID", return_accumulator=True)
  cx, _ = quant.quantize_input(x, (-3.0, 3.0))
  cx, cw = np.asarray(cx, np.int64), np.asarray(qw.codes, np.int64)
  for c in range(4):
    np.testing.assert_array_equal(acc[..., c:c + 1],
                                  np_conv_nhwc(cx[..., c:c + 1], cw[..., c:c + 1], 1,
                                               ((0, 0), (0, 0))))


def test_jit_and_bfloat16_input():
  rng = np.random.default_rng(4)
  qw = quant.quantize(jnp.asarray(rng.normal(size=(16, 4)), jnp.float32), 8,
                      granularity="channel")
  x = jnp.asarray(rng.normal(size=(2, 16)), jnp.bfloat16)
  f = jax.jit(lambda v, lo, hi: quant.int8_dense(v, qw, x_range=(lo, hi)))
  y = f(x, -2.0, 2.0)
  assert y.dtype == jnp.bfloat16 and y.shape == (2, 4)
  np.testing.assert_array_equal(y, quant.int8_dense(x, qw, x_range=(-2.0, 2.0)))


def test_bad_input():
  w = jnp.ones((4, 3))
  x = jnp.ones((2, 4))
  qw = quant.quantize(w, 8, granularity="channel")
  with pytest.raises(TypeError, match="qw must be a jopt.quant.QuantizedArray"):
    quant.int8_dense(x, w, x_range=(-1.0, 1.0))
  with pytest.raises(ValueError, match="scheme='symmetric'"):
    quant.int8_dense(x, quant.quantize(w, 8, scheme="asymmetric"), x_range=(-1.0, 1.0))
  with pytest.raises(ValueError, match="scheme='symmetric'"):
    quant.int8_dense(x, quant.quantize(w, 4, method="kmeans"), x_range=(-1.0, 1.0))
  with pytest.raises(ValueError, match="output channel"):
    quant.int8_dense(x, quant.quantize(w, 8, granularity="channel", axis=0),
                     x_range=(-1.0, 1.0))
  with pytest.raises(ValueError, match="output channel"):
    quant.int8_dense(x, quant.quantize(w, 8, granularity="group", axis=0, group_size=2),
                     x_range=(-1.0, 1.0))
  with pytest.raises(TypeError, match="x_range is required"):
    quant.int8_dense(x, qw, x_range=None)
  with pytest.raises(ValueError, match="per tensor"):
    quant.int8_dense(x, qw, x_range=(jnp.zeros(4), jnp.ones(4)))
  with pytest.raises(ValueError, match="NaN"):
    quant.int8_dense(x, qw, x_range=(-1.0, jnp.nan))
  with pytest.raises(ValueError, match="last axis of x"):
    quant.int8_dense(jnp.ones((2, 5)), qw, x_range=(-1.0, 1.0))
  with pytest.raises(ValueError, match="rank-4"):
    quant.int8_conv(jnp.ones((1, 4, 4, 4)), qw, x_range=(-1.0, 1.0))
  with pytest.raises(ValueError, match="NHWC"):
    quant.int8_conv(jnp.ones((1, 4, 4, 2)), quant.quantize(jnp.ones((3, 3, 3, 2)), 8),
                    x_range=(-1.0, 1.0))
  with pytest.raises(ValueError, match="bits=9"):
    quant.quantize_input(x, (-1.0, 1.0), bits=9)


def test_qwix_runs_jopt_codes_and_calibrated_ranges_on_integers(x64, standard_promotion):
  """The documented path to qwix 0.1.8: jopt codes and scales as qwix QArrays."""
  import qwix  # pylint: disable=import-outside-toplevel  (in the test extra)
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(4, 16)))
  qw = quant.quantize(jnp.asarray(rng.normal(size=(16, 5))), 8, granularity="channel")
  r = quant.calibrate(x[:2])
  cx, sx = quant.quantize_input(x, r)
  xq = qwix.QArray(cx, sx.reshape(1, 1), None, jnp.int8)
  wq = qwix.QArray(qw.codes.astype(jnp.int8), qw.scale.reshape(1, -1), None, jnp.int8)
  dims = (((1,), (0,)), ((), ()))
  with standard_promotion:                            # qwix relies on implicit promotion
    jaxpr = str(jax.make_jaxpr(lambda a, b: qwix.dot_general(a, b, dims))(xq, wq))
    y = qwix.dot_general(xq, wq, dims)
  assert "preferred_element_type=int32" in jaxpr      # qwix multiplies the int8 codes
  np.testing.assert_allclose(y, quant.int8_dense(x, qw, x_range=r), rtol=1e-13, atol=1e-13)
  # conv: the same QArray view, scale of the kernel's rank
  xc = jnp.asarray(rng.normal(size=(1, 6, 6, 2)))
  qk = quant.quantize(jnp.asarray(rng.normal(size=(3, 3, 2, 3))), 8, granularity="channel")
  rc = quant.calibrate(xc)
  cxc, sxc = quant.quantize_input(xc, rc)
  with standard_promotion:
    yc = qwix.conv_general_dilated(
        qwix.QArray(cxc, sxc.reshape(1, 1, 1, 1), None, jnp.int8),
        qwix.QArray(qk.codes.astype(jnp.int8), qk.scale.reshape(1, 1, 1, -1), None,
                    jnp.int8),
        (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(yc, quant.int8_conv(xc, qk, x_range=rc), rtol=1e-13, atol=1e-13)
  # qwix's own symmetric grid is absmax / 127.5, not jopt's absmax / 127: re-quantizing
  # the dequantized weight in qwix does not keep jopt's codes (so build QArrays as above)
  with standard_promotion:
    requant = qwix.quantize(qw.dequantize(), jnp.int8, channelwise_axes=[1])
  np.testing.assert_allclose(requant.scale.reshape(-1), qw.scale * 127 / 127.5, rtol=1e-12)
