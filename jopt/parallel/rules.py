"""Sharding rules by parameter path: regex -> PartitionSpec, tensor-parallel presets, NNX metadata.

A rule list ``[(r"regex", PartitionSpec(...)), ...]`` is matched against each
parameter's ``a/b/kernel`` path; the first rule whose regex is found
(``re.search``) gives the leaf's spec. Specs are checked against the mesh
(axis names, divisibility) before anything is placed, so a wrong rule fails with
the parameter's name instead of an XLA error deep in a compile.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Sequence

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jopt._core import validate
from jopt._core.tree import path_string, unwrap_variables

__all__ = ["path_of", "match_specs", "check_specs", "shard_params", "specs_from_nnx",
           "column_parallel", "row_parallel", "megatron_mlp", "data_model_mesh"]

P = PartitionSpec


def path_of(key_path: tuple[Any, ...]) -> str:
  r"""The ``a/b/kernel`` string of a ``jax.tree_util`` key path, the text a rule's regex sees.

  .. math:: (k_1, \dots, k_n) \mapsto k_1/k_2/\cdots/k_n

  Args:
    key_path: a key path from ``jax.tree_util.tree_flatten_with_path`` (dict
      keys, attribute names, sequence indices).

  Returns:
    The keys joined by ``/``.

  Example:
    >>> kp, _ = jax.tree_util.tree_flatten_with_path({"mlp": {"up": {"kernel": 1}}})[0][0]
    >>> jopt.parallel.path_of(kp)
    'mlp/up/kernel'

  Reference: Flax's ``traverse_util.flatten_dict(sep="/")`` names, as
  :func:`jopt.quant.param_path` writes them.
  """
  return path_string(key_path)


def _as_spec(spec: Any, where: str) -> PartitionSpec:
  if isinstance(spec, PartitionSpec):
    return spec
  if spec is None:
    return P()
  if isinstance(spec, (tuple, list)):
    return P(*spec)
  raise TypeError(f"{where}{spec!r} is not a PartitionSpec; write e.g."
                  " PartitionSpec(None, 'model') (or a tuple of axis names / None).")


def _rule_list(rules: Any) -> list[tuple[str, PartitionSpec]]:
  items = list(rules.items()) if isinstance(rules, dict) else list(rules)
  out = []
  for item in items:
    if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
      raise TypeError(f"match_specs: rules must be a list of (regex, PartitionSpec) pairs"
                      f" (or a dict regex -> spec); got the entry {item!r}.")
    try:
      re.compile(item[0])
    except re.error as e:
      raise ValueError(f"match_specs: the rule {item[0]!r} is not a valid regex: {e}.") from e
    out.append((item[0], _as_spec(item[1], f"match_specs: the rule {item[0]!r} -> ")))
  return out


def _nnx_spec(leaf: Any) -> PartitionSpec | None:
  """The PartitionSpec a flax ``nnx.Variable``'s metadata names, or None."""
  nnx = sys.modules.get("flax.nnx")
  var = getattr(nnx, "Variable", None)
  if var is None or not isinstance(leaf, var):
    return None
  meta = leaf.get_metadata()
  names = meta.get("out_sharding", meta.get("sharding", meta.get("sharding_names")))
  return None if names is None else _as_spec(names, "nnx metadata ")


def _is_var(x: Any) -> bool:
  nnx = sys.modules.get("flax.nnx")
  var = getattr(nnx, "Variable", None)
  return var is not None and isinstance(x, var)


def _axis_size(mesh: Mesh, entry: Any) -> int:
  names = entry if isinstance(entry, tuple) else (entry,)
  size = 1
  for n in names:
    size *= mesh.shape[n]
  return size


def check_specs(params: Any, specs: Any, mesh: Mesh, where: str = "check_specs: ") -> None:
  r"""Raise ``ValueError`` unless every spec fits its parameter on ``mesh``.

  For a leaf of shape :math:`(d_1, \dots, d_n)` and spec :math:`(s_1, \dots, s_k)`,
  :math:`k \le n`, every axis named in :math:`s_i` exists in the mesh, no axis is
  used twice, and :math:`\prod_{a \in s_i} |a|` divides :math:`d_i`.

  Args:
    params: the parameter tree (arrays, ``jax.ShapeDtypeStruct`` or NNX Variables).
    specs: a tree of ``PartitionSpec`` with the params' (unwrapped) structure.
    mesh: the ``jax.sharding.Mesh`` the specs refer to.
    where: prefix of the error message.

  Returns:
    None.

  Example:
    >>> P = jax.sharding.PartitionSpec
    >>> mesh = jopt.parallel.data_model_mesh(2, 4)
    >>> jopt.parallel.check_specs({"w": jnp.zeros((8, 4))}, {"w": P(None, "model")}, mesh)
    >>> jopt.parallel.check_specs({"w": jnp.zeros((6, 4))}, {"w": P("model")}, mesh)
    Traceback (most recent call last):
    ...
    ValueError: check_specs: w: dimension 0 of shape (6, 4) has size 6, not divisible by
    the mesh axis 'model' of size 4; pad the parameter or shard another dimension.

  Reference: the checks ``jax.device_put`` / ``NamedSharding`` make, done up front
  with the parameter's path in the message.
  """
  flat, _ = jax.tree_util.tree_flatten_with_path(unwrap_variables(params))
  spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
  if len(spec_leaves) != len(flat):
    raise ValueError(f"{where}{len(spec_leaves)} specs for {len(flat)} parameters; give one"
                     " PartitionSpec per parameter (match_specs builds such a tree).")
  axes = tuple(mesh.axis_names)
  for (kp, leaf), spec in zip(flat, spec_leaves):
    name, shape = path_of(kp), tuple(getattr(leaf, "shape", ()))
    if len(spec) > len(shape):
      raise ValueError(f"{where}{name}: the spec {spec} has {len(spec)} entries but the"
                       f" parameter has shape {shape}; give at most {len(shape)} entries.")
    seen = []
    for dim, entry in enumerate(spec):
      if entry is None:
        continue
      for axis in entry if isinstance(entry, tuple) else (entry,):
        if axis not in axes:
          raise ValueError(f"{where}{name}: the spec {spec} names the mesh axis {axis!r},"
                           f" but the mesh's axes are {axes}; rename the rule's axis or"
                           " build the mesh with that axis name.")
        if axis in seen:
          raise ValueError(f"{where}{name}: the spec {spec} uses the mesh axis {axis!r}"
                           " twice; an axis shards at most one dimension.")
        seen.append(axis)
      size = _axis_size(mesh, entry)
      if shape[dim] % size:
        raise ValueError(f"{where}{name}: dimension {dim} of shape {shape} has size"
                         f" {shape[dim]}, not divisible by the mesh axis {entry!r} of size"
                         f" {size}; pad the parameter or shard another dimension.")


def match_specs(params: Any, rules: Any, *, mesh: Mesh | None = None, strict: bool = False,
                default: PartitionSpec = P()) -> Any:
  r"""A PartitionSpec per parameter from regex rules on its path (first match wins).

  For a leaf at path :math:`q` (``a/b/kernel``) and rules
  :math:`(r_1, s_1), \dots, (r_n, s_n)`,

  .. math:: \mathrm{spec}(q) = s_{\min\{i\,:\, r_i \text{ found in } q\}}
     \quad (\texttt{default} \text{ if none})

  A Flax NNX Variable whose metadata names a sharding
  (``nnx.with_partitioning``) keeps that spec: the model's own annotation wins
  over the rules.

  Args:
    params: a parameter tree, or a Flax ``nnx.State`` (Variables are unwrapped).
    rules: a list of ``(regex, PartitionSpec)`` pairs, or a dict; a spec may
      also be a tuple of axis names / None.
    mesh: if given, every spec is checked against it (:func:`check_specs`):
      unknown axis names and non-divisible dimensions raise ``ValueError``.
    strict: if True, a rule that matches no parameter raises ``ValueError``
      naming it (a typo in a layer name would otherwise replicate that layer).
    default: the spec of a parameter no rule matches (replicated).

  Returns:
    A tree of ``PartitionSpec`` with the params' (unwrapped) structure.

  Example:
    >>> P = jax.sharding.PartitionSpec
    >>> params = {"up": {"kernel": jnp.zeros((16, 32))}, "down": {"kernel": jnp.zeros((32, 8))}}
    >>> rules = [(r"up/kernel", P(None, "model")), (r"down/kernel", P("model"))]
    >>> jopt.parallel.match_specs(params, rules)
    {'down': {'kernel': P('model',)}, 'up': {'kernel': P(None, 'model')}}

  Reference: the regex-to-PartitionSpec rule lists of t5x / MaxText
  (``logical_axis_rules``) and EasyDeL's ``partition_rules``; first match wins as there.
  """
  validate.check_flag("match_specs: ", strict=strict)
  rule_list = _rule_list(rules)
  default = _as_spec(default, "match_specs: default=")
  flat, treedef = jax.tree_util.tree_flatten_with_path(params, is_leaf=_is_var)
  used = [False] * len(rule_list)
  specs = []
  for kp, leaf in flat:
    name = path_of(k for k in kp if not (hasattr(k, "name") and k.name == "value"))
    spec = _nnx_spec(leaf)
    if spec is None:
      spec = default
      for i, (pattern, s) in enumerate(rule_list):
        if re.search(pattern, name):
          spec, used[i] = s, True
          break
    specs.append(spec)
  if strict:
    unused = [p for (p, _), u in zip(rule_list, used) if not u]
    if unused:
      names = [path_of(k for k in kp if not (hasattr(k, "name") and k.name == "value"))
               for kp, _ in flat]
      raise ValueError(f"match_specs: strict=True and the rule(s) {unused} match no"
                       f" parameter; the parameter paths are {names}. Fix the regex or"
                       " drop the rule.")
  out = jax.tree.unflatten(treedef, specs)
  if mesh is not None:
    check_specs(params, out, mesh, where="match_specs: ")
  return out


def specs_from_nnx(state: Any) -> Any:
  r"""The PartitionSpecs that ``nnx.with_partitioning`` wrote into a Flax NNX state.

  .. math:: \mathrm{spec}(v) = \texttt{PartitionSpec}(*v.\mathrm{out\_sharding})
     \ (\texttt{P()} \text{ when unannotated})

  Args:
    state: an ``nnx.State`` (e.g. ``nnx.state(model, nnx.Param)``).

  Returns:
    A tree of ``PartitionSpec`` with the state's unwrapped structure (the
    structure of the optimizer's params and gradients).

  Example:
    >>> from flax import nnx
    >>> init = nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, "model"))
    >>> with nnx.use_eager_sharding(False):     # annotate only; no mesh needed yet
    ...   layer = nnx.Linear(4, 8, kernel_init=init, rngs=nnx.Rngs(0))
    >>> specs = jopt.parallel.specs_from_nnx(nnx.state(layer, nnx.Param))
    >>> specs["kernel"], specs["bias"]
    (P(None, 'model'), P())

  Reference: ``flax.nnx.get_partition_spec``, unwrapped to plain specs.
  """
  return match_specs(state, [])


def shard_params(params: Any, mesh: Mesh, rules_or_specs: Any, *,
                 strict: bool = False) -> Any:
  r"""Place each parameter on ``mesh`` with the spec its rule (or the given spec tree) names.

  .. math:: \theta_q \mapsto \texttt{device\_put}(\theta_q,\
     \texttt{NamedSharding}(\text{mesh}, \mathrm{spec}(q)))

  Args:
    params: a parameter tree or an NNX state (Variables are unwrapped; NNX
      sharding metadata is honoured).
    mesh: the device mesh.
    rules_or_specs: a rule list / dict for :func:`match_specs`, or a tree of
      ``PartitionSpec`` with the params' structure.
    strict: passed to :func:`match_specs` for rules.

  Returns:
    The params as arrays sharded on ``mesh`` (plain arrays, unwrapped).

  Example:
    >>> P = jax.sharding.PartitionSpec
    >>> mesh = jopt.parallel.data_model_mesh(2, 4)
    >>> p = jopt.parallel.shard_params({"w": jnp.ones((8, 4))}, mesh, [(r"w", P("model"))])
    >>> p["w"].sharding.spec, p["w"].addressable_shards[0].data.shape   # 8 rows / 4
    (P('model',), (2, 4))

  Reference: ``jax.device_put`` with ``jax.sharding.NamedSharding``.
  """
  is_spec = lambda x: isinstance(x, PartitionSpec)
  plain = unwrap_variables(params)
  if isinstance(rules_or_specs, (list, dict)) and not (
      jax.tree.structure(rules_or_specs, is_leaf=is_spec) == jax.tree.structure(plain)
      and all(is_spec(s) for s in jax.tree.leaves(rules_or_specs, is_leaf=is_spec))):
    specs = match_specs(params, rules_or_specs, strict=strict)
  else:
    specs = rules_or_specs
  check_specs(plain, specs, mesh, where="shard_params: ")
  return jax.tree.map(lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), plain, specs,
                      is_leaf=lambda x: False)


def column_parallel(layer: str, axis: str = "model") -> list[tuple[str, PartitionSpec]]:
  r"""Rules splitting a dense layer's output columns over ``axis`` (Megatron's column split).

  .. math:: W \in \mathbb{R}^{d_{in}\times d_{out}} = [W_1, \dots, W_n],\quad
     y_j = x W_j + b_j \text{ on device } j

  Args:
    layer: a regex for the layer's path (``"mlp/up"``); its ``kernel`` [in, out]
      gets ``P(None, axis)``, its ``bias`` [out] ``P(axis)``.
    axis: the model-parallel mesh axis.

  Returns:
    A list of two ``(regex, PartitionSpec)`` rules.

  Example:
    >>> jopt.parallel.column_parallel("up")
    [('up/kernel$', P(None, 'model')), ('up/bias$', P('model',))]

  Reference: Shoeybi et al., *Megatron-LM*, 2019, section 3 (column-parallel GEMM).
  """
  return [(rf"{layer}/kernel$", P(None, axis)), (rf"{layer}/bias$", P(axis))]


def row_parallel(layer: str, axis: str = "model") -> list[tuple[str, PartitionSpec]]:
  r"""Rules splitting a dense layer's input rows over ``axis`` (Megatron's row split).

  .. math:: W = \begin{bmatrix} W_1 \\ \vdots \\ W_n \end{bmatrix},\quad
     y = \textstyle\sum_j x_j W_j + b \ \text{(an all-reduce over } j)

  Args:
    layer: a regex for the layer's path; its ``kernel`` gets ``P(axis, None)``,
      its ``bias`` stays replicated (it is added once, after the sum).
    axis: the model-parallel mesh axis.

  Returns:
    A list of two ``(regex, PartitionSpec)`` rules.

  Example:
    >>> jopt.parallel.row_parallel("down")
    [('down/kernel$', P('model', None)), ('down/bias$', P())]

  Reference: Shoeybi et al., *Megatron-LM*, 2019, section 3 (row-parallel GEMM).
  """
  return [(rf"{layer}/kernel$", P(axis, None)), (rf"{layer}/bias$", P())]


def megatron_mlp(up: str, down: str, axis: str = "model") -> list[tuple[str, PartitionSpec]]:
  r"""Rules for a Megatron-style MLP: ``up`` column-split, ``down`` row-split.

  .. math:: y = \textstyle\sum_j \sigma(x W^{up}_j + b^{up}_j)\, W^{down}_j + b^{down}

  The hidden activation stays split over ``axis``; one all-reduce per MLP (in the
  forward pass) joins the partial products.

  Args:
    up: regex for the first (expanding) layer's path.
    down: regex for the second (projecting) layer's path.
    axis: the model-parallel mesh axis.

  Returns:
    The four rules of :func:`column_parallel` ``(up)`` and :func:`row_parallel` ``(down)``.

  Example:
    >>> for rule in jopt.parallel.megatron_mlp("mlp/up", "mlp/down"):
    ...   print(rule)
    ('mlp/up/kernel$', P(None, 'model'))
    ('mlp/up/bias$', P('model',))
    ('mlp/down/kernel$', P('model', None))
    ('mlp/down/bias$', P())

  Reference: Shoeybi et al., *Megatron-LM*, 2019, figure 3a.
  """
  return column_parallel(up, axis) + row_parallel(down, axis)


def data_model_mesh(data: int, model: int, *, axis_names: Sequence[str] = ("data", "model"),
                    axis_types: Any = AxisType.Auto, devices: Any = None) -> Mesh:
  r"""A 2-D ``data x model`` device mesh (``data * model`` devices), auto-sharded by default.

  .. math:: \text{devices} \to \{0..D-1\} \times \{0..M-1\}

  Args:
    data: size of the data-parallel axis (batch split).
    model: size of the model-parallel axis (tensor split).
    axis_names: the two axis names.
    axis_types: ``jax.sharding.AxisType`` for both axes (``Auto``: XLA inserts the
      collectives, which the rule-based layouts here rely on).
    devices: the devices to use (default: the first ``data * model``).

  Returns:
    A ``jax.sharding.Mesh``.

  Example:
    >>> dict(jopt.parallel.data_model_mesh(2, 4).shape)
    {'data': 2, 'model': 4}

  Reference: ``jax.make_mesh``; the ``data x model`` layout of Megatron-LM / MaxText.
  """
  for name, n in (("data", data), ("model", model)):
    if not isinstance(n, int) or isinstance(n, bool):
      raise TypeError(f"data_model_mesh: {name}={n!r} must be a positive int.")
    if n < 1:
      raise ValueError(f"data_model_mesh: {name}={n!r} must be a positive int.")
  if devices is None:
    if data * model > jax.device_count():
      raise ValueError(f"data_model_mesh: data * model = {data * model} devices, but only"
                       f" {jax.device_count()} exist; choose smaller axis sizes.")
    devices = jax.devices()[:data * model]
  types = (axis_types,) * 2 if isinstance(axis_types, AxisType) else tuple(axis_types)
  return jax.make_mesh((data, model), tuple(axis_names), axis_types=types, devices=devices)
