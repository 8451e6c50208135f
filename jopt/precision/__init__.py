"""jopt.precision: dtype policies, loss scaling and a mixed-precision train step.

A :class:`Policy` (from :func:`get_policy`, e.g. ``"mixed_bfloat16"`` or
``"params=float32,compute=float16,output=float32"``) casts parameter trees and
model inputs / outputs, keeping norm parameters in float32 by rule;
:func:`in_float32` runs an op (softmax, a norm) in float32 inside a
half-precision model. :func:`loss_scale` wraps any optax optimizer with static
or dynamic loss scaling (torch ``GradScaler``'s rule, a float32 scale, skipped
non-finite steps, a finite check agreed across devices inside ``shard_map``),
:func:`scale_loss` scales the loss before differentiation, and
:func:`mixed_precision_step` puts the pieces into one jitted step.
"""

from jopt.precision.loss_scale import (
    LossScaleState as LossScaleState,
    all_finite as all_finite,
    loss_scale as loss_scale,
    scale_loss as scale_loss,
)
from jopt.precision.policy import (
    DTYPE_ALIASES as DTYPE_ALIASES,
    KEEP_FLOAT32 as KEEP_FLOAT32,
    PRESETS as PRESETS,
    Policy as Policy,
    get_policy as get_policy,
    in_float32 as in_float32,
)
from jopt.precision.step import mixed_precision_step as mixed_precision_step

__all__ = ["Policy", "get_policy", "in_float32", "KEEP_FLOAT32", "DTYPE_ALIASES",
           "PRESETS", "loss_scale", "LossScaleState", "scale_loss", "all_finite",
           "mixed_precision_step"]
