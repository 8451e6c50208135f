"""proximal_l1: ISTA step by step against NumPy, exact support recovery, exact zeros.

The sparse problem: 400 samples, 200 features of which 20 are non-zero,
``f(w) = ||X w - y||^2 / (2 n)`` with a little noise. ``sgd(lr)`` followed by
``proximal_l1(lam, learning_rate=lr)`` is ISTA with a constant step; it must
match a NumPy transcription of ISTA iterate by iterate and find the true
support exactly, while the same L1 weight as a loss penalty (subgradient SGD)
leaves no exact zero at all.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from jopt.regularizers import l1_penalty, proximal_l1

N, D, K = 400, 200, 20
LAM = 0.05
STEPS = 600


def _problem():
  r = np.random.default_rng(0)
  x = r.normal(size=(N, D))
  w_true = np.zeros(D)
  support = np.sort(r.choice(D, K, replace=False))
  w_true[support] = r.choice([-1.0, 1.0], K) * r.uniform(0.5, 2.0, K)
  y = x @ w_true + 0.01 * r.normal(size=N)
  lr = 0.9 / np.linalg.eigvalsh(x.T @ x / N).max()
  return x, y, w_true, support, lr


X, Y, W_TRUE, SUPPORT, LR = _problem()


def _loss(p):
  r = jnp.asarray(X) @ p["w"][:, 0] - jnp.asarray(Y)
  return 0.5 * jnp.mean(r * r)


def _run(tx, loss, steps=STEPS):
  """All iterates of ``tx`` on ``loss`` from w = 0, one jitted scan."""
  p0 = {"w": jnp.zeros((D, 1), jnp.float64)}

  def body(carry, _):
    p, s = carry
    u, s = tx.update(jax.grad(loss)(p), s, p)
    p = optax.apply_updates(p, u)
    return (p, s), p["w"][:, 0]

  _, ws = jax.jit(lambda p: jax.lax.scan(body, (p, tx.init(p)), None, length=steps))(p0)
  return np.asarray(ws)


def _numpy_ista(steps=STEPS):
  """Beck & Teboulle's ISTA with constant step 1/L (here lr): w <- S_{lam lr}(w - lr grad)."""
  w = np.zeros(D)
  out = []
  tau = LAM * LR
  for _ in range(steps):
    z = w - LR * (X.T @ (X @ w - Y) / N)
    w = np.sign(z) * np.maximum(np.abs(z) - tau, 0.0)
    out.append(w)
  return np.asarray(out)


def test_ista_parity_and_exact_support(x64):
  ws = _run(optax.chain(jopt.sgd(LR), proximal_l1(LAM, learning_rate=LR)), _loss)
  ref = _numpy_ista()
  err = np.max(np.abs(ws - ref))
  assert err <= 1e-14, err  # measured 1.0e-15 (5e-16 relative) over 600 iterates
  # the zero patterns agree at every iterate, and the support found is the true one
  np.testing.assert_array_equal(ws == 0.0, ref == 0.0)
  assert set(np.flatnonzero(ws[-1])) == set(SUPPORT.tolist())
  assert np.max(np.abs(ws[-1] - W_TRUE)) < 0.1  # lasso shrinkage bias only (measured 0.066)


def test_l1_penalty_with_sgd_leaves_no_exact_zeros(x64):
  penalized = lambda p: _loss(p) + l1_penalty(p, strength=LAM)  # noqa: E731
  ws = _run(jopt.sgd(LR), penalized)
  w = ws[-1]
  assert np.count_nonzero(w == 0.0) == 0
  off = np.setdiff1d(np.arange(D), SUPPORT)
  # the off-support weights do become small (they chatter around 0), just never 0
  assert np.mean(np.abs(w[off]) < LAM * LR) > 0.5


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_thresholded_weights_are_exact_zeros(dtype):
  r = np.random.default_rng(1)
  p = {"w": jnp.asarray(r.normal(size=(8, 16)), dtype)}
  u = {"w": jnp.asarray(r.normal(size=(8, 16)), dtype)}
  tau = 0.6
  tx = proximal_l1(tau)  # learning_rate=1: the threshold is the strength
  out, _ = tx.update(u, tx.init(p), p)
  assert out["w"].dtype == dtype
  new = optax.apply_updates(p, out)["w"]
  z = p["w"].astype(jnp.float32) + u["w"].astype(jnp.float32)
  small = np.asarray(jnp.abs(z) <= tau)
  assert 20 < small.sum() < 110  # both cases occur
  got = np.asarray(new.astype(jnp.float32))
  assert np.all(got[small] == 0.0) and not np.any(np.signbit(got[small]))
  np.testing.assert_array_equal(np.asarray(out["w"])[small], -np.asarray(p["w"])[small])
  want = np.sign(np.asarray(z)) * np.maximum(np.abs(np.asarray(z)) - tau, 0.0)
  ulp = 2.0 ** -7 if dtype == jnp.bfloat16 else 2.0 ** -23
  np.testing.assert_allclose(got[~small], want[~small], rtol=2 * ulp, atol=4 * ulp)


def test_default_mask_leaves_biases_dense_and_explicit_masks():
  p = {"k": jnp.full((3, 2), 0.1, jnp.float32), "b": jnp.full((2,), 0.1, jnp.float32)}
  u = jax.tree.map(jnp.zeros_like, p)
  tx = proximal_l1(1.0)
  out, _ = tx.update(u, tx.init(p), p)
  assert float(jnp.max(jnp.abs(optax.apply_updates(p, out)["k"]))) == 0.0
  np.testing.assert_array_equal(out["b"], u["b"])  # a 1-D leaf: passed through
  for mask, zeroed in [(True, {"k", "b"}), (False, set()), ({"k": False, "b": True}, {"b"}),
                       (lambda t: {"k": False, "b": True}, {"b"})]:
    tx = proximal_l1(1.0, mask=mask)
    new = optax.apply_updates(p, tx.update(u, tx.init(p), p)[0])
    for k in p:
      assert bool(jnp.all(new[k] == 0.0)) == (k in zeroed), (mask, k)


def test_schedules_drive_both_factors(x64):
  strength = lambda t: 0.1 * (1.0 + jnp.asarray(t, jnp.float64))  # noqa: E731
  lr = lambda t: 0.5 / (1.0 + jnp.asarray(t, jnp.float64))  # noqa: E731
  tx = proximal_l1(strength, learning_rate=lr, mask=True)
  r = np.random.default_rng(2)
  p = {"w": jnp.asarray(r.normal(size=(20,)), jnp.float64)}
  s = tx.init(p)
  step = jax.jit(tx.update)
  for t in range(4):
    u = {"w": jnp.asarray(r.normal(size=(20,)) * 0.1, jnp.float64)}
    out, s = step(u, s, p)
    tau = 0.1 * (1 + t) * 0.5 / (1 + t)
    z = np.asarray(p["w"]) + np.asarray(u["w"])
    want = np.sign(z) * np.maximum(np.abs(z) - tau, 0.0)
    p = optax.apply_updates(p, out)
    np.testing.assert_allclose(np.asarray(p["w"]), want, rtol=0, atol=1e-15)
    assert float(jopt.hyperparams(s)["l1_strength"]) == pytest.approx(0.1 * (1 + t))
  with pytest.raises(ValueError, match="driven by the schedule"):
    jopt.set_hyperparams(s, l1_strength=0.2)


def test_set_hyperparams_changes_tau_without_retrace():
  traces = []
  tx = optax.chain(jopt.sgd(0.1), proximal_l1(0.0, learning_rate=0.1, mask=True))

  @jax.jit
  def step(p, s):
    traces.append(None)
    u, s = tx.update(p, s, p)  # the gradient of ||p||^2 / 2 is p
    return optax.apply_updates(p, u), s

  p = {"w": jnp.asarray([0.5, -0.05, 0.02, -2.0], jnp.float32)}
  s = tx.init(p)
  assert set(jopt.hyperparams(s)) == {"learning_rate", "l1_strength", "l1_learning_rate"}
  q, _ = step(p, s)
  np.testing.assert_allclose(q["w"], 0.9 * p["w"], rtol=1e-6)  # strength 0: plain SGD
  s = jopt.set_hyperparams(s, l1_strength=1.0)  # tau = 0.1
  q, _ = step(p, s)
  z = 0.9 * np.asarray(p["w"])
  np.testing.assert_allclose(q["w"], np.sign(z) * np.maximum(np.abs(z) - 0.1, 0), atol=1e-7)
  assert np.count_nonzero(np.asarray(q["w"]) == 0.0) == 2
  assert len(traces) == 1


def test_complex_parameters_keep_their_phase(x64):
  r = np.random.default_rng(3)
  z0 = r.normal(size=(4, 3)) + 1j * r.normal(size=(4, 3))
  p = {"z": jnp.asarray(z0, jnp.complex128)}
  u = {"z": jnp.zeros((4, 3), jnp.complex128)}
  tx = proximal_l1(1.0)
  new = np.asarray(optax.apply_updates(p, tx.update(u, tx.init(p), p)[0])["z"])
  mag = np.abs(z0)
  want = np.where(mag > 1.0, z0 * (mag - 1.0) / np.where(mag > 1, mag, 1), 0)
  assert np.max(np.abs(new - want)) <= 1e-15
  assert np.any(new == 0) and np.any(new != 0)


def test_bad_input():
  p = {"w": jnp.ones((2, 2), jnp.float32)}
  with pytest.raises(ValueError, match="proximal_l1: strength=-0.1"):
    proximal_l1(-0.1)
  with pytest.raises(ValueError, match="proximal_l1: learning_rate=-1.0"):
    proximal_l1(0.1, learning_rate=-1.0)
  with pytest.raises(ValueError, match="proximal_l1: the schedule given as strength=-1.0"):
    proximal_l1(lambda t: jnp.asarray(-1.0, jnp.float32))
  tx = proximal_l1(0.1)
  s = tx.init(p)
  with pytest.raises(ValueError, match=r"proximal_l1: .*needs the current parameters.*params\)"):
    tx.update(p, s)
  with pytest.raises(ValueError, match="l1_strength=-1.0"):
    jopt.set_hyperparams(s, l1_strength=-1.0)
  with pytest.raises(ValueError, match=r"(?s)proximal_l1: mask.*Expected.*structure"):
    proximal_l1(0.1, mask={"v": True}).update(p, s, p)
