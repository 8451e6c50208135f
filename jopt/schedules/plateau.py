"""Placeholder: being written."""

__all__ = ['reduce_on_plateau']

def reduce_on_plateau(*args, **kwargs):
  raise NotImplementedError('reduce_on_plateau')


