"""Sphinx configuration for fa_core's documentation.

Build (warnings are errors, the gallery examples run): ``.ci/docs``, or
``python -m sphinx -W --keep-going -b html docs docs/_build/html`` from the repository root.
"""

import glob
import os
import sys

# The checkout's package when its extensions are built in place (a developer's tree), else the
# installed fa_core (CI's fresh clone has no compiled modules: keep its sources off sys.path).
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
if glob.glob(os.path.join(ROOT, "fa_core", "_kernels*.so")) or glob.glob(
        os.path.join(ROOT, "fa_core", "_kernels*.pyd")):
    sys.path.insert(0, ROOT)
else:
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != ROOT]

import fa_core  # noqa: E402

project = "fa_core"
author = "fa_core developers"
copyright = "fa_core developers, MIT licence"
release = fa_core.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",  # only to include the README's sections verbatim (one source for both)
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "auto_examples/*.zip",
                    "auto_examples/*.md5", "auto_examples/*.json", "generated/*.examples"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
default_role = "py:obj"
nitpicky = False

# -- autodoc / autosummary / numpydoc --------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "member-order": "bysource", "show-inheritance": False}
autodoc_typehints = "none"  # the numpydoc sections say the types
autodoc_mock_imports = [] if __import__("importlib").util.find_spec("ray") else ["ray"]
numpydoc_show_class_members = False  # the class template lists members itself
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# Parameters / Returns / Examples of every public callable are checked by
# tools/docstring_coverage.py (numpydoc's own validator, run by .ci/docs), not here: numpydoc's
# in-build validation also visits properties (which need no Examples) and fails on properties
# built with property(lambda ...) (no source line to find).

# -- sphinx-gallery: examples/ run at build time and their figures go into the pages ---------
sphinx_gallery_conf = {
    "examples_dirs": os.path.join(ROOT, "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "matplotlib_animations": False,
    "within_subsection_order": "FileNameSortKey",
    "doc_module": ("fa_core",),
    "backreferences_dir": None,
}

# -- HTML ------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"fa_core {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "icon_links": [],
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_static_path = []
html_show_sourcelink = False
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]  # included README sections start below the top heading

# -- asv: the benchmark history pages, when `asv publish` has built them ----------------------
# They are built from stored results (benchmarks/README.md, "Continuous benchmarking"), which a
# fresh clone does not have; when present they are copied to <site>/asv/ and the Benchmarks
# page links them (the "asv" tag), otherwise that page says how to build them.
ASV_HTML = os.path.join(ROOT, "asv_bench", "html")
if os.path.isfile(os.path.join(ASV_HTML, "index.html")):
    _extra = os.path.join(ROOT, "docs", "_build", "asv_extra")
    os.makedirs(_extra, exist_ok=True)
    if not os.path.lexists(os.path.join(_extra, "asv")):
        os.symlink(ASV_HTML, os.path.join(_extra, "asv"))
    html_extra_path = [_extra]
    tags.add("asv")  # noqa: F821 - Sphinx passes `tags` into conf.py
