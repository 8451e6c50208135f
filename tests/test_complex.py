"""Complex parameters, as optax treats them: parity with optax in complex128.

A real loss of complex parameters is minimised with the conjugated gradient
(``jax.grad`` returns :math:`\\partial L/\\partial \\bar z` conjugated; optax's own
tests pass ``g.conj()`` to ``update``, and so do these). Second moments are of
:math:`|g|^2` and real-valued; updates keep the phase of the first moment.

Every optimizer that optax runs on complex parameters is compared step by step
with optax over 60 jitted steps (jopt under the suite's strict promotion, optax
under standard promotion). ``adadelta`` and ``lion``, which optax does not run on
complex parameters, are checked to descend on the same problem instead.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from tests import problems

STEPS = 60


def _init(dtype):
  rng = np.random.default_rng(3)

  def c(*shape, scale=0.5):
    return jnp.asarray(scale * (rng.normal(size=shape) + 1j * rng.normal(size=shape)), dtype)

  return {"w": c(4, 3), "b": c(3, scale=0.1), "s": c(scale=1.0) + 1.0}


def _loss(p):
  """Real, non-quadratic: a complex linear model with |r|^2 and log-cosh-like terms."""
  dt = p["w"].dtype
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(8, 4)) + 1j * rng.normal(size=(8, 4)), dt)
  y = jnp.asarray(rng.normal(size=(8, 3)) + 1j * rng.normal(size=(8, 3)), dt)
  r = p["s"] * (x @ p["w"]) + p["b"] - y
  r2 = (r.conj() * r).real
  w2 = (p["w"].conj() * p["w"]).real
  return jnp.mean(jnp.sqrt(1.0 + r2)) + 0.01 * jnp.sum(w2 * w2)


def _grad(p):
  return jax.tree.map(jnp.conj, jax.grad(_loss)(p))


def _stepper(tx):
  def step(p, s):
    u, s = tx.update(_grad(p), s, p)
    return optax.apply_updates(p, u), s
  return jax.jit(step)


# (name, kwargs, measured max relative error over the trajectory: max over
# leaves of max|jopt - optax| / max|optax|). The limit is 10x the measured error,
# at least 1e-15 (0.0: the same bits as optax).
CASES = [
    ("sgd", dict(learning_rate=0.05), 0.0),
    ("sgd", dict(learning_rate=0.02, momentum=0.9), 0.0),
    ("sgd", dict(learning_rate=0.02, momentum=0.8, nesterov=True), 0.0),
    ("adagrad", dict(learning_rate=0.1), 0.0),
    ("rmsprop", dict(learning_rate=3e-3, eps=1e-4), 3.583e-16),
    ("rmsprop", dict(learning_rate=1e-3, momentum=0.9, nesterov=True, eps=1e-4), 7.951e-16),
    ("rmsprop", dict(learning_rate=1e-3, centered=True, eps=1e-4, bias_correction=True), 4.242e-14),
    ("rmsprop", dict(learning_rate=1e-3, centered=True, momentum=0.9, eps=1e-4,
                     eps_in_sqrt=False), 1.043e-15),
    ("adam", dict(learning_rate=0.01), 2.908e-16),
    ("adam", dict(learning_rate=0.02, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-9,
                  nesterov=True), 2.409e-16),
    ("adamw", dict(learning_rate=0.01, weight_decay=0.1), 5.665e-16),
    ("nadam", dict(learning_rate=0.01, b2=0.99), 2.336e-16),
    ("nadamw", dict(learning_rate=0.01, weight_decay=0.1), 3.644e-16),
    ("amsgrad", dict(learning_rate=0.01), 3.095e-16),
    ("amsgrad", dict(learning_rate=0.01, bias_correction_mu=False, bias_correction_nu=False), 3.019e-16),
    ("adamax", dict(learning_rate=0.01), 2.552e-16),
    ("radam", dict(learning_rate=0.01), 1.799e-16),
    ("radam", dict(learning_rate=0.01, b1=0.8, b2=0.95, threshold=6.0, nesterov=True), 3.226e-16),
    ("lamb", dict(learning_rate=0.01, weight_decay=0.1), 1.798e-16),
    ("lars", dict(learning_rate=0.5, weight_decay=0.01, trust_coefficient=0.01, eps=1e-6,
                  momentum=0.8, nesterov=True), 0.0),
    ("adafactor", dict(learning_rate=0.01, min_dim_size_to_factor=3), 1.569e-16),
    ("adafactor", dict(learning_rate=0.01, min_dim_size_to_factor=3, momentum=0.9,
                       dtype_momentum=None, clipping_threshold=0.5), 1.373e-16),
    # lr=0.01: at 0.05 this case is chaotic (optax against itself, perturbed by
    # 1e-15, drifts to 3e-9 within 60 steps).
    ("adafactor", dict(learning_rate=0.01, factored=False, multiply_by_parameter_scale=False),
     2.615e-16),
]
IDS = [f"{n}-" + ",".join(f"{k}={v}" for k, v in kw.items()) for n, kw, _ in CASES]


@pytest.mark.parametrize("name,kwargs,measured", CASES, ids=IDS)
def test_matches_optax_complex128(name, kwargs, measured, x64, record_property):
  del x64
  p0 = _init(jnp.complex128)
  with jax.numpy_dtype_promotion("standard"):
    ref = getattr(optax, name)(**kwargs)
  worst, (p, _), _ = problems.run_side_by_side(getattr(jopt, name)(**kwargs), ref, p0,
                                               loss=_loss, steps=STEPS, grad=_grad)
  record_property("max_rel_err", worst)
  assert all(x.dtype == jnp.complex128 for x in jax.tree.leaves(p))
  assert float(_loss(p)) < float(_loss(p0))  # it moved, downhill
  assert worst <= max(10 * measured, 1e-15), worst


@pytest.mark.parametrize("name,kwargs", [("adadelta", dict(learning_rate=1.0)),
                                         ("adadelta", dict(learning_rate=1.0, weight_decay=0.01)),
                                         ("lion", dict(learning_rate=0.003, weight_decay=0.0))],
                         ids=["adadelta", "adadelta-decay", "lion"])
def test_complex_beyond_optax_descends(name, kwargs, x64):
  """optax does not run these on complex parameters; jopt's take |g|^2 (adadelta)
  and the complex sign c/|c| (lion), and descend."""
  del x64
  p0 = _init(jnp.complex128)
  tx = getattr(jopt, name)(**kwargs)
  p, s, step = p0, tx.init(p0), _stepper(tx)
  for _ in range(STEPS):
    p, s = step(p, s)
  assert float(_loss(p)) < 0.95 * float(_loss(p0))
  if name == "lion":  # every coordinate moves by the learning rate, in modulus
    u, _ = tx.update(_grad(p), s, p)
    for leaf in jax.tree.leaves(u):
      np.testing.assert_allclose(np.abs(np.asarray(leaf)), 0.003, rtol=1e-12)


@pytest.mark.parametrize("tx", [
    jopt.adam(0.01), jopt.amsgrad(0.01), jopt.rmsprop(0.01, centered=True, momentum=0.9),
    jopt.adagrad(0.1), jopt.adamax(0.01), jopt.radam(0.01), jopt.lamb(0.01),
    jopt.adafactor(0.01, min_dim_size_to_factor=3), jopt.adadelta(1.0),
], ids=["adam", "amsgrad", "rmsprop", "adagrad", "adamax", "radam", "lamb", "adafactor",
        "adadelta"])
def test_second_moments_are_real_and_dtypes_stable_complex64(tx):
  """Under strict promotion, complex64: every slot keeps its dtype (the
  parameter's), second-moment slots hold real values, updates stay complex64."""
  p = _init(jnp.complex64)
  s0 = tx.init(p)
  u, s = jax.jit(tx.update)(_grad(p), s0, p)
  u, s = jax.jit(tx.update)(_grad(p), s, p)
  assert all(x.dtype == jnp.complex64 for x in jax.tree.leaves(u))
  assert [(x.shape, x.dtype) for x in jax.tree.leaves(s)] == [
      (x.shape, x.dtype) for x in jax.tree.leaves(s0)]
  for field in ("nu", "nu_max", "sum_of_squares", "v_row", "v_col", "v", "e_g", "e_x"):
    for leaf in jax.tree.leaves(getattr(s, field, ())):
      leaf = np.asarray(leaf)
      assert np.all(leaf.imag == 0) and np.all(leaf.real >= 0), field


def test_adafactor_momentum_of_complex_params_keeps_the_imaginary_part():
  """dtype_momentum's float32 default means complex64 for complex parameters:
  a real buffer would drop the imaginary part of every step."""
  p = _init(jnp.complex64)
  tx = jopt.adafactor(0.01, min_dim_size_to_factor=3, momentum=0.9)
  s = tx.init(p)
  assert all(x.dtype == jnp.complex64 for x in jax.tree.leaves(s.ema))
  u, s = tx.update(_grad(p), s, p)
  assert all(float(jnp.max(jnp.abs(x.imag))) > 0 for x in jax.tree.leaves(s.ema))
  real = problems.quadratic_init(jnp.bfloat16)
  s = tx.init(real)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(s.ema))


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name,kwargs", [
    ("adam", dict(learning_rate=0.1)), ("sgd", dict(learning_rate=0.1, momentum=0.9)),
    ("adagrad", dict(learning_rate=0.1)), ("rmsprop", dict(learning_rate=0.1, momentum=0.9)),
    ("lamb", dict(learning_rate=0.1)), ("adafactor", dict(learning_rate=0.1)),
], ids=lambda x: x if isinstance(x, str) else None)
def test_inject_hyperparams_with_complex_params(name, kwargs, jit):
  """optax.inject_hyperparams casts every hyperparameter to the parameters'
  dtype, complex here: a complex number with a zero imaginary part is accepted
  as the real number it is (concrete outside jit, traced inside)."""
  p = _init(jnp.complex64)
  static = ("min_dim_size_to_factor",) if name == "adafactor" else ()
  wrap = jax.jit if jit else (lambda f: f)
  out = []
  for fn in (getattr(jopt, name), getattr(optax, name)):
    tx = optax.inject_hyperparams(fn, static_args=static)(**kwargs)
    with jax.numpy_dtype_promotion("standard"):
      s = wrap(tx.init)(p)
      u, s = wrap(tx.update)(_grad(p), s, p)
    assert s.hyperparams["learning_rate"].dtype == jnp.complex64  # optax's doing
    out.append(u)
  assert problems.rel_err(*out) <= 1e-6


def test_a_complex_hyperparameter_must_have_no_imaginary_part():
  assert float(jopt.hyperparams(jopt.adam(jnp.asarray(0.1 + 0j)).init(_init(jnp.complex64)))[
      "learning_rate"]) == pytest.approx(0.1)
  with pytest.raises(TypeError, match="learning_rate"):
    jopt.adam(jnp.asarray(0.1 + 0.1j))
