"""Properties every jopt optimizer must have, parametrized over the registry."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from tests import problems
from tests.registry import all_entries

ENTRIES = all_entries()
IDS = [e.name for e in ENTRIES]


def _run(tx, loss, params, steps):
  def body(carry, _):
    p, s = carry
    g = jax.grad(loss)(p)
    u, s = tx.update(g, s, p)
    return (optax.apply_updates(p, u), s), None

  (p, _), _ = jax.jit(lambda p, s: jax.lax.scan(body, (p, s), None, length=steps))(
      params, tx.init(params))
  return p


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_is_extra_args_transform(entry):
  assert isinstance(entry.make(), optax.GradientTransformationExtraArgs)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_converges_on_quadratic(entry):
  p0 = problems.quadratic_init()
  p = _run(entry.make(), problems.quadratic_loss, p0, entry.quadratic_steps)
  start, end = float(problems.quadratic_loss(p0)), float(problems.quadratic_loss(p))
  assert np.isfinite(end) and end < 1e-2 * start, (start, end)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_converges_on_rosenbrock(entry):
  p0 = problems.rosenbrock_init()
  args = entry.rosenbrock_args if entry.rosenbrock_args is not None else entry.args
  p = _run(entry.fn(**args), problems.rosenbrock_loss, p0, entry.rosenbrock_steps)
  start, end = float(problems.rosenbrock_loss(p0)), float(problems.rosenbrock_loss(p))
  assert np.isfinite(end) and end < 0.05 * start, (start, end)


def _step_fn(tx, counter):
  def step(p, s):
    counter.append(1)
    g = jax.grad(problems.quadratic_loss)(p)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s
  return jax.jit(step)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_no_retrace_on_second_step(entry):
  tx, traces = entry.make(), []
  step = _step_fn(tx, traces)
  p = problems.quadratic_init()
  s = tx.init(p)
  p, s = step(p, s)
  p, s = step(p, s)
  p, s = step(p, s)
  assert len(traces) == 1


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_set_hyperparams_does_not_retrace_and_takes_effect(entry):
  tx, traces = entry.make(), []
  step = _step_fn(tx, traces)
  p = problems.quadratic_init()
  s = tx.init(p)
  assert "learning_rate" in jopt.hyperparams(s)
  for _ in range(3):
    p, s = step(p, s)
  zero = jopt.set_hyperparams(s, learning_rate=0.0)
  p_zero, s_zero = step(p, zero)
  p_same, _ = step(p, s)
  assert len(traces) == 1
  assert float(jopt.hyperparams(s_zero)["learning_rate"]) == 0.0
  moved = [not np.array_equal(np.asarray(a), np.asarray(b))
           for a, b in zip(jax.tree.leaves(p_zero), jax.tree.leaves(p_same))]
  assert any(moved), "setting learning_rate=0 changed nothing"
  if entry.zero_lr_freezes:
    # every jopt optimizer scales its whole update (decoupled decay included) by
    # the learning rate, so a zero rate leaves the parameters exactly where they are
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 p_zero, p)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_extra_kwargs_ignored(entry):
  tx = entry.make()
  p = problems.quadratic_init()
  s = tx.init(p)
  g = jax.grad(problems.quadratic_loss)(p)
  u1, _ = tx.update(g, s, p)
  u2, _ = tx.update(g, s, p, value=jnp.asarray(1.0), unknown_keyword="ignored")
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), u1, u2)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_dtype_and_state_stable(entry, dtype):
  tx = entry.make()
  p = problems.quadratic_init(dtype)
  s0 = tx.init(p)
  g = jax.grad(problems.quadratic_loss)(p)
  assert all(x.dtype == dtype for x in jax.tree.leaves(g))
  u, s1 = tx.update(g, s0, p)
  for leaf in jax.tree.leaves(u):
    assert leaf.dtype == dtype
  new_p = optax.apply_updates(p, u)
  for leaf in jax.tree.leaves(new_p):
    assert leaf.dtype == dtype
  assert jax.tree.structure(s0) == jax.tree.structure(s1)
  for a, b in zip(jax.tree.leaves(s0), jax.tree.leaves(s1)):
    assert a.shape == b.shape and a.dtype == b.dtype
  assert all(bool(jnp.all(jnp.isfinite(x.astype(jnp.float32)))) for x in jax.tree.leaves(new_p))


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.mu_dtype_arg], ids=lambda e: e.name)
def test_float32_moments_for_bf16_params(entry):
  tx = entry.make(**{entry.mu_dtype_arg: jnp.float32})
  p = problems.quadratic_init(jnp.bfloat16)
  s = tx.init(p)
  float_slots = [x for x in jax.tree.leaves(s) if x.ndim > 0 and x.dtype == jnp.float32]
  assert float_slots, "mu_dtype=float32 produced no float32 state"
  g = jax.grad(problems.quadratic_loss)(p)
  u, s2 = tx.update(g, s, p)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(optax.apply_updates(p, u)))
  assert [x.dtype for x in jax.tree.leaves(s2)] == [x.dtype for x in jax.tree.leaves(s)]


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_jit_matches_eager(entry):
  tx = entry.make()
  p = problems.quadratic_init()
  s = tx.init(p)
  eager_p, jit_p, es, js = p, p, s, s
  update = jax.jit(tx.update)
  for _ in range(3):
    u, es = tx.update(jax.grad(problems.quadratic_loss)(eager_p), es, eager_p)
    eager_p = optax.apply_updates(eager_p, u)
    u, js = update(jax.grad(problems.quadratic_loss)(jit_p), js, jit_p)
    jit_p = optax.apply_updates(jit_p, u)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                       rtol=1e-5, atol=1e-6), eager_p, jit_p)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_gradient_structure_mismatch_is_a_clear_error(entry):
  tx = entry.make()
  p = problems.quadratic_init()
  s = tx.init(p)
  bad = {"w": jnp.zeros((3, 4)), "other": jnp.zeros((4,))}
  with pytest.raises(ValueError, match="structure"):
    tx.update(bad, s, bad)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_chains_with_optax_both_ways(entry):
  p = problems.quadratic_init()
  g = jax.grad(problems.quadratic_loss)(p)
  for tx in (optax.chain(optax.clip_by_global_norm(1.0), entry.make()),
             optax.chain(entry.make(), optax.scale(0.5))):
    s = tx.init(p)
    u, s = tx.update(g, s, p)
    assert jax.tree.structure(u) == jax.tree.structure(p)


# ---------------------------------------------------------------- strict shapes and layout
# Optimizers whose state records no parameter shape (no per-element slot).
NO_SHAPE_IN_STATE = {"sgd"}
_SHAPED = {"dense": {"kernel": jnp.ones((3, 2)) * 0.5, "bias": jnp.ones((2,))}}


@pytest.mark.parametrize("with_params", [True, False], ids=["params", "no_params"])
@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_transposed_gradient_is_an_error_naming_the_path(entry, with_params):
  """A (2, 3) gradient for a (3, 2) parameter is never reshaped into it; the error
  names the parameter's path and both shapes, with or without params passed."""
  tx = entry.make()
  s = tx.init(_SHAPED)
  g = {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones((2,))}}
  args = (_SHAPED,) if with_params else ()
  if entry.name in NO_SHAPE_IN_STATE and not with_params:
    # Plain SGD keeps nothing per element (as optax), so without params there is
    # nothing to check a shape against: its update is -lr * g, of g's shape, and
    # apply_updates then fails on the mismatch. Pinned so a change is noticed.
    u, _ = tx.update(g, s)
    assert u["dense"]["kernel"].shape == (2, 3)
    return
  try:
    tx.update(g, s, *args)
  except ValueError as e:
    msg = str(e)
    if "needs the current parameters" in msg and not with_params:
      return  # this optimizer cannot run without params at all: nothing reshaped
    assert "params['dense']['kernel']" in msg and "(2, 3)" in msg and "(3, 2)" in msg, msg
  else:
    pytest.fail("a transposed gradient was accepted")


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_wrong_size_gradient_names_the_parameter(entry):
  tx = entry.make()
  s = tx.init(_SHAPED)
  g = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones((5,))}}
  with pytest.raises(ValueError, match=r"params\['dense'\]\['bias'\].*\(5,\).*\(2,\)"):
    tx.update(g, s, _SHAPED)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_complex_gradient_for_real_parameter_is_a_type_error(entry):
  tx = entry.make()
  s = tx.init(_SHAPED)
  g = jax.tree.map(lambda x: x.astype(jnp.complex64), _SHAPED)
  with pytest.raises(TypeError, match=r"params\['dense'\]\['bias'\].*complex"):
    tx.update(g, s, _SHAPED)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_state_slots_have_the_params_tree(entry):
  """Every array-per-parameter slot has exactly the params' tree structure, so
  ``jax.tree.map(f, slot, params)`` works; the same on any device count."""
  tx = entry.make()
  s = tx.init(_SHAPED)
  pdef = jax.tree.structure(_SHAPED)
  slots = [getattr(s, f) for f in getattr(s, "_fields", ()) if f not in ("count", "hyperparams")]
  per_param = [x for x in slots if jax.tree.structure(x) == pdef]
  assert per_param, f"{entry.name}: no slot has the params' structure"
  for x in per_param:
    jax.tree.map(lambda a, p: None, x, _SHAPED)


def test_properties_hold_in_a_one_device_process():
  """The registry property tests again in a child process that has one CPU device
  (what a laptop or one-GPU user gets), so no layout escapes CI."""
  import os, subprocess, sys  # pylint: disable=import-outside-toplevel,multiple-imports
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, JOPT_TEST_CPU_DEVICES="1", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-x",
       os.path.join("tests", "test_optimizer_properties.py"), "-k",
       "not test_properties_hold_in_a_one_device_process"],  # no recursion
      cwd=root, env=env, capture_output=True, text=True, timeout=1500, check=False)
  tail = proc.stdout[-3000:] + proc.stderr[-3000:]
  assert proc.returncode == 0, tail
  assert " passed" in proc.stdout and "failed" not in proc.stdout, tail


def test_device_count_is_the_configured_one():
  import os  # pylint: disable=import-outside-toplevel
  assert jax.device_count() == int(os.environ.get("JOPT_TEST_CPU_DEVICES", "8"))
