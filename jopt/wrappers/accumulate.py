"""Gradient accumulation that runs the inner optimizer only when it emits."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jopt._core import validate
from jopt._core.tree import (check_same_structure, compute_dtype, safe_increment,
                             unwrap_variables, zeros_like)

__all__ = ["accumulate", "AccumulateState"]


class AccumulateState(NamedTuple):
  """State of :func:`accumulate`.

  Attributes:
    mini_step: micro-batches accumulated since the last emitted update (int32).
    gradient_step: updates emitted so far (int32).
    inner_state: the wrapped transform's state, advanced only on emitting steps.
    acc: the running gradient sum or mean, one array per parameter.
  """

  mini_step: jax.Array
  gradient_step: jax.Array
  inner_state: Any
  acc: Any


AccumulateState.__module__ = "jopt"


def accumulate(
    tx: optax.GradientTransformation,
    every_k: int,
    *,
    use_mean: bool = True,
    acc_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Accumulate ``every_k`` micro-batch gradients, then take one step of ``tx``.

  .. math::
    a_n = a_{n-1} + (g_n - a_{n-1}) / n \quad(\text{mean; or } a_n = a_{n-1} + g_n),
    \qquad u = \begin{cases} \mathrm{tx}(a_k) & n = k \\ 0 & n < k \end{cases}

  Same results as ``optax.MultiSteps(tx, every_k, use_grad_mean=use_mean)``,
  but the inner update sits in a ``lax.cond`` branch, so the optimizer's
  arithmetic runs only on the emitting micro-step (optax 0.2.8 computes it on
  every micro-step and discards it), and one accumulator is kept, in
  ``acc_dtype``. With the default ``acc_dtype=None`` the accumulator keeps the
  parameter's dtype (optax 0.2.8 stores it in the default float type, float32,
  even for float64 parameters).

  Args:
    tx: the transform to run on the accumulated gradient.
    every_k: micro-batches per update, an integer >= 1.
    use_mean: accumulate the mean (Welford's running form) rather than the sum.
    acc_dtype: storage dtype of the accumulator (default: the parameter's); the
      running mean is computed in at least float32.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; extra keyword arguments are
    passed to ``tx`` on emitting steps.

  Example:
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> tx = jopt.accumulate(jopt.sgd(0.1), every_k=4)
    >>> state = tx.init(params)
    >>> for n in [1.0, 2.0, 3.0, 4.0]:   # micro-batch gradients n * [1, -1], mean 2.5 * [1, -1]
    ...   updates, state = tx.update({"w": n * jnp.array([1.0, -1.0])}, state, params)
    ...   print(updates["w"])   # zero on 3 of 4 calls, then -0.1 * the mean
    [0. 0.]
    [0. 0.]
    [0. 0.]
    [-0.25  0.25]

  Reference: the gradient-accumulation practice of large-batch training, e.g.
  Goyal et al., *Accurate, Large Minibatch SGD*, 2017; Welford, 1962, for the
  running mean.
  """
  validate.check_positive_int("every_k", every_k, "accumulate: ")
  validate.check_flag("accumulate: ", use_mean=use_mean)
  if acc_dtype is not None:
    acc_dtype = jnp.dtype(acc_dtype)
    compute_dtype(acc_dtype)

  def init_fn(params):
    params = unwrap_variables(params)
    return AccumulateState(
        mini_step=jnp.zeros([], jnp.int32),
        gradient_step=jnp.zeros([], jnp.int32),
        inner_state=tx.init(params),
        acc=jax.tree.map(lambda p: zeros_like(p, acc_dtype), params),
    )

  def update_fn(updates, state, params=None, **extra):
    check_same_structure(jax.tree.structure(state.acc), jax.tree.structure(updates),
                         "accumulate: updates", "Pass gradients shaped like the params.")
    n = state.mini_step

    def add(g, a):
      cdt = compute_dtype(g.dtype)
      gc, ac = g.astype(cdt), a.astype(cdt)
      out = ac + (gc - ac) / (n + 1).astype(cdt) if use_mean else ac + gc
      return out.astype(a.dtype)

    acc = jax.tree.map(add, updates, state.acc)
    emit = n == every_k - 1

    def run_inner(acc, inner):
      grads = jax.tree.map(lambda a, g: a.astype(g.dtype), acc, updates)
      new_updates, inner = tx.update(grads, inner, params, **extra)
      return new_updates, inner, jax.tree.map(jnp.zeros_like, acc)

    def hold(acc, inner):
      shapes = jax.eval_shape(lambda a, s: run_inner(a, s)[0], acc, inner)
      return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes), inner, acc

    new_updates, inner, acc = jax.lax.cond(emit, run_inner, hold, acc, state.inner_state)
    new_state = AccumulateState(
        mini_step=jnp.where(emit, jnp.zeros_like(n), safe_increment(n)),
        gradient_step=jnp.where(emit, safe_increment(state.gradient_step), state.gradient_step),
        inner_state=inner,
        acc=acc,
    )
    return new_updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
