"""A real browser drives the alignment explorer in JupyterLab: Run All Cells, move a slider, the heatmap image changes.

Debian's chromium, driven by the playwright package with `executable_path` (no playwright browser download).
When /usr/bin/chromium is missing, the set-up installs it with apt when running as root, else fails saying how.
`CAB_BENCH_SCREENSHOT=1` also saves a screenshot of the explorer to nbs/images/explorer.png (the notebook then trains
its full quick runs, about a minute more, in the test's temporary directory, for a picture worth looking at).
"""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "nbs" / "explore_alignment.ipynb"
SCREENSHOT = REPO / "nbs" / "images" / "explorer.png"
CHROMIUM = Path("/usr/bin/chromium")
INSTALL = "apt-get update && apt-get install -y chromium"

# about 25 s on 2 idle CPU cores (50 s with CAB_BENCH_SCREENSHOT); the limit leaves room for installing chromium
# and for a busy machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def ensure_chromium() -> str:
    "Path of Debian's chromium; installed with apt when missing and running as root."
    if CHROMIUM.exists():
        return str(CHROMIUM)
    if os.geteuid() != 0:
        pytest.fail(f"{CHROMIUM} is missing; install Debian's chromium as root: `{INSTALL}`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    r = subprocess.run(["bash", "-c", INSTALL], env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0 or not CHROMIUM.exists():
        pytest.fail(f"`{INSTALL}` failed (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return str(CHROMIUM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(url: str, method: str = "GET"):
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as r:
        body = r.read()
        return json.loads(body) if body else None


@pytest.fixture(scope="module")
def chromium() -> str:
    "Debian's chromium (installed first when missing) and the playwright package, or a failure saying how to get them."
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("the playwright Python package is missing; it is a dev requirement: pip install -e '.[dev]'")
    return ensure_chromium()


@pytest.fixture
def lab(tmp_path):
    "JupyterLab on 127.0.0.1 (free port, random token) over a temporary root holding a copy of the explorer."
    root, home = tmp_path / "root", tmp_path / "home"
    root.mkdir(), home.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    for ext, name, value in [("apputils-extension", "notification", {"fetchNews": "false", "checkForUpdates": False}),  # no pop-ups
                             ("notebook-extension", "tracker", {"windowingMode": "none"})]:   # every cell in the DOM
        d = home / "lab-settings" / "@jupyterlab" / ext
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{name}.jupyterlab-settings").write_text(json.dumps(value))
    port, token = free_port(), secrets.token_hex(16)
    # the explorer's test mode: tiny quick runs in a temporary directory; for the screenshot its full quick runs, written
    # to runs_dir = "../runs", i.e. tmp_path/runs (also temporary)
    mode = {} if os.environ.get("CAB_BENCH_SCREENSHOT") else {"IN_TEST": "1"}
    env = {**{k: v for k, v in os.environ.items() if k != "IN_TEST"}, **mode,
           "JUPYTERLAB_SETTINGS_DIR": str(home / "lab-settings"), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTER_DATA_DIR": str(home / "data"),
           # the kernel's quick runs share the 2 cores of a small machine with chromium and the server: one torch
           # thread (two, fighting them, made this test take 4 minutes instead of half of one)
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    log = open(tmp_path / "jupyter.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{(tmp_path / 'jupyter.log').read_text()[-3000:]}")
            try:
                api(f"{base}/api/status?token={token}")
                break
            except OSError:
                if time.time() > deadline:
                    pytest.fail(f"JupyterLab did not answer in 90 s:\n{(tmp_path / 'jupyter.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield dict(base=base, token=token, root=root, log=tmp_path / "jupyter.log")
    finally:
        try:   # shut the kernels down through the server (they run in sessions of their own)
            for k in api(f"{base}/api/kernels?token={token}") or []:
                api(f"{base}/api/kernels/{k['id']}?token={token}", "DELETE")
        except OSError:
            pass
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        log.close()


def wait_kernel_idle(lab, timeout: float = 90):
    "Wait until the notebook's kernel has started and is idle (asked from the server, not read off the page)."
    deadline = time.time() + timeout
    while time.time() < deadline:
        sessions = api(f"{lab['base']}/api/sessions?token={lab['token']}") or []
        if sessions and all(s["kernel"]["execution_state"] == "idle" for s in sessions):
            return
        time.sleep(0.5)
    pytest.fail(f"the notebook's kernel was not up and idle after {timeout} s")


def heatmap_src(page) -> str:
    return page.locator(".cab-heatmaps img").first.get_attribute("src") or ""


def notebook_errors(page) -> str:
    "The text of error outputs in the notebook (for failure messages)."
    errs = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    return "\n".join(errs.nth(i).inner_text()[-1500:] for i in range(min(errs.count(), 5)))


def test_explorer_in_jupyterlab(chromium, lab, tmp_path):
    from playwright.sync_api import sync_playwright
    exe = chromium
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            try:
                drive(page, lab)
            except Exception as e:
                page.screenshot(path=str(tmp_path / "failure.png"))
                raise AssertionError(f"{e}\nscreenshot: {tmp_path / 'failure.png'}\nnotebook errors:\n{notebook_errors(page)}\n"
                                     f"server log tail:\n{lab['log'].read_text()[-2000:]}") from e
        finally:
            browser.close()


def check_saved_notebook(page, lab, timeout: float = 60):
    """Save the notebook and read it back through the server: every code cell ran and none raised.

    The notebook's own check cell (slider and query changes redraw the heatmaps, the similarity and training panels are
    filled) asserts from the kernel side; nbdev_test does not run the explorer's `job` cells, so this is where those
    assertions are checked."""
    page.locator(".jp-Notebook").first.click()
    page.keyboard.press("Control+s")
    url = f"{lab['base']}/api/contents/{NOTEBOOK.name}?token={lab['token']}&content=1"
    deadline = time.time() + timeout
    while True:
        # The server writes a notebook in place (its "atomic" save guards against failed writes, not readers), so a
        # read that lands while a save is being written sees an empty file and gets a 400: read again.
        try:
            nb = api(url)
        except urllib.error.HTTPError as e:
            if e.code != 400 or time.time() > deadline:
                raise
            time.sleep(0.5)
            continue
        code = [c for c in nb["content"]["cells"] if c["cell_type"] == "code"]
        if code and all(c.get("execution_count") for c in code):
            break
        if time.time() > deadline:
            pytest.fail(f"the saved notebook still has code cells that did not run after {timeout} s")
        page.keyboard.press("Control+s")
        time.sleep(1)
    errors = [f"cell {i}: {o.get('ename')}: {o.get('evalue')}" for i, c in enumerate(code)
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, "\n".join(errors)
    checks = [c for c in code if "ex.layer.value = ex.layer.max" in "".join(c["source"])]
    assert len(checks) == 1 and checks[0]["execution_count"], "the explorer's check cell did not run"


def drive(page, lab):
    "Open the explorer, Run All Cells, move the layer slider, check the heatmap image changed (and take the screenshot)."
    from playwright.sync_api import expect
    page.goto(f"{lab['base']}/lab/tree/{NOTEBOOK.name}?token={lab['token']}")
    page.locator(".jp-Notebook").wait_for(timeout=60_000)
    wait_kernel_idle(lab)
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    page.locator(".lm-Menu-item", has=page.locator(".lm-Menu-itemLabel", has_text="Run All Cells")).first.click()
    page.wait_for_function(  # every code cell has run (the last one checks the explorer from the kernel side)
        "() => { const ps = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];"
        " return ps.length > 0 && ps.every(p => /\\[\\d+\\]/.test(p.textContent)); }", timeout=360_000, polling=500)
    page.locator(".cab-heatmaps img").first.wait_for(timeout=30_000)
    before = heatmap_src(page)
    assert before.startswith("data:image/png;base64,")
    slider = page.locator(".widget-hslider", has_text="layer").first
    readout = slider.locator(".widget-readout")
    assert readout.inner_text().strip() == "0"
    slider.locator(".noUi-handle").focus()
    page.keyboard.press("ArrowRight")
    expect(readout).to_have_text("1", timeout=10_000)
    page.wait_for_function("(b) => { const i = document.querySelector('.cab-heatmaps img');"
                           " return i && i.getAttribute('src') !== b; }", arg=before, timeout=60_000)
    after = heatmap_src(page)
    assert after.startswith("data:image/png;base64,") and after != before
    check_saved_notebook(page, lab)
    if os.environ.get("CAB_BENCH_SCREENSHOT"):
        page.locator(".cab-similarity img").first.wait_for(timeout=30_000)
        page.set_viewport_size({"width": 1400, "height": 2300})
        explorer = page.locator(".cab-explorer").first
        explorer.scroll_into_view_if_needed()
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        explorer.screenshot(path=str(SCREENSHOT))
