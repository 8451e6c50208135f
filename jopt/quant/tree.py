"""Quantizing parameter trees: rules by parameter path, and a true size report.

A leaf's path is its keys joined by ``/`` (``{"dense": {"kernel": w}}`` gives
``"dense/kernel"``; list indices are numbers, e.g. ``"layers/0/kernel"``).
Rules are glob patterns (:mod:`fnmatch`, where ``*`` also crosses ``/``)
matched against the whole path, first match wins.
"""

from __future__ import annotations

import fnmatch
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jopt._core.tree import path_string, unwrap_variables
from jopt.quant.qarray import QuantizedArray
from jopt.quant.quantizer import quantize

__all__ = ["quantize_params", "dequantize_params", "size_report", "SizeReport",
           "LeafSize", "param_path"]

_WHERE = "quantize_params: "


def param_path(path: tuple[Any, ...]) -> str:
  r"""The ``a/b/kernel`` string of a ``jax.tree_util`` key path, as rules match it.

  .. math:: (k_1, \dots, k_n) \mapsto k_1/k_2/\cdots/k_n

  Args:
    path: a key path from ``jax.tree_util.tree_flatten_with_path`` (dict keys,
      attribute names and sequence indices).

  Returns:
    The keys joined by ``/``.

  Example:
    >>> p, _ = jax.tree_util.tree_flatten_with_path({"a": [0, {"kernel": 1}]})[0][1]
    >>> jopt.quant.param_path(p)
    'a/1/kernel'

  Reference: the ``a/b/c`` parameter names of Flax's ``traverse_util.flatten_dict(sep="/")``.
  """
  return path_string(path)


def _rules(rules: Any) -> list[tuple[str, Any]]:
  if rules is None:
    return []
  items = list(rules.items()) if isinstance(rules, dict) else list(rules)
  out = []
  for item in items:
    if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
      raise TypeError(f"{_WHERE}rules must be a dict or a list of (pattern, spec) pairs"
                      f" with glob patterns as strings; got the entry {item!r}.")
    pattern, spec = item
    if not (spec is None or isinstance(spec, (int, dict))) or isinstance(spec, bool):
      raise TypeError(f"{_WHERE}rules[{pattern!r}] = {spec!r}: a spec is None (keep"
                      " float), an int (bits) or a dict of quantize keywords.")
    out.append((pattern, spec))
  return out


def quantize_params(params: Any, rules: Any = None, default_bits: int = 8,
                    **quantize_kwargs: Any) -> Any:
  r"""Quantize a parameter tree leaf by leaf, with rules chosen by parameter path.

  For each leaf with path :math:`p`, the first rule whose glob pattern matches
  :math:`p` decides: ``None`` keeps it in float, an int :math:`b` quantizes
  with ``bits=b``, a dict gives :func:`jopt.quant.quantize` keywords (over
  the defaults). Leaves no rule matches are quantized with
  ``bits=default_bits`` and ``quantize_kwargs`` when floating with
  :math:`\operatorname{ndim} \ge 2` (kernels, embeddings, filters), and kept
  as they are otherwise (biases, norm scales, scalars, integer leaves):

  .. math:: \theta_p \mapsto \begin{cases} Q_{r(p)}(\theta_p) & \text{first rule } r(p) \text{ matching } p \\
    Q_{\text{default}}(\theta_p) & \text{no rule, } \operatorname{ndim}\theta_p \ge 2 \\
    \theta_p & \text{otherwise} \end{cases}

  Args:
    params: a pytree of arrays (``flax.nnx.Variable`` leaves are unwrapped).
    rules: None, a dict ``{pattern: spec}`` or a list of ``(pattern, spec)``.
      A pattern that matches no leaf is an error.
    default_bits: bits for leaves without a rule.
    **quantize_kwargs: defaults for :func:`jopt.quant.quantize` (``method``,
      ``scheme``, ``granularity``, ``axis``, ...).

  Returns:
    The tree with :class:`QuantizedArray` leaves where quantized.

  Example:
    >>> p = {"dense": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones(4)}}
    >>> q = jopt.quant.quantize_params(p, {"*/kernel": 4})
    >>> type(q["dense"]["kernel"]).__name__, q["dense"]["kernel"].bits
    ('QuantizedArray', 4)

  Reference: per-layer bit widths as in Han et al., *Deep Compression*, ICLR
  2016 (different bits for conv and dense layers), and the rule-by-path style
  of qwix's ``QuantizationRule``.
  """
  return map_rules(params, rules, default_bits, quantize_kwargs, _quantize_leaf,
                   where=_WHERE, verb="quantized")


def map_rules(params: Any, rules: Any, default_bits: int, kwargs: dict[str, Any],
              leaf_fn: Any, *, where: str, verb: str) -> Any:
  """Apply ``leaf_fn(name, leaf, keywords)`` to each leaf a rule (or the default) selects.

  The rule walk :func:`quantize_params` and :func:`jopt.quant.fake_quant_params`
  share: the first matching glob decides (``None`` keeps the leaf, an int sets
  ``bits``, a dict adds keywords over ``{"bits": default_bits, **kwargs}``);
  unmatched floating leaves with ``ndim >= 2`` take the defaults, other leaves
  are kept; a rule matching an integer leaf, or matching nothing, is an error.
  """
  if "bits" in kwargs:
    raise TypeError(f"{where}pass the bits of leaves without a rule as default_bits="
                    f"{kwargs['bits']!r}, not bits=.")
  rules = _rules(rules)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(unwrap_variables(params))
  used = [False] * len(rules)
  out = []
  for path, leaf in leaves:
    name = param_path(path)
    match = next((i for i, (pat, _) in enumerate(rules)
                  if fnmatch.fnmatchcase(name, pat)), None)
    floating = jnp.issubdtype(jnp.result_type(leaf), jnp.floating)
    kw = {"bits": default_bits, **kwargs}
    if match is None:
      out.append(leaf_fn(name, leaf, kw) if floating and jnp.ndim(leaf) >= 2 else leaf)
      continue
    used[match] = True
    spec = rules[match][1]
    if spec is None:
      out.append(leaf)
      continue
    if not floating:
      raise TypeError(f"{where}rules[{rules[match][0]!r}] matches {name!r}, which has"
                       f" dtype {jnp.result_type(leaf)}; only floating leaves can be"
                       f" {verb}. Narrow the pattern or map it to None.")
    kw.update({"bits": spec} if isinstance(spec, int) else spec)
    out.append(leaf_fn(name, leaf, kw))
  unused = [pat for (pat, _), u in zip(rules, used) if not u]
  if unused:
    raise ValueError(f"{where}rules {unused} match no parameter (each leaf takes the"
                     f" first pattern that matches). The paths are"
                     f" {[param_path(p) for p, _ in leaves]}.")
  return jax.tree_util.tree_unflatten(treedef, out)


def _quantize_leaf(name: str, leaf: Any, kw: dict[str, Any]) -> QuantizedArray:
  try:
    return quantize(leaf, **kw)
  except (ValueError, TypeError) as e:
    raise type(e)(f"{_WHERE}parameter {name!r}: {e}") from None


def _is_q(x: Any) -> bool:
  return isinstance(x, QuantizedArray)


def dequantize_params(tree: Any) -> Any:
  r"""Replace every :class:`QuantizedArray` in a tree by its dequantized array.

  .. math:: \hat\theta_p = \operatorname{dequantize}(Q(\theta_p))

  Args:
    tree: the output of :func:`quantize_params` (or any tree with
      ``QuantizedArray`` leaves).

  Returns:
    A tree of arrays with the original shapes and dtypes.

  Example:
    >>> q = jopt.quant.quantize_params({"w": jnp.ones((2, 2))})
    >>> w = jopt.quant.dequantize_params(q)["w"]
    >>> w.shape, bool(jnp.allclose(w, 1.0))      # ones survive 8-bit quantization
    ((2, 2), True)

  Reference: the dequantize step of Jacob et al., CVPR 2018, eq. (1).
  """
  return jax.tree.map(lambda x: x.dequantize() if _is_q(x) else x, tree, is_leaf=_is_q)


class LeafSize(NamedTuple):
  """One leaf's bytes: stored, as float32, and what it is."""

  nbytes: int
  float32_nbytes: int
  kind: str


class SizeReport(NamedTuple):
  """The bytes of a (partly) quantized tree against the same tree in float32.

  Attributes:
    nbytes: total bytes stored.
    float32_nbytes: total bytes of the same parameters in float32.
    ratio: ``float32_nbytes / nbytes`` (the compression factor).
    leaves: ``{path: LeafSize}``.
  """

  nbytes: int
  float32_nbytes: int
  ratio: float
  leaves: dict[str, LeafSize]

  def __str__(self) -> str:
    w = max([len(p) for p in self.leaves] + [4])
    lines = [f"{'leaf':<{w}}  {'bytes':>10}  {'float32':>10}  kind"]
    lines += [f"{p:<{w}}  {s.nbytes:>10}  {s.float32_nbytes:>10}  {s.kind}"
              for p, s in self.leaves.items()]
    lines.append(f"{'total':<{w}}  {self.nbytes:>10}  {self.float32_nbytes:>10}"
                 f"  {self.ratio:.2f}x smaller")
    return "\n".join(lines)


SizeReport.__module__ = "jopt.quant"
LeafSize.__module__ = "jopt.quant"


def size_report(tree: Any) -> SizeReport:
  r"""True byte counts of a tree of quantized and float leaves, against float32.

  .. math:: \text{ratio} = \frac{\sum_p 4\,|\theta_p|}{\sum_p \text{nbytes}(\theta_p)}

  A :class:`QuantizedArray` counts its packed codes, scales, zero points and
  codebook (``.nbytes``); an array counts ``size * itemsize``.

  Args:
    tree: a tree with :class:`QuantizedArray` and array leaves.

  Returns:
    A :class:`SizeReport` (``str()`` of it is a table).

  Example:
    >>> r = jopt.quant.size_report(jopt.quant.quantize_params({"w": jnp.ones((8, 8))}, default_bits=4))
    >>> r.nbytes, r.float32_nbytes
    (36, 256)

  Reference: the storage accounting of Han et al., *Deep Compression*, ICLR
  2016, Table 1 (compression rate against the float32 model).
  """
  leaves = jax.tree_util.tree_flatten_with_path(unwrap_variables(tree), is_leaf=_is_q)[0]
  sizes = {}
  for path, leaf in leaves:
    if _is_q(leaf):
      kind = f"{leaf.method} {leaf.bits}-bit {leaf.granularity}"
      sizes[param_path(path)] = LeafSize(leaf.nbytes, 4 * leaf.size, kind)
    else:
      n = int(np.prod(jnp.shape(leaf), dtype=np.int64))
      dt = jnp.result_type(leaf)
      sizes[param_path(path)] = LeafSize(n * jnp.dtype(dt).itemsize, 4 * n, jnp.dtype(dt).name)
  total = sum(s.nbytes for s in sizes.values())
  f32 = sum(s.float32_nbytes for s in sizes.values())
  return SizeReport(total, f32, f32 / total if total else float("inf"), sizes)
