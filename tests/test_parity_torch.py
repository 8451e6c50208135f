"""Step-by-step parity with ``torch.optim`` in float64.

Both sides start from ``problems.parity_init`` and each step take the gradient of
``problems.parity_loss`` at their *own* current parameters (torch's gradient is
computed by JAX at torch's parameters and written to ``.grad``), so any
difference in the update rule compounds over the trajectory. Where jopt's
default convention differs from torch's (eps placement, initial accumulator,
threshold comparison) the jopt option that reproduces torch is passed and named
in the case; the defaults that differ are listed in each docstring.

The tolerance is far below the 1e-5 a convention difference would need to hide
behind: float64 rounding alone accounts for ~1e-15 here.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import jopt
from tests import problems

STEPS = 80
TOL = 1e-9


def trajectory_error(jopt_tx, make_torch, steps=STEPS):
  """Max over steps of ``problems.rel_err(jopt params, torch params)``; fails on non-finite."""
  grad = jax.jit(jax.grad(problems.parity_loss))
  p = problems.parity_init(jnp.float64)
  names = sorted(p)
  tp = {k: torch.tensor(np.asarray(p[k]), dtype=torch.float64, requires_grad=True)
        for k in names}
  opt = make_torch([tp[k] for k in names])
  s = jopt_tx.init(p)
  worst = 0.0
  for _ in range(steps):
    u, s = jopt_tx.update(grad(p), s, p)
    p = optax.apply_updates(p, u)
    g = grad({k: jnp.asarray(t.detach().numpy()) for k, t in tp.items()})
    for k, t in tp.items():
      t.grad = torch.from_numpy(np.array(g[k], dtype=np.float64))
    opt.step()
    q = {k: jnp.asarray(t.detach().numpy()) for k, t in tp.items()}
    err = problems.rel_err(p, q)
    assert math.isfinite(err), "non-finite parameters"
    worst = max(worst, err)
  return worst


T = torch.optim
CASES = {
    # SGD: same defaults apart from torch's lr (1e-3); dampening 0.
    "sgd": (lambda: jopt.sgd(0.05),
            lambda ps: T.SGD(ps, lr=0.05, foreach=False)),
    "sgd_momentum": (lambda: jopt.sgd(0.02, momentum=0.9),
                     lambda ps: T.SGD(ps, lr=0.02, momentum=0.9, foreach=False)),
    "sgd_nesterov": (lambda: jopt.sgd(0.02, momentum=0.9, nesterov=True),
                     lambda ps: T.SGD(ps, lr=0.02, momentum=0.9, nesterov=True,
                                      foreach=False)),
    "sgd_weight_decay": (lambda: jopt.sgd(0.02, momentum=0.9, weight_decay=0.05),
                         lambda ps: T.SGD(ps, lr=0.02, momentum=0.9, weight_decay=0.05,
                                          foreach=False)),
    "sgd_nesterov_weight_decay": (
        lambda: jopt.sgd(0.02, momentum=0.8, nesterov=True, weight_decay=0.1),
        lambda ps: T.SGD(ps, lr=0.02, momentum=0.8, nesterov=True, weight_decay=0.1,
                         foreach=False)),
    # Adagrad: torch puts eps outside the root and starts the sum at 0, eps=1e-10.
    "adagrad": (lambda: jopt.adagrad(0.1, initial_accumulator_value=0.0, eps=1e-10,
                                     eps_in_sqrt=False),
                lambda ps: T.Adagrad(ps, lr=0.1, foreach=False)),
    "adagrad_init_lr_decay": (
        lambda: jopt.adagrad(0.2, initial_accumulator_value=0.3, eps=1e-6,
                             eps_in_sqrt=False, lr_decay=0.02),
        lambda ps: T.Adagrad(ps, lr=0.2, initial_accumulator_value=0.3, eps=1e-6,
                             lr_decay=0.02, foreach=False)),
    "adagrad_weight_decay": (
        lambda: optax.chain(jopt.add_decayed_weights(0.05),
                            jopt.adagrad(0.1, initial_accumulator_value=0.0, eps=1e-10,
                                         eps_in_sqrt=False)),
        lambda ps: T.Adagrad(ps, lr=0.1, weight_decay=0.05, foreach=False)),
    # RMSprop: torch's alpha is our decay; eps outside the root.
    "rmsprop": (lambda: jopt.rmsprop(1e-3, decay=0.99, eps=1e-8, eps_in_sqrt=False),
                lambda ps: T.RMSprop(ps, lr=1e-3, alpha=0.99, eps=1e-8, foreach=False)),
    "rmsprop_centered_momentum": (
        lambda: jopt.rmsprop(1e-3, decay=0.99, eps=1e-8, eps_in_sqrt=False, centered=True,
                             momentum=0.9),
        lambda ps: T.RMSprop(ps, lr=1e-3, alpha=0.99, eps=1e-8, centered=True, momentum=0.9,
                             foreach=False)),
    "rmsprop_momentum_weight_decay": (
        lambda: optax.chain(jopt.add_decayed_weights(0.01),
                            jopt.rmsprop(1e-3, decay=0.9, eps=1e-6, eps_in_sqrt=False,
                                         momentum=0.5)),
        lambda ps: T.RMSprop(ps, lr=1e-3, alpha=0.9, eps=1e-6, momentum=0.5,
                             weight_decay=0.01, foreach=False)),
    # Adadelta: the same rule; torch's lr default is 1.0 (jopt: learning_rate=None).
    "adadelta": (lambda: jopt.adadelta(),
                 lambda ps: T.Adadelta(ps, lr=1.0, foreach=False)),
    "adadelta_weight_decay": (
        lambda: jopt.adadelta(0.5, rho=0.95, eps=1e-5, weight_decay=0.05),
        lambda ps: T.Adadelta(ps, lr=0.5, rho=0.95, eps=1e-5, weight_decay=0.05,
                              foreach=False)),
    # Adam / AdamW: same rule; torch's AdamW default weight decay is 1e-2, ours 1e-4.
    "adam": (lambda: jopt.adam(0.01),
             lambda ps: T.Adam(ps, lr=0.01, foreach=False)),
    "adam_betas": (lambda: jopt.adam(0.02, b1=0.8, b2=0.99, eps=1e-6),
                   lambda ps: T.Adam(ps, lr=0.02, betas=(0.8, 0.99), eps=1e-6,
                                     foreach=False)),
    "adamw": (lambda: jopt.adamw(0.01, weight_decay=0.01),
              lambda ps: T.AdamW(ps, lr=0.01, weight_decay=0.01, foreach=False)),
    "adamw_strong_decay": (lambda: jopt.adamw(0.01, b2=0.99, weight_decay=0.5),
                           lambda ps: T.AdamW(ps, lr=0.01, betas=(0.9, 0.99),
                                              weight_decay=0.5, foreach=False)),
    # Adamax: eps inside the max, as optax; torch's lr default is 2e-3.
    "adamax": (lambda: jopt.adamax(0.01, eps_in_max=True),
               lambda ps: T.Adamax(ps, lr=0.01, foreach=False)),
    "adamax_weight_decay": (
        lambda: optax.chain(jopt.add_decayed_weights(0.05),
                            jopt.adamax(0.02, b1=0.8, b2=0.99, eps=1e-5)),
        lambda ps: T.Adamax(ps, lr=0.02, betas=(0.8, 0.99), eps=1e-5, weight_decay=0.05,
                            foreach=False)),
    # RAdam: torch divides eps by sqrt(1 - b2^t) too and rectifies only when rho > 5.
    "radam": (lambda: jopt.radam(0.01, convention="torch"),
              lambda ps: T.RAdam(ps, lr=0.01, foreach=False)),
    "radam_large_eps_weight_decay": (
        lambda: optax.chain(jopt.add_decayed_weights(0.05),
                            jopt.radam(0.01, b2=0.99, eps=1e-3, convention="torch")),
        lambda ps: T.RAdam(ps, lr=0.01, betas=(0.9, 0.99), eps=1e-3, weight_decay=0.05,
                           foreach=False)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_torch_float64(name, x64, record_property):
  make_jopt, make_torch = CASES[name]
  err = trajectory_error(make_jopt(), make_torch)
  record_property("max_rel_err", err)
  assert err <= TOL, err


@pytest.mark.parametrize("make_default,make_torch", [
    # optax's conventions (eps in the root / added after bias correction) are
    # visibly different from torch's with a large eps: the options above matter.
    (lambda: jopt.radam(0.01, b2=0.99, eps=1e-3),
     lambda ps: T.RAdam(ps, lr=0.01, betas=(0.9, 0.99), eps=1e-3, foreach=False)),
    (lambda: jopt.adagrad(0.1, initial_accumulator_value=0.0, eps=1e-3),
     lambda ps: T.Adagrad(ps, lr=0.1, eps=1e-3, foreach=False)),
    (lambda: jopt.rmsprop(1e-3, decay=0.99, eps=1e-3),
     lambda ps: T.RMSprop(ps, lr=1e-3, alpha=0.99, eps=1e-3, foreach=False)),
], ids=["radam", "adagrad", "rmsprop"])
def test_default_conventions_differ_from_torch(make_default, make_torch, x64):
  assert trajectory_error(make_default(), make_torch, steps=20) > 1e-4
