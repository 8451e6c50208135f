"""Placeholder: being written."""

__all__ = ['adafactor']

def adafactor(*args, **kwargs):
  raise NotImplementedError('adafactor')


