"""A small multilayer perceptron classifier in plain JAX.

Parameters are a list of ``{"w": (fan_in, fan_out), "b": (fan_out,)}`` dicts,
one per layer, so every jopt transform and every optax utility sees an ordinary
pytree (matrices and vectors, as Muon and LARS expect).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp

__all__ = ["init_mlp", "apply_mlp", "cross_entropy", "loss_fn", "accuracy", "Params"]

Params = list[dict[str, jax.Array]]


def init_mlp(key: jax.Array, sizes: Sequence[int] = (64, 128, 10), dtype: Any = jnp.float32) -> Params:
  r"""He-normal weights and zero biases for an MLP with layer widths ``sizes``.

  .. math:: W_l \sim \mathcal N(0,\, 2/\mathrm{fan\_in}_l),\quad b_l = 0

  Args:
    key: a ``jax.random`` key.
    sizes: widths from input to output, at least two entries, e.g. ``(64, 128, 10)``.
    dtype: floating dtype of the parameters.

  Returns:
    A list of ``{"w", "b"}`` dicts, one per layer.

  Example:
    >>> params = jopt.training.init_mlp(jax.random.key(0), (64, 128, 10))
    >>> [(p["w"].shape, p["b"].shape) for p in params]
    [((64, 128), (128,)), ((128, 10), (10,))]
  """
  sizes = tuple(int(s) for s in sizes)
  if len(sizes) < 2 or min(sizes) < 1:
    raise ValueError(f"sizes must hold at least two positive widths, got {sizes}.")
  return _init_mlp(key, sizes, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _init_mlp(key: jax.Array, sizes: tuple[int, ...], dtype: Any) -> Params:
  # One compiled program instead of a dozen eagerly dispatched (and compiled) ops.
  keys = jax.random.split(key, len(sizes) - 1)
  params = []
  for k, fan_in, fan_out in zip(keys, sizes[:-1], sizes[1:]):
    std = jnp.sqrt(jnp.asarray(2.0 / fan_in, dtype))
    w = jax.random.normal(k, (fan_in, fan_out), dtype) * std
    params.append({"w": w, "b": jnp.zeros((fan_out,), dtype)})
  return params


def apply_mlp(params: Params, x: jax.Array) -> jax.Array:
  """Logits ``(batch, classes)``: ReLU hidden layers, a linear output layer.

  ``x`` is cast to the parameters' dtype first.
  """
  h = x.astype(params[0]["w"].dtype)
  for layer in params[:-1]:
    h = jax.nn.relu(h @ layer["w"] + layer["b"])
  last = params[-1]
  return h @ last["w"] + last["b"]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  r"""Mean softmax cross-entropy in float32.

  .. math:: \mathcal L = -\frac1n \sum_i \log \operatorname{softmax}(z_i)_{y_i}

  Args:
    logits: ``(n, classes)`` scores.
    labels: ``(n,)`` integer class indices.
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(logp, labels.astype(jnp.int32)[:, None], axis=-1)
  return -jnp.mean(picked)


def loss_fn(params: Params, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
  """Cross-entropy of the MLP on one ``(x, y)`` batch."""
  x, y = batch
  return cross_entropy(apply_mlp(params, x), y)


def accuracy(params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
  """Share of examples whose arg-max logit is the label, a float32 in [0, 1]."""
  pred = jnp.argmax(apply_mlp(params, x), axis=-1)
  return jnp.mean((pred == y.astype(pred.dtype)).astype(jnp.float32))
