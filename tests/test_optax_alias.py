"""optax's own ``AliasTest``, run against jopt: a drop-in by optax's measure.

The test module is the one installed with optax (``optax/_src/alias_test.py``,
found with :mod:`importlib`, never copied here). It is loaded as a private
module whose ``alias`` global is replaced by a namespace holding *jopt's*
functions for every name jopt shares with optax's ``_OPTIMIZERS_UNDER_TEST``
(adadelta, adafactor, adagrad, adam, adamax, adamw, amsgrad, lamb, lars, lion,
nadam, nadamw, radam, rmsprop, sgd; ``test_shared_names`` pins the list). Each
``AliasTest`` case of a shared optimizer becomes one pytest test: it runs with
``unittest`` machinery and fails with the case's own error text.

How the cases run:

* under ``jax.numpy_dtype_promotion("standard")``: optax's test code relies on
  implicit promotion (the suite runs in strict mode elsewhere);
* with the suite's warnings-as-errors left on: no case raises a warning, so
  none needs a filter;
* a case passes when every part of it that optax runs passes. Optax itself skips
  one part of ``test_optimization`` for ``adadelta`` and ``adafactor`` built
  without a learning rate (the final convergence check, "needs a non-None
  learning rate for numerically stable optimization in practice"): those cases
  still run the 10,000 steps and the recompilation checks here, and that one
  skipped part, by optax's decision, is the only skip tolerated.

Cases optax skips unconditionally (before doing anything) are not collected as
tests of ours; optax skips them because "<name> does not support complex
parameters":

* ``test_optimization`` with ``complex64`` for ``adadelta`` (both argument sets,
  both targets) and ``lion`` (both targets): 6 cases;
* ``test_state_shape_dtype_shard_stability`` with ``complex64`` / ``complex128``
  for ``adadelta`` (both argument sets) and ``lion``: 6 cases.

``test_excluded_cases_are_optax_skips`` checks that each of them is indeed
skipped by optax with that reason. No case is excluded because jopt differs
(``EXCLUDED_BY_DESIGN`` is empty: every collected case passes).

The whole module (324 cases) takes about 85 s on two CPU cores (the 66
``test_optimization`` cases, 10,000 jitted steps each, about 21 s of it), so no
case is marked slow.
"""

from __future__ import annotations

import importlib.util
import inspect
import types
import unittest

import jax
import jax.numpy as jnp
import pytest

import jopt


def _load_alias_test() -> types.ModuleType:
  spec = importlib.util.find_spec("optax._src.alias_test")
  if spec is None or spec.origin is None:
    raise ImportError("optax's alias_test.py is not installed with optax")
  # A private name: the module is ours to patch and never optax's own import.
  spec = importlib.util.spec_from_file_location("_jopt_optax_alias_test", spec.origin)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


ALIAS_TEST = _load_alias_test()
SHARED = tuple(sorted({c["opt_name"] for c in ALIAS_TEST._OPTIMIZERS_UNDER_TEST
                       if callable(getattr(jopt, c["opt_name"], None))}))
# Only jopt's functions: a case that reached for any other name would fail loudly.
ALIAS_TEST.alias = types.SimpleNamespace(**{name: getattr(jopt, name) for name in SHARED})

_NO_COMPLEX = ("adadelta", "lion")  # optax: "... does not support complex parameters."
_NO_COMPLEX_METHODS = ("test_optimization", "test_state_shape_dtype_shard_stability")
_PARTIAL_SKIP = "needs a non-None learning rate for numerically stable"

# AliasTest case id -> why jopt is right to differ (kept out of the parametrization).
EXCLUDED_BY_DESIGN: dict[str, str] = {}


def _params(method_name: str) -> tuple[str, dict]:
  """(the test method's own name, its parameters) of one absl-parameterized case."""
  fn = getattr(ALIAS_TEST.AliasTest, method_name)
  nonlocals = inspect.getclosurevars(fn).nonlocals
  return nonlocals["test_method"].__name__, dict(nonlocals["testcase_params"])


def _describe(value) -> str:
  if isinstance(value, dict):
    return ",".join(f"{k}={v}" for k, v in value.items())
  if callable(value):
    name = getattr(value, "__name__", repr(value))
    return name.removeprefix("_setup_")
  return str(value)


def _opt_name(params: dict) -> str | None:
  if "opt_name" not in params:
    return None
  name = params["opt_name"]
  return "sgd" if name == "sgd_mom" else name  # test_explicit_dtype's alias for sgd


def _is_optax_skip(method: str, params: dict) -> bool:
  return (method in _NO_COMPLEX_METHODS and params["opt_name"] in _NO_COMPLEX
          and jnp.issubdtype(params["dtype"], jnp.complexfloating))


def _collect():
  run, skipped = [], []
  for case in unittest.TestLoader().loadTestsFromTestCase(ALIAS_TEST.AliasTest):
    name = case._testMethodName  # pylint: disable=protected-access
    method, params = _params(name)
    if _opt_name(params) not in SHARED:
      continue
    desc = "-".join(_describe(v) for v in params.values() if v != {})
    test_id = f"{method}[{desc}]"
    if _is_optax_skip(method, params):
      skipped.append((name, test_id))
    elif test_id not in EXCLUDED_BY_DESIGN:
      run.append(pytest.param(name, id=test_id))
  return run, skipped


CASES, OPTAX_SKIPPED = _collect()


def _run_case(method_name: str) -> unittest.TestResult:
  result = unittest.TestResult()
  with jax.numpy_dtype_promotion("standard"):
    ALIAS_TEST.AliasTest(method_name).run(result)
  return result


def _report(result: unittest.TestResult) -> str:
  parts = [f"{test}\n{text}" for test, text in result.errors + result.failures]
  parts += [f"{test}: unexpected success" for test in result.unexpectedSuccesses]
  return "\n\n".join(parts)


def test_shared_names():
  assert SHARED == ("adadelta", "adafactor", "adagrad", "adam", "adamax", "adamw", "amsgrad",
                    "lamb", "lars", "lion", "nadam", "nadamw", "radam", "rmsprop", "sgd")
  assert all(getattr(ALIAS_TEST.alias, n) is getattr(jopt, n) for n in SHARED)


@pytest.mark.parametrize("method_name", CASES)
def test_alias_case(method_name):
  result = _run_case(method_name)
  assert result.testsRun == 1
  if not result.wasSuccessful():
    pytest.fail(_report(result), pytrace=False)
  bad_skips = [(str(t), r) for t, r in result.skipped if _PARTIAL_SKIP not in r]
  assert not bad_skips, f"skipped by optax for a reason this module does not expect: {bad_skips}"


def test_excluded_cases_are_optax_skips():
  """The cases left out above are exactly the ones optax skips before running
  anything: each is skipped whole, saying the optimizer takes no complex params."""
  assert len(OPTAX_SKIPPED) == 12, OPTAX_SKIPPED
  for name, test_id in OPTAX_SKIPPED:
    result = _run_case(name)
    assert result.wasSuccessful() and len(result.skipped) == 1, (test_id, _report(result))
    (case, reason), = result.skipped
    assert case._testMethodName == name and "does not support complex" in reason, (  # pylint: disable=protected-access
        test_id, reason)
