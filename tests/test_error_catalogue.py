"""The error catalogue: every class of bad input, the exception it raises, and the
argument its message names, across every public namespace.

One row per mistake (a callable that makes it, the expected exception type, the
argument that the message must name, optionally the fix word it must hold). The
classes are the rows of ``docs/errors.md``; a test below parses that page and
checks that every class there has a case here and that every case's class is
there, so the page and this table cannot drift apart.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from jopt import augment as aug
from jopt import distill as dl
from jopt import nn
from jopt import parallel as par
from jopt import pipeline as pl
from jopt import precision as prec
from jopt import prune as pr
from jopt import quant as qt

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "errors.md"


class Case(NamedTuple):
  cls: str                     # the mistake class (a row id in docs/errors.md)
  make: Callable[[], Any]      # makes the mistake
  exc: type                    # the exception type the class raises
  arg: str                     # the argument the message must name
  fix: str | None = None       # a word of the fix the message must hold


# ---------------------------------------------------------------- small inputs

P2 = {"w": jnp.ones((2, 3), jnp.float32), "b": jnp.zeros((3,), jnp.float32)}
X = jnp.ones((2, 4), jnp.float32)
IMG = jnp.ones((2, 4, 4, 3), jnp.float32)
KEY = jax.random.key(0)


def _init_update(tx, grads=None, params=P2, **extra):
  state = tx.init(params)
  return tx.update(params if grads is None else grads, state, params, **extra)


def _mesh():
  return par.data_mesh(8)


def _tiny():
  from tests.test_pipeline_orders import tiny_data, tiny_model
  return tiny_model(), tiny_data()


def _run(stages, **kw):
  model, data = _tiny()
  kw = dict(dict(optimizer=jopt.adam(1e-3), batch_size=32, progress=False), **kw)
  return pl.run(model, stages, data, **kw)


def _loss(p, batch):
  x, y = batch
  return jnp.mean((x @ p["w"] - y) ** 2)


def _unwritable(tmp):
  blocker = tmp / "file"
  blocker.write_text("not a folder")
  return str(blocker / "out")


def _traced(fn):
  """Call ``fn(t)`` with a traced scalar (inside jit)."""
  return lambda: jax.jit(fn)(jnp.float32(2.0))


def _traced_int(fn):
  return lambda: jax.jit(fn)(jnp.int32(2))


# ---------------------------------------------------------------- the catalogue

CASES: dict[str, Case] = {
    # ---- hyperparameter-type: a number's slot got a string, list, bool or complex
    "adam lr str": Case("hyperparameter-type", lambda: jopt.adam("0.1"), TypeError,
                        "learning_rate"),
    "adam b1 list": Case("hyperparameter-type", lambda: jopt.adam(1e-3, b1=[0.9]), TypeError, "b1"),
    "sgd momentum bool": Case("hyperparameter-type", lambda: jopt.sgd(0.1, momentum=True),
                              TypeError, "momentum"),
    "lion lr complex": Case("hyperparameter-type", lambda: jopt.lion(1e-3 + 1j), TypeError,
                            "learning_rate"),
    "weight decay str": Case("hyperparameter-type",
                             lambda: jopt.add_decayed_weights("0.1"), TypeError, "weight_decay"),
    "dropout rate str": Case("hyperparameter-type",
                             lambda: nn.dropout(X, "0.5", key=KEY), TypeError, "rate"),
    "flip p str": Case("hyperparameter-type",
                       lambda: aug.random_flip_left_right(IMG, key=KEY, p="0.5"), TypeError, "p"),
    "distill T str": Case("hyperparameter-type",
                          lambda: dl.distill_loss(X, X, temperature="4", alpha=1.0),
                          TypeError, "temperature"),
    "loss scale growth str": Case("hyperparameter-type",
                                  lambda: prec.loss_scale(jopt.sgd(0.1), growth_factor="2"),
                                  TypeError, "growth_factor"),
    # ---- hyperparameter-range: a number outside its accepted range, NaN or Inf
    "adam lr negative": Case("hyperparameter-range", lambda: jopt.adam(-1e-3), ValueError,
                             "learning_rate", "range"),
    "adam lr nan": Case("hyperparameter-range", lambda: jopt.adam(float("nan")), ValueError,
                        "learning_rate"),
    "adam lr inf": Case("hyperparameter-range", lambda: jopt.adam(float("inf")), ValueError,
                        "learning_rate"),
    "adam b1 = 1": Case("hyperparameter-range", lambda: jopt.adam(1e-3, b1=1.0), ValueError, "b1"),
    "adam b2 > 1": Case("hyperparameter-range", lambda: jopt.adam(1e-3, b2=1.5), ValueError, "b2"),
    "adam eps negative": Case("hyperparameter-range", lambda: jopt.adam(1e-3, eps=-1e-8),
                              ValueError, "eps"),
    "rmsprop decay": Case("hyperparameter-range", lambda: jopt.rmsprop(0.1, decay=1.0), ValueError,
                          "decay"),
    "lars trust negative": Case("hyperparameter-range",
                                lambda: jopt.lars(0.1, trust_coefficient=-1.0), ValueError,
                                "trust_coefficient"),
    "adamw wd negative": Case("hyperparameter-range", lambda: jopt.adamw(1e-3, weight_decay=-0.1),
                              ValueError, "weight_decay"),
    "l2 penalty negative": Case("hyperparameter-range", lambda: jopt.l2_penalty(P2, strength=-1.0),
                                ValueError, "strength"),
    "proximal l1 negative": Case("hyperparameter-range", lambda: jopt.proximal_l1(-0.1),
                                 ValueError, "l1"),
    "dropout rate 1": Case("hyperparameter-range", lambda: nn.dropout(X, 1.0, key=KEY), ValueError,
                           "rate"),
    "drop_path rate negative": Case("hyperparameter-range",
                                    lambda: nn.drop_path(X, -0.1, key=KEY), ValueError, "rate"),
    "batch norm momentum": Case("hyperparameter-range", lambda: nn.batch_norm(
        X, None, None, nn.batch_norm_stats(4), train=True, momentum=1.5), ValueError, "momentum"),
    "layer norm eps": Case("hyperparameter-range",
                           lambda: nn.layer_norm(X, None, None, eps=-1.0), ValueError, "eps"),
    "flip p > 1": Case("hyperparameter-range",
                       lambda: aug.random_flip_left_right(IMG, key=KEY, p=1.5), ValueError, "p"),
    "noise std negative": Case("hyperparameter-range",
                               lambda: aug.gaussian_noise(IMG, key=KEY, std=-1.0), ValueError,
                               "std"),
    "mixup alpha 0": Case("hyperparameter-range", lambda: aug.mixup(
        IMG, jnp.ones((2, 3), jnp.float32), key=KEY, alpha=-1.0), ValueError, "alpha"),
    "prune sparsity 1": Case("hyperparameter-range", lambda: pr.prune(jopt.sgd(0.1), 1.0),
                             ValueError, "sparsity"),
    "prune sparsity negative": Case("hyperparameter-range", lambda: pr.prune(jopt.sgd(0.1), -0.1),
                                    ValueError, "sparsity"),
    "pl prune sparsity": Case("hyperparameter-range", lambda: pl.Prune(sparsity=1.0, steps=10),
                              ValueError, "sparsity"),
    "calibrate percentile": Case("hyperparameter-range",
                                 lambda: qt.calibrate(X, "percentile", percentile=101.0),
                                 ValueError, "percentile"),
    "distill T 0": Case("hyperparameter-range",
                        lambda: dl.distill_loss(X, X, temperature=0.0, alpha=1.0), ValueError,
                        "temperature"),
    "distill alpha > 1": Case("hyperparameter-range",
                              lambda: dl.distill_loss(X, X, temperature=2.0, alpha=1.5),
                              ValueError, "alpha"),
    "soft targets T negative": Case("hyperparameter-range", lambda: dl.soft_targets(X, -1.0),
                                    ValueError, "temperature"),
    "pl distill T": Case("hyperparameter-range", lambda: pl.Distill(temperature=-2.0), ValueError,
                         "temperature"),
    "pl distill alpha": Case("hyperparameter-range", lambda: pl.Distill(alpha=1.5), ValueError,
                             "alpha"),
    "loss scale backoff": Case("hyperparameter-range",
                               lambda: prec.loss_scale(jopt.sgd(0.1), backoff_factor=1.0),
                               ValueError, "backoff_factor"),
    "loss scale initial": Case("hyperparameter-range",
                               lambda: prec.loss_scale(jopt.sgd(0.1), initial_scale=0.0),
                               ValueError, "initial_scale"),
    "plateau factor": Case("hyperparameter-range", lambda: jopt.reduce_on_plateau(factor=1.5),
                           ValueError, "factor"),
    "early stopping min_delta": Case("hyperparameter-range",
                                     lambda: jopt.early_stopping(min_delta=-1.0), ValueError,
                                     "min_delta"),
    "schedule init nan": Case("hyperparameter-range",
                              lambda: jopt.linear_schedule(float("nan"), 0.0, 10), ValueError,
                              "init_value"),
    # ---- schedule-range: a schedule whose value at step 0 is out of range
    "adam lr schedule negative": Case("schedule-range",
                                      lambda: jopt.adam(lambda t: jnp.float32(-1.0)), ValueError,
                                      "learning_rate", "schedule"),
    "prune sparsity schedule": Case("schedule-range", lambda: pr.prune(
        jopt.sgd(0.1), lambda t: 1.5), ValueError, "sparsity", "schedule"),
    "proximal l1 schedule": Case("schedule-range", lambda: jopt.proximal_l1(lambda t: -1.0),
                                 ValueError, "l1", "schedule"),
    # ---- not-a-schedule: a callable that fails when called with a step
    "adam lr bad callable": Case("not-a-schedule", lambda: jopt.adam(lambda: 0.1), TypeError,
                                 "learning_rate", "schedule"),
    "prune sparsity bad callable": Case("not-a-schedule", lambda: pr.prune(
        jopt.sgd(0.1), lambda a, b: 0.5), TypeError, "sparsity", "schedule"),
    "penalty given a schedule": Case("not-a-schedule",
                                     lambda: jopt.l2_penalty(P2, strength=lambda t: 0.1), TypeError,
                                     "strength", "schedule"),
    "adagrad accumulator schedule": Case("not-a-schedule", lambda: jopt.adagrad(
        0.1, initial_accumulator_value=lambda t: 0.1), TypeError, "initial_accumulator_value"),
    # ---- integer-type: a float, string or bool where an integer is needed
    "accumulate every_k float": Case("integer-type", lambda: jopt.accumulate(jopt.sgd(0.1), 2.5),
                                     TypeError, "every_k", "int"),
    "accumulate every_k str": Case("integer-type", lambda: jopt.accumulate(jopt.sgd(0.1), "2"),
                                   TypeError, "every_k"),
    "adam8 block float": Case("integer-type", lambda: jopt.adam_8bit(1e-3, block_size=256.0),
                              TypeError, "block_size"),
    "adam8 min size str": Case("integer-type", lambda: jopt.adam_8bit(1e-3, min_8bit_size="1"),
                               TypeError, "min_8bit_size"),
    "adafactor decay_offset float": Case("integer-type",
                                         lambda: jopt.adafactor(decay_offset=1.5), TypeError,
                                         "decay_offset"),
    "schedule steps float": Case("integer-type", lambda: jopt.linear_schedule(1.0, 0.0, 2.5),
                                 TypeError, "transition_steps"),
    "piecewise key float": Case("integer-type", lambda: jopt.piecewise_constant_schedule(
        1.0, {2.5: 0.1}), TypeError, "boundaries_and_scales"),
    "join boundary float": Case("integer-type", lambda: jopt.join_schedules(
        [jopt.constant_schedule(1.0), jopt.constant_schedule(0.5)], [2.5]), TypeError,
        "boundaries[0]"),
    "plateau patience float": Case("integer-type", lambda: jopt.reduce_on_plateau(patience=2.5),
                                   TypeError, "patience"),
    "early stopping patience float": Case("integer-type",
                                          lambda: jopt.early_stopping(patience=1.5), TypeError,
                                          "patience"),
    "sparsity frequency float": Case("integer-type", lambda: jopt.polynomial_sparsity_schedule(
        0.5, 0, 5, frequency=2.5), TypeError, "frequency"),
    "batch_norm_stats float": Case("integer-type", lambda: nn.batch_norm_stats(3.0), TypeError,
                                   "num_features"),
    "group_norm groups float": Case("integer-type", lambda: nn.group_norm(
        IMG, None, None, num_groups=1.5), TypeError, "num_groups"),
    "layer norm axis float": Case("integer-type", lambda: nn.layer_norm(X, None, None, axis=1.5),
                                  TypeError, "axis"),
    "cutout size float": Case("integer-type", lambda: aug.cutout(IMG, key=KEY, size=1.5),
                              TypeError, "size"),
    "rand augment num_ops str": Case("integer-type", lambda: aug.rand_augment("2"), TypeError,
                                     "num_ops"),
    "prune update_every float": Case("integer-type", lambda: pr.prune(
        jopt.sgd(0.1), 0.5, update_every=1.5), TypeError, "update_every"),
    "relative index bits float": Case("integer-type", lambda: pr.relative_index_encode(
        np.ones(4, np.float32), index_bits=2.5), TypeError, "index_bits"),
    "coupled repeat float": Case("integer-type", lambda: pr.remove_units(
        {"a": jnp.ones((2, 3)), "b": jnp.ones((3,))},
        [pr.UnitGroup("h", ("a", 1), [pr.Coupled("b", 0, repeat=1.5)])]), TypeError, "repeat"),
    "quantize bits str": Case("integer-type", lambda: qt.quantize(X, "8"), TypeError, "bits"),
    "fake quant bits float": Case("integer-type", lambda: qt.fake_quant(X, 4.0), TypeError,
                                  "bits"),
    "allocate budget float": Case("integer-type", lambda: qt.allocate_bits(_sensitivity(), 10.5),
                                  TypeError, "budget_bytes"),
    "hint dim float": Case("integer-type", lambda: dl.init_hint_projection(KEY, 4, 2.5),
                           TypeError, "teacher_dim"),
    "pl train steps float": Case("integer-type", lambda: pl.Train(steps=2.5), TypeError, "steps"),
    "pl run batch float": Case("integer-type", lambda: _run([pl.Train(steps=1)], batch_size=3.5),
                               TypeError, "batch_size"),
    "loss scale interval float": Case("integer-type", lambda: prec.loss_scale(
        jopt.sgd(0.1), growth_interval=2.5), TypeError, "growth_interval"),
    "data mesh n str": Case("integer-type", lambda: par.data_mesh("8"), TypeError, "n"),
    "data model mesh float": Case("integer-type", lambda: par.data_model_mesh(2.0, 4), TypeError,
                                  "data"),
    "initialize num_processes float": Case("integer-type", lambda: par.initialize(
        "localhost:1234", 2.0, 0), TypeError, "num_processes"),
    "zero stage float": Case("integer-type", lambda: par.zero_step(
        _loss, jopt.sgd(0.1), _mesh(), stage=1.0), TypeError, "stage"),
    "fsdp_spec n float": Case("integer-type", lambda: par.fsdp_spec((8, 8), 2.5), TypeError, "n"),
    "pmap shard n float": Case("integer-type", lambda: par.pmap_shard_batch(
        np.zeros((16, 2), np.float32), n=2.5), TypeError, "n"),
    # ---- integer-range: an integer below its minimum or above its maximum
    "kmeans clusters 0": Case("integer-range", lambda: qt.kmeans_1d(jnp.ones(4), 0), ValueError,
                              "num_clusters"),
    "fsdp_spec n 0": Case("integer-range", lambda: par.fsdp_spec((8, 8), 0), ValueError, "n"),
    "accumulate every_k 0": Case("integer-range", lambda: jopt.accumulate(jopt.sgd(0.1), 0),
                                 ValueError, "every_k"),
    "adam8 block not power of two": Case("integer-range",
                                         lambda: jopt.adam_8bit(1e-3, block_size=300), ValueError,
                                         "block_size", "power of two"),
    "adam8 min size negative": Case("integer-range",
                                    lambda: jopt.adam_8bit(1e-3, min_8bit_size=-1), ValueError,
                                    "min_8bit_size"),
    "schedule steps 0": Case("integer-range", lambda: jopt.linear_schedule(1.0, 0.0, 0),
                             ValueError, "transition_steps"),
    "piecewise key negative": Case("integer-range", lambda: jopt.piecewise_constant_schedule(
        1.0, {-1: 0.1}), ValueError, "boundaries_and_scales"),
    "plateau patience negative": Case("integer-range", lambda: jopt.reduce_on_plateau(patience=-1),
                                      ValueError, "patience"),
    "batch_norm_stats 0": Case("integer-range", lambda: nn.batch_norm_stats(0), ValueError,
                               "num_features"),
    "group_norm groups 0": Case("integer-range", lambda: nn.group_norm(
        IMG, None, None, num_groups=0), ValueError, "num_groups"),
    "cutout size negative": Case("integer-range", lambda: aug.cutout(IMG, key=KEY, size=-1),
                                 ValueError, "size"),
    "crop padding negative": Case("integer-range", lambda: aug.random_crop(IMG, key=KEY, padding=-2),
                                  ValueError, "padding"),
    "rand augment num_ops negative": Case("integer-range", lambda: aug.rand_augment(-1),
                                          ValueError, "num_ops"),
    "prune update_every 0": Case("integer-range", lambda: pr.prune(
        jopt.sgd(0.1), 0.5, update_every=0), ValueError, "update_every"),
    "relative index bits 9": Case("integer-range", lambda: pr.relative_index_encode(
        np.ones(4, np.float32), index_bits=9), ValueError, "index_bits"),
    "coupled repeat 0": Case("integer-range", lambda: pr.remove_units(
        {"a": jnp.ones((2, 3)), "b": jnp.ones((3,))},
        [pr.UnitGroup("h", ("a", 1), [pr.Coupled("b", 0, repeat=0)])]), ValueError, "repeat"),
    "quantize bits 9": Case("integer-range", lambda: qt.quantize(X, 9), ValueError, "bits",
                            "range"),
    "quantize bits 1": Case("integer-range", lambda: qt.quantize(X, 1), ValueError, "bits"),
    "pl quantize bits": Case("integer-range", lambda: pl.Quantize(bits=9), ValueError, "bits"),
    "calibrate grid 0": Case("integer-range", lambda: qt.calibrate(X, "mse", grid_size=0),
                             ValueError, "grid_size"),
    "kmeans iters negative": Case("integer-range", lambda: qt.quantize(
        X, 2, method="kmeans", iters=-1), ValueError, "iters"),
    "allocate budget 0": Case("integer-range", lambda: qt.allocate_bits(_sensitivity(), 0),
                              ValueError, "budget_bytes"),
    "hint dim 0": Case("integer-range", lambda: dl.init_hint_projection(KEY, 0, 2), ValueError,
                       "student_dim"),
    "pl train steps 0": Case("integer-range", lambda: pl.Train(steps=0), ValueError, "steps"),
    "pl quantize qat negative": Case("integer-range", lambda: pl.Quantize(bits=4, qat_steps=-1),
                                     ValueError, "qat_steps"),
    "pl run batch too big": Case("integer-range", lambda: _run([pl.Train(steps=1)],
                                                               batch_size=1000), ValueError,
                                 "batch_size"),
    "loss scale interval 0": Case("integer-range", lambda: prec.loss_scale(
        jopt.sgd(0.1), growth_interval=0), ValueError, "growth_interval"),
    "data mesh n too many": Case("integer-range", lambda: par.data_mesh(9), ValueError, "n"),
    "data model mesh 0": Case("integer-range", lambda: par.data_model_mesh(0, 4), ValueError,
                              "data"),
    "fsdp min_size negative": Case("integer-range", lambda: par.fsdp_specs(P2, _mesh(),
                                                                          min_size=-1),
                                   ValueError, "min_size"),
    "zero stage 4": Case("integer-range", lambda: par.zero_step(_loss, jopt.sgd(0.1), _mesh(),
                                                                stage=4), ValueError, "stage"),
    # ---- flag-type: a non-bool where True/False is needed
    "adam nesterov str": Case("flag-type", lambda: jopt.adam(1e-3, nesterov="no"), TypeError,
                              "nesterov"),
    "rmsprop centered int": Case("flag-type", lambda: jopt.rmsprop(0.1, centered=1), TypeError,
                                 "centered"),
    "amsgrad flag": Case("flag-type", lambda: jopt.amsgrad(1e-3, bias_correction_mu="y"),
                         TypeError, "bias_correction_mu"),
    "adamax flag": Case("flag-type", lambda: jopt.adamax(1e-3, eps_in_max=0), TypeError,
                        "eps_in_max"),
    "adagrad flag": Case("flag-type", lambda: jopt.adagrad(0.1, eps_in_sqrt="y"), TypeError,
                         "eps_in_sqrt"),
    "lars nesterov": Case("flag-type", lambda: jopt.lars(0.1, nesterov="y"), TypeError,
                          "nesterov"),
    "radam nesterov": Case("flag-type", lambda: jopt.radam(1e-3, nesterov="y"), TypeError,
                           "nesterov"),
    "adam8 nesterov": Case("flag-type", lambda: jopt.adam_8bit(1e-3, nesterov="y"), TypeError,
                           "nesterov"),
    "adafactor factored": Case("flag-type", lambda: jopt.adafactor(factored="y"), TypeError,
                               "factored"),
    "accumulate use_mean": Case("flag-type", lambda: jopt.accumulate(
        jopt.sgd(0.1), 2, use_mean="no"), TypeError, "use_mean"),
    "prune zero_inner_state": Case("flag-type", lambda: pr.prune(
        jopt.sgd(0.1), 0.5, zero_inner_state="no"), TypeError, "zero_inner_state"),
    "match specs strict": Case("flag-type", lambda: par.match_specs(P2, [], strict="yes"),
                               TypeError, "strict"),
    "data parallel has_aux": Case("flag-type", lambda: par.data_parallel_step(
        _loss, jopt.sgd(0.1), _mesh(), has_aux="yes"), TypeError, "has_aux"),
    "shard map has_aux": Case("flag-type", lambda: par.shard_map_step(
        _loss, jopt.sgd(0.1), _mesh(), has_aux="yes"), TypeError, "has_aux"),
    "pmap step has_aux": Case("flag-type", lambda: par.pmap_step(
        _loss, jopt.sgd(0.1), has_aux="yes"), TypeError, "has_aux"),
    "mixed step jit": Case("flag-type", lambda: prec.mixed_precision_step(
        _loss, prec.loss_scale(jopt.sgd(0.1)), "float32", jit="yes"), TypeError, "jit"),
    "distill step has_aux": Case("flag-type", lambda: dl.distill_step(
        lambda p, x: x, lambda p, x: x, jopt.sgd(0.1), temperature=2.0, alpha=0.5,
        has_aux="y"), TypeError, "has_aux"),
    "sgd nesterov str": Case("flag-type", lambda: jopt.sgd(0.1, momentum=0.9, nesterov="yes"),
                             TypeError, "nesterov"),
    "muon flag int": Case("flag-type", lambda: jopt.muon(0.02, nesterov=1), TypeError, "nesterov"),
    "early stopping restore_best": Case("flag-type",
                                        lambda: jopt.early_stopping(restore_best="yes"), TypeError,
                                        "restore_best"),
    "schedule staircase": Case("flag-type", lambda: jopt.exponential_decay(
        1.0, 10, 0.5, staircase="no"), TypeError, "staircase"),
    "dropout train str": Case("flag-type", lambda: nn.dropout(X, 0.5, key=KEY, train="yes"),
                              TypeError, "train"),
    "mixup per_example": Case("flag-type", lambda: aug.mixup(
        IMG, jnp.ones((2, 3), jnp.float32), key=KEY, per_example=1), TypeError, "per_example"),
    "crop antialias": Case("flag-type", lambda: aug.random_resized_crop(
        IMG, key=KEY, size=2, antialias=1), TypeError, "antialias"),
    "quantize keep_zeros": Case("flag-type", lambda: qt.quantize(
        X, 2, method="kmeans", keep_zeros=1), TypeError, "keep_zeros"),
    "hint bias": Case("flag-type", lambda: dl.init_hint_projection(KEY, 4, 2, bias=1), TypeError,
                      "bias"),
    "loss scale dynamic": Case("flag-type", lambda: prec.loss_scale(jopt.sgd(0.1), dynamic="yes"),
                               TypeError, "dynamic"),
    "shard batch process_local": Case("flag-type", lambda: par.shard_batch(
        np.zeros((8, 2), np.float32), _mesh(), process_local="yes"), TypeError, "process_local"),
    "int8 dense return_accumulator": Case("flag-type", lambda: qt.int8_dense(
        X, qt.quantize(jnp.ones((4, 3)), 8), x_range=(0.0, 1.0), return_accumulator="y"),
        TypeError, "return_accumulator"),
    "skip nonfinite check_outputs": Case("flag-type", lambda: jopt.skip_nonfinite(
        jopt.sgd(0.1), check_outputs=1), TypeError, "check_outputs"),
    # ---- choice-value: an unknown string option
    "prune criterion": Case("choice-value", lambda: pr.prune(jopt.sgd(0.1), 0.5,
                                                            criterion="biggest"),
                            ValueError, "criterion"),
    "prune granularity": Case("choice-value", lambda: pr.prune(jopt.sgd(0.1), 0.5,
                                                              granularity="foo"),
                              ValueError, "granularity"),
    "prune scope": Case("choice-value", lambda: pr.prune(jopt.sgd(0.1), 0.5, scope="net"),
                        ValueError, "scope"),
    "quantize granularity": Case("choice-value", lambda: qt.quantize(X, 8, granularity="row"),
                                 ValueError, "granularity"),
    "quantize method": Case("choice-value", lambda: qt.quantize(X, 8, method="pq"), ValueError,
                            "method"),
    "calibrate method": Case("choice-value", lambda: qt.calibrate(X, "max"), ValueError, "method"),
    "pl quantize method": Case("choice-value", lambda: pl.Quantize(method="pq"), ValueError,
                               "method"),
    "pl distill transfer": Case("choice-value", lambda: pl.Distill(transfer="augmented"),
                                ValueError, "transfer"),
    "plateau mode": Case("choice-value", lambda: jopt.reduce_on_plateau(mode="lowest"),
                         ValueError, "mode"),
    "early stopping mode": Case("choice-value", lambda: jopt.early_stopping(mode="up"), ValueError,
                                "mode"),
    "cyclic mode": Case("choice-value", lambda: jopt.cyclic_schedule(
        0.1, 1.0, 10, mode="sine"), ValueError, "mode"),
    "muon preconditioning": Case("choice-value", lambda: jopt.muon(
        0.02, preconditioning="none"), ValueError, "preconditioning"),
    "batch norm running_var": Case("choice-value", lambda: nn.batch_norm(
        X, None, None, nn.batch_norm_stats(4), train=True, running_var="sample"), ValueError,
        "running_var"),
    "crop mode": Case("choice-value", lambda: aug.random_crop(IMG, key=KEY, mode="wrap"),
                      ValueError, "mode"),
    "rand augment op": Case("choice-value", lambda: aug.rand_augment(ops=("blur",)), ValueError,
                            "ops"),
    "data mesh axis_type": Case("choice-value", lambda: par.data_mesh(axis_type="manual"),
                                ValueError, "axis_type"),
    # ---- choice-type: a non-string where a string option is needed
    "prune criterion int": Case("choice-type", lambda: pr.prune(jopt.sgd(0.1), 0.5, criterion=1),
                                TypeError, "criterion"),
    "prune granularity none": Case("choice-type", lambda: pr.prune(jopt.sgd(0.1), 0.5,
                                                                  granularity=None),
                                   TypeError, "granularity"),
    "quantize granularity int": Case("choice-type", lambda: qt.quantize(X, 8, granularity=0),
                                     TypeError, "granularity"),
    "calibrate method int": Case("choice-type", lambda: qt.calibrate(X, 0), TypeError, "method"),
    "plateau mode int": Case("choice-type", lambda: jopt.reduce_on_plateau(mode=0), TypeError,
                             "mode"),
    "crop mode int": Case("choice-type", lambda: aug.random_crop(IMG, key=KEY, mode=0), TypeError,
                          "mode"),
    "pl quantize method none": Case("choice-type", lambda: pl.Quantize(bits=8, method=None),
                                    TypeError, "method"),
    "data mesh axis int": Case("choice-type", lambda: par.data_mesh(axis=0), TypeError, "axis"),
    # ---- traced-static: a traced value where a concrete one fixes the program
    "accumulate every_k traced": Case("traced-static", _traced_int(
        lambda k: jopt.accumulate(jopt.sgd(0.1), k)), TypeError, "every_k", "static"),
    "dropout train traced": Case("traced-static", lambda: jax.jit(
        lambda t: nn.dropout(X, 0.5, key=KEY, train=t))(True), TypeError, "train", "static"),
    "loss scale initial traced": Case("traced-static", _traced(
        lambda s: prec.loss_scale(jopt.sgd(0.1), initial_scale=s)), TypeError, "initial_scale"),
    "quantize bits traced": Case("traced-static", _traced_int(lambda b: qt.quantize(X, b)),
                                 TypeError, "bits", "static"),
    # ---- not-callable: a function or transform slot got something else
    "prune tx": Case("not-callable", lambda: pr.prune("sgd", 0.5), TypeError, "tx"),
    "skip nonfinite tx": Case("not-callable", lambda: jopt.skip_nonfinite(None), TypeError, "tx"),
    "join schedules element": Case("not-callable", lambda: jopt.join_schedules([1.0, 2.0], [3]),
                                   TypeError, "schedules[0]"),
    "random choice op": Case("not-callable", lambda: aug.random_choice([1]), TypeError, "op"),
    "in_float32 fn": Case("not-callable", lambda: prec.in_float32(3), TypeError, "fn"),
    "mixed step loss_fn": Case("not-callable", lambda: prec.mixed_precision_step(
        3, prec.loss_scale(jopt.sgd(0.1)), "mixed_bfloat16"), TypeError, "loss_fn"),
    "distill step tx": Case("not-callable", lambda: dl.distill_step(
        lambda p, x: x, lambda p, x: x, "adam", temperature=2.0, alpha=0.5), TypeError, "tx"),
    "hint activation": Case("not-callable", lambda: dl.hint_loss(
        IMG, IMG, None, activation="relu"), TypeError, "activation"),
    "coupled index_map": Case("not-callable", lambda: pr.remove_units(
        {"a": jnp.ones((2, 3)), "b": jnp.ones((3,))},
        [pr.UnitGroup("h", ("a", 1), [pr.Coupled("b", 0, index_map=3)])]), TypeError,
        "index_map"),
    "pl model apply": Case("not-callable", lambda: pl.Model(apply=None, params={"w": np.zeros(2)}),
                           TypeError, "apply"),
    "pl train optimizer": Case("not-callable", lambda: pl.Train(steps=1, optimizer="adam"),
                               TypeError, "optimizer"),
    "data parallel mesh": Case("object-type", lambda: par.data_parallel_step(
        _loss, jopt.sgd(0.1), "data"), TypeError, "mesh"),
    # ---- object-type: an argument of the wrong kind of object (not a mapping, pair, record, ...)
    "piecewise not a mapping": Case("object-type", lambda: jopt.piecewise_constant_schedule(
        1.0, [(2, 0.1)]), TypeError, "boundaries_and_scales"),
    "sgdr entry not a dict": Case("object-type", lambda: jopt.sgdr_schedule([(1.0, 10)]),
                                  TypeError, "cosine_kwargs"),
    "batch norm stats tuple": Case("object-type", lambda: nn.batch_norm(
        X, None, None, 3.0, train=True), TypeError, "stats"),
    "remove_units single group": Case("object-type", lambda: pr.remove_units(
        {"a": jnp.ones((2, 3))}, pr.UnitGroup("h", ("a", 1))), TypeError, "groups"),
    "coupled entry": Case("object-type", lambda: pr.remove_units(
        {"a": jnp.ones((2, 3))}, [pr.UnitGroup("h", ("a", 1), ["a"])]), TypeError, "coupled[0]"),
    "quantize clip_range": Case("object-type", lambda: qt.quantize(X, 8, clip_range=1.0),
                                TypeError, "clip_range"),
    "int8 dense qw": Case("object-type", lambda: qt.int8_dense(X, X, x_range=(0.0, 1.0)),
                          TypeError, "qw"),
    "quant rules entry": Case("object-type", lambda: qt.quantize_params(P2, [3]), TypeError,
                              "rules"),
    "allocate sensitivity": Case("object-type", lambda: qt.allocate_bits({}, 100), TypeError,
                                 "sensitivity"),
    "hint projection": Case("object-type", lambda: dl.hint_loss(IMG, IMG, [1.0]), TypeError,
                            "projection"),
    "pl data tuple": Case("object-type", lambda: pl.Data(train=np.zeros((10, 16)), test=None),
                          TypeError, "train"),
    "pl run stages": Case("object-type", lambda: _run(pl.Train(steps=1)), TypeError, "stages"),
    "pl run stage element": Case("object-type", lambda: _run([pl.Train(steps=1), "prune"]),
                                 TypeError, "stages[1]"),
    "get_policy spec": Case("object-type", lambda: prec.get_policy(jnp.float32), TypeError,
                            "spec"),
    "match specs rules": Case("object-type", lambda: par.match_specs(
        P2, [jax.sharding.PartitionSpec("data")]), TypeError, "rules"),
    "augment sequence op": Case("object-type", lambda: aug.random_choice(aug.gaussian_noise),
                                TypeError, "ops"),
    # ---- dtype: an array of the wrong kind (integer params, int images, complex grads)
    "adam integer params": Case("dtype", lambda: jopt.adam(1e-3).init(
        {"w": jnp.zeros((3,), jnp.int32)}), TypeError, "dtype", "float"),
    "adam state dtype int": Case("dtype", lambda: jopt.adam(1e-3, mu_dtype=jnp.int8), TypeError,
                                 "mu_dtype"),
    "lion state dtype int": Case("dtype", lambda: jopt.lion(1e-3, mu_dtype=jnp.int8), TypeError,
                                 "mu_dtype"),
    "sgd accumulator dtype": Case("dtype", lambda: jopt.sgd(
        0.1, momentum=0.9, accumulator_dtype=jnp.int8), TypeError, "accumulator_dtype"),
    "muon complex params": Case("dtype", lambda: jopt.muon(0.02).init(
        {"w": jnp.zeros((3, 3), jnp.complex64)}), TypeError, "params", "real"),
    "adam8 complex params": Case("dtype", lambda: jopt.adam_8bit(1e-3).init(
        {"w": jnp.zeros((3, 3), jnp.complex64)}), TypeError, "params"),
    "adam complex grad real param": Case("dtype", lambda: _init_update(
        jopt.adam(1e-3), {"w": jnp.ones((2, 3), jnp.complex64), "b": jnp.zeros((3,))}), TypeError,
        "params['w']"),
    "prune integer leaf": Case("dtype", lambda: pr.prune(jopt.sgd(0.1), 0.5).init(
        {"w": jnp.ones((4, 4), jnp.int32)}), TypeError, "w", "filter"),
    "penalty integer leaf": Case("dtype", lambda: jopt.l2_penalty(
        {"w": jnp.ones((2,), jnp.int32)}, True, strength=0.1), TypeError, "w", "mask"),
    "dropout integer x": Case("dtype", lambda: nn.dropout(jnp.ones((2, 4), jnp.int32), 0.5,
                                                          key=KEY), TypeError, "x", "astype"),
    "layer norm integer x": Case("dtype", lambda: nn.layer_norm(
        jnp.ones((2, 4), jnp.int32), None, None), TypeError, "x"),
    "batch_norm_stats dtype": Case("dtype", lambda: nn.batch_norm_stats(3, jnp.int32), TypeError,
                                   "dtype"),
    "augment integer images": Case("dtype", lambda: aug.random_brightness(
        jnp.ones((2, 4, 4, 3), jnp.int32), key=KEY, max_delta=0.1), TypeError, "images"),
    "mixup integer labels": Case("dtype", lambda: aug.mixup(IMG, jnp.array([0, 1]), key=KEY),
                                 TypeError, "labels", "one_hot"),
    "quantize integer x": Case("dtype", lambda: qt.quantize(jnp.ones((2, 4), jnp.int32), 8),
                               TypeError, "x", "astype"),
    "calibrate integer samples": Case("dtype", lambda: qt.calibrate(jnp.ones((4,), jnp.int32)),
                                      TypeError, "samples"),
    "sensitivity paths on int leaf": Case("dtype", lambda: qt.layer_sensitivity(
        lambda p, x: jnp.sum(p["w"]), {"w": jnp.ones((4, 4)), "n": jnp.ones((2, 2), jnp.int32)},
        [X], paths="*"), TypeError, "paths"),
    "quant rule on int leaf": Case("dtype", lambda: qt.quantize_params(
        {"w": jnp.ones((4, 4), jnp.int32)}, {"w": 8}), TypeError, "rules", "None"),
    "distill integer logits": Case("dtype", lambda: dl.distill_loss(
        jnp.ones((2, 4), jnp.int32), X, temperature=2.0, alpha=1.0), TypeError, "student_logits"),
    "distill float labels": Case("dtype", lambda: dl.distill_loss(
        X, X, jnp.ones((2,), jnp.float32), temperature=2.0, alpha=0.5), TypeError, "labels"),
    "hint projection dtype": Case("dtype", lambda: dl.init_hint_projection(KEY, 4, 2,
                                                                          dtype=jnp.int32),
                                  TypeError, "dtype"),
    "policy integer dtype": Case("dtype", lambda: prec.Policy(jnp.float32, jnp.int32), TypeError,
                                 "compute_dtype"),
    "scale loss integer": Case("dtype", lambda: prec.scale_loss(
        jnp.int32(1), prec.loss_scale(jopt.sgd(0.1)).init(P2)), TypeError, "loss"),
    "pl data integer inputs": Case("dtype", lambda: pl.Data(
        train=(np.zeros((10, 16), np.int32), np.zeros(10, np.int32)),
        test=(np.zeros((4, 16), np.float32), np.zeros(4, np.int32))), TypeError, "train"),
    # ---- loss-scale-16bit: a float16/bfloat16 loss scale
    "loss scale float16": Case("loss-scale-16bit", lambda: prec.loss_scale(
        jopt.sgd(0.1), initial_scale=jnp.float16(1024.0)), TypeError, "initial_scale", "float32"),
    "loss scale bfloat16": Case("loss-scale-16bit", lambda: prec.loss_scale(
        jopt.sgd(0.1), initial_scale=jnp.bfloat16(1024.0)), TypeError, "initial_scale"),
    # ---- shape: an array of the wrong shape or rank
    "adam transposed grad": Case("shape", lambda: _init_update(
        jopt.adam(1e-3), {"w": jnp.ones((3, 2)), "b": jnp.zeros((3,))}), ValueError,
        "params['w']", "shape"),
    "batch norm stats shape": Case("shape", lambda: nn.batch_norm(
        X, None, None, nn.batch_norm_stats(3), train=True), ValueError, "stats"),
    "layer norm scale shape": Case("shape", lambda: nn.layer_norm(X, jnp.ones(3), None),
                                   ValueError, "scale"),
    "augment not NHWC": Case("shape", lambda: aug.random_flip_left_right(jnp.ones((4, 4, 3)),
                                                                         key=KEY),
                             ValueError, "images", "NHWC"),
    "mixup label shape": Case("shape", lambda: aug.mixup(IMG, jnp.ones((3, 3), jnp.float32),
                                                         key=KEY), ValueError, "labels"),
    "drop_path scalar": Case("shape", lambda: nn.drop_path(jnp.float32(1.0), 0.5, key=KEY),
                             ValueError, "x"),
    "plateau metric shape": Case("shape", lambda: _init_update(
        jopt.reduce_on_plateau(), value=jnp.ones(2)), ValueError, "value"),
    "distill shapes differ": Case("shape", lambda: dl.distill_loss(
        X, jnp.ones((2, 5)), temperature=2.0, alpha=1.0), ValueError, "teacher_logits"),
    "rkd not 2d": Case("shape", lambda: dl.rkd_distance_loss(IMG, IMG), ValueError, "student_emb"),
    "hint channels differ": Case("shape", lambda: dl.hint_loss(IMG, jnp.ones((2, 4, 4, 5)), None),
                                 ValueError, "projection"),
    "int8 dense x shape": Case("shape", lambda: qt.int8_dense(
        jnp.ones((2, 5)), qt.quantize(jnp.ones((4, 3)), 8, granularity="channel", axis=-1),
        x_range=(0.0, 1.0)), ValueError, "x"),
    "quantize_input range shape": Case("shape", lambda: qt.quantize_input(
        X, (jnp.zeros(2), jnp.ones(2))), ValueError, "x_range"),
    "keep mask shape": Case("shape", lambda: pr.remove_units(
        {"a": jnp.ones((2, 3))}, [pr.UnitGroup("h", ("a", 1))], keep={"h": np.ones(2, bool)}),
        ValueError, "keep['h']"),
    "pl distill student output": Case("shape", lambda: _student_mismatch(), ValueError,
                                      "student"),
    "mixed step non-scalar loss": Case("shape", lambda: _mixed_step_vector_loss(), ValueError,
                                       "loss_fn"),
    # ---- keep-mask-dtype: a keep mask that is not boolean (removal)
    "keep mask dtype": Case("dtype", lambda: pr.remove_units(
        {"a": jnp.ones((2, 3))}, [pr.UnitGroup("h", ("a", 1))], keep={"h": np.ones(3)}),
        TypeError, "keep['h']"),
    # ---- tree-structure: a tree whose structure differs from the one it must match
    "adam grad tree": Case("tree-structure", lambda: _init_update(
        jopt.adam(1e-3), {"w": jnp.ones((2, 3))}), ValueError, "grad"),
    "adamw bad mask": Case("tree-structure", lambda: _init_update(
        jopt.adamw(1e-3, mask={"w": True})), ValueError, "mask"),
    "penalty mask tree": Case("tree-structure", lambda: jopt.l2_penalty(
        P2, {"w": True, "x": False}, strength=0.1), ValueError, "mask"),
    "set_hyperparams unknown": Case("unknown-name", lambda: jopt.set_hyperparams(
        jopt.adam(1e-3).init(P2), lr=0.1), ValueError, "lr"),
    "tree storage structure": Case("tree-structure", lambda: pl.tree_storage(
        {"a": jnp.ones(2)}, {"b": None}), ValueError, "trees"),
    "remove_units keep name": Case("unknown-name", lambda: pr.remove_units(
        {"a": jnp.ones((2, 3))}, [pr.UnitGroup("h", ("a", 1))], keep={"g": np.ones(3, bool)}),
        ValueError, "keep"),
    "remove_units path": Case("unknown-name", lambda: pr.remove_units(
        {"a": jnp.ones((2, 3))}, [pr.UnitGroup("h", ("z", 1))]), ValueError, "z"),
    "muon adam_mask routes nothing": Case("tree-structure", lambda: _init_update(
        jopt.muon(0.02, adam_mask={"w": False, "b": False})), ValueError, "adam_mask"),
    # ---- selects-nothing: a filter, rule or mask that selects no parameter
    "prune filter empty": Case("selects-nothing", lambda: pr.prune(
        jopt.sgd(0.1), 0.5, filter={"w": False, "b": False}).init(P2), ValueError, "filter"),
    "quant rule unused": Case("selects-nothing", lambda: qt.quantize_params(P2, {"nope/*": 4}),
                              ValueError, "nope"),
    "match specs strict": Case("selects-nothing", lambda: par.match_specs(
        P2, [("attn/qkv", jax.sharding.PartitionSpec())], strict=True), ValueError, "strict"),
    # ---- non-finite-data: NaN/Inf in data that must be finite (calibration, quantization)
    "calibrate nan": Case("non-finite-data", lambda: qt.calibrate(jnp.array([1.0, jnp.nan])),
                          ValueError, "samples"),
    "quantize inf": Case("non-finite-data", lambda: qt.quantize(jnp.array([1.0, jnp.inf]), 8),
                         ValueError, "x"),
    "observer nan": Case("non-finite-data", lambda: qt.observer_update(
        qt.observer_init(), jnp.array([jnp.nan])), ValueError, "x"),
    # ---- empty: a collection that must not be empty
    "join schedules empty": Case("empty", lambda: jopt.join_schedules([], []), ValueError,
                                 "schedules"),
    "sgdr empty": Case("empty", lambda: jopt.sgdr_schedule([]), ValueError, "cosine_kwargs"),
    "random_choice empty": Case("empty", lambda: aug.random_choice([]), ValueError, "ops"),
    "rand augment no ops": Case("empty", lambda: aug.rand_augment(ops=()), ValueError, "ops"),
    "calibrate empty": Case("empty", lambda: qt.calibrate([]), ValueError, "samples"),
    "distill teacher list empty": Case("empty", lambda: dl.distill_step(
        lambda p, x: x, [], jopt.sgd(0.1), temperature=2.0, alpha=0.5), ValueError,
        "teacher_apply"),
    "pl run no stages": Case("empty", lambda: _run([]), ValueError, "stages"),
    "sparsity rounds empty": Case("empty", lambda: jopt.iterative_sparsity_schedule(
        [], round_steps=10), ValueError, "final_sparsity"),
    # ---- inconsistent: arguments that contradict each other
    "boundaries unsorted": Case("inconsistent", lambda: jopt.join_schedules(
        [jopt.constant_schedule(1.0)] * 3, [5, 3]), ValueError, "boundaries", "increasing"),
    "boundaries count": Case("inconsistent", lambda: jopt.join_schedules(
        [jopt.constant_schedule(1.0)] * 2, [1, 2]), ValueError, "boundaries"),
    "cosine decay <= warmup": Case("inconsistent", lambda: jopt.warmup_cosine_decay_schedule(
        0.0, 1.0, 10, 5), ValueError, "decay_steps"),
    "sparsity initial > final": Case("inconsistent", lambda: jopt.polynomial_sparsity_schedule(
        0.5, 0, 10, initial_sparsity=0.8), ValueError, "initial_sparsity"),
    "prune end < begin": Case("inconsistent", lambda: pr.prune(
        jopt.sgd(0.1), 0.5, begin_step=3, end_step=2), ValueError, "end_step"),
    "batch norm momentum and decay": Case("inconsistent", lambda: nn.batch_norm(
        X, None, None, nn.batch_norm_stats(4), train=True, momentum=0.1, decay=0.9), ValueError,
        "decay"),
    "pl prune n_m and sparsity": Case("inconsistent", lambda: pl.Prune(
        sparsity=0.5, n_m=(2, 4), steps=5), ValueError, "n_m"),
    "pl quantize nf4 bits": Case("inconsistent", lambda: pl.Quantize(bits=3, method="nf4"),
                                 ValueError, "nf4"),
    "quantize group without size": Case("inconsistent", lambda: qt.quantize(
        X, 4, granularity="group"), ValueError, "group_size"),
    "quantize iters non-kmeans": Case("inconsistent", lambda: qt.quantize(X, 4, iters=3),
                                      ValueError, "iters"),
    "distill labels none alpha": Case("inconsistent", lambda: dl.distill_loss(
        X, X, temperature=2.0, alpha=0.5), ValueError, "alpha"),
    "distill labels out of range": Case("inconsistent", lambda: dl.distill_loss(
        X, X, jnp.array([0, 7]), temperature=2.0, alpha=0.5), ValueError, "labels"),
    "fake quant params unknown kw": Case("unknown-keyword", lambda: qt.fake_quant_params(
        P2, {"w": {"bits": 4, "colour": 1}}), TypeError, "colour"),
    "quant tree bits kw": Case("unknown-keyword", lambda: qt.quantize_params(P2, bits=4), TypeError,
                               "default_bits"),
    # ---- n-m: an N:M pattern with N > M or M that does not divide the dimension
    "prune n > m": Case("n-m", lambda: pr.prune(jopt.sgd(0.1), granularity="n_m", n_m=(5, 4)),
                        ValueError, "n_m"),
    "prune m does not divide": Case("n-m", lambda: pr.prune(
        jopt.sgd(0.1), granularity="n_m", n_m=(2, 4)).init({"w": jnp.ones((3, 3))}), ValueError,
        "n_m"),
    "prune n_m not a pair": Case("n-m", lambda: pr.prune(
        jopt.sgd(0.1), granularity="n_m", n_m=4), ValueError, "n_m"),
    # ---- not-divisible: a size that must divide another does not
    "group norm groups do not divide": Case("not-divisible", lambda: nn.group_norm(
        jnp.ones((2, 4, 4, 6)), None, None, num_groups=4), ValueError, "num_groups"),
    "quantize group_size does not divide": Case("not-divisible", lambda: qt.quantize(
        X, 4, granularity="group", group_size=3), ValueError, "group_size"),
    "calibrate bins not multiple of 4": Case("not-divisible", lambda: qt.observer_init(
        bins=6), ValueError, "bins"),
    "shard batch not divisible": Case("not-divisible", lambda: par.shard_batch(
        np.zeros((12, 3), np.float32), _mesh()), ValueError, "batch", "multiple"),
    "pmap batch not divisible": Case("not-divisible", lambda: par.pmap_shard_batch(
        np.zeros((10, 3), np.float32)), ValueError, "batch"),
    "shard params not divisible": Case("not-divisible", lambda: par.shard_params(
        {"b": jnp.zeros(12, jnp.float32)}, _mesh(), [(r"b", jax.sharding.PartitionSpec("data"))]),
        ValueError, "b"),
    # ---- mesh-axis: an axis name the mesh does not have
    "batch sharding axis": Case("mesh-axis", lambda: par.batch_sharding(_mesh(), "model"),
                                ValueError, "axis"),
    "data parallel axis": Case("mesh-axis", lambda: par.data_parallel_step(
        _loss, jopt.sgd(0.1), _mesh(), "batch"), ValueError, "axis"),
    "match specs mesh axis": Case("mesh-axis", lambda: par.match_specs(
        P2, [("w", jax.sharding.PartitionSpec(None, "tensor"))], mesh=_mesh()), ValueError,
        "tensor"),
    "fsdp axis": Case("mesh-axis", lambda: par.fsdp_specs(P2, _mesh(), "tensor"), ValueError,
                      "tensor"),
    "check specs twice": Case("mesh-axis", lambda: par.check_specs(
        {"w": jnp.zeros((8, 8))}, {"w": jax.sharding.PartitionSpec("data", "data")}, _mesh()),
        ValueError, "'data' twice"),
    "batch norm axis_name": Case("object-type", lambda: nn.batch_norm(
        X, None, None, nn.batch_norm_stats(4), train=True, axis_name=3), TypeError, "axis_name"),
    "all_finite axis_name": Case("object-type", lambda: prec.all_finite(P2, axis_name=3),
                                 TypeError, "axis_name"),
    "remove_units path int": Case("object-type", lambda: pr.remove_units(
        {"a": jnp.ones((2, 3))}, [pr.UnitGroup("h", (7, 1))]), TypeError, "path=7"),
    "remove_units entry": Case("object-type", lambda: pr.remove_units(
        {"a": jnp.ones((2, 3))}, [("h", ("a", 1))]), TypeError, "groups"),
    "early stopping value str": Case("object-type", lambda: _init_update(
        jopt.early_stopping(), value="low"), TypeError, "value"),
    "plateau value str": Case("object-type", lambda: _init_update(
        jopt.reduce_on_plateau(), value="low"), TypeError, "value"),
    "skip nonfinite axis_name": Case("object-type", lambda: jopt.skip_nonfinite(
        jopt.sgd(0.1), axis_name=3), TypeError, "axis_name"),
    "data model mesh too big": Case("mesh-axis", lambda: par.data_model_mesh(4, 4), ValueError,
                                    "data * model"),
    # ---- policy-string: a policy or dtype string that does not parse
    "policy unknown dtype": Case("policy-string", lambda: prec.get_policy("params=float33"),
                                 ValueError, "float33"),
    "policy unparsable": Case("policy-string", lambda: prec.get_policy("fast"), ValueError,
                              "fast", "preset"),
    "policy dtype name": Case("policy-string", lambda: prec.Policy("bf17"), ValueError,
                              "param_dtype"),
    "policy keep regex": Case("policy-string", lambda: prec.mixed_precision_step(
        _loss, prec.loss_scale(jopt.sgd(0.1)), "mixed_bfloat16", keep_float32="("),
        ValueError, "keep_float32"),
    # ---- missing-keyword: a required keyword-only argument left out
    "early stopping without value": Case("missing-keyword", lambda: _init_update(
        jopt.early_stopping()), TypeError, "value=", "update"),
    "plateau without value": Case("missing-keyword", lambda: _init_update(
        jopt.reduce_on_plateau()), TypeError, "value="),
    "augment without key": Case("missing-keyword", lambda: aug.random_flip_left_right(
        IMG, key=None), TypeError, "key"),
    "dropout key not a key": Case("prng-key", lambda: nn.dropout(X, 0.5, key=3),
                                  TypeError, "key", "jax.random.key"),
    "augment key floats": Case("prng-key", lambda: aug.gaussian_noise(
        IMG, key=jnp.ones(2), std=0.1), TypeError, "key"),
    "prune seed str": Case("prng-key", lambda: pr.prune(jopt.sgd(0.1), 0.5, seed="a"),
                           TypeError, "seed"),
    "hint projection key": Case("prng-key", lambda: dl.init_hint_projection(0, 4, 2), TypeError,
                                "key"),
    "pl prune without sparsity": Case("inconsistent", lambda: pl.Prune(steps=5), ValueError,
                                      "sparsity", "required"),
    "int8 dense x_range None": Case("object-type", lambda: qt.int8_dense(
        X, qt.quantize(jnp.ones((4, 3)), 8), x_range=None), TypeError, "x_range"),
    "weight decay without params": Case("needs-params", lambda: jopt.adamw(1e-3).update(
        P2, jopt.adamw(1e-3).init(P2)), ValueError, "params"),
    "lars without params": Case("needs-params", lambda: jopt.lars(0.1).update(
        P2, jopt.lars(0.1).init(P2)), ValueError, "params"),
    "prune without params": Case("needs-params", lambda: pr.prune(jopt.sgd(0.1), 0.5).update(
        P2, pr.prune(jopt.sgd(0.1), 0.5).init(P2)), ValueError, "params"),
    # ---- schedule-driven: set_hyperparams on a value a schedule drives
    "set_hyperparams schedule": Case("schedule-driven", lambda: jopt.set_hyperparams(
        jopt.adam(optax.constant_schedule(1e-3)).init(P2), learning_rate=0.1), ValueError,
        "learning_rate", "schedule"),
    "set_hyperparams out of range": Case("hyperparameter-range", lambda: jopt.set_hyperparams(
        jopt.adam(1e-3).init(P2), b1=1.5), ValueError, "b1"),
    "set_hyperparams wrong type": Case("hyperparameter-type", lambda: jopt.set_hyperparams(
        jopt.adam(1e-3).init(P2), learning_rate="fast"), TypeError, "learning_rate"),
    # ---- wrong-state: a state that does not come from this transform
    "loss scale state": Case("wrong-state", lambda: prec.loss_scale(jopt.sgd(0.1)).update(
        P2, jopt.sgd(0.1).init(P2), P2), TypeError, "state"),
    "skip nonfinite state": Case("wrong-state", lambda: jopt.skip_nonfinite(jopt.sgd(0.1)).update(
        P2, jopt.sgd(0.1).init(P2), P2), TypeError, "state"),
    "mixed step state": Case("wrong-state", lambda: prec.mixed_precision_step(
        _loss, prec.loss_scale(jopt.sgd(0.1)), "float32")(P2, jopt.sgd(0.1).init(P2),
                                                          (X[:, :2], X[:, :3])),
        TypeError, "state", "loss_scale"),
    # ---- pipeline-data: a stage that needs data it was not given / data it cannot use
    "pl distill unlabeled": Case("pipeline-data", lambda: _run(
        [pl.Train(steps=1), pl.Distill(steps=1, transfer="unlabeled")]), ValueError, "stages[1]",
        "unlabeled"),
    "pl data label count": Case("pipeline-data", lambda: pl.Data(
        train=(np.zeros((10, 16), np.float32), np.zeros(9, np.int32)),
        test=(np.zeros((4, 16), np.float32), np.zeros(4, np.int32))), ValueError, "train"),
    "pl run labels vs outputs": Case("pipeline-data", lambda: _labels_vs_outputs(), ValueError,
                                     "model"),
    # ---- out-dir: an output folder that cannot be written
    "pl run out_dir": Case("out-dir", lambda: _run([pl.Train(steps=1)], out_dir=_UNWRITABLE()),
                           ValueError, "out_dir", "write"),
}


def _sensitivity():
  return qt.Sensitivity(float_loss=0.0, bits=(4, 8), loss_increase={"w": {4: 0.1, 8: 0.0}},
                        nbytes={"w": {4: 8, 8: 16}}, leaf_nbytes={"w": 64},
                        quantize_kwargs={})


def _student_mismatch():
  from tests.test_pipeline_orders import tiny_model
  return _run([pl.Distill(steps=1, student=tiny_model(1, sizes=(16, 8, 3)))])


def _labels_vs_outputs():
  from tests.test_pipeline_orders import tiny_data, tiny_model
  return pl.run(tiny_model(sizes=(16, 8, 3)), [pl.Train(steps=1)], tiny_data(),
                optimizer=jopt.adam(1e-3), batch_size=32, progress=False)


def _mixed_step_vector_loss():
  tx = prec.loss_scale(jopt.sgd(0.1))
  step = prec.mixed_precision_step(lambda p, b: b[0] @ p["w"], tx, "float32")
  return step(P2, tx.init(P2), (jnp.ones((2, 2)), None))


_TMP: list[pathlib.Path] = []


def _UNWRITABLE():  # pylint: disable=invalid-name
  return _unwritable(_TMP[0])


@pytest.fixture(autouse=True)
def _tmp(tmp_path):
  _TMP[:] = [tmp_path]
  yield


@pytest.mark.parametrize("name", list(CASES))
def test_error_catalogue(name):
  case = CASES[name]
  with pytest.raises(Exception) as err:
    case.make()
  assert type(err.value) is case.exc or isinstance(err.value, case.exc) and \
      type(err.value).__module__.startswith("jopt"), (
          f"{name}: expected {case.exc.__name__}, got {type(err.value).__name__}: {err.value}")
  msg = str(err.value)
  assert case.arg in msg, f"{name}: the message does not name {case.arg!r}: {msg}"
  if case.fix is not None:
    assert case.fix in msg, f"{name}: the message does not hold the fix {case.fix!r}: {msg}"


# ---------------------------------------------------------------- page <-> table

def _doc_classes() -> dict[str, str]:
  """``class id -> exception type`` from every table row of docs/errors.md."""
  out: dict[str, str] = {}
  for line in DOC.read_text().splitlines():
    m = re.match(r"\|\s*`([a-z0-9-]+)`\s*\|[^|]*\|\s*`(\w+)`\s*\|", line)
    if m:
      assert m.group(1) not in out, f"class {m.group(1)!r} has two rows in docs/errors.md"
      out[m.group(1)] = m.group(2)
  return out


def test_every_documented_class_has_a_case_and_every_case_a_class():
  documented = _doc_classes()
  assert len(documented) >= 20, f"parsed only {len(documented)} classes from {DOC}"
  used = {c.cls for c in CASES.values()}
  assert set(documented) - used == set(), "classes in docs/errors.md without a case"
  assert used - set(documented) == set(), "cases whose class is not in docs/errors.md"


def test_each_class_raises_the_documented_type():
  documented = _doc_classes()
  for name, case in CASES.items():
    assert case.exc.__name__ == documented[case.cls], (
        f"{name}: class {case.cls!r} is documented as {documented[case.cls]},"
        f" but the case expects {case.exc.__name__}")


def test_every_public_namespace_is_covered():
  """Each namespace the catalogue is about has at least one case (by the call it makes)."""
  import inspect
  sources = "\n".join(inspect.getsource(c.make) for c in CASES.values())
  for prefix in ("jopt.", "nn.", "aug.", "pr.", "qt.", "dl.", "pl.", "prec.", "par."):
    assert prefix in sources, f"no case calls {prefix}*"
