"""Muon: momentum orthogonalised by Newton–Schulz for matrices, Adam for the rest."""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jopt._core import validate
from jopt._core.hyperparams import HyperSpec, ScalarOrSchedule, state_class
from jopt._core.leafwise import leafwise, param_like, resolve_mask, slot_zeros
from jopt._core.tree import full_like, gathered
from jopt.optimizers._complex import require_real

__all__ = ["muon", "MuonState", "newton_schulz", "NS_COEFFS_PRESETS"]

MuonState = state_class(
    "MuonState", ("mu", "nu"),
    "State of jopt.muon: count, hyperparams, mu (momentum of every parameter, in"
    " mu_dtype) and nu (Adam's second moment of the parameters on the Adam branch,"
    " in nu_dtype; a one-element placeholder for matrices taking the Muon step).")

for _name in ("adam_b1", "adam_b2"):
  validate.register_range(_name, 0.0, 1.0, high_open=True)
for _name in ("adam_eps", "adam_eps_root", "adam_weight_decay", "adam_learning_rate",
              "consistent_rms"):
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
_EPS_MODES = ("add", "max")
_VARIANTS = ("reference", "optax")
# Default eps of the Newton–Schulz normalisation: torch.optim.Muon's / optax's.
_DEFAULT_EPS = {"reference": 1e-7, "optax": 1e-8}
_DEFAULT_ADAM_EPS = 1e-8


def _ns_iteration(x: jax.Array, a: jax.Array, coeffs: Sequence[float]) -> jax.Array:
  c0, c1, c2 = coeffs
  b = c1 * a + c2 * (a @ a)
  return c0 * x + b @ x


def newton_schulz(x: jax.Array, coeffs: Sequence[Sequence[float]], eps: Any = 1e-8,
                  preconditioning: str = "frobenius", *, eps_mode: str = "add") -> jax.Array:
  r"""Approximately orthogonalise a matrix: :math:`U S V^\top \mapsto U S' V^\top`.

  Each iteration applies :math:`X \mapsto c_0 X + (c_1 A + c_2 A^2) X` with
  :math:`A = X X^\top`, one coefficient triple per iteration. The input is first
  scaled so that its singular values are at most about 1 (``frobenius``: by
  :math:`\|X\|_F`; ``spectral``: by :math:`\|X\|_2`), or the first iteration is
  preconditioned instead (``aol``: per-row rescaling by
  :math:`(\sum_j |A_{ij}|)^{-1/2}`; ``schatten``: by :math:`\|A\|_F^{-1/2}`). The
  iteration runs on the wide orientation (transposed when rows > columns); it
  commutes with transposition, so ``newton_schulz(x.T) == newton_schulz(x).T``.

  With the ``standard`` coefficients and five steps, singular values that are
  not tiny next to the Frobenius norm land in a band around 1 (about
  [0.68, 1.13]) rather than on 1: a steep slope near 0 is worth more to Muon
  than exactness.

  Args:
    x: a 2-D array.
    coeffs: a sequence of (c0, c1, c2) triples, one per iteration.
    eps: guards the normalising norm (and is the floor of the AOL / Schatten scales).
    preconditioning: ``frobenius``, ``spectral``, ``aol`` or ``schatten``.
    eps_mode: how ``eps`` guards the ``frobenius`` / ``spectral`` norm:
      ``"add"`` divides by :math:`\|X\| + \epsilon` (optax, Jordan's code),
      ``"max"`` by :math:`\max(\|X\|, \epsilon)` (``torch.optim.Muon``).

  Returns:
    An array of ``x``'s shape and dtype.

  Example:
    >>> from jopt.optimizers.muon import NS_COEFFS_PRESETS, newton_schulz
    >>> g = jnp.array([[3.0, 0.0], [0.0, 1.0]])
    >>> o = newton_schulz(g, NS_COEFFS_PRESETS["standard"] * 5)
    >>> # five iterations take the singular values 3 / sqrt(10) to 0.753, 1 / sqrt(10) to 1.134
    >>> print(np.asarray(jnp.diag(o)).round(3))
    [0.753 1.134]

  Reference: Jordan et al., *Muon: An optimizer for hidden layers in neural
  networks*, 2024; Boissin et al. 2025 (AOL); Grishina et al. 2025 (Schatten-4).
  """
  if x.ndim != 2:
    raise ValueError(f"newton_schulz: x must be a matrix, got shape {x.shape}.")
  validate.check_choice("preconditioning", preconditioning, _PRECONDITIONINGS,
                        "newton_schulz: ")
  validate.check_choice("eps_mode", eps_mode, _EPS_MODES, "newton_schulz: ")
  coeffs = tuple(tuple(float(c) for c in triple) for triple in coeffs)
  # Explicitly sharded matrices: X X^T contracts a sharded axis, which JAX will
  # not resolve implicitly; the iteration runs on a gathered copy.
  return gathered(lambda m: _newton_schulz(m, eps, coeffs, preconditioning, eps_mode), x)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _newton_schulz(x, eps, coeffs, preconditioning, eps_mode):
  # One compiled call when run eagerly; inlined under an outer jit.
  transposed = x.shape[0] > x.shape[1]
  if transposed:
    x = x.T
  guard = (lambda n: n + eps) if eps_mode == "add" else (lambda n: jnp.maximum(n, eps))
  if preconditioning == "frobenius":
    x = x / guard(jnp.sqrt(jnp.sum(x * x)))
  elif preconditioning == "spectral":
    x = x / guard(jnp.linalg.norm(x, ord=2))
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
               consistent: bool, separate_adam_lr: bool, optax_variant: bool,
               adam_eps_name: str):
  eps_mode = "add" if optax_variant else "max"

  def matrix_step(g, p, mu, h, decay):
    beta = h["beta"]
    mu = beta * mu + (1 - beta) * g
    if optax_variant:  # bias-corrected momentum and its Nesterov form
      if nesterov:
        m_hat = beta * (mu / h["bcm_next"]) + (1 - beta) * (g / h["bcm"])
      else:
        m_hat = mu / h["bcm"]
    else:  # reference: the raw average, Nesterov as g.lerp(m, beta)
      m_hat = beta * mu + (1 - beta) * g if nesterov else mu
    o = newton_schulz(m_hat, coeffs, h["eps"], preconditioning, eps_mode=eps_mode)
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
    u = m_hat / (jnp.sqrt(nu / h["bc2"] + h["adam_eps_root"]) + h[adam_eps_name])
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


def _adam_routed(adam_mask: Any, params: Any, where: str) -> list[bool]:
  """Per leaf: a 2-D parameter that ``adam_mask`` sends to the Adam branch."""
  leaves = jax.tree.leaves(params)
  if adam_mask is None:
    return [False] * len(leaves)
  picked = resolve_mask(adam_mask, params, len(leaves), f"{where}adam_mask: ")
  routed = [b and p.ndim == 2 for b, p in zip(picked, leaves)]
  if not any(routed):
    what = ("selects no parameter" if not any(picked) else
            "selects only parameters that are not 2-D, which take the Adam step anyway")
    raise ValueError(
        f"{where}adam_mask {what}, so no matrix is routed to the Adam branch. Set True"
        " on the 2-D parameters (or subtrees) that should take the Adam step, with keys"
        " that match the params' (e.g. adam_mask={'embed': True, 'blocks': False,"
        " 'head': True}), or pass adam_mask=None to give every 2-D parameter the Muon"
        " step.")
  return routed


def muon(
    learning_rate: ScalarOrSchedule,
    ns_coeffs: Any = (3.4445, -4.775, 2.0315),
    ns_steps: int = 5,
    beta: ScalarOrSchedule = 0.95,
    eps: ScalarOrSchedule | None = None,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: Any = None,
    mu_dtype: Any = None,
    *,
    variant: str = "reference",
    adam_mask: Any = None,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    adam_b1: ScalarOrSchedule = 0.9,
    adam_b2: ScalarOrSchedule = 0.999,
    adam_eps: ScalarOrSchedule | None = None,
    adam_eps_root: ScalarOrSchedule = 0.0,
    adam_weight_decay: ScalarOrSchedule = 0.0,
    adam_learning_rate: ScalarOrSchedule | None = None,
    muon_weight_dimension_numbers: Any = None,
    consistent_rms: ScalarOrSchedule | None = None,
    nu_dtype: Any = None,
):
  r"""Muon: Nesterov momentum orthogonalised by Newton–Schulz, for 2-D parameters.

  Every 2-D parameter :math:`W \in \mathbb{R}^{n_{in} \times n_{out}}` (a dense
  kernel, ``x @ W``) takes the Muon step, unless ``adam_mask`` routes it to the
  Adam branch; every other parameter (vectors, scalars, arrays of rank >= 3)
  takes an (N)AdamW step with the ``adam_*`` settings. The default
  (``variant="reference"``) is the rule of Jordan et al., as
  ``torch.optim.Muon`` implements it. For a matrix, with :math:`m_0 = 0`:

  .. math::
    m_t = \beta m_{t-1} + (1-\beta) g_t,\quad
    \tilde m_t = \beta m_t + (1-\beta) g_t
    \ \ (\text{or } m_t \text{ without Nesterov}) \\
    O_t = \mathrm{NS}_k\big(\tilde m_t / \max(\|\tilde m_t\|_F, \epsilon)\big)
    \approx U V^\top \text{ for } \tilde m_t = U S V^\top,
    \quad (\text{adaptive: } O_t \leftarrow \langle \tilde m_t, O_t\rangle\, O_t) \\
    u_t = -\eta_t \left( s\, O_t + \lambda\, W_{t-1} \right),\quad
    s = \sqrt{\max(1, n_{out}/n_{in})}
    \ \ (\text{or } \rho \sqrt{\max(n_{in}, n_{out})} \text{ with consistent\_rms } \rho)

  :math:`\mathrm{NS}_k` is :func:`newton_schulz`: ``ns_steps`` = :math:`k` = 5
  quintic iterations :math:`X \mapsto aX + (bA + cA^2)X`, :math:`A = XX^\top`,
  with :math:`(a, b, c) = (3.4445, -4.7750, 2.0315)`; :math:`\epsilon` = 1e-7.
  No bias correction: the momentum is a plain exponential average.

  **Mapping to torch.** ``torch.optim.Muon`` holds a ``Linear`` weight of shape
  (out, in), used as ``x @ weight.T``; jopt's kernel is its transpose,
  :math:`W = \text{weight}^\top` of shape (:math:`n_{in}, n_{out}`). NS commutes
  with transposition, so jopt's update is the transpose of torch's, and torch's
  ``adjust_lr_fn="original"`` factor :math:`\sqrt{\max(1, A/B)}`, (A, B) = (out,
  in), is the :math:`s` above; ``adjust_lr_fn="match_rms_adamw"`` is
  ``consistent_rms=0.2``. Torch's decoupled decay :math:`W \leftarrow (1 -
  \eta\lambda) W` is the :math:`\lambda` term (torch defaults to
  :math:`\lambda` = 0.1, jopt to 0). Torch's Newton–Schulz runs in bfloat16;
  jopt's in the parameter's compute dtype (at least float32). Jordan's own code
  divides by :math:`\|\tilde m_t\|_F + \epsilon` rather than the max, a
  difference of :math:`\epsilon / \|\tilde m_t\|_F` relative.

  **The optax variant** (``variant="optax"``) is ``optax.contrib.muon``'s rule
  and departs from the reference in exactly these places: the momentum is
  bias-corrected, :math:`\hat m_t = \beta m_t / (1-\beta^{t+1}) + (1-\beta)
  g_t / (1-\beta^t)` (or :math:`m_t / (1-\beta^t)` without Nesterov), in place of
  :math:`\tilde m_t`; the NS input is divided by :math:`\|\hat m_t\|_F +
  \epsilon` (not the max); :math:`\epsilon` defaults to 1e-8; and the Adam
  branch's :math:`\epsilon` is ``eps`` unless ``adam_eps`` is given. Everything
  else is shared, the shape scaling :math:`s` included. The two variants take
  the same first step (up to :math:`\epsilon`: both momenta are multiples of
  :math:`g_1`) and differ from the second on, the more so the more the
  gradients change between steps (a few tenths of a percent to ~10%,
  max-relative, in jopt's tests).

  **The Adam branch** is ``optax.adamw`` (``nesterov=True``: its Nesterov form)
  with ``adam_b1``, ``adam_b2``, ``adam_eps``, ``adam_eps_root``, decay
  ``adam_weight_decay`` on every parameter it handles, rate
  ``adam_learning_rate`` (default ``learning_rate``), and ``mu_dtype`` and
  ``nesterov`` shared with Muon.

  **Routing.** Embeddings and output heads are 2-D but are better served by
  Adam (Jordan et al.); ``adam_mask`` sends them there: a tree of bools shaped
  like the params, or a prefix of it (one bool for a whole subtree), or a
  function ``params -> such a tree``; True means "Adam". A mask that routes no
  2-D parameter is a ``ValueError`` (a key that matches nothing, most often).
  For a predicate over paths, build the tree with
  ``jax.tree_util.tree_map_with_path(lambda path, p: ..., params)``.

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
    eps: :math:`\epsilon` >= 0 of the Newton–Schulz normalisation; None: 1e-7
      (reference) or 1e-8 (optax variant, where it is also Adam's).
    weight_decay: :math:`\lambda` >= 0 for the matrices (multiplied by :math:`\eta`).
    weight_decay_mask: which matrices decay: a tree of bools like the params
      (entries of parameters on the Adam branch are ignored), or a function
      ``params -> tree``; None decays all.
    mu_dtype: storage dtype of :math:`m`, for matrices and Adam alike
      (default: the parameter's).
    variant: ``"reference"`` (default: Jordan et al., ``torch.optim.Muon``) or
      ``"optax"`` (``optax.contrib.muon``'s bias-corrected rule, see above).
    adam_mask: which 2-D parameters take the Adam step instead of Muon's (see
      Routing); None: none of them.
    nesterov: use the Nesterov form of the momentum (Muon and Adam).
    adaptive: scale :math:`O_t` by the dual norm :math:`\langle \tilde m_t, O_t\rangle`.
    preconditioning: ``"frobenius"`` (default), ``"spectral"``, ``"aol"`` or
      ``"schatten"``; see :func:`newton_schulz`.
    adam_b1: Adam's :math:`\beta_1`, in [0, 1).
    adam_b2: Adam's :math:`\beta_2`, in [0, 1).
    adam_eps: Adam's :math:`\epsilon` >= 0 in its denominator; None: 1e-8
      (reference) or ``eps`` (optax variant).
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
    >>> params = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
    >>> grads = {"w": jnp.array([[3.0, 0.0], [0.0, 1.0]]), "b": jnp.array([0.5, -1.0])}
    >>> tx = jopt.muon(0.02, adam_learning_rate=3e-4)
    >>> state = tx.init(params)   # kernels: Muon; biases, norms, arrays > 2-D: Adam
    >>> updates, state = tx.update(grads, state, params)
    >>> # g is diagonal, so is O_1 = NS_5(g / ||g||_F): its singular values 3 / sqrt(10) and
    >>> # 1 / sqrt(10) go to 0.753 and 1.134, near 1 (see newton_schulz); s = 1 (square W)
    >>> print(np.asarray(jnp.diag(updates["w"]) / -0.02).round(3))
    [0.753 1.134]
    >>> print(np.asarray(updates["b"]).round(6))   # NAdam's first step, -3e-4 * 1.4737 * sign(g)
    [-0.000442  0.000442]

    Embedding (vocab, d) and output head (d, vocab) to Adam, hidden kernels to
    Muon (``nu``, Adam's second moment, is a one-element placeholder for Muon's
    matrices):

    >>> params = {"embed": jnp.ones((8, 4)), "blocks": {"w1": jnp.ones((4, 4)), "b1": jnp.zeros(4)},
    ...           "head": {"kernel": jnp.ones((4, 8)), "bias": jnp.zeros(8)}}
    >>> tx = jopt.muon(0.02, adam_learning_rate=3e-4,
    ...                adam_mask={"embed": True, "blocks": False, "head": True})
    >>> state = tx.init(params)
    >>> jax.tree.map(jnp.shape, state.nu)
    {'blocks': {'b1': (4,), 'w1': (1,)}, 'embed': (8, 4), 'head': {'bias': (8,), 'kernel': (4, 8)}}
    >>> tx = jopt.muon(0.01, variant="optax")   # optax.contrib.muon's rule

  Reference: Jordan et al., *Muon: An optimizer for hidden layers in neural
  networks*, 2024 (kellerjordan.github.io/posts/muon); ``torch.optim.Muon``
  (PyTorch 2.9+); Liu et al., *Muon is Scalable for LLM Training*, 2025
  (consistent RMS); Bernstein & Newhouse, *Old Optimizer, New Norm: An
  Anthology*, 2024 (adaptive).
  """
  where = "muon: "
  if muon_weight_dimension_numbers is not None:
    raise NotImplementedError(
        f"{where}muon_weight_dimension_numbers is not supported by jopt.muon: it"
        " orthogonalises 2-D parameters only. Reshape higher-rank kernels to 2-D,"
        " or use optax.contrib.muon.")
  if not isinstance(variant, str) or variant not in _VARIANTS:
    raise ValueError(
        f"{where}variant={variant!r} is not one of {_VARIANTS!r}: use \"reference\""
        " (Jordan et al. / torch.optim.Muon, the default) or \"optax\""
        " (optax.contrib.muon's bias-corrected rule).")
  optax_variant = variant == "optax"
  coeffs = _resolve_coeffs(ns_coeffs, ns_steps)
  validate.check_choice("preconditioning", preconditioning, _PRECONDITIONINGS, where)
  for name, flag in (("nesterov", nesterov), ("adaptive", adaptive)):
    if not isinstance(flag, (bool, np.bool_)):
      raise TypeError(f"{where}{name} must be True or False, got {flag!r}.")
  if eps is None:
    eps = _DEFAULT_EPS[variant]
  values = dict(learning_rate=learning_rate, beta=beta, eps=eps, weight_decay=weight_decay,
                adam_b1=adam_b1, adam_b2=adam_b2, adam_eps_root=adam_eps_root,
                adam_weight_decay=adam_weight_decay)
  # The optax variant shares eps with Adam unless adam_eps is given.
  adam_eps_name = "eps" if optax_variant and adam_eps is None else "adam_eps"
  if adam_eps_name == "adam_eps":
    values["adam_eps"] = _DEFAULT_ADAM_EPS if adam_eps is None else adam_eps
  if adam_learning_rate is not None:
    values["adam_learning_rate"] = adam_learning_rate
  if consistent_rms is not None:
    values["consistent_rms"] = consistent_rms
  hyper = HyperSpec("muon", **values)

  mu_zeros = slot_zeros(mu_dtype, f"{where}mu_dtype")

  def mu_init(p):
    require_real(p, where, "Newton-Schulz orthogonalisation here is for real matrices")
    return mu_zeros(p)

  mu_init = param_like(mu_init, same_dtype=mu_dtype is None)
  nu_full = slot_zeros(nu_dtype, f"{where}nu_dtype")

  def nu_init(p):
    if p.ndim == 2:
      # a one-element placeholder: orbax cannot save zero-size arrays
      return full_like(p, 0, p.dtype if nu_dtype is None else nu_dtype, shape=(1,))
    return nu_full(p)

  def matrix_mask(params):
    leaves, treedef = jax.tree.flatten(params)
    routed = _adam_routed(adam_mask, params, where)
    return treedef.unflatten([p.ndim == 2 and not r for p, r in zip(leaves, routed)])

  inner = leafwise(
      "muon", MuonState, hyper, {"mu": mu_init, "nu": nu_init},
      _muon_rule(coeffs, preconditioning, bool(nesterov), bool(adaptive),
                 consistent_rms is not None, adam_learning_rate is not None,
                 optax_variant, adam_eps_name),
      needs_params=True,
      scalars=_muon_scalars,
      masks={"matrix": matrix_mask, "decay": weight_decay_mask},
  )
  if adam_mask is None:
    return inner

  def init_fn(params):
    # Matrices routed to Adam need its full second moment (leafwise sizes each
    # slot from the array alone); a mask that routes nothing fails here, at init.
    # The mask is resolved on mu: the params' structure and shapes, as update
    # sees them (leafwise unwraps flax Variables).
    state = inner.init(params)
    like = state.mu
    routed = _adam_routed(adam_mask, like, where)
    nu_leaves, nu_def = jax.tree.flatten(state.nu)
    # (the one-element placeholder already has nu's dtype: the param's or nu_dtype)
    nu = nu_def.unflatten([full_like(m, 0, n.dtype) if r else n for m, r, n in
                           zip(jax.tree.leaves(like), routed, nu_leaves)])
    return state._replace(nu=nu)

  return optax.GradientTransformationExtraArgs(init_fn, inner.update)
