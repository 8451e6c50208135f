"""Placeholder: being written."""

__all__ = ['sgd']

def sgd(*args, **kwargs):
  raise NotImplementedError('sgd')


