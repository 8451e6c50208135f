"""Placeholder: being written."""

__all__ = ['schedule_free_adamw', 'schedule_free_eval_params']

def schedule_free_adamw(*args, **kwargs):
  raise NotImplementedError('schedule_free_adamw')


def schedule_free_eval_params(*args, **kwargs):
  raise NotImplementedError('schedule_free_eval_params')


