r"""Data-parallel train steps: ``jit`` with a sharded batch, ``shard_map``, and ``pmap``.

All three compute the same update as one device on the whole batch. With :math:`N`
devices each holding :math:`B/N` examples and a loss that is a mean over examples,

.. math::
  \mathcal L(\theta) = \frac1B \sum_{j=1}^{B} \ell_j(\theta)
                     = \frac1N \sum_{i=1}^{N} \mathcal L_i(\theta),\qquad
  \nabla\mathcal L = \frac1N \sum_{i=1}^{N} \nabla\mathcal L_i,

where :math:`\mathcal L_i` is device :math:`i`'s mean over its own examples. The
three paths differ only in who writes the :math:`\frac1N\sum_i`:

* :func:`data_parallel_step` (recommended): ``jax.jit`` with the batch sharded over
  the mesh axis; XLA inserts the all-reduce, nobody writes it.
* :func:`shard_map_step`: per-device code; the helper differentiates
  :math:`\operatorname{pmean}_i \mathcal L_i`, which under JAX's varying-axes types
  already *is* the global-mean gradient (see its docstring for the pitfall).
* :func:`pmap_step`: the ``pmap`` idiom, ``lax.pmean`` of the local gradients, for
  code migrating from ``pmap``; with :func:`pmap_replicate`,
  :func:`pmap_unreplicate` and :func:`pmap_shard_batch`.

Each step is ``step(params, opt_state, batch) -> (params, opt_state, loss)`` (plus
``aux`` with ``has_aux=True``), where ``loss`` is the global-batch mean.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jopt._core import validate
from jopt.parallel.mesh import _put_global, axis_size, batch_sharding, check_divisible

__all__ = ["data_parallel_step", "shard_map_step", "pmap_step", "pmap_replicate",
           "pmap_unreplicate", "pmap_shard_batch"]

Step = Callable[..., tuple]


def _split_aux(out: Any, has_aux: bool) -> tuple[Any, Any]:
  return out if has_aux else (out, None)


def _place_batch(batch: Any, mesh: Mesh, axis: str, where: str) -> Any:
  """The batch split over ``axis``: leaves already laid out so are kept, others placed."""
  check_divisible(batch, axis_size(mesh, axis), axis, where)
  sharding = batch_sharding(mesh, axis)

  def put(x):
    if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim):
      return x
    return _put_global(x, sharding)
  return jax.tree.map(put, batch)


def _apply(tx: optax.GradientTransformation, grads: Any, opt_state: Any, params: Any):
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def data_parallel_step(loss_fn: Callable[..., Any], tx: optax.GradientTransformation,
                       mesh: Mesh, axis: str = "data", *, has_aux: bool = False,
                       donate: bool = False) -> Step:
  r"""A jitted train step whose batch is split over mesh axis ``axis`` (the recommended path).

  .. math::
    g = \nabla_\theta \frac1B \sum_{j=1}^{B} \ell_j(\theta),\qquad
    (u, s') = \mathrm{tx.update}(g, s, \theta),\qquad \theta' = \theta + u

  ``loss_fn(params, batch)`` is written for the *global* batch, exactly as on one
  device. The batch's leading axis is sharded with ``NamedSharding(mesh, P(axis))``;
  XLA's partitioner turns the mean over examples into per-device partial sums and an
  all-reduce, so the gradient is the global-batch mean with no collective in user code.
  Parameters and optimizer state are used as they come: replicated
  (:func:`jopt.parallel.mesh.replicate`; ``tx.init`` of replicated params gives
  replicated jopt state) or sharded by other rules, which ``jit`` keeps.

  Args:
    loss_fn: ``loss_fn(params, batch) -> loss`` (a scalar mean over the batch), or
      ``-> (loss, aux)`` with ``has_aux=True``.
    tx: an optax-compatible gradient transformation (any jopt optimizer or chain).
    mesh: the device mesh, e.g. :func:`jopt.parallel.mesh.data_mesh`.
    axis: the mesh axis the batch is split over.
    has_aux: ``loss_fn`` returns ``(loss, aux)``; the step then returns ``aux`` too.
    donate: donate ``params`` and ``opt_state`` buffers to the step (saves memory;
      the arrays passed in are invalid afterwards).

  Returns:
    ``step(params, opt_state, batch) -> (params, opt_state, loss[, aux])``. ``batch``
    may be NumPy or JAX arrays; leaves not yet split over ``axis`` are placed (a
    batch size not divisible by the axis size raises ``ValueError``).

  Example:
    >>> def loss_fn(params, batch):             # written for the global batch
    ...   x, y = batch
    ...   return jnp.mean((x @ params["w"] - y) ** 2)
    >>> mesh = jopt.parallel.data_mesh(4)
    >>> params = jopt.parallel.replicate({"w": jnp.zeros((3, 1))}, mesh)
    >>> batch = (np.ones((8, 3), np.float32), np.ones((8, 1), np.float32))
    >>> tx = jopt.sgd(0.1)
    >>> step = jopt.parallel.data_parallel_step(loss_fn, tx, mesh)
    >>> params, state, loss = step(params, tx.init(params), batch)
    >>> print(float(loss), np.asarray(params["w"]).ravel().round(4))  # g = -2: w = 0.1 * 2
    1.0 [0.2 0.2 0.2]

  Reference: JAX's *Distributed arrays and automatic parallelization* guide
  (``jit`` with ``NamedSharding`` inputs).
  """
  where = "data_parallel_step: "
  validate.check_flag(where, has_aux=has_aux, donate=donate)
  axis_size(mesh, axis)
  sharding = batch_sharding(mesh, axis)

  def inner(params, opt_state, batch):
    batch = jax.tree.map(lambda x: lax.with_sharding_constraint(x, sharding), batch)
    (loss, aux), grads = jax.value_and_grad(
        lambda p: _split_aux(loss_fn(p, batch), has_aux), has_aux=True)(params)
    params, opt_state = _apply(tx, grads, opt_state, params)
    return (params, opt_state, loss, aux) if has_aux else (params, opt_state, loss)

  jitted = jax.jit(inner, donate_argnums=(0, 1) if donate else ())

  def step(params, opt_state, batch):
    batch = _place_batch(batch, mesh, axis, where)
    with jax.set_mesh(mesh):
      return jitted(params, opt_state, batch)
  return step


def shard_map_step(loss_fn: Callable[..., Any], tx: optax.GradientTransformation,
                   mesh: Mesh, axis: str = "data", *, has_aux: bool = False) -> Step:
  r"""A ``jax.shard_map`` train step with the correct global-mean gradient, built in.

  Each device :math:`i` runs ``loss_fn(params, local_batch)`` on its :math:`B/N`
  examples, giving its local mean :math:`\mathcal L_i`. The helper differentiates
  the *global* loss

  .. math::
    \mathcal L = \operatorname{pmean}_i \mathcal L_i = \frac1N\sum_{i=1}^N \mathcal L_i,
    \qquad g = \nabla_\theta \mathcal L = \frac1N \sum_{i=1}^N \nabla_\theta \mathcal L_i

  and hands the same :math:`g` to ``tx.update`` on every device, so parameters and
  state stay replicated and equal to a one-device step on the whole batch.

  **The pitfall this avoids.** Inside ``shard_map`` (``check_vma=True``, JAX's
  default) the replicated parameters are *invariant* over ``axis`` and the local loss
  is *varying*; the implicit broadcast from one to the other transposes to a
  ``psum``. So ``jax.grad`` of the local loss with respect to a replicated parameter
  is already :math:`\sum_i \nabla\mathcal L_i` (:math:`N` times the mean), and so is
  the gradient of ``lax.psum(local_loss)``. Adding the ``pmap``-era
  ``lax.pmean(grads, axis)`` then averages :math:`N` identical copies and changes
  nothing: the step uses :math:`N\times` the gradient (and with ``check_vma=False``,
  differentiating a psum'ed loss and then ``pmean``-ing gives :math:`N\times` too,
  while leaving out the ``pmean`` gives only the local gradient). Differentiating
  ``pmean(local_loss)`` and applying no further collective to the gradient is right
  in every case, which is the only thing this helper does. ``tests/test_parallel_data.py``
  measures the :math:`N\times` error of the naive versions.

  The batch must split evenly (:math:`N \mid B`), so the mean of the local means is
  the global mean. For a loss-scaled (fp16) step, agree on skipping with
  ``jopt.precision.all_finite(grads, axis_name=axis)``.

  Args:
    loss_fn: ``loss_fn(params, local_batch) -> loss``, the mean over the examples it
      is given (written as for one device), or ``-> (loss, aux)`` with ``has_aux``.
    tx: an optax-compatible gradient transformation.
    mesh: the device mesh; parameters and state are replicated over all of it.
    axis: the mesh axis the batch is split over.
    has_aux: ``loss_fn`` returns ``(loss, aux)``; each device's ``aux`` is returned
      stacked on a new leading axis of size :math:`N`.

  Returns:
    A jitted ``step(params, opt_state, batch) -> (params, opt_state, loss[, aux])``,
    ``loss`` the global-batch mean.

  Example:
    >>> def loss_fn(params, batch):             # the mean over this device's examples
    ...   x, y = batch
    ...   return jnp.mean((x @ params["w"] - y) ** 2)
    >>> mesh = jopt.parallel.data_mesh(4)
    >>> params = jopt.parallel.replicate({"w": jnp.zeros((3, 1))}, mesh)
    >>> batch = (np.ones((8, 3), np.float32), np.ones((8, 1), np.float32))
    >>> tx = jopt.sgd(0.1)
    >>> step = jopt.parallel.shard_map_step(loss_fn, tx, mesh)
    >>> params, state, loss = step(params, tx.init(params), batch)
    >>> print(float(loss), np.asarray(params["w"]).ravel().round(4))  # not 4x: w = 0.1 * 2
    1.0 [0.2 0.2 0.2]

  Reference: JAX's *Manual parallelism with shard_map* guide (``check_vma`` and the
  transpose of an invariant-to-varying broadcast).
  """
  where = "shard_map_step: "
  validate.check_flag(where, has_aux=has_aux)
  axis_size(mesh, axis)
  rep = PartitionSpec()

  def local(params, opt_state, batch):
    def global_loss(p):
      loss, aux = _split_aux(loss_fn(p, batch), has_aux)
      return lax.pmean(loss, axis), aux
    (loss, aux), grads = jax.value_and_grad(global_loss, has_aux=True)(params)
    params, opt_state = _apply(tx, grads, opt_state, params)
    if has_aux:
      return params, opt_state, loss, jax.tree.map(lambda a: jnp.asarray(a)[None], aux)
    return params, opt_state, loss

  out_specs = (rep, rep, rep, PartitionSpec(axis)) if has_aux else (rep, rep, rep)
  mapped = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(rep, rep, PartitionSpec(axis)),
                                 out_specs=out_specs))

  def step(params, opt_state, batch):
    batch = _place_batch(batch, mesh, axis, where)
    with jax.set_mesh(mesh):
      return mapped(params, opt_state, batch)
  return step


def _pmap_devices(devices: Sequence[Any] | None) -> list[Any]:
  return list(jax.local_devices() if devices is None else devices)


def pmap_replicate(tree: Any, devices: Sequence[Any] | None = None) -> Any:
  r"""Stack one copy of every leaf per device, for ``pmap`` (flax's ``jax_utils.replicate``).

  .. math:: x \mapsto X,\quad X[k] = x \text{ on device } k,\ k = 0..n-1

  Args:
    tree: a pytree of arrays.
    devices: the devices (default ``jax.local_devices()``).

  Returns:
    The tree with leaves of shape ``(n, *x.shape)``, row :math:`k` on device :math:`k`.

  Example:
    >>> params_r = jopt.parallel.pmap_replicate({"w": jnp.ones(3)})
    >>> params_r["w"].shape == (jax.local_device_count(), 3)   # one row per device
    True

  Reference: ``flax.jax_utils.replicate``; JAX's pmap migration guide
  (``jax.device_put_replicated`` was removed).
  """
  devs = _pmap_devices(devices)
  sharding = NamedSharding(Mesh(np.array(devs), ("_pmap",)), PartitionSpec("_pmap"))
  return jax.tree.map(lambda x: jax.device_put(
      jnp.broadcast_to(jnp.asarray(x)[None], (len(devs),) + jnp.shape(x)), sharding), tree)


def pmap_unreplicate(tree: Any) -> Any:
  r"""Device 0's copy of every leaf of a ``pmap``-replicated tree.

  .. math:: X \mapsto X[0]

  Args:
    tree: a pytree whose leaves carry a leading device axis.

  Returns:
    The tree with the leading axis dropped (row 0).

  Example:
    >>> params_r = jopt.parallel.pmap_replicate({"w": jnp.arange(3.0)})
    >>> params = jopt.parallel.pmap_unreplicate(params_r)
    >>> print(params["w"])
    [0. 1. 2.]

  Reference: ``flax.jax_utils.unreplicate``.
  """
  return jax.tree.map(lambda x: x[0], tree)


def pmap_shard_batch(batch: Any, n: int | None = None) -> Any:
  r"""Reshape a batch ``(B, ...)`` into ``(n, B/n, ...)`` for ``pmap``, refusing uneven splits.

  .. math:: X[B, \dots] \mapsto X'[n, B/n, \dots],\quad X'[k] = X[kB/n : (k+1)B/n]

  Args:
    batch: a pytree of arrays sharing one leading size :math:`B`.
    n: the number of devices (default ``jax.local_device_count()``).

  Returns:
    The reshaped batch (NumPy leaves stay NumPy; ``pmap`` places them).

  Example:
    >>> x, y = np.zeros((8, 3), np.float32), np.zeros(8, np.int32)
    >>> xs, ys = jopt.parallel.pmap_shard_batch((x, y), n=4)
    >>> xs.shape, ys.shape
    ((4, 2, 3), (4, 2))

  Reference: the ``shard`` helper of flax's ``jax_utils`` / ``flax.training.common_utils``.
  """
  n = jax.local_device_count() if n is None else validate.check_positive_int(
      "n", n, "pmap_shard_batch: ")
  size = check_divisible(batch, n, None, "pmap_shard_batch: ")
  return jax.tree.map(lambda x: x.reshape((n, size // n) + tuple(np.shape(x)[1:])), batch)


def pmap_step(loss_fn: Callable[..., Any], tx: optax.GradientTransformation,
              axis: str = "batch", *, devices: Sequence[Any] | None = None,
              has_aux: bool = False) -> Step:
  r"""A ``jax.pmap`` train step with ``lax.pmean`` of the gradients (for migrating code).

  .. math::
    g = \operatorname{pmean}_k \nabla_\theta \mathcal L_k = \frac1n\sum_{k=1}^n
    \nabla_\theta \mathcal L_k,\qquad
    \mathcal L = \operatorname{pmean}_k \mathcal L_k

  Under ``pmap`` (no varying-axes typing) the local gradient is local, so the
  ``pmean`` is needed and right. ``pmap`` is in maintenance mode (rebuilt on
  ``jit`` + ``shard_map``); jax 0.10.2 still runs it without a warning (the tests run
  with warnings as errors), but new code should use :func:`data_parallel_step`.

  Args:
    loss_fn: ``loss_fn(params, local_batch) -> loss``, a mean over its examples, or
      ``-> (loss, aux)`` with ``has_aux``.
    tx: an optax-compatible gradient transformation.
    axis: the ``pmap`` axis name.
    devices: the devices (default ``jax.local_devices()``).
    has_aux: ``loss_fn`` returns ``(loss, aux)``; ``aux`` comes back per device.

  Returns:
    ``step(params_r, opt_state_r, batch) -> (params_r, opt_state_r, loss[, aux])``:
    parameters and state replicated with :func:`pmap_replicate`, ``batch`` the global
    batch ``(B, ...)`` (split with :func:`pmap_shard_batch`, so :math:`n \mid B`);
    ``loss`` the global mean, replicated ``(n,)``.

  Example:
    >>> def loss_fn(params, batch):             # the mean over this device's examples
    ...   x, y = batch
    ...   return jnp.mean((x @ params["w"] - y) ** 2)
    >>> params = {"w": jnp.zeros((3, 1))}
    >>> batch = (np.ones((8, 3), np.float32), np.ones((8, 1), np.float32))
    >>> tx = jopt.sgd(0.1)
    >>> step = jopt.parallel.pmap_step(loss_fn, tx)
    >>> params_r = jopt.parallel.pmap_replicate(params)
    >>> params_r, state_r, loss = step(params_r, jopt.parallel.pmap_replicate(tx.init(params)),
    ...                                batch)
    >>> w = jopt.parallel.pmap_unreplicate(params_r)["w"]
    >>> print(float(loss[0]), np.asarray(w).ravel().round(4))      # g = -2: w = 0.1 * 2
    1.0 [0.2 0.2 0.2]

  Reference: the ``pmap`` data-parallel recipe of flax's examples (``lax.pmean`` of
  the gradients over the device axis).
  """
  validate.check_flag("pmap_step: ", has_aux=has_aux)
  devs = _pmap_devices(devices)

  def local(params, opt_state, batch):
    (loss, aux), grads = jax.value_and_grad(
        lambda p: _split_aux(loss_fn(p, batch), has_aux), has_aux=True)(params)
    grads = lax.pmean(grads, axis)
    params, opt_state = _apply(tx, grads, opt_state, params)
    loss = lax.pmean(loss, axis)
    return (params, opt_state, loss, aux) if has_aux else (params, opt_state, loss)

  mapped = jax.pmap(local, axis_name=axis, devices=devs)

  def step(params, opt_state, batch):
    return mapped(params, opt_state, pmap_shard_batch(batch, len(devs)))
  return step
