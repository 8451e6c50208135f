"""Placeholder: being written."""

__all__ = ['rmsprop']

def rmsprop(*args, **kwargs):
  raise NotImplementedError('rmsprop')


