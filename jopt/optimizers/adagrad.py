"""Placeholder: being written."""

__all__ = ['adagrad']

def adagrad(*args, **kwargs):
  raise NotImplementedError('adagrad')


