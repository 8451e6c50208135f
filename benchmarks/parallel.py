"""Acceleration, measured: per-device bytes and collectives of five layouts, bf16 vs float32 time.

Run:  python -m benchmarks.parallel [--quick] [--out DIR]

A residual MLP of Megatron blocks (``width -> hidden -> width`` per block, GELU,
a residual sum; 1024-4096-1024 twice in the full run: 16.8M parameters,
67 MB of float32) trained with ``jopt.adam`` on a mean-squared error, laid
out five ways over the devices (8 fake CPU devices on a CPU machine:
``jax_num_cpu_devices=8`` is set before JAX starts):

* **replicated**: plain data parallelism, parameters and Adam state on every
  device, the batch split (``jit`` with ``NamedSharding``, what
  ``jopt.parallel.data_parallel_step`` compiles);
* **ZeRO-1 / ZeRO-2 / FSDP (ZeRO-3)**: ``jopt.parallel.zero_step`` with
  ``stage=1, 2, 3`` (state sharded; and gradients; and parameters);
* **tensor parallel**: a 2 x 4 ``data x model`` mesh
  (``jopt.parallel.data_model_mesh``) with ``jopt.parallel.megatron_mlp``
  rules (up column-split, down row-split), the Adam state following the
  parameters, the batch split over ``data``.

For each layout, the bytes one device holds (:func:`per_device_bytes`: the
``addressable_shards`` of every leaf summed per device, the largest device) and
the collectives of one compiled train step (:func:`collective_bytes`: every
all-reduce / all-gather / reduce-scatter / all-to-all / collective-permute in
``jax.jit(...).lower(...).compile().as_text()``, the bytes of its result shape,
summed per kind: the per-device SPMD program's view, not wire traffic).

Then the step time of ``jopt.precision.mixed_precision_step`` on one device
with the ``"float32"``, ``"mixed_bfloat16"`` and ``"mixed_float16"`` policies
(median of timed steps after warm-up), the ratio against float32, the dtypes
of the compiled step's matrix products, and this CPU's bfloat16 flags from
``/proc/cpuinfo`` (``avx512_bf16``, ``amx_bf16``).

On a GPU (``jax.devices()[0].platform == "gpu"``) the same runs on the real
devices (the fake CPU devices are not used), each layout's step is timed too,
and the precision rows use a larger batch; the report is then named
``PARALLEL_gpu.md`` / ``parallel_gpu.json``. ``benchmarks/on_device.sh`` runs it.

``--quick`` is the smoke test's run (a tiny MLP, a few steps): its numbers only
show that every row runs. Benchmarks measure; nothing here is a pass/fail threshold.
"""

from __future__ import annotations

import jax

if __name__ == "__main__":   # before any JAX array exists; a no-op on a GPU's default backend
  jax.config.update("jax_num_cpu_devices", 8)

# pylint: disable=wrong-import-position
import argparse
import dataclasses
import gc
import pathlib
import re
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import jopt
from jopt import parallel, precision

from benchmarks.machine import log, machine_facts, write_report

__all__ = ["Settings", "FULL", "QUICK", "GPU", "LAYOUTS", "COLLECTIVES", "mlp_params",
           "mlp_loss", "per_device_bytes", "collective_bytes", "dot_dtypes", "cpu_bf16_flags",
           "build_layout", "measure_layouts", "measure_precision", "run", "markdown", "main"]

HERE = pathlib.Path(__file__).resolve().parent
LAYOUTS = ("replicated", "zero1", "zero2", "fsdp", "tensor")
LABELS = {"replicated": "replicated (plain data parallel)", "zero1": "ZeRO-1 (state sharded)",
          "zero2": "ZeRO-2 (state + gradients sharded)", "fsdp": "FSDP / ZeRO-3 (all sharded)",
          "tensor": "tensor parallel (Megatron MLP)"}
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
LEARNING_RATE = 1e-3


@dataclasses.dataclass(frozen=True)
class Settings:
  width: int            # the residual stream (a block's input and output)
  hidden: int           # a block's hidden width (column-split in the tensor layout)
  depth: int            # the number of blocks
  batch: int            # the layouts' global batch
  small_batch: int      # a second, small global batch: collectives only
  precision_batch: int  # the one-device precision rows' batch
  precision_steps: int  # timed steps per precision row (median reported)
  layout_steps: int     # timed steps per layout (0: not timed; fake devices share the CPU)
  warmup: int


FULL = Settings(width=1024, hidden=4096, depth=2, batch=4096, small_batch=64,
                precision_batch=256, precision_steps=10, layout_steps=0, warmup=2)
QUICK = Settings(width=64, hidden=256, depth=1, batch=64, small_batch=16, precision_batch=32,
                 precision_steps=3, layout_steps=0, warmup=1)
GPU = dataclasses.replace(FULL, precision_batch=8192, precision_steps=50, layout_steps=20,
                          warmup=5)


def mlp_params(width: int, hidden: int, depth: int, seed: int = 0) -> dict[str, Any]:
  """The MLP's float32 parameters as host NumPy arrays: ``{"block<i>": {"up", "down"}}``."""
  rng = np.random.default_rng(seed)
  out = {}
  for i in range(depth):
    out[f"block{i}"] = {
        "up": {"kernel": (rng.standard_normal((width, hidden), np.float32)
                          / np.float32(np.sqrt(width))),
               "bias": np.zeros(hidden, np.float32)},
        "down": {"kernel": (rng.standard_normal((hidden, width), np.float32)
                            * np.float32(0.5 / np.sqrt(hidden))),
                 "bias": np.zeros(width, np.float32)}}
  return out


def mlp_loss(params: dict[str, Any], batch: tuple[Any, Any]) -> jax.Array:
  """Mean squared error of the residual MLP; computes in the parameters' dtype, loss in float32."""
  x, y = batch
  h = x.astype(params["block0"]["up"]["kernel"].dtype)
  for i in range(len(params)):
    b = params[f"block{i}"]
    z = jax.nn.gelu(h @ b["up"]["kernel"] + b["up"]["bias"])
    h = h + z @ b["down"]["kernel"] + b["down"]["bias"]
  return jnp.mean((h.astype(jnp.float32) - y) ** 2)


def _batch(width: int, batch: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((batch, width), np.float32)
  return x, np.tanh(x).astype(np.float32)


def per_device_bytes(tree: Any) -> int:
  """The bytes the fullest device holds of ``tree``: ``addressable_shards`` summed per device."""
  per: dict[Any, int] = {}
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      per[shard.device] = per.get(shard.device, 0) + int(shard.data.nbytes)
  return max(per.values(), default=0)


def _total_bytes(tree: Any) -> int:
  return sum(int(leaf.nbytes) for leaf in jax.tree.leaves(tree))


_ITEM_BITS = {"pred": 8, "s4": 4, "u4": 4, "s8": 8, "u8": 8, "s16": 16, "u16": 16, "s32": 32,
              "u32": 32, "s64": 64, "u64": 64, "f16": 16, "bf16": 16, "f32": 32, "f64": 64,
              "c64": 64, "c128": 128, "f8e4m3fn": 8, "f8e5m2": 8, "f8e4m3": 8, "f8e5m2fnuz": 8,
              "f8e4m3fnuz": 8, "f8e4m3b11fnuz": 8, "f8e8m0fnu": 8, "f4e2m1fn": 4, "token": 0}
_OP = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(?P<type>.*?)\s+(?P<op>"
                 + "|".join(COLLECTIVES) + r")(?P<phase>-start|-done)?\(", re.M)
_SHAPE = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\]")


def _shape_bytes(text: str) -> int:
  total = 0
  for dtype, dims in _SHAPE.findall(text):
    if dtype not in _ITEM_BITS:
      raise ValueError(f"collective_bytes: unknown HLO element type {dtype!r} in {text!r}.")
    n = 1
    for d in filter(None, dims.split(",")):
      n *= int(d)
    total += n * _ITEM_BITS[dtype] // 8
  return total


def collective_bytes(hlo: str) -> dict[str, dict[str, int]]:
  """Per collective kind, the number of ops and the bytes of their result shapes in compiled HLO.

  Synchronous ops count once; of an asynchronous pair only the ``-done`` half
  counts (its result is the output; a ``-start``'s tuple also carries the
  input). Reduce-scatter and all-to-all wrapped in ``async-start`` count
  through the op inside the wrapped computation.
  """
  out = {kind: {"ops": 0, "bytes": 0} for kind in COLLECTIVES}
  for m in _OP.finditer(hlo):
    if m.group("phase") == "-start":
      continue
    entry = out[m.group("op")]
    entry["ops"] += 1
    entry["bytes"] += _shape_bytes(m.group("type"))
  return out


_DEF = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*([a-z][a-z0-9]*)\[", re.M)
_DOT = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*([a-z][a-z0-9]*)\[[^=]*?\s"
                  r"dot\(%?([\w.\-]+),\s*%?([\w.\-]+)\)", re.M)


def dot_dtypes(hlo: str) -> dict[str, int]:
  """How many ``dot`` ops of each ``"lhs,rhs->result"`` element-type signature compiled HLO holds.

  On XLA:CPU a bfloat16 matmul that is upcast shows as ``"f32,f32->f32"``
  (the converts sit in the fusions around it); a native one as ``"bf16,bf16->..."``.
  """
  types = dict(_DEF.findall(hlo))
  counts: dict[str, int] = {}
  for result, lhs, rhs in _DOT.findall(hlo):
    key = f"{types.get(lhs, '?')},{types.get(rhs, '?')}->{result}"
    counts[key] = counts.get(key, 0) + 1
  return counts


def cpu_bf16_flags() -> dict[str, bool]:
  """Whether ``/proc/cpuinfo`` lists the bfloat16 / AMX / AVX-512 flags (all False elsewhere)."""
  names = ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "avx512_fp16")
  flags: set[str] = set()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("flags"):
          flags.update(line.split(":", 1)[1].split())
          break
  except OSError:
    pass
  return {n: n in flags for n in names}


def _shardings(tree: Any) -> Any:
  return jax.tree.map(lambda x: x.sharding, tree)


def _plain_step(loss_fn: Callable[..., Any], tx: optax.GradientTransformation):
  def step(p, s, batch):
    loss, g = jax.value_and_grad(loss_fn)(p, batch)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s, loss
  return step


def _mesh_shape(n: int) -> tuple[int, int]:
  """The ``data x model`` split of ``n`` devices: 4-way model parallel where 8 | n."""
  model = 4 if n % 8 == 0 else (2 if n % 2 == 0 else 1)
  return n // model, model


def build_layout(name: str, params: Any, batch: Any, devices: Sequence[Any] | None = None,
                 tx: optax.GradientTransformation | None = None) -> dict[str, Any]:
  """Lay ``params`` (and Adam's state, and the batch) out as ``name``; the arrays and the step.

  Returns a dict with ``params``, ``state``, ``batch`` (placed), ``mesh`` and
  ``call`` / ``lower``: ``call(p, s, b) -> (p, s, loss)`` and its ``jax.stages.Lowered``.
  """
  if name not in LAYOUTS:
    raise ValueError(f"build_layout: name={name!r} must be one of {LAYOUTS}.")
  devices = list(jax.devices() if devices is None else devices)
  tx = jopt.adam(LEARNING_RATE) if tx is None else tx
  n = len(devices)
  if name == "tensor":
    data, model = _mesh_shape(n)
    mesh = parallel.data_model_mesh(data, model, devices=devices)
    specs = parallel.match_specs(params, parallel.megatron_mlp(r"block\d+/up", r"block\d+/down"),
                                 mesh=mesh, strict=True)
  else:
    mesh = jax.make_mesh((n,), ("data",), axis_types=(AxisType.Auto,), devices=devices)
  batch_sh = NamedSharding(mesh, P("data"))
  placed_batch = jax.device_put(batch, batch_sh)
  if name in ("zero1", "zero2", "fsdp"):
    zs = parallel.zero_step(mlp_loss, tx, mesh, stage={"zero1": 1, "zero2": 2, "fsdp": 3}[name])
    p = zs.place(params)
    s = zs.init(p)
    return {"mesh": mesh, "params": p, "state": s, "batch": placed_batch, "call": zs,
            "lower": zs.lower}
  if name == "replicated":
    p = parallel.replicate(params, mesh)
  else:
    p = parallel.shard_params(params, mesh, specs)
  rep = NamedSharding(mesh, P())
  # jopt state inherits each parameter's sharding; its 0-d leaves (count, hyperparameters)
  # are uncommitted single-device arrays, which the step's outputs replicate: do so now
  s = jax.tree.map(lambda x: x if x.committed else jax.device_put(x, rep), tx.init(p))
  fn = jax.jit(_plain_step(mlp_loss, tx), in_shardings=(_shardings(p), _shardings(s), batch_sh),
               out_shardings=(_shardings(p), _shardings(s), rep))
  return {"mesh": mesh, "params": p, "state": s, "batch": placed_batch, "call": fn,
          "lower": fn.lower}


def _median_ms(fn: Callable[[], Any], steps: int, warmup: int) -> float:
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def measure_layouts(s: Settings, devices: Sequence[Any] | None = None,
                    layouts: Sequence[str] = LAYOUTS, batch_size: int | None = None,
                    time_steps: bool = True, log=print) -> list[dict[str, Any]]:
  """Per layout: per-device and total parameter / state bytes, HLO collectives, step time."""
  devices = list(jax.devices() if devices is None else devices)
  params = mlp_params(s.width, s.hidden, s.depth)
  batch_size = s.batch if batch_size is None else batch_size
  batch = _batch(s.width, batch_size)
  rows = []
  for name in layouts:
    log(f"layout {name} on {len(devices)} device(s), batch {batch_size}")
    lay = build_layout(name, params, batch, devices)
    start = time.perf_counter()
    compiled = lay["lower"](lay["params"], lay["state"], lay["batch"]).compile()
    compile_s = time.perf_counter() - start
    coll = collective_bytes(compiled.as_text())
    row = {"layout": name, "label": LABELS[name], "batch": batch_size,
           "mesh": {k: int(v) for k, v in lay["mesh"].shape.items()},
           "param_bytes_per_device": per_device_bytes(lay["params"]),
           "state_bytes_per_device": per_device_bytes(lay["state"]),
           "param_bytes_total": _total_bytes(lay["params"]),
           "state_bytes_total": _total_bytes(lay["state"]),
           "collectives": coll,
           "collective_bytes": sum(c["bytes"] for c in coll.values()),
           "compile_s": compile_s, "step_ms": None}
    if s.layout_steps and time_steps:
      state = {"p": lay["params"], "s": lay["state"]}

      def one():
        state["p"], state["s"], loss = lay["call"](state["p"], state["s"], lay["batch"])
        return loss
      row["step_ms"] = _median_ms(one, s.layout_steps, s.warmup)
    rows.append(row)
    del lay, compiled
    gc.collect()
  return rows


def measure_precision(s: Settings, device: Any = None, policies: Sequence[str] = POLICIES,
                      log=print) -> list[dict[str, Any]]:
  """Median ``mixed_precision_step`` time per policy on one device, and its ratio to float32."""
  device = jax.devices()[0] if device is None else device
  params = jax.device_put(mlp_params(s.width, s.hidden, s.depth), device)
  batch = jax.device_put(_batch(s.width, s.precision_batch), device)
  rows = []
  for name in policies:
    log(f"precision {name}, batch {s.precision_batch}")
    dynamic = name == "mixed_float16"   # bfloat16 and float32 need no scaling (static 1)
    tx = precision.loss_scale(jopt.adam(LEARNING_RATE), 2.0 ** 15 if dynamic else 1.0,
                              dynamic=dynamic)
    step = precision.mixed_precision_step(mlp_loss, tx, name)
    state = {"p": params, "s": tx.init(params)}
    dots = dot_dtypes(step.lower(params, state["s"], batch).compile().as_text())

    def one():
      state["p"], state["s"], metrics = step(state["p"], state["s"], batch)
      return metrics["loss"]
    ms = _median_ms(one, s.precision_steps, s.warmup)
    rows.append({"policy": name, "step_ms": ms, "dot_dtypes": dots,
                 "skipped": int(state["s"].skipped),
                 "final_loss": float(mlp_loss(state["p"], batch))})
  base = next((r["step_ms"] for r in rows if r["policy"] == "float32"), None)
  for r in rows:
    r["time_vs_float32"] = None if base is None else r["step_ms"] / base
  return rows


def run(s: Settings, log=print) -> dict[str, Any]:
  """Both measurements on this machine's devices (8 fake CPU devices, or the real GPUs)."""
  devices = jax.devices()
  platform = devices[0].platform
  params = mlp_params(s.width, s.hidden, s.depth)
  n_params = sum(int(x.size) for x in jax.tree.leaves(params))
  del params
  return {"platform": platform, "devices": [str(d) for d in devices],
          "device_kind": devices[0].device_kind, "parameters": n_params,
          "cpu_flags": cpu_bf16_flags(),
          "layouts": measure_layouts(s, devices, log=log),
          "small_batch_layouts": measure_layouts(s, devices, batch_size=s.small_batch,
                                                 time_steps=False, log=log),
          "precision": measure_precision(s, devices[0], log=log)}


def _mb(n: int) -> str:
  return f"{n / 2 ** 20:,.2f}"


def _mesh_text(mesh: dict[str, int]) -> str:
  return " x ".join(f"{k}={v}" for k, v in mesh.items())


def markdown(result: dict[str, Any]) -> str:
  """The report: machine facts, the bytes and collectives table, the precision table."""
  m, s = result["machine"], result["settings"]
  rows, prec = result["layouts"], result["precision"]
  timed = any(r["step_ms"] is not None for r in rows)
  flags = result["cpu_flags"]
  n_dev = len(result["devices"])
  lines = [
      f"# Acceleration: memory, communication and precision ({result['platform']})", "",
      f"Generated by `{result['command']}`; do not edit by hand.", "",
      f"- machine: {m['cpu']}, {m['cpus']} CPUs, backend {m['backend']}; {m['platform']}",
      f"- devices: {n_dev} x {result['device_kind']}"
      + (" (fake CPU devices, `jax_num_cpu_devices=8`, sharing the CPU)"
         if result["platform"] == "cpu" else ""),
      f"- versions: jax {m['jax']}, optax {m['optax']}, numpy {m['numpy']}, jopt {m['jopt']},"
      f" Python {m['python']}",
      f"- run time: {result['seconds'] / 60:.1f} min"
      + (" (quick smoke run: numbers meaningless)" if result["quick"] else ""),
      f"- recipe: residual MLP, {s['depth']} block(s) {s['width']}-{s['hidden']}-{s['width']}"
      f" (GELU), {result['parameters']:,} float32 parameters, `jopt.adam({LEARNING_RATE:g})`,"
      f" MSE, global batch {s['batch']} (split over the data axis); `python -m"
      " benchmarks.parallel`",
      "- bytes: per device = the fullest device's `addressable_shards` summed over leaves"
      " (MiB); total = the logical arrays. Collectives: ops in the compiled step's HLO and the"
      " bytes of their result shapes (the per-device program; an all-reduce moves about"
      " 2(N-1)/N of that over a ring, an all-gather (N-1)/N).", "",
      "## Bytes per device and collectives per step", "",
      "| layout | mesh | params MiB / device | state MiB / device | params MiB total |"
      " state MiB total | " + " | ".join(COLLECTIVES) + " | collective MiB |"
      + (" step ms |" if timed else ""),
      "|---|---|---|---|---|---|" + "---|" * len(COLLECTIVES) + "---|" + ("---|" if timed else "")]
  for r in rows:
    cells = [r["label"], _mesh_text(r["mesh"]), _mb(r["param_bytes_per_device"]),
             _mb(r["state_bytes_per_device"]), _mb(r["param_bytes_total"]),
             _mb(r["state_bytes_total"])]
    for kind in COLLECTIVES:
      c = r["collectives"][kind]
      cells.append(f"{c['ops']} ({_mb(c['bytes'])})" if c["ops"] else "-")
    cells.append(_mb(r["collective_bytes"]))
    if timed:
      cells.append("-" if r["step_ms"] is None else f"{r['step_ms']:.2f}")
    lines.append("| " + " | ".join(cells) + " |")
  rep = next((r for r in rows if r["layout"] == "replicated"), None)
  lines += ["", "Collective cells: ops (MiB of result shapes)."]
  if rep is not None:
    lines.append("Per-device bytes relative to replicated: " + ", ".join(
        f"{r['layout']} params {r['param_bytes_per_device'] / rep['param_bytes_per_device']:.3f}"
        f" / state {r['state_bytes_per_device'] / rep['state_bytes_per_device']:.3f}"
        for r in rows) + ".")
  small = result["small_batch_layouts"]
  lines += ["", f"## Collectives at a small batch ({s['small_batch']}, the same layouts)", "",
            "XLA's SPMD partitioner picks the cheaper of moving weights and moving activations:"
            " with a few rows per device it may reshard the activations instead of"
            " all-gathering a sharded weight (compare the FSDP row with the table above).", "",
            "| layout | " + " | ".join(COLLECTIVES) + " | collective MiB |",
            "|---|" + "---|" * len(COLLECTIVES) + "---|"]
  for r in small:
    cells = [r["label"]] + [f"{r['collectives'][k]['ops']} ({_mb(r['collectives'][k]['bytes'])})"
                            if r["collectives"][k]["ops"] else "-" for k in COLLECTIVES]
    lines.append("| " + " | ".join(cells + [_mb(r["collective_bytes"])]) + " |")
  if result["platform"] == "cpu":
    lines += ["", "XLA:CPU emits no `reduce-scatter`: a gradient constrained to the state's"
              " shards (ZeRO-2) compiles to an all-reduce and a local slice, the same HLO"
              " as ZeRO-1. Layout step times are not taken on fake devices (they share one"
              " CPU); `benchmarks/on_device.sh` times them on a GPU."]
  flag_text = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in flags.items())
  lines += ["", f"## Step time by precision (one device, batch {s['precision_batch']})", "",
            f"`jopt.precision.mixed_precision_step`, float32 master weights, median of"
            f" {s['precision_steps']} steps after {s['warmup']} warm-up; bfloat16 and float32"
            " under a static loss scale of 1, float16 under the dynamic scale."
            f" CPU flags (/proc/cpuinfo): {flag_text}.", "",
            "| policy | step ms | time / float32 | compiled `dot` ops (operands -> result) |"
            " skipped steps | final loss |", "|---|---|---|---|---|---|"]
  for r in prec:
    ratio = "-" if r["time_vs_float32"] is None else f"{r['time_vs_float32']:.2f}x"
    dots = ", ".join(f"{k} x{v}" for k, v in sorted(r["dot_dtypes"].items())) or "-"
    lines.append(f"| {r['policy']} | {r['step_ms']:.2f} | {ratio} | {dots} | {r['skipped']} |"
                 f" {r['final_loss']:.5f} |")
  lines.append("")
  lines.append(result["precision_note"])
  return "\n".join(lines) + "\n"


def _precision_note(result: dict[str, Any]) -> str:
  prec = {r["policy"]: r for r in result["precision"]}
  bf = prec.get("mixed_bfloat16")
  if bf is None or bf["time_vs_float32"] is None:
    return ""
  ratio = bf["time_vs_float32"]
  text = (f"bfloat16 compute takes {ratio:.2f}x the float32 step time here"
          f" ({'faster' if ratio < 1.0 else 'slower'}).")
  upcast = bool(bf["dot_dtypes"]) and all(k.startswith("f32,f32->") for k in bf["dot_dtypes"])
  if result["platform"] == "cpu":
    f = result["cpu_flags"]
    units = [n for n in ("avx512_bf16", "amx_bf16") if f[n]]
    text += (" This CPU lists " + (" and ".join(units) if units else "no bfloat16 units") + ",")
    if upcast:
      text += (" but XLA:CPU upcasts the bfloat16 matmuls: every compiled `dot` of the"
               " bfloat16 step takes float32 operands (the converts are fused around it), so"
               " the bfloat16 units do no work and the matmuls gain nothing; the step pays"
               " for the conversions instead (where the rest of the time goes was not"
               " profiled).")
    else:
      text += " and the compiled bfloat16 step keeps matmuls in bfloat16 (see the table)."
  return text


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.parallel",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="a smoke run: a tiny MLP, a few timed steps")
  parser.add_argument("--out", default=str(HERE),
                      help="folder for PARALLEL.md and parallel.json (default: benchmarks/)")
  args = parser.parse_args(argv)
  platform = jax.devices()[0].platform
  settings = QUICK if args.quick else (GPU if platform == "gpu" else FULL)
  start = time.perf_counter()
  result = run(settings, log=log)
  result.update(settings=dataclasses.asdict(settings), machine=machine_facts(),
                quick=args.quick, seconds=time.perf_counter() - start,
                command="python -m benchmarks.parallel" + (" --quick" if args.quick else ""))
  result["precision_note"] = _precision_note(result)
  suffix = "" if platform == "cpu" else f"_{platform}"
  out = pathlib.Path(args.out)
  write_report(result, markdown(result), out / f"PARALLEL{suffix}.md",
               out / f"parallel{suffix}.json", result["seconds"])
  return 0


if __name__ == "__main__":
  sys.exit(main())
