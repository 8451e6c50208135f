"""Registry entries: large-batch (LAMB, LARS), Lion, Adafactor, Muon, Schedule-Free."""

import optax
import optax.contrib

import jopt
from tests.registry import Entry

# The parity model (tests/problems.parity_init) holds w1 (6, 5), b1 (5,), w2 (5, 3), s ().
_MATRICES = {"w1": True, "b1": False, "w2": True, "s": False}


def _matrices_only(params):
  return {k: v.ndim == 2 for k, v in params.items()}


def _optax_muon(variant, **kwargs):
  """optax.contrib.muon for jopt.muon(..., variant="optax") parity cases."""
  assert variant == "optax", variant
  return optax.contrib.muon(**kwargs)


ENTRIES = [
    Entry("lamb", jopt.lamb, dict(learning_rate=0.01), optax.lamb,
          parity=(dict(learning_rate=0.01),
                  dict(learning_rate=0.02, b1=0.8, b2=0.99, eps=1e-4, eps_root=1e-9,
                       weight_decay=0.1, mask=_MATRICES))),
    Entry("lars", jopt.lars, dict(learning_rate=1.0, weight_decay=1e-4), optax.lars,
          parity=(dict(learning_rate=1.0),
                  dict(learning_rate=0.5, weight_decay=0.01, weight_decay_mask=_MATRICES,
                       trust_coefficient=0.01, eps=1e-6, trust_ratio_mask=_matrices_only,
                       momentum=0.8, nesterov=True))),
    Entry("lion", jopt.lion, dict(learning_rate=0.01), optax.lion,
          parity=(dict(learning_rate=0.01),
                  dict(learning_rate=0.003, b1=0.8, b2=0.95, weight_decay=0.1, mask=_MATRICES))),
    # min_dim_size_to_factor=3 factors the quadratic's (3, 4) weight and the
    # parity model's (6, 5) and (5, 3) weights.
    Entry("adafactor", jopt.adafactor, dict(learning_rate=0.03, min_dim_size_to_factor=3),
          optax.adafactor,
          parity=(dict(learning_rate=0.01, min_dim_size_to_factor=3),
                  dict(learning_rate=0.05, min_dim_size_to_factor=3, decay_rate=0.7,
                       clipping_threshold=0.5, multiply_by_parameter_scale=False, eps=1e-20),
                  dict(learning_rate=0.01, factored=False)),
          mu_dtype_arg=None),
    # Weight decay is multiplied by the learning rate in jopt (optax: not), so
    # the decayed parity case runs at learning_rate=None (i.e. 1), where both agree.
    Entry("adafactor_momentum", jopt.adafactor,
          dict(learning_rate=0.03, min_dim_size_to_factor=3, momentum=0.9,
               weight_decay_rate=1e-3),
          optax.adafactor,
          # dtype_momentum=None: with the default float32 buffer optax multiplies it by
          # the decay in float32 before upcasting (jopt upcasts first): ~6e-8 apart.
          parity=(dict(learning_rate=0.01, min_dim_size_to_factor=3, momentum=0.9,
                       dtype_momentum=None),
                  dict(learning_rate=None, min_dim_size_to_factor=3, momentum=0.8,
                       dtype_momentum=None, clipping_threshold=None, weight_decay_rate=0.01,
                       weight_decay_mask=_MATRICES)),
          mu_dtype_arg="dtype_momentum"),
    # Property tests run the default (reference) rule; parity with optax runs
    # variant="optax" (optax_fn drops it). Two dense parity cases here;
    # test_muon.py compares the other preconditionings and coefficient tables,
    # and the reference rule with NumPy and torch.optim.Muon.
    Entry("muon", jopt.muon, dict(learning_rate=0.01), _optax_muon,
          parity=(dict(learning_rate=0.01, variant="optax"),
                  dict(learning_rate=0.02, beta=0.9, eps=1e-6, weight_decay=0.1,
                       weight_decay_mask={"w1": True, "b1": False, "w2": False, "s": False},
                       adam_b1=0.8, adam_b2=0.99, adam_eps_root=1e-9, adam_weight_decay=0.01,
                       adam_learning_rate=0.005, ns_coeffs="dion", consistent_rms=0.2,
                       preconditioning="spectral", variant="optax"))),
    Entry("muon_adaptive", jopt.muon, dict(learning_rate=0.01, adaptive=True, nesterov=False),
          _optax_muon,
          parity=(dict(learning_rate=0.01, adaptive=True, nesterov=False, variant="optax"),)),
    # The warmup case differs by ~2e-8 because optax evaluates its warmup
    # schedule in float32 (int32 counts) even under x64; jopt in the
    # hyperparameter dtype. Same convention otherwise: test_schedule_free.py
    # matches optax to ~1e-14 given the same warmup as a float64 schedule.
    Entry("schedule_free_adamw", jopt.schedule_free_adamw, dict(learning_rate=0.1),
          optax.contrib.schedule_free_adamw,
          parity=(dict(learning_rate=0.01),
                  dict(learning_rate=0.02, warmup_steps=10, b1=0.8, b2=0.99, eps=1e-6,
                       weight_decay=0.05, weight_lr_power=1.0)),
          mu_dtype_arg="state_dtype", zero_lr_freezes=False),
]
