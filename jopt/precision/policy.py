"""Dtype policies: which dtype parameters are stored, computed and returned in.

A :class:`Policy` names three dtypes, as in jmp and Keras' mixed precision:

* ``param_dtype``: the dtype the optimizer keeps the (master) weights in;
* ``compute_dtype``: the dtype the forward and backward passes run in;
* ``output_dtype``: the dtype the model hands to the loss.

:func:`get_policy` parses ``"params=float32,compute=bfloat16,output=float32"``,
dtype aliases (``bf16``, ``fp16``, ``half``, ...) and presets
(``"mixed_bfloat16"``, ``"mixed_float16"``, ...). The casts touch floating
leaves only (integer labels, boolean masks and Python scalars pass unchanged),
and :meth:`Policy.cast_to_compute` keeps normalisation parameters in float32
by a path rule (:data:`KEEP_FLOAT32`). :func:`in_float32` runs an op such as a
softmax or a norm in float32 inside a half-precision model.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Callable, Union

import jax
import jax.numpy as jnp
import numpy as np

from jopt._core.tree import astype, path_string

__all__ = ["Policy", "get_policy", "in_float32", "KEEP_FLOAT32", "DTYPE_ALIASES",
           "PRESETS"]

KEEP_FLOAT32 = r"(?i)norm|scale|(?<![a-z])(?:bn|ln|gn)(?![a-z])"
"""The default ``keep_float32`` rule of :meth:`Policy.cast_to_compute`.

A case-insensitive regular expression searched in each leaf's ``a/b/c`` path:
a path with ``norm`` or ``scale`` in it (``LayerNorm_0/scale``, ``rms_norm``,
``batch_norm/bias``) or with ``bn``, ``ln`` or ``gn`` not inside a longer word
(``bn1/bias``, ``ln_f/scale``, ``block/0/gn``; not ``kiln``) stays in float32.
"""

DTYPE_ALIASES: dict[str, Any] = {
    "float16": jnp.float16, "f16": jnp.float16, "fp16": jnp.float16, "half": jnp.float16,
    "bfloat16": jnp.bfloat16, "bf16": jnp.bfloat16,
    "float32": jnp.float32, "f32": jnp.float32, "fp32": jnp.float32, "single": jnp.float32,
    "full": jnp.float32, "float": jnp.float32,
    "float64": jnp.float64, "f64": jnp.float64, "fp64": jnp.float64, "double": jnp.float64,
}
"""Dtype names :func:`get_policy` accepts (case-insensitive), and their dtypes.

``half`` is always float16 here (jmp maps it to bfloat16 on TPU): a policy
string means the same thing on every machine.
"""

_F32, _BF16, _F16, _F64 = jnp.float32, jnp.bfloat16, jnp.float16, jnp.float64

PRESETS: dict[str, tuple[Any, Any, Any]] = {
    "float32": (_F32, _F32, _F32),
    "float64": (_F64, _F64, _F64),
    "mixed_bfloat16": (_F32, _BF16, _F32),
    "mixed_float16": (_F32, _F16, _F32),
    "pure_bfloat16": (_BF16, _BF16, _BF16),
    "pure_float16": (_F16, _F16, _F16),
}
"""Named policies as ``(param, compute, output)`` dtypes.

A bare dtype name (or alias) is the preset of that dtype: ``"float32"`` (and
``f32``, ``fp32``, ...) is all float32, while ``"bfloat16"`` / ``"bf16"`` means
``"mixed_bfloat16"`` and ``"float16"`` / ``"fp16"`` / ``"half"`` means
``"mixed_float16"``: float32 master weights and outputs, half-precision
compute. (jmp reads a bare half dtype as all three in half precision; here
that is ``"pure_bfloat16"`` / ``"pure_float16"``.)
"""

_KEYS = {"params": "param_dtype", "param": "param_dtype", "p": "param_dtype",
         "compute": "compute_dtype", "c": "compute_dtype",
         "output": "output_dtype", "out": "output_dtype", "o": "output_dtype"}

KeepRule = Union[str, "re.Pattern[str]", Callable[[str], bool], None, bool]


def _floating(name: str, value: Any, where: str) -> Any:
  if isinstance(value, str):
    key = value.strip().lower()
    if key not in DTYPE_ALIASES:
      raise ValueError(f"{where}{name}={value!r} is not a dtype name; accepted:"
                       f" {', '.join(sorted(DTYPE_ALIASES))}.")
    return jnp.dtype(DTYPE_ALIASES[key])
  try:
    dtype = jnp.dtype(value)
  except TypeError as err:
    raise TypeError(f"{where}{name}={value!r} is not a dtype; pass e.g. jnp.bfloat16"
                    " or 'bfloat16'.") from err
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"{where}{name}={dtype} is not a real floating dtype; a policy"
                    " casts floating leaves, so pass float16, bfloat16, float32 or"
                    " float64.")
  return dtype


def _keep_predicate(keep: KeepRule, where: str) -> Callable[[str], bool] | None:
  if keep is None or keep is False:
    return None
  if keep is True:
    keep = KEEP_FLOAT32
  if isinstance(keep, str):
    try:
      keep = re.compile(keep)
    except re.error as err:
      raise ValueError(f"{where}keep_float32={keep!r} is not a valid regular"
                       f" expression: {err}.") from err
  if isinstance(keep, re.Pattern):
    return lambda path: keep.search(path) is not None
  if callable(keep):
    return keep
  raise TypeError(f"{where}keep_float32 must be a regex string, a compiled pattern,"
                  f" a function path -> bool, True (the default rule) or None;"
                  f" got {keep!r}.")


def _is_float_array(x: Any) -> bool:
  return (isinstance(x, (jax.Array, np.ndarray, np.generic))
          and jnp.issubdtype(x.dtype, jnp.floating))


def _cast(tree: Any, dtype: Any, keep: Callable[[str], bool] | None = None) -> Any:
  keep_dtype = dtype if dtype.itemsize >= 4 else jnp.dtype(jnp.float32)

  def cast(path, x):
    if not _is_float_array(x):
      return x
    target = keep_dtype if keep is not None and keep(path_string(path)) else dtype
    return astype(jnp.asarray(x), target)

  return jax.tree_util.tree_map_with_path(cast, tree)


@dataclasses.dataclass(frozen=True)
class Policy:
  """Param, compute and output dtypes, and the casts between them (hashable, static).

  Build one with :func:`get_policy` or directly, e.g.
  ``Policy(jnp.float32, jnp.bfloat16, jnp.float32)``; dtype names are accepted
  too. Each dtype must be a real floating dtype (``TypeError`` otherwise).

  Attributes:
    param_dtype: dtype of the stored (master) parameters and the optimizer.
    compute_dtype: dtype of the forward and backward passes.
    output_dtype: dtype of the model's outputs as the loss sees them.
  """

  param_dtype: Any = jnp.float32
  compute_dtype: Any = jnp.float32
  output_dtype: Any = jnp.float32

  def __post_init__(self):
    for field in ("param_dtype", "compute_dtype", "output_dtype"):
      object.__setattr__(self, field, _floating(field, getattr(self, field), "Policy: "))

  def cast_to_param(self, tree: Any) -> Any:
    r"""Cast every floating leaf of ``tree`` to :attr:`param_dtype`.

    .. math:: x \mapsto \operatorname{cast}_{\text{param}}(x)\ \text{for floating } x

    Args:
      tree: any pytree; integer, boolean and non-array leaves are returned as they are.

    Returns:
      The tree with floating arrays in the parameter dtype.

    Example:
      >>> params = {"w": jnp.ones(2, jnp.bfloat16), "step": jnp.array(3)}
      >>> params = jopt.precision.get_policy("mixed_bfloat16").cast_to_param(params)
      >>> params["w"].dtype, params["step"].dtype   # float32 masters; ints untouched
      (dtype('float32'), dtype('int32'))

    Reference: ``jmp.Policy.cast_to_param``.
    """
    return _cast(tree, self.param_dtype)

  def cast_to_compute(self, tree: Any, keep_float32: KeepRule = True) -> Any:
    r"""Cast floating leaves to :attr:`compute_dtype`, keeping norm parameters in float32.

    .. math::
      x_p \mapsto \begin{cases}
        \operatorname{cast}(x_p, \max(c, \text{float32})) & \text{rule}(p) \\
        \operatorname{cast}(x_p, c) & \text{otherwise}
      \end{cases}

    where :math:`p` is the leaf's ``a/b/c`` path (dict keys, attribute names and
    indices joined by ``/``) and :math:`c` the compute dtype. A leaf the rule
    selects is computed in float32 when :math:`c` is a 16-bit dtype, and in
    :math:`c` otherwise (a float64 policy never demotes it).

    Args:
      tree: parameters or model inputs; integer, boolean and non-array leaves
        pass unchanged (so a batch ``(x, labels)`` can be cast whole).
      keep_float32: which floating leaves stay in (at least) float32: ``True``
        for :data:`KEEP_FLOAT32` (norm / scale / bn / ln / gn in the path), a
        regex string or compiled pattern searched in the path, a function
        ``path -> bool``, or ``None`` / ``False`` to cast every floating leaf.

    Returns:
      The tree in the compute dtype, selected leaves in float32.

    Example:
      >>> policy = jopt.precision.get_policy("mixed_bfloat16")
      >>> p16 = policy.cast_to_compute({"dense": {"w": jnp.ones((2, 2))},
      ...                               "ln": {"scale": jnp.ones(2)}})
      >>> p16["dense"]["w"].dtype, p16["ln"]["scale"].dtype   # "ln" matches KEEP_FLOAT32
      (dtype(bfloat16), dtype('float32'))

    Reference: Micikevicius et al., *Mixed Precision Training*, ICLR 2018
    (batch-norm statistics and reductions in float32); Keras'
    ``mixed_bfloat16`` policy, whose normalisation layers run in float32.
    """
    return _cast(tree, self.compute_dtype, _keep_predicate(keep_float32, "cast_to_compute: "))

  def cast_to_output(self, tree: Any) -> Any:
    r"""Cast every floating leaf of ``tree`` (the model's outputs) to :attr:`output_dtype`.

    .. math:: y \mapsto \operatorname{cast}_{\text{output}}(y)\ \text{for floating } y

    Args:
      tree: the model's outputs; non-floating leaves pass unchanged.

    Returns:
      The tree with floating arrays in the output dtype.

    Example:
      >>> policy = jopt.precision.get_policy("mixed_bfloat16")
      >>> logits = policy.cast_to_output(jnp.ones((2, 3), jnp.bfloat16))
      >>> logits.dtype                                    # float32 logits for the loss
      dtype('float32')

    Reference: ``jmp.Policy.cast_to_output``.
    """
    return _cast(tree, self.output_dtype)

  def __str__(self) -> str:
    return (f"params={self.param_dtype.name},compute={self.compute_dtype.name},"
            f"output={self.output_dtype.name}")


def get_policy(spec: str | Policy) -> Policy:
  r"""Parse a policy string such as ``"params=float32,compute=bfloat16,output=float32"``.

  .. math:: \text{spec} \mapsto (d_{\text{param}},\, d_{\text{compute}},\, d_{\text{output}})

  Accepted forms (case-insensitive, spaces ignored):

  * a preset from :data:`PRESETS` (``"float32"``, ``"mixed_bfloat16"``,
    ``"mixed_float16"``, ``"pure_bfloat16"``, ...);
  * a bare dtype name or alias from :data:`DTYPE_ALIASES`: ``"f32"`` is
    all-float32, ``"bf16"`` and ``"bfloat16"`` are ``mixed_bfloat16``,
    ``"fp16"``, ``"half"`` and ``"float16"`` are ``mixed_float16``, ``"f64"`` is
    all-float64;
  * comma-separated ``key=dtype`` pairs with keys ``params`` (``param``, ``p``),
    ``compute`` (``c``) and ``output`` (``out``, ``o``). As in jmp, an omitted
    ``params`` is float32, an omitted ``compute`` follows ``params`` and an
    omitted ``output`` follows ``compute``: ``"c=bf16"`` is
    ``params=float32,compute=bfloat16,output=bfloat16``.

  Args:
    spec: the string, or a :class:`Policy` (returned unchanged).

  Returns:
    A :class:`Policy`.

  Raises:
    ValueError: naming the token that does not parse (unknown key, unknown
      dtype, a key given twice, a pair without ``=``) and the accepted ones.

  Example:
    >>> print(jopt.precision.get_policy("p=f32,c=bf16,o=f32"))
    params=float32,compute=bfloat16,output=float32
    >>> print(jopt.precision.get_policy("c=bf16"))   # output follows compute
    params=float32,compute=bfloat16,output=bfloat16
    >>> jopt.precision.get_policy("mixed_float16").compute_dtype
    dtype('float16')

  Reference: ``jmp.get_policy`` (the grammar) and Keras' ``mixed_float16`` /
  ``mixed_bfloat16`` policy names.
  """
  if isinstance(spec, Policy):
    return spec
  if not isinstance(spec, str):
    raise TypeError(f"get_policy: spec must be a string or a Policy, got {spec!r}"
                    f" of type {type(spec).__name__}.")
  text = "".join(spec.split()).lower()
  if "=" not in text:
    return _preset(spec, text)
  found: dict[str, Any] = {}
  for token in text.split(","):
    if token.count("=") != 1:
      raise ValueError(f"get_policy: cannot parse {token!r} in {spec!r}; write"
                       " comma-separated key=dtype pairs such as"
                       " 'params=float32,compute=bfloat16,output=float32'.")
    key, value = token.split("=")
    if key not in _KEYS:
      raise ValueError(f"get_policy: unknown key {key!r} in {spec!r}; accepted keys:"
                       f" {', '.join(_KEYS)}.")
    field = _KEYS[key]
    if field in found:
      raise ValueError(f"get_policy: {field.split('_')[0]} is given twice in {spec!r}.")
    if value not in DTYPE_ALIASES:
      raise ValueError(f"get_policy: unknown dtype {value!r} for {key!r} in {spec!r};"
                       f" accepted dtypes: {', '.join(sorted(DTYPE_ALIASES))}.")
    found[field] = DTYPE_ALIASES[value]
  param = found.get("param_dtype", jnp.float32)
  compute = found.get("compute_dtype", param)
  output = found.get("output_dtype", compute)
  return Policy(param, compute, output)


def _preset(spec: str, text: str) -> Policy:
  if text in PRESETS:
    return Policy(*PRESETS[text])
  if text in DTYPE_ALIASES:
    name = jnp.dtype(DTYPE_ALIASES[text]).name
    return Policy(*PRESETS.get(name, PRESETS.get(f"mixed_{name}")))
  raise ValueError(f"get_policy: {spec!r} is neither a preset nor key=dtype pairs;"
                   f" presets: {', '.join(PRESETS)}; dtype names:"
                   f" {', '.join(sorted(DTYPE_ALIASES))}; or write e.g."
                   " 'params=float32,compute=bfloat16,output=float32'.")


def in_float32(fn: Callable[..., Any]) -> Callable[..., Any]:
  r"""Wrap ``fn`` to run in float32 on half-precision inputs and return their dtype.

  .. math:: y = \operatorname{cast}_{d}\big(f(\operatorname{cast}_{\text{float32}}(x))\big)

  Floating array arguments narrower than 32 bits (in ``args`` and ``kwargs``,
  at any depth) are cast to float32; wider ones and non-floating leaves pass
  unchanged. The floating outputs are cast back to :math:`d`, the narrowest
  floating dtype among the inputs (so a bfloat16 model stays bfloat16 around
  the op); with no half-precision input the outputs are returned as ``fn``
  gives them.

  Args:
    fn: the op to protect, e.g. ``jax.nn.softmax``, a norm, a log-sum-exp.

  Returns:
    The wrapped function, with the same signature.

  Example:
    >>> softmax = jopt.precision.in_float32(jax.nn.softmax)
    >>> p = softmax(jnp.ones((2, 3), jnp.bfloat16))   # computed in float32
    >>> p.dtype, round(float(p[0, 0]), 3)             # 1/3, rounded to bfloat16
    (dtype(bfloat16), 0.334)

  Reference: Micikevicius et al., *Mixed Precision Training*, ICLR 2018
  (reductions such as softmax and norms accumulate in float32); the float32
  softmax of Keras' mixed-precision policy.
  """
  if not callable(fn):
    raise TypeError(f"in_float32: fn must be callable, got {fn!r}.")

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    leaves = [x for x in jax.tree.leaves((args, kwargs)) if _is_float_array(x)]
    narrow = [jnp.dtype(x.dtype) for x in leaves if jnp.dtype(x.dtype).itemsize < 4]
    if not narrow:
      return fn(*args, **kwargs)
    back = min(narrow, key=lambda d: d.itemsize)
    up = lambda x: (astype(jnp.asarray(x), jnp.float32)
                    if _is_float_array(x) and jnp.dtype(x.dtype).itemsize < 4 else x)
    out = fn(*jax.tree.map(up, args), **jax.tree.map(up, kwargs))
    return _cast(out, back)

  return wrapped
