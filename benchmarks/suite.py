"""Optimizer-step benchmark: jopt vs optax vs torch.optim in one process.

Run:  python -m benchmarks.suite [--quick] [--out benchmarks/results.json]

For each optimizer (adam, adamw, sgd+momentum, lion), size (10M, 50M params) and
tree shape it measures, after warm-up, the median and min time of one update
step with buffers donated, the compile time of that step (trace + lower + XLA,
the fastest of a few rounds taken in turn with the caches cleared), the size of
the compiled program (its loop kernels, its arguments, the operands those
kernels read, copies), the effective bandwidth (bytes the step must move /
time) as a fraction of this machine's measured copy bandwidth, and the
optimizer-state bytes. The tree shapes:

* ``few-large``: 4 arrays (two matrices, two vectors);
* ``many-small``: ~1,000 arrays like a deep network, per block a matrix, a
  bias and a norm scale (the matrices grow with the size: 173x171 at 10M);
* ``mat-120``: blocks of two 120x118 matrices (14,160 elements, just under 16k)
  and a 120-vector: 1,056 arrays at 10M, 5,274 at 50M.

It also times a whole train step (loss + grad + update in one jit) of an MLP
with few and with many parameter arrays. Results go to JSON and to
``benchmarks/RESULTS.md``.

Every implementation is timed round by round in turn (this 2-core machine is
shared and drifts by ~20%), so the jopt/optax ratios compare runs taken in the
same minutes, and jopt and optax each step two sets of buffers (one set can be
faster than another for good, by where the allocator put it). Benchmarks measure; tests assert behaviour. Nothing here is a
pass/fail threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jopt

MB = 1 << 20
# bytes moved per parameter, float32: Adam/AdamW read p, g, m, v and write p, m, v.
TRAFFIC = {"adam": 7, "adamw": 7, "sgd_momentum": 5, "lion": 5}
SHAPES = ("few-large", "many-small", "mat-120")
OPTIMIZERS = ("adam", "adamw", "sgd_momentum", "lion")
JAX_LIBS = ("jopt", "optax")


# ---------------------------------------------------------------- the machine
def measure_bandwidth(n: int = 50_000_000, repeats: int = 10) -> dict[str, float]:
  """Copy (2 arrays moved) and triad (3 arrays) bandwidth in GB/s, NumPy and XLA."""
  a = np.ones(n, np.float32)
  b = np.ones(n, np.float32)
  c = np.empty(n, np.float32)
  out = {}

  def best(fn):
    ts = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      fn()
      ts.append(time.perf_counter() - t0)
    return min(ts)

  out["numpy_copy_gbs"] = 2 * 4 * n / best(lambda: np.copyto(c, a)) / 1e9
  out["numpy_triad_gbs"] = 3 * 4 * n / best(lambda: np.add(a, b, out=c)) / 1e9
  xa, xb = jnp.ones(n, jnp.float32), jnp.ones(n, jnp.float32)
  copy = jax.jit(lambda x: x * 1.0001)
  triad = jax.jit(lambda x, y: x + 1.5 * y)
  copy(xa).block_until_ready()
  triad(xa, xb).block_until_ready()
  out["xla_copy_gbs"] = 2 * 4 * n / best(lambda: copy(xa).block_until_ready()) / 1e9
  out["xla_triad_gbs"] = 3 * 4 * n / best(lambda: triad(xa, xb).block_until_ready()) / 1e9
  out["copy_gbs"] = max(out["numpy_copy_gbs"], out["xla_copy_gbs"])
  out["triad_gbs"] = max(out["numpy_triad_gbs"], out["xla_triad_gbs"])
  return out


# ---------------------------------------------------------------- tree shapes
def tree_shapes(total: int, kind: str) -> list[tuple[int, ...]]:
  """Parameter shapes summing to about ``total`` elements (see the module docstring)."""
  if kind == "few-large":
    q = total // 4
    side = int(np.sqrt(q))
    return [(side, q // side)] * 2 + [(q,)] * 2
  if kind == "many-small":
    shapes: list[tuple[int, ...]] = []
    blocks = 333
    per_block = total // blocks
    width = int(np.sqrt(per_block))
    for _ in range(blocks):
      shapes += [(width, per_block // width - 2), (width,), (width,)]
    return shapes
  if kind == "mat-120":
    block = [(120, 118), (120, 118), (120,)]
    return block * max(1, round(total / sum(int(np.prod(s)) for s in block)))
  raise ValueError(kind)


def make_tree(shapes, seed=0):
  rng = np.random.default_rng(seed)
  return {f"p{i:04d}": jnp.asarray(rng.standard_normal(s, dtype=np.float32) * 0.01)
          for i, s in enumerate(shapes)}


def count(tree) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))


# ---------------------------------------------------------------- compiled programs
_OP = re.compile(r"=\s.*?\b([a-z][a-z0-9_-]*)\(")
_NOT_KERNELS = {"parameter", "tuple", "get-tuple-element", "constant", "bitcast"}


def hlo_stats(compiled) -> dict[str, int]:
  """The size of a compiled program, from its optimized HLO's entry computation.

  ``kernels``: instructions that run a loop or a copy (fusions, copies, lone
  element-wise ops; not parameters, tuples, constants or bitcasts); ``fusions``
  the fused loops among them; ``args`` the arrays the program takes;
  ``kernel_operands`` the buffers all kernels read together; ``copies``;
  ``distinct_fusions`` the fused loops with different bodies.
  """
  text = compiled.as_text()
  entry = text[text.index("\nENTRY"):]
  entry = entry[:entry.index("\n}")]
  ops: dict[str, int] = {}
  operands = 0
  for line in entry.splitlines()[1:]:
    m = _OP.search(line)
    if not m:
      continue
    op = m.group(1)
    ops[op] = ops.get(op, 0) + 1
    if op not in _NOT_KERNELS:
      args = line[m.end():]
      depth, end = 1, 0
      for end, ch in enumerate(args):  # the operand list ends at the matching paren
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
          break
      operands += args[:end].count("%")
  return {"kernels": sum(v for k, v in ops.items() if k not in _NOT_KERNELS),
          "fusions": ops.get("fusion", 0), "distinct_fusions": _distinct_fusions(text),
          "copies": ops.get("copy", 0), "args": ops.get("parameter", 0),
          "kernel_operands": operands, "hlo_lines": text.count("\n")}


def _distinct_fusions(text: str) -> int:
  """Fused computations that differ other than by names: the loops XLA CPU has to
  generate code for (fusions with equal bodies share one compiled kernel)."""
  bodies = set()
  for comp in re.findall(r"\n(%fused_computation[^\n]*\{\n.*?\n\})", text, re.S):
    comp = re.sub(r", metadata=\{[^}]*\}", "", comp)
    bodies.add(re.sub(r"param_[\d.]+", "p", re.sub(r"%[\w.\-]+", "%", comp)))
  return len(bodies)


# ---------------------------------------------------------------- JAX runners
def jax_transform(lib: str, name: str):
  mod = jopt if lib == "jopt" else optax
  if name == "adam":
    return mod.adam(1e-3)
  if name == "adamw":
    return mod.adamw(1e-3, weight_decay=1e-2)
  if name == "sgd_momentum":
    return mod.sgd(1e-3, momentum=0.9)
  if name == "lion":
    return mod.lion(1e-4, weight_decay=1e-2)
  raise ValueError(name)


def _step_fn(tx):
  def step(p, s, g):
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s
  return step


def compile_once(fn, *args, donate=(0, 1)):
  """Trace, lower and compile ``fn`` from cold caches: (compiled, timings)."""
  jax.clear_caches()
  c0, t0 = time.process_time(), time.perf_counter()
  lowered = jax.jit(fn, donate_argnums=donate).lower(*args)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  return compiled, {"compile_s": t2 - t0, "trace_lower_s": t1 - t0, "xla_s": t2 - t1,
                    "compile_cpu_s": time.process_time() - c0}


def compile_interleaved(jobs: dict[str, tuple], rounds: int) -> tuple[dict, dict]:
  """Compile each job ``name -> (fn, args)`` ``rounds`` times, taking them in turn
  (order reversed every other round); keep each one's fastest time per phase."""
  compiled, times = {}, {k: [] for k in jobs}
  order = list(jobs)
  for r in range(rounds):
    for name in order if r % 2 == 0 else order[::-1]:
      fn, args = jobs[name]
      compiled[name], t = compile_once(fn, *args)
      times[name].append(t)
  info = {}
  for name, ts in times.items():
    info[name] = {k: min(t[k] for t in ts) for k in ts[0]}
    info[name]["compile_median_s"] = statistics.median(t["compile_s"] for t in ts)
    info[name]["compile_rounds"] = rounds
  return compiled, info


# Each implementation runs on two sets of buffers, created in the order A B B A
# (jopt, optax, optax, jopt): on this machine one set of buffers can run the same
# program ~7% faster than another for its whole life (where the allocator put it),
# which a single set per implementation turns into a false ratio.
INSTANCES = ("jopt", "optax", "optax", "jopt")


def prepare_jax_steps(name: str, params, grads, rounds: int) -> tuple[dict, dict]:
  """Compiled donated update + apply steps of jopt and optax: (runners, infos),
  runners named ``lib#i``, each on its own buffers (see INSTANCES)."""
  jobs, states = {}, {}
  for lib in JAX_LIBS:
    tx = jax_transform(lib, name)
    states[lib] = tx.init(params)
    jobs[lib] = (_step_fn(tx), (params, states[lib], grads))
  compiled, infos = compile_interleaved(jobs, rounds)
  for lib in JAX_LIBS:
    state = states[lib]
    infos[lib].update(hlo_stats(compiled[lib]))
    infos[lib]["state_bytes"] = sum(x.nbytes for x in jax.tree.leaves(state))
    infos[lib]["arrays_in"] = len(jax.tree.leaves((params, state, grads)))
  runners = {}
  for i, lib in enumerate(INSTANCES):
    c = compiled[lib]
    p = jax.tree.map(jnp.copy, params)  # donated: fresh buffers for each instance
    s = jax.tree.map(jnp.copy, states[lib])
    box = list(c(p, s, grads))
    jax.block_until_ready(box)

    def run_once(c=c, box=box):
      box[0], box[1] = c(box[0], box[1], grads)
      jax.block_until_ready(box)

    runners[f"{lib}#{i}"] = run_once
  del jobs, states
  return runners, infos


def torch_repeats(repeats: int) -> int:
  return max(5, repeats // 3)


def time_interleaved(runners: dict[str, Any], repeats: int, warmup: int = 3) -> dict[str, dict]:
  """Time one step of each runner in turn, round after round, so that every
  implementation sees the same machine (this 2-core box drifts by ~20%); each
  round starts one runner further on, so each runs in every position equally
  often. Runners named ``impl#i`` are pooled into ``impl``."""
  times: dict[str, list[float]] = {k: [] for k in runners}
  names = list(runners)
  for r in range(repeats + warmup):
    k = r % len(names)
    for name in names[k:] + names[:k]:
      t0 = time.perf_counter()
      runners[name]()
      if r >= warmup:
        times[name].append(time.perf_counter() - t0)
  pooled: dict[str, list[float]] = {}
  for name, v in times.items():
    pooled.setdefault(name.split("#")[0], []).extend(v)
  out = {k: {"median_s": statistics.median(v), "min_s": min(v)} for k, v in pooled.items()}
  for name, v in times.items():
    if "#" in name:
      out[name.split("#")[0]].setdefault("instance_median_s", []).append(statistics.median(v))
  return out


def _median_ms(fn, repeats: int) -> float:
  fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return 1e3 * statistics.median(times)


def anatomy(size: int, kind: str, repeats: int, copy_gbs: float) -> dict[str, Any]:
  """Where an Adam step's time goes on one tree (median ms): the bandwidth floor
  and the cost of passing the step's arrays through a jitted call."""
  shapes = tree_shapes(size, kind)
  params, grads = make_tree(shapes), make_tree(shapes, seed=1)
  n = count(params)
  out: dict[str, Any] = {"shape": kind, "params": n, "leaves": len(shapes),
                         "bandwidth_floor_ms": 1e3 * TRAFFIC["adam"] * 4 * n / (copy_gbs * 1e9)}
  for lib in JAX_LIBS:
    state = jax_transform(lib, "adam").init(params)
    # A step that does nothing but take and return the donated trees: the cost of
    # passing this many arrays through a jitted call.
    ident = jax.jit(lambda p, s, g: (p, s), donate_argnums=(0, 1))
    box = [jax.tree.map(jnp.copy, params), state]

    def call(box=box, ident=ident):
      box[0], box[1] = ident(box[0], box[1], grads)
      return box[0]

    out[f"call_{lib}_ms"] = _median_ms(call, repeats)
    out[f"arrays_{lib}"] = len(jax.tree.leaves((params, state, grads)))
  return out


# ---------------------------------------------------------------- torch runners
def torch_device() -> str | None:
  """Where torch runs beside JAX: the same kind of device, or nowhere (None)."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  if jax.default_backend() == "cpu":
    return "cpu"
  if jax.default_backend() == "gpu" and torch.cuda.is_available():
    return "cuda"
  return None  # e.g. a CPU-only torch build on a GPU machine: no fair comparison


def prepare_torch_step(name: str, shapes, impl: str):
  """A torch.optim step on random gradients; returns (run_once, info) or an error."""
  device = torch_device()
  if device is None:
    return None, {"error": f"no torch build for the {jax.default_backend()} backend"}
  import torch  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  params = [torch.nn.Parameter(torch.randn(s, device=device) * 0.01) for s in shapes]
  for p in params:
    p.grad = torch.randn_like(p) * 1e-3
  flags = {"foreach": True} if impl == "foreach" else {"fused": True}
  if name == "adam":
    opt = torch.optim.Adam(params, lr=1e-3, **flags)
  elif name == "adamw":
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2, **flags)
  elif name == "sgd_momentum":
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, **flags)
  else:
    return None, None  # torch has no Lion
  try:
    opt.step()
  except (RuntimeError, TypeError) as e:  # fused not implemented for this optimizer/device
    return None, {"error": str(e)[:120]}
  state_bytes = sum(t.numel() * t.element_size() for st in opt.state.values()
                    for t in st.values() if torch.is_tensor(t) and t.dim() > 0)
  if device == "cuda":
    def run_once():
      opt.step()
      torch.cuda.synchronize()
    return run_once, {"compile_s": 0.0, "state_bytes": state_bytes}
  return opt.step, {"compile_s": 0.0, "state_bytes": state_bytes}


# ---------------------------------------------------------------- MLP train step
def _mlp_job(lib: str, layers: int, width: int):
  """A whole train step (forward, backward, Adam update): (fn, args, info)."""
  rng = np.random.default_rng(0)
  params = {}
  for i in range(layers):
    params[f"w{i:03d}"] = jnp.asarray(rng.standard_normal((width, width), dtype=np.float32)
                                      / np.sqrt(width))
    params[f"b{i:03d}"] = jnp.zeros((width,), jnp.float32)
    params[f"g{i:03d}"] = jnp.ones((width,), jnp.float32)
  x = jnp.asarray(rng.standard_normal((256, width), dtype=np.float32))
  y = jnp.asarray(rng.standard_normal((256, width), dtype=np.float32))

  def loss_fn(p):
    h = x
    for i in range(layers):
      z = h @ p[f"w{i:03d}"] + p[f"b{i:03d}"]
      h = jnp.tanh(z) * p[f"g{i:03d}"] + h
    return jnp.mean((h - y) ** 2)

  tx = jax_transform(lib, "adam")

  def step(p, s):
    loss, g = jax.value_and_grad(loss_fn)(p)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s, loss

  return step, (params, tx.init(params)), {"params": count(params), "leaves": len(params)}


def prepare_mlp_steps(layers: int, width: int, rounds: int) -> tuple[dict, dict]:
  jobs, infos = {}, {}
  for lib in JAX_LIBS:
    fn, args, infos[lib] = _mlp_job(lib, layers, width)
    jobs[lib] = (fn, args)
  compiled, times = compile_interleaved(jobs, rounds)
  runners = {}
  for lib in JAX_LIBS:
    infos[lib].update(times[lib])
    infos[lib].update(hlo_stats(compiled[lib]))
    box = list(compiled[lib](*jobs[lib][1]))

    def run_once(c=compiled[lib], box=box):
      box[:] = c(box[0], box[1])
      box[2].block_until_ready()

    runners[lib] = run_once
  return runners, infos


# ---------------------------------------------------------------- 8-bit state quality
def digits_8bit(steps: int, seeds: tuple[int, ...]) -> dict[str, Any]:
  """Test accuracy of float32 Adam vs 8-bit Adam on the digits MLP (64-256-256-10)."""
  from jopt.training import train  # pylint: disable=import-outside-toplevel
  from jopt.training.data import load_digits  # pylint: disable=import-outside-toplevel
  data = load_digits()
  out: dict[str, Any] = {"steps": steps, "seeds": list(seeds), "hidden": [256, 256]}
  for name, make in (("adam", lambda: jopt.adam(1e-3)), ("adam_8bit", lambda: jopt.adam_8bit(1e-3))):
    accs = []
    for seed in seeds:
      r = train(make(), steps, seed=seed, hidden=(256, 256), data=data)
      accs.append(float(r.test_accuracy))
    out[name] = {"test_accuracy": accs, "mean": float(np.mean(accs))}
  from jopt.training.model import init_mlp  # pylint: disable=import-outside-toplevel
  params = init_mlp(jax.random.key(0), (64, 256, 256, 10))
  for name, tx in (("adam", jopt.adam(1e-3)), ("adam_8bit", jopt.adam_8bit(1e-3))):
    out[name]["state_bytes"] = sum(x.nbytes for x in jax.tree.leaves(tx.init(params)))
  out["state_ratio"] = out["adam_8bit"]["state_bytes"] / out["adam"]["state_bytes"]
  out["accuracy_gap_points"] = 100 * (out["adam"]["mean"] - out["adam_8bit"]["mean"])
  return out


# ---------------------------------------------------------------- driver
def step_row(name: str, size: int, kind: str, repeats: int, rounds: int,
             bw: dict[str, float]) -> dict[str, Any]:
  shapes = tree_shapes(size, kind)
  params = make_tree(shapes)
  grads = make_tree(shapes, seed=1)
  n = count(params)
  runners, rows = prepare_jax_steps(name, params, grads, rounds)
  for lib, t in time_interleaved(runners, repeats).items():
    rows[lib].update(t)
  del runners
  # torch.optim right after, in a phase of its own: taken in turn with XLA's
  # steps, torch's threads wait for cores that XLA's threads still spin on (on
  # this 2-core machine ~1,000-array torch steps ran 100x slower than alone).
  torch_runners = {}
  for impl in ("foreach", "fused"):
    run_once, info = prepare_torch_step(name, shapes, impl)
    if info is not None:
      rows[f"torch_{impl}"] = info
    if run_once is not None:
      torch_runners[f"torch_{impl}"] = run_once
  if torch_runners:
    for lib, t in time_interleaved(torch_runners, torch_repeats(repeats)).items():
      rows[lib].update(t)
  del torch_runners
  for r in rows.values():
    if "median_s" in r:
      gbs = TRAFFIC[name] * 4 * n / r["median_s"] / 1e9
      r["bandwidth_gbs"] = gbs
      r["frac_copy_bw"] = gbs / bw["copy_gbs"]
      r["frac_triad_bw"] = gbs / bw["triad_gbs"]
  row = {"optimizer": name, "params": n, "leaves": len(shapes), "shape": kind,
         "results": rows}
  j, o = rows["jopt"], rows["optax"]
  row["jopt_over_optax_throughput"] = o["median_s"] / j["median_s"]
  row["jopt_over_optax_throughput_min"] = o["min_s"] / j["min_s"]
  row["jopt_over_optax_compile"] = j["compile_s"] / o["compile_s"]
  row["jopt_over_optax_compile_cpu"] = j["compile_cpu_s"] / o["compile_cpu_s"]
  for impl in ("foreach", "fused"):
    t = rows.get(f"torch_{impl}", {})
    if "median_s" in t:
      row[f"jopt_over_torch_{impl}_throughput"] = t["median_s"] / j["median_s"]
  return row


def run(quick: bool, repeats: int, rounds: int, sizes=None, shapes=None,
        optimizers=None, extras: bool = True) -> dict[str, Any]:
  start = time.perf_counter()
  sizes = sizes or ([2_000_000] if quick else [10_000_000, 50_000_000])
  optimizers = optimizers or (["adam"] if quick else list(OPTIMIZERS))
  shapes = shapes or list(SHAPES)
  results: dict[str, Any] = {
      "machine": machine_info(), "bandwidth": measure_bandwidth(
          10_000_000 if quick else 50_000_000),
      "settings": {"quick": quick, "repeats": repeats, "compile_rounds": rounds,
                   "adam_compile_rounds": rounds + 1, "torch_repeats": torch_repeats(repeats)},
      "steps": [], "mlp": []}
  bw = results["bandwidth"]
  for size in sizes:
    for kind in shapes:
      for name in optimizers:
        # Adam is the headline row: one more compile round for its ratio
        row = step_row(name, size, kind, repeats, rounds + (name == "adam"), bw)
        results["steps"].append(row)
        print(_fmt_row(row), flush=True)
  if extras:
    for layers, width in ((4, 512), (150, 64)) if not quick else ((4, 128), (50, 32)):
      row: dict[str, Any] = {"layers": layers, "width": width}
      runners, infos = prepare_mlp_steps(layers, width, rounds + 1)
      row.update(infos)
      for lib, t in time_interleaved(runners, repeats).items():
        row[lib].update(t)
      del runners
      row["jopt_over_optax_throughput"] = row["optax"]["median_s"] / row["jopt"]["median_s"]
      row["jopt_over_optax_compile"] = row["jopt"]["compile_s"] / row["optax"]["compile_s"]
      results["mlp"].append(row)
      print(f"mlp {layers}x{width}: jopt {row['jopt']['median_s']*1e3:.2f} ms, optax "
            f"{row['optax']['median_s']*1e3:.2f} ms; compile {row['jopt']['compile_s']:.2f} s"
            f" vs {row['optax']['compile_s']:.2f} s", flush=True)
    results["anatomy"] = anatomy(sizes[0], "mat-120", repeats, bw["copy_gbs"])
    print("anatomy:", results["anatomy"], flush=True)
    try:
      results["digits_8bit"] = digits_8bit(300 if quick else 1500, (0,) if quick else (0, 1, 2))
      d = results["digits_8bit"]
      print(f"digits: adam {d['adam']['mean']:.4f}, adam_8bit {d['adam_8bit']['mean']:.4f}, "
            f"state ratio {d['state_ratio']:.3f}", flush=True)
    except ImportError as e:  # scikit-learn missing (e.g. a bare accelerator machine)
      print(f"digits skipped: {e}", flush=True)
  results["suite_s"] = time.perf_counter() - start
  return results


def machine_info() -> dict[str, Any]:
  try:
    import torch  # pylint: disable=import-outside-toplevel
    torch_version, torch_threads = torch.__version__, torch.get_num_threads()
  except ImportError:
    torch_version, torch_threads = "not installed", 0
  return {"platform": platform.platform(), "processor": platform.processor(),
          "cpus": os.cpu_count(), "jax": jax.__version__, "optax": optax.__version__,
          "torch": torch_version, "numpy": np.__version__, "jopt": jopt.__version__,
          "device": str(jax.devices()[0].device_kind), "backend": jax.default_backend(),
          "torch_threads": torch_threads, "torch_device": torch_device()}


def _fmt_row(row):
  r = row["results"]
  cells = [f"{row['optimizer']:>12} {row['params']/1e6:5.1f}M {row['shape']:>10}"
           f" {row['leaves']:5d} arrays"]
  for lib, v in r.items():
    if "median_s" in v:
      cells.append(f"{lib} {v['median_s']*1e3:8.2f} ms")
  j, o = r["jopt"], r["optax"]
  cells.append(f"step x{row['jopt_over_optax_throughput']:.2f}"
               f" (min x{row['jopt_over_optax_throughput_min']:.2f})")
  cells.append(f"compile {j['compile_s']:.2f}/{o['compile_s']:.2f} s")
  cells.append(f"kernels {j['kernels']}/{o['kernels']} args {j['args']}/{o['args']}")
  return " | ".join(cells)


def _params(row) -> str:
  return f"{row['params']/1e6:.1f}M"


def write_markdown(results: dict[str, Any], path: str) -> None:
  m, bw, st = results["machine"], results["bandwidth"], results["settings"]
  lines = ["# Benchmark results", "",
           "Generated by `python -m benchmarks.suite`; do not edit by hand.", "",
           f"- machine: {m['platform']}, {m['cpus']} CPUs, backend {m['backend']} ({m['device']}),"
           f" torch on {m.get('torch_device')}",
           f"- versions: jax {m['jax']}, optax {m['optax']}, torch {m['torch']}, "
           f"numpy {m['numpy']}, jopt {m['jopt']}",
           f"- measured bandwidth: copy {bw['copy_gbs']:.1f} GB/s, triad {bw['triad_gbs']:.1f} GB/s",
           f"- settings: jopt and optax timed in turn for {st['repeats']} steps each (after 3"
           f" warm-up steps), torch.optim right after for {torch_repeats(st['repeats'])};"
           f" compile time the fastest of {st['compile_rounds']} compile(s) per implementation"
           f" ({st['adam_compile_rounds']} for Adam and the MLP), taken in turn with cold"
           f" caches;"
           f" the whole suite took {results.get('suite_s', float('nan')) / 60:.1f} min",
           "", "## jopt against optax, one optimizer step (float32, buffers donated)", "",
           "`step` is optax's step time over jopt's (above 1: jopt faster), from the medians and,"
           " in brackets, from the fastest repeats (each over both buffer sets). `compile` is jopt's compile time over"
           " optax's, with both in seconds (trace + lower + XLA). `kernels` counts the loops"
           " and copies in the compiled program, `distinct` the fused loops with different"
           " bodies (XLA generates code once for equal ones), `args` the arrays it takes,"
           " `operands` the buffers its kernels read (jopt / optax each).", "",
           "| optimizer | params | shape | arrays | step jopt/optax | compile jopt/optax |"
           " kernels | distinct | args | operands |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for row in results["steps"]:
    j, o = row["results"]["jopt"], row["results"]["optax"]
    lines.append(
        f"| {row['optimizer']} | {_params(row)} | {row['shape']} | {row['leaves']} | "
        f"{row['jopt_over_optax_throughput']:.2f}x ({row['jopt_over_optax_throughput_min']:.2f}x)"
        f" | {row['jopt_over_optax_compile']:.2f}x"
        f" ({j['compile_s']:.2f} s / {o['compile_s']:.2f} s)"
        f" | {j['kernels']} / {o['kernels']} | {j['distinct_fusions']} / {o['distinct_fusions']}"
        f" | {j['args']} / {o['args']} | {j['kernel_operands']} / {o['kernel_operands']} |")
  lines += ["", "## Every implementation", "",
            "Times are medians over the repeats (min in brackets). `bw` is the bytes the step"
            " must move divided by the median time, as a fraction of the copy bandwidth."
            " Compile: trace + lower, then XLA, in seconds (fastest round). torch.optim"
            " needs no compile.", "",
            "| optimizer | params | shape | impl | step ms | bw | compile s (trace+lower, XLA)"
            " | state MB | kernels | copies |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for row in results["steps"]:
    for lib, v in row["results"].items():
      head = f"| {row['optimizer']} | {_params(row)} | {row['shape']} | {lib}"
      if "median_s" not in v:
        lines.append(f"{head} | n/a ({v.get('error', '')[:40]}) | | | | | |")
        continue
      comp = (f"{v['compile_s']:.2f} ({v['trace_lower_s']:.2f}, {v['xla_s']:.2f})"
              if "xla_s" in v else "")
      lines.append(
          f"{head} | {v['median_s']*1e3:.2f} ({v['min_s']*1e3:.2f}) | {v['frac_copy_bw']:.2f} | "
          f"{comp} | {v['state_bytes']/MB:.0f} | {v.get('kernels', '')} | "
          f"{v.get('copies', '')} |")
  lines += ["", "## Against torch.optim (same machine, same run)", "",
            "torch.optim is timed right after jopt and optax, not in turn with them: taken in"
            " turn, torch's threads waited for cores XLA's threads still held, and its"
            " ~1,000-array steps ran up to 100x slower than alone. Ratios are jopt's median"
            " over torch's; read them as rough.", "",
            "| optimizer | params | shape | jopt/torch foreach | jopt/torch fused |",
            "| --- | --- | --- | --- | --- |"]
  for row in results["steps"]:
    f1 = row.get("jopt_over_torch_foreach_throughput")
    f2 = row.get("jopt_over_torch_fused_throughput")
    if f1 is None and f2 is None:
      continue
    cell = lambda x: "n/a" if x is None else f"{x:.2f}x"  # noqa: E731
    lines.append(f"| {row['optimizer']} | {_params(row)} | {row['shape']} | {cell(f1)} |"
                 f" {cell(f2)} |")
  if results["mlp"]:
    lines += ["", "## Whole train step of an MLP (loss + grad + Adam update, one jit)", "",
              "| layers x width | arrays | params | jopt ms | optax ms | jopt/optax throughput |"
              " jopt compile s | optax compile s | kernels | args |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in results["mlp"]:
      j, o = row["jopt"], row["optax"]
      lines.append(f"| {row['layers']}x{row['width']} | {j['leaves']} | {j['params']/1e6:.2f}M | "
                   f"{j['median_s']*1e3:.2f} | {o['median_s']*1e3:.2f} | "
                   f"{row['jopt_over_optax_throughput']:.2f}x | {j['compile_s']:.2f} | "
                   f"{o['compile_s']:.2f} | {j['kernels']} / {o['kernels']} |"
                   f" {j['args']} / {o['args']} |")
  a = results.get("anatomy")
  if a:
    lines += ["", f"## Where the time goes (Adam, {a['shape']} tree)", "",
              f"{a['params']/1e6:.1f}M parameters in {a['leaves']} arrays; medians in ms.", "",
              "| what | ms |", "| --- | --- |",
              f"| bytes Adam must move (7 x 4 B x params) at copy bandwidth | "
              f"{a['bandwidth_floor_ms']:.2f} |"]
    for lib in JAX_LIBS:
      lines.append(f"| passing the step's {a[f'arrays_{lib}']} arrays through a jitted call, "
                   f"no work ({lib} state) | {a[f'call_{lib}_ms']:.2f} |")
  d = results.get("digits_8bit")
  if d:
    lines += ["", "## 8-bit Adam on the digits classifier", "",
              f"MLP 64-256-256-10, {d['steps']} steps, lr 1e-3, seeds {d['seeds']}; test accuracy"
              " per seed and mean; optimizer-state bytes.", "",
              "| optimizer | test accuracy | mean | state bytes |", "| --- | --- | --- | --- |"]
    for name in ("adam", "adam_8bit"):
      accs = ", ".join(f"{100 * a:.2f}%" for a in d[name]["test_accuracy"])
      lines.append(f"| {name} | {accs} | {100 * d[name]['mean']:.2f}% | {d[name]['state_bytes']:,} |")
    lines += ["", f"State ratio 8-bit / float32: {d['state_ratio']:.3f}; accuracy gap"
              f" {d['accuracy_gap_points']:+.2f} points (positive: float32 ahead)."]
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def _csv(kind):
  return lambda s: [kind(x) for x in s.split(",")]


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
  ap.add_argument("--repeats", type=int, default=None,
                  help="timed steps per implementation (default 30; 10 with --quick)")
  ap.add_argument("--compile-rounds", type=int, default=1,
                  help="compiles per implementation, fastest kept; Adam gets one more")
  ap.add_argument("--sizes", type=_csv(lambda x: int(float(x))), default=None,
                  help="comma-separated parameter counts, e.g. 10e6,50e6")
  ap.add_argument("--shapes", type=_csv(str), default=None, help=f"of {','.join(SHAPES)}")
  ap.add_argument("--optimizers", type=_csv(str), default=None, help=f"of {','.join(OPTIMIZERS)}")
  ap.add_argument("--no-extras", action="store_true",
                  help="skip the MLP train step, the anatomy and the digits run")
  ap.add_argument("--out", default="benchmarks/results.json")
  ap.add_argument("--markdown", default="benchmarks/RESULTS.md")
  args = ap.parse_args(argv)
  for s in args.shapes or ():
    if s not in SHAPES:
      ap.error(f"unknown shape {s!r}; choose from {', '.join(SHAPES)}")
  for o in args.optimizers or ():
    if o not in OPTIMIZERS:
      ap.error(f"unknown optimizer {o!r}; choose from {', '.join(OPTIMIZERS)}")
  repeats = args.repeats or (10 if args.quick else 30)
  rounds = args.compile_rounds
  results = run(args.quick, repeats, rounds, args.sizes, args.shapes,
                args.optimizers, extras=not args.no_extras)
  with open(args.out, "w") as f:
    json.dump(results, f, indent=1)
  write_markdown(results, args.markdown)
  print(f"wrote {args.out} and {args.markdown} ({results['suite_s'] / 60:.1f} min)")


if __name__ == "__main__":
  main()
