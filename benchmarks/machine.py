"""What every benchmark report shares: the machine facts of its header (CPU model, versions,
backend), its progress log, and writing its JSON and Markdown files."""

from __future__ import annotations

import json
import os
import pathlib
import platform
import sys
from typing import Any

import jax
import numpy as np
import optax

import jopt

__all__ = ["machine_facts", "log", "write_report"]


def machine_facts() -> dict[str, str]:
  """CPU model (from /proc/cpuinfo where there is one), CPU count, platform, versions."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
    if names:
      cpu = names[0]
  except OSError:
    pass
  return {"cpu": cpu, "cpus": str(os.cpu_count()), "platform": platform.platform(),
          "python": platform.python_version(), "jax": jax.__version__,
          "optax": optax.__version__, "numpy": np.__version__, "jopt": jopt.__version__,
          "backend": jax.default_backend()}


def log(msg: str) -> None:
  """A benchmark's progress line, on stderr (stdout keeps the final summary)."""
  print(msg, file=sys.stderr, flush=True)


def write_report(result: dict[str, Any], markdown: str, md_path: Any, json_path: Any,
                 seconds: float) -> None:
  """Write ``result`` as indented JSON and ``markdown`` beside it (folders created), then say so."""
  md_path, json_path = pathlib.Path(md_path), pathlib.Path(json_path)
  for path in (md_path, json_path):
    path.parent.mkdir(parents=True, exist_ok=True)
  json_path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
  md_path.write_text(markdown, encoding="utf-8")
  print(f"wrote {md_path} and {json_path} in {seconds:.1f} s")
