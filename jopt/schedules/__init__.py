"""Schedules: functions ``step -> value``, and the stateful plateau transform."""

from jopt.schedules.basic import (
    constant_schedule as constant_schedule,
    linear_schedule as linear_schedule,
    polynomial_schedule as polynomial_schedule,
    exponential_decay as exponential_decay,
    piecewise_constant_schedule as piecewise_constant_schedule,
    join_schedules as join_schedules,
)
from jopt.schedules.cosine import (
    cosine_decay_schedule as cosine_decay_schedule,
    warmup_cosine_decay_schedule as warmup_cosine_decay_schedule,
    warmup_exponential_decay_schedule as warmup_exponential_decay_schedule,
    sgdr_schedule as sgdr_schedule,
    cosine_warm_restarts_schedule as cosine_warm_restarts_schedule,
)
from jopt.schedules.onecycle import (
    cosine_onecycle_schedule as cosine_onecycle_schedule,
    linear_onecycle_schedule as linear_onecycle_schedule,
)
from jopt.schedules.cyclic import (
    cyclic_schedule as cyclic_schedule,
)
from jopt.schedules.wsd import (
    warmup_stable_decay_schedule as warmup_stable_decay_schedule,
)
from jopt.schedules.sparsity import (
    polynomial_sparsity_schedule as polynomial_sparsity_schedule,
    one_shot_sparsity_schedule as one_shot_sparsity_schedule,
    iterative_sparsity_schedule as iterative_sparsity_schedule,
)
from jopt.schedules.plateau import (
    reduce_on_plateau as reduce_on_plateau,
    ReduceOnPlateauState as ReduceOnPlateauState,
)

__all__ = [
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
]
