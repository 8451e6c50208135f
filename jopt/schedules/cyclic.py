"""Placeholder: being written."""

__all__ = ['cyclic_schedule']

def cyclic_schedule(*args, **kwargs):
  raise NotImplementedError('cyclic_schedule')


