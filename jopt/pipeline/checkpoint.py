r"""Resumable runs: each finished stage's carry saved with orbax, the report rows beside it.

Layout under ``out_dir``::

  checkpoints/progress.json          fingerprint, finished stages, report rows so far
  checkpoints/<index>-<name>/        orbax StandardCheckpointer: {"params", "masks"?}

``progress.json`` is written (atomically, via a temporary file and
``os.replace``) only after the stage's orbax checkpoint is complete, so an
interruption at any point leaves the last finished stage resumable. The
fingerprint covers the stage list (every hyperparameter; a per-stage optimizer
only as "custom"), the seed, the batch size, the starting model's apply name
and parameter digest, and the data's shapes and digests.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import jax

__all__ = ["checkpoint_dir", "load_progress", "save_progress", "save_carry", "restore_carry",
           "check_fingerprint", "clear", "unwritable"]

PROGRESS = "progress.json"


def unwritable(out_dir: str) -> str | None:
  """None when ``out_dir`` can be created and a file written in it, else the reason it cannot."""
  try:
    os.makedirs(out_dir, exist_ok=True)
    probe = os.path.join(out_dir, ".jopt-write-probe")
    with open(probe, "w", encoding="utf-8") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    return e.strerror or str(e)
  return None


def checkpoint_dir(out_dir: str) -> str:
  """``<out_dir>/checkpoints`` as an absolute path (orbax needs one)."""
  return os.path.join(os.path.abspath(out_dir), "checkpoints")


def load_progress(root: str) -> dict[str, Any] | None:
  """The saved progress, or None when there is none."""
  path = os.path.join(root, PROGRESS)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def save_progress(root: str, progress: dict[str, Any]) -> None:
  """Write ``progress.json`` atomically."""
  os.makedirs(root, exist_ok=True)
  tmp = os.path.join(root, PROGRESS + ".tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(progress, f, indent=1)
  os.replace(tmp, os.path.join(root, PROGRESS))


def clear(root: str, progress: dict[str, Any] | None) -> None:
  """Remove a previous run's progress file, then the checkpoint folders it listed (nothing else).

  The progress file goes first: an interruption part-way leaves unlisted
  folders (replaced when their stage is saved again), never a progress file
  listing a folder that is gone.
  """
  if progress is None:
    return
  os.remove(os.path.join(root, PROGRESS))
  for entry in progress.get("finished", []):
    path = os.path.join(root, entry["dir"])
    if os.path.isdir(path):
      shutil.rmtree(path)


def save_carry(root: str, name: str, params: Any, masks: Any) -> None:
  """Save ``{"params", "masks"}`` (masks only when not None) under ``root/name`` with orbax."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  path = os.path.join(root, name)
  if os.path.exists(path):
    shutil.rmtree(path)
  tree = {"params": params} if masks is None else {"params": params, "masks": masks}
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, tree)


def restore_carry(root: str, name: str, like_params: Any, has_masks: bool) -> tuple[Any, Any]:
  """Restore ``(params, masks)`` saved by :func:`save_carry` into ``like_params``' structure."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  abstract = {"params": jax.tree.map(ocp.utils.to_shape_dtype_struct, like_params)}
  if has_masks:
    abstract["masks"] = jax.tree.map(
        lambda p: jax.ShapeDtypeStruct(p.shape, jax.numpy.bool_, sharding=p.sharding),
        like_params)
  with ocp.StandardCheckpointer() as ckptr:
    tree = ckptr.restore(os.path.join(root, name), abstract)
  return tree["params"], tree.get("masks")


def check_fingerprint(saved: dict[str, Any], current: dict[str, Any], out_dir: str) -> None:
  """Raise when a saved run's fingerprint differs from this run's, naming what differs and the fix."""
  current = json.loads(json.dumps(current))
  if saved == current:
    return
  keys = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
  names = {"stages": "the stage list", "seed": "seed", "batch_size": "batch_size",
           "model": "the starting model's params", "data": "data"}
  what = ", ".join(names.get(k, k) for k in keys)
  raise ValueError(f"run: resume=True, but {out_dir!r} holds checkpoints of a different run"
                   f" ({what} differ). Pass resume=False to start over (its checkpoints are"
                   " replaced), use another out_dir, or pass the original stages and seed.")
