"""Placeholder: being written."""

__all__ = ['cosine_decay_schedule', 'warmup_cosine_decay_schedule', 'warmup_exponential_decay_schedule', 'sgdr_schedule', 'cosine_warm_restarts_schedule']

def cosine_decay_schedule(*args, **kwargs):
  raise NotImplementedError('cosine_decay_schedule')


def warmup_cosine_decay_schedule(*args, **kwargs):
  raise NotImplementedError('warmup_cosine_decay_schedule')


def warmup_exponential_decay_schedule(*args, **kwargs):
  raise NotImplementedError('warmup_exponential_decay_schedule')


def sgdr_schedule(*args, **kwargs):
  raise NotImplementedError('sgdr_schedule')


def cosine_warm_restarts_schedule(*args, **kwargs):
  raise NotImplementedError('cosine_warm_restarts_schedule')


