"""Placeholder: being written."""

__all__ = ['add_decayed_weights']

def add_decayed_weights(*args, **kwargs):
  raise NotImplementedError('add_decayed_weights')


