"""A train-with-validation loop for the regularization lab, several seeds at once.

:func:`fit` trains a :class:`RegMLP` or :class:`RegCNN` with any optax-compatible
transform for a fixed step budget on a :class:`LabData` (from :func:`lab_data`: a
deliberately small training set, so an over-parameterized model overfits
visibly, a validation set and the test split) and records train / validation
curves; :func:`fit_seeds` runs several seeds with one compiled step (side by
side under ``jax.vmap`` for an MLP).

Every regularizer plugs in where it lives in a real loop:

* model side: dropout and batch norm are settings of the model;
* data side: an op ``augment(images, *, key) -> images`` (any :mod:`jopt.augment`
  op) on each NHWC mini-batch, and ``mixup_alpha`` (mixup on one-hot labels);
* loss side: ``penalty(params) -> scalar`` added to the cross-entropy (an L1,
  L2 or elastic-net penalty);
* transform side: decoupled weight decay, proximal L1 and early stopping are
  links of ``tx``. Every step calls ``tx.update(grads, state, params,
  value=metric, check=fresh)``, where ``metric`` is the latest validation
  metric and ``fresh`` says whether it was measured just before this step, so
  a :func:`jopt.regularizers.early_stopping` in the chain sees each evaluation
  exactly once.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jopt._core.validate import check_choice, check_positive_int
from jopt.training.data import LabData
from jopt.training.regularized_models import RegCNN, RegMLP, weight_sparsity

__all__ = ["FitResult", "fit", "fit_seeds", "soft_cross_entropy", "find_state"]

Model = RegMLP | RegCNN
MONITORS = ("val_accuracy", "val_loss")


@dataclasses.dataclass
class FitResult:
  """One seed's run of :func:`fit`.

  Attributes:
    seed: the seed of the init (key ``jax.random.split(jax.random.key(seed))[0]``),
      the batch order (``data.train.batches(batch_size, seed)``) and the random ops.
    params, stats, opt_state: the final parameters, BN statistics and
      transform state (after an early stop with ``restore_best``: the restored
      parameters, with the BN statistics recorded at the same evaluation).
    steps: steps run (fewer than the budget when every seed stopped early).
    curve: ``{"step", "train_accuracy", "train_loss", "val_accuracy", "val_loss"}``,
      NumPy arrays, one entry per evaluation (at step 0, every ``eval_every`` steps, and
      at the end).
    train_accuracy, val_accuracy, test_accuracy: of the final parameters, eval mode.
    train_loss, test_loss: cross-entropy of the final parameters (no penalty).
    best_step: the step with the best validation accuracy in ``curve`` (the first, on ties).
    best_val_accuracy: that accuracy.
    stopped_step: the evaluation step whose metric made an early-stopping link
      stop (the next step's update was the stop), or None when it did not stop.
    sparsity: share of exactly-zero weights (``ndim >= 2``) in the final params.
    loss_history: float32 training loss (cross-entropy + penalty) of every step.
    wall_time: seconds of the whole :func:`fit_seeds` call.
  """

  seed: int
  params: Any
  stats: Any
  opt_state: Any
  steps: int
  curve: dict[str, np.ndarray]
  train_accuracy: float
  val_accuracy: float
  test_accuracy: float
  train_loss: float
  test_loss: float
  best_step: int
  best_val_accuracy: float
  stopped_step: int | None
  sparsity: float
  loss_history: np.ndarray
  wall_time: float

  @property
  def gap(self) -> float:
    """The generalization gap: train accuracy minus test accuracy."""
    return self.train_accuracy - self.test_accuracy


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  r"""Mean cross-entropy against probability targets (one-hot or mixed), in float32.

  .. math:: \mathcal L = -\frac1n \sum_i \sum_c t_{ic} \log \operatorname{softmax}(z_i)_c

  Args:
    logits: ``(n, classes)`` scores.
    targets: ``(n, classes)`` rows summing to 1.

  Returns:
    A float32 scalar; equal to :func:`cross_entropy` for one-hot targets.

  Example:
    >>> from jopt.training import cross_entropy, soft_cross_entropy
    >>> logits, labels = jnp.array([[1.0, 0.0, 0.0]]), jnp.array([0])
    >>> print(round(float(soft_cross_entropy(logits, jax.nn.one_hot(labels, 3))), 4),
    ...       round(float(cross_entropy(logits, labels)), 4))   # log(1 + 2 / e)
    0.5514 0.5514
    >>> mixed = jnp.array([[0.5, 0.5, 0.0]])                    # a mixup-style target
    >>> print(round(float(soft_cross_entropy(logits, mixed)), 4))   # log(e + 2) - 1/2
    1.0514

  Reference: Zhang et al., *mixup: Beyond Empirical Risk Minimization*, ICLR 2018.
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.mean(jnp.sum(targets.astype(jnp.float32) * logp, axis=-1))


def find_state(tree: Any, cls: type) -> list[Any]:
  """Every ``cls`` instance (e.g. ``jopt.EarlyStoppingState``) inside a chain's state.

  Args:
    tree: a transform state, e.g. the state of an ``optax.chain``.
    cls: the state class to look for.

  Returns:
    The instances in tree order (empty when the chain holds none).

  Example:
    >>> tx = optax.chain(jopt.adam(1e-3), jopt.early_stopping(patience=3))
    >>> opt_state = tx.init({"w": jnp.zeros(2)})
    >>> [es] = jopt.training.find_state(opt_state, jopt.EarlyStoppingState)
    >>> int(es.count), jopt.training.find_state(opt_state, jopt.AdamState)[0].mu
    (0, {'w': Array([0., 0.], dtype=float32)})

  Reference: ``optax.tree_utils.tree_get_all_with_path``, without the paths.
  """
  found = []

  def visit(node):
    if isinstance(node, cls):
      found.append(node)
      return True
    return False

  jax.tree.leaves(tree, is_leaf=visit)
  return found


def _early_stopping_states(opt_state: Any) -> list[Any]:
  from jopt.regularizers import EarlyStoppingState  # pylint: disable=import-outside-toplevel
  return find_state(opt_state, EarlyStoppingState)


def _make_step(model: Model, tx, image_shape, num_classes, penalty, augment, mixup_alpha):
  def step(params, stats, opt_state, x, y, key, i, value, check):
    k_aug, k_mix, k_drop = jax.random.split(jax.random.fold_in(key, i), 3)
    images = x.reshape(x.shape[0], *image_shape)
    if augment is not None:
      images = augment(images, key=k_aug)
    targets = jax.nn.one_hot(y, num_classes, dtype=jnp.float32)
    if mixup_alpha > 0:
      from jopt.augment import mixup  # pylint: disable=import-outside-toplevel
      images, targets = mixup(images, targets, key=k_mix, alpha=mixup_alpha)

    def loss(p):
      logits, new_stats = model.apply(p, stats, images, train=True, key=k_drop)
      total = soft_cross_entropy(logits, targets)
      if penalty is not None:
        total = total + jnp.asarray(penalty(p), jnp.float32)
      return total, new_stats

    (value_loss, new_stats), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params, value=value, check=check)
    return optax.apply_updates(params, updates), new_stats, opt_state, value_loss

  return jax.jit(jax.vmap(step, in_axes=(0, 0, 0, 0, 0, 0, None, 0, None)))


def _make_eval(model: Model, image_shape):
  def metrics(params, stats, x, y):
    logits, _ = model.apply(params, stats, x.reshape(x.shape[0], *image_shape), train=False)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    loss = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))
    acc = jnp.mean((jnp.argmax(logits, axis=-1) == y).astype(jnp.float32))
    return loss, acc

  return jax.jit(jax.vmap(metrics, in_axes=(0, 0, None, None)))


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _init_many(model: Model, keys, image_shape: tuple[int, ...], num_classes: int):
  """One init per key, compiled once per parameter layout (see :func:`_layout`)."""
  if isinstance(model, RegCNN):
    return jax.vmap(lambda k: model.init(k, image_shape, num_classes))(keys)
  return jax.vmap(lambda k: model.init(k, int(np.prod(image_shape)), num_classes))(keys)


def _layout(model: Model) -> Model:
  """The model with only the settings that shape its parameters (a jit cache key): runs that
  differ in dropout, order or momentum share one compiled init."""
  if isinstance(model, RegCNN):
    return RegCNN(channels=model.channels, batch_norm=model.batch_norm, head=model.head)
  return RegMLP(hidden=model.hidden, batch_norm=model.batch_norm)


def _kept_best(es: Any, params: Any) -> bool:
  """True when an early-stopping state holds a full copy of the params (restore_best)."""
  return all(b.shape == p.shape and b.dtype == p.dtype for b, p in
             zip(jax.tree.leaves(es.best_params), jax.tree.leaves(params)))


def _take(tree: Any, j: int) -> Any:
  return jax.tree.map(lambda a: a[j], tree)


def fit_seeds(
    model: Model,
    tx: optax.GradientTransformation,
    data: LabData,
    *,
    steps: int,
    seeds: Sequence[int] = (0, 1, 2),
    batch_size: int = 64,
    eval_every: int = 25,
    penalty: Callable[[Any], jax.Array] | None = None,
    augment: Callable[..., jax.Array] | None = None,
    mixup_alpha: float = 0.0,
    monitor: str = "val_accuracy",
    vectorize: bool | None = None,
) -> list[FitResult]:
  r"""Train ``model`` with ``tx`` on ``data.train`` once per seed and record the curves.

  Each step, for each seed: draw a mini-batch (its own shuffle), augment it,
  mix it up, compute :math:`\mathcal L(\theta) = \mathrm{CE} + \mathrm{penalty}(\theta)`
  with the model in training mode, then

  .. math:: u, s \leftarrow \mathrm{tx.update}(\nabla\mathcal L, s, \theta,\
            \mathrm{value}=m,\ \mathrm{check}=c),\qquad \theta \leftarrow \theta + u

  where :math:`m` is the latest ``monitor`` metric of the current parameters
  and :math:`c` is True on the first step after each evaluation (so check
  :math:`e` of an early-stopping link is the evaluation at step
  :math:`e \cdot` ``eval_every``). At step 0, every ``eval_every`` steps and at the end
  the curves record train and validation accuracy and loss in eval mode.
  Training ends at ``steps``, or as soon as an early-stopping link of ``tx``
  has stopped every seed. When that link keeps the best parameters
  (``restore_best=True``), the result holds them, with the BN statistics of
  the same evaluation, also when the budget ran out before a stop: with
  ``restore_best`` the result is always the best evaluated model.

  Args:
    model: a :class:`RegMLP` or :class:`RegCNN`.
    tx: any optax-compatible transform; the keywords ``value`` and ``check``
      go to every ``update`` (transforms that take neither ignore them).
    data: from :func:`lab_data`.
    steps: the step budget, >= 1.
    seeds: one run per seed (init, batch order, dropout and augmentation keys).
    batch_size: examples per step, at most ``len(data.train)``.
    eval_every: steps between evaluations, >= 1.
    penalty: ``params -> scalar`` added to the loss, e.g.
      ``functools.partial(jopt.regularizers.l2_penalty, strength=1e-3)``.
    augment: an op ``augment(images, *, key) -> images`` (a :mod:`jopt.augment`
      op or ``jopt.augment.sequence(...)``) applied to each NHWC float32 batch.
    mixup_alpha: mixup's Beta parameter; 0 turns mixup off.
    monitor: ``"val_accuracy"`` (use ``mode="max"`` in early stopping) or
      ``"val_loss"`` (``mode="min"``), the metric passed as ``value``.
    vectorize: run the seeds side by side in one ``jax.vmap``-ed program
      (True) or one after another, sharing the compiled step (False). Default:
      vmapped for an MLP; one after another for a CNN, whose vmapped
      convolutions (one kernel per seed) are grouped convolutions, slower on CPU.

  Returns:
    A list of :class:`FitResult`, one per seed, in the order of ``seeds``.

  Example:
    >>> from jopt.training import RegMLP, fit_seeds, lab_data, load_digits
    >>> lab = lab_data(load_digits())
    >>> r0, r1 = fit_seeds(RegMLP(dropout=0.3), jopt.adam(1e-3), lab, steps=50, seeds=(0, 1))
    >>> r0.seed, r1.seed, r0.steps, r0.curve["step"].tolist()   # at 0, then every 25 steps
    (0, 1, 50, [0, 25, 50])
    >>> r0.gap == r0.train_accuracy - r0.test_accuracy         # the generalization gap
    True

  Reference: Prechelt, *Early Stopping - But When?*, 1998 (the train /
  validation / test protocol and its curves).
  """
  start = time.perf_counter()
  steps = check_positive_int("steps", steps, "fit: ")
  eval_every = check_positive_int("eval_every", eval_every, "fit: ")
  batch_size = check_positive_int("batch_size", batch_size, "fit: ")
  if batch_size > len(data.train):
    raise ValueError(f"fit: batch_size={batch_size} exceeds the {len(data.train)} training"
                     " examples; pass a smaller batch_size or a larger lab_data(train_size=).")
  check_choice("monitor", monitor, MONITORS, where="fit: ")
  if not isinstance(model, (RegMLP, RegCNN)):
    raise TypeError(f"fit: model must be a RegMLP or a RegCNN, got {type(model).__name__}.")
  seeds = list(seeds)
  if not seeds:
    raise ValueError("fit: seeds is empty; pass at least one seed, e.g. seeds=(0,).")
  if not all(isinstance(s, (int, np.integer)) and 0 <= s < 2 ** 32 for s in seeds):
    raise ValueError(f"fit: seeds={seeds} must be integers in [0, 2**32).")
  seeds = [int(s) for s in seeds]
  if not float(mixup_alpha) >= 0:
    raise ValueError(f"fit: mixup_alpha={mixup_alpha} must be >= 0 (0 turns mixup off).")
  if vectorize is None:
    vectorize = isinstance(model, RegMLP)
  step_fn = _make_step(model, tx, data.image_shape, data.num_classes, penalty, augment,
                       float(mixup_alpha))
  eval_fn = _make_eval(model, data.image_shape)
  splits = {name: split.arrays() for name, split in
            (("train", data.train), ("val", data.val), ("test", data.test))}
  chunks = [seeds] if vectorize else [[s] for s in seeds]
  out = []
  for chunk in chunks:
    out += _run(model, tx, data, chunk, steps, batch_size, eval_every, monitor, step_fn,
                eval_fn, splits)
  wall = time.perf_counter() - start
  for r in out:
    r.wall_time = wall
  return out


def _run(model, tx, data, seeds, steps, batch_size, eval_every, monitor, step_fn, eval_fn,
         splits) -> list[FitResult]:
  n_seeds = len(seeds)
  keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))
  init_keys, run_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
  params, stats = _init_many(_layout(model), init_keys, tuple(data.image_shape),
                             int(data.num_classes))
  opt_state = jax.jit(jax.vmap(tx.init))(params)
  has_es = bool(_early_stopping_states(opt_state))
  batches = [data.train.batches(batch_size, seed) for seed in seeds]
  curve: dict[str, list[np.ndarray]] = {k: [] for k in ("step", "train_accuracy", "train_loss",
                                                        "val_accuracy", "val_loss")}
  snapshots = []   # BN stats at each evaluation, to go with restored params
  losses = []

  def evaluate(step):
    (tl, ta), (vl, va) = (eval_fn(params, stats, *splits["train"]),
                          eval_fn(params, stats, *splits["val"]))
    tl, ta, vl, va = (np.asarray(v, np.float64) for v in jax.device_get((tl, ta, vl, va)))
    if not (np.all(np.isfinite(tl)) and np.all(np.isfinite(vl))):
      raise FloatingPointError(f"fit: the loss became non-finite by step {step} (train"
                               f" {tl}, validation {vl}); lower the learning rate.")
    for k, v in (("step", np.full(n_seeds, step)), ("train_accuracy", ta), ("train_loss", tl),
                 ("val_accuracy", va), ("val_loss", vl)):
      curve[k].append(v)
    snapshots.append(stats)
    return jnp.asarray(va if monitor == "val_accuracy" else vl, jnp.float32)

  metric = jnp.zeros((n_seeds,), jnp.float32)
  done = 0
  for i in range(1, steps + 1):
    fresh = (i - 1) % eval_every == 0
    if fresh:
      metric = evaluate(i - 1)
    x, y = (jnp.stack(v) for v in zip(*(next(b) for b in batches)))
    params, stats, opt_state, loss = step_fn(params, stats, opt_state, x, y, run_keys,
                                             np.int32(i), metric, np.bool_(fresh))
    losses.append(loss)
    done = i
    # A stop is only ever decided on a checked step: look then, and only then.
    if fresh and has_es and all(bool(np.all(jax.device_get(es.stopped)))
                                for es in _early_stopping_states(opt_state)):
      break
  if curve["step"][-1][0] != done:
    evaluate(done)

  curve_np = {k: np.stack(v, axis=1) for k, v in curve.items()}   # (seeds, evaluations)
  es_all = _early_stopping_states(opt_state)
  es = es_all[0] if len(es_all) == 1 else None
  stopped = np.asarray(jax.device_get(es.stopped)) if es is not None else None
  stopped_e = np.asarray(jax.device_get(es.stopped_step)) if es is not None else None
  if es is not None and _kept_best(es, params):
    best_e = np.asarray(jax.device_get(es.best_step))
    params = jax.tree.map(lambda b, p: jnp.where(
        (jnp.asarray(best_e) >= 0).reshape((-1,) + (1,) * (p.ndim - 1)), b, p),
        es.best_params, params)
    per_seed = [_take(snapshots[max(int(e), 0)], j) for j, e in enumerate(best_e)]
    stats = jax.tree.map(lambda *a: jnp.stack(a), *per_seed) if stats else stats
  metrics = {k: jax.device_get(eval_fn(params, stats, *splits[k])) for k in splits}
  history = np.stack([np.asarray(l) for l in losses], axis=1)
  out = []
  for j, seed in enumerate(seeds):
    p_j = _take(params, j)
    c_j = {k: v[j] for k, v in curve_np.items()}
    b = int(np.argmax(c_j["val_accuracy"]))
    out.append(FitResult(
        seed=seed, params=p_j, stats=_take(stats, j), opt_state=_take(opt_state, j), steps=done,
        curve=c_j, train_accuracy=float(metrics["train"][1][j]),
        val_accuracy=float(metrics["val"][1][j]), test_accuracy=float(metrics["test"][1][j]),
        train_loss=float(metrics["train"][0][j]), test_loss=float(metrics["test"][0][j]),
        best_step=int(c_j["step"][b]), best_val_accuracy=float(c_j["val_accuracy"][b]),
        stopped_step=(None if stopped is None or not stopped[j]
                      else int(stopped_e[j]) * eval_every),
        sparsity=weight_sparsity(p_j), loss_history=history[j].astype(np.float32),
        wall_time=0.0))
  return out


def fit(model: Model, tx: optax.GradientTransformation, data: LabData, *, steps: int,
        seed: int = 0, **kwargs: Any) -> FitResult:
  r"""One seed of :func:`fit_seeds`: train, evaluate, and return its :class:`FitResult`.

  .. math:: \theta^\star = \text{the parameters after the step budget (or the early stop)}

  Args:
    model, tx, data, steps: as :func:`fit_seeds`.
    seed: the run's seed.
    **kwargs: any other keyword of :func:`fit_seeds`.

  Returns:
    A :class:`FitResult`.

  Example:
    >>> from jopt.training import RegMLP, fit, lab_data, load_digits
    >>> r = fit(RegMLP(), jopt.adam(1e-3), lab_data(load_digits()), steps=50)
    >>> bool(r.curve["val_accuracy"][-1] == r.val_accuracy)   # the last evaluation: final params
    True

  Reference: as :func:`fit_seeds`.
  """
  return fit_seeds(model, tx, data, steps=steps, seeds=(seed,), **kwargs)[0]
