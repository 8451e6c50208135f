"""Adam and AdamW with 8-bit block-wise quantized moments."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax.experimental.shard_alike import shard_alike

from jopt._core.blockwise import dequantize, num_blocks, quantize, zero_code
from jopt._core import validate
from jopt._core.hyperparams import HyperSpec, ScalarOrSchedule, state_class
from jopt._core.leafwise import leafwise, param_like
from jopt._core.slots import register_zero_codes
from jopt._core.tree import full_like, gathered, zeros_like
from jopt.optimizers._complex import require_real
from jopt.optimizers.adam import _adam_rule, _adam_scalars

__all__ = ["adam_8bit", "adamw_8bit", "Adam8bitState"]

Adam8bitState = state_class(
    "Adam8bitState", ("mu", "mu_scale", "nu", "nu_scale"),
    "State of jopt.adam_8bit: count, hyperparams; per parameter, mu and nu as uint8"
    " codes shaped like the parameter with one float32 scale per block (mu_scale,"
    " nu_scale), or as float32 arrays (and one-element placeholder scales) for small parameters.")
# jopt.prune zeroes pruned entries' moments: for the uint8 codes that is the code of 0.0
register_zero_codes(Adam8bitState, {"mu": zero_code(True), "nu": zero_code(False)})


def _check_block_size(block_size: Any, where: str) -> None:
  if isinstance(block_size, bool) or not isinstance(block_size, int):
    raise TypeError(f"{where}block_size={block_size!r} must be a positive power of two"
                    " (e.g. 256, 2048); pass an int.")
  if block_size < 1 or block_size & (block_size - 1):
    raise ValueError(f"{where}block_size={block_size!r} must be a positive power of two"
                     " (e.g. 256, 2048).")


def _build(name, learning_rate, b1, b2, eps, eps_root, weight_decay, mask, nesterov,
           block_size, min_8bit_size):
  where = f"{name}: "
  _check_block_size(block_size, where)
  validate.check_flag(where, nesterov=nesterov)
  if isinstance(min_8bit_size, bool) or not isinstance(min_8bit_size, int):
    raise TypeError(f"{where}min_8bit_size={min_8bit_size!r} must be an integer >= 0.")
  if min_8bit_size < 0:
    raise ValueError(f"{where}min_8bit_size={min_8bit_size!r} must be an integer >= 0.")
  values = dict(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root)
  decoupled = weight_decay is not None
  if decoupled:
    values["weight_decay"] = weight_decay
  adam_step = _adam_rule(nesterov, decoupled)

  def quantized(p):
    return p.size >= min_8bit_size

  def moment(p):
    require_real(p, where, "block-wise 8-bit moments are real-valued")
    return zeros_like(p, jnp.uint8) if quantized(p) else zeros_like(p, jnp.float32)

  def scale(p):
    # a small parameter keeps a one-element placeholder (orbax cannot save
    # zero-size arrays)
    n = num_blocks(p.size, block_size) if quantized(p) else 1
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

  # codes (or float32 moments) are shaped like the parameter: they let update
  # check gradient shapes without params
  return leafwise(name, Adam8bitState, HyperSpec(name, **values),
                  {"mu": param_like(moment), "mu_scale": scale, "nu": moment,
                   "nu_scale": scale},
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

  Each step dequantizes :math:`m, v`, takes the :func:`jopt.adam` step in the
  compute dtype (float32; float64 for float64 parameters), and quantizes the
  new moments again:

  .. math::
    m_t = \beta_1 \tilde m_{t-1} + (1-\beta_1) g_t,\quad
    v_t = \beta_2 \tilde v_{t-1} + (1-\beta_2) g_t^2,\quad
    u_t = -\eta_t\, \hat m_t / (\sqrt{\hat v_t + \bar\epsilon} + \epsilon) \\
    \text{stored: } Q_s(m_t),\ Q_u(v_t),\quad
    \tilde m_t = Q_s^{-1}(Q_s(m_t)),\ \tilde v_t = Q_u^{-1}(Q_u(v_t))

  so the update uses the new moments before they are rounded, as the paper's
  fused kernels do. :math:`Q_s, Q_u` cut the flattened moment into blocks of
  ``block_size`` values (the last zero-padded), keep each block's float32
  absolute maximum, and store for each value the uint8 index of the code
  nearest (in float32, ties to the lower code) to value / absmax in the sorted
  256-entry signed (:math:`m`) or unsigned (:math:`v`, which spends the sign
  bit on precision) dynamic code book of :mod:`jopt._core.blockwise`. State
  costs 2 bytes per parameter plus 8 bytes per block: about 0.25x float32
  Adam's. Parameters with fewer than ``min_8bit_size`` elements (biases,
  norms) keep float32 moments, where quantization would save little and cost
  accuracy. tests/test_adam_8bit.py checks all of this step by step against a
  NumPy transcription of the paper (codes bit-equal).

  The code books and the block-wise rounding are the paper's; its code
  (bitsandbytes' block-wise kernels, float32 only) differs in details: it
  nudges a first-moment code that rounded to the wrong sign (e.g. a small
  negative :math:`m` to 0) one code over, here rounding is plainly to the
  nearest; it divides with a fast approximate division; it zeroes the state
  where a gradient is not finite; its AdamW multiplies the stepped parameter
  by :math:`1 - \eta\lambda` where :func:`adamw_8bit` adds
  :math:`\eta\lambda\theta_{t-1}` to the update (equal to first order). Its
  Adam step is :func:`jopt.adam`'s (:math:`\epsilon` outside the root of
  :math:`\hat v_t`); :math:`\bar\epsilon` and ``nesterov`` are jopt's additions.

  Args:
    learning_rate, b1, b2, eps, eps_root, nesterov: as :func:`jopt.adam`.
    block_size: elements per quantization block, a positive power of two.
    min_8bit_size: parameters smaller than this keep float32 moments.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state :class:`Adam8bitState`.

  Example:
    >>> params = {"w": jnp.ones((64, 64))}   # 4096 entries: two blocks of 2048
    >>> grads = {"w": jnp.full((64, 64), 0.5)}
    >>> tx = jopt.adam_8bit(0.1)
    >>> state = tx.init(params)   # uint8 codes + per-block float32 scales
    >>> print(state.mu["w"].dtype, state.mu["w"].shape, state.mu_scale["w"].shape)
    uint8 (64, 64) (2,)
    >>> updates, state = tx.update(grads, state)
    >>> print(np.unique(np.asarray(updates["w"]).round(4)))   # step 1 as jopt.adam: -lr * sign(g)
    [-0.1]
    >>> print(np.asarray(state.mu_scale["w"]).round(4))   # each block's absmax of m_1 = 0.1 g
    [0.05 0.05]

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
    >>> params = {"w": jnp.ones((64, 64)), "b": jnp.zeros(4)}
    >>> grads = {"w": jnp.full((64, 64), 0.5), "b": jnp.ones(4)}
    >>> tx = jopt.adamw_8bit(0.1, weight_decay=1e-2)
    >>> state = tx.init(params)
    >>> print(state.nu["w"].dtype, state.nu["b"].dtype)   # "b" is below min_8bit_size
    uint8 float32
    >>> updates, state = tx.update(grads, state, params)
    >>> print(np.unique(np.asarray(updates["w"]).round(4)))   # -0.1 * (sign(g) + 0.01 * 1.0)
    [-0.101]

  Reference: Dettmers et al., ICLR 2022; Loshchilov & Hutter, ICLR 2019.
  """
  return _build("adamw_8bit", learning_rate, b1, b2, eps, eps_root, weight_decay, mask,
                nesterov, block_size, min_8bit_size)
