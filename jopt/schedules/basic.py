"""Placeholder: being written."""

__all__ = ['constant_schedule', 'linear_schedule', 'polynomial_schedule', 'exponential_decay', 'piecewise_constant_schedule', 'join_schedules']

def constant_schedule(*args, **kwargs):
  raise NotImplementedError('constant_schedule')


def linear_schedule(*args, **kwargs):
  raise NotImplementedError('linear_schedule')


def polynomial_schedule(*args, **kwargs):
  raise NotImplementedError('polynomial_schedule')


def exponential_decay(*args, **kwargs):
  raise NotImplementedError('exponential_decay')


def piecewise_constant_schedule(*args, **kwargs):
  raise NotImplementedError('piecewise_constant_schedule')


def join_schedules(*args, **kwargs):
  raise NotImplementedError('join_schedules')


