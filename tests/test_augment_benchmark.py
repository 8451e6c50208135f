"""Smoke test of benchmarks/augment.py: the measuring function runs and reports its fields."""

from __future__ import annotations

import json

import pytest

from benchmarks import augment as bench


@pytest.mark.slow
def test_measure_quick_on_a_tiny_batch_reports_every_field(tmp_path):
  res = bench.measure(quick=True, batch=4, size=8, repeats=1, eager_images=1,
                      op_names=["random_flip_left_right", "cutout(8)"])
  assert set(res) == {"machine", "settings", "pipelines", "ops", "affine_sampler", "total_s"}
  assert {"platform", "cpus", "jax", "dm_pix", "backend", "device"} <= set(res["machine"])
  assert res["settings"]["batch"] == 4 and res["settings"]["image"] == [8, 8, 3]
  assert [p["pipeline"] for p in res["pipelines"]] == ["cifar", "rand_augment"]
  for p in res["pipelines"]:
    for kind in ("batched", "jit_loop", "eager_loop"):
      assert p[kind]["images_per_s"] > 0 and p[kind]["median_s"] > 0
    assert p["batched"]["compile_s"] > 0 and p["jit_loop"]["compile_s"] > 0
    assert p["eager_loop"]["images_timed"] == 1
    assert p["batched_over_jit_loop"] > 0 and p["batched_over_eager_loop"] > 0
  assert [r["op"] for r in res["ops"]] == ["random_flip_left_right", "cutout(8)"]
  assert all(r["images_per_s"] > 0 and r["compile_s"] > 0 for r in res["ops"])
  assert res["affine_sampler"]["jopt_over_pix"] > 0
  json.dumps(res)  # JSON-ready
  md = tmp_path / "AUGMENT.md"
  bench.write_markdown(res, str(md))
  text = md.read_text()
  assert "| cifar:" in text and "| rand_augment:" in text and "cutout(8)" in text
