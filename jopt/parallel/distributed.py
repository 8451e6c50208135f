"""Multi-host start-up on ``jax.distributed``, with bounded waits and clear errors.

:func:`initialize` is a thin wrapper over ``jax.distributed.initialize``: it fills in
the coordinator address, the process count and the process index from the
environment, sets the CPU collectives to gloo, and bounds every wait (joining,
heartbeats, shutdown), so that a missing or dead peer ends the job within a known
time instead of hanging it. :func:`process_batch` cuts each process's share out of a
global batch.

After a successful start-up, ``jax.devices()`` lists every process's devices:
:func:`jopt.parallel.mesh.data_mesh` spans them all and the data-parallel steps of
:mod:`jopt.parallel.data` run unchanged (each process runs the same program).

A peer that never joins, or one that dies, is detected by JAX's distributed runtime
in C++, which then *aborts* the process (``SIGABRT``, not a Python exception; jax
0.10.2 gives Python no hook). :func:`initialize` therefore prints a clear message
to stderr before that happens, and a process that is not the coordinator first
checks that the coordinator is reachable, raising a Python ``TimeoutError``
otherwise. Launch multi-process tests as child processes with a hard timeout.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from typing import Any, NamedTuple, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from jopt.parallel.mesh import batch_sharding, check_divisible, axis_size

__all__ = ["initialize", "ProcessInfo", "process_batch", "ENV_VARS"]

_WHERE = "initialize: "

# (source, address variable or None, count variable, index variable), in lookup order
ENV_VARS: tuple[tuple[str, str | None, str, str], ...] = (
    ("jax", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"),
    ("slurm", None, "SLURM_NTASKS", "SLURM_PROCID"),
    ("openmpi", None, "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),
)


class ProcessInfo(NamedTuple):
  """What :func:`initialize` started: where each value came from, for the logs.

  Attributes:
    coordinator_address: ``"host:port"`` of process 0's coordination service, or
      ``None`` when JAX's cluster detection chose it.
    num_processes: the number of processes in the job, or ``None`` (detected).
    process_id: this process's index in ``[0, num_processes)``, or ``None`` (detected).
    source: ``"arguments"``, ``"jax"``, ``"slurm"``, ``"openmpi"`` or ``"detected"``
      (``jax.distributed``'s own cluster detection: SLURM, Open MPI, mpi4py, Cloud
      TPU, GKE, Kubernetes).
  """

  coordinator_address: str | None
  num_processes: int | None
  process_id: int | None
  source: str


ProcessInfo.__module__ = "jopt"


def _env_int(name: str) -> int | None:
  raw = os.environ.get(name)
  if raw is None or raw == "":
    return None
  try:
    return int(raw)
  except ValueError:
    raise ValueError(f"{_WHERE}the environment variable {name}={raw!r} is not an integer;"
                     f" set it to an integer or unset it.") from None


def _from_env(address, num, pid) -> tuple[Any, Any, Any, str]:
  if num is not None and pid is not None:
    return address or os.environ.get("JAX_COORDINATOR_ADDRESS"), num, pid, "arguments"
  for source, addr_var, num_var, pid_var in ENV_VARS:
    env_num, env_pid = _env_int(num_var), _env_int(pid_var)
    if env_num is None and env_pid is None:
      continue
    if address is None and addr_var is not None:
      address = os.environ.get(addr_var) or None
    return (address, env_num if num is None else num, env_pid if pid is None else pid,
            source)
  return address or os.environ.get("JAX_COORDINATOR_ADDRESS"), num, pid, (
      "arguments" if address is not None or num is not None or pid is not None else "detected")


def _check_int(name: str, value: Any, low: int) -> None:
  if value is None:
    return
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{_WHERE}{name}={value!r} must be an integer >= {low}.")
  if value < low:
    raise ValueError(f"{_WHERE}{name}={value!r} must be an integer >= {low}.")


def _split_address(address: str) -> tuple[str, int]:
  host, sep, port = str(address).rpartition(":")
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(
        f"{_WHERE}coordinator_address={address!r} must be 'host:port' (e.g."
        " '10.0.0.1:1234'), the address of process 0, reachable from every process.")
  return host.strip("[]"), int(port)


def _wait_for_coordinator(address: str, timeout_s: float, pid: int, num: int) -> None:
  host, port = _split_address(address)
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host, port), timeout=1.0):
        return
    except OSError as err:
      if time.monotonic() >= deadline:
        raise TimeoutError(
            f"{_WHERE}process {pid} of {num} could not reach the coordinator at {address}"
            f" within timeout_s={timeout_s:g} s ({err}). Start process 0 (it runs the"
            " coordinator) with the same coordinator_address, check the host and port"
            " are reachable from this machine, or raise timeout_s.") from None
      time.sleep(0.2)


def _warn(message: str) -> None:
  os.write(sys.stderr.fileno(), (message + "\n").encode())


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *,
               local_device_ids: int | Sequence[int] | None = None,
               timeout_s: float = 60.0, heartbeat_timeout_s: float = 60.0,
               cpu_collectives: str | None = "gloo") -> ProcessInfo:
  r"""Start ``jax.distributed`` from arguments or the environment, with bounded waits.

  After it, the job's devices are every process's local devices,

  .. math:: \text{jax.devices()} = \bigcup_{p=0}^{P-1} \text{local\_devices}_p,
     \qquad \text{jax.device\_count()} = \sum_p |\text{local\_devices}_p|

  Arguments left ``None`` are read from the first of these that is set:
  ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``;
  ``SLURM_NTASKS`` / ``SLURM_PROCID``; ``OMPI_COMM_WORLD_SIZE`` /
  ``OMPI_COMM_WORLD_RANK`` (see :data:`ENV_VARS`). Whatever is still missing is left
  to ``jax.distributed``'s cluster detection (SLURM's node list, Open MPI, mpi4py,
  Cloud TPU and GKE metadata, Kubernetes), which also finds the coordinator address
  on SLURM and TPU pods. On a single TPU VM or one GPU host no call is needed.

  Bounded waits: every process waits at most ``timeout_s`` for all processes to join
  (and at shutdown); a peer whose heartbeats stop for ``heartbeat_timeout_s`` makes
  the others stop. JAX's runtime ends a process that hits either limit with
  ``SIGABRT`` (no Python exception), so a clear message naming the cause and the fix
  is printed to stderr first; a non-coordinator that cannot reach the coordinator
  within ``timeout_s`` raises ``TimeoutError`` before anything starts.

  ``cpu_collectives`` sets ``jax_cpu_collectives_implementation`` (cross-process
  collectives of the CPU backend: ``"gloo"`` over TCP, or ``"mpi"``) when the CPU
  backend may be used (``JAX_PLATFORMS`` unset or naming ``cpu``); ``None`` leaves it.
  GPUs and TPUs use their own collectives (NCCL, ICI) whatever it says.

  Args:
    coordinator_address: ``"host:port"`` of process 0, reachable from all processes.
    num_processes: the number of processes :math:`P`.
    process_id: this process's index in :math:`[0, P)`; process 0 runs the coordinator.
    local_device_ids: the local devices this process uses (GPU ids), default all.
    timeout_s: seconds to wait for every process to join, and at shutdown.
    heartbeat_timeout_s: seconds without a peer's heartbeat before the job stops.
    cpu_collectives: ``"gloo"`` (default), ``"mpi"`` or ``None``.

  Returns:
    A :class:`ProcessInfo` saying what was used and where it came from.

  Raises:
    ValueError: a malformed address or count, ``process_id`` outside ``[0, P)``.
    RuntimeError: JAX's backend already started (call this first) or JAX's own
      refusals, e.g. ``initialize`` called twice.
    TimeoutError: a non-coordinator process could not reach the coordinator.

  Example:
    Each line marked ``+SKIP`` needs a fresh process (before any other JAX call) and,
    for the second, a peer process; they are not run as doctests.

    >>> info = jopt.parallel.initialize()   # every host, before any JAX call  # doctest: +SKIP
    >>> info = jopt.parallel.initialize("10.0.0.1:1234", 2, 0, timeout_s=30)  # doctest: +SKIP
    >>> info                                                                  # doctest: +SKIP
    ProcessInfo(coordinator_address='10.0.0.1:1234', num_processes=2, process_id=0,
                source='arguments')
    >>> jax.process_count(), jax.process_index()  # one process needs no initialize
    (1, 0)

  Reference: ``jax.distributed.initialize`` (JAX's multi-process guide).
  """
  if jax.distributed.is_initialized():
    raise RuntimeError(f"{_WHERE}jax.distributed is already initialized in this process;"
                       " call initialize once, at start-up.")
  for name, value in (("timeout_s", timeout_s), ("heartbeat_timeout_s", heartbeat_timeout_s)):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 1:
      raise ValueError(f"{_WHERE}{name}={value!r} must be a number of seconds >= 1.")
  if cpu_collectives not in (None, "gloo", "mpi"):
    raise ValueError(f"{_WHERE}cpu_collectives={cpu_collectives!r} must be 'gloo', 'mpi'"
                     " or None.")
  address, num, pid, source = _from_env(coordinator_address, num_processes, process_id)
  _check_int("num_processes", num, 1)
  _check_int("process_id", pid, 0)
  if num is not None and pid is not None and not pid < num:
    raise ValueError(f"{_WHERE}process_id={pid} must be in [0, num_processes={num}); each"
                     " process needs its own index, 0 for the coordinator.")
  if address is not None:
    _split_address(address)
  from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
  if xla_bridge.backends_are_initialized():
    raise RuntimeError(
        f"{_WHERE}JAX's backend has already started (an array was created, or"
        " jax.devices() was called). Call jopt.parallel.distributed.initialize first,"
        " before any other JAX call.")
  platforms = jax.config.jax_platforms or os.environ.get("JAX_PLATFORMS", "")
  if cpu_collectives is not None and (not platforms or "cpu" in platforms.split(",")):
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  if address is not None and pid not in (None, 0):
    _wait_for_coordinator(address, timeout_s, pid, num)
  who = f"process {pid} of {num}" if pid is not None else "this process"
  watchdog = threading.Timer(0.8 * timeout_s, _warn, args=(
      f"jopt.parallel.initialize: {who} is still waiting, after {0.8 * timeout_s:g} s, for"
      f" all processes to join at {address or 'the detected coordinator'}. If they have not"
      f" joined by timeout_s={timeout_s:g} s, JAX's distributed runtime aborts this process"
      " (DEADLINE_EXCEEDED). Check that every process was started, with the same"
      " coordinator_address and num_processes and its own process_id.",))
  watchdog.daemon = True
  watchdog.start()
  try:
    jax.distributed.initialize(
        address, num, pid, local_device_ids=local_device_ids,
        initialization_timeout=int(np.ceil(timeout_s)),
        heartbeat_timeout_seconds=int(np.ceil(heartbeat_timeout_s)),
        shutdown_timeout_seconds=int(np.ceil(timeout_s)))
  finally:
    watchdog.cancel()
  return ProcessInfo(address, num, pid, source)


def process_batch(global_batch: Any, mesh: Mesh, axis: str = "data") -> Any:
  r"""This process's share of a global batch: the rows its devices hold on ``axis``.

  With the batch split over :math:`N` devices and this process addressing devices
  :math:`i \in I_p` (contiguous along ``axis``),

  .. math:: \text{share}_p = X\big[\min_{i\in I_p} iB/N \;:\; (\max_{i\in I_p} i + 1)B/N\big]

  Feed it to :func:`jopt.parallel.mesh.shard_batch` with ``process_local=True`` to
  build the global array; reading only the share from disk is the usual
  multi-host input pipeline. With one process the share is the whole batch.

  Args:
    global_batch: a pytree of arrays (NumPy or host-local) with one leading size
      :math:`B`, divisible by the size :math:`N` of ``axis``.
    mesh: the (global) device mesh.
    axis: the mesh axis the batch is split over.

  Returns:
    The pytree of this process's rows, as NumPy arrays.

  Example:
    >>> mesh = jopt.parallel.data_mesh(4)
    >>> x, y = np.ones((8, 3), np.float32), np.arange(8, dtype=np.int32)
    >>> local = jopt.parallel.process_batch((x, y), mesh)
    >>> local[0].shape, local[1].tolist()    # one process: its share is the whole batch
    ((8, 3), [0, 1, 2, 3, 4, 5, 6, 7])
    >>> batch = jopt.parallel.shard_batch(local, mesh, process_local=True)
    >>> batch[0].shape, batch[0].addressable_shards[0].data.shape
    ((8, 3), (2, 3))

  Reference: ``jax.make_array_from_process_local_data``'s contract (each process
  passes the rows of the global array its devices hold).
  """
  n = axis_size(mesh, axis)
  size = check_divisible(global_batch, n, axis, "process_batch: ")
  rows = sorted({(idx[0].start or 0, size if idx[0].stop is None else idx[0].stop)
                 for idx in batch_sharding(mesh, axis)
                 .addressable_devices_indices_map((size,)).values()})
  start, stop = rows[0][0], rows[-1][1]
  if sum(b - a for a, b in rows) != stop - start:
    raise ValueError(
        f"process_batch: this process's devices hold rows {rows} of mesh axis {axis!r},"
        " which are not contiguous; build the mesh with each process's devices next to"
        " each other (jopt.parallel.mesh.data_mesh over jax.devices() does).")
  return jax.tree.map(lambda x: np.asarray(x)[start:stop], global_batch)
