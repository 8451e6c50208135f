"""Shared hypothesis strategies for the fuzz tests (issue 12): shapes, dtypes, arrays, trees.

The fuzz tests (tests/test_fuzz_transforms.py, tests/test_fuzz_model_side.py) draw from
a small *palette* of shapes, so that the eager JAX ops they run compile once per
(shape, dtype) and are then served from JAX's cache; values, tree kinds and
hyperparameters are what hypothesis varies freely.

Every test is derandomized (the same examples on every run, so CI is reproducible).
The default number of examples per test is small enough for the two files to run in
under three minutes together; a deeper local run sets ``JOPT_FUZZ_EXAMPLES``::

    JOPT_FUZZ_EXAMPLES=500 python -m pytest tests/test_fuzz_transforms.py
    JOPT_FUZZ_EXAMPLES=500 python -m pytest tests/test_fuzz_model_side.py

``JOPT_FUZZ_TALLY=path.json`` additionally writes :data:`TALLY` (cases per transform
family, model-side namespace, dtype and tree kind) to ``path.json`` when a fuzz
module finishes; nothing is printed.
"""

from __future__ import annotations

import collections
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

__all__ = ["DTYPES", "SHAPES", "LARGE", "TALLY", "count", "fuzz_settings", "examples",
           "dtypes", "shapes", "dtype_name", "values", "tree_kinds", "build_tree",
           "nnx_state", "pure", "finite", "dump_tally", "raises_naming"]

DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)
LARGE = (256, 256)  # 2**16 elements: "large" without costing memory
SHAPES = ((), (0,), (2, 0), (1,), (3,), (2, 3), (2, 1, 3), LARGE)

TALLY: collections.Counter = collections.Counter()


def count(*keys: str) -> None:
  """Record one fuzz case under each ``keys`` entry (e.g. ``"family:adam"``, ``"dtype:float16"``)."""
  for k in keys:
    TALLY[k] += 1


def dump_tally() -> None:
  """Write :data:`TALLY` to ``$JOPT_FUZZ_TALLY`` (merged with what is there), if set."""
  path = os.environ.get("JOPT_FUZZ_TALLY")
  if not path:
    return
  old = {}
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      old = json.load(f)
  merged = collections.Counter(old)
  merged.update(TALLY)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(dict(sorted(merged.items())), f, indent=1)
  TALLY.clear()


def examples(default: int) -> int:
  """``$JOPT_FUZZ_EXAMPLES`` when set, else ``default``."""
  env = os.environ.get("JOPT_FUZZ_EXAMPLES")
  return int(env) if env else default


def fuzz_settings(default: int) -> settings:
  """Reproducible hypothesis settings: derandomized, no deadline, ``default`` examples."""
  return settings(max_examples=examples(default), deadline=None, derandomize=True,
                  database=None, print_blob=False,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.filter_too_much,
                                         HealthCheck.function_scoped_fixture])


def dtypes() -> st.SearchStrategy:
  return st.sampled_from(DTYPES)


def shapes(*, large: bool = True, empty: bool = True) -> st.SearchStrategy:
  """A shape from the palette: 0-d, zero-size, small, and (optionally) one 2**16-element one."""
  pal = [s for s in SHAPES if (large or s != LARGE) and (empty or 0 not in s)]
  return st.sampled_from(pal)


def dtype_name(dtype: Any) -> str:
  return jnp.dtype(dtype).name


@st.composite
def values(draw, bound: float = 10.0, min_abs: float = 0.0) -> Callable[[tuple, Any], jax.Array]:
  """A filler ``(shape, dtype) -> array`` with finite values, ``min_abs <= |x| <= bound``.

  The pattern is drawn: uniform, all equal, all at the bound (alternating sign), or
  zeros (only when ``min_abs == 0``). Values come from a NumPy generator seeded by
  hypothesis, so a failing example replays exactly.
  """
  kinds = ["uniform", "constant", "edges"] + (["zeros"] if min_abs == 0 else [])
  kind = draw(st.sampled_from(kinds))
  seed = draw(st.integers(0, 2**31 - 1))
  c = draw(st.floats(min_abs, bound, allow_nan=False))
  rng = np.random.default_rng(seed)

  def fill(shape, dtype):
    n = int(np.prod(shape, dtype=np.int64))
    if kind == "zeros":
      x = np.zeros(shape)
    elif kind == "constant":
      x = np.full(shape, c)
    elif kind == "edges":
      x = np.resize(np.array([bound, -bound]), n).reshape(shape)
    else:
      x = rng.uniform(min_abs, bound, shape) * rng.choice([-1.0, 1.0], shape)
    return jnp.asarray(np.asarray(x, np.float64), dtype)

  return fill


def tree_kinds(nnx: bool = True) -> st.SearchStrategy:
  """Which tree structure to build: a bare leaf, a dict, a nested dict/list/tuple with None
  leaves, or a Flax NNX ``State``."""
  return st.sampled_from(["leaf", "dict", "nested"] + (["nnx"] if nnx else []))


def nnx_state(dtype: Any, fill: Callable[[tuple, Any], jax.Array]) -> Any:
  """``flax.nnx.state`` of a small ``nnx.Linear`` (Param-wrapped leaves), values from ``fill``."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0), param_dtype=dtype)
  state = nnx.state(model)
  return jax.tree.map(lambda a: fill(a.shape, a.dtype), state)


def pure(tree: Any) -> Any:
  """``tree`` with every ``flax.nnx.Variable`` replaced by its array: what ``nnx.Optimizer``
  hands ``update`` (the model's ``nnx.State`` of Variables goes to ``init`` only)."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  is_var = lambda x: isinstance(x, nnx.Variable)
  return jax.tree.map(lambda x: x.get_value() if is_var(x) else x, tree, is_leaf=is_var)


def build_tree(kind: str, shape: tuple, dtype: Any, fill: Callable[[tuple, Any], jax.Array]) -> Any:
  """A tree of ``kind`` whose main leaf has ``shape``; every array leaf is ``fill(shape, dtype)``.

  ``nested`` holds None leaves, a list, a tuple and a 0-d leaf besides the main one.
  """
  if kind == "leaf":
    return fill(shape, dtype)
  if kind == "dict":
    return {"w": fill(shape, dtype), "b": fill((3,), dtype)}
  if kind == "nested":
    return {"layer": {"w": fill(shape, dtype), "skip": None},
            "blocks": [fill((2,), dtype), None, (fill((), dtype), fill((1, 2), dtype))]}
  if kind == "nnx":
    return nnx_state(dtype, fill)
  raise ValueError(f"build_tree: unknown kind={kind!r}")


def finite(tree: Any) -> bool:
  """True when every floating leaf of ``tree`` is finite (an empty leaf counts as finite)."""
  for leaf in jax.tree.leaves(tree):
    leaf = jnp.asarray(leaf)
    if jnp.issubdtype(leaf.dtype, jnp.inexact) and not bool(jnp.all(jnp.isfinite(leaf))):
      return False
  return True


def raises_naming(excinfo: Any, *names: str) -> None:
  """Assert the caught error's message names at least one of ``names`` (the bad argument)."""
  msg = str(excinfo.value)
  assert any(n in msg for n in names), (names, msg)
