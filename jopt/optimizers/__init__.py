"""Optimizers: jopt's own implementations under optax's names."""

from jopt.optimizers.adam import (
    adam as adam,
    adamw as adamw,
    nadam as nadam,
    nadamw as nadamw,
    AdamState as AdamState,
)
from jopt.optimizers.adam_8bit import (
    adam_8bit as adam_8bit,
    adamw_8bit as adamw_8bit,
    Adam8bitState as Adam8bitState,
)
from jopt.optimizers.sgd import (
    sgd as sgd,
    SgdState as SgdState,
    SgdMomentumState as SgdMomentumState,
)
from jopt.optimizers.adagrad import (
    adagrad as adagrad,
    AdagradState as AdagradState,
)
from jopt.optimizers.rmsprop import (
    rmsprop as rmsprop,
    RmspropState as RmspropState,
    RmspropMomentumState as RmspropMomentumState,
    CenteredRmspropState as CenteredRmspropState,
    CenteredRmspropMomentumState as CenteredRmspropMomentumState,
)
from jopt.optimizers.adadelta import (
    adadelta as adadelta,
    AdadeltaState as AdadeltaState,
)
from jopt.optimizers.amsgrad import (
    amsgrad as amsgrad,
    AmsgradState as AmsgradState,
)
from jopt.optimizers.adamax import (
    adamax as adamax,
    AdamaxState as AdamaxState,
)
from jopt.optimizers.radam import (
    radam as radam,
    RadamState as RadamState,
)
from jopt.optimizers.lamb import (
    lamb as lamb,
    LambState as LambState,
)
from jopt.optimizers.lars import (
    lars as lars,
    LarsState as LarsState,
)
from jopt.optimizers.lion import (
    lion as lion,
    LionState as LionState,
)
from jopt.optimizers.adafactor import (
    adafactor as adafactor,
    AdafactorState as AdafactorState,
    AdafactorMomentumState as AdafactorMomentumState,
)
from jopt.optimizers.muon import (
    muon as muon,
    MuonState as MuonState,
)
from jopt.optimizers.schedule_free import (
    schedule_free_adamw as schedule_free_adamw,
    schedule_free_eval_params as schedule_free_eval_params,
    ScheduleFreeState as ScheduleFreeState,
)

__all__ = [
    "adam_8bit",
    "adamw_8bit",
    "Adam8bitState",
    "AdamState",
    "adam",
    "adamw",
    "nadam",
    "nadamw",
    "sgd",
    "SgdState",
    "SgdMomentumState",
    "adagrad",
    "AdagradState",
    "rmsprop",
    "RmspropState",
    "RmspropMomentumState",
    "CenteredRmspropState",
    "CenteredRmspropMomentumState",
    "adadelta",
    "AdadeltaState",
    "amsgrad",
    "AmsgradState",
    "adamax",
    "AdamaxState",
    "radam",
    "RadamState",
    "lamb",
    "LambState",
    "lars",
    "LarsState",
    "lion",
    "LionState",
    "adafactor",
    "AdafactorState",
    "AdafactorMomentumState",
    "muon",
    "MuonState",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "ScheduleFreeState",
]
