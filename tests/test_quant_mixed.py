"""jopt.quant mixed precision: measured sensitivity, the exact knapsack, budgets and rules."""

import doctest
import fnmatch
import functools
import inspect
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

import jopt
from jopt import quant
from jopt.quant import mixed
from jopt.training import model

BITS = (2, 3, 4, 8)


def _train_mlp():
  """A 64-32-16-10 MLP on the digits, 60 full-batch Adam steps (float32, trained once)."""
  params, batches = _train_mlp_np()
  return jax.tree.map(jnp.asarray, params), [tuple(map(jnp.asarray, b)) for b in batches]


@functools.lru_cache(maxsize=1)
def _train_mlp_np():
  with jax.enable_x64(False):
    params, batches = _train_mlp_jax()
  return jax.tree.map(np.asarray, params), [tuple(map(np.asarray, b)) for b in batches]


def _train_mlp_jax():
  data = jopt.training.load_digits()
  params = model.init_mlp(jax.random.key(0), (64, 32, 16, 10))
  tx = jopt.adam(1e-2)
  state = tx.init(params)
  batch = (jnp.asarray(data.train.x), jnp.asarray(data.train.y))

  @jax.jit
  def step(params, state):
    g = jax.grad(model.loss_fn)(params, batch)
    u, state = tx.update(g, state, params)
    return optax.apply_updates(params, u), state

  for _ in range(60):
    params, state = step(params, state)
  x, y = np.asarray(data.test.x), np.asarray(data.test.y)
  batches = [(jnp.asarray(x[:176]), jnp.asarray(y[:176])),
             (jnp.asarray(x[176:352]), jnp.asarray(y[176:352]))]
  return params, batches


@pytest.fixture(scope="module")
def trained():
  params, batches = _train_mlp()
  sens = quant.layer_sensitivity(model.loss_fn, params, batches, bits=BITS)
  return params, batches, sens


def _np_loss(params, batch):
  """NumPy float64 reference of the MLP's mean cross-entropy."""
  x, y = (np.asarray(a) for a in batch)
  h = x.astype(np.float64)
  for i, layer in enumerate(params):
    h = h @ np.asarray(layer["w"], np.float64) + np.asarray(layer["b"], np.float64)
    if i < len(params) - 1:
      h = np.maximum(h, 0.0)
  h = h - h.max(axis=1, keepdims=True)
  logp = h - np.log(np.exp(h).sum(axis=1, keepdims=True))
  return -np.mean(logp[np.arange(len(y)), y])


def _loss64(params, batch):
  x, y = batch
  h = x.astype(params[0]["w"].dtype)
  for layer in params[:-1]:
    h = jax.nn.relu(h @ layer["w"] + layer["b"])
  logits = h @ params[-1]["w"] + params[-1]["b"]
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))


def test_table_equals_direct_recomputation(x64):
  params, batches = _train_mlp()
  params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
  batches = [(x.astype(jnp.float64), y) for x, y in batches]
  s = quant.layer_sensitivity(_loss64, params, batches, bits=(2, 8))
  assert list(s.loss_increase) == ["0/w", "1/w", "2/w"] and s.bits == (2, 8)
  ref_float = np.mean([_np_loss(params, b) for b in batches])
  assert abs(s.float_loss - ref_float) <= 1e-12 * abs(ref_float)
  worst = 0.0
  for i, path in enumerate(s.loss_increase):
    for b in s.bits:
      qa = quant.quantize(params[i]["w"], b)       # eager: the jitted path is not reused
      trial = [dict(layer) for layer in params]
      trial[i]["w"] = qa.dequantize()
      ref = np.mean([_np_loss(trial, bt) for bt in batches]) - ref_float
      worst = max(worst, abs(s.loss_increase[path][b] - ref))
      assert s.nbytes[path][b] == qa.nbytes
  print("max abs error of the table vs NumPy float64:", worst)
  assert worst <= 2e-14, worst
  assert s.leaf_nbytes == {f"{i}/{k}": params[i][k].size * 8 for i in range(3) for k in "wb"}


def test_float32_table_matches_reference_within_float32(trained):
  params, batches, s = trained
  ref_float = np.mean([_np_loss(params, b) for b in batches])
  assert abs(s.float_loss - ref_float) <= 2e-6 * ref_float
  qa = quant.quantize(params[1]["w"], 3)
  trial = [dict(layer) for layer in params]
  trial[1]["w"] = qa.dequantize()
  ref = np.mean([_np_loss(trial, bt) for bt in batches]) - ref_float
  assert abs(s.loss_increase["1/w"][3] - ref) <= 2e-6   # float32 loss; measured <= 1.1e-6


def test_loss_is_traced_once():
  params, batches = _train_mlp()
  traces = []

  def loss(p, batch):
    traces.append(1)
    return model.loss_fn(p, batch)

  s = quant.layer_sensitivity(loss, params, batches, bits=(2, 8))
  assert len(s.loss_increase) == 3 and len(traces) == 1


def test_paths_and_quantize_kwargs_select_and_size():
  params, batches = _train_mlp()
  s = quant.layer_sensitivity(model.loss_fn, params, batches, bits=(4, 8), paths=["1/*", "2/w"],
                              granularity="channel")
  assert list(s.loss_increase) == ["1/b", "1/w", "2/w"]
  assert s.nbytes["1/w"][4] == quant.quantize(params[1]["w"], 4, granularity="channel").nbytes
  assert s.quantize_kwargs == {"granularity": "channel"}
  assert all(np.isfinite(v) for row in s.loss_increase.values() for v in row.values())


def _brute_force(s, budget, fixed=None):
  fixed = fixed or {}
  free = [p for p in s.loss_increase if p not in fixed]
  base = sum(n for p, n in s.leaf_nbytes.items() if p not in s.nbytes)
  base += sum(s.leaf_nbytes[p] if b is None else s.nbytes[p][b] for p, b in fixed.items())
  best = None
  for combo in itertools.product(s.bits, repeat=len(free)):
    nb = base + sum(s.nbytes[p][b] for p, b in zip(free, combo))
    loss = sum(s.loss_increase[p][b] for p, b in zip(free, combo))
    if nb <= budget and (best is None or (loss, nb) < best[:2]):
      best = (loss, nb, dict(zip(free, combo)))
  return best


def _cost(s, rules):
  nb = sum(s.leaf_nbytes[p] if b is None else s.nbytes[p][b] for p, b in rules.items())
  loss = sum(s.loss_increase[p][b] for p, b in rules.items() if b is not None)
  return loss, nb


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_knapsack_equals_brute_force(data):
  n = data.draw(st.integers(1, 4))
  bits = tuple(sorted(data.draw(st.sets(st.integers(2, 8), min_size=1, max_size=4))))
  losses, sizes = {}, {}
  for j in range(n):
    # small integer losses make ties likely (ties go to fewer bytes); negatives allowed
    losses[f"l{j}"] = {b: float(data.draw(st.integers(-3, 20))) for b in bits}
    sizes[f"l{j}"] = {b: data.draw(st.integers(1, 60)) for b in bits}
  leaf = {p: 200 for p in losses} | {"bias": data.draw(st.integers(0, 9))}
  s = quant.Sensitivity(0.0, bits, losses, sizes, leaf, {})
  lo = leaf["bias"] + sum(min(r.values()) for r in sizes.values())
  hi = leaf["bias"] + sum(max(r.values()) for r in sizes.values())
  budget = data.draw(st.integers(lo, hi + 5))
  rules = quant.allocate_bits(s, budget)
  assert rules["bias"] is None and set(rules) == set(leaf)
  loss, nb = _cost(s, rules)
  best = _brute_force(s, budget)
  assert nb <= budget and (loss, nb) == best[:2]


def test_knapsack_on_measured_table_equals_brute_force(trained):
  _, _, s = trained
  sizes = [sum(r[b] for r in s.nbytes.values()) for b in BITS]
  bias = sum(n for p, n in s.leaf_nbytes.items() if p.endswith("/b"))
  for budget in np.linspace(sizes[0] + bias, sizes[-1] + bias, 9).astype(int):
    rules = quant.allocate_bits(s, int(budget))
    loss, nb = _cost(s, rules)
    best = _brute_force(s, int(budget))
    assert nb <= budget and abs(loss - best[0]) <= 1e-12 and {p: rules[p] for p in best[2]} == best[2]


def test_allocation_plugs_into_quantize_params_and_is_measured(trained):
  params, batches, s = trained
  all2 = quant.quantize_params(params, {k: 2 for k in s.nbytes})
  budget = sum(s.leaf_nbytes.values()) // 6     # between all-2-bit and all-8-bit
  assert quant.size_report(all2).nbytes <= budget < quant.size_report(
      quant.quantize_params(params, {k: 8 for k in s.nbytes})).nbytes
  rules = quant.allocate_bits(s, budget)
  q = quant.quantize_params(params, rules)
  report = quant.size_report(q)
  predicted_loss, predicted_bytes = _cost(s, rules)
  assert report.nbytes == predicted_bytes <= budget
  for p, b in rules.items():
    assert (report.leaves[p].kind == "float32") if b is None else report.leaves[p].kind.endswith(
        f" {b}-bit tensor")
  deq = quant.dequantize_params(q)
  joint = np.mean([float(model.loss_fn(deq, bt)) for bt in batches]) - s.float_loss
  uniform2 = np.mean([float(model.loss_fn(quant.dequantize_params(all2), bt))
                      for bt in batches]) - s.float_loss
  # the summed single-leaf increases predict the joint one only approximately; the
  # allocation must still beat quantizing everything to 2 bits, which fits any budget here
  assert np.isfinite(joint) and joint < uniform2, (joint, predicted_loss, uniform2)


def test_allocation_with_channel_granularity_matches_size_report():
  params, batches = _train_mlp()
  s = quant.layer_sensitivity(model.loss_fn, params, batches, bits=(3, 8), granularity="channel")
  budget = sum(s.leaf_nbytes.values()) // 5
  rules = quant.allocate_bits(s, budget)
  report = quant.size_report(quant.quantize_params(params, rules, **s.quantize_kwargs))
  assert report.nbytes == _cost(s, rules)[1] <= budget


def test_user_rules_fix_leaves_first_match_wins(trained):
  params, _, s = trained
  budget = sum(s.leaf_nbytes.values()) // 3
  rules = quant.allocate_bits(s, budget, rules=[("0/w", 8), ("*/w", 2)])
  assert rules["0/w"] == 8 and rules["1/w"] == 2 and rules["2/w"] == 2
  rules = quant.allocate_bits(s, 10 ** 6, rules={"2/*": None})
  assert rules["2/w"] is None
  fixed = {"2/w": None}
  best = _brute_force(s, 10 ** 6, fixed)
  assert {p: rules[p] for p in best[2]} == best[2]
  report = quant.size_report(quant.quantize_params(params, rules))
  assert report.leaves["2/w"].kind == "float32" and report.nbytes == _cost(s, rules)[1]


def test_budget_too_small_names_budget_and_minimum(trained):
  _, _, s = trained
  minimum = sum(min(r.values()) for r in s.nbytes.values()) + sum(
      n for p, n in s.leaf_nbytes.items() if p not in s.nbytes)
  assert quant.allocate_bits(s, minimum) == {**{p: 2 for p in s.nbytes},
                                             **{p: None for p in s.leaf_nbytes if p.endswith("b")}}
  with pytest.raises(ValueError, match=f"budget_bytes={minimum - 1} .*takes {minimum} bytes"):
    quant.allocate_bits(s, minimum - 1)
  fixed_min = minimum - s.nbytes["0/w"][2] + s.leaf_nbytes["0/w"]
  with pytest.raises(ValueError, match=f"takes {fixed_min} bytes"):
    quant.allocate_bits(s, fixed_min - 1, rules={"0/w": None})


def test_allocate_errors(trained):
  _, _, s = trained
  with pytest.raises(ValueError, match="'9/w' matches no measured parameter"):
    quant.allocate_bits(s, 10 ** 6, rules={"9/w": 4})
  with pytest.raises(ValueError, match="'0/b' matches no measured"):
    quant.allocate_bits(s, 10 ** 6, rules={"0/b": 4})
  with pytest.raises(ValueError, match="one of the measured widths"):
    quant.allocate_bits(s, 10 ** 6, rules={"0/w": 5})
  with pytest.raises(TypeError, match="rules must be a dict"):
    quant.allocate_bits(s, 10 ** 6, rules=["0/w"])
  for bad in (0, -5):
    with pytest.raises(ValueError, match="budget_bytes="):
      quant.allocate_bits(s, bad)
  for bad in (1.5e3, True):   # not an int: a wrong type
    with pytest.raises(TypeError, match="budget_bytes="):
      quant.allocate_bits(s, bad)
  with pytest.raises(TypeError, match="must be a jopt.quant.Sensitivity"):
    quant.allocate_bits({"0/w": {2: 0.0}}, 100)
  broken = s._replace(loss_increase={**s.loss_increase, "0/w": {2: float("nan"), 3: 0.0,
                                                                 4: 0.0, 8: 0.0}})
  with pytest.raises(ValueError, match="not finite at bits \\[2\\]"):
    quant.allocate_bits(broken, 10 ** 6)
  missing = s._replace(nbytes={k: v for k, v in s.nbytes.items() if k != "1/w"})
  with pytest.raises(ValueError, match="inconsistent at '1/w'"):
    quant.allocate_bits(missing, 10 ** 6)


def test_sensitivity_errors():
  p = {"w": jnp.ones((4, 4)), "b": jnp.ones(4), "n": jnp.ones((2, 2), jnp.int32)}
  loss = lambda p, x: jnp.sum(x @ p["w"])
  xs = [jnp.ones((1, 4))]
  with pytest.raises(ValueError, match="batches is empty"):
    quant.layer_sensitivity(loss, p, [])
  with pytest.raises(ValueError, match="bits=9 is outside"):
    quant.layer_sensitivity(loss, p, xs, bits=(4, 9))
  with pytest.raises(ValueError, match="distinct"):
    quant.layer_sensitivity(loss, p, xs, bits=(4, 4))
  with pytest.raises(TypeError, match="bits='8' must be an integer"):
    quant.layer_sensitivity(loss, p, xs, bits=(4, "8"))
  with pytest.raises(TypeError, match="bits must be a sequence of ints"):
    quant.layer_sensitivity(loss, p, xs, bits=None)
  with pytest.raises(ValueError, match="'z' matches no parameter"):
    quant.layer_sensitivity(loss, p, xs, paths="z")
  with pytest.raises(TypeError, match="non-floating leaves \\['n'\\]"):
    quant.layer_sensitivity(loss, p, xs, paths="*")
  with pytest.raises(ValueError, match="no floating leaf with ndim >= 2"):
    quant.layer_sensitivity(lambda p, x: jnp.sum(p["b"]), {"b": jnp.ones(3)}, xs)
  with pytest.raises(ValueError, match="must return a scalar"):
    quant.layer_sensitivity(lambda p, x: x @ p["w"], p, xs)
  with pytest.raises(ValueError, match="float loss is nan"):
    quant.layer_sensitivity(lambda p, x: jnp.sum(p["w"]) * jnp.nan, p, xs)
  with pytest.raises(ValueError, match="parameter 'w' contains NaN"):
    quant.layer_sensitivity(lambda p, x: jnp.sum(p["b"]), {**p, "w": p["w"].at[0, 0].set(jnp.inf)},
                            xs)
  with pytest.raises(ValueError, match="parameter 'w': .*group_size"):
    quant.layer_sensitivity(loss, p, xs, granularity="group", group_size=3)


def test_paths_with_glob_characters_are_escaped():
  p = {"a[0]": jnp.linspace(-1.0, 1.0, 16).reshape(4, 4), "a0": jnp.ones((4, 4)),
       "b*": jnp.linspace(0.0, 1.0, 16).reshape(4, 4)}
  s = quant.layer_sensitivity(lambda p, x: jnp.sum(x @ (p["a[0]"] + p["a0"] + p["b*"])), p,
                              [jnp.ones((1, 4))], bits=(2, 8))
  for fix in ({"a0": 2, "a?0?": 8, "b?": 8}, {"a0": 8, "a?0?": 2, "b?": 2}):
    rules = quant.allocate_bits(s, 10 ** 4, rules=fix)
    matched = [[n for n in p if fnmatch.fnmatchcase(n, key)] for key in rules]
    assert all(len(m) == 1 for m in matched) and {m[0] for m in matched} == set(p)
    q = quant.quantize_params(p, rules)
    assert q["a0"].bits == fix["a0"] and q["a[0]"].bits == fix["a?0?"] and q["b*"].bits == fix["b?"]


def test_str_and_docstrings():
  params = {"w": jnp.linspace(-1.0, 1.0, 16).reshape(4, 4)}
  s = quant.layer_sensitivity(lambda p, x: jnp.sum((x @ p["w"]) ** 2), params,
                              [jnp.ones((2, 4))], bits=(2, 8))
  text = str(s)
  assert "2-bit" in text and "8-bit" in text and text.splitlines()[1].startswith("w")
  runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
  globs = dict(jax=jax, jnp=jnp, np=np, jopt=jopt)
  names = set()
  for t in doctest.DocTestFinder().find(mixed, globs=globs):
    if t.examples:
      names.add(t.name.rsplit(".", 1)[-1])
      runner.run(t)
  assert runner.failures == 0 and {"layer_sensitivity", "allocate_bits"} <= names
  for name in mixed.__all__:
    assert name in quant.__all__ and getattr(quant, name) is getattr(mixed, name)
    doc = inspect.getdoc(getattr(mixed, name))
    assert 0 < len(doc.splitlines()[0]) <= 100
    if inspect.isfunction(getattr(mixed, name)):
      for part in ("Args:", "Returns:", "Example:", "Reference:", ">>> ", ".. math::"):
        assert part in doc, (name, part)


def test_nnx_variables_are_unwrapped():
  from flax import nnx
  w = jnp.linspace(-1.0, 1.0, 16).reshape(4, 4)
  x = [jnp.linspace(0.0, 1.0, 8).reshape(2, 4)]
  loss = lambda p, x: jnp.sum((x @ p["w"]) ** 2)
  s_var = quant.layer_sensitivity(loss, {"w": nnx.Param(w)}, x, bits=(2, 8))
  s_arr = quant.layer_sensitivity(loss, {"w": w}, x, bits=(2, 8))
  assert s_var == s_arr
