"""Placeholder: being written."""

__all__ = ['muon']

def muon(*args, **kwargs):
  raise NotImplementedError('muon')


