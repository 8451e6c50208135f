"""jopt: training and compression techniques for JAX as pure, optax-compatible functions.

Every optimizer returns an ``optax.GradientTransformationExtraArgs`` and keeps its
numeric hyperparameters in its state (see :func:`hyperparams`, :func:`set_hyperparams`).
"""

from jopt._core.hyperparams import (
    hyperparams as hyperparams,
    set_hyperparams as set_hyperparams,
)
from jopt.optimizers import (
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
)
from jopt.regularizers import (
    add_decayed_weights as add_decayed_weights,
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
    reduce_on_plateau as reduce_on_plateau,
)

__version__ = "0.1.0"

__all__ = [
    "hyperparams",
    "set_hyperparams",
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
    "add_decayed_weights",
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
    "reduce_on_plateau",
]
