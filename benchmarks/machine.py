"""The machine facts a benchmark report's header carries (CPU model, versions, backend)."""

from __future__ import annotations

import os
import platform

import jax
import numpy as np
import optax

import jopt

__all__ = ["machine_facts"]


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
