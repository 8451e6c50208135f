"""8-bit Adam: the dynamic code book, block-wise rounding bounds, state size, behaviour."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

import jopt
from jopt._core.blockwise import dequantize, dynamic_codebook, quantize
from tests import problems


@pytest.mark.parametrize("signed", [True, False])
def test_codebook_shape(signed):
  cb = dynamic_codebook(signed)
  assert cb.shape == (256,) and cb.dtype == np.float32
  assert np.all(np.diff(cb) > 0)
  assert 0.0 in cb and cb[-1] == 1.0
  if signed:
    assert cb[0] > -1.0 and np.allclose(np.sort(-cb[cb < 0]), cb[(cb > 0) & (cb < 1)])
  else:
    assert cb[0] == 0.0
  # ten-fold magnitude steps: codes reach down to 1e-6-ish, dense near zero
  assert np.min(np.abs(cb[cb != 0])) < 1e-6


def _max_rounding_error(signed):
  """Largest distance from a point of [-1, 1] (or [0, 1]) to its nearest code."""
  cb = dynamic_codebook(signed).astype(np.float64)
  low_end = 1.0 + cb[0] if signed else 0.0  # the signed book has +1 but no -1
  return max(float(np.max(np.diff(cb)) / 2), low_end)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3000), st.sampled_from([4, 64, 256]), st.integers(-8, 2),
       st.booleans(), st.integers(0, 2**31 - 1))
def test_roundtrip_error_is_bounded_by_the_code_spacing(n, block, log_scale, signed, seed):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal(n) * 10.0**log_scale * rng.uniform(0.01, 1, n)
  if not signed:
    x = np.abs(x)
  x = jnp.asarray(x, jnp.float32)
  codes, scale = quantize(x, block, signed)
  assert codes.dtype == jnp.uint8 and codes.shape == x.shape
  y = np.asarray(dequantize(codes, scale, block, signed))
  xb = np.pad(np.asarray(x), (0, (-n) % block)).reshape(-1, block)
  absmax = np.repeat(np.max(np.abs(xb), axis=1), block)[:n]
  bound = _max_rounding_error(signed) * absmax * (1 + 1e-5) + 1e-30
  assert np.all(np.abs(np.asarray(x) - y) <= bound)
  # a positive block maximum is represented exactly (code 1.0)
  i = int(np.argmax(np.asarray(x)))
  if float(x[i]) == float(np.max(np.abs(np.asarray(x)))):
    np.testing.assert_allclose(y[i], float(x[i]), rtol=1e-6)


def test_state_bytes_at_most_0_3_of_float32_adam():
  params = {"w1": jnp.zeros((512, 256)), "w2": jnp.zeros((256, 1000)), "b": jnp.zeros((256,)),
            "emb": jnp.zeros((3000, 64))}
  f32 = sum(x.nbytes for x in jax.tree.leaves(jopt.adam(1e-3).init(params)))
  q8 = sum(x.nbytes for x in jax.tree.leaves(jopt.adam_8bit(1e-3).init(params)))
  assert q8 <= 0.3 * f32, q8 / f32


def test_large_min_size_is_exactly_adam():
  p = problems.parity_init(jnp.float32)
  a, b = jopt.adam(0.01), jopt.adam_8bit(0.01, min_8bit_size=10**9)
  sa, sb, pa, pb = a.init(p), b.init(p), p, p
  for _ in range(10):
    u, sa = a.update(jax.grad(problems.parity_loss)(pa), sa, pa)
    pa = optax.apply_updates(pa, u)
    v, sb = b.update(jax.grad(problems.parity_loss)(pb), sb, pb)
    pb = optax.apply_updates(pb, v)
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y), pa, pb)


def test_quantized_trajectory_tracks_float32_adam():
  rng = np.random.default_rng(0)
  p = {"w": jnp.asarray(rng.normal(size=(64, 64)), jnp.float32)}
  target = jnp.asarray(rng.normal(size=(64, 64)), jnp.float32)
  loss = lambda q: jnp.mean((q["w"] - target) ** 2 * jnp.linspace(1, 10, 64))  # noqa: E731
  out = []
  for tx in (jopt.adam(0.05), jopt.adam_8bit(0.05, block_size=256, min_8bit_size=0)):
    s, q = tx.init(p), p
    step = jax.jit(lambda q, s, tx=tx: (lambda us: (optax.apply_updates(q, us[0]), us[1]))(
        tx.update(jax.grad(loss)(q), s, q)))
    for _ in range(100):
      q, s = step(q, s)
    out.append(float(loss(q)))
  start = float(loss(p))
  assert out[1] < 0.05 * start, out
  assert abs(out[1] - out[0]) < 0.01 * start, out


@pytest.mark.parametrize("block_size", [0, 3, -2, 2.5, 1000, True])
def test_block_size_must_be_a_power_of_two(block_size):
  with pytest.raises(ValueError, match="block_size"):
    jopt.adam_8bit(1e-3, block_size=block_size)


def test_integer_params_rejected():
  with pytest.raises(TypeError, match="params must be floating point"):
    jopt.adam_8bit(1e-3).init({"w": jnp.zeros((8192,), jnp.int32)})
