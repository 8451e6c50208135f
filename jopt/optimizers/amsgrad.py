"""Placeholder: being written."""

__all__ = ['amsgrad']

def amsgrad(*args, **kwargs):
  raise NotImplementedError('amsgrad')


