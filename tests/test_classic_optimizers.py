"""SGD, Adagrad, RMSProp, Adadelta, AMSGrad, Adamax, RAdam and add_decayed_weights:
bad input, options without an optax or torch counterpart, and weight decay."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from tests import problems

NAN = float("nan")


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("fn,kwargs,name", [
    (jopt.sgd, dict(learning_rate=-0.1), "learning_rate"),
    (jopt.sgd, dict(learning_rate=NAN), "learning_rate"),
    (jopt.sgd, dict(learning_rate=lambda t: -1.0), "learning_rate"),
    (jopt.sgd, dict(learning_rate=0.1, momentum=1.0), "momentum"),
    (jopt.sgd, dict(learning_rate=0.1, momentum=-0.1), "momentum"),
    (jopt.sgd, dict(learning_rate=0.1, nesterov=True), "nesterov"),
    (jopt.sgd, dict(learning_rate=0.1, weight_decay=-1e-4), "weight_decay"),
    (jopt.sgd, dict(learning_rate=0.1, weight_decay=NAN), "weight_decay"),
    (jopt.adagrad, dict(learning_rate=-0.1), "learning_rate"),
    (jopt.adagrad, dict(learning_rate=0.1, eps=-1e-7), "eps"),
    (jopt.adagrad, dict(learning_rate=0.1, initial_accumulator_value=-0.1),
     "initial_accumulator_value"),
    (jopt.adagrad, dict(learning_rate=0.1, initial_accumulator_value=NAN),
     "initial_accumulator_value"),
    (jopt.adagrad, dict(learning_rate=0.1, lr_decay=-0.1), "lr_decay"),
    (jopt.rmsprop, dict(learning_rate=NAN), "learning_rate"),
    (jopt.rmsprop, dict(learning_rate=0.1, decay=1.0), "decay"),
    (jopt.rmsprop, dict(learning_rate=0.1, eps=-1e-8), "eps"),
    (jopt.rmsprop, dict(learning_rate=0.1, initial_scale=-1.0), "initial_scale"),
    (jopt.rmsprop, dict(learning_rate=0.1, momentum=1.5), "momentum"),
    (jopt.rmsprop, dict(learning_rate=0.1, nesterov=True), "nesterov"),
    (jopt.adadelta, dict(learning_rate=-1.0), "learning_rate"),
    (jopt.adadelta, dict(rho=1.0), "rho"),
    (jopt.adadelta, dict(rho=-0.5), "rho"),
    (jopt.adadelta, dict(eps=-1e-6), "eps"),
    (jopt.adadelta, dict(weight_decay=-0.1), "weight_decay"),
    (jopt.amsgrad, dict(learning_rate=-1e-3), "learning_rate"),
    (jopt.amsgrad, dict(learning_rate=1e-3, b1=1.0), "b1"),
    (jopt.amsgrad, dict(learning_rate=1e-3, b2=-0.1), "b2"),
    (jopt.amsgrad, dict(learning_rate=1e-3, eps_root=NAN), "eps_root"),
    (jopt.adamax, dict(learning_rate=float("inf")), "learning_rate"),
    (jopt.adamax, dict(learning_rate=1e-3, b2=1.5), "b2"),
    (jopt.adamax, dict(learning_rate=1e-3, eps=-1e-8), "eps"),
    (jopt.radam, dict(learning_rate=-1e-3), "learning_rate"),
    (jopt.radam, dict(learning_rate=1e-3, b1=1.0), "b1"),
    (jopt.radam, dict(learning_rate=1e-3, threshold=NAN), "threshold"),
    (jopt.radam, dict(learning_rate=1e-3, convention="keras"), "convention"),
    (jopt.add_decayed_weights, dict(weight_decay=-1e-4), "weight_decay"),
    (jopt.add_decayed_weights, dict(weight_decay=NAN), "weight_decay"),
])
def test_bad_hyperparameter_is_a_value_error_naming_it(fn, kwargs, name):
  with pytest.raises(ValueError, match=name):
    fn(**kwargs)


@pytest.mark.parametrize("fn,kwargs,name", [
    (jopt.sgd, dict(learning_rate="0.1"), "learning_rate"),
    (jopt.sgd, dict(learning_rate=0.1, momentum=0.9, accumulator_dtype=jnp.int32),
     "accumulator_dtype"),
    (jopt.adagrad, dict(learning_rate=0.1, initial_accumulator_value=lambda t: 0.1),
     "initial_accumulator_value"),
    (jopt.adagrad, dict(learning_rate=0.1, nu_dtype=jnp.int8), "nu_dtype"),
    (jopt.rmsprop, dict(learning_rate=0.1, mu_dtype="not a dtype"), "mu_dtype"),
    (jopt.rmsprop, dict(learning_rate=0.1, initial_scale=lambda t: 1.0), "initial_scale"),
    (jopt.adadelta, dict(nu_dtype=jnp.int32), "nu_dtype"),
    (jopt.amsgrad, dict(learning_rate=0.1, mu_dtype=jnp.int32), "mu_dtype"),
    (jopt.adamax, dict(learning_rate=0.1, nu_dtype=bool), "nu_dtype"),
    (jopt.radam, dict(learning_rate=0.1, b2=[0.9]), "b2"),
])
def test_bad_type_is_a_type_error_naming_it(fn, kwargs, name):
  with pytest.raises(TypeError, match=name):
    fn(**kwargs)


def test_set_hyperparams_checks_ranges():
  s = jopt.rmsprop(0.1, momentum=0.9).init(problems.quadratic_init())
  with pytest.raises(ValueError, match="momentum"):
    jopt.set_hyperparams(s, momentum=1.0)
  with pytest.raises(ValueError, match="decay"):
    jopt.set_hyperparams(s, decay=-0.1)


# ---------------------------------------------------------------- state layout

@pytest.mark.parametrize("tx,cls,names", [
    (jopt.sgd(0.1), jopt.optimizers.SgdState, {"learning_rate"}),
    (jopt.sgd(0.1, momentum=0.9, weight_decay=1e-4), jopt.optimizers.SgdMomentumState,
     {"learning_rate", "momentum", "weight_decay"}),
    (jopt.adagrad(0.1), jopt.optimizers.AdagradState, {"learning_rate", "eps", "lr_decay"}),
    (jopt.rmsprop(0.1), jopt.optimizers.RmspropState, {"learning_rate", "decay", "eps"}),
    (jopt.rmsprop(0.1, momentum=0.5), jopt.optimizers.RmspropMomentumState,
     {"learning_rate", "decay", "eps", "momentum"}),
    (jopt.rmsprop(0.1, centered=True), jopt.optimizers.CenteredRmspropState,
     {"learning_rate", "decay", "eps"}),
    (jopt.rmsprop(0.1, centered=True, momentum=0.5),
     jopt.optimizers.CenteredRmspropMomentumState,
     {"learning_rate", "decay", "eps", "momentum"}),
    (jopt.adadelta(), jopt.optimizers.AdadeltaState, {"learning_rate", "rho", "eps"}),
    (jopt.adadelta(weight_decay=0.1), jopt.optimizers.AdadeltaState,
     {"learning_rate", "rho", "eps", "weight_decay"}),
    (jopt.amsgrad(0.1), jopt.optimizers.AmsgradState,
     {"learning_rate", "b1", "b2", "eps", "eps_root"}),
    (jopt.adamax(0.1), jopt.optimizers.AdamaxState, {"learning_rate", "b1", "b2", "eps"}),
    (jopt.radam(0.1), jopt.optimizers.RadamState,
     {"learning_rate", "b1", "b2", "eps", "eps_root", "threshold"}),
    (jopt.add_decayed_weights(0.1), jopt.regularizers.AddDecayedWeightsState,
     {"weight_decay"}),
], ids=lambda x: getattr(x, "__name__", None))
def test_state_class_and_hyperparams(tx, cls, names):
  s = tx.init(problems.quadratic_init())
  assert type(s) is cls
  assert set(jopt.hyperparams(s)) == names


def _per_param_fields(state, params):
  """Names of the NamedTuple fields anywhere in ``state`` that hold a tree shaped
  like ``params`` (optax's states are chains of NamedTuples)."""
  pdef, names = jax.tree.structure(params), set()

  def visit(x):
    if isinstance(x, tuple) and hasattr(x, "_fields"):
      for f in x._fields:
        v = getattr(x, f)
        if jax.tree.structure(v) == pdef:
          names.add(f)
        else:
          visit(v)
    elif isinstance(x, (tuple, list)):
      for v in x:
        visit(v)

  visit(state)
  return names


# jopt's own per-parameter fields that optax has no counterpart for.
_JOPT_ONLY_FIELDS = {"tree"}  # sgd without momentum: records the params' shapes


@pytest.mark.parametrize("name,kwargs", [
    ("sgd", dict(learning_rate=0.1)),
    ("sgd", dict(learning_rate=0.1, momentum=0.9)),
    ("adagrad", dict(learning_rate=0.1)),
    ("rmsprop", dict(learning_rate=0.1)),
    ("rmsprop", dict(learning_rate=0.1, momentum=0.9)),
    ("rmsprop", dict(learning_rate=0.1, centered=True)),
    ("rmsprop", dict(learning_rate=0.1, centered=True, momentum=0.9)),
    ("adadelta", dict(learning_rate=0.1)),
    ("amsgrad", dict(learning_rate=0.1)),
    ("adamax", dict(learning_rate=0.1)),
    ("radam", dict(learning_rate=0.1)),
    ("adam", dict(learning_rate=0.1)),
    ("adamw", dict(learning_rate=0.1)),
    ("nadam", dict(learning_rate=0.1)),
    ("nadamw", dict(learning_rate=0.1)),
    ("lamb", dict(learning_rate=0.1)),
    ("lars", dict(learning_rate=0.1)),
    ("lion", dict(learning_rate=0.1)),
    ("adafactor", dict(learning_rate=0.1, min_dim_size_to_factor=2)),
    ("adafactor", dict(learning_rate=0.1, min_dim_size_to_factor=2, momentum=0.9)),
], ids=lambda x: x if isinstance(x, str) else ",".join(f"{k}={v}" for k, v in x.items()))
def test_state_fields_have_optax_names(name, kwargs):
  """Each per-parameter field of the state has the name optax's optimizer of the
  same name uses, so ``optax.tree.get(state, "trace")`` and friends find it."""
  p = problems.quadratic_init()
  mine = _per_param_fields(getattr(jopt, name)(**kwargs).init(p), p)
  with jax.numpy_dtype_promotion("standard"):
    theirs = getattr(optax, name)(**kwargs).init(p)
  assert mine - _JOPT_ONLY_FIELDS == _per_param_fields(theirs, p)
  for field in mine - _JOPT_ONLY_FIELDS:
    assert optax.tree.get(getattr(jopt, name)(**kwargs).init(p), field) is not None


def test_storage_dtypes_are_settable():
  p = problems.quadratic_init(jnp.float32)
  f32, bf16 = jnp.float32, jnp.bfloat16
  cases = [
      (jopt.rmsprop(0.1, centered=True, momentum=0.9, mu_dtype=bf16, nu_dtype=f32),
       {"nu": f32, "mu": bf16, "trace": bf16}),
      (jopt.amsgrad(0.1, mu_dtype=bf16, nu_dtype=bf16), {"mu": bf16, "nu": bf16, "nu_max": bf16}),
      (jopt.adamax(0.1, mu_dtype=bf16), {"mu": bf16, "nu": f32}),
      (jopt.radam(0.1, nu_dtype=bf16), {"mu": f32, "nu": bf16}),
      (jopt.adadelta(nu_dtype=bf16), {"e_g": bf16, "e_x": bf16}),
      (jopt.adagrad(0.1, nu_dtype=bf16), {"sum_of_squares": bf16}),
      (jopt.sgd(0.1, momentum=0.9, accumulator_dtype=bf16), {"trace": bf16}),
  ]
  g = jax.grad(problems.quadratic_loss)(p)
  for tx, want in cases:
    s = tx.init(p)
    u, s = tx.update(g, s, p)
    for slot, dt in want.items():
      assert all(x.dtype == dt for x in jax.tree.leaves(getattr(s, slot))), slot
    assert all(x.dtype == f32 for x in jax.tree.leaves(u))


# ---------------------------------------------------------------- behaviour

@pytest.mark.parametrize("fn", [lambda **kw: jopt.sgd(0.1, momentum=0.9, **kw),
                                lambda **kw: jopt.adadelta(**kw)], ids=["sgd", "adadelta"])
def test_weight_decay_default_none_needs_no_params(fn):
  """None (the default) is off: no term, no hyperparameter, no params. Any
  number, 0 included, keeps weight_decay in state (so inject_hyperparams, which
  injects every numeric default, never changes the layout)."""
  p = problems.quadratic_init()
  g = jax.grad(problems.quadratic_loss)(p)
  tx = fn()
  s = tx.init(p)
  assert "weight_decay" not in jopt.hyperparams(s)
  tx.update(g, s)  # no params: fine
  for wd in (0.5, 0.0):
    tx = fn(weight_decay=wd)
    assert float(jopt.hyperparams(tx.init(p))["weight_decay"]) == wd
    with pytest.raises(ValueError, match="params"):
      tx.update(g, tx.init(p))
  u0, _ = fn(weight_decay=0.0).update(g, fn(weight_decay=0.0).init(p), p)
  u, _ = fn().update(g, s, p)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), u0, u)


def test_adadelta_learning_rate_none_is_one_and_descends(x64):
  p = problems.parity_init(jnp.float64)
  trajectories = []
  for tx in (jopt.adadelta(), jopt.adadelta(1.0)):
    q, s = p, tx.init(p)
    for _ in range(30):
      u, s = tx.update(jax.grad(problems.parity_loss)(q), s, q)
      q = optax.apply_updates(q, u)
    trajectories.append(q)
  assert problems.rel_err(*trajectories) == 0.0
  assert float(problems.parity_loss(trajectories[0])) < float(problems.parity_loss(p))
  assert float(jopt.hyperparams(jopt.adadelta().init(p))["learning_rate"]) == 1.0


def test_adagrad_zero_accumulator_gives_zero_step():
  # A coordinate that has only seen zero gradients stays put, even with eps = 0.
  p = {"w": jnp.ones((3,))}
  g = {"w": jnp.asarray([0.0, 1.0, 0.0])}
  for eps_in_sqrt in (True, False):
    tx = jopt.adagrad(0.1, initial_accumulator_value=0.0, eps=0.0, eps_in_sqrt=eps_in_sqrt)
    u, _ = tx.update(g, tx.init(p))
    np.testing.assert_allclose(np.asarray(u["w"]), [0.0, -0.1, 0.0], rtol=1e-6)


def test_rmsprop_centered_bias_corrected_first_step_is_finite():
  # At t = 1 the bias-corrected variance is exactly 0; rounding must not give NaN.
  p = problems.parity_init(jnp.float32)
  g = jax.grad(problems.parity_loss)(p)
  tx = jopt.rmsprop(1e-3, centered=True, bias_correction=True, eps_in_sqrt=False, eps=1e-8)
  u, _ = tx.update(g, tx.init(p))
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(u))


def test_rmsprop_momentum_scales_the_whole_buffer_by_the_current_lr():
  # torch's convention: the buffer holds unscaled steps; lr = 0 stops at once.
  p = {"w": jnp.ones((2,))}
  g = {"w": jnp.asarray([1.0, -2.0])}
  tx = jopt.rmsprop(0.1, momentum=0.9)
  u, s = tx.update(g, tx.init(p))
  u2, _ = tx.update(g, jopt.set_hyperparams(s, learning_rate=0.05))
  b1 = u["w"] / -0.1
  s2 = g["w"] / jnp.sqrt(0.9 * s.nu["w"] + 0.1 * g["w"] ** 2 + 1e-8)
  np.testing.assert_allclose(np.asarray(u2["w"]), np.asarray(-0.05 * (0.9 * b1 + s2)),
                             rtol=1e-6)


def _adamax_numpy(params, steps, lr, b1, b2, eps):
  """Adamax with eps added to the denominator (Keras), transcribed in NumPy."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  u = {k: np.zeros_like(v) for k, v in p.items()}
  grad = jax.grad(problems.parity_loss)
  out = []
  for t in range(1, steps + 1):
    g = {k: np.asarray(v) for k, v in grad({k: jnp.asarray(v) for k, v in p.items()}).items()}
    for k in p:
      m[k] = b1 * m[k] + (1 - b1) * g[k]
      u[k] = np.maximum(b2 * u[k], np.abs(g[k]))
      p[k] = p[k] - lr / (1 - b1 ** t) * m[k] / (u[k] + eps)
    out.append({k: v.copy() for k, v in p.items()})
  return out


def test_adamax_eps_outside_max_matches_numpy(x64):
  p0 = problems.parity_init(jnp.float64)
  ref = _adamax_numpy(p0, 40, 0.02, 0.9, 0.99, 1e-3)
  tx = jopt.adamax(0.02, b2=0.99, eps=1e-3, eps_in_max=False)
  p, s = p0, tx.init(p0)
  worst = 0.0
  for want in ref:
    u, s = tx.update(jax.grad(problems.parity_loss)(p), s, p)
    p = optax.apply_updates(p, u)
    worst = max(worst, problems.rel_err(p, {k: jnp.asarray(v) for k, v in want.items()}))
  assert worst <= 1e-12, worst
  # ...and it is a different rule from the default (eps inside the max; the two
  # agree at t = 1, where v_0 = 0).
  d = jopt.adamax(0.02, b2=0.99, eps=1e-3)
  q, s = p0, d.init(p0)
  for _ in ref:
    u, s = d.update(jax.grad(problems.parity_loss)(q), s, q)
    q = optax.apply_updates(q, u)
  assert problems.rel_err(q, p) > 1e-6


def _rho(t, b2):
  rho_inf = 2 / (1 - b2) - 1
  return rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)


def test_radam_threshold_comparison_per_convention(x64):
  # threshold exactly equal to rho_t at t = 7: optax's >= rectifies at step 7,
  # torch's > does not (its step 7 is then plain momentum SGD).
  b2 = 0.999
  tau = float(_rho(jnp.asarray(7.0, jnp.float64), jnp.asarray(b2, jnp.float64)))
  p = {"w": jnp.asarray([1.0, -0.5], jnp.float64)}
  g = {"w": jnp.asarray([0.3, 0.2], jnp.float64)}
  ups = {}
  for conv in ("optax", "torch"):
    tx = jopt.radam(0.1, b2=b2, eps=0.0, threshold=tau, convention=conv)
    s = tx.init(p)
    for _ in range(7):
      u, s = tx.update(g, s)
    ups[conv] = np.asarray(u["w"])
  # constant gradient: m_hat = g exactly, v_hat = g^2, so the step is -lr*g
  # unrectified and -lr*r_7*sign(g) rectified.
  np.testing.assert_allclose(ups["torch"], -0.1 * np.asarray(g["w"]), rtol=1e-12)
  assert not np.allclose(ups["optax"], ups["torch"])
  with jax.numpy_dtype_promotion("standard"):
    ref = optax.radam(0.1, b2=b2, eps=0.0, threshold=tau)
    r = ref.init(p)
    for _ in range(7):
      v, r = ref.update(g, r)
  np.testing.assert_allclose(ups["optax"], np.asarray(v["w"]), rtol=1e-12)


def test_schedules_are_evaluated_per_step(x64):
  sched = optax.linear_schedule(0.1, 0.01, 20)
  p0 = problems.parity_init(jnp.float64)
  for fn, ref in [(lambda: jopt.sgd(sched, momentum=0.9), lambda: optax.sgd(sched, 0.9)),
                  (lambda: jopt.adagrad(sched), lambda: optax.adagrad(sched)),
                  (lambda: jopt.radam(sched), lambda: optax.radam(sched))]:
    tx = fn()
    with jax.numpy_dtype_promotion("standard"):
      rx = ref()
      r = rx.init(p0)
    p, q, s = p0, p0, tx.init(p0)
    for _ in range(25):
      u, s = tx.update(jax.grad(problems.parity_loss)(p), s, p)
      p = optax.apply_updates(p, u)
      with jax.numpy_dtype_promotion("standard"):
        v, r = rx.update(jax.grad(problems.parity_loss)(q), r, q)
        q = optax.apply_updates(q, v)
    assert problems.rel_err(p, q) <= 1e-12
    np.testing.assert_allclose(float(jopt.hyperparams(s)["learning_rate"]), float(sched(24)))


# ---------------------------------------------------------------- add_decayed_weights

@pytest.mark.parametrize("mask", [
    None,
    {"w1": True, "b1": False, "w2": True, "s": False},
    lambda params: jax.tree.map(lambda x: x.ndim == 2, params),
], ids=["all", "tree", "callable"])
@pytest.mark.parametrize("wd", [0.0, 0.1, optax.linear_schedule(0.2, 0.0, 5)],
                         ids=["zero", "const", "schedule"])
def test_add_decayed_weights_matches_optax(mask, wd, x64):
  p = problems.parity_init(jnp.float64)
  g = jax.grad(problems.parity_loss)(p)
  tx = jopt.add_decayed_weights(wd, mask)
  with jax.numpy_dtype_promotion("standard"):
    ref = optax.add_decayed_weights(wd, mask)
    r = ref.init(p)
  s = tx.init(p)
  for i in range(6):
    q = jax.tree.map(lambda x: x * (1.0 + 0.1 * i), p)
    u, s = tx.update(g, s, q)
    with jax.numpy_dtype_promotion("standard"):
      v, r = ref.update(g, r, q)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                         rtol=1e-15, atol=0), u, v)


def test_add_decayed_weights_needs_params():
  p = problems.quadratic_init()
  tx = jopt.add_decayed_weights(1e-4)
  with pytest.raises(ValueError, match="params"):
    tx.update(p, tx.init(p))


def test_add_decayed_weights_keeps_dtype_and_weight_decay_in_state():
  p = problems.quadratic_init(jnp.bfloat16)
  g = jax.grad(problems.quadratic_loss)(p)
  tx = jopt.add_decayed_weights(0.5)
  s = tx.init(p)
  traces = []

  @jax.jit
  def step(g, s, p):
    traces.append(1)
    return tx.update(g, s, p)

  u, s = step(g, s, p)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(u))
  u0, s = step(g, jopt.set_hyperparams(s, weight_decay=0.0), p)
  assert len(traces) == 1
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), u0, g)


def test_add_decayed_weights_in_front_is_coupled_l2(x64):
  # chain(add_decayed_weights(l), sgd) == sgd(weight_decay=l)
  p0 = problems.parity_init(jnp.float64)
  a = optax.chain(jopt.add_decayed_weights(0.05), jopt.sgd(0.02, momentum=0.9))
  b = jopt.sgd(0.02, momentum=0.9, weight_decay=0.05)
  p, q, sa, sb = p0, p0, a.init(p0), b.init(p0)
  for _ in range(20):
    u, sa = a.update(jax.grad(problems.parity_loss)(p), sa, p)
    p = optax.apply_updates(p, u)
    v, sb = b.update(jax.grad(problems.parity_loss)(q), sb, q)
    q = optax.apply_updates(q, v)
  assert problems.rel_err(p, q) <= 1e-14
