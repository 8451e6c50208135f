"""Adam and AdamW with 8-bit block-wise quantized moments."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax.experimental.shard_alike import shard_alike

from jopt._core.blockwise import dequantize, num_blocks, quantize
from jopt._core.hyperparams import HyperSpec, ScalarOrSchedule, state_class
from jopt._core.leafwise import leafwise
from jopt._core.tree import full_like, gathered, zeros_like
from jopt.optimizers.adam import _adam_rule, _adam_scalars

__all__ = ["adam_8bit", "adamw_8bit", "Adam8bitState"]

Adam8bitState = state_class(
    "Adam8bitState", ("mu", "mu_scale", "nu", "nu_scale"),
    "State of jopt.adam_8bit: count, hyperparams; per parameter, mu and nu as uint8"
    " codes shaped like the parameter with one float32 scale per block (mu_scale,"
    " nu_scale), or as float32 arrays (and empty scales) for small parameters.")


def _check_block_size(block_size: Any, where: str) -> None:
  if (isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1
      or block_size & (block_size - 1)):
    raise ValueError(f"{where}block_size={block_size!r} must be a positive power of two"
                     " (e.g. 256, 2048).")


def _build(name, learning_rate, b1, b2, eps, eps_root, weight_decay, mask, nesterov,
           block_size, min_8bit_size):
  where = f"{name}: "
  _check_block_size(block_size, where)
  if isinstance(min_8bit_size, bool) or not isinstance(min_8bit_size, int) or min_8bit_size < 0:
    raise ValueError(f"{where}min_8bit_size={min_8bit_size!r} must be an integer >= 0.")
  values = dict(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root)
  decoupled = weight_decay is not None
  if decoupled:
    values["weight_decay"] = weight_decay
  adam_step = _adam_rule(nesterov, decoupled)

  def quantized(p):
    return p.size >= min_8bit_size

  def moment(p):
    return zeros_like(p, jnp.uint8) if quantized(p) else zeros_like(p, jnp.float32)

  def scale(p):
    n = num_blocks(p.size, block_size) if quantized(p) else 0
    return full_like(p, 0, jnp.float32, shape=(n,))

  def step(g, p, slots, h, flags):
    mu_c, mu_s, nu_c, nu_s = slots
    if mu_c.dtype != jnp.uint8:  # a small parameter: float32 moments
      u, (mu, nu) = adam_step(g, p, (mu_c, nu_c), h, flags)
      return u, (mu, mu_s, nu, nu_s)
    mu = gathered(lambda c: dequantize(c, mu_s, block_size, True, g.dtype), mu_c)
    nu = gathered(lambda c: dequantize(c, nu_s, block_size, False, g.dtype), nu_c)
    u, (mu, nu) = adam_step(g, p, (mu, nu), h, flags)
    mu_c2, mu_s = gathered(lambda m: quantize(m, block_size, signed=True), mu)
    nu_c2, nu_s = gathered(lambda v: quantize(v, block_size, signed=False), nu)
    # the block reshapes lose the layout (auto sharding): tie the new codes to
    # the old codes' sharding, which is the parameter's
    _, mu_c2 = shard_alike(mu_c, mu_c2)
    _, nu_c2 = shard_alike(nu_c, nu_c2)
    return u, (mu_c2, mu_s, nu_c2, nu_s)

  return leafwise(name, Adam8bitState, HyperSpec(name, **values),
                  {"mu": moment, "mu_scale": scale, "nu": moment, "nu_scale": scale},
                  step, needs_params=decoupled, scalars=_adam_scalars,
                  masks={"decay": mask} if decoupled else None)


def adam_8bit(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    eps_root: ScalarOrSchedule = 0.0,
    *,
    nesterov: bool = False,
    block_size: int = 2048,
    min_8bit_size: int = 4096,
):
  r"""Adam whose two moments are stored as 8-bit block-wise quantized codes.

  Each step dequantizes :math:`m, v`, takes the :func:`jopt.adam` step in
  float32, and quantizes the new moments again:

  .. math::
    m_t = Q_s\!ig(eta_1 	ilde m_{t-1} + (1-eta_1) g_tig),\quad
    v_t = Q_u\!ig(eta_2 	ilde v_{t-1} + (1-eta_2) g_t^2ig),\quad
    u_t = -\eta_t\, \hat m_t / (\sqrt{\hat v_t + ar\epsilon} + \epsilon)

  where :math:`Q_s, Q_u` round each block of ``block_size`` values, scaled by
  its absolute maximum, to the nearest of 256 signed / unsigned dynamic codes
  (:mod:`jopt._core.blockwise`) and :math:`\tilde m = Q^{-1}(m)`. State costs
  2 bytes per parameter plus 8 bytes per block: about 0.25x float32 Adam's.
  Parameters with fewer than ``min_8bit_size`` elements (biases, norms) keep
  float32 moments, where quantization would save little and cost accuracy.

  Args:
    learning_rate, b1, b2, eps, eps_root, nesterov: as :func:`jopt.adam`.
    block_size: elements per quantization block, a positive power of two.
    min_8bit_size: parameters smaller than this keep float32 moments.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state :class:`Adam8bitState`.

  Example:
    >>> tx = jopt.adam_8bit(1e-3)
    >>> state = tx.init(params)   # uint8 codes + per-block float32 scales

  Reference: Dettmers, Lewis, Shleifer & Zettlemoyer, *8-bit Optimizers via
  Block-wise Quantization*, ICLR 2022.
  """
  return _build("adam_8bit", learning_rate, b1, b2, eps, eps_root, None, None, nesterov,
                block_size, min_8bit_size)


def adamw_8bit(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    eps_root: ScalarOrSchedule = 0.0,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Any = None,
    *,
    nesterov: bool = False,
    block_size: int = 2048,
    min_8bit_size: int = 4096,
):
  r"""AdamW with 8-bit block-wise quantized moments (see :func:`adam_8bit`).

  .. math::
    u_t = -\eta_t \left( \hat m_t / (\sqrt{\hat v_t + \bar\epsilon} + \epsilon)
          + \lambda\, \theta_{t-1} \right)

  Args:
    learning_rate, b1, b2, eps, eps_root, weight_decay, mask, nesterov: as
      :func:`jopt.adamw`.
    block_size, min_8bit_size: as :func:`adam_8bit`.

  Example:
    >>> tx = jopt.adamw_8bit(1e-3, weight_decay=1e-2)

  Reference: Dettmers et al., ICLR 2022; Loshchilov & Hutter, ICLR 2019.
  """
  return _build("adamw_8bit", learning_rate, b1, b2, eps, eps_root, weight_decay, mask,
                nesterov, block_size, min_8bit_size)
