r"""The pipeline's model: a pure apply function and its trainable parameters.

:class:`Model` wraps ``apply(params, x) -> logits`` and a parameter tree; the
constructors :meth:`Model.from_linen` and :meth:`Model.from_nnx` turn a Flax
module into that form, with everything that is not a trainable parameter
(batch statistics, RNG state, ...) frozen inside the apply function.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

__all__ = ["Model"]


@dataclasses.dataclass(frozen=True)
class Model:
  r"""A model as a pure function: ``apply(params, x) -> logits`` and its parameters.

  .. math:: z = f(\theta, x) \in \mathbb R^{B \times C}

  The pipeline trains ``params`` (a pytree of floating arrays; NumPy leaves are
  converted to ``jax.Array``) and never calls anything but ``apply``.

  Attributes:
    apply: ``(params, x) -> logits`` of shape ``(batch, classes)``, jit-able.
    params: the parameter tree.

  Example:
    >>> from jopt import pipeline as pl
    >>> from jopt.training import apply_lenet, init_lenet      # LeNet-300-100, plain dicts
    >>> model = pl.Model(apply=apply_lenet, params=init_lenet(0))
    >>> model.apply(model.params, jnp.zeros((2, 784))).shape   # (batch, classes) logits
    (2, 10)

  Reference: the ``apply(params, x)`` convention of Flax Linen and Haiku.
  """

  apply: Callable[[Any, Any], Any]
  params: Any

  def __post_init__(self):
    if not callable(self.apply):
      raise TypeError(f"Model: apply={self.apply!r} must be a function (params, x) -> logits.")
    leaves = jax.tree.leaves(self.params)
    if not leaves:
      raise ValueError("Model: params has no array leaves; pass the model's parameter tree.")
    object.__setattr__(self, "params", jax.tree.map(jnp.asarray, self.params))

  @classmethod
  def from_linen(cls, module: Any, variables: Any) -> "Model":
    r"""A :class:`Model` of a Flax Linen module: ``variables["params"]`` trained, the rest frozen.

    .. math:: f(\theta, x) = \texttt{module.apply}(\{\texttt{params}: \theta, \dots\}, x)

    Args:
      module: a ``flax.linen.Module`` whose ``apply(variables, x)`` returns logits
        (bind train/eval flags with ``functools.partial`` or module attributes).
      variables: from ``module.init``; must hold ``"params"``.

    Returns:
      A :class:`Model`.

    Example:
      >>> import flax.linen as nn
      >>> from jopt import pipeline as pl
      >>> net = nn.Dense(10)
      >>> model = pl.Model.from_linen(net, net.init(jax.random.key(0), jnp.zeros((1, 784))))
      >>> model.params["kernel"].shape, model.apply(model.params, jnp.zeros((2, 784))).shape
      ((784, 10), (2, 10))

    Reference: Flax Linen's ``Module.apply``.
    """
    if "params" not in variables:
      raise ValueError("Model.from_linen: variables has no 'params' collection; pass the"
                       " output of module.init(key, x).")
    frozen = {k: v for k, v in variables.items() if k != "params"}

    def apply(params, x):
      return module.apply({**frozen, "params": params}, x)

    apply.__qualname__ = f"from_linen({type(module).__name__})"
    return cls(apply, variables["params"])

  @classmethod
  def from_nnx(cls, module: Any) -> "Model":
    r"""A :class:`Model` of a Flax NNX module: its ``nnx.Param`` state trained, other state frozen.

    ``nnx.split(module, nnx.Param, ...)``; the params become a plain dict
    (``nnx.to_pure_dict``) and ``apply`` merges them back with the frozen state
    (e.g. batch-norm statistics, used as they are: call ``module.eval()`` first
    for inference-mode layers).

    .. math:: f(\theta, x) = \texttt{nnx.merge}(g, \theta, s)(x)

    Args:
      module: an ``nnx.Module`` whose ``__call__(x)`` returns logits.

    Returns:
      A :class:`Model`.

    Example:
      >>> from flax import nnx
      >>> from jopt import pipeline as pl
      >>> model = pl.Model.from_nnx(nnx.Linear(784, 10, rngs=nnx.Rngs(0)))
      >>> sorted(model.params), model.apply(model.params, jnp.zeros((2, 784))).shape
      (['bias', 'kernel'], (2, 10))

    Reference: Flax NNX's functional API (``nnx.split`` / ``nnx.merge``).
    """
    from flax import nnx  # pylint: disable=import-outside-toplevel

    graphdef, state, rest = nnx.split(module, nnx.Param, ...)
    pure = nnx.to_pure_dict(state)

    def apply(params, x):
      st = jax.tree.map(lambda a: a, state)
      nnx.replace_by_pure_dict(st, params)
      return nnx.merge(graphdef, st, rest)(x)

    apply.__qualname__ = f"from_nnx({type(module).__name__})"
    return cls(apply, pure)


Model.__module__ = "jopt.pipeline"
