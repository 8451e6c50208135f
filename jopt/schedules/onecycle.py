"""Placeholder: being written."""

__all__ = ['cosine_onecycle_schedule', 'linear_onecycle_schedule']

def cosine_onecycle_schedule(*args, **kwargs):
  raise NotImplementedError('cosine_onecycle_schedule')


def linear_onecycle_schedule(*args, **kwargs):
  raise NotImplementedError('linear_onecycle_schedule')


