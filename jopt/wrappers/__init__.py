"""Wrappers: transforms that change when or how another transform runs."""

from jopt.wrappers.accumulate import (
    AccumulateState as AccumulateState,
    accumulate as accumulate,
)

__all__ = ["AccumulateState", "accumulate"]
