"""Sharded optimizer state (ZeRO-1 / ZeRO-2) and the FSDP step (ZeRO-3), for any optax state.

Specs are derived from the state's own tree: a subtree with the params'
structure (Adam's ``mu``, a prune mask tree, early stopping's ``best_params``)
gives each slot shaped like its parameter that parameter's FSDP spec; every
other leaf gets the FSDP rule of its own shape (so 0-d counts, scales and
hyperparameters are replicated). Nothing depends on the device count but the
specs: the state's tree is the same on 1 and on N devices.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jopt._core.tree import unwrap_variables
from jopt.parallel.fsdp import DEFAULT_MIN_SIZE, axis_size, fsdp_spec, fsdp_specs

__all__ = ["zero_state_specs", "zero_step", "ZeroStep", "STAGES"]

P = PartitionSpec
STAGES = (1, 2, 3)


def _is_spec(x: Any) -> bool:
  return isinstance(x, PartitionSpec)


def zero_state_specs(state: Any, params: Any, mesh: Mesh, axis: str | Sequence[str] = "data",
                     *, min_size: int = DEFAULT_MIN_SIZE, param_specs: Any = None) -> Any:
  r"""Per-leaf PartitionSpecs that shard an optimizer state over ``axis`` (ZeRO).

  For a slot :math:`s` inside a subtree with the params' structure, at the
  position of parameter :math:`\theta` with the same shape,

  .. math:: \mathrm{spec}(s) = \mathrm{spec}_{\text{param}}(\theta)
     \quad(\text{default } \texttt{fsdp\_spec}(\mathrm{shape}(\theta), N))

  and for every other leaf :math:`\mathrm{spec}(s) = \texttt{fsdp\_spec}(\mathrm{shape}(s), N)`:
  0-d leaves (counts, loss scales, learning rates in state) and leaves under
  ``min_size`` elements are replicated. Each device then stores :math:`1/N` of
  every sharded slot.

  Args:
    state: an optimizer state, or its abstract shape (``jax.eval_shape(tx.init, params)``).
    params: the parameters (arrays, ``ShapeDtypeStruct`` or NNX Variables).
    mesh: the device mesh.
    axis: the mesh axis (or tuple of axes) the state is sharded over.
    min_size: leaves with fewer elements stay replicated.
    param_specs: optional tree of specs for the params-shaped slots (default
      :func:`jopt.parallel.fsdp.fsdp_specs` of the params).

  Returns:
    A tree of ``PartitionSpec`` with the state's structure.

  Example:
    >>> mesh = jopt.parallel.data_mesh(4)
    >>> params = {"w": jnp.zeros((16, 32))}
    >>> state = jopt.adam(1e-3).init(params)
    >>> specs = jopt.parallel.zero_state_specs(state, params, mesh, min_size=64)
    >>> specs.mu["w"], specs.nu["w"], specs.count
    (P(None, 'data'), P(None, 'data'), P())

  Reference: Rajbhandari et al., *ZeRO: Memory Optimizations Toward Training
  Trillion Parameter Models*, 2020, section 5.1 (:math:`P_{os}`: optimizer states
  partitioned over the data-parallel ranks).
  """
  n = axis_size(mesh, axis, where="zero_state_specs: ")
  plain = unwrap_variables(params)
  if param_specs is None:
    param_specs = fsdp_specs(plain, mesh, axis, min_size=min_size)
  treedef = jax.tree.structure(plain)
  p_leaves = jax.tree.leaves(plain)
  s_leaves = jax.tree.leaves(param_specs, is_leaf=_is_spec)
  if len(s_leaves) != len(p_leaves):
    raise ValueError(f"zero_state_specs: param_specs has {len(s_leaves)} specs for"
                     f" {len(p_leaves)} parameters; give one PartitionSpec per parameter.")

  def own(x):
    return fsdp_spec(getattr(x, "shape", ()), n, axis, min_size=min_size)

  def params_like(x):
    if treedef.num_leaves == 1 and treedef.num_nodes == 1:
      return False  # a single-array params tree: every leaf is "params-like"; use shapes
    try:
      return jax.tree.structure(x) == treedef
    except Exception:  # pylint: disable=broad-except
      return False

  def visit(x):
    if params_like(x):
      out = [s if tuple(getattr(leaf, "shape", ())) == tuple(p.shape) else own(leaf)
             for leaf, p, s in zip(treedef.flatten_up_to(x), p_leaves, s_leaves)]
      return treedef.unflatten(out)
    if treedef.num_nodes == 1 and tuple(getattr(x, "shape", ())) == tuple(p_leaves[0].shape):
      return s_leaves[0]
    return own(x)

  return jax.tree.map(visit, state, is_leaf=params_like)


def _check_auto(mesh: Mesh, where: str) -> None:
  explicit = [n for n, t in zip(mesh.axis_names, mesh.axis_types) if t == AxisType.Explicit]
  if explicit:
    raise ValueError(f"{where}the mesh axes {tuple(explicit)} are AxisType.Explicit; this step"
                     " lets XLA place the collectives, so build the mesh with"
                     " axis_types=(AxisType.Auto, ...) (jopt.parallel.rules.data_model_mesh"
                     " does by default).")


class ZeroStep:
  """A jitted train step with ZeRO-sharded optimizer state; built by :func:`zero_step`.

  ``init(params)`` returns the sharded state, ``place(params)`` the params in
  their layout (replicated for stages 1 and 2, FSDP-sharded for 3),
  ``__call__(params, state, batch, **extra)`` returns ``(params, state, loss)``,
  ``lower(...)`` the ``jax.stages.Lowered`` step (for HLO), and
  ``specs(params)`` the ``(param_specs, state_specs)`` pair.
  """

  def __init__(self, loss_fn: Callable[..., Any], tx: optax.GradientTransformation,
               mesh: Mesh, stage: int, axis: str | Sequence[str], min_size: int,
               batch_spec: PartitionSpec | None):
    self.loss_fn, self.tx, self.mesh, self.stage = loss_fn, tx, mesh, stage
    self.axis, self.min_size = axis, min_size
    self.n = axis_size(mesh, axis, where="zero_step: ")
    self.batch_spec = P(axis) if batch_spec is None else batch_spec
    self._jitted = {}

  def _named(self, specs: Any) -> Any:
    return jax.tree.map(lambda s: NamedSharding(self.mesh, s), specs, is_leaf=_is_spec)

  def specs(self, params: Any) -> tuple[Any, Any]:
    """``(param_specs, state_specs)`` of this step's layout for ``params``."""
    plain = unwrap_variables(params)
    shard = fsdp_specs(plain, self.mesh, self.axis, min_size=self.min_size)
    abstract = jax.eval_shape(self.tx.init, plain)
    state_specs = zero_state_specs(abstract, plain, self.mesh, self.axis,
                                   min_size=self.min_size, param_specs=shard)
    param_specs = shard if self.stage == 3 else jax.tree.map(lambda _: P(), plain)
    return param_specs, state_specs

  def place(self, params: Any) -> Any:
    """The params put in this step's layout (a ``device_put``)."""
    plain = unwrap_variables(params)
    return jax.device_put(plain, self._named(self.specs(plain)[0]))

  def init(self, params: Any) -> Any:
    """``tx.init`` under ``jit`` with the ZeRO state shardings as ``out_shardings``."""
    plain = unwrap_variables(params)
    _, state_specs = self.specs(plain)
    return jax.jit(self.tx.init, out_shardings=self._named(state_specs))(plain)

  def _check_batch(self, batch: Any) -> None:
    for x in jax.tree.leaves(batch):
      if getattr(x, "ndim", 0) == 0 or x.shape[0] % self.n:
        raise ValueError(f"zero_step: a batch leaf of shape {tuple(getattr(x, 'shape', ()))}"
                         f" has a leading (batch) dimension not divisible by the {self.n}"
                         f" devices of axis {self.axis!r}; use a batch size that is a"
                         f" multiple of {self.n}.")

  def _build(self, params: Any, extra_keys: tuple[str, ...]):
    param_specs, state_specs = self.specs(params)
    grad_specs = fsdp_specs(params, self.mesh, self.axis, min_size=self.min_size)
    p_sh, s_sh = self._named(param_specs), self._named(state_specs)
    g_sh = self._named(grad_specs)
    rep = NamedSharding(self.mesh, P())
    batch_sh = NamedSharding(self.mesh, self.batch_spec)
    stage, tx, loss_fn = self.stage, self.tx, self.loss_fn

    def step(p, s, batch, extra):
      loss, g = jax.value_and_grad(loss_fn)(p, batch)
      if stage >= 2:  # gradients reduce-scattered onto the state's shards
        g = jax.lax.with_sharding_constraint(g, g_sh)
      u, s = tx.update(g, s, p, **extra)
      return optax.apply_updates(p, u), s, loss

    return jax.jit(step, in_shardings=(p_sh, s_sh, batch_sh, rep),
                   out_shardings=(p_sh, s_sh, rep), donate_argnums=())

  def _get(self, params: Any, extra: dict[str, Any]):
    plain = unwrap_variables(params)
    key = (jax.tree.structure(plain),
           tuple((x.shape, str(x.dtype)) for x in jax.tree.leaves(plain)), tuple(sorted(extra)))
    if key not in self._jitted:
      self._jitted[key] = self._build(plain, tuple(sorted(extra)))
    return plain, self._jitted[key]

  def __call__(self, params: Any, state: Any, batch: Any, **extra: Any) -> tuple[Any, Any, Any]:
    self._check_batch(batch)
    plain, fn = self._get(params, extra)
    return fn(plain, state, batch, extra)

  def lower(self, params: Any, state: Any, batch: Any, **extra: Any) -> Any:
    """The lowered step (``.compile().as_text()`` gives the HLO with its collectives)."""
    self._check_batch(batch)
    plain, fn = self._get(params, extra)
    return fn.lower(plain, state, batch, extra)


def zero_step(loss_fn: Callable[..., Any], tx: optax.GradientTransformation, mesh: Mesh, *,
              stage: int = 1, axis: str | Sequence[str] = "data",
              min_size: int = DEFAULT_MIN_SIZE, batch_spec: PartitionSpec | None = None
              ) -> ZeroStep:
  r"""A data-parallel train step whose optimizer state is sharded over ``axis`` (ZeRO 1/2/3).

  With the batch split over the :math:`N` devices of ``axis``,

  .. math:: g = \nabla_\theta \tfrac{1}{B}\textstyle\sum_b \ell(\theta, x_b), \quad
     (u, S) = \mathrm{tx.update}(g, S, \theta), \quad \theta \leftarrow \theta + u

  is the one-device step; only the layout differs. Stage 1: :math:`\theta`
  replicated, :math:`S` sharded (:func:`zero_state_specs`), the gradient
  all-reduced and each device updating its shard. Stage 2: the gradient is
  constrained to the shards (``with_sharding_constraint``) so XLA can
  reduce-scatter it instead of all-reducing. Stage 3 (FSDP): :math:`\theta`
  sharded too (:func:`jopt.parallel.fsdp.fsdp_specs`), all-gathered where used.

  Args:
    loss_fn: ``loss_fn(params, batch) -> scalar``, the mean loss of the batch.
    tx: any optax / jopt gradient transformation.
    mesh: a mesh with ``AxisType.Auto`` axes containing ``axis``.
    stage: 1, 2 or 3.
    axis: the data-parallel mesh axis (or tuple of axes).
    min_size: leaves with fewer elements stay replicated.
    batch_spec: the batch's spec (default ``P(axis)``: leading dimension split).

  Returns:
    A :class:`ZeroStep`: ``state = step.init(params)``,
    ``params, state, loss = step(params, state, batch, **extra)`` (``extra`` goes
    to ``tx.update``, e.g. ``value=`` for early stopping).

  Example:
    >>> def loss_fn(params, batch):
    ...   x, y = batch
    ...   return jnp.mean((x @ params["w"] - y) ** 2)
    >>> mesh = jopt.parallel.data_mesh(4)            # AxisType.Auto by default
    >>> step = jopt.parallel.zero_step(loss_fn, jopt.adam(0.1), mesh, stage=2, min_size=16)
    >>> params = {"w": jnp.zeros((8, 4))}
    >>> state = step.init(params)
    >>> state.mu["w"].sharding.spec, state.mu["w"].addressable_shards[0].data.shape
    (P('data',), (2, 4))
    >>> batch = (np.ones((8, 8), np.float32), np.ones((8, 4), np.float32))
    >>> params, state, loss = step(params, state, batch)
    >>> params["w"].sharding.spec       # stage 2: the params stay replicated
    P()
    >>> print(float(loss), np.asarray(params["w"][0]).round(4))   # Adam's first step: lr
    1.0 [0.1 0.1 0.1 0.1]

  Reference: Rajbhandari et al., *ZeRO*, 2020 (stages :math:`P_{os}`,
  :math:`P_{os+g}`, :math:`P_{os+g+p}`); Xu et al., *Automatic Cross-Replica
  Sharding of Weight Update in Data-Parallel Training*, 2020 (the XLA/SPMD form).
  """
  if isinstance(stage, bool) or not isinstance(stage, int):
    raise TypeError(f"zero_step: stage={stage!r} must be an int, one of {STAGES}.")
  if stage not in STAGES:
    raise ValueError(f"zero_step: stage={stage!r} must be one of {STAGES} (1: state sharded,"
                     " 2: and gradients, 3: and parameters (FSDP)).")
  if not callable(loss_fn):
    raise TypeError(f"zero_step: loss_fn={loss_fn!r} must be a function (params, batch) -> loss.")
  if not isinstance(mesh, Mesh):
    raise TypeError(f"zero_step: mesh={mesh!r} must be a jax.sharding.Mesh (jax.make_mesh).")
  _check_auto(mesh, "zero_step: ")
  return ZeroStep(loss_fn, tx, mesh, stage, axis, min_size, batch_spec)
