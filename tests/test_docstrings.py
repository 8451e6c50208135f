"""Every public function documents itself: summary, math, arguments, example, reference."""

import inspect

import pytest

import jopt

FUNCTIONS = [n for n in jopt.__all__ if inspect.isfunction(getattr(jopt, n))]
# helpers about state rather than an update rule carry no math
NO_MATH = {"hyperparams", "set_hyperparams", "schedule_free_eval_params"}


@pytest.mark.parametrize("name", FUNCTIONS)
def test_public_function_docstring(name):
  doc = inspect.getdoc(getattr(jopt, name))
  assert doc, f"jopt.{name} has no docstring"
  summary = doc.splitlines()[0]
  assert summary.strip() and len(summary) <= 100, summary
  assert "Example" in doc, f"jopt.{name}: no example"
  if name not in NO_MATH:
    assert ":math:" in doc or ".. math::" in doc, f"jopt.{name}: no update rule in math"
    assert "Args" in doc, f"jopt.{name}: no Args section"
    assert "Reference" in doc, f"jopt.{name}: no reference"


def test_every_state_class_is_documented():
  for name in jopt.__all__:
    obj = getattr(jopt, name)
    if inspect.isclass(obj):
      assert inspect.getdoc(obj), name
