"""One registry of every jopt optimizer; property and parity tests are parametrized over it.

Each :class:`Entry` says how to build the optimizer for the generic property tests
(``args``), which optax function shares its name and which argument sets to
compare against it step by step (``parity``), and how to make it converge on the
test problems. Entries live in ``registry_*.py`` files, one per family.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class Entry:
  name: str
  fn: Callable[..., Any]                      # the jopt constructor
  args: dict[str, Any]                        # args for property tests (quadratic convergence)
  optax_fn: Callable[..., Any] | None = None  # optax's function of the same name
  parity: tuple[dict[str, Any], ...] = ()     # arg sets compared with optax in float64
  rosenbrock_args: dict[str, Any] | None = None  # args for Rosenbrock (default: args)
  rosenbrock_steps: int = 3000
  quadratic_steps: int = 500
  mu_dtype_arg: str | None = "mu_dtype"       # name of the first-moment dtype option, if any
  # A zero learning rate freezes the parameters. Schedule-free methods keep moving
  # the evaluation point toward the running average, by design, so they set False.
  zero_lr_freezes: bool = True

  def make(self, **overrides):
    return self.fn(**{**self.args, **overrides})


def all_entries() -> list[Entry]:
  from tests import registry_core, registry_classic, registry_modern  # pylint: disable=import-outside-toplevel
  out = []
  for mod in (registry_core, registry_classic, registry_modern):
    out.extend(mod.ENTRIES)
  names = [e.name for e in out]
  assert len(names) == len(set(names)), names
  return out
