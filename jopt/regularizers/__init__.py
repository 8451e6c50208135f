"""Regularizers: loss-side penalties, weight decay, proximal L1 and early stopping."""

from jopt.regularizers.early_stopping import (
    early_stopping as early_stopping,
    early_stopping_state as early_stopping_state,
    stop_requested as stop_requested,
    EarlyStoppingState as EarlyStoppingState,
)
from jopt.regularizers.penalties import (
    elastic_net_penalty as elastic_net_penalty,
    l1_penalty as l1_penalty,
    l2_penalty as l2_penalty,
    weights_mask as weights_mask,
)
from jopt.regularizers.proximal_l1 import (
    proximal_l1 as proximal_l1,
    ProximalL1State as ProximalL1State,
)
from jopt.regularizers.weight_decay import (
    add_decayed_weights as add_decayed_weights,
    AddDecayedWeightsState as AddDecayedWeightsState,
)

__all__ = [
    "add_decayed_weights",
    "AddDecayedWeightsState",
    "early_stopping",
    "early_stopping_state",
    "stop_requested",
    "EarlyStoppingState",
    "elastic_net_penalty",
    "l1_penalty",
    "l2_penalty",
    "weights_mask",
    "proximal_l1",
    "ProximalL1State",
]
