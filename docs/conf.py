"""Sphinx configuration of the resnet-np site: ``bash docs/build.sh`` builds docs/_build/html.

Sphinx with myst-nb and the book theme: myst-nb executes the tutorials at build time
(a failing cell fails the build) and renders their figures, tables and MyST maths;
autodoc renders the docstrings, including their ``.. math::`` blocks; MyST's include
directive shows the README's sections without copying them. MathJax is served from
the ``jupyter-server-mathjax`` package (a [docs] dependency), so the site needs no network.
"""
import os
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
# The notebooks' kernels import this checkout too, as tests/test_tutorials.py runs them.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")

import resnet_np  # noqa: E402


def _sync(sources, dest):
    """Copy ``sources`` (relative to the repository root) under docs/, keeping their paths.

    The tutorials and the benchmark report are read from their one home; Sphinx needs
    them inside its source folder. Unchanged files keep their time stamps, so a second
    build reads only what changed. Files no longer in the repository are removed.
    """
    dest_root = DOCS / dest
    wanted = set()
    for pattern in sources:
        for src in sorted(ROOT.glob(pattern)):
            target = DOCS / src.relative_to(ROOT)
            wanted.add(target)
            if not target.exists() or target.read_bytes() != src.read_bytes():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)
    for old in dest_root.rglob("*") if dest_root.exists() else ():
        if old.is_file() and old not in wanted:
            old.unlink()


# The API reference: every top-level module of the package, by section, in reading order.
# A module that is not named here is listed under "More modules", so none goes missing.
API_SECTIONS = [
    ("Layers", ["resnet_np.functional"]),
    ("Modules and models", ["resnet_np", "resnet_np.nn", "resnet_np.models"]),
    ("Training", ["resnet_np.optim", "resnet_np.data", "resnet_np.preprocessing",
                  "resnet_np.training", "resnet_np.amp", "resnet_np.distributed"]),
    ("Speed: backends and kernels", ["resnet_np.backend", "resnet_np.dispatch",
                                     "resnet_np.kernels", "resnet_np.cupy_standin",
                                     "resnet_np.bench"]),
    ("Checks, conversion and deployment", ["resnet_np.gradcheck", "resnet_np.layer_cases",
                                           "resnet_np.convert", "resnet_np.onnx",
                                           "resnet_np.predict", "resnet_np.cli"]),
]


def _write_api_sections():
    """docs/api/sections.md (included by api/index.md): one autosummary per section."""
    import pkgutil

    present = ["resnet_np"] + [
        m.name for m in pkgutil.iter_modules(resnet_np.__path__, "resnet_np.")
        if not m.name.rsplit(".", 1)[1].startswith("_")]
    named = {name for _, names in API_SECTIONS for name in names}
    sections = API_SECTIONS + [("More modules", [n for n in present if n not in named])]
    text = ["<!-- Written by docs/conf.py from API_SECTIONS and the package's modules. -->", ""]
    for title, names in sections:
        names = [n for n in names if n in present]
        if names:
            text += [f"## {title}", "", "```{eval-rst}", ".. autosummary::",
                     "   :toctree: generated", "   :recursive:", ""]
            text += [f"   {n}" for n in names] + ["```", ""]
    target = DOCS / "api" / "sections.md"
    if not target.exists() or target.read_text(encoding="utf-8") != "\n".join(text):
        target.write_text("\n".join(text), encoding="utf-8")


_write_api_sections()
_sync(["tutorials/*.ipynb", "tutorials/README.md"], "tutorials")
_sync(["benchmarks/README.md", "benchmarks/latest/*"], "benchmarks")

project = "resnet-np"
author = "resnet-np contributors"
copyright = "resnet-np contributors"
release = version = resnet_np.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "_ext.docstrings",
    "_ext.reexports",
]
sys.path.insert(0, str(DOCS))

root_doc = "index"
exclude_patterns = ["_build", "benchmarks/results", "**/.ipynb_checkpoints", "README.md",
                    "api/sections.md"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

# Warnings are errors (build.sh passes -W); references are checked strictly.
nitpicky = True
# A short name in a type description that matches attributes of several classes ("shape").
suppress_warnings = ["ref.python"]
nitpick_ignore_regex = [
    # Other projects' types: no network at build time, so no intersphinx inventories.
    (r"py:.*", r"(%s)(\..*)?" % "|".join([
        "numpy", "np", "cupy", "cp", "torch", "onnx", "onnxruntime", "mpi4py", "matplotlib",
        "PIL", "pathlib", "os", "typing", "collections", "contextlib", "threading",
        "dataclasses", "argparse", "enum", "abc", "io", "types", "concurrent", "numbers"])),
    # Private base classes named by show-inheritance.
    (r"py:class", r".*\._\w+"),
    # Type descriptions in numpy-style sections ("ndarray of uint8, shape (N, H, W, 3)",
    # '{"cpu", "gpu"}') are prose, not references; references the docstrings make with
    # :func:, :meth:, :data:, :mod: and dotted resnet_np names must resolve.
    (r"py:class", r"(?!resnet_np\.).*"),
]

# The tutorials run at build time, each in its own folder, as Jupyter runs them.
nb_execution_mode = os.environ.get("RESNET_NP_DOCS_EXECUTE", "force")
nb_execution_timeout = 600
# A failing cell is reported, with its traceback, as a warning: -W fails the build
# after every notebook has run (an exception would stop at the first, without the cell).
nb_execution_raise_on_error = False
nb_execution_show_tb = True
nb_execution_in_temp = False
nb_merge_streams = True
nb_execution_cache_path = str(DOCS / "_build" / ".jupyter_cache")

# Literal blocks in the docstrings are formulas and shapes, not Python.
highlight_language = "none"

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# Docstrings: shapes and formulas are written as indented blocks; see _ext/docstrings.py.
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}
autodoc_typehints = "description"
# The autosummary directives are in api/sections.md, written by _write_api_sections.
autosummary_generate = ["api/sections.md"]
autosummary_imported_members = False
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_param = False
napoleon_use_ivar = True
napoleon_use_rtype = False
napoleon_preprocess_types = False
# ``python -m`` entry points run when imported: not documented.
autosummary_mock_imports = ["resnet_np.__main__", "resnet_np.bench.__main__"]

# MathJax 2, served with the site (no CDN): copied into _static/mathjax after the build.
import jupyter_server_mathjax  # noqa: E402

MATHJAX_DIR = Path(jupyter_server_mathjax.__file__).parent / "static"
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
mathjax2_config = {
    "tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]],
                "processEscapes": True},
    # The fonts the package ships; MathJax's placeholder font names no URL, so the
    # browser makes no request for it ("about:blank" is refused as cross-origin).
    "HTML-CSS": {"availableFonts": ["STIX-Web"], "preferredFont": "STIX-Web",
                 "webFont": "STIX-Web", "imageFont": None,
                 "styles": {"@font-face": {"font-family": "MathJax_Blank",
                                           "src": "local('MathJax_Blank')"}}},
    "messageStyle": "none",
    "menuSettings": {"zoom": "None"},
}
myst_update_mathjax = False

html_theme = "sphinx_book_theme"
html_title = "resnet-np"
html_static_path = ["_static"]
html_favicon = "_static/favicon.svg"
# The theme's colour mode starts from this instead of an empty stored choice.
html_context = {"default_mode": "light"}
templates_path = ["_templates"]
html_theme_options = {
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "use_download_button": True,
    "use_fullscreen_button": False,
}
html_last_updated_fmt = None
html_copy_source = True


def _finish(app, exception):
    """Serve MathJax with the site, and the icon at /favicon.ico, where browsers also look."""
    if exception is None and app.builder.format == "html":
        shutil.copytree(MATHJAX_DIR, Path(app.outdir) / "_static" / "mathjax", dirs_exist_ok=True)
        from PIL import Image, ImageDraw

        icon = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
        draw = ImageDraw.Draw(icon)
        draw.rounded_rectangle((0, 0, 31, 31), radius=6, fill="#1f4e79")
        draw.rectangle((7, 6, 19, 12), fill="#ffffff")
        draw.rectangle((7, 20, 19, 26), fill="#ffffff")
        draw.line((21, 9, 25, 9, 25, 23, 19, 23), fill="#f4b942", width=3)
        icon.save(Path(app.outdir) / "favicon.ico", sizes=[(32, 32)])


def _skip_member(app, what, name, obj, skip, options):
    """NamedTuple fields: their generated docstrings ("Alias for field number 0") say nothing."""
    doc = getattr(obj, "__doc__", None) or ""
    if what == "class" and doc.startswith("Alias for field number"):
        return True
    return None


def setup(app):
    app.connect("build-finished", _finish)
    app.connect("autodoc-skip-member", _skip_member)
