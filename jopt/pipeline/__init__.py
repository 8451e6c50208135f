"""The progressive compression pipeline: prune -> fine-tune -> quantize -> distill, with a report.

  >>> import os, tempfile
  >>> from jopt import pipeline as pl
  >>> def apply_fn(params, x):                      # a linear softmax classifier
  ...   return x @ params["w"] + params["b"]
  >>> params = {"w": jax.random.normal(jax.random.key(0), (16, 4)), "b": jnp.zeros(4)}
  >>> x = np.asarray(jax.random.normal(jax.random.key(1), (64, 16)))
  >>> y = x[:, :4].argmax(axis=1)                   # a learnable rule: 4 classes
  >>> model = pl.Model(apply=apply_fn, params=params)
  >>> data = pl.Data(train=(x[:48], y[:48]), test=(x[48:], y[48:]))
  >>> with tempfile.TemporaryDirectory() as out_dir:
  ...   report = pl.run(model, [pl.Prune(sparsity=0.75, steps=8), pl.Train(steps=4),
  ...                           pl.Quantize(bits=5, method="kmeans"),
  ...                           pl.Distill(steps=4, temperature=4.0, alpha=0.7)],
  ...                   data, optimizer=jopt.adam(1e-3), batch_size=16, out_dir=out_dir,
  ...                   progress=False)
  ...   files = report.save(out_dir)              # report.json, report.md, report.png
  ...   sorted(os.listdir(out_dir))
  ['checkpoints', 'report.json', 'report.md', 'report.png']
  >>> for row in report.stages:                     # the kernel's sparsity and bits per row
  ...   w = row.layers[1]
  ...   print(row.index, row.name, w.path, w.sparsity, w.bits)
  0 start w 0.0 None
  1 prune w 0.75 None
  2 train w 0.75 None
  3 quantize w 0.75 5
  4 distill w 0.75 5

(Real runs use thousands of steps, e.g. ``pl.Prune(sparsity=0.95, steps=3000)``; see
``jopt/pipeline/demo.py``.)

Stages are data (reorder, repeat or drop them); the pipeline carries the
current model, its float params, masks and quantization spec; every row of the
report evaluates the stored model (masks applied, weights quantized and
dequantized) and counts its bytes in the smallest honest format per leaf.
"""

from jopt.pipeline.compressed import (
    CompressedModel as CompressedModel,
    QuantSpec as QuantSpec,
)
from jopt.pipeline.data import Data as Data
from jopt.pipeline.model import Model as Model
from jopt.pipeline.report import (
    LayerReport as LayerReport,
    Report as Report,
    StageReport as StageReport,
)
from jopt.pipeline.run import run as run
from jopt.pipeline.stages import (
    Distill as Distill,
    Prune as Prune,
    Quantize as Quantize,
    Stage as Stage,
    Train as Train,
)
from jopt.pipeline.storage import (
    LeafStorage as LeafStorage,
    leaf_storage as leaf_storage,
    tree_storage as tree_storage,
)

__all__ = [
    "run",
    "Model",
    "Data",
    "Stage",
    "Prune",
    "Train",
    "Quantize",
    "Distill",
    "Report",
    "StageReport",
    "LayerReport",
    "CompressedModel",
    "QuantSpec",
    "LeafStorage",
    "leaf_storage",
    "tree_storage",
]
