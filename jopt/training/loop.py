"""A reference train step and loop: any optax-compatible transform on the digits MLP.

:func:`make_train_step` is the whole contract in six lines: loss and gradients,
``tx.update``, ``optax.apply_updates``. :func:`train` runs it for a number of
steps and returns a :class:`TrainResult`. The loop never reports a non-finite
loss as success: when a loss or an updated parameter stops being finite it
raises :class:`TrainingDiverged`, naming the step and carrying a result that
holds the last finite parameters (Ctrl-C likewise raises :class:`TrainingInterrupted`
with the steps completed so far).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jopt.training.data import Digits, Split, load_digits
from jopt.training.model import Params, accuracy, apply_mlp, cross_entropy, init_mlp, loss_fn

__all__ = ["TrainResult", "TrainingDiverged", "TrainingInterrupted", "make_train_step", "evaluate",
           "train"]

Batch = tuple[jax.Array, jax.Array]


@dataclasses.dataclass
class TrainResult:
  """What :func:`train` returns (or attaches to :class:`TrainingDiverged`).

  Attributes:
    params: the final parameters (the last finite ones after a divergence).
    opt_state: the optimizer state that goes with ``params``.
    steps: the number of completed, finite steps.
    final_loss: cross-entropy on the whole training set at the evaluated params.
    train_accuracy: accuracy on the training set, in [0, 1].
    test_accuracy: accuracy on the test set, in [0, 1].
    steps_per_sec: steps per second after the first (compiling) step; None when
      fewer than two steps ran.
    wall_time: seconds for the whole call: data, init, compile, steps, evaluation.
    loss_history: float32 mini-batch loss of each completed step (before its update).
  """

  params: Params
  opt_state: Any
  steps: int
  final_loss: float
  train_accuracy: float
  test_accuracy: float
  steps_per_sec: float | None
  wall_time: float
  loss_history: np.ndarray


class TrainingDiverged(RuntimeError):
  """A loss or an updated parameter became non-finite at ``step`` (1-based).

  ``result`` is the :class:`TrainResult` of the steps before it: its params and
  optimizer state are the last finite ones, ready to inspect or to resume from.
  ``reason`` says what was non-finite.
  """

  def __init__(self, message: str, step: int, result: TrainResult, reason: str = ""):
    super().__init__(message)
    self.step = step
    self.result = result
    self.reason = reason


class TrainingInterrupted(KeyboardInterrupt):
  """Ctrl-C during :func:`train`; ``result`` holds the steps completed before it.

  A ``KeyboardInterrupt``, so ``except Exception`` does not swallow it.
  """

  def __init__(self, message: str, step: int, result: TrainResult):
    super().__init__(message)
    self.step = step
    self.result = result


def _raw_step(tx: optax.GradientTransformation, loss: Callable[[Params, Batch], jax.Array]):
  def step(params, opt_state, batch):
    value, grads = jax.value_and_grad(loss)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

  return step


def make_train_step(tx: optax.GradientTransformation,
                    loss: Callable[[Params, Batch], jax.Array] = loss_fn):
  """A jitted ``(params, opt_state, batch) -> (params, opt_state, loss)``.

  The returned ``loss`` is the mini-batch loss at the parameters *before* the
  update. ``params`` is always passed to ``tx.update``, so transforms that need
  it (weight decay, LARS, ...) work unchanged. Nothing is donated.

  Args:
    tx: any optax-compatible gradient transformation (a jopt optimizer, an
      ``optax.chain``, ...).
    loss: ``(params, batch) -> scalar``; default the MLP cross-entropy.

  Example:
    >>> params = jopt.training.init_mlp(jax.random.key(0), (64, 128, 10))
    >>> tx = jopt.sgd(0.1)
    >>> step = jopt.training.make_train_step(tx)
    >>> batch = (jnp.zeros((8, 64)), jnp.zeros(8, jnp.int32))  # zero inputs: logits = b
    >>> params, opt_state, loss = step(params, tx.init(params), batch)
    >>> print(round(float(loss), 4))       # zero biases: log(10), the loss before the update
    2.3026
  """
  return jax.jit(_raw_step(tx, loss))


def _all_finite(tree: Any) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.stack(leaves).all() if leaves else jnp.asarray(True)


def _checked_step(tx, loss):
  step = _raw_step(tx, loss)

  def checked(params, opt_state, batch):
    new_params, new_state, value = step(params, opt_state, batch)
    ok = jnp.isfinite(value) & _all_finite(new_params)
    return new_params, new_state, value, ok

  return jax.jit(checked)


@jax.jit
def _metrics(params: Params, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
  return cross_entropy(apply_mlp(params, x), y), accuracy(params, x, y)


@jax.jit
def _final_metrics(params: Params, train: Batch, test: Batch) -> tuple[jax.Array, ...]:
  # Train loss, train accuracy and test accuracy in one compiled call.
  return (*_metrics(params, *train), accuracy(params, *test))


def evaluate(params: Params, split: Split) -> tuple[float, float]:
  """``(cross-entropy, accuracy)`` of the MLP on a whole split, as Python floats.

  Example:
    >>> params = jopt.training.init_mlp(jax.random.key(0))
    >>> loss, acc = jopt.training.evaluate(params, jopt.training.load_digits().test)
    >>> 0.0 <= acc <= 1.0 and loss > 0.0
    True
  """
  loss, acc = jax.device_get(_metrics(params, *split.arrays()))
  return float(loss), float(acc)


def train(
    tx: optax.GradientTransformation,
    steps: int,
    *,
    batch_size: int = 128,
    seed: int = 0,
    hidden: Sequence[int] = (128,),
    data: Digits | None = None,
    eval_params_fn: Callable[[Params, Any], Params] | None = None,
    progress: bool = False,
    description: str = "train",
) -> TrainResult:
  """Train the digits MLP with ``tx`` for ``steps`` mini-batch steps.

  Each step's loss and updated parameters are checked on the host; training
  stops at the first non-finite one (see :class:`TrainingDiverged`).

  Args:
    tx: any optax-compatible gradient transformation.
    steps: number of steps, >= 1.
    batch_size: examples per step.
    seed: seeds the parameter init and the batch order (the split uses ``data``'s).
    hidden: widths of the hidden layers.
    data: the data set; default :func:`load_digits` ``()``.
    eval_params_fn: ``(params, opt_state) -> params`` evaluated instead of the
      training params, e.g. for schedule-free optimizers; default identity.
    progress: show a tqdm bar on stderr with the loss (hidden when not a TTY).
    description: the bar's label.

  Returns:
    A :class:`TrainResult`.

  Raises:
    TrainingDiverged: a loss or parameter became non-finite; ``err.result``
      holds the last finite params and ``err.step`` the failing step.
    TrainingInterrupted: Ctrl-C; ``err.result`` holds the completed steps.

  Example:
    >>> result = jopt.training.train(jopt.adam(3e-3), steps=300)
    >>> result.test_accuracy > 0.9
    True
  """
  if int(steps) != steps or steps < 1:
    raise ValueError(f"steps must be a positive integer, got {steps!r}.")
  start = time.perf_counter()
  data = load_digits() if data is None else data
  params = init_mlp(jax.random.key(seed), (data.num_features, *hidden, data.num_classes))
  opt_state = jax.jit(tx.init)(params)
  step_fn = _checked_step(tx, loss_fn)
  batches = data.train.batches(batch_size, seed)
  history: list[float] = []
  t_first = None
  failure = None

  from tqdm import tqdm  # pylint: disable=import-outside-toplevel

  with tqdm(total=steps, desc=description, file=sys.stderr, disable=None if progress else True,
            dynamic_ncols=True, leave=False) as bar:
    try:
      for i in range(1, steps + 1):
        new_params, new_state, value, ok = step_fn(params, opt_state, next(batches))
        value, ok = jax.device_get((value, ok))
        value = float(value)
        if not ok:
          what = (f"the loss was {value}" if not math.isfinite(value) else
                  f"the update made a parameter non-finite (loss before the update {value:.4g})")
          failure = (TrainingDiverged, i, what)
          break
        # Only a step that passed the check replaces the state: nothing is lost on a fault.
        params, opt_state = new_params, new_state
        history.append(value)
        if i == 1:
          t_first = time.perf_counter()
        if i % 10 == 0 or i == steps:
          bar.set_postfix(loss=f"{value:.4f}", refresh=False)
        bar.update(1)
    except KeyboardInterrupt:
      failure = (TrainingInterrupted, len(history) + 1, "interrupted")
  t_last = time.perf_counter()

  done = len(history)
  speed = (done - 1) / (t_last - t_first) if t_first is not None and done > 1 else None
  eval_params = params if eval_params_fn is None else eval_params_fn(params, opt_state)
  final_loss, train_acc, test_acc = (float(v) for v in jax.device_get(
      _final_metrics(eval_params, data.train.arrays(), data.test.arrays())))
  result = TrainResult(
      params=params, opt_state=opt_state, steps=done, final_loss=final_loss,
      train_accuracy=train_acc, test_accuracy=test_acc, steps_per_sec=speed,
      wall_time=time.perf_counter() - start,
      loss_history=np.asarray(history, dtype=np.float32))
  if failure is not None:
    kind, i, what = failure
    kept = "the initial parameters" if i == 1 else f"the parameters after step {i - 1}"
    if kind is TrainingInterrupted:
      raise TrainingInterrupted(
          f"training interrupted at step {i} of {steps}; the result keeps {kept}"
          " (err.result.params).", step=i, result=result)
    raise TrainingDiverged(
        f"training stopped at step {i} of {steps}: {what}. The result keeps {kept},"
        " the last finite ones (err.result.params); try a smaller learning rate or"
        " clip gradients (optax.clip_by_global_norm).",
        step=i, result=result, reason=what)
  return result
