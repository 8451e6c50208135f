"""jopt.distill.distill_step: the step against a hand-written optax step in float64.

Also: an ensemble teacher is the mean of its members' logits (checked against NumPy),
no retrace on later calls (a trace counter), the teacher's params are bitwise
unchanged and receive no gradient (the Jacobian of the updated student wrt the
teacher is exactly 0, while the same loss without the step's stop-gradient has a
non-zero one), a jopt.prune-wrapped optimizer works, hint / RKD terms through
``extra_loss`` train a projection kept in the student's params, and bad input fails
at construction or at the first call, before any update.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
import jopt.distill as jd
from tests.test_distill_logits import np_distill, run_doctests

TOL = 1e-12


def mlp(params, x):
  h = jnp.tanh(x @ params["w1"] + params["b1"])
  return h @ params["w2"] + params["b2"]


def mlp_aux(params, x):
  h = jnp.tanh(x @ params["w1"] + params["b1"])
  return h @ params["w2"] + params["b2"], h


def init_mlp(seed, d_in=6, d_h=5, d_out=4, dtype=np.float64):
  rng = np.random.default_rng(seed)
  return {"w1": jnp.asarray(rng.normal(size=(d_in, d_h)) / np.sqrt(d_in), dtype),
          "b1": jnp.asarray(rng.normal(size=(d_h,)) * 0.1, dtype),
          "w2": jnp.asarray(rng.normal(size=(d_h, d_out)) / np.sqrt(d_h), dtype),
          "b2": jnp.asarray(rng.normal(size=(d_out,)) * 0.1, dtype)}


def batch(seed, n=8, d_in=6, classes=4):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(size=(n, d_in))), jnp.asarray(rng.integers(0, classes, n))


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_step_equals_hand_written_optax_step(x64):
  sp, tp = init_mlp(0), init_mlp(1, d_h=9)
  tx = jopt.adam(1e-2)   # optax.adam needs standard promotion; jopt.adam is strict-safe
  step = jd.distill_step(mlp, mlp, tx, temperature=3.0, alpha=0.7)

  @jax.jit
  def hand(sp, opt_state, tp, x, y):
    t = mlp(tp, x)
    loss, g = jax.value_and_grad(
        lambda p: jd.distill_loss(mlp(p, x), t, y, temperature=3.0, alpha=0.7))(sp)
    u, opt_state = tx.update(g, opt_state, sp)
    return optax.apply_updates(sp, u), opt_state, loss

  a, sa = sp, tx.init(sp)
  b, sb = sp, tx.init(sp)
  for i in range(3):
    x, y = batch(i)
    a, sa, m = step(a, sa, tp, x, y)
    b, sb, loss = hand(b, sb, tp, x, y)
    assert abs(float(m["loss"]) - float(loss)) <= TOL
    assert m["loss"].dtype == jnp.float64
  assert _max_diff(a, b) <= TOL
  assert _max_diff(sa, sb) <= TOL
  # the loss reported is the NumPy transcription's value at the params before the update
  x, y = batch(9)
  _, _, m = step(a, sa, tp, x, y)
  ref = np_distill(np.asarray(mlp(a, x)), np.asarray(mlp(tp, x)), np.asarray(y), 3.0, 0.7)
  assert abs(float(m["loss"]) - ref) <= TOL
  s_pred = np.argmax(np.asarray(mlp(a, x)), -1)
  assert float(m["accuracy"]) == np.mean(s_pred == np.asarray(y))
  assert float(m["agreement"]) == np.mean(s_pred == np.argmax(np.asarray(mlp(tp, x)), -1))


def test_ensemble_is_the_mean_of_member_logits(x64):
  sp = init_mlp(0)
  members = [init_mlp(1, d_h=7), init_mlp(2, d_h=3), init_mlp(3, d_h=5)]
  other = lambda p, x: 2.0 * mlp(p, x)   # members need not share an apply function
  tx = optax.sgd(0.5)
  step = jd.distill_step(mlp, [mlp, other, mlp], tx, temperature=2.0, alpha=1.0)
  x, _ = batch(4)
  mean = (np.asarray(mlp(members[0], x)) + 2.0 * np.asarray(mlp(members[1], x))
          + np.asarray(mlp(members[2], x))) / 3.0
  new, _, m = step(sp, tx.init(sp), tuple(members), x)
  assert abs(float(m["loss"]) - np_distill(np.asarray(mlp(sp, x)), mean, None, 2.0, 1.0)) <= TOL
  g = jax.grad(lambda p: jd.distill_loss(mlp(p, x), jnp.asarray(mean), temperature=2.0,
                                         alpha=1.0))(sp)
  expect = jax.tree.map(lambda p, gg: p - 0.5 * gg, sp, g)
  assert _max_diff(new, expect) <= TOL
  assert "accuracy" not in m


def test_no_retrace_on_later_calls():
  traces = []

  def student(p, x):
    traces.append(1)
    return mlp(p, x)

  sp, tp = init_mlp(0, dtype=np.float32), init_mlp(1, dtype=np.float32)
  tx = jopt.adam(1e-3)
  step = jd.distill_step(student, mlp, tx, temperature=4.0, alpha=0.5)
  state = tx.init(sp)
  for i in range(4):
    x, y = batch(i)
    sp, state, _ = step(sp, state, tp, x.astype(jnp.float32), y.astype(jnp.int32))
  assert len(traces) == 1


def test_teacher_params_are_unchanged_and_get_no_gradient(x64):
  sp, tp = init_mlp(0), init_mlp(1)
  before = jax.tree.map(np.array, tp)
  tx = optax.sgd(0.1)
  # an extra term that uses the teacher's features directly, without its own stop-gradient
  extra = lambda p, s_aux, t_aux, x, y: jnp.mean(s_aux * t_aux)
  step = jd.distill_step(mlp_aux, mlp_aux, tx, temperature=2.0, alpha=0.5, extra_loss=extra,
                         has_aux=True)
  x, y = batch(5)
  state = tx.init(sp)
  new, state, _ = step(sp, state, tp, x, y)
  new, state, _ = step(new, state, tp, x, y)
  for k in before:
    assert np.array_equal(np.asarray(tp[k]), before[k])   # bitwise, and not donated
  jac = jax.jacobian(lambda t: step(sp, tx.init(sp), t, x, y)[0])(tp)
  assert all(np.all(np.asarray(leaf) == 0.0) for leaf in jax.tree.leaves(jac))

  # control: the same update written without the teacher's stop-gradient does depend on it
  def unstopped(t):
    def loss(p):
      s_logits, s_aux = mlp_aux(p, x)
      t_logits, t_aux = mlp_aux(t, x)
      return (jd.distill_loss(s_logits, t_logits, y, temperature=2.0, alpha=0.5)
              + extra(p, s_aux, t_aux, x, y))
    g = jax.grad(loss)(sp)
    return jax.tree.map(lambda p, gg: p - 0.1 * gg, sp, g)
  jac_control = jax.jit(jax.jacobian(unstopped))(tp)
  assert max(float(np.max(np.abs(np.asarray(v)))) for v in jax.tree.leaves(jac_control)) > 1e-3
  assert _max_diff(jax.jit(unstopped)(tp), step(sp, tx.init(sp), tp, x, y)[0]) <= TOL


def test_pruned_optimizer_receives_params(x64):
  sp, tp = init_mlp(0), init_mlp(1)
  tx = jopt.prune(optax.sgd(0.1), 0.5)
  step = jd.distill_step(mlp, mlp, tx, temperature=2.0, alpha=0.5)

  @jax.jit
  def hand(sp, opt_state, x, y):
    t = mlp(tp, x)
    g = jax.grad(lambda p: jd.distill_loss(mlp(p, x), t, y, temperature=2.0, alpha=0.5))(sp)
    u, opt_state = tx.update(g, opt_state, sp)
    return optax.apply_updates(sp, u), opt_state

  a, sa = sp, tx.init(sp)
  b, sb = sp, tx.init(sp)
  for i in range(3):
    x, y = batch(i)
    a, sa, _ = step(a, sa, tp, x, y)
    b, sb = hand(b, sb, x, y)
  assert _max_diff(a, b) <= TOL
  for k in ("w1", "w2"):
    assert np.mean(np.asarray(a[k]) == 0.0) == 0.5
    assert np.array_equal(np.asarray(a[k]) != 0.0, np.asarray(sa.masks[k]))


def test_extra_loss_trains_a_hint_projection_in_the_student_params(x64):
  net, tp = init_mlp(0), init_mlp(1, d_h=9)
  sp = {"net": net, "hint": jd.init_hint_projection(jax.random.key(0), 5, 9, dtype=jnp.float64)}
  student = lambda p, x: mlp_aux(p["net"], x)
  extra = lambda p, s_h, t_h, x, y: (0.5 * jd.hint_loss(s_h, t_h, p["hint"])
                                     + 0.1 * jd.rkd_distance_loss(s_h, t_h))
  tx = optax.sgd(0.3)
  step = jd.distill_step(student, mlp_aux, tx, temperature=2.0, alpha=0.9, extra_loss=extra,
                         has_aux=True)
  x, y = batch(6)
  new, _, m = step(sp, tx.init(sp), tp, x, y)

  def loss(p):
    s_logits, s_h = student(p, x)
    t_logits, t_h = mlp_aux(tp, x)
    return jd.distill_loss(s_logits, t_logits, y, temperature=2.0, alpha=0.9) + extra(
        p, s_h, t_h, x, y)
  total, g = jax.value_and_grad(loss)(sp)
  assert abs(float(m["loss"]) - float(total)) <= TOL
  assert abs(float(m["loss"]) - float(m["distill_loss"]) - float(m["extra_loss"])) <= TOL
  assert _max_diff(new, jax.tree.map(lambda p, gg: p - 0.3 * gg, sp, g)) <= TOL
  assert _max_diff(new["hint"], sp["hint"]) > 1e-4   # the projection is trained


def test_unlabelled_transfer_set_and_float32_params():
  sp, tp = init_mlp(0, dtype=np.float32), init_mlp(1, dtype=np.float32)
  tx = optax.sgd(0.1)
  step = jd.distill_step(mlp, mlp, tx, temperature=5.0, alpha=1.0)
  x, _ = batch(7)
  new, _, m = step(sp, tx.init(sp), tp, x.astype(jnp.float32))
  assert set(m) == {"loss", "distill_loss", "agreement"}
  assert all(new[k].dtype == jnp.float32 for k in new)
  assert m["loss"].dtype == jnp.float32 and m["agreement"].dtype == jnp.float32
  eager = jd.distill_step(mlp, mlp, tx, temperature=5.0, alpha=1.0, jit=False)
  new2, _, m2 = eager(sp, tx.init(sp), tp, x.astype(jnp.float32))
  assert _max_diff(new, new2) <= 1e-6
  assert abs(float(m["loss"]) - float(m2["loss"])) <= 1e-6


def test_bf16_teacher_logits_are_averaged_in_float32():
  sp = init_mlp(0, dtype=np.float32)
  t16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), init_mlp(1, dtype=np.float32))
  t32 = init_mlp(2, dtype=np.float32)
  tx = optax.sgd(0.1)
  half = lambda p, x: mlp(p, x.astype(jnp.bfloat16))   # a bf16 teacher, bf16 logits
  step = jd.distill_step(mlp, [half, mlp], tx, temperature=2.0, alpha=1.0)
  x, _ = batch(8)
  x = x.astype(jnp.float32)
  _, _, m = step(sp, tx.init(sp), [t16, t32], x)
  assert m["loss"].dtype == jnp.float32
  mean = (np.asarray(half(t16, x).astype(jnp.float32), np.float64)
          + np.asarray(mlp(t32, x), np.float64)) / 2.0
  ref = np_distill(np.asarray(mlp(sp, x), np.float64), mean, None, 2.0, 1.0)
  # bf16 matmuls round differently inside and outside jit: measured 3e-5 relative
  assert abs(float(m["loss"]) - ref) <= 2e-4 * ref


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(temperature=0.0), ValueError, "distill_step: temperature=0.0 is outside"),
    (dict(alpha=2.0), ValueError, "distill_step: alpha=2.0 is outside"),
    (dict(teacher_apply=[]), ValueError, "distill_step: teacher_apply is an empty list"),
    (dict(teacher_apply=[mlp, "x"]), TypeError, "distill_step: teacher_apply must be a function"),
    (dict(student_apply=None), TypeError, "distill_step: student_apply=None must be a function"),
    (dict(tx=optax.sgd), TypeError, "distill_step: tx=.* must be an optax gradient"),
    (dict(extra_loss=3), TypeError, "distill_step: extra_loss=3 must be None or a function"),
    (dict(has_aux=1), TypeError, "distill_step: has_aux=1 .* must be bools"),
])
def test_construction_errors(kwargs, err, match):
  args = dict(student_apply=mlp, teacher_apply=mlp, tx=optax.sgd(0.1), temperature=2.0,
              alpha=0.5)
  args.update(kwargs)
  with pytest.raises(err, match=match):
    jd.distill_step(args.pop("student_apply"), args.pop("teacher_apply"), args.pop("tx"), **args)


def test_call_errors_fail_before_any_update():
  sp = init_mlp(0, dtype=np.float32)
  tp = init_mlp(1, d_out=7, dtype=np.float32)
  tx = optax.sgd(0.1)
  x, y = batch(0)
  x, y = x.astype(jnp.float32), y.astype(jnp.int32)
  state = tx.init(sp)
  mismatch = jd.distill_step(mlp, mlp, tx, temperature=2.0, alpha=0.5)
  with pytest.raises(ValueError, match=r"student_logits \(8, 4\) and teacher_logits \(8, 7\)"):
    mismatch(sp, state, tp, x, y)
  step = jd.distill_step(mlp, mlp, tx, temperature=2.0, alpha=0.5)
  with pytest.raises(ValueError, match="labels=None .* alpha must be 1.0"):
    step(sp, state, init_mlp(1, dtype=np.float32), x)
  ens = jd.distill_step(mlp, [mlp, mlp], tx, temperature=2.0, alpha=0.5)
  with pytest.raises(ValueError, match="ensemble of 2 teacher_apply functions needs teacher_params"
                                       " as a list/tuple of 2 param trees, got a list of 3"):
    ens(sp, state, [tp, tp, tp], x, y)
  with pytest.raises(ValueError, match="got dict"):
    ens(sp, state, tp, x, y)
  aux = jd.distill_step(mlp, mlp, tx, temperature=2.0, alpha=0.5, has_aux=True)
  with pytest.raises(TypeError, match="has_aux=True, teacher_apply must return"):
    aux(sp, state, init_mlp(1, dtype=np.float32), x, y)
  no_aux = jd.distill_step(mlp_aux, mlp, tx, temperature=2.0, alpha=0.5)
  with pytest.raises(TypeError, match="student_apply must return a logits array.*has_aux=True"):
    no_aux(sp, state, init_mlp(1, dtype=np.float32), x, y)
  bad_extra = jd.distill_step(mlp, mlp, tx, temperature=2.0, alpha=0.5,
                              extra_loss=lambda p, s, t, x, y: s)
  with pytest.raises(ValueError, match="extra_loss must return a floating scalar"):
    bad_extra(sp, state, init_mlp(1, dtype=np.float32), x, y)


def test_docstring_example_runs():
  names, failures = run_doctests("jopt.distill.step")
  assert "distill_step" in names
  assert failures == 0
