"""Muon: momentum orthogonalised by Newton–Schulz for matrices, Adam for the rest."""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jopt._core import validate
from jopt._core.hyperparams import HyperSpec, ScalarOrSchedule, state_class
from jopt._core.leafwise import leafwise, slot_zeros
from jopt._core.tree import full_like, gathered

__all__ = ["muon", "MuonState", "newton_schulz", "NS_COEFFS_PRESETS"]

MuonState = state_class(
    "MuonState", ("mu", "nu"),
    "State of jopt.muon: count, hyperparams, mu (momentum of every parameter, in"
    " mu_dtype) and nu (Adam's second moment of the non-matrix parameters, in"
    " nu_dtype; an empty (0,) array for matrices).")

for _name in ("adam_b1", "adam_b2"):
  validate.register_range(_name, 0.0, 1.0, high_open=True)
for _name in ("adam_eps_root", "adam_weight_decay", "adam_learning_rate", "consistent_rms"):
  validate.register_range(_name, 0.0, None)

# Quintic Newton–Schulz coefficients (a, b, c) of x -> a x + b (x x^T) x + c (x x^T)^2 x.
NS_COEFFS_PRESETS: dict[str, tuple[tuple[float, float, float], ...]] = {
    # Jordan's coefficients, tuned for the slope at 0 (one triple, repeated).
    "standard": ((3.4445, -4.7750, 2.0315),),
    # Ahn et al. (Dion): one triple per step, five steps.
    "dion": (
        (4.0848, -6.8946, 2.9270),
        (3.9505, -6.3029, 2.6377),
        (3.7418, -5.5913, 2.3037),
        (2.8769, -3.1427, 1.2046),
        (2.8366, -3.0525, 1.2012),
    ),
}
_PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")


def _ns_iteration(x: jax.Array, a: jax.Array, coeffs: Sequence[float]) -> jax.Array:
  c0, c1, c2 = coeffs
  b = c1 * a + c2 * (a @ a)
  return c0 * x + b @ x


def newton_schulz(x: jax.Array, coeffs: Sequence[Sequence[float]], eps: Any = 1e-8,
                  preconditioning: str = "frobenius") -> jax.Array:
  r"""Approximately orthogonalise a matrix: :math:`U S V^\top \mapsto U S' V^\top`.

  Each iteration applies :math:`X \mapsto c_0 X + (c_1 A + c_2 A^2) X` with
  :math:`A = X X^\top`, one coefficient triple per iteration. The input is first
  scaled so that its singular values are at most about 1 (``frobenius``: by
  :math:`\|X\|_F + \epsilon`; ``spectral``: by :math:`\|X\|_2 + \epsilon`), or
  the first iteration is preconditioned instead (``aol``: per-row rescaling by
  :math:`(\sum_j |A_{ij}|)^{-1/2}`; ``schatten``: by :math:`\|A\|_F^{-1/2}`). The
  iteration runs on the wide orientation (transposed when rows > columns).

  With the ``standard`` coefficients and five steps, singular values that are
  not tiny next to the Frobenius norm land in a band around 1 (about
  [0.68, 1.13]) rather than on 1: a steep slope near 0 is worth more to Muon
  than exactness.

  Args:
    x: a 2-D array.
    coeffs: a sequence of (c0, c1, c2) triples, one per iteration.
    eps: added to the normalising norm (and the floor of the AOL / Schatten scales).
    preconditioning: ``frobenius``, ``spectral``, ``aol`` or ``schatten``.

  Returns:
    An array of ``x``'s shape and dtype.

  Reference: Jordan et al., *Muon: An optimizer for hidden layers in neural
  networks*, 2024; Boissin et al. 2025 (AOL); Grishina et al. 2025 (Schatten-4).
  """
  if x.ndim != 2:
    raise ValueError(f"newton_schulz: x must be a matrix, got shape {x.shape}.")
  validate.check_choice("preconditioning", preconditioning, _PRECONDITIONINGS,
                        "newton_schulz: ")
  coeffs = tuple(tuple(float(c) for c in triple) for triple in coeffs)
  # Explicitly sharded matrices: X X^T contracts a sharded axis, which JAX will
  # not resolve implicitly; the iteration runs on a gathered copy.
  return gathered(lambda m: _newton_schulz(m, eps, coeffs, preconditioning), x)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _newton_schulz(x, eps, coeffs, preconditioning):
  # One compiled call when run eagerly; inlined under an outer jit.
  transposed = x.shape[0] > x.shape[1]
  if transposed:
    x = x.T
  if preconditioning == "frobenius":
    x = x / (jnp.sqrt(jnp.sum(x * x)) + eps)
  elif preconditioning == "spectral":
    x = x / (jnp.linalg.norm(x, ord=2) + eps)
  for i, c in enumerate(coeffs):
    a = x @ x.T
    if i == 0 and preconditioning == "aol":
      s = jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.abs(a), axis=-1), eps))[:, None]
      x, a = x * s, a * s * s.T
    elif i == 0 and preconditioning == "schatten":
      s = jax.lax.rsqrt(jnp.maximum(jnp.sqrt(jnp.sum(a * a)), eps))
      x, a = x * s, a * (s * s)
    x = _ns_iteration(x, a, c)
  return x.T if transposed else x


def _resolve_coeffs(ns_coeffs: Any, ns_steps: Any) -> tuple[tuple[float, float, float], ...]:
  where = "muon: "
  validate.check_positive_int("ns_steps", ns_steps, where)
  if isinstance(ns_coeffs, str):
    if ns_coeffs not in NS_COEFFS_PRESETS:
      raise ValueError(f"{where}ns_coeffs={ns_coeffs!r} is not a preset; use one of"
                       f" {sorted(NS_COEFFS_PRESETS)} or (a, b, c) number triples.")
    table = np.asarray(NS_COEFFS_PRESETS[ns_coeffs], np.float64)
  else:
    try:
      table = np.asarray(ns_coeffs, np.float64)
    except (TypeError, ValueError) as e:
      raise TypeError(f"{where}ns_coeffs must be three numbers (a, b, c) or a sequence"
                      f" of such triples, got {ns_coeffs!r}.") from e
  if table.ndim not in (1, 2) or table.shape[-1] != 3 or not np.all(np.isfinite(table)):
    raise ValueError(f"{where}ns_coeffs must have shape (3,) or (n, 3) with finite"
                     f" values, got shape {table.shape}.")
  if table.ndim == 1:
    return (tuple(float(c) for c in table),) * int(ns_steps)
  if table.shape[0] > ns_steps:
    raise ValueError(f"{where}ns_coeffs has {table.shape[0]} per-step triples but"
                     f" ns_steps={ns_steps}; pass ns_steps >= {table.shape[0]} (a"
                     " per-step table runs all of its rows).")
  return tuple(tuple(float(c) for c in row) for row in table)


def _muon_rule(coeffs, preconditioning: str, nesterov: bool, adaptive: bool,
               consistent: bool, separate_adam_lr: bool):
  def matrix_step(g, p, mu, h, decay):
    beta = h["beta"]
    mu = beta * mu + (1 - beta) * g
    if nesterov:
      m_hat = beta * (mu / h["bcm_next"]) + (1 - beta) * (g / h["bcm"])
    else:
      m_hat = mu / h["bcm"]
    o = newton_schulz(m_hat, coeffs, h["eps"], preconditioning)
    if adaptive:
      o = jnp.sum(m_hat * o) * o
    fan_in, fan_out = g.shape
    if consistent:
      o = o * (math.sqrt(max(fan_in, fan_out)) * h["consistent_rms"])
    else:
      o = o * math.sqrt(max(1.0, fan_out / max(fan_in, 1)))
    if decay:
      o = o + h["weight_decay"] * p
    return -h["learning_rate"] * o, mu

  def adam_step(g, p, mu, nu, h):
    b1, b2 = h["adam_b1"], h["adam_b2"]
    mu = b1 * mu + (1 - b1) * g
    nu = b2 * nu + (1 - b2) * (g * g)
    if nesterov:
      m_hat = b1 * (mu / h["bc1_next"]) + (1 - b1) * (g / h["bc1"])
    else:
      m_hat = mu / h["bc1"]
    u = m_hat / (jnp.sqrt(nu / h["bc2"] + h["adam_eps_root"]) + h["eps"])
    u = u + h["adam_weight_decay"] * p
    lr = h["adam_learning_rate"] if separate_adam_lr else h["learning_rate"]
    return -lr * u, mu, nu

  def step(g, p, slots, h, flags):
    mu, nu = slots
    if flags["matrix"]:
      u, mu = matrix_step(g, p, mu, h, flags["decay"])
    else:
      u, mu, nu = adam_step(g, p, mu, nu, h)
    return u, (mu, nu)

  return step


def _muon_scalars(h):
  t = h["t"]
  return {"bcm": 1 - h["beta"] ** t, "bcm_next": 1 - h["beta"] ** (t + 1),
          "bc1": 1 - h["adam_b1"] ** t, "bc1_next": 1 - h["adam_b1"] ** (t + 1),
          "bc2": 1 - h["adam_b2"] ** t}


def _is_matrix_tree(tree: Any) -> Any:
  return jax.tree.map(lambda x: x.ndim == 2, tree)


def muon(
    learning_rate: ScalarOrSchedule,
    ns_coeffs: Any = (3.4445, -4.775, 2.0315),
    ns_steps: int = 5,
    beta: ScalarOrSchedule = 0.95,
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: Any = None,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    adam_b1: ScalarOrSchedule = 0.9,
    adam_b2: ScalarOrSchedule = 0.999,
    adam_eps_root: ScalarOrSchedule = 0.0,
    adam_weight_decay: ScalarOrSchedule = 0.0,
    adam_learning_rate: ScalarOrSchedule | None = None,
    muon_weight_dimension_numbers: Any = None,
    consistent_rms: ScalarOrSchedule | None = None,
    nu_dtype: Any = None,
):
  r"""Muon: Nesterov momentum orthogonalised by Newton–Schulz, for 2-D parameters.

  Every 2-D parameter :math:`W \in \mathbb{R}^{n_{in} \times n_{out}}` (a dense
  kernel, ``x @ W``) takes the Muon step; every other parameter (vectors,
  scalars, arrays of rank >= 3) takes an (N)AdamW step with ``adam_*`` settings.
  For a matrix:

  .. math::
    m_t = \beta m_{t-1} + (1-\beta) g_t,\quad
    \hat m_t = \frac{\beta\, m_t}{1-\beta^{t+1}} + \frac{(1-\beta)\, g_t}{1-\beta^t}
    \ \ (\text{or } m_t / (1-\beta^t) \text{ without Nesterov}) \\
    O_t = \mathrm{NS}(\hat m_t) \approx U V^\top \text{ for } \hat m_t = U S V^\top,
    \quad (\text{adaptive: } O_t \leftarrow \langle \hat m_t, O_t\rangle\, O_t) \\
    u_t = -\eta_t \left( s\, O_t + \lambda\, W_{t-1} \right),\quad
    s = \sqrt{\max(1, n_{out}/n_{in})}
    \ \ (\text{or } \rho \sqrt{\max(n_{in}, n_{out})} \text{ with consistent\_rms } \rho)

  :math:`\mathrm{NS}` is :func:`newton_schulz` (five quintic iterations after
  dividing by :math:`\|\hat m_t\|_F + \epsilon` by default). Matches
  ``optax.contrib.muon``: the same split of parameters, the same Adam branch
  (``optax.adamw`` with ``eps``, ``mu_dtype`` and ``nesterov`` shared with Muon,
  weight decay ``adam_weight_decay`` and no mask), the same shape scaling.

  Not supported: ``muon_weight_dimension_numbers`` (orthogonalising arrays of
  rank >= 3 or choosing the matrix axes) raises ``NotImplementedError``;
  reshape such kernels to 2-D yourself, or use ``optax.contrib.muon``.

  Args:
    learning_rate: step size :math:`\eta`, a number or a schedule ``step -> value``.
    ns_coeffs: one (a, b, c) triple used at every iteration, a sequence of
      triples (one per iteration; ``ns_steps`` must be at least its length and
      is otherwise ignored), or a preset name: ``"standard"`` or ``"dion"``.
      Static (not in state).
    ns_steps: number of Newton–Schulz iterations, integer >= 1 (static).
    beta: :math:`\beta`, the momentum decay, in [0, 1).
    eps: :math:`\epsilon` >= 0, in the Newton–Schulz normalisation and in Adam's
      denominator.
    weight_decay: :math:`\lambda` >= 0 for the matrices (multiplied by :math:`\eta`).
    weight_decay_mask: which matrices decay: a tree of bools like the params
      (entries of non-matrices are ignored), or a function ``params -> tree``;
      None decays all.
    mu_dtype: storage dtype of :math:`m`, for matrices and Adam alike
      (default: the parameter's).
    nesterov: use the Nesterov form of :math:`\hat m_t` (Muon and Adam).
    adaptive: scale :math:`O_t` by the dual norm :math:`\langle \hat m_t, O_t\rangle`.
    preconditioning: ``"frobenius"`` (default), ``"spectral"``, ``"aol"`` or
      ``"schatten"``; see :func:`newton_schulz`.
    adam_b1: Adam's :math:`\beta_1`, in [0, 1).
    adam_b2: Adam's :math:`\beta_2`, in [0, 1).
    adam_eps_root: Adam's :math:`\bar\epsilon` inside the square root, >= 0.
    adam_weight_decay: Adam's decoupled decay, >= 0 (multiplied by its rate).
    adam_learning_rate: Adam's step size; None uses ``learning_rate``.
    muon_weight_dimension_numbers: must be None (see above).
    consistent_rms: :math:`\rho` >= 0 to scale updates to a shape-independent
      RMS (0.2 matches AdamW's), or None for the width scaling.
    nu_dtype: storage dtype of Adam's second moment (default: the parameter's).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state :class:`MuonState`;
    ``update`` needs ``params``.

  Example:
    >>> tx = jopt.muon(0.02, adam_learning_rate=3e-4)
    >>> state = tx.init(params)   # kernels: Muon; biases, norms, embeddings > 2-D: Adam
    >>> updates, state = tx.update(grads, state, params)

  Reference: Jordan et al., *Muon: An optimizer for hidden layers in neural
  networks*, 2024 (kellerjordan.github.io/posts/muon); Liu et al., *Muon is
  Scalable for LLM Training*, 2025 (consistent RMS); Bernstein & Newhouse, *Old
  Optimizer, New Norm: An Anthology*, 2024 (adaptive).
  """
  where = "muon: "
  if muon_weight_dimension_numbers is not None:
    raise NotImplementedError(
        f"{where}muon_weight_dimension_numbers is not supported by jopt.muon: it"
        " orthogonalises 2-D parameters only. Reshape higher-rank kernels to 2-D,"
        " or use optax.contrib.muon.")
  coeffs = _resolve_coeffs(ns_coeffs, ns_steps)
  validate.check_choice("preconditioning", preconditioning, _PRECONDITIONINGS, where)
  for name, flag in (("nesterov", nesterov), ("adaptive", adaptive)):
    if not isinstance(flag, (bool, np.bool_)):
      raise TypeError(f"{where}{name} must be True or False, got {flag!r}.")
  values = dict(learning_rate=learning_rate, beta=beta, eps=eps, weight_decay=weight_decay,
                adam_b1=adam_b1, adam_b2=adam_b2, adam_eps_root=adam_eps_root,
                adam_weight_decay=adam_weight_decay)
  if adam_learning_rate is not None:
    values["adam_learning_rate"] = adam_learning_rate
  if consistent_rms is not None:
    values["consistent_rms"] = consistent_rms
  hyper = HyperSpec("muon", **values)

  mu_init = slot_zeros(mu_dtype)
  nu_full = slot_zeros(nu_dtype)

  def nu_init(p):
    if p.ndim == 2:
      return full_like(p, 0, p.dtype if nu_dtype is None else nu_dtype, shape=(0,))
    return nu_full(p)

  return leafwise(
      "muon", MuonState, hyper, {"mu": mu_init, "nu": nu_init},
      _muon_rule(coeffs, preconditioning, bool(nesterov), bool(adaptive),
                 consistent_rms is not None, adam_learning_rate is not None),
      needs_params=True,
      scalars=_muon_scalars,
      masks={"matrix": _is_matrix_tree, "decay": weight_decay_mask},
  )
