"""Regularizers: penalties and weight decay as transforms."""

from jopt.regularizers.weight_decay import (
    add_decayed_weights as add_decayed_weights,
    AddDecayedWeightsState as AddDecayedWeightsState,
)

__all__ = [
    "add_decayed_weights",
    "AddDecayedWeightsState",
]
