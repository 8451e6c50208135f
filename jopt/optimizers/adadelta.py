"""Placeholder: being written."""

__all__ = ['adadelta']

def adadelta(*args, **kwargs):
  raise NotImplementedError('adadelta')


