"""Smoke test of benchmarks/distillation.py: the quick run writes a table the JSON backs up."""

from __future__ import annotations

import json
import pathlib
import statistics
import subprocess
import sys

import pytest

from tests.tables import cells as _cells

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_run_writes_a_table_consistent_with_its_json(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "benchmarks.distillation", "--quick", "--out",
                         str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  res = json.loads((tmp_path / "distillation.json").read_text())
  md = (tmp_path / "DISTILLATION.md").read_text()
  assert res["quick"] is True and res["seconds"] > 0
  assert {"cpu", "jax", "optax", "jopt", "backend"} <= set(res["machine"])
  assert res["translation_matches_random_crop"] is True
  n_test, n_val = res["sizes"]["test"], res["sizes"]["val"]
  seeds = res["settings"]["final_seeds"]

  # every final row: its runs are integer error counts on the test split; mean and std match
  f = res["final"]
  for key in ("teacher", "ensemble", "alone", "alone_plain", "distilled", "naive_a0.1",
              "naive_a0.9"):
    e = f[key]["test_errors"]
    assert len(e["runs"]) == len(seeds)
    assert all(float(v).is_integer() and 0 <= v <= n_test for v in e["runs"])
    assert e["mean"] == pytest.approx(statistics.fmean(e["runs"]))
    assert e["std"] == pytest.approx(statistics.stdev(e["runs"]), abs=1e-12)
  assert f["teacher"]["test_errors"]["runs"][0] == res["teachers"]["test_errors"][0]
  assert f["ensemble"]["test_errors"]["runs"][0] == res["teachers"]["ensemble_test_errors"]

  # the Markdown rows show the JSON's numbers
  row = _cells(md, "distilled,")
  e = f["distilled"]["test_errors"]
  assert row[1] == f"{e['mean']:.1f} ± {e['std']:.1f}"
  assert row[3] == ", ".join(str(int(v)) for v in f["distilled"]["test_errors"]["runs"])
  row = _cells(md, "teacher ensemble")
  assert row[3] == ", ".join(str(int(v)) for v in f["ensemble"]["test_errors"]["runs"])

  # the chosen setting is the sweep's lowest mean validation error, and the final row is it
  chosen = res["chosen"]
  assert chosen["val_errors"]["mean"] == min(r["val_errors"]["mean"] for r in res["sweep"])
  for k in ("steps", "transfer", "teacher", "temperature", "alpha"):
    assert f["distilled"][k] == chosen[k]
  assert all(0 <= v <= n_val for r in res["sweep"] for v in r["val_errors"]["runs"])

  # the gap recovered, recomputed from the runs
  teacher = f["ensemble" if chosen["teacher"] == "ensemble" else "teacher"]["test_errors"]["mean"]
  alone, dist = f["alone"]["test_errors"]["mean"], f["distilled"]["test_errors"]["mean"]
  gap = (alone - dist) / (alone - teacher)
  assert res["gap_recovered"]["alone"]["of_means"] == pytest.approx(gap)
  verdict = "met" if gap >= 0.6 else "NOT met"
  assert f"**{100 * gap:.0f}%** of the means" in md
  assert f"Target ≥ 60%: **{verdict}**" in md

  # the sweep table has one cell per swept setting (columns T), the chosen one in bold
  body = md.split("## The sweep")[1]
  cells = [c.strip() for line in body.splitlines() if line.startswith("| train")
           for c in line.strip("|").split("|")[4:]]
  numbers = [c for c in cells if c != "-"]
  assert len(numbers) == len(res["sweep"])
  bold = [c for c in numbers if c.startswith("**")]
  assert bold == [f"**{chosen['val_errors']['mean']:.1f}**"]
  shown = sorted(float(c.strip("*")) for c in numbers)
  assert shown == sorted(float(f"{r['val_errors']['mean']:.1f}") for r in res["sweep"])

  # experiment 2 (wider students): baselines (a)/(b), the chosen distilled row, both gaps
  _check_wide(res, md)

  # --only wide keeps experiment 1 from the saved JSON and reruns experiment 2 alone
  proc = subprocess.run([sys.executable, "-m", "benchmarks.distillation", "--quick", "--only",
                         "wide", "--out", str(tmp_path)], cwd=ROOT, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  again = json.loads((tmp_path / "distillation.json").read_text())
  md2 = (tmp_path / "DISTILLATION.md").read_text()
  for key in ("teachers", "sweep_alone", "sweep", "chosen", "final", "gap_recovered", "seconds"):
    assert again[key] == res[key]
  rt = again["wide"]["retrained_teacher"]
  assert rt["saved_errors"] == [res["teachers"]["val_errors"][0],
                                res["teachers"]["test_errors"][0]]
  assert rt["reproduced"] is (rt["errors"] == rt["saved_errors"])
  assert "experiment 2 run apart: `python -m benchmarks.distillation --quick --only wide`" in md2
  _check_wide(again, md2)


def _check_wide(res, md):
  """Experiment 2's JSON is self-consistent and its Markdown shows it."""
  wide, s = res["wide"], res["settings"]
  assert [r["hidden"] for r in wide["students"]] == [list(h) for h in s["wide_hidden"]]
  teacher = float(wide["teacher_errors"]["test"])
  body = md.split("## Experiment 2")[1]
  grid = {(t, a) for t in s["wide_temperatures"] for a in s["wide_alphas"]}
  for r in wide["students"]:
    for key in ("alone_plain", "alone", "distilled"):
      for split in ("val_errors", "test_errors"):
        e = r[key][split]
        assert len(e["runs"]) == len(s["wide_seeds"])
        assert all(float(v).is_integer() for v in e["runs"])
        assert e["mean"] == pytest.approx(statistics.fmean(e["runs"]))
    assert r["alone_plain"]["jitter"] is False and r["alone"]["jitter"] is True
    assert {(q["temperature"], q["alpha"]) for q in r["sweep"]} == grid
    best = min(q["val_errors"]["mean"] for q in r["sweep"])
    chosen = [q for q in r["sweep"] if (q["temperature"], q["alpha"])
              == (r["chosen"]["temperature"], r["chosen"]["alpha"])]
    assert chosen[0]["val_errors"]["mean"] == best
    assert chosen[0]["test_errors"] == r["distilled"]["test_errors"]
    d = r["distilled"]["test_errors"]["runs"]
    for key, label in (("alone_plain", "(a) no jitter"), ("alone", "(b) jitter")):
      b = r[key]["test_errors"]["runs"]
      gap = (statistics.fmean(b) - statistics.fmean(d)) / (statistics.fmean(b) - teacher)
      g = r["gap_recovered"][key]
      assert g["of_means"] == pytest.approx(gap)
      per = [(bi - di) / (bi - teacher) for bi, di in zip(b, d)]
      assert g["per_seed"]["runs"] == pytest.approx(per)
      assert g["met"] is (statistics.fmean(b) > teacher and gap >= 0.6)
      row = _cells(body, f"{r['name']} | {label}")
      assert row[2] == f"{100 * gap:.0f}%"
      assert row[5] == ("met" if g["met"] else "NOT met")
    row = _cells(body, f"{r['name']} | (c) distilled")
    assert row[3] == ", ".join(str(int(v)) for v in d)
    assert f"{r['name']} distilled at T = {r['chosen']['temperature']:g}" in md.split("##")[0]
