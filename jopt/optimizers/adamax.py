"""Placeholder: being written."""

__all__ = ['adamax']

def adamax(*args, **kwargs):
  raise NotImplementedError('adamax')


