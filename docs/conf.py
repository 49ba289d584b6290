"""Sphinx configuration for the skclipxray documentation."""

import os

# Examples run against the tiny random checkpoint unless a real one is chosen.
os.environ.setdefault("SKCLIPXRAY_MODEL", "tiny")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import skclipxray  # noqa: E402

project = "skclipxray"
author = "skclipxray contributors"
copyright = "2026, skclipxray contributors"
release = skclipxray.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

autosummary_generate = True
# scikit-learn's generated metadata-routing setters and inherited mixin methods
# carry cross-references into scikit-learn's own documentation.
autodoc_default_options = {
    "members": True,
    "inherited-members": False,
    "exclude-members": ",".join([
        "set_fit_request",
        "set_predict_request",
        "set_predict_proba_request",
        "set_score_request",
        "set_transform_request",
        "score",
    ]),
}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_|/example_",
    "download_all_examples": False,
    "remove_config_comments": True,
}

intersphinx_mapping = {}
templates_path = ["_templates"]
exclude_patterns = ["_build"]
html_theme = "pydata_sphinx_theme"
html_title = "skclipxray"
html_theme_options = {"navigation_depth": 2}
