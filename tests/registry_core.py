"""Registry entries: the Adam family."""

import optax

import jopt
from tests.registry import Entry

ENTRIES = [
    Entry("adam", jopt.adam, dict(learning_rate=0.1), optax.adam,
          parity=(dict(learning_rate=0.01), dict(learning_rate=0.02, b1=0.8, b2=0.99, eps=1e-6,
                                                   eps_root=1e-9, nesterov=True))),
    Entry("adamw", jopt.adamw, dict(learning_rate=0.1, weight_decay=1e-3), optax.adamw,
          parity=(dict(learning_rate=0.01, weight_decay=0.1),
                  dict(learning_rate=0.01, weight_decay=0.05, nesterov=True))),
    Entry("nadam", jopt.nadam, dict(learning_rate=0.1), optax.nadam,
          parity=(dict(learning_rate=0.01, b2=0.99),)),
    Entry("nadamw", jopt.nadamw, dict(learning_rate=0.1, weight_decay=1e-3), optax.nadamw,
          parity=(dict(learning_rate=0.01, weight_decay=0.1),)),
    # min_8bit_size=0 and small blocks: every test parameter takes the quantized path
    Entry("adam_8bit", jopt.adam_8bit, dict(learning_rate=0.1, block_size=4, min_8bit_size=0),
          mu_dtype_arg=None),
    Entry("adamw_8bit", jopt.adamw_8bit,
          dict(learning_rate=0.1, weight_decay=1e-3, block_size=8, min_8bit_size=0),
          mu_dtype_arg=None),
]
