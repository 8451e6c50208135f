"""Augmentation throughput: jitted batched pipelines against per-image Python loops.

Run:  python -m benchmarks.augment [--quick] [--out benchmarks/augment.json]
                                   [--markdown benchmarks/AUGMENT.md]

For each pipeline (a CIFAR-style one: flip, padded crop, color jitter, cutout;
and RandAugment N=2, M=9) on a batch of 256 32x32x3 float32 images it times,
in one run:

* ``batched``: the whole batch through one jitted call with one key;
* ``jit loop``: a Python loop over the images, each through a jitted
  single-image function (the same ops on a batch of one, one key each);
* ``eager loop``: the same loop without ``jit`` (op-by-op dispatch), over a
  subset of the images because it is slow;

and reports images/s from the medians of several repeats, the ratios
batched / loop, and each program's compile time separately (trace + lower +
XLA, from cold caches; never inside a timed repeat). The batched and jit-loop
repeats are taken in turn, so their ratio compares the same minutes of this
shared machine. It also times every op alone (batched, jitted) and the affine
warp through jopt's sampler against dm-pix's ``affine_transform`` with the
same matrices, the measurement behind ``random_affine``'s own sampler.
Benchmarks measure; tests assert behaviour. Nothing here is a pass/fail
threshold.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import statistics
import time
from typing import Any, Callable

import dm_pix as pix
import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

import jopt
import jopt.augment as aug
from jopt.augment import geometric as geo

P = functools.partial


def pipelines() -> dict[str, tuple[str, Callable[..., jax.Array]]]:
  """name -> (description, op(images, *, key))."""
  return {
      "cifar": ("flip LR + random crop (pad 4) + color jitter (0.4, 0.4, 0.4, 0.1) + cutout 8",
                aug.sequence(aug.random_flip_left_right, P(aug.random_crop, padding=4),
                             P(aug.color_jitter, brightness=0.4, contrast=0.4, saturation=0.4,
                               hue=0.1),
                             P(aug.cutout, size=8))),
      "rand_augment": ("rand_augment(num_ops=2, magnitude=9)", aug.rand_augment(2, 9)),
  }


def single_ops() -> dict[str, Callable[..., jax.Array]]:
  return {
      "random_flip_left_right": aug.random_flip_left_right,
      "random_flip_up_down": aug.random_flip_up_down,
      "random_crop(padding=4)": P(aug.random_crop, padding=4),
      "random_resized_crop(size=32)": P(aug.random_resized_crop, size=32),
      "random_affine(15, 0.1, (0.9, 1.1), 10)": P(aug.random_affine, degrees=15,
                                                  translate=(0.1, 0.1), scale=(0.9, 1.1),
                                                  shear=10),
      "random_brightness(0.4)": P(aug.random_brightness, max_delta=0.4),
      "random_contrast(0.4)": P(aug.random_contrast, strength=0.4),
      "random_saturation(0.4)": P(aug.random_saturation, strength=0.4),
      "random_hue(0.1)": P(aug.random_hue, max_delta=0.1),
      "color_jitter (random order)": P(aug.color_jitter, brightness=0.4, contrast=0.4,
                                       saturation=0.4, hue=0.1),
      "color_jitter (fixed order)": P(aug.color_jitter, brightness=0.4, contrast=0.4,
                                      saturation=0.4, hue=0.1, random_order=False),
      "gaussian_noise(0.05)": P(aug.gaussian_noise, std=0.05),
      "cutout(8)": P(aug.cutout, size=8),
      "random_erasing(p=0.5)": aug.random_erasing,
      "rand_augment(2, 9)": aug.rand_augment(2, 9),
  }


def pix_random_affine(images, *, key, degrees=15.0, fill=0.0):
  """random_affine's draws and matrices, warped by ``pix.affine_transform`` instead
  (constant mode), for the sampler comparison."""
  n, h, w, _ = images.shape
  keys = jax.random.split(key, n)

  def one(k, x):
    u = jax.random.uniform(k, (6,))
    theta = (-degrees + 2 * degrees * u[0]) * (math.pi / 180)
    a = geo.affine_matrix(theta, 1.0, jnp.zeros(()), jnp.zeros(()))
    rr, rc, cr, cc, off_r, off_c = geo.pull_coefficients(a, jnp.zeros(2), h, w, jnp.float32)
    z, o = jnp.zeros(()), jnp.ones(())
    mat = jnp.stack([jnp.stack([rr, rc, z, off_r]), jnp.stack([cr, cc, z, off_c]),
                     jnp.stack([z, z, o, z])])
    with jax.numpy_dtype_promotion("standard"), jax.default_matmul_precision("highest"):
      return pix.affine_transform(x, mat, mode="constant", cval=fill).astype(x.dtype)

  return jax.vmap(one)(keys, images)


# ---------------------------------------------------------------- timing
def _compile(fn, *args) -> tuple[Any, float]:
  """(compiled, seconds) for ``jax.jit(fn)`` from cold caches."""
  jax.clear_caches()
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  return compiled, time.perf_counter() - t0


def _stats(times: list[float], images: int) -> dict[str, float]:
  med = statistics.median(times)
  return {"median_s": med, "min_s": min(times), "images_per_s": images / med,
          "repeats": len(times)}


def _block(x):
  return jax.block_until_ready(x)


def measure_pipeline(op, images, key, repeats: int, eager_images: int) -> dict[str, Any]:
  """Batched, jit-loop and eager-loop throughput of ``op`` on ``images``."""
  n = images.shape[0]
  keys = jax.random.split(key, n)
  batched, batched_c = _compile(lambda x, k: op(x, key=k), images, key)
  single, single_c = _compile(lambda x, k: op(x[None], key=k[None])[0], images[0], keys[0])
  _block(batched(images, key))
  _block([single(images[i], keys[i]) for i in range(n)])
  t_batch, t_loop = [], []
  for r in range(repeats):  # in turn: both see the same minutes of the machine
    k = jax.random.fold_in(key, r)
    t0 = time.perf_counter()
    _block(batched(images, k))
    t_batch.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    _block([single(images[i], keys[i]) for i in range(n)])
    t_loop.append(time.perf_counter() - t0)
  m = max(1, min(eager_images, n))
  _block(op(images[:1], key=keys[:1]))  # warm the per-primitive caches
  t_eager = []
  for _ in range(max(1, repeats // 3)):
    t0 = time.perf_counter()
    _block([op(images[i:i + 1], key=keys[i:i + 1]) for i in range(m)])
    t_eager.append(time.perf_counter() - t0)
  res = {"batched": dict(_stats(t_batch, n), compile_s=batched_c),
         "jit_loop": dict(_stats(t_loop, n), compile_s=single_c),
         "eager_loop": dict(_stats(t_eager, m), images_timed=m)}
  res["batched_over_jit_loop"] = (res["batched"]["images_per_s"]
                                  / res["jit_loop"]["images_per_s"])
  res["batched_over_eager_loop"] = (res["batched"]["images_per_s"]
                                    / res["eager_loop"]["images_per_s"])
  return res


def measure_batched(fns: dict[str, Callable[..., jax.Array]], images, key, repeats: int
                    ) -> list[dict[str, Any]]:
  """Each op alone, jitted on the whole batch: compile time and images/s, timed in turn."""
  compiled, rows = {}, []
  for name, f in fns.items():
    compiled[name], c = _compile(lambda x, k, f=f: f(x, key=k), images, key)
    _block(compiled[name](images, key))
    rows.append({"op": name, "compile_s": c, "times": []})
  for r in range(repeats):
    k = jax.random.fold_in(key, r)
    for row in rows:
      t0 = time.perf_counter()
      _block(compiled[row["op"]](images, k))
      row["times"].append(time.perf_counter() - t0)
  for row in rows:
    row.update(_stats(row.pop("times"), images.shape[0]))
  return rows


def machine_info() -> dict[str, Any]:
  return {"platform": platform.platform(), "processor": platform.processor(),
          "cpus": os.cpu_count(), "python": platform.python_version(),
          "jax": jax.__version__, "jaxlib": jaxlib.__version__, "dm_pix": pix.__version__,
          "numpy": np.__version__,
          "jopt": jopt.__version__, "backend": jax.default_backend(),
          "device": str(jax.devices()[0].device_kind), "devices": jax.device_count()}


def measure(quick: bool = False, batch: int | None = None, size: int = 32,
            repeats: int | None = None, eager_images: int | None = None,
            op_names: list[str] | None = None) -> dict[str, Any]:
  """Run every measurement; returns the results as a JSON-ready dict."""
  start = time.perf_counter()
  batch = batch or (64 if quick else 256)
  repeats = repeats or (3 if quick else 9)
  eager_images = eager_images or (2 if quick else 8)
  images = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (batch, size, size, 3)),
                       jnp.float32)
  key = jax.random.key(0)
  results: dict[str, Any] = {
      "machine": machine_info(),
      "settings": {"batch": batch, "image": [size, size, 3], "dtype": "float32",
                   "repeats": repeats, "eager_images": eager_images, "quick": quick},
      "pipelines": [], "ops": [], "affine_sampler": {}}
  for name, (desc, op) in pipelines().items():
    row = {"pipeline": name, "description": desc}
    row.update(measure_pipeline(op, images, key, repeats, eager_images))
    results["pipelines"].append(row)
    print(f"{name}: batched {row['batched']['images_per_s']:,.0f} img/s, jit loop"
          f" {row['jit_loop']['images_per_s']:,.0f} img/s (x{row['batched_over_jit_loop']:.1f}),"
          f" eager loop {row['eager_loop']['images_per_s']:,.1f} img/s"
          f" (x{row['batched_over_eager_loop']:.0f})", flush=True)
  ops = single_ops()
  if op_names is not None:
    ops = {k: v for k, v in ops.items() if k in op_names}
  elif quick:
    ops = {k: ops[k] for k in list(ops)[:3]}
  results["ops"] = measure_batched(ops, images, key, repeats)
  for row in results["ops"]:
    print(f"  {row['op']}: {row['images_per_s']:,.0f} img/s, compile {row['compile_s']:.2f} s",
          flush=True)
  both = measure_batched({"jopt": P(aug.random_affine, degrees=15.0),
                          "dm-pix affine_transform": pix_random_affine}, images, key, repeats)
  results["affine_sampler"] = {"jopt": both[0], "pix": both[1],
                               "jopt_over_pix": both[0]["images_per_s"] / both[1]["images_per_s"]}
  print(f"affine sampler: jopt x{results['affine_sampler']['jopt_over_pix']:.0f} dm-pix",
        flush=True)
  results["total_s"] = time.perf_counter() - start
  return results


def write_markdown(results: dict[str, Any], path: str) -> None:
  m, st = results["machine"], results["settings"]
  b, (h, w, c) = st["batch"], st["image"]
  lines = ["# Augmentation benchmark", "",
           "Generated by `python -m benchmarks.augment`; do not edit by hand.", "",
           f"- machine: {m['platform']}, {m['cpus']} CPUs, backend {m['backend']}"
           f" ({m['device']}, {m['devices']} devices)",
           f"- versions: jax {m['jax']} (jaxlib {m['jaxlib']}), dm-pix {m['dm_pix']},"
           f" numpy {m['numpy']},"
           f" jopt {m['jopt']}, Python {m['python']}",
           f"- settings: batch {b} of {h}x{w}x{c} {st['dtype']} images; medians of"
           f" {st['repeats']} repeats (batched and jit loop in turn), eager loop over"
           f" {st['eager_images']} images; compile time from cold caches, excluded from"
           f" the timings; {'quick run; ' if st['quick'] else ''}the whole run took"
           f" {results['total_s']:.0f} s", "",
           "## Batched pipeline against per-image loops", "",
           "`batched`: the whole batch in one jitted call. `jit loop`: a Python loop calling"
           " a jitted single-image function (the same ops on a batch of one). `eager loop`:"
           " the same loop without jit. Ratios are batched images/s over the loop's.", "",
           "| pipeline | batched img/s | jit loop img/s | eager loop img/s | batched / jit loop"
           " | batched / eager loop | compile s (batched, single) |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
  for r in results["pipelines"]:
    lines.append(
        f"| {r['pipeline']}: {r['description']} | {r['batched']['images_per_s']:,.0f} |"
        f" {r['jit_loop']['images_per_s']:,.0f} | {r['eager_loop']['images_per_s']:,.1f} |"
        f" {r['batched_over_jit_loop']:.1f}x | {r['batched_over_eager_loop']:,.0f}x |"
        f" {r['batched']['compile_s']:.2f}, {r['jit_loop']['compile_s']:.2f} |")
  lines += ["", "## Each op alone (batched, jitted)", "",
            "| op | img/s | ms per batch (median, min) | compile s |", "| --- | --- | --- | --- |"]
  for r in results["ops"]:
    lines.append(f"| {r['op']} | {r['images_per_s']:,.0f} | {r['median_s'] * 1e3:.2f},"
                 f" {r['min_s'] * 1e3:.2f} | {r['compile_s']:.2f} |")
  a = results["affine_sampler"]
  lines += ["", "## The affine sampler: jopt's against dm-pix's `affine_transform`", "",
            "`random_affine(degrees=15)`'s draws and matrices, warped by jopt's 4-tap"
            " bilinear gather and by `pix.affine_transform` (8-tap interpolation over the"
            " (H, W, C) volume) under `jax.vmap`; the two agree to float rounding"
            " (tests/test_augment_geometric.py).", "",
            "| sampler | img/s | ms per batch | compile s |", "| --- | --- | --- | --- |",
            f"| jopt | {a['jopt']['images_per_s']:,.0f} | {a['jopt']['median_s'] * 1e3:.2f} |"
            f" {a['jopt']['compile_s']:.2f} |",
            f"| dm-pix | {a['pix']['images_per_s']:,.0f} | {a['pix']['median_s'] * 1e3:.2f} |"
            f" {a['pix']['compile_s']:.2f} |",
            "", f"jopt's sampler: {a['jopt_over_pix']:.0f}x dm-pix's throughput."]
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--quick", action="store_true", help="batch 64, 3 repeats, 3 single ops")
  ap.add_argument("--batch", type=int, default=None, help="images per batch (default 256)")
  ap.add_argument("--repeats", type=int, default=None, help="timed repeats (default 9)")
  ap.add_argument("--out", default="benchmarks/augment.json")
  ap.add_argument("--markdown", default="benchmarks/AUGMENT.md")
  args = ap.parse_args(argv)
  results = measure(args.quick, args.batch, repeats=args.repeats)
  with open(args.out, "w") as f:
    json.dump(results, f, indent=1)
  write_markdown(results, args.markdown)
  print(f"wrote {args.out} and {args.markdown} ({results['total_s']:.0f} s)")


if __name__ == "__main__":
  main()
