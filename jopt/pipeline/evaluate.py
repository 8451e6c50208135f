r"""Evaluate a stage's stored model: test accuracy and loss, honest bytes, CPU latency.

The evaluated parameters are :meth:`CompressedModel.stored_params` (masks
applied, weights quantized per the spec, dequantized), so a row of the report
describes exactly what would be stored and run.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jopt.pipeline.compressed import CompressedModel
from jopt.pipeline.report import LayerReport, StageReport
from jopt.pipeline.storage import tree_storage

__all__ = ["accuracy_and_loss", "evaluate"]


@functools.partial(jax.jit, static_argnums=0)
def _sums(apply: Any, params: Any, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
  logits = apply(params, x)
  return (jnp.sum(jnp.argmax(logits, -1) == y),
          jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y)))


def accuracy_and_loss(apply: Any, params: Any, x: np.ndarray, y: np.ndarray,
                 batch_size: int = 1024) -> tuple[float, float]:
  r"""Top-1 accuracy (percent) and mean cross-entropy of ``apply(params, .)`` on ``(x, y)``.

  .. math:: \text{acc} = \tfrac{100}{n}\textstyle\sum_i [\arg\max_c z_{ic} = y_i], \quad
     \text{loss} = -\tfrac1n \textstyle\sum_i \log \operatorname{softmax}(z_i)_{y_i}

  Args:
    apply: ``(params, x) -> logits``.
    params: the parameters.
    x: inputs.
    y: integer labels.
    batch_size: examples per forward pass.

  Returns:
    ``(accuracy, loss)`` as Python floats.

  Example:
    >>> acc, loss = accuracy_and_loss(model.apply, model.params, *data.test)

  Reference: the usual top-1 accuracy and negative log-likelihood.
  """
  correct, total = 0, 0.0
  n = len(y)
  for start in range(0, n, batch_size):
    c, s = _sums(apply, params, jnp.asarray(x[start:start + batch_size]),
              jnp.asarray(y[start:start + batch_size]))
    correct += int(c)
    total += float(s)
  return 100.0 * correct / n, total / n


def _latency_ms(apply: Any, params: Any, x: np.ndarray, repeats: int) -> float:
  from jopt.training.compression_lab import measure_latency  # pylint: disable=import-outside-toplevel
  cpu = jax.devices("cpu")[0]
  p = jax.device_put(params, cpu)
  xb = jax.device_put(jnp.asarray(x), cpu)
  return 1000.0 * measure_latency(apply, p, xb, repeats=repeats, warmup=1)


def evaluate(model: CompressedModel, data: Any, *, index: int, name: str, kind: str,
             start_bytes: int | None, seconds: float, latency_batch: int,
             latency_repeats: int) -> StageReport:
  r"""The :class:`StageReport` of one stage's stored model.

  .. math:: \text{compression} = B_{start} / B

  Args:
    model: the stage's :class:`CompressedModel`.
    data: the validated :class:`jopt.pipeline.Data`.
    index: the row's index (0 = start).
    name: the stage's label.
    kind: the stage's kind.
    start_bytes: the start row's bytes (None: this is the start row).
    seconds: time spent in the stage so far (evaluation time is added).
    latency_batch: examples per timed forward pass.
    latency_repeats: timed runs (the median is reported).

  Returns:
    A :class:`StageReport`.

  Example:
    >>> row = evaluate(cm, data, index=0, name="start", kind="start", start_bytes=None,
    ...                seconds=0.0, latency_batch=128, latency_repeats=30)

  Reference: the per-stage evaluation of Han et al., ICLR 2016, Table 1.
  """
  import time  # pylint: disable=import-outside-toplevel
  t0 = time.perf_counter()
  quantized = model.quantized_params()
  stored = model.stored_params(quantized)
  acc, loss = accuracy_and_loss(model.apply, stored, *data.test)
  leaves = tree_storage(stored, quantized)
  layers = tuple(LayerReport(r.path, r.shape, r.size, r.nonzeros,
                             1.0 - r.nonzeros / r.size if r.size else 0.0, r.bits, r.format,
                             r.nbytes) for r in leaves)
  total = sum(r.bytes for r in layers)
  x_lat = data.test[0][:latency_batch]
  lat = _latency_ms(model.apply, stored, x_lat, latency_repeats)
  return StageReport(index=index, name=name, kind=kind, accuracy=acc, loss=loss,
                     params=sum(r.params for r in layers),
                     nonzeros=sum(r.nonzeros for r in layers), bytes=total,
                     compression=(1.0 if start_bytes is None else start_bytes / total),
                     latency_ms=lat, seconds=seconds + time.perf_counter() - t0,
                     layers=layers)
