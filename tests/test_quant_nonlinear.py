"""jopt.quant non-linear quantizers: log2 (Miyashita), k-means (Han), NF4 (Dettmers)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from jopt import quant

# Dettmers et al., QLoRA (2023), Appendix E: the NF4 data type's 16 values.
NF4_PAPER = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
             -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
             0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
             0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
             0.7229568362236023, 1.0]

arrays = st.sampled_from([(9,), (4, 6)]).flatmap(lambda s: hnp.arrays(
    np.float64, s, elements=st.floats(-1e3, 1e3, allow_subnormal=False)))


def np_log2(x, bits):
  """NumPy transcription of the log quantizer (per tensor), with the exact-zero code."""
  x = np.asarray(x, np.float64)
  amax = np.abs(x).max()
  emax = np.round(np.log2(amax)) if amax > 0 else 0.0
  cmax = 2 ** (bits - 1) - 1
  with np.errstate(divide="ignore"):
    e = np.round(np.log2(np.abs(x))) - emax + cmax
  c = np.clip(np.where(x != 0, e, 0), 0, cmax)
  return np.where(c > 0, np.sign(x) * 2.0 ** (emax + c - cmax), 0.0)


@settings(max_examples=30, deadline=None)
@given(x=arrays, bits=st.integers(2, 8))
def test_log2_matches_numpy_is_idempotent_and_rounds_in_log_domain(x, bits):
  with jax.enable_x64(True):
    qa = quant.quantize(jnp.asarray(x), bits, method="log2")
    v = np.asarray(qa.dequantize())
    np.testing.assert_array_equal(v, np_log2(x, bits))
    again = quant.quantize(qa.dequantize(), bits, method="log2")
    np.testing.assert_array_equal(again.codes, qa.codes)
    assert qa.codes.min() >= 0 and qa.codes.max() <= 2 ** bits - 1
    # inside the level range, |log2|x| - log2|v|| <= 1/2 (nearest level in log domain)
    nz = v != 0
    top = float(qa.scale)
    inside = nz & (np.abs(x) <= top * 2 ** 0.5)
    assert np.all(np.abs(np.log2(np.abs(x[inside])) - np.log2(np.abs(v[inside])))
                  <= 0.5 + 1e-12)
    assert np.all(np.sign(v[nz]) == np.sign(x[nz]))


def test_log2_codes_keep_zero_and_sign():
  x = jnp.array([0.0, 1.0, -1.0, 0.5, -0.126, 1e-6, 3.0])
  qa = quant.quantize(x, 4, method="log2")
  assert float(qa.scale) == 4.0        # 2 ** round(log2 3)
  np.testing.assert_array_equal(qa.dequantize(), [0.0, 1.0, -1.0, 0.5, -0.125, 0.0, 4.0])


def np_kmeans(v, k, iters, lo, hi):
  """Plain NumPy Lloyd iterations from Han et al.'s linear initialization."""
  v = np.asarray(v, np.float64).reshape(-1)
  c = lo + (hi - lo) * np.arange(k) / (k - 1)
  for _ in range(iters):
    a = np.argmin(np.abs(v[:, None] - c[None, :]), axis=1)
    for j in range(k):
      if np.any(a == j):
        c[j] = v[a == j].mean()
  return c, np.argmin(np.abs(v[:, None] - c[None, :]), axis=1)


@pytest.mark.parametrize("bits,iters", [(2, 10), (3, 30), (5, 15)])
def test_kmeans_matches_a_numpy_lloyd_loop(x64, bits, iters):
  v = np.asarray(jax.random.normal(jax.random.key(bits), (300,), jnp.float64))
  v = np.concatenate([v, 4 + 0.1 * v[:40]])          # a second mode
  c, a = quant.kmeans_1d(jnp.asarray(v), 2 ** bits, iters=iters)
  rc, ra = np_kmeans(v, 2 ** bits, iters, v.min(), v.max())
  np.testing.assert_allclose(c, rc, rtol=0, atol=1e-14)
  np.testing.assert_array_equal(a, ra)
  qa = quant.quantize(jnp.asarray(v), bits, method="kmeans", iters=iters)
  np.testing.assert_allclose(qa.dequantize(), rc[ra], rtol=0, atol=1e-14)
  assert qa.codebook.shape == (2 ** bits,) and qa.scale is None


def test_kmeans_per_channel_is_deterministic_and_jittable(x64):
  w = jax.random.normal(jax.random.key(7), (20, 3), jnp.float64)
  qa = quant.quantize(w, 3, method="kmeans", granularity="channel", iters=12)
  assert qa.codebook.shape == (3, 8)
  for j in range(3):
    col = np.asarray(w[:, j])
    rc, ra = np_kmeans(col, 8, 12, col.min(), col.max())
    np.testing.assert_allclose(qa.codebook[j], rc, atol=1e-14)
    np.testing.assert_array_equal(qa.codes[:, j], ra)
  jitted = jax.jit(lambda x: quant.quantize(x, 3, method="kmeans", granularity="channel",
                                            iters=12))(w)
  np.testing.assert_array_equal(jitted.packed, qa.packed)
  np.testing.assert_array_equal(jitted.codebook, qa.codebook)
  again = quant.quantize(w, 3, method="kmeans", granularity="channel", iters=12)
  np.testing.assert_array_equal(again.codebook, qa.codebook)
  # weight sharing: at most 2 ** bits distinct values per channel
  assert all(len(np.unique(qa.dequantize()[:, j])) <= 8 for j in range(3))


def test_nf4_levels_equal_the_papers_values():
  levels = quant.nf4_levels()
  assert levels.shape == (16,) and levels.dtype == np.float64
  err = np.abs(levels - np.array(NF4_PAPER)).max()
  # measured 1.92e-7: the published values were computed in float32 (and the offset
  # rounded to 0.9677083, which alone gives 1.08e-7); float32 spacing near 0.7 is 6e-8.
  assert err < 2.5e-7, err
  assert levels[7] == 0.0 and levels[0] == -1.0 and levels[-1] == 1.0


def test_nf4_blockwise_absmax_matches_numpy(x64):
  w = jax.random.normal(jax.random.key(3), (4, 128), jnp.float64)
  qa = quant.quantize(w, method="nf4", granularity="group", group_size=64)
  assert qa.bits == 4 and qa.scale.shape == (4, 2)
  blocks = np.asarray(w).reshape(-1, 64)          # QLoRA: contiguous blocks of 64
  s = np.abs(blocks).max(1, keepdims=True)
  lv = np.array(NF4_PAPER)
  idx = np.argmin(np.abs((blocks / s)[..., None] - lv), axis=-1)
  np.testing.assert_array_equal(np.asarray(qa.codes).reshape(-1, 64), idx)
  np.testing.assert_allclose(np.asarray(qa.dequantize()).reshape(-1, 64),
                             quant.nf4_levels()[idx] * s, rtol=1e-15)
  again = quant.quantize(qa.dequantize(), method="nf4", granularity="group", group_size=64)
  np.testing.assert_array_equal(again.codes, qa.codes)
  assert qa.nbytes == 4 * 128 // 2 + 8 * 8       # packed nibbles + 8 float64 scales


def test_nonlinear_bad_input():
  x = jnp.ones((4, 4))
  with pytest.raises(ValueError, match="quantize: bits=8, but method='nf4'"):
    quant.quantize(x, 8, method="nf4")
  with pytest.raises(ValueError, match="quantize: scheme='asymmetric' applies to"):
    quant.quantize(x, 4, method="kmeans", scheme="asymmetric")
  with pytest.raises(ValueError, match="quantize: iters=-1 must be an integer >= 0"):
    quant.quantize(x, 4, method="kmeans", iters=-1)
  with pytest.raises(ValueError, match="quantize: iters=5 applies to method='kmeans' only"):
    quant.quantize(x, 4, iters=5)
  with pytest.raises(ValueError, match="quantize: bits=9 is outside"):
    quant.quantize(x, 9, method="log2")
  with pytest.raises(ValueError, match="quantize: x contains NaN"):
    quant.quantize(x.at[0, 0].set(jnp.nan), 4, method="kmeans")
