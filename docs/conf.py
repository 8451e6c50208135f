"""Sphinx configuration of jopt's reference: autodoc + napoleon for the API, myst-nb for pages.

Build it (warnings are errors, as in CI)::

  python -m sphinx -W --keep-going -b html docs docs/_build/html

The notebooks are copied from ``notebooks/`` into ``docs/_notebooks/`` (ignored by git) at
the start of each build and rendered without being executed (their outputs are whatever
the ``.ipynb`` holds: the repository keeps them clean).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

project = "jopt"
author = "the jopt developers"
copyright = "2026, the jopt developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
]

source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "off"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "imported-members": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True

html_theme = "alabaster"
html_title = "jopt"
html_static_path: list[str] = []


def _copy_notebooks(app):
  dest = pathlib.Path(app.srcdir) / "_notebooks"
  if dest.exists():
    shutil.rmtree(dest)
  dest.mkdir()
  for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
    shutil.copy(nb, dest / nb.name)


def _skip_tuple_fields(app, what, name, obj, skip, options):
  """NamedTuple fields are described in their class's docstring; their generated
  ``Alias for field number k`` entries would only repeat (and collide with) it."""
  if what == "class" and type(obj).__name__ == "_tuplegetter":
    return True
  return None


def _attribute_docstring(app, what, name, obj, options, lines):
  """A public constant's docstring is the string literal under its assignment (PEP 257's
  attribute docstring) in the module that defines it; the namespace that re-exports it
  has none, so autodoc would show the docstring of ``dict`` or ``str`` instead."""
  if what != "data":
    return
  from sphinx.pycode import ModuleAnalyzer

  namespace, _, attr = name.rpartition(".")
  for modname in sorted(m for m in sys.modules if m.startswith(namespace + ".")):
    if getattr(sys.modules[modname], attr, None) is not obj:
      continue
    docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
    if ("", attr) in docs:
      lines[:] = [line for line in docs[("", attr)]]
      return


def setup(app):
  app.connect("autodoc-process-docstring", _attribute_docstring)
  app.connect("builder-inited", _copy_notebooks)
  app.connect("autodoc-skip-member", _skip_tuple_fields)
