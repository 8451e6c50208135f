"""``jopt.prune``: masks in the optimizer state, pruned weights exactly zero after every update."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.experimental.shard_alike import shard_alike

from jopt._core import validate
from jopt._core.hyperparams import hyper_dtype
from jopt._core.slots import zero_codes
from jopt._core.tree import (explicit_spec, full_like, leaf_paths, safe_increment,
                             unwrap_variables)
from jopt.prune import allocation as alloc
from jopt.prune import granularity as gran
from jopt.prune.criteria import CRITERIA, score
from jopt.regularizers.penalties import mask_flags

__all__ = ["prune", "PruneState", "SCOPES"]

SCOPES = ("layer", "global")


class PruneState(NamedTuple):
  """State of :func:`prune`.

  Attributes:
    count: int32, the number of ``update`` calls so far (saturating).
    sparsity: 0-d float (float64 under x64, else float32). For a number given
      as ``sparsity=``, that target: ``state._replace(sparsity=...)`` changes
      it without a recompile (it takes effect at the next mask update). For a
      schedule, its value at the latest ``update`` call. ``1 - N/M`` for N:M.
    masks: a tree of ``bool`` arrays with the params' (unwrapped) structure and
      shapes, sharded like them; ``True`` keeps an entry, ``False`` prunes it.
      Leaves the filter leaves out are all ``True``.
    inner_state: the wrapped optimizer's state.
  """

  count: jax.Array
  sparsity: jax.Array
  masks: Any
  inner_state: Any


PruneState.__module__ = "jopt"


def _pair(name: str, value: Any, where: str) -> tuple[int, int]:
  ok = (isinstance(value, (tuple, list)) and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value))
  if not ok:
    example = "(2, 4)" if name == "n_m" else "(4, 4)"
    raise ValueError(f"{where}{name}={value!r} must be a pair of positive integers,"
                     f" e.g. {name}={example}.")
  return int(value[0]), int(value[1])


def _check_sparsity(sparsity: Any, where: str) -> None:
  value = sparsity
  if validate.is_schedule(sparsity):
    try:
      value = sparsity(0)
    except Exception as e:  # pylint: disable=broad-except
      raise TypeError(f"{where}sparsity is callable, so it must be a schedule step ->"
                      f" sparsity; calling it at step 0 failed: {e}") from e
    where = f"{where}the schedule given as "
  validate.check_range("sparsity", value, 0.0, 1.0, high_open=True, where=where)


def _key(seed: Any, where: str) -> jax.Array:
  if isinstance(seed, int) and not isinstance(seed, bool):
    return jax.random.key(seed)
  if isinstance(seed, jax.Array):
    if jnp.issubdtype(seed.dtype, jax.dtypes.prng_key):
      return seed
    if seed.dtype == jnp.uint32:
      return jax.random.wrap_key_data(seed)
  raise TypeError(f"{where}seed={seed!r} must be an int or a PRNG key (jax.random.key(0)).")


def _is_params_like(treedef: Any, shapes: list[tuple[int, ...]]) -> Callable[[Any], bool]:
  def check(x: Any) -> bool:
    try:
      leaves, td = jax.tree.flatten(x)
    except Exception:  # pylint: disable=broad-except
      return False
    return td == treedef and len(leaves) == len(shapes)
  return check


def _replicated(x: jax.Array) -> jax.Array:
  if explicit_spec(x) is None:
    return x
  return jax.sharding.reshard(x, jax.sharding.PartitionSpec())


def _zero_slots(inner: Any, treedef: Any, shapes: list[tuple[int, ...]],
                masks: list[jax.Array | None]) -> Any:
  """``inner`` with every params-shaped slot set to zero where the mask is False.

  Floating slots get 0.0; integer-coded slots of a state type registered with
  :func:`jopt._core.slots.register_zero_codes` (``adam_8bit``'s uint8 moments) get
  the code that decodes to 0.0.
  """
  like = _is_params_like(treedef, shapes)

  def fix(x, code=None):
    if not like(x):
      return x
    leaves = treedef.flatten_up_to(x)
    out = []
    for leaf, shape, m in zip(leaves, shapes, masks):
      if m is not None and isinstance(leaf, jax.Array) and tuple(leaf.shape) == shape:
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
          leaf = jnp.where(m, leaf, jnp.zeros((), leaf.dtype))
        elif code is not None and jnp.issubdtype(leaf.dtype, jnp.integer):
          leaf = jnp.where(m, leaf, jnp.asarray(code, leaf.dtype))
      out.append(leaf)
    return treedef.unflatten(out)

  def coded(x):
    return zero_codes(type(x)) is not None

  def visit(x):
    if coded(x):
      codes = zero_codes(type(x))
      return x._replace(**{f: fix(getattr(x, f), codes.get(f)) for f in x._fields})
    return fix(x)

  return jax.tree.map(visit, inner, is_leaf=lambda x: coded(x) or like(x))


def prune(
    tx: optax.GradientTransformation,
    sparsity: Any = None,
    *,
    criterion: str = "magnitude",
    granularity: str = "weight",
    scope: str = "layer",
    allocation: str = "uniform",
    filter: Any = None,  # pylint: disable=redefined-builtin
    update_every: int = 1,
    begin_step: int = 0,
    end_step: int | None = None,
    n_m: tuple[int, int] | None = None,
    block: tuple[int, int] | None = None,
    seed: Any = 0,
    zero_inner_state: bool = True,
) -> optax.GradientTransformationExtraArgs:
  r"""Wrap an optimizer so that it trains a pruned network: masks in state, exact zeros.

  At each ``update(g, state, params)`` with step index :math:`t`
  (``state.count``), on a mask-update step

  .. math::
    t \ge t_0,\quad (t - t_0) \bmod \Delta t = 0,\quad t \le t_{end}

  the masks :math:`m` are recomputed from the current parameters (and
  gradient) at the target :math:`s_t` (the schedule's value, or the number);
  between mask updates they are fixed. Then, with the masks,

  .. math::
    \tilde g = m \odot g, \quad \tilde\theta = m \odot \theta, \quad
    (u, S) = \mathrm{tx.update}(\tilde g, m \odot S, \tilde\theta), \quad
    u' = m \odot u - (1 - m) \odot \theta

  so a pruned entry's update is exactly :math:`-\theta` and
  ``optax.apply_updates`` makes it exactly 0.0 (no hook to call), and the
  inner state's slots shaped like the params (Adam's moments, momentum
  buffers, ...) are zeroed at pruned entries before and after the inner
  update, so they are zero after every step and a regrown entry starts
  from zero (not from an optimizer's initial value, e.g. Adagrad's
  ``initial_accumulator_value``). ``adam_8bit``'s uint8 moment codes are set
  to the code that decodes to 0.0 (their block scales follow at the next
  re-quantization). Slots of other shapes are left alone: Adafactor's factored
  row and column statistics (a pruned entry's zero gradient only enters them
  through its row and column means) and one-element placeholders.

  A target :math:`s` on :math:`n` units (entries, or groups for a structured
  granularity) prunes exactly :math:`\lfloor s n + \tfrac12 \rfloor` of them, the
  lowest-scored, ties broken by position (the earlier leaf, then the lower
  flat index, pruned first). ``scope="layer"`` applies this per leaf
  (counts from ``allocation``); ``scope="global"`` ranks the groups of all
  selected leaves together (one threshold; group scores are means or RMS, see
  :mod:`jopt.prune.granularity`, so leaves of different sizes compare).

  Args:
    tx: the optimizer to wrap (any optax transformation); its state is nested
      as ``state.inner_state``.
    sparsity: the target fraction of pruned units in ``[0, 1)``: a number or a
      schedule ``step -> sparsity`` (e.g. a Zhu & Gupta polynomial schedule).
      Must be ``None`` with ``granularity="n_m"`` (the pattern fixes it).
    criterion: ``"magnitude"`` :math:`|w|`, ``"saliency"`` :math:`|w g|` (the
      gradient passed to this update) or ``"random"`` (scores fixed by
      ``seed``, so masks of a rising target are nested).
    granularity: ``"weight"``, ``"n_m"``, ``"block"``, ``"neuron"`` (Dense
      output columns), ``"channel"`` (conv filters, the O axis of HWIO) or
      ``"layer"`` (whole leaves, ranked across leaves: needs ``scope="global"``).
    scope: ``"layer"`` (default) or ``"global"``.
    allocation: per-leaf targets for ``scope="layer"``: ``"uniform"`` (each
      leaf at :math:`s`) or ``"erk"`` (Erdős–Rényi-Kernel densities, with
      largest-remainder rounding so the pruned total is exactly
      :math:`\lfloor s N + \tfrac12\rfloor`; granularity ``"weight"`` only).
    filter: which leaves are pruned: ``None`` (default) is
      :func:`jopt.regularizers.weights_mask` (``ndim >= 2``: kernels, not
      biases or norms), or ``True``, a tree / prefix of bools, or a function
      ``params -> tree``. Selecting nothing raises.
    update_every: :math:`\Delta t \ge 1`, steps between mask updates.
    begin_step: :math:`t_0 \ge 0`, the first mask-update step (all masks are
      ``True`` before it).
    end_step: :math:`t_{end}` (inclusive), the last mask-update step, or
      ``None`` for no end.
    n_m: ``(N, M)`` for ``granularity="n_m"``, ``1 <= N <= M``: at most N of
      every M consecutive entries along the input axis (-2) are kept.
    block: ``(b_in, b_out)`` for ``granularity="block"``: tiles of the last two
      axes.
    seed: an int or PRNG key for ``criterion="random"``.
    zero_inner_state: zero the inner state's params-shaped slots at pruned
      entries (default True).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state :class:`PruneState`;
    ``update`` needs ``params``; other keywords are passed to ``tx``.

  Example:
    >>> params = {"w": jnp.arange(1.0, 9.0).reshape(2, 4), "b": jnp.zeros(4)}
    >>> grads = jax.tree.map(jnp.ones_like, params)
    >>> tx = jopt.prune(jopt.adam(1e-3), 0.75, update_every=100)  # masks at steps 0, 100, ...
    >>> state = tx.init(params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = optax.apply_updates(params, updates)   # pruned entries exactly 0.0
    >>> [round(v, 3) for v in params["w"].ravel().tolist()]   # the 6 smallest of 8 pruned
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 6.999, 7.999]
    >>> print(jopt.prune.sparsity_report(state))   # the masks; "b" (ndim 1) is not pruned
    leaf              zeros        size  sparsity
    params['b']           0           4  0.0000
    params['w']           6           8  0.7500
    global                6          12  0.5000

  Reference: Han et al., *Learning both Weights and Connections for Efficient
  Neural Networks*, NeurIPS 2015 (magnitude pruning); Zhu & Gupta, *To prune,
  or not to prune*, 2017 (gradual pruning, mask updates every
  :math:`\Delta t` between :math:`t_0` and :math:`t_{end}`); Molchanov et al.,
  ICLR 2017 and CVPR 2019 (Taylor saliency); Mishra et al., *Accelerating Sparse
  Deep Neural Networks*, 2021 (NVIDIA 2:4); Li et al., *Pruning Filters for
  Efficient ConvNets*, ICLR 2017 (channel); Evci et al., *Rigging the Lottery*,
  ICML 2020 (ERK); the masks-in-state design of jaxpruner (Lee et al., 2023).
  """
  where = "prune: "
  if not (hasattr(tx, "init") and hasattr(tx, "update")):
    raise TypeError(f"{where}tx={tx!r} must be an optax transformation (with init and update).")
  tx = optax.with_extra_args_support(tx)
  validate.check_choice("criterion", criterion, CRITERIA, where)
  validate.check_choice("granularity", granularity, gran.GRANULARITIES, where)
  validate.check_choice("scope", scope, SCOPES, where)
  validate.check_choice("allocation", allocation, alloc.ALLOCATIONS, where)
  validate.check_flag(where, zero_inner_state=zero_inner_state)
  if granularity == "n_m":
    if n_m is None:
      raise ValueError(f"{where}granularity='n_m' needs n_m=(N, M), e.g. n_m=(2, 4).")
    n_m = _pair("n_m", n_m, where)
    if n_m[0] > n_m[1]:
      raise ValueError(f"{where}n_m={n_m!r} has N > M; keep N <= M, e.g. n_m=(2, 4).")
    if sparsity is not None:
      raise ValueError(f"{where}granularity='n_m' fixes the sparsity at 1 - N/M ="
                       f" {1 - n_m[0] / n_m[1]}; pass sparsity=None (the default).")
    if scope != "layer":
      raise ValueError(f"{where}granularity='n_m' is per group of M entries; scope="
                       f"{scope!r} does not apply, pass scope='layer'.")
  elif n_m is not None:
    raise ValueError(f"{where}n_m={n_m!r} is only used with granularity='n_m'.")
  else:
    if sparsity is None:
      raise ValueError(f"{where}sparsity is required (a number in [0, 1) or a schedule).")
    _check_sparsity(sparsity, where)
  if granularity == "block":
    if block is None:
      raise ValueError(f"{where}granularity='block' needs block=(b_in, b_out), e.g. (4, 4).")
    block = _pair("block", block, where)
  elif block is not None:
    raise ValueError(f"{where}block={block!r} is only used with granularity='block'.")
  if granularity == "layer" and scope != "global":
    raise ValueError(f"{where}granularity='layer' ranks whole leaves against each other;"
                     " pass scope='global'.")
  if allocation == "erk" and (scope != "layer" or granularity != "weight"):
    raise ValueError(f"{where}allocation='erk' sets per-leaf targets of unstructured"
                     " pruning: use it with scope='layer' and granularity='weight'"
                     f" (got scope={scope!r}, granularity={granularity!r}).")
  every = validate.check_positive_int("update_every", update_every, where)
  begin = validate.static_int("begin_step", begin_step, where)
  end = None if end_step is None else validate.static_int("end_step", end_step, where, begin)
  base_key = _key(seed, where)
  schedule = sparsity if validate.is_schedule(sparsity) else None
  const = (1 - n_m[0] / n_m[1]) if granularity == "n_m" else (None if schedule else sparsity)

  def selection(params):
    flags = mask_flags(filter, params, where)
    if not any(flags):
      raise ValueError(f"{where}filter={filter!r} selects no leaf of the params"
                       f" {jax.tree.structure(params)}; select at least one array"
                       " (the default selects ndim >= 2).")
    leaves = jax.tree.leaves(params)
    for path, p, f in zip(leaf_paths(params), leaves, flags):
      if f:
        if not jnp.issubdtype(jnp.result_type(p), jnp.inexact):
          raise TypeError(f"{where}{path} has dtype {jnp.result_type(p)}; only floating"
                          " or complex leaves can be pruned. Leave it out with filter=.")
        gran.check_shape(granularity, tuple(jnp.shape(p)), path, n_m, block)
    return flags

  def init_fn(params):
    plain = unwrap_variables(params)
    selection(plain)
    masks = jax.tree.map(lambda p: full_like(jnp.asarray(p), True, bool), plain)
    s0 = jnp.asarray(validate.real_value(schedule(0) if schedule else const), hyper_dtype())
    return PruneState(jnp.zeros((), jnp.int32), s0, masks, tx.init(params))

  def compute(ps, gs, s, idx):
    """New masks of the selected leaves (params ``ps``, gradients ``gs``).

    Under explicit sharding the ranking (a sort over whole leaves) runs on
    replicated copies and each mask is put back on its parameter's spec.
    """
    specs = [explicit_spec(p) for p in ps]
    ps = [_replicated(p) for p in ps]
    gs = [_replicated(g) for g in gs]
    masks = _rank(ps, gs, s, idx)
    return [m if sp is None else jax.sharding.reshard(m, sp) for m, sp in zip(masks, specs)]

  def _rank(ps, gs, s, idx):
    scores = [score(criterion, p, g, jax.random.fold_in(base_key, i))
              for p, g, i in zip(ps, gs, idx)]
    shapes = [tuple(p.shape) for p in ps]
    if granularity == "n_m":
      return [gran.n_m_keep(sc, n_m) for sc in scores]
    groups = [gran.group_scores(granularity, sc, block) for sc in scores]
    if scope == "global":
      with jax.numpy_dtype_promotion("standard"):  # float32 and float64 leaves mixed
        dt = jnp.result_type(*[g.dtype for g in groups])
      flat = jnp.concatenate([g.astype(dt) for g in groups])
      keep = gran.rank_keep(flat, alloc.round_count(s, flat.shape[0]))
      bounds, start = [], 0
      for g in groups:
        bounds.append((start, start + g.shape[0]))
        start += g.shape[0]
      keeps = [keep[a:b] for a, b in bounds]
    else:
      if allocation == "erk":
        counts = alloc.erk_counts(s, shapes)
      else:
        counts = alloc.uniform_counts(s, [g.shape[0] for g in groups])
      keeps = [gran.rank_keep(g, k) for g, k in zip(groups, counts)]
    return [gran.expand(granularity, k, sh, block) for k, sh in zip(keeps, shapes)]

  def update_fn(updates, state, params=None, **extra):
    if params is None:
      raise ValueError(f"{where}update needs params: tx.update(grads, state, params)"
                       " (pruned weights are driven to exactly zero through the update).")
    plain = unwrap_variables(params)
    p_leaves, treedef = jax.tree.flatten(plain)
    g_leaves = treedef.flatten_up_to(unwrap_variables(updates))
    m_leaves = treedef.flatten_up_to(unwrap_variables(state.masks))
    flags = selection(plain)
    idx = [i for i, f in enumerate(flags) if f]
    t = state.count
    s = (jnp.asarray(validate.real_value(schedule(t)), hyper_dtype()) if schedule
         else state.sparsity)
    is_update = (t >= begin) & ((t - begin) % every == 0)
    if end is not None:
      is_update &= t <= end
    sel_p = [p_leaves[i] for i in idx]
    sel_g = [g_leaves[i] for i in idx]
    new_sel = jax.lax.cond(is_update,
                           lambda: compute(sel_p, sel_g, s, idx),
                           lambda: [m_leaves[i] for i in idx])
    masks = list(m_leaves)
    for i, m in zip(idx, new_sel):
      if m.ndim and explicit_spec(p_leaves[i]) is None:
        _, m = shard_alike(p_leaves[i], m)
      masks[i] = m
    live = [m if f else None for m, f in zip(masks, flags)]
    g_in = [jnp.where(m, g, jnp.zeros((), g.dtype)) if m is not None else g
            for g, m in zip(g_leaves, live)]
    p_in = [jnp.where(m, p, jnp.zeros((), p.dtype)) if m is not None else p
            for p, m in zip(p_leaves, live)]
    shapes = [tuple(jnp.shape(p)) for p in p_leaves]
    inner = state.inner_state
    if zero_inner_state:
      inner = _zero_slots(inner, treedef, shapes, live)
    u, inner = tx.update(treedef.unflatten(g_in), inner, treedef.unflatten(p_in), **extra)
    if zero_inner_state:
      inner = _zero_slots(inner, treedef, shapes, live)
    u_leaves = treedef.flatten_up_to(u)
    out = [jnp.where(m, v, (-p).astype(v.dtype)) if m is not None else v
           for v, p, m in zip(u_leaves, p_leaves, live)]
    new_state = PruneState(safe_increment(t), s.astype(state.sparsity.dtype),
                           treedef.unflatten(masks), inner)
    return treedef.unflatten(out), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
