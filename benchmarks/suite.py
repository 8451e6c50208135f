"""Optimizer-step benchmark: jopt vs optax vs torch.optim in one process.

Run:  python -m benchmarks.suite [--quick] [--out benchmarks/results.json]

For each optimizer (adam, adamw, sgd+momentum, lion), size (10M, 50M params) and
tree shape ("few-large": 4 arrays; "many-small": ~1,000 arrays of mixed 1-D and
2-D shapes) it measures, after warm-up, the median and min time of one update
step with buffers donated, the compile time of the first step, the effective
bandwidth (bytes the step must move / time) as a fraction of this machine's
measured copy and triad bandwidth, and the optimizer-state bytes. It also times a
whole train step (loss + grad + update in one jit) of an MLP with few and with many
parameter arrays. Results go to JSON and to ``benchmarks/RESULTS.md``.

Benchmarks measure; tests assert behaviour. Nothing here is a pass/fail threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jopt
from jopt._core import flat
from jopt._core.flat import layout_override

MB = 1 << 20
# bytes moved per parameter, float32: Adam/AdamW read p, g, m, v and write p, m, v.
TRAFFIC = {"adam": 7, "adamw": 7, "sgd_momentum": 5, "lion": 5}


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
  """Parameter shapes summing to about ``total`` elements."""
  if kind == "few-large":
    q = total // 4
    side = int(np.sqrt(q))
    return [(side, q // side)] * 2 + [(q,)] * 2
  # many-small: ~1,000 arrays like a deep network: per block a matrix, a bias, a norm scale
  shapes: list[tuple[int, ...]] = []
  blocks = 333
  per_block = total // blocks
  width = int(np.sqrt(per_block))
  for _ in range(blocks):
    shapes += [(width, per_block // width - 2), (width,), (width,)]
  return shapes


def make_tree(shapes, seed=0):
  rng = np.random.default_rng(seed)
  return {f"p{i:04d}": jnp.asarray(rng.standard_normal(s, dtype=np.float32) * 0.01)
          for i, s in enumerate(shapes)}


def count(tree) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))


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


def prepare_jax_step(tx, params, grads):
  """Compile one donated update + apply step; returns (run_once, info)."""
  def step(p, s, g):
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  jstep = jax.jit(step, donate_argnums=(0, 1))
  params = jax.tree.map(jnp.copy, params)  # donated below: keep the caller's arrays alive
  state = tx.init(params)
  info = {"state_bytes": sum(x.nbytes for x in jax.tree.leaves(state)),
          "arrays_in": len(jax.tree.leaves((params, state, grads)))}
  t0 = time.perf_counter()
  compiled = jstep.lower(params, state, grads).compile()
  info["compile_s"] = time.perf_counter() - t0
  info["kernels"] = count_kernels(compiled)
  box = list(compiled(params, state, grads))
  jax.block_until_ready(box)

  def run_once():
    box[0], box[1] = compiled(box[0], box[1], grads)
    jax.block_until_ready(box)

  return run_once, info


def time_interleaved(runners: dict[str, Any], repeats: int, warmup: int = 3) -> dict[str, dict]:
  """Time one step of each runner in turn, round after round, so that every
  implementation sees the same machine (this 2-core box drifts by ~20%)."""
  times: dict[str, list[float]] = {k: [] for k in runners}
  order = list(runners)
  for r in range(repeats + warmup):
    for name in order if r % 2 == 0 else order[::-1]:
      t0 = time.perf_counter()
      runners[name]()
      if r >= warmup:
        times[name].append(time.perf_counter() - t0)
  return {k: {"median_s": statistics.median(v), "min_s": min(v)} for k, v in times.items()}


def count_kernels(compiled) -> int:
  """Loop kernels (fusions) in the compiled program's entry computation."""
  text = compiled.as_text()
  entry = text[text.index("\nENTRY"):]
  return entry.count(" fusion(")


def _median_ms(fn, repeats: int) -> float:
  fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return 1e3 * statistics.median(times)


def anatomy(size: int, repeats: int, copy_gbs: float) -> dict[str, float]:
  """Where an Adam step's time goes on the many-small tree (median ms)."""
  shapes = tree_shapes(size, "many-small")
  params, grads = make_tree(shapes), make_tree(shapes, seed=1)
  n = count(params)
  out: dict[str, float] = {"params": n, "leaves": len(shapes),
                           "bandwidth_floor_ms": 1e3 * TRAFFIC["adam"] * 4 * n / (copy_gbs * 1e9)}
  for label, lib, mode in (("optax", "optax", None), ("jopt", "jopt", None),
                           ("jopt_per_leaf", "jopt", "per_leaf")):
    with layout_override(mode):
      state = jax_transform(lib, "adam").init(params)
    # A step that does nothing but take and return the donated trees: the cost of
    # passing this many arrays through a jitted call.
    ident = jax.jit(lambda p, s, g: (p, s), donate_argnums=(0, 1))
    box = [jax.tree.map(jnp.copy, params), state]

    def call(box=box, ident=ident):
      box[0], box[1] = ident(box[0], box[1], grads)
      return box[0]

    out[f"call_{label}_ms"] = _median_ms(call, repeats)
    out[f"arrays_{label}"] = len(jax.tree.leaves((params, state, grads)))
  small = [x for x in jax.tree.leaves(grads) if x.size <= flat.SMALL]
  chunks = [small[i:i + flat.MAX_LEAVES] for i in range(0, len(small), flat.MAX_LEAVES)]
  cat_small = jax.jit(lambda xs: [jnp.concatenate([x.ravel() for x in c]) for c in xs])
  cat_all = jax.jit(lambda xs: jnp.concatenate([x.ravel() for x in xs]))
  out["concat_small_ms"] = _median_ms(lambda: cat_small(chunks), repeats)
  out["small_leaves"] = len(small)
  out["concat_all_ms"] = _median_ms(lambda: cat_all(jax.tree.leaves(grads)), repeats)
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
def prepare_mlp_step(lib: str, layers: int, width: int):
  """A whole jitted train step (forward, backward, Adam update); (run_once, info)."""
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

  jstep = jax.jit(step, donate_argnums=(0, 1))
  state = tx.init(params)
  info = {"params": count(params), "leaves": len(params)}
  t0 = time.perf_counter()
  compiled = jstep.lower(params, state).compile()
  info["compile_s"] = time.perf_counter() - t0
  box = list(compiled(params, state))

  def run_once():
    box[:] = compiled(box[0], box[1])
    box[2].block_until_ready()

  return run_once, info


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
def run(quick: bool, repeats: int) -> dict[str, Any]:
  sizes = [2_000_000] if quick else [10_000_000, 50_000_000]
  optimizers = ["adam"] if quick else ["adam", "adamw", "sgd_momentum", "lion"]
  results: dict[str, Any] = {"machine": machine_info(), "bandwidth": measure_bandwidth(
      10_000_000 if quick else 50_000_000), "steps": [], "mlp": []}
  bw = results["bandwidth"]
  for size in sizes:
    for kind in ("few-large", "many-small"):
      shapes = tree_shapes(size, kind)
      params = make_tree(shapes)
      grads = make_tree(shapes, seed=1)
      n = count(params)
      for name in optimizers:
        runners, rows = {}, {}
        for lib in ("jopt", "optax"):
          runners[lib], rows[lib] = prepare_jax_step(jax_transform(lib, name), params, grads)
        if name == "adam":  # the engine's effect: jopt with per-leaf state
          with layout_override("per_leaf"):  # the layout is chosen at init
            runners["jopt_per_leaf"], rows["jopt_per_leaf"] = prepare_jax_step(
                jax_transform("jopt", name), params, grads)
        for impl in ("foreach", "fused"):
          run_once, info = prepare_torch_step(name, shapes, impl)
          if info is not None:
            rows[f"torch_{impl}"] = info
          if run_once is not None:
            runners[f"torch_{impl}"] = run_once
        for lib, t in time_interleaved(runners, repeats).items():
          rows[lib].update(t)
        del runners
        for lib, r in rows.items():
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
        for impl in ("foreach", "fused"):
          t = rows.get(f"torch_{impl}", {})
          if "median_s" in t:
            row[f"jopt_over_torch_{impl}_throughput"] = t["median_s"] / j["median_s"]
        results["steps"].append(row)
        print(_fmt_row(row), flush=True)
      del params, grads
  for layers, width in ((4, 512), (150, 64)) if not quick else ((4, 128), (50, 32)):
    row: dict[str, Any] = {"layers": layers, "width": width}
    runners = {}
    for lib in ("jopt", "optax"):
      runners[lib], row[lib] = prepare_mlp_step(lib, layers, width)
    for lib, t in time_interleaved(runners, repeats).items():
      row[lib].update(t)
    del runners
    row["jopt_over_optax_throughput"] = row["optax"]["median_s"] / row["jopt"]["median_s"]
    row["jopt_over_optax_compile"] = row["jopt"]["compile_s"] / row["optax"]["compile_s"]
    results["mlp"].append(row)
    print(f"mlp {layers}x{width}: jopt {row['jopt']['median_s']*1e3:.2f} ms, optax "
          f"{row['optax']['median_s']*1e3:.2f} ms", flush=True)
  results["anatomy"] = anatomy(sizes[0], repeats, bw["copy_gbs"])
  print("anatomy:", {k: round(v, 2) for k, v in results["anatomy"].items()}, flush=True)
  try:
    results["digits_8bit"] = digits_8bit(300 if quick else 1500, (0,) if quick else (0, 1, 2))
  except ImportError as e:  # scikit-learn missing (e.g. a bare accelerator machine)
    print(f"digits skipped: {e}", flush=True)
    return results
  d = results["digits_8bit"]
  print(f"digits: adam {d['adam']['mean']:.4f}, adam_8bit {d['adam_8bit']['mean']:.4f}, "
        f"state ratio {d['state_ratio']:.3f}", flush=True)
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
  cells = [f"{row['optimizer']:>12} {row['params']/1e6:5.1f}M {row['shape']:>10}"]
  for lib, v in r.items():
    if "median_s" in v:
      cells.append(f"{lib} {v['median_s']*1e3:8.2f} ms")
  return " | ".join(cells)


def write_markdown(results: dict[str, Any], path: str) -> None:
  m, bw = results["machine"], results["bandwidth"]
  lines = ["# Benchmark results", "",
           "Generated by `python -m benchmarks.suite`; do not edit by hand.", "",
           f"- machine: {m['platform']}, {m['cpus']} CPUs, backend {m['backend']} ({m['device']}),"
           f" torch on {m.get('torch_device')}",
           f"- versions: jax {m['jax']}, optax {m['optax']}, torch {m['torch']}, "
           f"numpy {m['numpy']}, jopt {m['jopt']}",
           f"- measured bandwidth: copy {bw['copy_gbs']:.1f} GB/s, triad {bw['triad_gbs']:.1f} GB/s",
           "", "## One optimizer step (float32, buffers donated)", "",
           "Times are medians over the repeats (min in brackets). `bw` is the bytes the step"
           " must move divided by the median time, as a fraction of the copy bandwidth.", "",
           "`kernels` counts the loops XLA compiled; `args` the arrays the jitted step takes.", "",
           "| optimizer | params | arrays | impl | step ms | bw | compile s | state MB | kernels |"
           " args |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for row in results["steps"]:
    for lib, v in row["results"].items():
      if "median_s" not in v:
        lines.append(f"| {row['optimizer']} | {row['params']/1e6:.1f}M | {row['leaves']} | {lib}"
                     f" | n/a ({v.get('error', '')[:40]}) | | | | | |")
        continue
      lines.append(
          f"| {row['optimizer']} | {row['params']/1e6:.1f}M | {row['leaves']} | {lib} | "
          f"{v['median_s']*1e3:.2f} ({v['min_s']*1e3:.2f}) | {v['frac_copy_bw']:.2f} | "
          f"{v['compile_s']:.2f} | {v['state_bytes']/MB:.0f} | {v.get('kernels', '')} | "
          f"{v.get('arrays_in', '')} |")
  lines += ["", "## Ratios (higher throughput ratio = jopt faster)", "",
            "Throughput ratios from medians, and from the fastest repeat in brackets (this"
            " 2-core machine is noisy: medians of the same run vary by about 20%).", "",
            "| optimizer | params | arrays | jopt/optax throughput | jopt/optax compile time |"
            " jopt/torch foreach | jopt/torch fused |", "| --- | --- | --- | --- | --- | --- | --- |"]
  for row in results["steps"]:
    lines.append(
        f"| {row['optimizer']} | {row['params']/1e6:.1f}M | {row['leaves']} | "
        f"{row['jopt_over_optax_throughput']:.2f}x "
        f"({row.get('jopt_over_optax_throughput_min', float('nan')):.2f}x) | "
        f"{row['jopt_over_optax_compile']:.2f}x | "
        f"{row.get('jopt_over_torch_foreach_throughput', float('nan')):.2f}x | "
        f"{row.get('jopt_over_torch_fused_throughput', float('nan')):.2f}x |")
  lines += ["", "## Whole train step of an MLP (loss + grad + Adam update, one jit)", "",
            "| layers x width | arrays | params | jopt ms | optax ms | jopt/optax throughput |"
            " jopt compile s | optax compile s |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for row in results["mlp"]:
    j, o = row["jopt"], row["optax"]
    lines.append(f"| {row['layers']}x{row['width']} | {j['leaves']} | {j['params']/1e6:.2f}M | "
                 f"{j['median_s']*1e3:.2f} | {o['median_s']*1e3:.2f} | "
                 f"{row['jopt_over_optax_throughput']:.2f}x | {j['compile_s']:.2f} | "
                 f"{o['compile_s']:.2f} |")
  a = results.get("anatomy")
  if a:
    lines += ["", "## Where the time goes (Adam, many-small tree)", "",
              f"{a['params']/1e6:.1f}M parameters in {a['leaves']} arrays; medians in ms.", "",
              "| what | ms |", "| --- | --- |",
              f"| bytes Adam must move (7 x 4 B x params) at copy bandwidth | "
              f"{a['bandwidth_floor_ms']:.2f} |"]
    for label in ("optax", "jopt", "jopt_per_leaf"):
      lines.append(f"| passing the step's {a[f'arrays_{label}']} arrays through a jitted call, "
                   f"no work ({label} state) | {a[f'call_{label}_ms']:.2f} |")
    lines += [f"| concatenating the {a['small_leaves']} small gradients in groups of "
              f"{flat.MAX_LEAVES} (jopt's flat engine) | {a['concat_small_ms']:.2f} |",
              f"| concatenating all {a['leaves']} gradients into one buffer (fresh output) | "
              f"{a['concat_all_ms']:.2f} |"]
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


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
  ap.add_argument("--repeats", type=int, default=30)
  ap.add_argument("--out", default="benchmarks/results.json")
  ap.add_argument("--markdown", default="benchmarks/RESULTS.md")
  args = ap.parse_args(argv)
  results = run(args.quick, args.repeats)
  with open(args.out, "w") as f:
    json.dump(results, f, indent=1)
  write_markdown(results, args.markdown)
  print(f"wrote {args.out} and {args.markdown}")


if __name__ == "__main__":
  main()
