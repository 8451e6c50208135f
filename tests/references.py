"""Independent references that more than one test file checks against."""

import numpy as np


def relative_index_entries(flat, b):
  """Deep Compression's relative-index entries, walked one non-zero at a time: each non-zero
  is one entry, and a gap longer than 2^b - 1 zeros adds a filler every 2^b positions."""
  span, prev, count = 2 ** b, -1, 0
  for i in np.flatnonzero(flat):
    count += (i - prev - 1) // span + 1
    prev = i
  return count
