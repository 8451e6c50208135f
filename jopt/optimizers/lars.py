"""Placeholder: being written."""

__all__ = ['lars']

def lars(*args, **kwargs):
  raise NotImplementedError('lars')


