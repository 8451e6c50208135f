"""Complex parameters, treated as optax treats them.

A rule sees a complex gradient ``g`` (already conjugated by the caller, as
``jax.grad`` users do for complex parameters) and hyperparameters cast to the
complex compute dtype. First moments and updates stay complex, so a step keeps
the gradient's phase. Second moments are moments of :math:`|g|^2`, real-valued;
square roots, maxima and comparisons run on real numbers and the real result
then scales the complex update. For real gradients every helper here is the
identity (or ``x * x``), so real rules compile to what they did before.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["abs_sq", "re", "real", "scale", "divide", "require_real"]


def abs_sq(x: jax.Array) -> jax.Array:
  """:math:`|x|^2` as a real array (``x * x`` for real ``x``; optax's ``abs_sq``)."""
  if jnp.iscomplexobj(x):
    return (x.conj() * x).real
  return x * x


def re(x: jax.Array) -> jax.Array:
  """The real part; ``x`` itself when it is real (no traced op: the usual case)."""
  return jax.lax.real(x) if jnp.iscomplexobj(x) else x


def real(h: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """The hyperparameters as real numbers (they reach a rule in the compute
  dtype, which is complex for complex gradients)."""
  return {k: re(v) for k, v in h.items()}


def scale(x: jax.Array, factor: jax.Array) -> jax.Array:
  """``x * factor`` for a real ``factor`` and a possibly complex ``x`` (each part
  scaled, exactly as a real array would be)."""
  if jnp.iscomplexobj(x):
    return jax.lax.complex(x.real * factor, x.imag * factor)
  return x * factor


def divide(x: jax.Array, d: jax.Array) -> jax.Array:
  """``x / d`` for a real ``d`` and a possibly complex ``x`` (each part divided)."""
  if jnp.iscomplexobj(x):
    return jax.lax.complex(x.real / d, x.imag / d)
  return x / d


def require_real(p: jax.Array, where: str, why: str) -> None:
  """Raise ``TypeError`` for a complex parameter, for optimizers that only make
  sense on real numbers; ``why`` says what in the method needs real values."""
  if jnp.issubdtype(p.dtype, jnp.complexfloating):
    raise TypeError(
        f"{where}params must be real: got a {p.dtype} parameter of shape {p.shape};"
        f" {why}. Use jopt.adam / jopt.adamw for complex parameters.")
