"""Sphinx configuration of the operator's documentation (MyST markdown pages).

`make docs` builds it with warnings as errors. The reference tables (the
daemon's options, the manifest's keys, every wsgictl command) are written by
`_ext/reference.py` from the code at build time, so they cannot go stale.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE / "_ext"), str(HERE.parent)]

from supervisor import __version__  # noqa: E402

project = "wsgi-supervisor"
author = "the wsgi-supervisor team"
copyright = "the wsgi-supervisor team"
version = release = __version__

extensions = ["myst_parser", "reference"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "_ext", "README.md"]
myst_heading_anchors = 3  # README's #section links keep working inside a page
myst_enable_extensions = ["colon_fence"]

html_theme = "alabaster"
html_theme_options = {"description": "one daemon per host for OpenStack-style APIs and workers", "fixed_sidebar": True}
html_sidebars = {"**": ["about.html", "navigation.html", "relations.html", "searchbox.html"]}
html_title = "wsgi-supervisor"
html_static_path: list[str] = []
