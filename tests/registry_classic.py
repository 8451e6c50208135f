"""Registry entries: SGD, Adagrad, RMSProp, Adadelta, AMSGrad, Adamax, RAdam.

``optax_fn`` is optax's function of the same name, or a small wrapper built only
from optax parts where a jopt addition has an optax equivalent (SGD's coupled
``weight_decay`` is ``optax.add_decayed_weights`` in front; Adagrad's
``lr_decay`` is a learning-rate schedule). Options with no optax counterpart
(``eps_in_sqrt=False`` in Adagrad, ``eps_in_max=False`` in Adamax, RAdam's torch
convention) are checked against torch or a NumPy transcription instead.

Parity arg sets avoid chaotic settings: e.g. ``rmsprop(0.01)`` with its tiny
default ``eps`` on ``problems.parity_loss`` amplifies a 1e-16 perturbation of
*optax against itself* to ~1e-6 within 60 steps, which says nothing about either
implementation.
"""

import optax

import jopt
from tests.registry import Entry

PARITY_MASK = {"w1": True, "b1": False, "w2": True, "s": False}


def _optax_sgd(learning_rate, momentum=None, nesterov=False, accumulator_dtype=None, *,
               weight_decay=0.0):
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.sgd(learning_rate, momentum, nesterov, accumulator_dtype))


def _optax_adagrad(learning_rate, initial_accumulator_value=0.1, eps=1e-7, *, lr_decay=0.0):
  lr = lambda count: learning_rate / (1 + count * lr_decay)  # count is 0-based
  return optax.adagrad(lr, initial_accumulator_value, eps)


ENTRIES = [
    Entry("sgd", jopt.sgd, dict(learning_rate=0.1), _optax_sgd,
          parity=(dict(learning_rate=0.05),
                  dict(learning_rate=0.05, weight_decay=0.1)),
          rosenbrock_args=dict(learning_rate=1e-3), mu_dtype_arg=None),
    Entry("sgd_momentum", jopt.sgd, dict(learning_rate=0.05, momentum=0.9), _optax_sgd,
          parity=(dict(learning_rate=0.02, momentum=0.9),
                  dict(learning_rate=0.02, momentum=0.5, weight_decay=0.05)),
          rosenbrock_args=dict(learning_rate=1e-3, momentum=0.9),
          mu_dtype_arg="accumulator_dtype"),
    Entry("sgd_nesterov", jopt.sgd, dict(learning_rate=0.05, momentum=0.9, nesterov=True),
          _optax_sgd,
          parity=(dict(learning_rate=0.02, momentum=0.9, nesterov=True),
                  dict(learning_rate=0.02, momentum=0.8, nesterov=True, weight_decay=0.05)),
          rosenbrock_args=dict(learning_rate=1e-3, momentum=0.9, nesterov=True),
          mu_dtype_arg="accumulator_dtype"),
    Entry("adagrad", jopt.adagrad, dict(learning_rate=0.5), _optax_adagrad,
          parity=(dict(learning_rate=0.1),
                  dict(learning_rate=0.2, initial_accumulator_value=0.0, eps=1e-6),
                  dict(learning_rate=0.2, initial_accumulator_value=0.5, lr_decay=0.05)),
          mu_dtype_arg="nu_dtype"),
    Entry("rmsprop", jopt.rmsprop, dict(learning_rate=0.01), optax.rmsprop,
          parity=(dict(learning_rate=1e-3),
                  dict(learning_rate=3e-3, decay=0.95, eps=1e-4, eps_in_sqrt=False,
                       initial_scale=1.0),
                  dict(learning_rate=3e-3, eps=1e-4, bias_correction=True),
                  dict(learning_rate=1e-3, momentum=0.9, nesterov=True, eps=1e-4)),
          mu_dtype_arg="nu_dtype"),
    Entry("rmsprop_centered", jopt.rmsprop,
          dict(learning_rate=0.01, centered=True, momentum=0.9), optax.rmsprop,
          parity=(dict(learning_rate=1e-3, centered=True, momentum=0.9, eps=1e-4),
                  dict(learning_rate=1e-3, centered=True, eps=1e-4, bias_correction=True),
                  dict(learning_rate=1e-3, centered=True, eps=1e-4, eps_in_sqrt=False),
                  dict(learning_rate=1e-3, centered=True, momentum=0.8, nesterov=True,
                       eps=1e-4, initial_scale=0.5, decay=0.95)),
          mu_dtype_arg="mu_dtype"),
    Entry("adadelta", jopt.adadelta, dict(learning_rate=1.0), optax.adadelta,
          parity=(dict(learning_rate=1.0),
                  dict(learning_rate=0.5, rho=0.95, eps=1e-5, weight_decay=0.05),
                  dict(learning_rate=1.0, weight_decay=0.1, weight_decay_mask=PARITY_MASK)),
          mu_dtype_arg="nu_dtype"),
    Entry("amsgrad", jopt.amsgrad, dict(learning_rate=0.1), optax.amsgrad,
          parity=(dict(learning_rate=0.01),
                  dict(learning_rate=0.01, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-9),
                  dict(learning_rate=0.01, bias_correction_mu=False, bias_correction_nu=False)),
          ),
    Entry("adamax", jopt.adamax, dict(learning_rate=0.1), optax.adamax,
          parity=(dict(learning_rate=0.01),
                  dict(learning_rate=0.02, b1=0.8, b2=0.99, eps=1e-5)),
          ),
    Entry("radam", jopt.radam, dict(learning_rate=0.1), optax.radam,
          parity=(dict(learning_rate=0.01),
                  dict(learning_rate=0.01, b2=0.99, eps=1e-6, eps_root=1e-9, nesterov=True),
                  dict(learning_rate=0.01, b1=0.8, b2=0.95, threshold=6.0)),
          rosenbrock_args=dict(learning_rate=3e-3, b2=0.99)),
]
