"""Shared test problems: a quadratic, Rosenbrock, and a non-quadratic parity loss."""

import jax
import jax.numpy as jnp
import numpy as np


def quadratic_init(dtype=jnp.float32):
  return {"w": jnp.asarray(np.linspace(-1.5, 1.0, 12).reshape(3, 4), dtype),
          "b": jnp.asarray(np.linspace(0.5, 2.0, 4), dtype)}


def quadratic_loss(p):
  """0.5 * sum(a * (x - c)^2) with a condition number of 10; minimum 0."""
  total = jnp.zeros((), jnp.float32)
  for k, x in sorted(p.items()):
    x = x.astype(jnp.float32)
    a = jnp.linspace(1.0, 10.0, x.size, dtype=jnp.float32).reshape(x.shape)
    c = jnp.full(x.shape, 0.3, jnp.float32)
    total = total + 0.5 * jnp.sum(a * (x - c) ** 2)
  return total


def rosenbrock_init(dtype=jnp.float32):
  return {"xy": jnp.asarray([-1.2, 1.0], dtype)}


def rosenbrock_loss(p):
  x, y = p["xy"][0], p["xy"][1]
  return (1 - x) ** 2 + 100.0 * (y - x * x) ** 2


def parity_init(dtype):
  """A small two-layer model: a 2-D weight (for matrix optimizers) and vectors."""
  rng = np.random.default_rng(0)
  return {
      "w1": jnp.asarray(rng.normal(size=(6, 5)) * 0.5, dtype),
      "b1": jnp.asarray(rng.normal(size=(5,)) * 0.1, dtype),
      "w2": jnp.asarray(rng.normal(size=(5, 3)) * 0.5, dtype),
      "s": jnp.asarray(rng.normal(size=()) + 1.0, dtype),
  }


def parity_loss(p):
  """Non-quadratic: tanh MLP regression with a log-cosh loss and a quartic term."""
  dt = p["w1"].dtype
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(16, 6)), dt)
  y = jnp.asarray(rng.normal(size=(16, 3)), dt)
  h = jnp.tanh(x @ p["w1"] + p["b1"])
  out = p["s"] * (h @ p["w2"])
  r = out - y
  return jnp.mean(jnp.log(jnp.cosh(r))) + 0.01 * jnp.sum(p["w1"] ** 4)


def rel_err(a, b):
  """Max over leaves of max|a - b| / max|b| (norm-relative, safe near zero entries).

  A non-finite value on either side is an infinite error, never a match.
  """
  def one(x, y):
    # float64 (complex128 for complex arrays: the imaginary part counts too)
    wide = lambda a: np.asarray(a, np.complex128 if np.iscomplexobj(a) else np.float64)
    x, y = wide(x), wide(y)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
      return float("inf")
    return float(np.max(np.abs(x - y)) / max(float(np.max(np.abs(y))), 1e-30))
  return max(jax.tree.leaves(jax.tree.map(one, a, b)))


def run_side_by_side(tx, ref, params, loss=parity_loss, steps=60, grad=None):
  """Run jopt's ``tx`` and an optax ``ref`` from ``params`` for ``steps`` jitted steps.

  ``ref`` runs under standard dtype promotion (optax relies on it). ``grad``
  (default ``jax.grad(loss)``) gives the gradients passed to ``update``. Returns
  the worst :func:`rel_err` over the trajectory and the final ``(params, state)``
  of each.
  """
  import optax  # pylint: disable=import-outside-toplevel
  grad = jax.grad(loss) if grad is None else grad

  def stepper(t):
    def step(p, s):
      u, s = t.update(grad(p), s, p)
      return optax.apply_updates(p, u), s
    return jax.jit(step)

  p = q = params
  s, tx_step = tx.init(p), stepper(tx)
  with jax.numpy_dtype_promotion("standard"):
    r, ref_step = ref.init(q), stepper(ref)
  worst = 0.0
  for _ in range(steps):
    p, s = tx_step(p, s)
    with jax.numpy_dtype_promotion("standard"):
      q, r = ref_step(q, r)
    worst = max(worst, rel_err(p, q))
  return worst, (p, s), (q, r)
