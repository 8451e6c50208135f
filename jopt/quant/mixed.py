"""Mixed precision: per-leaf bit widths from measured sensitivity, under a size budget.

:func:`layer_sensitivity` quantizes one leaf at a time to each candidate bit
width (the others stay in float) and measures the loss increase on
calibration batches; :func:`allocate_bits` picks one width per leaf that
minimizes the summed measured increase subject to a total byte budget, as an
exact multiple-choice knapsack. Its result is a rules dict for
:func:`jopt.quant.quantize_params`.
"""

from __future__ import annotations

import fnmatch
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jopt._core.tree import unwrap_variables
from jopt.quant import _layout
from jopt.quant.quantizer import quantize
from jopt.quant.tree import param_path

__all__ = ["Sensitivity", "layer_sensitivity", "allocate_bits"]


class Sensitivity(NamedTuple):
  """Measured loss increase of quantizing each leaf alone, and its bytes, per bit width.

  Attributes:
    float_loss: mean loss of the float parameters over the calibration batches.
    bits: the candidate bit widths, ascending.
    loss_increase: ``{path: {bits: mean loss with that leaf quantized - float_loss}}``.
    nbytes: ``{path: {bits: true .nbytes of that leaf quantized}}``.
    leaf_nbytes: ``{path: bytes as stored}`` for every leaf of the tree (measured
      or not), so the bytes of the leaves kept as they are are known.
    quantize_kwargs: the :func:`jopt.quant.quantize` keywords used (pass them to
      :func:`jopt.quant.quantize_params` with the allocated rules).
  """

  float_loss: float
  bits: tuple[int, ...]
  loss_increase: dict[str, dict[int, float]]
  nbytes: dict[str, dict[int, int]]
  leaf_nbytes: dict[str, int]
  quantize_kwargs: dict[str, Any]

  def __str__(self) -> str:
    w = max([len(p) for p in self.loss_increase] + [4])
    head = "".join(f"  {f'{b}-bit':>12}" for b in self.bits)
    lines = [f"{'leaf':<{w}}{head}   (loss increase; float loss {self.float_loss:.6g})"]
    for p, row in self.loss_increase.items():
      lines.append(f"{p:<{w}}" + "".join(f"  {row[b]:>12.4g}" for b in self.bits))
    return "\n".join(lines)


Sensitivity.__module__ = "jopt.quant"

_SENS = "layer_sensitivity: "
_ALLOC = "allocate_bits: "


def _stored_nbytes(leaf: Any) -> int:
  return int(np.prod(jnp.shape(leaf), dtype=np.int64)) * jnp.dtype(jnp.result_type(leaf)).itemsize


def _patterns(name: str, value: Any, where: str) -> list[str]:
  pats = [value] if isinstance(value, str) else list(value)
  if not pats or not all(isinstance(p, str) for p in pats):
    raise TypeError(f"{where}{name} must be a glob pattern or a non-empty list of them"
                    f" (e.g. '*/kernel'), got {value!r}.")
  return pats


def layer_sensitivity(loss_fn: Callable[..., Any], params: Any, batches: Any, *,
                      bits: Any = (2, 3, 4, 8), paths: Any = None,
                      **quantize_kwargs: Any) -> Sensitivity:
  r"""Measure the loss increase of quantizing each leaf alone to each bit width.

  For each selected leaf :math:`p` and width :math:`b`, with
  :math:`\hat\theta^{(p,b)}` the float parameters with leaf :math:`p` replaced
  by its dequantized :math:`b`-bit quantization and :math:`B` the calibration
  batches:

  .. math:: \Delta_{p,b} = \frac{1}{|B|}\sum_{x\in B} L(\hat\theta^{(p,b)}, x)
     \;-\; \frac{1}{|B|}\sum_{x\in B} L(\theta, x)

  ``loss_fn`` is jitted once; every evaluation passes a tree of the same
  shapes and dtypes, so it is traced once per batch shape. The means are taken
  in float64 on the host.

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar``.
    params: the float parameter tree (``flax.nnx.Variable`` leaves are
      unwrapped; ``loss_fn`` receives the plain-array tree).
    batches: a non-empty iterable of calibration batches (read once, kept).
    bits: candidate bit widths (distinct ints in 2..8).
    paths: None for the leaves :func:`jopt.quant.quantize_params` quantizes by
      default (floating, :math:`\operatorname{ndim} \ge 2`), or a glob pattern
      or list of patterns matched against the ``a/b/kernel`` paths; each
      pattern must match a floating leaf. Unselected leaves are kept as
      stored by :func:`allocate_bits`.
    **quantize_kwargs: :func:`jopt.quant.quantize` keywords (``granularity``,
      ``axis``, ``scheme``, ``method``, ...), the same for every leaf.

  Returns:
    A :class:`Sensitivity` (``str()`` of it is a table).

  Example:
    >>> p = {"w": jnp.linspace(-1.0, 1.0, 16).reshape(4, 4)}
    >>> s = jopt.quant.layer_sensitivity(lambda p, x: jnp.sum((x @ p["w"]) ** 2), p, [jnp.ones((2, 4))])
    >>> sorted(s.nbytes["w"].items())
    [(2, 8), (3, 10), (4, 12), (8, 20)]

  Reference: the per-layer sensitivity of Cai et al., *ZeroQ*, CVPR 2020
  (eq. 4: quantize layer :math:`i` alone to :math:`k` bits, the others
  kept in full precision, and average a distance over sample batches). It
  departs from ZeroQ in one place: the distance is the increase of the task
  loss on real calibration batches, not the KL divergence between the float
  and the quantized model's outputs on distilled data. Dong et al., *HAWQ*,
  ICCV 2019, estimate the same quantity from the Hessian spectrum; here it is
  measured, not estimated.
  """
  if isinstance(bits, (int, np.integer)) and not isinstance(bits, bool):
    bits = (bits,)
  try:
    bits = tuple(bits)
  except TypeError:
    raise TypeError(f"{_SENS}bits must be a sequence of ints in 2..8, got {bits!r}.") from None
  cand = sorted(_layout.check_bits(b, _SENS) for b in bits)
  if not cand or len(set(cand)) != len(cand):
    raise ValueError(f"{_SENS}bits={tuple(bits)!r} must be a non-empty sequence of distinct"
                     " widths, e.g. (2, 3, 4, 8).")
  batches = list(batches)
  if not batches:
    raise ValueError(f"{_SENS}batches is empty; pass at least one calibration batch.")
  params = unwrap_variables(params)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  names = [param_path(path) for path, _ in leaves]
  arrays = [leaf for _, leaf in leaves]
  floating = [jnp.issubdtype(jnp.result_type(a), jnp.floating) for a in arrays]
  if paths is None:
    chosen = [i for i, a in enumerate(arrays) if floating[i] and jnp.ndim(a) >= 2]
    if not chosen:
      raise ValueError(f"{_SENS}params has no floating leaf with ndim >= 2 (the default"
                       f" selection); pass paths= patterns. The paths are {names}.")
  else:
    chosen = set()
    for pat in _patterns("paths", paths, _SENS):
      hit = [i for i, n in enumerate(names) if fnmatch.fnmatchcase(n, pat)]
      if not hit:
        raise ValueError(f"{_SENS}paths pattern {pat!r} matches no parameter; the paths"
                         f" are {names}.")
      bad = [names[i] for i in hit if not floating[i]]
      if bad:
        raise TypeError(f"{_SENS}paths pattern {pat!r} matches non-floating leaves {bad};"
                         " only floating leaves can be quantized. Narrow the pattern.")
      chosen.update(hit)
    chosen = sorted(chosen)

  jitted = jax.jit(loss_fn)

  def mean_loss(leaf_list: list[Any]) -> float:
    tree = jax.tree_util.tree_unflatten(treedef, leaf_list)
    vals = []
    for batch in batches:
      v = jitted(tree, batch)
      if jnp.ndim(v) != 0:
        raise ValueError(f"{_SENS}loss_fn must return a scalar, got shape {jnp.shape(v)}.")
      vals.append(np.float64(v))
    return float(np.mean(vals))

  float_loss = mean_loss(arrays)
  if not np.isfinite(float_loss):
    raise ValueError(f"{_SENS}the float loss is {float_loss}; sensitivity needs a finite"
                     " loss on the calibration batches.")
  # One compiled quantize -> dequantize per (width, leaf shape): far fewer compilations
  # than running quantize's many small ops eagerly. Under jit quantize cannot look at
  # the values, so the NaN / Inf check is done below, eagerly.
  try:
    key = tuple(sorted(quantize_kwargs.items()))
    hash(key)
  except TypeError:          # e.g. an array-valued clip_range: compile afresh
    fns = {b: _quant_dequant.__wrapped__(b, tuple(quantize_kwargs.items())) for b in cand}
  else:
    fns = {b: _quant_dequant(b, key) for b in cand}
  increase, nbytes = {}, {}
  for i in chosen:
    if not bool(jnp.all(jnp.isfinite(arrays[i]))):
      raise ValueError(f"{_SENS}parameter {names[i]!r} contains NaN or Inf values; its"
                       " quantization range is undefined. Fix or exclude it (paths=).")
    increase[names[i]], nbytes[names[i]] = {}, {}
    for b in cand:
      try:
        qa, deq = fns[b](arrays[i])
      except (ValueError, TypeError) as e:
        raise type(e)(f"{_SENS}parameter {names[i]!r}: {e}") from None
      trial = list(arrays)
      trial[i] = deq
      increase[names[i]][b] = mean_loss(trial) - float_loss
      nbytes[names[i]][b] = int(qa.nbytes)
  leaf_nbytes = {n: _stored_nbytes(a) for n, a in zip(names, arrays)}
  return Sensitivity(float_loss, tuple(cand), increase, nbytes, leaf_nbytes,
                     dict(quantize_kwargs))


@functools.lru_cache(maxsize=64)
def _quant_dequant(bits: int, kwargs: tuple[tuple[str, Any], ...]) -> Callable[..., Any]:
  """A jitted ``a -> (quantize(a, bits, **kwargs), its dequantized array)``."""
  kw = dict(kwargs)

  def fn(a):
    qa = quantize(a, bits, **kw)
    return qa, qa.dequantize()

  return jax.jit(fn)


def _escape(path: str) -> str:
  """A glob pattern that matches exactly ``path`` (``*``, ``?``, ``[`` bracketed)."""
  return "".join(f"[{c}]" if c in "*?[" else c for c in path)


def _check_sensitivity(s: Any) -> None:
  if not isinstance(s, Sensitivity):
    raise TypeError(f"{_ALLOC}sensitivity must be a jopt.quant.Sensitivity (from"
                    f" layer_sensitivity), got {type(s).__name__}.")
  for p, row in s.loss_increase.items():
    if p not in s.nbytes or p not in s.leaf_nbytes or set(row) != set(s.bits) \
        or set(s.nbytes[p]) != set(s.bits):
      raise ValueError(f"{_ALLOC}sensitivity is inconsistent at {p!r}: loss_increase,"
                       " nbytes and leaf_nbytes must cover the same paths and bits.")
    bad = [b for b, v in row.items() if not np.isfinite(v)]
    if bad:
      raise ValueError(f"{_ALLOC}sensitivity.loss_increase[{p!r}] is not finite at bits"
                       f" {bad}; the loss diverged there. Drop those widths or leaves.")


def _frontier_knapsack(options: list[list[tuple[int, float]]], capacity: int) -> list[int] | None:
  """Exact multiple-choice knapsack over a Pareto frontier of (bytes, loss) states.

  ``options[j]`` lists leaf ``j``'s ``(bytes, loss)`` choices. Returns the
  chosen index per leaf minimizing the summed loss with summed bytes <=
  ``capacity`` (ties: fewer bytes, then the earlier choices), or None.
  """
  suffix_min = [0] * (len(options) + 1)
  for j in range(len(options) - 1, -1, -1):
    suffix_min[j] = suffix_min[j + 1] + min(w for w, _ in options[j])
  # A state: (bytes, loss, choices); only states that can still fit are kept, and
  # among them only those no other state beats on both bytes and loss.
  states = [(0, 0.0, ())]
  for j, opts in enumerate(options):
    room = capacity - suffix_min[j + 1]
    cand = [(w0 + w, l0 + l, ch + (k,)) for w0, l0, ch in states
            for k, (w, l) in enumerate(opts) if w0 + w <= room]
    cand.sort(key=lambda s: (s[0], s[1], s[2]))
    states, best = [], float("inf")
    for s in cand:
      if s[1] < best:
        states.append(s)
        best = s[1]
    if not states:
      return None
  return list(min(states, key=lambda s: (s[1], s[0], s[2]))[2])


def allocate_bits(sensitivity: Sensitivity, budget_bytes: int, *,
                  rules: Any = None) -> dict[str, int | None]:
  r"""Choose a bit width per leaf minimizing the summed loss increase under a byte budget.

  With :math:`\Delta_{p,b}` and :math:`n_{p,b}` the measured loss increase
  and bytes of leaf :math:`p` at :math:`b` bits, :math:`F` the leaves fixed by
  ``rules`` and :math:`n_0` the bytes of the leaves kept as they are:

  .. math:: \min_{b_p \in \mathcal B} \sum_{p \notin F} \Delta_{p,b_p}
     \quad\text{s.t.}\quad n_0 + \sum_{p \in F} n_{p,r(p)} + \sum_{p \notin F} n_{p,b_p}
     \le \text{budget\_bytes}

  a multiple-choice knapsack, solved exactly: a dynamic program over the
  Pareto frontier of (bytes, summed increase) of partial allocations, which
  keeps only states that still fit and that no other state beats on both; no
  byte grid, so there is no rounding and no optimality gap. Ties go to fewer
  bytes. The objective assumes the increases add up across leaves; the joint
  increase of the allocation is what quantizing it measures.

  Args:
    sensitivity: a :class:`Sensitivity` from :func:`layer_sensitivity`.
    budget_bytes: the total bytes allowed for the whole tree (measured leaves
      quantized, the others as stored), as :func:`jopt.quant.size_report` counts.
    rules: None, a dict ``{pattern: spec}`` or a list of ``(pattern, spec)``,
      glob patterns over the measured paths (first match wins, as
      :func:`jopt.quant.quantize_params`): ``spec`` is a measured width (fixes
      those leaves) or None (keeps them in float). A pattern matching no
      measured leaf is an error.

  Returns:
    A dict ``{path: bits or None}`` for every leaf of the tree (None: kept as
    stored), to pass as ``quantize_params(params, rules, **sensitivity.quantize_kwargs)``;
    keys are the paths as exact-match glob patterns.

  Example:
    >>> s = jopt.quant.Sensitivity(0.0, (2, 8), {"a": {2: 1.0, 8: 0.0}, "b": {2: 0.5, 8: 0.0}},
    ...     {"a": {2: 10, 8: 40}, "b": {2: 10, 8: 40}}, {"a": 160, "b": 160}, {})
    >>> jopt.quant.allocate_bits(s, 50)
    {'a': 8, 'b': 2}

  Reference: the multiple-choice knapsack formulation of per-layer bit
  allocation, as in HAWQ-V3's integer program (Yao et al., ICML 2021), with
  measured instead of Hessian-estimated sensitivities, solved by dynamic
  programming (Kellerer, Pferschy and Pisinger, *Knapsack Problems*, 2004, ch. 11).
  """
  _check_sensitivity(sensitivity)
  if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, (int, np.integer)):
    raise TypeError(f"{_ALLOC}budget_bytes={budget_bytes!r} must be a positive int"
                    " (bytes of the whole quantized tree).")
  if budget_bytes < 1:
    raise ValueError(f"{_ALLOC}budget_bytes={budget_bytes!r} must be a positive int"
                     " (bytes of the whole quantized tree).")
  budget_bytes = int(budget_bytes)
  measured = list(sensitivity.loss_increase)
  if rules is None:
    items = []
  elif isinstance(rules, dict):
    items = list(rules.items())
  else:
    items = list(rules)
  fixed: dict[str, int | None] = {}
  for item in items:
    if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
      raise TypeError(f"{_ALLOC}rules must be a dict or a list of (pattern, spec) pairs"
                      f" with glob patterns as strings; got the entry {item!r}.")
    pat, spec = item
    if spec is not None and (isinstance(spec, bool) or spec not in sensitivity.bits):
      raise ValueError(f"{_ALLOC}rules[{pat!r}] = {spec!r}: a spec is None (keep float)"
                       f" or one of the measured widths {sensitivity.bits}; measure other"
                       " widths with layer_sensitivity(..., bits=...).")
    hit = [p for p in measured if fnmatch.fnmatchcase(p, pat)]
    if not hit:
      raise ValueError(f"{_ALLOC}rules pattern {pat!r} matches no measured parameter;"
                       f" the measured paths are {measured}.")
    for p in hit:
      fixed.setdefault(p, spec)
  base = sum(n for p, n in sensitivity.leaf_nbytes.items() if p not in sensitivity.nbytes)
  for p, spec in fixed.items():
    base += sensitivity.leaf_nbytes[p] if spec is None else sensitivity.nbytes[p][spec]
  free = [p for p in measured if p not in fixed]
  minimum = base + sum(min(sensitivity.nbytes[p].values()) for p in free)
  if minimum > budget_bytes:
    raise ValueError(f"{_ALLOC}budget_bytes={budget_bytes} cannot be met: the smallest"
                     f" allocation (every free leaf at its fewest bytes, fixed leaves as"
                     f" the rules say, other leaves as stored) takes {minimum} bytes."
                     " Raise budget_bytes, measure fewer bits, or loosen the rules.")
  options = [[(sensitivity.nbytes[p][b], sensitivity.loss_increase[p][b])
              for b in sensitivity.bits] for p in free]
  choice = _frontier_knapsack(options, budget_bytes - base)
  assert choice is not None  # the minimum fits
  chosen = dict(fixed)
  chosen.update({p: sensitivity.bits[k] for p, k in zip(free, choice)})
  return {_escape(p): (chosen[p] if p in chosen else None) for p in sensitivity.leaf_nbytes}
