"""early_stopping against a plain-Python transcription of Keras 3's EarlyStopping.

``KerasEarlyStopping`` below restates ``keras.callbacks.EarlyStopping`` (Keras 3,
``keras/src/callbacks/early_stopping.py``: ``on_epoch_end`` and
``_is_improvement``) in a few lines of Python floats, written for this test. It
is extended in two documented ways only: ``rel=True`` (jopt's
``min_delta_mode="rel"``: the margin is ``min_delta * |reference|``, 0 for an
infinite reference) and, as Keras does with ``restore_best_weights=True``,
``best_epoch`` is set at the first monitored epoch.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from jopt.regularizers import (EarlyStoppingState, early_stopping, early_stopping_state,
                               stop_requested)


class KerasEarlyStopping:
  """Keras 3 EarlyStopping's decisions, one ``epoch_end(epoch, value)`` per epoch."""

  def __init__(self, patience, min_delta, mode, baseline, start_from_epoch, rel=False):
    self.patience, self.mode, self.baseline = patience, mode, baseline
    self.start_from_epoch, self.rel = start_from_epoch, rel
    self.min_delta = abs(min_delta) * (-1.0 if mode == "min" else 1.0)
    self.best = math.inf if mode == "min" else -math.inf
    self.wait = 0
    self.best_epoch = -1  # -1: not set yet (Keras: best_weights is None)
    self.stopped_epoch = -1

  def improves(self, value, reference):
    delta = self.min_delta
    if self.rel:
      delta = delta * abs(reference) if math.isfinite(reference) else 0.0
    shifted = value - delta
    return shifted < reference if self.mode == "min" else shifted > reference

  def epoch_end(self, epoch, value):
    """Returns True when training stops at this epoch."""
    if epoch < self.start_from_epoch:
      return False
    if self.best_epoch < 0:
      self.best_epoch = epoch
    self.wait += 1
    if self.improves(value, self.best):
      self.best, self.best_epoch = value, epoch
      if self.baseline is None or self.improves(value, self.baseline):
        self.wait = 0
      return False
    if self.wait >= self.patience and epoch > 0:
      self.stopped_epoch = epoch
      return True
    return False


def _params():
  """A small tree in the default float dtype (float64 under the x64 fixture)."""
  dt = jnp.result_type(float)
  return {"w": jnp.ones((2, 2), dt), "b": jnp.ones((2,), dt)}


def _random_case(r):
  n = int(r.integers(5, 61))
  mode = str(r.choice(["min", "max"]))
  trend = (-1 if mode == "min" else 1) * r.uniform(0.0, 0.3)
  steps = r.normal(trend, 0.3, size=n)
  steps[r.random(n) < 0.25] = 0.0  # plateaus
  values = np.round(np.cumsum(steps) + 5.0, 1)  # rounding makes ties
  values[r.random(n) < 0.03] = np.nan
  case = dict(
      patience=int(r.integers(0, 6)),
      min_delta=float(r.choice([0.0, 0.0, 0.05, 0.1, 0.3])),
      mode=mode,
      min_delta_mode=str(r.choice(["abs", "abs", "rel"])),
      start_from_epoch=int(r.integers(0, 6)),
      baseline=None if r.random() < 0.5 else float(np.round(5.0 + r.normal(0, 0.5), 1)),
  )
  if case["min_delta_mode"] == "rel":
    case["min_delta"] /= 10
  checks = r.random(n) < (0.6 if r.random() < 0.3 else 1.0)  # some runs skip steps
  return case, values, checks


def _reference(case, values, checks):
  ref = KerasEarlyStopping(case["patience"], case["min_delta"], case["mode"], case["baseline"],
                           case["start_from_epoch"], rel=case["min_delta_mode"] == "rel")
  rows, epoch = [], 0
  for v, c in zip(values, checks):
    if not c:
      rows.append(None)
      continue
    stop = ref.epoch_end(epoch, float(v))
    epoch += 1
    rows.append((stop, ref.best, ref.wait, ref.best_epoch))
    if stop:
      break
  return rows, ref.stopped_epoch


def _compare(case, values, checks, update):
  """Drive ``update`` over the sequence; assert each check's decisions equal Keras's."""
  P = _params()
  tx = early_stopping(**case)
  s = tx.init(P)
  rows, stopped_epoch = _reference(case, values, checks)
  g = jax.tree.map(jnp.ones_like, P)
  for i, row in enumerate(rows):
    u, s = update(tx, g, s, values[i], bool(checks[i]))
    if row is None:
      assert not bool(s.stopped)
      continue
    stop, best, wait, best_epoch = row
    got = (bool(s.stopped), float(s.best), int(s.wait), int(s.best_step))
    assert got == (stop, best, wait, best_epoch), (case, i, got, row)
    assert all(bool(jnp.all(x == (0.0 if stop else 1.0))) for x in jax.tree.leaves(u))
  assert int(s.stopped_step) == stopped_epoch
  # once stopped, the state is frozen and the updates are zeros of the update dtype
  if stopped_epoch >= 0:
    frozen = s
    u, s = update(tx, g, s, -1e9 if case["mode"] == "min" else 1e9, True)
    assert all(x.dtype == jnp.float64 and bool(jnp.all(x == 0.0)) for x in jax.tree.leaves(u))
    for name in ("checks", "best", "wait", "best_step", "stopped", "stopped_step"):
      assert np.asarray(getattr(s, name)) == np.asarray(getattr(frozen, name)), name
  return stopped_epoch


def _eager(tx, g, s, value, check):
  return tx.update(g, s, _params(), value=value, check=check)


def test_200_random_sequences_match_keras(x64):
  r = np.random.default_rng(0)
  outcomes = []
  for _ in range(200):
    case, values, checks = _random_case(r)
    outcomes.append((_compare(case, values, checks, _eager), case["min_delta_mode"]))
  stops = [e for e, _ in outcomes if e >= 0]
  # the cases exercise both outcomes, in both margin modes
  assert 40 < len(stops) < 190, len(stops)
  assert any(e >= 0 and m == "rel" for e, m in outcomes)
  assert any(e < 0 and m == "rel" for e, m in outcomes)


def test_jit_traced_value_and_check_no_retrace(x64):
  r = np.random.default_rng(1)
  traces = []
  case = dict(patience=3, min_delta=0.05, mode="min", min_delta_mode="abs",
              start_from_epoch=2, baseline=5.0)
  tx = early_stopping(**case)

  @jax.jit
  def step(g, s, value, check):
    traces.append(None)
    return tx.update(g, s, _params(), value=value, check=check)

  def jitted(tx_, g, s, value, check):
    del tx_
    return step(g, s, jnp.asarray(value, jnp.float64), jnp.asarray(check))

  n_stops = 0
  for _ in range(15):
    _, values, checks = _random_case(r)
    n_stops += _compare(case, values, checks, jitted) >= 0
  assert len(traces) == 1 and n_stops > 0


def test_check_false_skips_the_decision():
  P = _params()
  tx = early_stopping(patience=1)
  s = tx.init(P)
  g = jax.tree.map(jnp.ones_like, P)
  _, s = tx.update(g, s, P, value=1.0)
  for _ in range(5):  # no fresh metric: nothing counts, even a bad value
    u, s = tx.update(g, s, P, value=float("nan"), check=False)
    assert int(s.wait) == 0 and not bool(s.stopped)
    assert all(bool(jnp.all(x == 1.0)) for x in jax.tree.leaves(u))
  assert int(s.count) == 6 and int(s.checks) == 1
  _, s = tx.update(g, s, P, value=2.0)
  assert bool(s.stopped) and int(s.stopped_step) == 1


def test_nan_is_never_an_improvement():
  P = _params()
  tx = early_stopping(patience=2)
  s = tx.init(P)
  for v in [float("nan"), 3.0, float("nan"), float("nan")]:
    _, s = tx.update(P, s, P, value=v)
  assert float(s.best) == 3.0 and int(s.best_step) == 1 and bool(s.stopped)
  # Keras never stops at epoch 0, even with patience 0 and a bad first value
  tx = early_stopping(patience=0)
  s = tx.init(P)
  _, s = tx.update(P, s, P, value=float("nan"))
  assert not bool(s.stopped) and int(s.wait) == 1 and float(s.best) == math.inf
  _, s = tx.update(P, s, P, value=float("nan"))
  assert bool(s.stopped) and int(s.stopped_step) == 1


def _landing(p_dtype, best, current):
  """The stop call's update with restore_best, applied to ``current``."""
  tx = early_stopping(patience=0, restore_best=True)
  b = {"w": jnp.asarray(best, p_dtype)}
  c = {"w": jnp.asarray(current, p_dtype)}
  s = tx.init(b)
  g = jax.tree.map(jnp.zeros_like, b)
  _, s = tx.update(g, s, b, value=1.0)  # best at check 0
  u, s = tx.update(g, s, c, value=2.0)  # stops at check 1
  assert bool(s.stopped)
  return tx, s, g, c, u


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float64])
def test_restore_best_lands_bit_exactly(dtype):
  r = np.random.default_rng(2)
  best = r.normal(size=(64,))
  current = best * r.uniform(0.55, 1.9, size=64)  # within a factor 2: b - p is exact
  with jax.enable_x64(dtype == jnp.float64):
    _, _, _, c, u = _landing(dtype, best, current)
    landed = optax.apply_updates(c, u)["w"]
    want = jnp.asarray(best, dtype)
    assert landed.dtype == dtype
    assert np.asarray(landed).tobytes() == np.asarray(want).tobytes()


def test_restore_best_where_one_step_cannot_be_exact():
  # b = 1e-20 next to p = 1: no float32 u has fl(1 + u) == 1e-20; each further call
  # removes the residue and then returns exact zeros.
  tx, s, g, p, u = _landing(jnp.float32, [1e-20, 0.0, -3.0], [1.0, 5.0, 7.0])
  best = np.asarray([1e-20, 0.0, -3.0], np.float32)
  p = optax.apply_updates(p, u)
  assert np.asarray(p["w"])[0] != best[0]
  np.testing.assert_array_equal(np.asarray(p["w"])[1:], best[1:])
  calls = 0
  while np.asarray(p["w"]).tobytes() != best.tobytes():
    u, s = tx.update(g, s, p, value=0.0)
    p = optax.apply_updates(p, u)
    calls += 1
    assert calls <= 3
  u, s = tx.update(g, s, p, value=0.0)
  assert np.all(np.asarray(u["w"]) == 0.0)
  np.testing.assert_array_equal(np.asarray(early_stopping_state(s).best_params["w"]), best)


def _val_problem(dtype):
  """Train on one target, validate on another: the validation loss dips, then rises."""
  r = np.random.default_rng(3)
  x = jnp.asarray(r.normal(size=(32, 5)), dtype)
  w_train = r.normal(size=(5, 2))
  w_val = 0.5 * w_train + 0.1 * r.normal(size=(5, 2))
  y_train = x @ jnp.asarray(w_train, dtype)
  y_val = x @ jnp.asarray(w_val, dtype)
  train = lambda p: jnp.mean((x @ p["w"] + p["b"] - y_train) ** 2)  # noqa: E731
  val = lambda p: jnp.mean((x @ p["w"] + p["b"] - y_val) ** 2)  # noqa: E731
  p0 = {"w": jnp.zeros((5, 2), dtype), "b": jnp.full((2,), 0.1, dtype)}
  return train, val, p0


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_restore_best_end_to_end_with_adam(dtype):
  with jax.enable_x64(dtype == jnp.float64):
    train, val, p = _val_problem(dtype)
    tx = optax.chain(jopt.adam(0.05), early_stopping(patience=4, restore_best=True))
    s = tx.init(p)

    @jax.jit
    def step(p, s, check):
      value = val(p)  # the metric of the params this call sees
      u, s = tx.update(jax.grad(train)(p), s, p, value=value, check=check)
      return optax.apply_updates(p, u), s, value

    keras = KerasEarlyStopping(4, 0.0, "min", None, 0)
    at_check, epoch, stopped_at = [], 0, None
    for t in range(400):
      check = t % 3 == 2  # evaluate every third step
      before = p
      p, s, value = step(p, s, jnp.asarray(check))
      if check:
        at_check.append(before)
        if keras.epoch_end(epoch, float(value)):
          stopped_at = epoch
          break
        epoch += 1
    assert stopped_at is not None and 2 <= keras.best_epoch < stopped_at
    es = early_stopping_state(s)
    assert int(es.best_step) == keras.best_epoch and int(es.stopped_step) == stopped_at
    best = at_check[keras.best_epoch]
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(best)):
      assert np.asarray(a).tobytes() == np.asarray(b).tobytes()  # landed exactly
    # the flag one step late (the async recipe's extra step) changes nothing
    p2, _, _ = step(p, s, jnp.asarray(False))
    for a, b in zip(jax.tree.leaves(p2), jax.tree.leaves(best)):
      assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_state_structure_and_placeholders():
  P = _params()
  s = early_stopping().init(P)
  assert isinstance(s, EarlyStoppingState) and type(s).__module__ == "jopt"
  assert jax.tree.structure(s.best_params) == jax.tree.structure(P)
  assert all(x.shape == (1,) for x in jax.tree.leaves(s.best_params))
  assert s.count.dtype == s.wait.dtype == s.best_step.dtype == jnp.int32
  assert s.stopped.dtype == jnp.bool_ and s.stopped.shape == ()
  assert s.best.dtype == jnp.float32 and float(s.best) == math.inf
  assert float(early_stopping(mode="max", dtype=jnp.bfloat16).init(P).best) == -math.inf
  full = early_stopping(restore_best=True).init(P)
  for a, b in zip(jax.tree.leaves(full.best_params), jax.tree.leaves(P)):
    assert a.dtype == b.dtype and a.shape == b.shape


def test_stop_requested_finds_the_state_anywhere():
  P = _params()
  es = early_stopping(patience=0)
  inner = optax.chain(optax.scale(1.0), es)
  tx = optax.chain(jopt.sgd(0.1), inner, optax.identity())
  s = tx.init(P)
  flag = stop_requested(s)
  assert isinstance(flag, jax.Array) and flag.shape == () and not bool(flag)
  for v in [1.0, 2.0]:
    _, s = tx.update(P, s, P, value=v)
  assert bool(stop_requested(s)) and bool(stop_requested({"opt": (None, s)}))
  assert int(early_stopping_state(s).stopped_step) == 1
  with pytest.raises(ValueError, match="no EarlyStoppingState"):
    stop_requested(jopt.sgd(0.1).init(P))
  with pytest.raises(ValueError, match="2 EarlyStoppingStates.*sub-state"):
    stop_requested((s, s))


def test_bad_input():
  P = _params()
  for kw, pat in [(dict(patience=-1), "patience=-1 must be an integer >= 0"),
                  (dict(min_delta=-0.1), "min_delta=-0.1"),
                  (dict(min_delta=float("nan")), "min_delta=nan"),
                  (dict(mode="auto"), "mode='auto' is not one of"),
                  (dict(min_delta_mode="relative"), "min_delta_mode='relative'"),
                  (dict(start_from_epoch=-2), "start_from_epoch=-2"),
                  (dict(baseline=float("inf")), "baseline=inf")]:
    with pytest.raises(ValueError, match=f"early_stopping: {pat}"):
      early_stopping(**kw)
  for kw, pat in [(dict(patience=1.5), "patience=1.5"), (dict(patience=True), "patience=True")]:
    with pytest.raises(TypeError, match=f"early_stopping: {pat}"):   # not an int
      early_stopping(**kw)
  with pytest.raises(TypeError, match="restore_best='yes'"):
    early_stopping(restore_best="yes")
  with pytest.raises(TypeError, match="min_delta is a traced value"):
    jax.jit(lambda d: early_stopping(min_delta=d).init(P))(0.1)
  tx = early_stopping()
  s = tx.init(P)
  with pytest.raises(TypeError, match=r"needs the monitored metric.*value=metric.*chain"):
    tx.update(P, s, P)
  with pytest.raises(TypeError, match="needs the monitored metric"):
    optax.chain(jopt.sgd(0.1), tx).update(P, (jopt.sgd(0.1).init(P), s), P)
  with pytest.raises(ValueError, match="value must be a scalar"):
    tx.update(P, s, P, value=jnp.ones(3))
  with pytest.raises(TypeError, match="check must be a Python bool"):
    tx.update(P, s, P, value=1.0, check=1)
  with pytest.raises(ValueError, match="updates: the tree structure"):
    tx.update({"w": P["w"]}, s, P, value=1.0)
  tx = early_stopping(restore_best=True)
  with pytest.raises(ValueError, match="restore_best=True needs the current parameters"):
    tx.update(P, tx.init(P), value=1.0)


def test_best_params_keep_the_params_sharding():
  from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=import-outside-toplevel
  mesh = jax.make_mesh((8,), ("d",))
  sharding = NamedSharding(mesh, PartitionSpec("d"))
  p = {"w": jax.device_put(jnp.arange(16.0, dtype=jnp.float32).reshape(8, 2), sharding)}
  tx = early_stopping(patience=0, restore_best=True)
  for s in (tx.init(p), jax.jit(tx.init)(p)):
    assert s.best_params["w"].sharding.is_equivalent_to(sharding, 2)
    _, s = jax.jit(lambda u, s: tx.update(u, s, p, value=1.0))(p, s)
    assert s.best_params["w"].sharding.is_equivalent_to(sharding, 2)
  placeholder = early_stopping().init(p).best_params["w"]
  assert placeholder.shape == (1,)  # the same on one device or eight


def test_vmap_over_runs_matches_separate_runs(x64):
  # several seeds trained at once (vmap over the state and the metric, one shared check)
  tx = early_stopping(patience=1, min_delta=0.1)
  P = _params()
  values = np.asarray([[3.0, 2.0, 2.5, 2.6], [3.0, 2.0, 1.0, 0.5], [1.0, 0.95, 0.92, 0.91]])
  ps = jax.tree.map(lambda x: jnp.stack([x] * 3), P)
  step = jax.jit(jax.vmap(lambda u, s, v: tx.update(u, s, u, value=v, check=True)))
  s = jax.vmap(tx.init)(ps)
  for t in range(4):
    _, s = step(ps, s, jnp.asarray(values[:, t]))
  for i in range(3):
    rows, stopped_epoch = _reference(
        dict(patience=1, min_delta=0.1, mode="min", min_delta_mode="abs", start_from_epoch=0,
             baseline=None), values[i], np.ones(4, bool))
    assert int(s.stopped_step[i]) == stopped_epoch
    assert float(s.best[i]) == rows[-1][1] and int(s.best_step[i]) == rows[-1][3]
  assert [bool(x) for x in s.stopped] == [True, False, True]
