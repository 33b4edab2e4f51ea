"""Sphinx configuration: the prose in docs/*.md (MyST) and the API reference from the docstrings.

Build (CI runs it through ``scripts/build_docs.sh``; warnings are errors)::

    sphinx-build -W --keep-going -b html docs OUTDIR

``lidvae_ext`` is imported, not read from the source tree: run the build where the compiled
package is importable (the installed wheel in ``.venv``, or a tree built in place on
``PYTHONPATH``). This file does not touch ``sys.path``, so the source tree cannot shadow the
installed package by accident.
"""

from __future__ import annotations

import inspect
import re

import lidvae_ext
from sphinx.util import logging

project = "lidvae_ext"
author = "lidvae_ext contributors"
copyright = "lidvae_ext contributors"  # noqa: A001 (Sphinx's name)
release = lidvae_ext.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "myst_parser",
]

root_doc = "index"
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]

# MyST: `#anchor` links in the .md files resolve to headings up to level 4 (GitHub's slugs).
myst_heading_anchors = 4

# NumPy-style docstrings (the project's style); Google style off so that a malformed NumPy
# section is not silently read as something else.
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
# a class's "Attributes" section as :ivar: fields, so that a dataclass field is not described twice
# (once by the section, once as the attribute autodoc lists)
napoleon_use_ivar = True

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# A method without its own docstring must not borrow torch.nn.Module's ("Define the computation
# performed at every call..."): that would hide a missing docstring in the API reference.
autodoc_inherit_docstrings = False
autodoc_default_options = {
    "members": True,
    "undoc-members": True,   # listed so that the check below sees (and fails on) them
    "show-inheritance": True,
    "exclude-members": "extra_repr",  # nn.Module's repr hook, not API
}

html_theme = "alabaster"
html_static_path: list[str] = []

_log = logging.getLogger("lidvae_ext.docs")


def _require_docstring(app, what, name, obj, options, lines) -> None:
    """Warn (an error under ``-W``) for a documented public object without a docstring."""
    short = name.rsplit(".", 1)[-1]
    if short.startswith("_") or any(line.strip() for line in lines):
        return
    _log.warning("%s %s has no docstring: the API reference needs one (NumPy style)",
                 what, name, type="lidvae_ext", subtype="missing_docstring")


def _check_parameters(app, what, name, obj, options, lines) -> None:
    """Warn for a ``Parameters`` entry (napoleon's ``:param x:``) that names no argument of ``obj``.

    Catches the NumPy section that drifted from the signature (an argument renamed or removed).
    A signature with ``**kwargs`` may document the keywords it forwards.
    """
    if what not in ("function", "method", "class", "exception"):
        return
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for line in lines:
        match = re.match(r":param\s+(?:\S+\s+)?([\\*\w]+):", line)
        if match and match.group(1).replace("\\", "").lstrip("*") not in params:
            _log.warning("%s %s documents a parameter %r that its signature %s does not have",
                         what, name, match.group(1), inspect.signature(obj),
                         type="lidvae_ext", subtype="unknown_parameter")


def _skip_imported(app, what, name, obj, skip, options):
    """Skip names a module imported from elsewhere (``Tensor`` in ``nn``): they are not its API."""
    if what == "module" and isinstance(obj, type) and not obj.__module__.startswith("lidvae_ext"):
        return True
    return None


def setup(app) -> None:
    # after napoleon (priority 500) has turned the NumPy sections into field lists
    app.connect("autodoc-process-docstring", _require_docstring, priority=600)
    app.connect("autodoc-process-docstring", _check_parameters, priority=600)
    app.connect("autodoc-skip-member", _skip_imported)
