"""Optimizers: jopt's own implementations under optax's names."""

from jopt.optimizers.adam import (
    adam as adam,
    adamw as adamw,
    nadam as nadam,
    nadamw as nadamw,
)
from jopt.optimizers.sgd import (
    sgd as sgd,
)
from jopt.optimizers.adagrad import (
    adagrad as adagrad,
)
from jopt.optimizers.rmsprop import (
    rmsprop as rmsprop,
)
from jopt.optimizers.adadelta import (
    adadelta as adadelta,
)
from jopt.optimizers.amsgrad import (
    amsgrad as amsgrad,
)
from jopt.optimizers.adamax import (
    adamax as adamax,
)
from jopt.optimizers.radam import (
    radam as radam,
)
from jopt.optimizers.lamb import (
    lamb as lamb,
)
from jopt.optimizers.lars import (
    lars as lars,
)
from jopt.optimizers.lion import (
    lion as lion,
)
from jopt.optimizers.adafactor import (
    adafactor as adafactor,
)
from jopt.optimizers.muon import (
    muon as muon,
)
from jopt.optimizers.schedule_free import (
    schedule_free_adamw as schedule_free_adamw,
    schedule_free_eval_params as schedule_free_eval_params,
)

__all__ = [
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
]
