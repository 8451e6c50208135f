"""Wrappers: transforms that change when or how another transform runs."""

from jopt.wrappers.accumulate import (
    AccumulateState as AccumulateState,
    accumulate as accumulate,
)

from jopt.wrappers.skip_nonfinite import (
    SkipNonfiniteState as SkipNonfiniteState,
    skip_nonfinite as skip_nonfinite,
)

__all__ = ["AccumulateState", "accumulate", "SkipNonfiniteState", "skip_nonfinite"]
