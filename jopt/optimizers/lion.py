"""Placeholder: being written."""

__all__ = ['lion']

def lion(*args, **kwargs):
  raise NotImplementedError('lion')


