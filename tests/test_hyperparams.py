"""Hyperparameters live in state: read, change without retracing, schedules still drive."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from tests import problems


def test_read_and_set_single_state():
  s = jopt.adam(1e-3, b1=0.8).init(problems.quadratic_init())
  hp = jopt.hyperparams(s)
  assert set(hp) == {"learning_rate", "b1", "b2", "eps", "eps_root"}
  np.testing.assert_allclose(float(hp["b1"]), 0.8, rtol=1e-7)
  s2 = jopt.set_hyperparams(s, learning_rate=5e-4, b2=0.95)
  np.testing.assert_allclose(float(jopt.hyperparams(s2)["learning_rate"]), 5e-4, rtol=1e-6)
  np.testing.assert_allclose(float(jopt.hyperparams(s2)["b2"]), 0.95, rtol=1e-6)
  for k in hp:  # dtype, shape and weak type unchanged: a jitted step is not retraced
    a, b = jopt.hyperparams(s)[k], jopt.hyperparams(s2)[k]
    assert (a.dtype, a.shape, a.weak_type) == (b.dtype, b.shape, b.weak_type)
  assert float(jopt.hyperparams(s)["learning_rate"]) == pytest.approx(1e-3)  # s untouched


def test_set_changes_the_update_exactly():
  p = problems.quadratic_init()
  g = jax.grad(problems.quadratic_loss)(p)
  tx = jopt.adam(1e-3)
  s = jopt.set_hyperparams(tx.init(p), learning_rate=2e-3)
  u_set, _ = tx.update(g, s, p)
  u_ref, _ = jopt.adam(2e-3).update(g, jopt.adam(2e-3).init(p), p)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), u_set, u_ref)


def test_chain_state():
  tx = optax.chain(optax.clip_by_global_norm(1.0), jopt.adamw(1e-3, weight_decay=0.1))
  s = tx.init(problems.quadratic_init())
  assert float(jopt.hyperparams(s)["weight_decay"]) == pytest.approx(0.1)
  s = jopt.set_hyperparams(s, weight_decay=0.2)
  assert float(jopt.hyperparams(s[1])["weight_decay"]) == pytest.approx(0.2)


def test_ambiguous_and_unknown_names_are_errors():
  tx = optax.chain(jopt.adam(1e-3), jopt.adam(1e-2))
  s = tx.init(problems.quadratic_init())
  with pytest.raises(ValueError, match="sub-state"):
    jopt.hyperparams(s)
  with pytest.raises(ValueError, match="learning_rate"):
    jopt.set_hyperparams(s, learning_rate=1.0)
  assert float(jopt.hyperparams(s[1])["learning_rate"]) == pytest.approx(1e-2)
  with pytest.raises(ValueError, match="no hyperparameter named 'lr'"):
    jopt.set_hyperparams(s[0], lr=1.0)


@pytest.mark.parametrize("name,value", [("learning_rate", -1.0), ("learning_rate", float("nan")),
                                        ("b1", 1.0), ("b2", -0.1), ("eps", -1e-8)])
def test_set_validates(name, value):
  s = jopt.adam(1e-3).init(problems.quadratic_init())
  with pytest.raises(ValueError, match=name):
    jopt.set_hyperparams(s, **{name: value})


def test_schedule_drives_and_is_reported():
  sched = lambda t: 0.1 / (1.0 + jnp.asarray(t, jnp.float32))  # noqa: E731
  tx = jopt.adam(sched)
  p = problems.quadratic_init()
  s = tx.init(p)
  assert float(jopt.hyperparams(s)["learning_rate"]) == pytest.approx(0.1)
  g = jax.grad(problems.quadratic_loss)(p)
  step = jax.jit(tx.update)
  for t in range(4):
    _, s = step(g, s, p)
    assert float(jopt.hyperparams(s)["learning_rate"]) == pytest.approx(0.1 / (1 + t), rel=1e-6)
  # Setting a scheduled value would be overwritten at the next update: refused,
  # naming the hyperparameter, the schedule and both ways out; the state is intact.
  with pytest.raises(ValueError, match=r"'learning_rate'.*driven by the schedule.*number"):
    jopt.set_hyperparams(s, learning_rate=5.0)
  _, s = step(g, s, p)
  assert float(jopt.hyperparams(s)["learning_rate"]) == pytest.approx(0.1 / 5, rel=1e-6)


def test_schedule_driven_names_only_are_refused():
  """In one state a scheduled learning rate is refused while b1 stays settable;
  the marker lives in the state's type, so it survives jit and a chain."""
  tx = optax.chain(optax.clip_by_global_norm(1.0), jopt.adam(lambda t: 0.1 / (1.0 + t), b1=0.9))
  p = problems.quadratic_init()
  s = jax.jit(tx.init)(p)
  s = jopt.set_hyperparams(s, b1=0.8)
  assert float(jopt.hyperparams(s)["b1"]) == pytest.approx(0.8)
  with pytest.raises(ValueError, match="learning_rate"):
    jopt.set_hyperparams(s, learning_rate=1.0)
  assert isinstance(s[1], jopt.AdamState)
  # A number-driven learning rate of the same optimizer is settable.
  s2 = jopt.adam(0.1).init(p)
  assert float(jopt.hyperparams(jopt.set_hyperparams(s2, learning_rate=0.5))["learning_rate"]) == 0.5


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32, jnp.int32])
def test_any_real_0d_array_is_a_hyperparameter(dtype):
  p = problems.quadratic_init()
  tx = jopt.adam(jnp.asarray(0.25, dtype) if dtype != jnp.int32 else jnp.asarray(1, dtype))
  want = 0.25 if dtype != jnp.int32 else 1.0
  assert float(jopt.hyperparams(tx.init(p))["learning_rate"]) == want
  s = jopt.set_hyperparams(tx.init(p), learning_rate=jnp.asarray(0.5, dtype) if dtype != jnp.int32
                           else jnp.asarray(2, dtype))
  assert float(jopt.hyperparams(s)["learning_rate"]) == (0.5 if dtype != jnp.int32 else 2.0)


@pytest.mark.parametrize("bad", [True, jnp.asarray(True), 1j, jnp.ones(2), "0.1"])
def test_non_real_scalars_are_rejected(bad):
  with pytest.raises(TypeError, match="learning_rate"):
    jopt.adam(bad)


def test_set_inside_jit_with_traced_value():
  tx = jopt.adam(1e-3)
  p = problems.quadratic_init()
  traces = []

  @jax.jit
  def step(p, s, lr):
    traces.append(1)
    s = jopt.set_hyperparams(s, learning_rate=lr)
    u, s = tx.update(jax.grad(problems.quadratic_loss)(p), s, p)
    return optax.apply_updates(p, u), s

  s = tx.init(p)
  for lr in (1e-3, 1e-2, 0.0):
    p2, s = step(p, s, jnp.float32(lr))
  assert len(traces) == 1
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), p2, p)  # lr 0: no move


def test_changing_lr_every_step_never_recompiles():
  tx = jopt.adamw(1e-3, weight_decay=1e-2)
  p = problems.quadratic_init()
  traces = []

  @jax.jit
  def step(p, s):
    traces.append(1)
    u, s = tx.update(jax.grad(problems.quadratic_loss)(p), s, p)
    return optax.apply_updates(p, u), s

  s = tx.init(p)
  for i in range(20):
    s = jopt.set_hyperparams(s, learning_rate=1e-3 * (i + 1), weight_decay=1e-3 * i)
    p, s = step(p, s)
  assert len(traces) == 1


# ------------------------------------------------- traced values given to a factory
# Checks run on concrete values only; a traced value (jit of a factory, vmap over
# hyperparameters, optax.inject_hyperparams' jitted init) passes through unchecked
# and is used as given. Structural choices never depend on a value.

# (name, the numeric arguments traced, other arguments)
_TRACEABLE = [
    ("sgd", dict(learning_rate=0.1, momentum=0.9, weight_decay=0.01), {}),
    ("adagrad", dict(learning_rate=0.1, initial_accumulator_value=0.2, eps=1e-6,
                     lr_decay=0.01), {}),
    ("rmsprop", dict(learning_rate=0.01, decay=0.8, eps=1e-4, initial_scale=0.5,
                     momentum=0.5), dict(centered=True)),
    ("adadelta", dict(learning_rate=0.5, rho=0.8, eps=1e-5, weight_decay=0.01), {}),
    ("amsgrad", dict(learning_rate=0.1, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-9), {}),
    ("adamax", dict(learning_rate=0.1, b1=0.8, b2=0.99, eps=1e-6), {}),
    ("radam", dict(learning_rate=0.1, b1=0.8, b2=0.99, eps=1e-6, threshold=4.5), {}),
    ("adam", dict(learning_rate=0.1, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-9), {}),
    ("adamw", dict(learning_rate=0.1, b1=0.8, weight_decay=0.05), {}),
    ("nadam", dict(learning_rate=0.1, b2=0.99), {}),
    ("nadamw", dict(learning_rate=0.1, weight_decay=0.05), {}),
    ("lamb", dict(learning_rate=0.1, b1=0.8, weight_decay=0.05), {}),
    ("lars", dict(learning_rate=0.5, weight_decay=0.01, trust_coefficient=0.01, eps=1e-6,
                  momentum=0.8), {}),
    ("lion", dict(learning_rate=0.01, b1=0.8, b2=0.95, weight_decay=0.01), {}),
    ("adafactor", dict(learning_rate=0.05, decay_rate=0.7, decay_offset=2, clipping_threshold=0.5,
                       momentum=0.9, weight_decay_rate=0.01, eps=1e-20),
     dict(min_dim_size_to_factor=2, dtype_momentum=None)),
    ("add_decayed_weights", dict(weight_decay=0.1), {}),
]


def _two_steps(tx, p):
  s = tx.init(p)
  for _ in range(2):
    u, s = tx.update(jax.grad(problems.quadratic_loss)(p), s, p)
    p = optax.apply_updates(p, u)
  return p, s


@pytest.mark.parametrize("name,traced,static", _TRACEABLE, ids=[c[0] for c in _TRACEABLE])
def test_jit_of_a_factory_uses_the_traced_values(name, traced, static):
  p = problems.quadratic_init()
  fn = getattr(jopt, name)
  want_p, want_s = _two_steps(fn(**traced, **static), p)

  @jax.jit
  def run(values):
    return _two_steps(fn(**values, **static), p)

  got_p, got_s = run(jax.tree.map(jnp.asarray, traced))
  assert jax.tree.structure(got_s) == jax.tree.structure(want_s)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6,
                                                       atol=1e-7), (got_p, got_s), (want_p, want_s))


@pytest.mark.parametrize("name,traced,static", _TRACEABLE, ids=[c[0] for c in _TRACEABLE])
def test_vmap_over_the_learning_rate(name, traced, static):
  p = problems.quadratic_init()
  fn = getattr(jopt, name)
  key = "learning_rate" if "learning_rate" in traced else "weight_decay"
  rates = jnp.asarray([0.5, 1.0, 2.0]) * traced[key]
  got, _ = jax.vmap(lambda r: _two_steps(fn(**{**traced, key: r}, **static), p))(rates)
  for i, r in enumerate(rates):
    want, _ = _two_steps(fn(**{**traced, key: float(r)}, **static), p)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b),
                                                         rtol=1e-6, atol=1e-7), got, want)


@pytest.mark.parametrize("name,traced,static", _TRACEABLE, ids=[c[0] for c in _TRACEABLE])
def test_inject_hyperparams_matches_and_injects_every_number(name, traced, static):
  p = problems.quadratic_init()
  fn = getattr(jopt, name)
  statics = tuple(static) + (("min_dim_size_to_factor",) if name == "adafactor" else ())
  tx = optax.inject_hyperparams(fn, static_args=statics)(**traced, **static)
  with jax.numpy_dtype_promotion("standard"):
    s = jax.jit(tx.init)(p)
    u, s = jax.jit(tx.update)(jax.grad(problems.quadratic_loss)(p), s, p)
  assert set(traced) <= set(s.hyperparams)
  ref = fn(**traced, **static)
  v, r = ref.update(jax.grad(problems.quadratic_loss)(p), ref.init(p), p)
  assert jax.tree.structure(s.inner_state) == jax.tree.structure(r)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6,
                                                       atol=1e-7), (u, s.inner_state), (v, r))


def test_concrete_values_are_still_checked_at_construction():
  with pytest.raises(ValueError, match="b1"):
    jopt.adam(0.1, b1=jnp.asarray(1.5))
  with pytest.raises(ValueError, match="initial_accumulator_value"):
    jopt.adagrad(0.1, initial_accumulator_value=jnp.asarray(-1.0))
  with pytest.raises(ValueError, match="decay_offset"):
    jopt.adafactor(decay_offset=jnp.asarray(-2))
  # a traced value is not checked: it is the caller's to vouch for
  jax.jit(lambda b1: jopt.adam(0.1, b1=b1).init(problems.quadratic_init()))(1.5)


def test_static_arguments_refuse_a_traced_value_naming_it():
  p = problems.quadratic_init()
  with pytest.raises(TypeError, match=r"min_dim_size_to_factor.*static_args"):
    jax.jit(lambda m: jopt.adafactor(min_dim_size_to_factor=m).init(p))(2)
  with pytest.raises(TypeError, match=r"min_dim_size_to_factor.*static"):
    jax.jit(optax.inject_hyperparams(jopt.adafactor)(min_dim_size_to_factor=2).init)(p)
  # concrete integer arrays are fine (inject_hyperparams passes them outside jit)
  s = jopt.adafactor(min_dim_size_to_factor=jnp.asarray(2)).init(p)
  assert s.v_row["w"].shape == (3,) and s.v_col["w"].shape == (4,)
