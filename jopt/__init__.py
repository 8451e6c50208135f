"""jopt: training and compression techniques for JAX as pure, optax-compatible functions.

Every optimizer returns an ``optax.GradientTransformationExtraArgs`` and keeps its
numeric hyperparameters in its state (see :func:`hyperparams`, :func:`set_hyperparams`).

  >>> params = {"w": jnp.array([1.0, -2.0])}
  >>> tx = optax.chain(optax.clip_by_global_norm(10.0), jopt.adam(0.1))   # chains with optax
  >>> state = tx.init(params)
  >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)   # [2, -4]
  >>> updates, state = tx.update(grads, state, params)
  >>> params = optax.apply_updates(params, updates)
  >>> print(np.asarray(params["w"]).round(4))   # Adam's first step: -0.1 * sign(g)
  [ 0.9 -1.9]
  >>> state = jopt.set_hyperparams(state, learning_rate=0.01)   # no recompile
  >>> print(round(float(jopt.hyperparams(state)["learning_rate"]), 6))
  0.01
"""

from jopt._core.hyperparams import (
    hyperparams as hyperparams,
    set_hyperparams as set_hyperparams,
)
from jopt.optimizers import (
    adam_8bit as adam_8bit,
    adamw_8bit as adamw_8bit,
    adam as adam,
    adamw as adamw,
    nadam as nadam,
    nadamw as nadamw,
    sgd as sgd,
    adagrad as adagrad,
    rmsprop as rmsprop,
    adadelta as adadelta,
    amsgrad as amsgrad,
    adamax as adamax,
    radam as radam,
    lamb as lamb,
    lars as lars,
    lion as lion,
    adafactor as adafactor,
    muon as muon,
    schedule_free_adamw as schedule_free_adamw,
    schedule_free_eval_params as schedule_free_eval_params,
    AdadeltaState as AdadeltaState,
    AdafactorMomentumState as AdafactorMomentumState,
    AdafactorState as AdafactorState,
    AdagradState as AdagradState,
    Adam8bitState as Adam8bitState,
    AdamState as AdamState,
    AdamaxState as AdamaxState,
    AmsgradState as AmsgradState,
    CenteredRmspropMomentumState as CenteredRmspropMomentumState,
    CenteredRmspropState as CenteredRmspropState,
    LambState as LambState,
    LarsState as LarsState,
    LionState as LionState,
    MuonState as MuonState,
    RadamState as RadamState,
    RmspropMomentumState as RmspropMomentumState,
    RmspropState as RmspropState,
    ScheduleFreeState as ScheduleFreeState,
    SgdMomentumState as SgdMomentumState,
    SgdState as SgdState,
)
from jopt.regularizers import (
    add_decayed_weights as add_decayed_weights,
    AddDecayedWeightsState as AddDecayedWeightsState,
    l1_penalty as l1_penalty,
    l2_penalty as l2_penalty,
    elastic_net_penalty as elastic_net_penalty,
    weights_mask as weights_mask,
    proximal_l1 as proximal_l1,
    ProximalL1State as ProximalL1State,
    early_stopping as early_stopping,
    early_stopping_state as early_stopping_state,
    stop_requested as stop_requested,
    EarlyStoppingState as EarlyStoppingState,
)
from jopt.schedules import (
    constant_schedule as constant_schedule,
    linear_schedule as linear_schedule,
    polynomial_schedule as polynomial_schedule,
    exponential_decay as exponential_decay,
    piecewise_constant_schedule as piecewise_constant_schedule,
    join_schedules as join_schedules,
    cosine_decay_schedule as cosine_decay_schedule,
    warmup_cosine_decay_schedule as warmup_cosine_decay_schedule,
    warmup_exponential_decay_schedule as warmup_exponential_decay_schedule,
    sgdr_schedule as sgdr_schedule,
    cosine_warm_restarts_schedule as cosine_warm_restarts_schedule,
    cosine_onecycle_schedule as cosine_onecycle_schedule,
    linear_onecycle_schedule as linear_onecycle_schedule,
    cyclic_schedule as cyclic_schedule,
    warmup_stable_decay_schedule as warmup_stable_decay_schedule,
    polynomial_sparsity_schedule as polynomial_sparsity_schedule,
    one_shot_sparsity_schedule as one_shot_sparsity_schedule,
    iterative_sparsity_schedule as iterative_sparsity_schedule,
    reduce_on_plateau as reduce_on_plateau,
    ReduceOnPlateauState as ReduceOnPlateauState,
)
from jopt import augment as augment
from jopt import distill as distill
from jopt.distill import distill_loss as distill_loss
from jopt import nn as nn
from jopt import parallel as parallel
from jopt import pipeline as pipeline
from jopt import precision as precision
from jopt import prune as prune
from jopt import quant as quant
from jopt.wrappers import (
    accumulate as accumulate,
    AccumulateState as AccumulateState,
    skip_nonfinite as skip_nonfinite,
    SkipNonfiniteState as SkipNonfiniteState,
)

__version__ = "0.1.0"

__all__ = [
    "hyperparams",
    "set_hyperparams",
    "adam_8bit",
    "adamw_8bit",
    "adam",
    "adamw",
    "nadam",
    "nadamw",
    "sgd",
    "adagrad",
    "rmsprop",
    "adadelta",
    "amsgrad",
    "adamax",
    "radam",
    "lamb",
    "lars",
    "lion",
    "adafactor",
    "muon",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "AdadeltaState",
    "AdafactorMomentumState",
    "AdafactorState",
    "AdagradState",
    "Adam8bitState",
    "AdamState",
    "AdamaxState",
    "AmsgradState",
    "CenteredRmspropMomentumState",
    "CenteredRmspropState",
    "LambState",
    "LarsState",
    "LionState",
    "MuonState",
    "RadamState",
    "RmspropMomentumState",
    "RmspropState",
    "ScheduleFreeState",
    "SgdMomentumState",
    "SgdState",
    "add_decayed_weights",
    "AddDecayedWeightsState",
    "l1_penalty",
    "l2_penalty",
    "elastic_net_penalty",
    "weights_mask",
    "proximal_l1",
    "ProximalL1State",
    "early_stopping",
    "early_stopping_state",
    "stop_requested",
    "EarlyStoppingState",
    "constant_schedule",
    "linear_schedule",
    "polynomial_schedule",
    "exponential_decay",
    "piecewise_constant_schedule",
    "join_schedules",
    "cosine_decay_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
    "sgdr_schedule",
    "cosine_warm_restarts_schedule",
    "cosine_onecycle_schedule",
    "linear_onecycle_schedule",
    "cyclic_schedule",
    "warmup_stable_decay_schedule",
    "polynomial_sparsity_schedule",
    "one_shot_sparsity_schedule",
    "iterative_sparsity_schedule",
    "reduce_on_plateau",
    "ReduceOnPlateauState",
    "accumulate",
    "AccumulateState",
    "skip_nonfinite",
    "SkipNonfiniteState",
    "distill_loss",
    "augment",
    "distill",
    "nn",
    "parallel",
    "pipeline",
    "precision",
    "prune",
    "quant",
]
