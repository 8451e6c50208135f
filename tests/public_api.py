"""The public API, walked once: every name in ``jopt.__all__`` and its namespaces' ``__all__``.

Shared by the docstring, doctest and API-reference tests so that they agree on what
"public" means.
"""

from __future__ import annotations

import inspect

import jopt

NAMESPACES = {"jopt": jopt}
for _name in jopt.__all__:
  if inspect.ismodule(getattr(jopt, _name)):
    NAMESPACES[f"jopt.{_name}"] = getattr(jopt, _name)


def public_names(unique: bool = False) -> list[str]:
  """Qualified names (``jopt.prune.prune``) of every public object that is not a namespace.

  With ``unique=True`` an object exported under two names (``jopt.distill_loss`` is
  ``jopt.distill.distill_loss``) appears once, under its namespaced name.
  """
  out, seen = [], {}
  for ns, mod in reversed(list(NAMESPACES.items())):
    for name in mod.__all__:
      obj = getattr(mod, name)
      if inspect.ismodule(obj) or (unique and id(obj) in seen):
        continue
      seen[id(obj)] = name
      out.append(f"{ns}.{name}")
  return sorted(out, key=lambda q: (q.count("."), q))


def resolve(qualname: str):
  ns, name = qualname.rsplit(".", 1)
  return getattr(NAMESPACES[ns], name)
