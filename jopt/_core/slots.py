"""Integer-coded state slots: which code stands for zero, so a masking transform can zero them.

A transform that masks entries (``jopt.prune``) zeroes the wrapped optimizer's
params-shaped floating slots at pruned entries. A slot stored as integer codes
(``jopt.adam_8bit``'s uint8 moments) has no "0.0" to write: its state type
registers, per field, the code that decodes to exactly zero.
"""

from __future__ import annotations

__all__ = ["register_zero_codes", "zero_codes"]

_ZERO_CODES: dict[type, dict[str, int]] = {}


def register_zero_codes(state_type: type, codes: dict[str, int]) -> None:
  """Declare that ``state_type``'s field ``f`` decodes to 0.0 at integer code ``codes[f]``."""
  missing = [f for f in codes if f not in getattr(state_type, "_fields", ())]
  if missing:
    raise ValueError(f"register_zero_codes: {state_type.__name__} has no field(s) {missing}.")
  _ZERO_CODES[state_type] = dict(codes)


def zero_codes(state_type: type) -> dict[str, int] | None:
  """The registered ``field -> zero code`` map of ``state_type``, or ``None``."""
  return _ZERO_CODES.get(state_type)
