"""Every docstring example of the public API runs, as a doctest, and prints what it shows.

Each public object's docstring is parsed with :mod:`doctest` and run in a fresh namespace
holding only the imports every example may assume::

  import jax, jax.numpy as jnp, numpy as np, optax, jopt

Everything else an example uses (``params``, ``grads``, a key) it defines itself, so a
reader can paste it into a notebook. Output lines are compared with ``ELLIPSIS`` and
``NORMALIZE_WHITESPACE``.
"""

from __future__ import annotations

import doctest
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from tests.public_api import NAMESPACES, public_names, resolve

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
NAMES = [n for n in public_names(unique=True) if ">>>" in (inspect.getdoc(resolve(n)) or "")]
MODULES = [ns for ns, mod in NAMESPACES.items() if ">>>" in (mod.__doc__ or "")]


def _run(name: str, doc: str):
  globs = {"jax": jax, "jnp": jnp, "np": np, "optax": optax, "jopt": jopt}
  test = doctest.DocTestParser().get_doctest(doc, globs, name, None, 0)
  assert test.examples, f"{name}: the docstring has no >>> lines"
  out = []
  runner = doctest.DocTestRunner(optionflags=FLAGS, verbose=False)
  runner.run(test, out=out.append)
  assert runner.failures == 0, f"{name}: {runner.failures} example(s) failed\n" + "".join(out)


def test_the_examples_are_many():
  assert len(NAMES) >= 150


@pytest.mark.parametrize("name", NAMES)
def test_docstring_example_runs(name):
  _run(name, inspect.getdoc(resolve(name)))


@pytest.mark.parametrize("name", MODULES)
def test_namespace_docstring_example_runs(name):
  _run(name, inspect.cleandoc(NAMESPACES[name].__doc__))
