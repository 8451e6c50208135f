"""Placeholder: being written."""

__all__ = ['radam']

def radam(*args, **kwargs):
  raise NotImplementedError('radam')


