"""8-bit Adam: the dynamic code book, block-wise rounding bounds, state size, behaviour,
and a step-by-step NumPy reference (codes bit-equal) at the end of the file."""

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


@pytest.mark.parametrize("block_size", [0, 3, -2, 1000])
def test_block_size_must_be_a_power_of_two(block_size):
  with pytest.raises(ValueError, match="block_size"):
    jopt.adam_8bit(1e-3, block_size=block_size)


@pytest.mark.parametrize("block_size", [2.5, 256.0, True, "256"])
def test_block_size_must_be_an_int(block_size):
  with pytest.raises(TypeError, match="block_size"):
    jopt.adam_8bit(1e-3, block_size=block_size)


def test_integer_params_rejected():
  with pytest.raises(TypeError, match=r"params.* must be floating point"):
    jopt.adam_8bit(1e-3).init({"w": jnp.zeros((8192,), jnp.int32)})


# ----------------------------------------------------------- NumPy reference, step by step
#
# An independent transcription of Dettmers et al., *8-bit Optimizers via Block-wise
# Quantization* (ICLR 2022), section 2: each step dequantizes the two moments
# block by block, takes the Adam step in the compute dtype (float64 here), and
# quantizes the new moments to the nearest code of a dynamic code book scaled
# by the block's absolute maximum. The first moment uses the signed book, the
# second (never negative) the unsigned one, which spends the sign bit on one
# more fraction bit. As the implementation does (and as the authors' kernels do):
#
# * the update is computed from the new moments *before* they are rounded;
# * a code is the index (uint8) into the sorted book; the scale is the float32
#   absolute maximum of its block of ``block_size`` elements of the flattened
#   parameter, the last block zero-padded; an all-zero block has scale 0;
# * "nearest" is decided on float32 values (the stored precision):
#   ``|x / absmax - code|`` in float32, ties to the lower code;
# * parameters with fewer than ``min_8bit_size`` elements keep float32 moments;
# * the Adam step is jopt.adam's (``eps`` outside the square root of the
#   bias-corrected v, ``eps_root`` inside, optional Nesterov form, AdamW decay
#   ``lambda * p`` added to the update before the learning rate). The paper's
#   kernels differ in details listed in jopt.adam_8bit's docstring (sign
#   nudging of first-moment codes, multiplicative decoupled decay).


def _reference_codebook(signed):
  """The dynamic tree code book, decoded bit pattern by bit pattern (paper, fig. 2).

  A byte is ``[sign] 0...0 1 f...f``: after the sign bit (signed book only), a
  run of E zero bits sets the magnitude 10^-E, a 1 bit ends the run, and the F
  bits left, read as the integer f, pick the midpoint of bin f among 2^F equal
  bins of [0.1, 1]. The two patterns that carry no indicator bit (all zeros,
  and the signed book's "-0" / the unsigned book's 0000_0001, which would need
  a 10^-7 decade) hold 0 and 1.0, so a positive block maximum is exact.
  """
  payload = 7 if signed else 8
  values = []
  for b in range(256):
    sign = -1.0 if (signed and b >> 7) else 1.0
    r = b & 0x7F if signed else b
    nbits = r.bit_length()
    if r == 0:
      values.append(1.0 if sign < 0 else 0.0)
      continue
    if not signed and r == 1:
      values.append(1.0)
      continue
    e = payload - nbits            # leading zeros: the decade
    f_bits = nbits - 1             # bits after the indicator bit
    f = r - (1 << f_bits)
    values.append(sign * 10.0**-e * (0.1 + 0.9 * (f + 0.5) / 2**f_bits))
  book = np.sort(np.asarray(values, np.float64).astype(np.float32))
  assert book.size == 256 and np.unique(book).size == 256
  return book


_BOOK = {True: _reference_codebook(True), False: _reference_codebook(False)}


def _np_quantize(x, block, signed):
  """(uint8 codes shaped like x, float32 absmax per block): nearest code, ties low."""
  flat = np.asarray(x).astype(np.float32).ravel()
  nb = max(1, -(-flat.size // block))
  blocks = np.zeros(nb * block, np.float32)
  blocks[:flat.size] = flat
  blocks = blocks.reshape(nb, block)
  absmax = np.max(np.abs(blocks), axis=1)
  divisor = np.where(absmax > 0, absmax, np.float32(1))
  v = blocks / divisor[:, None]                                    # float32
  dist = np.abs(v[:, :, None] - _BOOK[signed][None, None, :])      # float32
  codes = np.argmin(dist, axis=-1).astype(np.uint8)                # first = lower code
  return codes.ravel()[:flat.size].reshape(np.shape(x)), absmax


def _np_dequantize(codes, absmax, block, signed):
  flat = codes.ravel().astype(np.int64)
  scale = np.repeat(absmax, block)[:flat.size]
  return (_BOOK[signed][flat] * scale).astype(np.float64).reshape(codes.shape)  # float32 product


def _np_adam(g, p, mu, nu, t, hp, decay):
  """jopt.adam's step in float64 (see the comment above)."""
  b1, b2 = hp["b1"], hp["b2"]
  mu = (1 - b1) * g + b1 * mu
  nu = (1 - b2) * (g * g) + b2 * nu
  bc1, bc2 = 1 - b1**t, 1 - b2**t
  if hp["nesterov"]:
    m_hat = b1 * (mu / (1 - b1**(t + 1))) + (1 - b1) * (g / bc1)
  else:
    m_hat = mu / bc1
  u = m_hat / (np.sqrt(nu / bc2 + hp["eps_root"]) + hp["eps"])
  if decay:
    u = u + hp["weight_decay"] * p
  return -hp["learning_rate"] * u, mu, nu


class _Reference8bit:
  """NumPy 8-bit Adam(W) over a dict of float64 parameters."""

  def __init__(self, params, hp, block, min_size, decay_mask):
    self.hp, self.block, self.decay = hp, block, decay_mask
    self.t = 0
    self.state = {}
    for k, p in params.items():
      if p.size >= min_size:
        z = np.zeros(p.shape, np.uint8)
        s = np.zeros(max(1, -(-p.size // block)), np.float32)
        self.state[k] = ("8bit", z, s, z.copy(), s.copy())
      else:
        self.state[k] = ("float32", np.zeros(p.shape, np.float32), np.zeros(p.shape, np.float32))

  def update(self, grads, params):
    self.t += 1
    out = {}
    for k, g in grads.items():
      st, p = self.state[k], params[k]
      if st[0] == "8bit":
        _, mc, ms, nc, ns = st
        mu = _np_dequantize(mc, ms, self.block, True)
        nu = _np_dequantize(nc, ns, self.block, False)
        out[k], mu, nu = _np_adam(g, p, mu, nu, float(self.t), self.hp, self.decay[k])
        self.state[k] = ("8bit", *_np_quantize(mu, self.block, True),
                         *_np_quantize(nu, self.block, False))
      else:
        mu, nu = st[1].astype(np.float64), st[2].astype(np.float64)
        out[k], mu, nu = _np_adam(g, p, mu, nu, float(self.t), self.hp, self.decay[k])
        self.state[k] = ("float32", mu.astype(np.float32), nu.astype(np.float32))
    return out


def test_reference_codebooks_equal_the_implementation_bit_for_bit():
  for signed in (True, False):
    np.testing.assert_array_equal(dynamic_codebook(signed).view(np.uint32),
                                  _BOOK[signed].view(np.uint32))
  # the second moment's book is the finer one on [0, 1]: twice the codes per decade
  top = lambda b: np.sum((b > 0.1) & (b < 1.0))  # noqa: E731  (the 10^0 decade)
  assert top(_BOOK[False]) == 128 and top(_BOOK[True]) == 64


_SHAPES_SMALL = {"w": (7, 23), "v": (100,), "edge": (50,), "below": (49,), "s": ()}
_REFERENCE_CASES = [
    # (name, constructor, kwargs, shapes, steps); min_8bit_size=50 puts "edge"
    # (exactly 50) on the 8-bit path and "below" (49) and "s" on float32
    ("adam", jopt.adam_8bit, dict(learning_rate=0.01, block_size=64, min_8bit_size=50),
     _SHAPES_SMALL, 12),
    ("adam-nesterov", jopt.adam_8bit,
     dict(learning_rate=0.003, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-10, nesterov=True,
          block_size=32, min_8bit_size=50), _SHAPES_SMALL, 12),
    ("adamw-mask", jopt.adamw_8bit,
     dict(learning_rate=0.01, weight_decay=0.1, block_size=16, min_8bit_size=50,
          mask={"w": True, "v": False, "edge": True, "below": True, "s": False}),
     _SHAPES_SMALL, 12),
    # the paper's defaults: blocks of 2048, float32 moments below 4096 elements
    ("defaults", jopt.adam_8bit, dict(learning_rate=1e-3),
     {"big": (5000,), "mat": (64, 65), "below": (4095,)}, 6),
]


def _gradient(rng, shape, step):
  """Signed values over ~8 decades, an all-zero block at step 1, all zero at step 3."""
  g = rng.standard_normal(shape) * np.exp(rng.uniform(-9, 9, shape))
  g = np.asarray(g, np.float64)
  if step == 1 and g.size > 16:
    g.reshape(-1)[:16] = 0.0
  if step == 3:
    g = np.zeros(shape)
  return g


@pytest.mark.parametrize("name,fn,kwargs,shapes,steps", _REFERENCE_CASES,
                         ids=[c[0] for c in _REFERENCE_CASES])
def test_matches_numpy_blockwise_reference_step_by_step(name, fn, kwargs, shapes, steps, x64):
  """Codes bit-equal, scales and updates to rounding, every step, float64 params."""
  del name, x64
  rng = np.random.default_rng(7)
  params = {k: np.asarray(rng.standard_normal(s), np.float64) for k, s in shapes.items()}
  hp = dict(b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, nesterov=False, weight_decay=0.0)
  hp.update({k: v for k, v in kwargs.items() if k in hp or k == "learning_rate"})
  block, min_size = kwargs.get("block_size", 2048), kwargs.get("min_8bit_size", 4096)
  mask = kwargs.get("mask")
  decay = {k: (fn is jopt.adamw_8bit) and (mask is None or mask[k]) for k in shapes}
  if fn is jopt.adamw_8bit:
    hp.setdefault("weight_decay", 1e-4)
  ref = _Reference8bit(params, hp, block, min_size, decay)

  tx = fn(**kwargs)
  p = {k: jnp.asarray(v) for k, v in params.items()}
  state = tx.init(p)
  update = jax.jit(tx.update)
  worst_u = worst_s = 0.0
  for step in range(steps):
    g = {k: _gradient(rng, s, step) for k, s in shapes.items()}
    u_ref = ref.update(g, params)
    u, state = update({k: jnp.asarray(v) for k, v in g.items()}, state, p)
    for k in shapes:
      st = ref.state[k]
      mu, nu = np.asarray(state.mu[k]), np.asarray(state.nu[k])
      mu_s, nu_s = np.asarray(state.mu_scale[k]), np.asarray(state.nu_scale[k])
      if st[0] == "8bit":
        assert mu.dtype == nu.dtype == np.uint8 and mu.shape == nu.shape == shapes[k]
        assert mu_s.dtype == nu_s.dtype == np.float32 and mu_s.shape == st[2].shape
        np.testing.assert_array_equal(mu, st[1], err_msg=f"{k} mu codes, step {step}")
        np.testing.assert_array_equal(nu, st[3], err_msg=f"{k} nu codes, step {step}")
        for mine, theirs in ((mu_s, st[2]), (nu_s, st[4])):
          np.testing.assert_allclose(mine, theirs, rtol=2e-7, atol=0,
                                     err_msg=f"{k} scales, step {step}")
          worst_s = max(worst_s, float(np.max(np.abs(mine - theirs) / np.maximum(theirs, 1e-300))))
      else:
        assert mu.dtype == nu.dtype == np.float32 and mu_s.shape == nu_s.shape == (1,)
        np.testing.assert_allclose(mu, st[1], rtol=2e-7, atol=0, err_msg=f"{k} mu, step {step}")
        np.testing.assert_allclose(nu, st[2], rtol=2e-7, atol=0, err_msg=f"{k} nu, step {step}")
      got = np.asarray(u[k])
      assert got.dtype == np.float64
      # XLA may fuse (1 - b1) g + b1 m differently from NumPy: where the two
      # terms cancel, an element's relative error grows (measured up to 3e-13)
      scale = float(np.max(np.abs(u_ref[k])))
      np.testing.assert_allclose(got, u_ref[k], rtol=1e-12, atol=1e-13 * scale,
                                 err_msg=f"{k} update, step {step}")
      worst_u = max(worst_u, float(np.max(np.abs(got - u_ref[k]))) / max(scale, 1e-300))
      params[k] = params[k] + u_ref[k]
    p = {k: jnp.asarray(v) for k, v in params.items()}
  print(f"worst norm-relative error of the updates {worst_u:.1e}, of the scales {worst_s:.1e}")


@pytest.mark.parametrize("signed", [True, False])
def test_quantize_matches_reference_at_exact_ties_and_at_random(signed):
  """Every float32-exact midpoint between adjacent codes rounds down, as the reference."""
  book = _BOOK[signed].astype(np.float64)
  mid = (book[:-1] + book[1:]) / 2
  m32 = mid.astype(np.float32)
  mid = mid[(m32 == mid) & ((m32 - _BOOK[signed][:-1]) == (_BOOK[signed][1:] - m32))]
  assert mid.size > 50  # plenty of exact ties in both books
  x = np.concatenate([[1.0], mid]).astype(np.float32)  # absmax 1: x / absmax == x
  codes, scale = quantize(jnp.asarray(x), 4096, signed)
  want, want_scale = _np_quantize(x, 4096, signed)
  np.testing.assert_array_equal(np.asarray(codes), want)
  assert np.all(want[1:] == np.searchsorted(_BOOK[signed], mid.astype(np.float32)) - 1)
  np.testing.assert_array_equal(np.asarray(scale), want_scale)
  # random blocks (one all zero, one negative-only), several block sizes, odd length
  rng = np.random.default_rng(3)
  y = rng.standard_normal(1000) * np.exp(rng.uniform(-12, 3, 1000))
  y[:64] = 0.0
  y[64:128] = -np.abs(y[64:128])
  y = (y if signed else np.abs(y)).astype(np.float32)
  for block in (1, 16, 64, 2048):
    codes, scale = quantize(jnp.asarray(y), block, signed)
    want, want_scale = _np_quantize(y, block, signed)
    np.testing.assert_array_equal(np.asarray(codes), want)
    np.testing.assert_array_equal(np.asarray(scale), want_scale)
    np.testing.assert_array_equal(
        np.asarray(dequantize(codes, scale, block, signed)).astype(np.float64),
        _np_dequantize(want, want_scale, block, signed))


def test_complex_params_are_a_type_error_naming_the_fix():
  with pytest.raises(TypeError, match=r"adam_8bit: params must be real.*jopt.adam"):
    jopt.adam_8bit(1e-3).init({"w": jnp.ones((64, 64), jnp.complex64)})
