"""Parity with ``torch.optim.lr_scheduler`` in float64.

torch's lr is read from a dummy optimizer's param group after each
``scheduler.step()`` and compared with the jopt schedule at the same step
(step ``t`` = torch's lr after ``t`` calls to ``step()``). The error reported
is relative (``|ours - torch| / |torch|``; absolute over ``base_lr`` where
torch's lr is exactly 0).

Tolerances are the tightest power of ten above the measured error, per
scheduler (``TOL``; measured on CPU in the comment). Closed forms agree to a
few ulps. The recursive schedulers (``ExponentialLR``, ``CosineAnnealingLR``,
``LinearLR``, ``PolynomialLR``) update ``lr <- lr * ratio`` each step and
accumulate rounding roughly linearly in the step count. ``CyclicLR`` finds the
cycle position through the float ``1 + t / L - cycle``, which loses about
``1e-16 * cycle`` absolutely; jopt uses exact integers (against exact rational
arithmetic jopt is within 2.4e-16 where torch is 5.8e-14 at step 4100).
``ReduceLROnPlateau`` multiplies lr by ``factor`` per reduction where jopt
multiplies the scale, then ``base_lr * scale``: ulp level.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as tls

import jopt

BASE = 0.1

TOL = {                                  # measured max rel. error (float64, CPU)
    "StepLR": 1e-15,                     # 1.7e-16
    "MultiStepLR": 1e-15,                # 0
    "ExponentialLR": 1e-14,              # 1.8e-15 over 300 steps
    "CosineAnnealingLR": 1e-13,          # 1.5e-14 over 100 steps
    "LinearLR": 1e-15,                   # 5.6e-16
    "PolynomialLR": 1e-14,               # 2.0e-15
    "CosineAnnealingWarmRestarts": 1e-15,  # 0
    "CyclicLR": 1e-13,                   # 5.8e-14 at step 4100 (torch's rounding)
    "ReduceLROnPlateau": 1e-15,          # 5.3e-16
}
assert max(TOL.values()) <= 1e-10


def _optimizer(lr):
  param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
  return torch.optim.SGD([param], lr=lr)


def torch_lrs(make, steps, base=BASE):
  opt = _optimizer(base)
  sched = make(opt)
  lrs = [opt.param_groups[0]["lr"]]
  for _ in range(steps):
    opt.step()
    sched.step()
    lrs.append(opt.param_groups[0]["lr"])
  return np.array(lrs, np.float64)


def rel_err(ours, theirs, base=BASE):
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  denom = np.where(theirs == 0, base, np.abs(theirs))
  return float(np.max(np.abs(ours - theirs) / denom))


def ours_at(sched, steps):
  return np.array([float(sched(t)) for t in range(steps + 1)])


# (torch class name, torch factory, jopt schedule, steps)
CASES = [
    ("StepLR", lambda o: tls.StepLR(o, step_size=7, gamma=0.5),
     lambda: jopt.exponential_decay(BASE, 7, 0.5, staircase=True), 100),
    ("StepLR", lambda o: tls.StepLR(o, step_size=30, gamma=0.1),
     lambda: jopt.exponential_decay(BASE, 30, 0.1, staircase=True), 200),
    ("MultiStepLR", lambda o: tls.MultiStepLR(o, milestones=[10, 25, 60], gamma=0.3),
     lambda: jopt.piecewise_constant_schedule(BASE, {10: 0.3, 25: 0.3, 60: 0.3}), 100),
    ("MultiStepLR", lambda o: tls.MultiStepLR(o, milestones=[5, 5, 40], gamma=0.5),
     lambda: jopt.piecewise_constant_schedule(BASE, {5: 0.25, 40: 0.5}), 60),
    ("ExponentialLR", lambda o: tls.ExponentialLR(o, gamma=0.97),
     lambda: jopt.exponential_decay(BASE, 1, 0.97), 300),
    ("ExponentialLR", lambda o: tls.ExponentialLR(o, gamma=0.5),
     lambda: jopt.exponential_decay(BASE, 1, 0.5), 60),
    ("CosineAnnealingLR", lambda o: tls.CosineAnnealingLR(o, T_max=100),
     lambda: jopt.cosine_decay_schedule(BASE, 100), 100),
    ("CosineAnnealingLR", lambda o: tls.CosineAnnealingLR(o, T_max=37, eta_min=0.01),
     lambda: jopt.cosine_decay_schedule(BASE, 37, alpha=0.01 / BASE), 37),
    ("LinearLR", lambda o: tls.LinearLR(o, start_factor=0.25, end_factor=1.0, total_iters=20),
     lambda: jopt.linear_schedule(0.25 * BASE, BASE, 20), 60),
    ("LinearLR", lambda o: tls.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=50),
     lambda: jopt.linear_schedule(BASE, 0.1 * BASE, 50), 80),
    ("PolynomialLR", lambda o: tls.PolynomialLR(o, total_iters=40, power=2.0),
     lambda: jopt.polynomial_schedule(BASE, 0.0, 2.0, 40), 60),
    ("PolynomialLR", lambda o: tls.PolynomialLR(o, total_iters=25, power=0.7),
     lambda: jopt.polynomial_schedule(BASE, 0.0, 0.7, 25), 40),
    ("CosineAnnealingWarmRestarts", lambda o: tls.CosineAnnealingWarmRestarts(o, T_0=10),
     lambda: jopt.cosine_warm_restarts_schedule(BASE, 10), 100),
    ("CosineAnnealingWarmRestarts",
     lambda o: tls.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=0.005),
     lambda: jopt.cosine_warm_restarts_schedule(BASE, 3, 2, min_value=0.005), 200),
    ("CosineAnnealingWarmRestarts",
     lambda o: tls.CosineAnnealingWarmRestarts(o, T_0=1, T_mult=3),
     lambda: jopt.cosine_warm_restarts_schedule(BASE, 1, 3), 130),
    ("CyclicLR", lambda o: tls.CyclicLR(o, base_lr=0.01, max_lr=BASE, step_size_up=5,
                                        cycle_momentum=False),
     lambda: jopt.cyclic_schedule(0.01, BASE, 5), 60),
    ("CyclicLR", lambda o: tls.CyclicLR(o, base_lr=0.01, max_lr=BASE, step_size_up=4,
                                        step_size_down=9, mode="triangular2",
                                        cycle_momentum=False),
     lambda: jopt.cyclic_schedule(0.01, BASE, 4, 9, mode="triangular2"), 120),
    ("CyclicLR", lambda o: tls.CyclicLR(o, base_lr=0.01, max_lr=BASE, step_size_up=6,
                                        step_size_down=3, mode="exp_range", gamma=0.98,
                                        cycle_momentum=False),
     lambda: jopt.cyclic_schedule(0.01, BASE, 6, 3, mode="exp_range", gamma=0.98), 150),
    ("CyclicLR", lambda o: tls.CyclicLR(o, base_lr=0.001, max_lr=BASE, step_size_up=2000,
                                        cycle_momentum=False),
     lambda: jopt.cyclic_schedule(0.001, BASE, 2000), 4100),
]


@pytest.mark.parametrize("name,make_torch,make_ours,steps", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_matches_torch_scheduler(name, make_torch, make_ours, steps, x64):
  theirs = torch_lrs(make_torch, steps)
  sched = make_ours()
  ours = np.asarray(sched(jnp.arange(steps + 1)))          # all steps at once
  err = rel_err(ours, theirs)
  assert err <= TOL[name], (name, err)
  picks = np.unique(np.linspace(0, steps, 25).astype(int))    # and one step at a time, jitted
  jitted = jax.jit(sched)
  one = np.array([float(jitted(jnp.int32(t))) for t in picks])
  assert rel_err(one, theirs[picks]) <= TOL[name]


def test_cosine_annealing_lr_differs_after_t_max(x64):
  """Documented difference: torch's CosineAnnealingLR rises again after T_max."""
  theirs = torch_lrs(lambda o: tls.CosineAnnealingLR(o, T_max=10), 20)
  ours = ours_at(jopt.cosine_decay_schedule(BASE, 10), 20)
  assert rel_err(ours[:11], theirs[:11]) <= TOL["CosineAnnealingLR"]
  assert np.all(ours[11:] == 0.0) and theirs[20] == pytest.approx(BASE, rel=1e-12)


# ------------------------------------------------------------------ ReduceLROnPlateau


def _metric_sequence(seed, n=160):
  """Improvements, long plateaus, tiny (sub-threshold) gains, and spikes."""
  rng = np.random.default_rng(seed)
  out, level = [], 10.0
  while len(out) < n:
    kind = rng.integers(4)
    length = int(rng.integers(1, 15))
    if kind == 0:     # improving
      out += [level * 0.9 ** (k + 1) for k in range(length)]
      level *= 0.9 ** length
    elif kind == 1:   # flat
      out += [level] * length
    elif kind == 2:   # gains below the default rel threshold 1e-4
      out += [level * (1 - 1e-5 * (k + 1)) for k in range(length)]
    else:             # noisy, mostly worse
      out += list(level * (1 + 0.2 * rng.random(length)))
  return [float(x) for x in out[:n]]


PLATEAU_CASES = [
    dict(mode="min", factor=0.5, patience=2),
    dict(mode="min", factor=0.1, patience=0),
    dict(mode="min", factor=0.5, patience=3, threshold=0.05, threshold_mode="abs"),
    dict(mode="min", factor=0.7, patience=1, cooldown=3),
    dict(mode="max", factor=0.5, patience=2, threshold=0.01),
    dict(mode="max", factor=0.3, patience=1, threshold=0.5, threshold_mode="abs",
         cooldown=2),
    dict(mode="min", factor=0.3, patience=0, min_lr=0.004),
    dict(mode="min", factor=0.9, patience=0, eps=0.001),               # eps stops the decay
    dict(mode="max", factor=0.5, patience=4, cooldown=5, min_lr=0.001, threshold=0.0),
]


def _ours_kwargs(kw, base):
  ours = {k: v for k, v in kw.items() if k not in ("min_lr", "eps")}
  ours["min_scale"] = kw.get("min_lr", 0.0) / base
  ours["eps"] = kw.get("eps", 1e-8) / base      # torch's eps is an absolute lr difference
  return ours


def _torch_plateau(kw, metrics, base):
  opt = _optimizer(base)
  sched = tls.ReduceLROnPlateau(opt, **kw)
  lrs = []
  for m in metrics:
    opt.step()
    sched.step(m)
    lrs.append(opt.param_groups[0]["lr"])
  return np.array(lrs)


def _ours_plateau(kw, metrics, base, jit):
  tx = jopt.reduce_on_plateau(**_ours_kwargs(kw, base))
  params = {"w": jnp.ones(3)}
  state = tx.init(params)
  update = jax.jit(tx.update) if jit else tx.update
  scales = []
  for m in metrics:
    u, state = update(params, state, value=jnp.float64(m) if jit else m)
    np.testing.assert_array_equal(u["w"], np.full(3, float(state.scale)))
    scales.append(float(state.scale))
  return base * np.array(scales)


def _scan_plateau(kw, metrics, base):
  tx = jopt.reduce_on_plateau(**_ours_kwargs(kw, base))
  params = {"w": jnp.ones(3)}

  def body(state, m):
    _, state = tx.update(params, state, value=m)
    return state, state.scale

  _, scales = jax.jit(lambda xs: jax.lax.scan(body, tx.init(params), xs))(
      jnp.asarray(metrics, jnp.float64))
  return base * np.asarray(scales)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kw", PLATEAU_CASES, ids=lambda kw: "-".join(
    f"{k}={v}" for k, v in kw.items()))
def test_reduce_on_plateau_matches_torch(kw, seed, x64):
  base = 0.1 if seed == 0 else 1.0
  metrics = _metric_sequence(seed)
  if kw["mode"] == "max":
    metrics = [-m for m in metrics]
  theirs = _torch_plateau(kw, metrics, base)
  assert len(set(theirs.tolist())) > 1, "the sequence must trigger at least one reduction"
  for ours in (_ours_plateau(kw, metrics, base, jit=False),
               _ours_plateau(kw, metrics, base, jit=True),
               _scan_plateau(kw, metrics, base)):
    # same decisions at the same steps ...
    np.testing.assert_array_equal(np.flatnonzero(np.diff(ours)),
                                  np.flatnonzero(np.diff(theirs)))
    # ... and the same lr after every step
    assert rel_err(ours, theirs, base) <= TOL["ReduceLROnPlateau"]


def test_reduce_on_plateau_nan_metrics_match_torch(x64):
  """Beyond the NaN-free sequences: torch counts a NaN as a bad epoch; so does jopt."""
  kw = dict(mode="min", factor=0.5, patience=1, cooldown=1)
  metrics = [1.0, 0.5, math.nan, math.nan, math.nan, 0.4, math.nan, 0.3, math.nan,
             math.nan, math.nan, math.nan, 0.2]
  theirs = _torch_plateau(kw, metrics, BASE)
  ours = _ours_plateau(kw, metrics, BASE, jit=True)
  assert rel_err(ours, theirs) <= TOL["ReduceLROnPlateau"]
  assert len(set(theirs.tolist())) > 1


def test_reduce_on_plateau_min_lr_reached_exactly(x64):
  kw = dict(mode="min", factor=0.5, patience=0, min_lr=0.03)
  metrics = [1.0] + [2.0] * 10
  theirs = _torch_plateau(kw, metrics, BASE)
  ours = _ours_plateau(kw, metrics, BASE, jit=False)
  assert theirs[-1] == 0.03 and ours[-1] == pytest.approx(0.03, rel=1e-15)
