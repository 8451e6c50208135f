"""Placeholder: being written."""

__all__ = ['lamb']

def lamb(*args, **kwargs):
  raise NotImplementedError('lamb')


