"""The documentation site, built and read in a real browser (headless Chromium).

The site is built with ``bash docs/build.sh`` (Sphinx, warnings are errors, the
tutorials executed), served on 127.0.0.1 and opened page by page through
Selenium and Debian's ``chromium`` and ``chromium-driver``. Every page must load
without a console error, show every image (loaded, natural width > 0) and have
its maths typeset by the MathJax served with the site (nothing is fetched from
the network); the navigation must reach every tutorial, in order; each tutorial
page shows its executed outputs and figures. Screenshots of the landing page and
of a tutorial go to ``docs/_build/screenshots/`` (or ``$RESNET_NP_DOCS_SCREENSHOTS``).

``RESNET_NP_DOCS_HTML=docs/_build/html`` checks a site already built by
``docs/build.sh``; without it the test builds one in a temporary folder (a few
minutes: the tutorials run). Installing what it needs: ``bash docs/install.sh``.
"""
import functools
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted(ROOT.glob("tutorials/[0-9][0-9]_*.ipynb"))
# Debian's packages by default; RESNET_NP_CHROMIUM and RESNET_NP_CHROMEDRIVER name others
# (a CI runner's Google Chrome and its driver).
CHROMIUM = os.environ.get("RESNET_NP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = (os.environ.get("RESNET_NP_CHROMEDRIVER") or shutil.which("chromedriver")
                or "/usr/bin/chromedriver")
SCREENSHOTS = Path(os.environ.get("RESNET_NP_DOCS_SCREENSHOTS",
                                  ROOT / "docs" / "_build" / "screenshots"))
BUILD_TIMEOUT_S = 1800



def _load_docstrings_ext():
    spec = importlib.util.spec_from_file_location("docs_ext_docstrings",
                                                  ROOT / "docs" / "_ext" / "docstrings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tools():
    """What building and reading the site needs; the tests that need it say what is missing."""
    for module in ("sphinx", "myst_nb", "jupyter_server_mathjax", "selenium"):
        pytest.importorskip(module, reason=f'{module} is not installed: pip install -e ".[docs]" '
                                           "(bash docs/install.sh)")
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("Chromium is not installed: apt-get install chromium chromium-driver "
                    "(bash docs/install.sh)")


@pytest.fixture(scope="module")
def site(tools, tmp_path_factory):
    """The built site's folder."""
    given = os.environ.get("RESNET_NP_DOCS_HTML")
    if given:
        path = Path(given).resolve()
        assert (path / "index.html").is_file(), f"RESNET_NP_DOCS_HTML={given}: no index.html there"
        return path
    out = tmp_path_factory.mktemp("docs") / "html"
    run = subprocess.run(["bash", str(ROOT / "docs" / "build.sh"), str(out)], cwd=ROOT,
                         env={**os.environ, "PYTHON": sys.executable},
                         capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert run.returncode == 0, f"docs/build.sh failed:\n{run.stdout[-6000:]}\n{run.stderr[-6000:]}"
    return out


@pytest.fixture(scope="module")
def server(site):
    """The site on http://127.0.0.1:<port>/ for the length of the module."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser(tools, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def _pages(site):
    skip = ("_static", "_sources", "_images")
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html")
                  if not p.relative_to(site).parts[0].startswith(skip))


# Waits for every image to finish loading (or fail) and for MathJax to finish, then
# reports what the page shows: images, maths and any maths left as source text.
_INSPECT = r"""
const done = arguments[arguments.length - 1];
const images = Array.from(document.images);
images.forEach(img => { img.loading = "eager"; });
const loaded = images.map(img => img.complete ? Promise.resolve() :
    new Promise(ok => { img.addEventListener("load", ok); img.addEventListener("error", ok); }));
// MathJax loads asynchronously: wait for it to appear when the page has maths, then for its
// queue to empty; after MATH_WAIT_MS the page is reported as it stands.
const hasMath = document.querySelector(".math.notranslate") !== null;
let mathjaxDone = !hasMath;
const typeset = new Promise(ok => {
    const started = Date.now();
    const poll = () => {
        if (window.MathJax && window.MathJax.Hub && window.MathJax.Hub.Queue) {
            window.MathJax.Hub.Queue(() => { mathjaxDone = true; ok(); });
        } else if (!hasMath || Date.now() - started > MATH_WAIT_MS) { ok(); }
        else { setTimeout(poll, 50); }
    };
    poll();
    setTimeout(ok, MATH_WAIT_MS);
});
Promise.all(loaded.concat([typeset])).then(() => {
    // Sphinx's maths elements (MathJax's own output nests spans of class "math").
    const math = Array.from(document.querySelectorAll(".math.notranslate"));
    const untypeset = math.filter(el => !el.querySelector(".MathJax, .MathJax_Display")
        || !el.querySelector("script[type^='math/tex']")
        || el.querySelector(".MathJax_Error, merror"));
    // Visible prose, without code: TeX delimiters or dollars left there were not typeset.
    const body = document.querySelector("article") || document.body;
    const clone = body.cloneNode(true);
    clone.querySelectorAll("pre, code, script, style, .MathJax, .MathJax_Display, .MathJax_Preview")
        .forEach(el => el.remove());
    done({
        images: images.map(img => ({src: img.currentSrc || img.src, width: img.naturalWidth})),
        math: math.length,
        untypeset: untypeset.map(el => el.textContent.slice(0, 80)),
        mathjax: !!(window.MathJax && window.MathJax.Hub),
        mathjaxDone: mathjaxDone,
        text: clone.textContent,
    });
});
"""
MATH_WAIT_S = 20
_INSPECT = _INSPECT.replace("MATH_WAIT_MS", str(MATH_WAIT_S * 1000))
_RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|(?<![\w$])\$[^$\s][^$\n]{0,200}?\$(?![\w$])")


def _open(browser, url):
    browser.get(url)
    report = browser.execute_async_script(_INSPECT)
    logs = browser.get_log("browser")
    report["console"] = [f"{e['level']}: {e['message']}" for e in logs
                         if e["level"] in ("SEVERE", "WARNING")]
    return report


def test_every_page_loads_with_images_and_typeset_maths(site, server, browser):
    pages = _pages(site)
    assert "index.html" in pages and len(pages) > 50, pages
    problems = []
    math = {}
    for page in pages:
        report = _open(browser, server + page)
        if report["console"]:
            problems.append(f"{page}: console: {report['console']}")
        broken = [i["src"] for i in report["images"] if i["width"] <= 0]
        if broken:
            problems.append(f"{page}: images not loaded: {broken}")
        if report["math"] and not report["mathjax"]:
            problems.append(f"{page}: {report['math']} formulas and no MathJax")
        elif not report["mathjaxDone"]:
            problems.append(f"{page}: MathJax did not finish within {MATH_WAIT_S} s")
        if report["untypeset"]:
            problems.append(f"{page}: maths not typeset: {report['untypeset'][:3]}")
        raw = _RAW_TEX.findall(report["text"])
        if raw:
            problems.append(f"{page}: TeX left as text: {raw[:5]}")
        math[page] = report["math"]
    assert not problems, "\n".join(problems)
    # Maths is there to typeset: every tutorial that writes some, and the optimizers' docstrings.
    with_maths = [_tutorial_page(p) for p in TUTORIALS if any(
        "$" in "".join(c["source"]) for c in json.loads(p.read_text(encoding="utf-8"))["cells"]
        if c["cell_type"] == "markdown")]
    with_maths.append("api/generated/resnet_np.optim.sgd.html")
    assert len(with_maths) > 3
    assert all(math[page] > 0 for page in with_maths), {page: math[page] for page in with_maths}
    print(f"\n{len(pages)} pages, {sum(math.values())} formulas typeset")


def test_every_module_has_an_api_page(site):
    import pkgutil

    import resnet_np

    names = ["resnet_np"] + [m.name for m in
                             pkgutil.walk_packages(resnet_np.__path__, "resnet_np.")]
    public = [n for n in names if not any(part.startswith("_") for part in n.split("."))]
    missing = [n for n in public if not (site / "api" / "generated" / f"{n}.html").is_file()]
    assert not missing, f"modules without an API page (list them in docs/api/index.md): {missing}"


def _tutorial_page(path):
    return f"tutorials/{path.stem}.html"


def test_tutorials_are_executed_with_their_figures(site, server, browser):
    """Each tutorial page shows its cells' outputs; each figure a notebook shows is an image."""
    for path in TUTORIALS:
        nb = json.loads(path.read_text(encoding="utf-8"))
        figure_cells = sum("plt.show()" in "".join(c["source"]) for c in nb["cells"]
                           if c["cell_type"] == "code")
        report = _open(browser, server + _tutorial_page(path))
        outputs = browser.execute_script(
            "return document.querySelectorAll('.cell_output').length")
        figures = [i for i in report["images"] if "/_images/" in i["src"] and i["width"] > 0]
        assert outputs > 0, f"{path.name}: no executed outputs on its page"
        assert len(figures) >= figure_cells, \
            f"{path.name}: {figure_cells} cells show a figure, the page has {len(figures)} images"
        errors = browser.execute_script(
            "return Array.from(document.querySelectorAll('.cell_output .output.traceback'))"
            ".map(e => e.textContent.slice(0, 200))")
        assert not errors, f"{path.name}: {errors}"


def test_navigation_reaches_every_tutorial_in_order(site, server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server + "index.html")
    nav = {a.get_attribute("href").split("#")[0].removeprefix(server)
           for a in browser.find_elements(By.CSS_SELECTOR, "nav a[href]")}
    missing = [p.name for p in TUTORIALS if _tutorial_page(p) not in nav]
    assert not missing, f"the landing page's navigation does not link {missing}"
    # From the first tutorial, "Next" walks through all of them in order.
    browser.get(server + _tutorial_page(TUTORIALS[0]))
    for expected in TUTORIALS[1:]:
        browser.find_element(By.CSS_SELECTOR, "a.right-next").click()
        assert browser.current_url.split("#")[0] == server + _tutorial_page(expected), \
            f"after the tutorial before {expected.name}, Next led to {browser.current_url}"


def test_landing_page_links_the_reading_path(site, server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server + "index.html")
    article = browser.find_element(By.CSS_SELECTOR, "article")
    links = [a.get_attribute("href").removeprefix(server).split("#")[0]
             for a in article.find_elements(By.CSS_SELECTOR, "a[href]")]
    tutorials = [link for link in links if re.match(r"tutorials/\d\d_", link)]
    assert tutorials[:len(TUTORIALS)] == [_tutorial_page(p) for p in TUTORIALS]
    assert "api/generated/resnet_np.functional.reference.html" in links
    assert "fast.html" in links


def _screenshot(browser, url, path):
    browser.get(url)
    browser.execute_async_script(_INSPECT)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(max(height, 800), 12000))
    path.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(path)), path
    browser.set_window_size(1280, 1000)


def test_screenshots(site, server, browser):
    _screenshot(browser, server + "index.html", SCREENSHOTS / "landing.png")
    _screenshot(browser, server + _tutorial_page(TUTORIALS[0]), SCREENSHOTS / "tutorial.png")
    for name in ("landing.png", "tutorial.png"):
        assert (SCREENSHOTS / name).stat().st_size > 10_000, name


# The docstring hook (docs/_ext/docstrings.py) on the shapes of text the package's docstrings use.

def test_docstring_formula_columns_become_a_literal_block():
    lines = ["Batch normalisation.", "",
             "Train mode, with M = N*H*W values per channel:", "",
             "    mu    = mean(x)                          var = mean((x - mu)^2)",
             "    xhat  = (x - mu) / sqrt(var + eps)       out = gamma * xhat + beta", "",
             "Eval mode uses running_mean."]
    _load_docstrings_ext().literal_blocks(lines)
    assert lines == ["Batch normalisation.", "",
                     r"Train mode, with M = N\*H\*W values per channel::", "",
                     "        mu    = mean(x)                          var = mean((x - mu)^2)",
                     "        xhat  = (x - mu) / sqrt(var + eps)       out = gamma * xhat + beta",
                     "",
                     "Eval mode uses running_mean."]


def test_docstring_hanging_indentation_keeps_its_layout():
    lines = ["Shapes.", "",
             "linear:   x (N, D), w (F, D)  ->  out (N, F) = x @ w.T + b",
             "          dx = dout @ w,  dw = dout.T @ x",
             "flatten:  x (N, C, H, W) -> (N, C*H*W)", "", "More."]
    _load_docstrings_ext().literal_blocks(lines)
    assert lines[2] == "::" and lines[3] == ""
    assert lines[4:7] == ["    linear:   x (N, D), w (F, D)  ->  out (N, F) = x @ w.T + b",
                          "              dx = dout @ w,  dw = dout.T @ x",
                          "    flatten:  x (N, C, H, W) -> (N, C*H*W)"]
    assert lines[-1] == "More."


def test_docstring_label_written_against_a_block_stays_in_it():
    lines = ["Backward.", "", "    dxhat = dout * gamma", "train:",
             "    dx = dxhat / sqrt(var + eps)", "", "After."]
    _load_docstrings_ext().literal_blocks(lines)
    assert lines == ["Backward. ::", "", "        dxhat = dout * gamma", "    train:",
                     "        dx = dxhat / sqrt(var + eps)", "", "After."]


def test_docstring_markup_and_numpy_sections_pass_through():
    lines = [r"Returns :func:`f` of ``x * y`` and :math:`a * b`; forward(*args).", "",
             "Parameters", "----------", "x : ndarray, shape (N, *)", "    Any (N, *) array.", "",
             ".. math::", "", "    p \\leftarrow p - \\eta g"]
    _load_docstrings_ext().literal_blocks(lines)
    assert lines[0] == r"Returns :func:`f` of ``x * y`` and :math:`a * b`; forward(\*args)."
    assert lines[2:6] == ["Parameters", "----------", "x : ndarray, shape (N, *)",
                          r"    Any (N, \*) array."]
    assert lines[7:] == [".. math::", "", "    p \\leftarrow p - \\eta g"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
