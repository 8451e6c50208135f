"""Every public function documents itself: summary, math, arguments, example, reference.

Public means a name in ``__all__`` of ``jopt`` or of one of its public namespaces
(the namespaces in ``jopt.__all__``: see ``tests/public_api.py``).
"""

import inspect

import pytest

import jopt
from tests.public_api import NAMESPACES

FUNCTIONS = [f"{ns}.{n}" for ns, mod in NAMESPACES.items() for n in mod.__all__
             if inspect.isfunction(getattr(mod, n))]
CLASSES = [f"{ns}.{n}" for ns, mod in NAMESPACES.items() for n in mod.__all__
           if inspect.isclass(getattr(mod, n))]
# helpers about state rather than an update rule carry no math
NO_MATH = {"jopt.hyperparams", "jopt.set_hyperparams", "jopt.schedule_free_eval_params"}


def _obj(qualname):
  ns, name = qualname.rsplit(".", 1)
  return getattr(NAMESPACES[ns], name)


def test_the_namespaces_are_public():
  assert {"nn", "augment", "prune", "quant", "distill", "pipeline", "precision", "parallel"} <= set(jopt.__all__)
  assert len(FUNCTIONS) > 60 and len(CLASSES) > 20


@pytest.mark.parametrize("name", FUNCTIONS)
def test_public_function_docstring(name):
  doc = inspect.getdoc(_obj(name))
  assert doc, f"{name} has no docstring"
  summary = doc.splitlines()[0]
  assert summary.strip() and len(summary) <= 100, summary
  assert "Example" in doc, f"{name}: no example"
  if name not in NO_MATH:
    assert ":math:" in doc or ".. math::" in doc, f"{name}: no update rule in math"
    assert "Args" in doc, f"{name}: no Args section"
    assert "Reference" in doc, f"{name}: no reference"


@pytest.mark.parametrize("name", CLASSES)
def test_every_public_class_is_documented(name):
  assert inspect.getdoc(_obj(name)), name
