"""Knowledge distillation: logit, feature (hint), attention-transfer and relational losses,
and a train step with a frozen teacher.

* :func:`distill_loss` (Hinton et al.): T²-scaled KL to the softened teacher, mixed
  with the hard-label cross-entropy; α weighs the soft term.
* :func:`hint_loss` with :func:`init_hint_projection` (FitNets), and
  :func:`attention_transfer_loss` with :func:`attention_map` (Zagoruyko & Komodakis).
* :func:`rkd_distance_loss` and :func:`rkd_angle_loss` (Park et al.).
* :func:`distill_step`: a pure, jit-compiled step; the teacher (or an ensemble,
  logits averaged) runs under ``stop_gradient`` and is never updated.
"""

from jopt.distill.features import (
    attention_map as attention_map,
    attention_transfer_loss as attention_transfer_loss,
    hint_loss as hint_loss,
    init_hint_projection as init_hint_projection,
)
from jopt.distill.logits import (
    distill_loss as distill_loss,
    soft_targets as soft_targets,
)
from jopt.distill.relational import (
    rkd_angle_loss as rkd_angle_loss,
    rkd_distance_loss as rkd_distance_loss,
)
from jopt.distill.step import distill_step as distill_step

__all__ = [
    "distill_loss",
    "soft_targets",
    "hint_loss",
    "init_hint_projection",
    "attention_map",
    "attention_transfer_loss",
    "rkd_distance_loss",
    "rkd_angle_loss",
    "distill_step",
]
