"""Sphinx configuration for persession's documentation."""

from __future__ import annotations

import persession

project = "persession"
author = "persession developers"
copyright = "2026, persession developers"
release = persession.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
exclude_patterns = ["_build"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True
# Not nitpicky: the build runs offline (no intersphinx inventory for the
# standard library), so references to stdlib and driver types cannot resolve.
# This is the only switch: tox.ini's docs env (which the suite runs) passes no -n.
nitpicky = False

html_theme = "furo"
html_title = f"persession {release}"
