"""Placeholder: being written."""

__all__ = ['warmup_stable_decay_schedule']

def warmup_stable_decay_schedule(*args, **kwargs):
  raise NotImplementedError('warmup_stable_decay_schedule')


