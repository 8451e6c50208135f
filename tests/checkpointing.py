"""Checkpoint test helpers: a table of jopt state kinds, orbax targets, and the kill-mid-save child.

Each :class:`Kind` builds, afresh on every call of ``build()``, a training run
whose carry (``{"params", "opt_state", ...}``) holds one kind of jopt state:
optimizer moments and hyperparameters, pruning masks, a quantization observer,
a loss scale, early stopping, accumulation buffers, skipped-step counters.
``Run.step(carry, i)`` is a fresh ``jax.jit`` of one training step at step index
``i`` (an int32 array, so the program is compiled once); the data of step ``i``
depend on ``i`` only, so a run resumed at any step sees the same batches.

``python -m tests.checkpointing MODE DIR SIZE`` is the child process of the
kill-mid-save tests (tests/test_checkpoint_states.py): it saves a first
checkpoint completely, writes the marker ``DIR/saving`` and starts a second,
large save that the parent kills with SIGKILL. Modes: ``manager`` (an orbax
``CheckpointManager``), ``pipeline`` (the pipeline's ``save_carry`` then
``save_progress``) and ``progress`` (``save_progress`` in a loop).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

import jopt

__all__ = ["Kind", "Run", "KINDS", "abstract_like", "sharded", "carry_shardings",
           "assert_identical", "assert_same_shardings", "pickle_files", "init_params",
           "manager_trees", "pipeline_trees", "progress_doc"]

_IN, _HIDDEN, _OUT, _BATCH = 8, 16, 4, 16
_F32 = jnp.float32


# -- the model and its data -----------------------------------------------------------------------
def init_params() -> dict[str, Any]:
  """A two-layer MLP, ``dense1`` (8, 16) and ``dense2`` (16, 4): kernels divisible by 4 (N:M)."""
  rng = np.random.default_rng(0)
  return {"dense1": {"kernel": jnp.asarray(rng.normal(size=(_IN, _HIDDEN)) * 0.5, _F32),
                     "bias": jnp.asarray(rng.normal(size=(_HIDDEN,)) * 0.1, _F32)},
          "dense2": {"kernel": jnp.asarray(rng.normal(size=(_HIDDEN, _OUT)) * 0.5, _F32),
                     "bias": jnp.asarray(rng.normal(size=(_OUT,)) * 0.1, _F32)}}


_STEPS = 16
_DATA = np.random.default_rng(1)
_XS = _DATA.standard_normal((_STEPS + 1, _BATCH, _IN), np.float32)   # the last one: validation
_YS = _DATA.standard_normal((_STEPS + 1, _BATCH, _OUT), np.float32)


def _batch(i: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The batch of step ``i`` (``i = 16``: the validation batch no training step sees)."""
  return jnp.asarray(_XS)[i], jnp.asarray(_YS)[i]


def _forward(p: Any, x: jax.Array) -> jax.Array:
  h = jnp.tanh(x @ p["dense1"]["kernel"] + p["dense1"]["bias"])
  return h @ p["dense2"]["kernel"] + p["dense2"]["bias"]


def _loss(p: Any, i: jax.Array) -> jax.Array:
  x, y = _batch(i)
  return jnp.mean((_forward(p, x) - y) ** 2)


def _val_loss(p: Any) -> jax.Array:
  return _loss(p, jnp.asarray(_STEPS, jnp.int32))


def _at(i: jax.Array, steps: tuple[int, ...]) -> jax.Array:
  return jnp.any(i == jnp.asarray(steps, jnp.int32))


def _poisoned(g: Any, bad: jax.Array, value: float) -> Any:
  """``g`` with every entry replaced by ``value`` (inf or NaN) where ``bad``."""
  return jax.tree.map(lambda x: jnp.where(bad, jnp.asarray(value, x.dtype), x), g)


# -- the table ------------------------------------------------------------------------------------
class Run(NamedTuple):
  init: Callable[[], Any]                     # the carry at step 0
  step: Callable[[Any, jax.Array], Any]       # jitted: (carry, i) -> carry after step i


@dataclasses.dataclass(frozen=True)
class Kind:
  """One kind of jopt state: its run, its length, the round-trip step, what makes it mid-flight."""
  name: str
  build: Callable[[], Run]
  total: int                                  # N, the straight run's steps
  at: int                                     # the round-trip test's checkpoint step
  check: Callable[[Any], None]                # asserts the state at ``at`` is mid-flight
  mesh: Any = None                            # the mesh of a sharded kind (see sharded)


def _train(make_tx: Callable[[], Any], *, grads: Callable[..., Any] | None = None,
           extra: Callable[..., dict[str, Any]] | None = None,
           before: Callable[[Any, jax.Array], Any] | None = None) -> Callable[[], Run]:
  """A plain loop ``params <- apply_updates(params, tx.update(g_i, state, params, **extra))``.

  ``grads(params, opt_state, i)`` replaces the plain gradient (loss scaling,
  poisoned steps); ``extra(params, i)`` gives update keywords (``value=``);
  ``before(opt_state, i)`` edits the state first, as a user between steps would.
  """
  def build() -> Run:
    tx = make_tx()

    def init():
      p = init_params()
      return {"params": p, "opt_state": tx.init(p)}

    @jax.jit
    def step(c, i):
      p, s = c["params"], c["opt_state"]
      if before is not None:
        s = before(s, i)
      g = grads(p, s, i) if grads is not None else jax.grad(_loss)(p, i)
      kw = extra(p, i) if extra is not None else {}
      u, s = tx.update(g, s, p, **kw)
      return {"params": optax.apply_updates(p, u), "opt_state": s}

    return Run(init, step)
  return build


def _qat(bins: int = 16) -> Run:
  """QAT: 4-bit fake-quantized weights, 8-bit activations on an observer's range.

  ``bins=16``: a histogram observer; ``bins=0``: the default min / max observer (its
  state holds a one-element histogram placeholder: orbax refuses zero-size arrays).
  """
  tx = jopt.adam(1e-2)

  def init():
    p = init_params()
    return {"params": p, "opt_state": tx.init(p), "observer": jopt.quant.observer_init(bins=bins)}

  def loss(p, obs, i):
    x, y = _batch(i)
    q = jopt.quant.fake_quant_params(p, default_bits=4)
    h = jnp.tanh(x @ q["dense1"]["kernel"] + q["dense1"]["bias"])
    obs = jopt.quant.observer_update(obs, jax.lax.stop_gradient(h))
    h = jopt.quant.fake_quant(h, 8, clip_range=jopt.quant.observer_range(obs))
    out = h @ q["dense2"]["kernel"] + q["dense2"]["bias"]
    return jnp.mean((out - y) ** 2), obs

  @jax.jit
  def step(c, i):
    g, obs = jax.grad(loss, has_aux=True)(c["params"], c["observer"], i)
    u, s = tx.update(g, c["opt_state"], c["params"])
    return {"params": optax.apply_updates(c["params"], u), "opt_state": s, "observer": obs}

  return Run(init, step)


def _lr_cut(s, i):
  """The user halves SGD's learning rate before step 3 (a hyperparameter only the state holds)."""
  lr = jopt.hyperparams(s)["learning_rate"]
  return jopt.set_hyperparams(s, learning_rate=jnp.where(i == 3, lr * 0.5, lr))


def _scaled_grads(p, s, i):
  """Gradients of the scaled loss; steps 1 and 6 overflow (inf gradients)."""
  g = jax.grad(lambda q: jopt.precision.scale_loss(_loss(q, i), s))(p)
  return _poisoned(g, _at(i, (1, 6)), float("inf"))


def _nan_grads(p, s, i):
  del s
  return _poisoned(jax.grad(_loss)(p, i), _at(i, (2, 3, 7)), float("nan"))


def _overfitting_value(p, i):
  """A validation metric that improves until step 4, then worsens (patience runs out at 8)."""
  return {"value": _val_loss(p) + jnp.abs(i - 4).astype(_F32) * 0.25}


def _plateau_value(p, i):
  del p
  return {"value": jnp.where(i < 3, 3.0 - i.astype(_F32), jnp.asarray(1.0, _F32))}


def _inner(s, cls):
  """The first sub-state of type ``cls`` in an optimizer state."""
  found = [x for x in jax.tree.leaves(s, is_leaf=lambda x: isinstance(x, cls))
           if isinstance(x, cls)]
  assert found, f"no {cls} in the state"
  return found[0]


def _check_adam_schedule(c):
  s = _inner(c["opt_state"], jopt.AdamState)
  assert int(s.count) == 5 and 0 < float(s.hyperparams["learning_rate"]) < 1e-2


def _check_sgd(c):
  s = _inner(c["opt_state"], jopt.SgdMomentumState)
  assert float(s.hyperparams["learning_rate"]) == np.float32(0.05)   # cut from 0.1
  assert np.any(np.asarray(s.trace["dense1"]["kernel"]))


def _check_adam_8bit(c):
  s = _inner(c["opt_state"], jopt.Adam8bitState)
  codes = np.asarray(s.mu["dense1"]["kernel"])
  assert codes.dtype == np.uint8 and len(np.unique(codes)) > 4


def _check_adafactor(c):
  s = _inner(c["opt_state"], jopt.AdafactorMomentumState)
  row, col, full = (x["dense1"]["kernel"] for x in (s.v_row, s.v_col, s.v))
  assert row.shape == (_IN,) and col.shape == (_HIDDEN,) and full.size == 1   # factored
  assert float(row.min()) > 0 and np.any(np.asarray(s.ema["dense1"]["kernel"]))


def _check_schedule_free(c):
  s = _inner(c["opt_state"], jopt.ScheduleFreeState)
  assert 0 < float(s.max_lr) < 1e-2 and float(s.weight_sum) > 0     # mid-warmup


def _check_plateau(c):
  s = _inner(c["opt_state"], jopt.ReduceOnPlateauState)
  assert float(s.scale) < 1.0


def _check_prune_weight(c):
  s = _inner(c["opt_state"], jopt.prune.PruneState)
  m = np.asarray(s.masks["dense1"]["kernel"])
  assert 0 < float(s.sparsity) < 0.75 and 0 < (~m).sum() < m.size       # mid-schedule
  assert np.asarray(s.masks["dense1"]["bias"]).all()


def _check_prune_n_m(c):
  s = _inner(c["opt_state"], jopt.prune.PruneState)
  m = np.asarray(s.masks["dense2"]["kernel"])            # (16, 4): groups of 4 along axis 0
  assert (m.reshape(4, 4, _OUT).sum(1) == 2).all()


def _check_observer(c):
  o = c["observer"]
  assert int(o.count) == 4 and float(o.histogram.sum()) == 4 * _BATCH * _HIDDEN
  assert float(o.limit) > 0 and float(o.min) < float(o.max)


def _check_minmax_observer(c):
  o = c["observer"]
  assert int(o.count) == 4 and o.histogram.shape == (1,) and float(o.histogram[0]) == 0.0
  assert float(o.min) < float(o.max)


def _check_loss_scale(c):
  s = c["opt_state"]
  assert float(s.scale) == 2.0 ** 9 and int(s.skipped) == 1 and int(s.good_steps) == 3


def _check_early_stopping(c):
  s = jopt.early_stopping_state(c["opt_state"])
  assert int(s.wait) == 3 and int(s.best_step) == 4 and not bool(s.stopped)


def _check_accumulate(c):
  s = c["opt_state"]
  assert int(s.mini_step) == 3 and int(s.gradient_step) == 1        # 3 of 4 micro-steps
  assert np.any(np.asarray(s.acc["dense1"]["kernel"]))


def _check_skip(c):
  s = c["opt_state"]
  assert int(s.skipped) == 2 and int(s.consecutive) == 2


KINDS = [
    Kind("adam_schedule", _train(lambda: jopt.adam(jopt.warmup_cosine_decay_schedule(
        0.0, 1e-2, 3, 20, end_value=1e-3))), 12, 5, _check_adam_schedule),
    Kind("sgd_lr_set_by_user", _train(lambda: jopt.sgd(0.1, momentum=0.9, nesterov=True),
                                      before=_lr_cut), 10, 6, _check_sgd),
    Kind("adam_8bit", _train(lambda: jopt.adam_8bit(1e-2, block_size=4, min_8bit_size=0)),
         10, 5, _check_adam_8bit),
    Kind("adafactor_factored", _train(lambda: jopt.adafactor(
        1e-2, min_dim_size_to_factor=4, momentum=0.9)), 10, 5, _check_adafactor),
    Kind("schedule_free_adamw", _train(lambda: jopt.schedule_free_adamw(1e-2, warmup_steps=8)),
         10, 4, _check_schedule_free),
    Kind("reduce_on_plateau", _train(lambda: optax.chain(
        jopt.adam(1e-2), jopt.reduce_on_plateau(factor=0.5, patience=1)),
        extra=_plateau_value), 10, 6, _check_plateau),
    Kind("prune_weight", _train(lambda: jopt.prune(
        jopt.adam(1e-2), jopt.polynomial_sparsity_schedule(0.75, 0, 8), update_every=2)),
         12, 5, _check_prune_weight),
    Kind("prune_n_m", _train(lambda: jopt.prune(jopt.sgd(0.05, momentum=0.9), granularity="n_m",
                                                n_m=(2, 4), begin_step=2, update_every=3)),
         10, 4, _check_prune_n_m),
    Kind("qat_observer", _qat, 10, 4, _check_observer),
    Kind("qat_minmax_observer", lambda: _qat(bins=0), 10, 4, _check_minmax_observer),
    Kind("loss_scale", _train(lambda: jopt.precision.loss_scale(
        jopt.adam(1e-2), 2.0 ** 10, growth_interval=4), grads=_scaled_grads), 10, 5,
         _check_loss_scale),
    Kind("early_stopping", _train(lambda: optax.chain(jopt.adam(1e-2), jopt.early_stopping(
        patience=4, restore_best=True)), extra=_overfitting_value), 12, 8, _check_early_stopping),
    Kind("accumulate", _train(lambda: jopt.accumulate(jopt.adam(1e-2), every_k=4)), 12, 7,
         _check_accumulate),
    Kind("skip_nonfinite", _train(lambda: jopt.skip_nonfinite(jopt.sgd(0.1, momentum=0.9)),
                                  grads=_nan_grads), 10, 4, _check_skip),
]


# -- orbax targets and comparisons ----------------------------------------------------------------
def abstract_like(init: Callable[[], Any], mesh: jax.sharding.Mesh | None = None) -> Any:
  """The abstract target a restarting process builds: ``jax.eval_shape(init)`` plus shardings.

  Nothing is allocated. Each ``jax.ShapeDtypeStruct`` gets a
  ``SingleDeviceSharding`` on the first device, or with ``mesh`` the rule of
  :func:`sharded`; orbax restores every array onto its target's sharding.
  """
  abstract = jax.eval_shape(init)
  if mesh is None:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: device, abstract)
  else:
    shardings = carry_shardings(abstract, mesh)
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      abstract, shardings)


def sharded(kind: Kind, mesh: jax.sharding.Mesh) -> Kind:
  """``kind`` on a 1-D mesh: entries of width 16 (``dense1``'s columns) split over ``mesh``'s axis.

  Every (16,)-shaped or (8, 16)-shaped leaf of the carry (the params and the
  state slots shaped like them: moments, masks) is split along its last axis,
  everything else is replicated; the step is jitted with those shardings in and
  out, as a sharded training loop pins them; :func:`abstract_like` with ``mesh``
  puts the same rule on the restore target.
  """
  def build() -> Run:
    run = kind.build()
    shardings = carry_shardings(jax.eval_shape(run.init), mesh)

    def init():
      return jax.device_put(run.init(), shardings)

    step = jax.jit(run.step, in_shardings=(shardings, None), out_shardings=shardings)
    return Run(init, step)
  return dataclasses.replace(kind, name=f"{kind.name}_sharded", build=build, mesh=mesh)


def carry_shardings(abstract: Any, mesh: jax.sharding.Mesh) -> Any:
  """The sharding rule of :func:`sharded`, leaf by leaf."""
  axis = mesh.axis_names[0]
  P = jax.sharding.PartitionSpec  # pylint: disable=invalid-name

  def rule(x):
    split = x.ndim >= 1 and x.shape[-1] == _HIDDEN
    spec = P(*([None] * (x.ndim - 1)), axis) if split else P()
    return jax.sharding.NamedSharding(mesh, spec)
  return jax.tree.map(rule, abstract)


def assert_identical(got: Any, want: Any) -> None:
  """Same tree structure (the jopt state classes included), dtypes, shapes and bytes."""
  assert jax.tree.structure(got) == jax.tree.structure(want), (jax.tree.structure(got),
                                                               jax.tree.structure(want))
  flat, _ = jax.tree_util.tree_flatten_with_path(want)
  for a, (path, b) in zip(jax.tree.leaves(got), flat):
    a_np, b_np = np.asarray(a), np.asarray(b)
    where = jax.tree_util.keystr(path)
    assert (a_np.dtype, a_np.shape) == (b_np.dtype, b_np.shape), (where, a_np.dtype, b_np.dtype)
    assert a_np.tobytes() == b_np.tobytes(), (where, a_np, b_np)


def assert_same_shardings(got: Any, want: Any) -> None:
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert isinstance(a, jax.Array)
    assert a.sharding.is_equivalent_to(b.sharding, a.ndim), (a.sharding, b.sharding)


_PICKLE_SUFFIXES = (".pkl", ".pickle")


def pickle_files(root: str | os.PathLike[str]) -> list[str]:
  """Files under ``root`` that are pickles: a .pkl / .pickle name, or a ``\\x80 <2..5>`` start."""
  found = []
  for dirpath, _, files in os.walk(root):
    for f in files:
      path = os.path.join(dirpath, f)
      with open(path, "rb") as fh:
        head = fh.read(2)
      magic = len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5   # pickle protocols 2-5
      if magic or f.endswith(_PICKLE_SUFFIXES):
        found.append(path)
  return found


# -- the kill-mid-save child ----------------------------------------------------------------------
def manager_trees(size: int) -> tuple[Any, Any]:
  """``(step1, step2)`` for the CheckpointManager kill test: {params, AdamState} from numpy.

  Step 1 is small; step 2 has ``size``-entry arrays (random, so it compresses
  badly and takes a while to save). Both are built from NumPy generators only,
  so the parent rebuilds step 1 bit for bit without running any jax program.
  """
  def tree(seed, n):
    rng = np.random.default_rng(seed)
    p = {"w": rng.standard_normal(n, np.float32), "b": rng.standard_normal(3, np.float32)}
    s = jopt.adam(1e-3).init(p)
    s = s._replace(count=jnp.asarray(seed, jnp.int32),
                   mu=jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape, np.float32)),
                                   p),
                   nu=jax.tree.map(lambda x: jnp.asarray(rng.random(x.shape, np.float32)), p))
    return {"params": jax.tree.map(jnp.asarray, p), "opt_state": s}
  return tree(1, 1000), tree(2, size)


def pipeline_trees(size: int) -> tuple[tuple[Any, None], tuple[Any, Any]]:
  """``((params1, None), (params2, masks2))``: the carries of two pipeline stages."""
  rng = np.random.default_rng(3)
  p1 = {"dense": {"kernel": jnp.asarray(rng.standard_normal((40, 25), np.float32)),
                  "bias": jnp.asarray(rng.standard_normal(25, np.float32))}}
  p2 = {"dense": {"kernel": jnp.asarray(rng.standard_normal((size // 100, 100), np.float32)),
                  "bias": jnp.asarray(rng.standard_normal(100, np.float32))}}
  m2 = jax.tree.map(lambda x: jnp.asarray(rng.random(x.shape) < 0.5), p2)
  return (p1, None), (p2, m2)


def progress_doc(version: int, rows: int) -> dict[str, Any]:
  """A progress document whose last key (``"end"``) shows it was written to the end."""
  return {"fingerprint": {"seed": 0}, "version": version,
          "rows": [{"index": r, "name": f"stage-{r}", "loss": r * 0.5 + version}
                   for r in range(rows)],
          "end": version}


def _touch(path: str) -> None:
  with open(path, "w", encoding="utf-8") as f:
    f.write("1")


def _child(mode: str, out: str, size: int) -> None:
  from jopt.pipeline import checkpoint as pipeline_ckpt  # pylint: disable=import-outside-toplevel
  os.makedirs(out, exist_ok=True)
  if mode == "manager":
    step1, step2 = manager_trees(size)
    jax.block_until_ready(step2)
    with ocp.CheckpointManager(os.path.join(out, "ckpt")) as mngr:
      mngr.save(1, args=ocp.args.StandardSave(step1))
      mngr.wait_until_finished()
      _touch(os.path.join(out, "saving"))
      mngr.save(2, args=ocp.args.StandardSave(step2))
      mngr.wait_until_finished()
    _touch(os.path.join(out, "saved"))
  elif mode == "pipeline":
    (p1, _), (p2, m2) = pipeline_trees(size)
    jax.block_until_ready((p2, m2))
    root = os.path.join(out, "checkpoints")
    first = {"index": 1, "dir": "1-train", "has_masks": False, "quant": None}
    pipeline_ckpt.save_carry(root, "1-train", p1, None)
    pipeline_ckpt.save_progress(root, {"fingerprint": {"seed": 0}, "finished": [first],
                                       "rows": []})
    _touch(os.path.join(out, "saving"))
    pipeline_ckpt.save_carry(root, "2-prune", p2, m2)
    second = {"index": 2, "dir": "2-prune", "has_masks": True, "quant": None}
    pipeline_ckpt.save_progress(root, {"fingerprint": {"seed": 0}, "finished": [first, second],
                                       "rows": []})
    _touch(os.path.join(out, "saved"))
  elif mode == "progress":
    root = os.path.join(out, "checkpoints")
    version = 0
    while True:
      pipeline_ckpt.save_progress(root, progress_doc(version, size))
      if version == 0:
        _touch(os.path.join(out, "saving"))
      version += 1
  else:
    raise SystemExit(f"unknown mode {mode!r}; use manager, pipeline or progress")


if __name__ == "__main__":
  _child(sys.argv[1], sys.argv[2], int(sys.argv[3]))
