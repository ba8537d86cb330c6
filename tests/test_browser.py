"""Notebook 06 in a real browser: JupyterLab on loopback, headless Chromium (Debian) driven by Selenium.

Runs all cells on a tiny checkpoint, types a prompt, clicks Generate and checks that the
samples `sunfish sample` gives for that prompt appear in the panel. The screenshot stays in
the test's temp folder. Chromium and ChromeDriver come from scripts/setup_browser.sh
(called by scripts/test.sh); the test skips, saying why, only when they are not installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from sunfish_lib.notebook.display import visible as visible_text
from sunfish_lib.notebook.report import write_report
from sunfish_lib.notebook.runner import workbook_notebooks
from tests.helpers import NOTEBOOKS, run_cli
from tests.notebook_display import executed_notebooks, figure_cells, read, smoke_workbook
from tests.sampling_helpers import make_run

pytestmark = pytest.mark.slow
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
DEADLINE_S = 240  # the whole test; every wait below is bounded by what is left of it
PROMPT = "JULIET:"


def _find(path: str) -> str | None:
    """The Debian path, else the same program on PATH."""
    return path if Path(path).is_file() else shutil.which(Path(path).name)


def _missing_browser() -> str | None:
    """Why the browser test cannot run here (None: chromium and chromedriver are installed)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if _find(p) is None]
    if not missing:
        return None
    record = Path("/tmp/sunfish-browser-setup.txt")  # written by scripts/setup_browser.sh when it fails
    why = record.read_text().strip() if record.is_file() else "run scripts/setup_browser.sh (scripts/test.sh does)"
    return f"{', '.join(missing)} not installed: {why}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook_with(tmp: Path, params: dict) -> Path:
    """A copy of 06_sampling.ipynb with papermill's injected-parameters cell (not executed)."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOKS / "06_sampling.ipynb")), params)
    out = tmp / "lab" / "06_sampling.ipynb"
    out.parent.mkdir()
    nbformat.write(nb, str(out))
    return out


def _start_lab(tmp: Path, port: int, token: str, root: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp / "jcfg"), "JUPYTER_RUNTIME_DIR": str(tmp / "jrt"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp / "jset"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "jws"),
           "OMP_NUM_THREADS": "1"}
    # every cell in the DOM (no windowing), so each figure can be checked
    tracker = tmp / "jset" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True, exist_ok=True)
    tracker.write_text('{"windowingMode": "none"}')
    news = tmp / "jset" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True, exist_ok=True)
    news.write_text('{"fetchNews": "false"}')  # no "Would you like to get notified..." toast over the screenshots
    root = root or tmp / "lab"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--expose-app-in-browser", "--LabApp.news_url=", "--LabApp.extension_manager=readonly",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if os.geteuid() == 0:  # CI runs as root
        cmd.append("--allow-root")
    return subprocess.Popen(cmd, cwd=root, env=env, stdout=open(tmp / "lab.log", "wb"), stderr=subprocess.STDOUT)


def _wait(what: str, until: float, check, every: float = 0.5):
    """Poll check() until it returns something truthy; fail with `what` at the deadline."""
    while time.monotonic() < until:
        value = check()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what}")


def _exited(lab: subprocess.Popen, tmp: Path) -> bool:
    """False while JupyterLab runs; fails the test with its log's tail once it has exited."""
    if lab.poll() is None:
        return False
    tail = (tmp / "lab.log").read_text(errors="replace").strip().splitlines()[-3:]
    pytest.fail(f"JupyterLab exited with code {lab.returncode}: {' | '.join(tail)}")


def _lab_ready(port: int, token: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _stop_lab(proc: subprocess.Popen, port: int, token: str) -> None:
    """Shut JupyterLab and its kernels down: the REST shutdown, then terminate/kill by pid."""
    import psutil

    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        children = []
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/shutdown?token={token}", method="POST")
        urllib.request.urlopen(req, timeout=5).close()
    except OSError:
        pass
    for p in [proc, *children]:
        try:
            psutil.Process(p.pid).wait(timeout=10) if p is proc else p.wait(timeout=2)
        except psutil.Error:
            pass
        try:
            if (p.poll() is None) if p is proc else p.is_running():
                p.terminate()
                p.wait(timeout=5)
        except (psutil.Error, subprocess.TimeoutExpired):
            p.kill()


def _browser(tmp: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = _find(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--disable-extensions", f"--user-data-dir={tmp / 'chrome'}",
                 "--window-size=1400,1800"):
        opts.add_argument(flag)
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download a driver or browser
    service = Service(_find(CHROMEDRIVER), log_output=str(tmp / "chromedriver.log"))
    driver = webdriver.Chrome(options=opts, service=service)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    return driver


def _text_of(driver, css: str) -> str:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.textContent).join('\\n');", css)


@contextlib.contextmanager
def _panel_06(tmp: Path, until: float):
    """JupyterLab and Chromium on the parameterized 06 (`_notebook_with`): all cells run and PROMPT typed into
    the panel (`_run_all_06`); yields the driver; shuts both down after."""
    port, token = _free_port(), secrets.token_hex(16)
    lab = _start_lab(tmp, port, token)
    driver = None
    try:
        driver = _browser(tmp)
        _run_all_06(driver, lab, tmp, port, token, until)
        yield driver
    finally:
        if driver is not None:
            driver.quit()
        _stop_lab(lab, port, token)


def _run_all_06(driver, lab, tmp: Path, port: int, token: str, until: float) -> None:
    """Open 06 in JupyterLab, run all cells, wait for its own three runs (its Generate, then two more
    settings) in the panel's speed-quality view, type PROMPT into the panel."""
    _wait("JupyterLab to answer on 127.0.0.1", until, lambda: _lab_ready(port, token) or _exited(lab, tmp))
    driver.get(f"http://127.0.0.1:{port}/lab/tree/06_sampling.ipynb?token={token}")
    _wait("the notebook's kernel", until, lambda: driver.execute_script(
        "const a = window.jupyterapp; const w = a && a.shell.currentWidget;"
        "return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
        " && w.sessionContext.session.kernel.status === 'idle');"))
    driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")
    _wait("the panel and the notebook's own runs in the speed-quality view", until,
          lambda: "3 run(s)" in _text_of(driver, ".sunfish-tradeoff"), every=1.0)
    box = driver.find_element("css selector", ".sunfish-prompt textarea")
    box.clear()
    box.send_keys(PROMPT)


def test_panel_in_jupyterlab_in_chromium(tmp_path):
    reason = _missing_browser()
    if reason:
        pytest.skip(reason)
    from sunfish_lib.sampling.session import load_checkpoint, sample

    until = time.monotonic() + 2 * DEADLINE_S  # run-all draws three generations before the panel is driven
    ckpt = make_run(tmp_path / "runs" / "tiny", "masked", length=12, num_samples=2, steps=6)
    expected = sample(load_checkpoint(ckpt), prompt=PROMPT, seed=0).texts  # what `sunfish sample` prints
    _notebook_with(tmp_path, {"checkpoint": str(ckpt), "runs_root": str(tmp_path / "runs"), "smoke": True})
    with _panel_06(tmp_path, until) as driver:
        driver.find_element("css selector", "button.sunfish-generate").click()
        visible = [visible_text(t) for t in expected]  # newlines shown as marks
        shown = _wait(f"the {PROMPT!r} samples in the output area", until,
                      lambda: (t := _text_of(driver, ".sunfish-output")) and visible[-1] in t and t, every=1.0)
        driver.save_screenshot(str(tmp_path / "06_sampling.png"))
        assert all(text in shown for text in visible) and "error:" not in shown
        assert "unigram entropy" in shown and "held-out text" in shown  # the quality beside the samples
        assert "streamed" in _text_of(driver, ".sunfish-live")  # the streamed text gave way to the samples
        assert (tmp_path / "06_sampling.png").stat().st_size > 10_000


def _set_input(driver, name: str, value) -> None:
    """Type `value` into the panel's setting `name` (its class sunfish-<name>) and commit it (Enter)."""
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element("css selector", f".sunfish-{name.replace('_', '-')} input")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value), Keys.ENTER)


def test_panel_threshold_and_block_length_give_the_cli_samples_and_figures(tmp_path):
    """Threshold decoding set with the widgets (sampler, threshold, block length), Generate clicked: the
    texts, forward passes and quality figures (entropy, judge perplexity) are `sunfish sample --json`'s."""
    reason = _missing_browser()
    if reason:
        pytest.skip(reason)
    from selenium.webdriver.support.ui import Select

    until = time.monotonic() + 2 * DEADLINE_S
    workbook = tmp_path / "workbook"
    ckpt = make_run(workbook / "04_train", "masked", length=12, num_samples=2, steps=6)
    judge = make_run(workbook / "04_baselines" / "ar", "ar")  # the panel's judge: the workbook's ar model
    flags = {"sampler": "threshold", "threshold": 0.3, "block_length": 4}
    cli = run_cli("sample", str(ckpt), "--prompt", PROMPT, "--seed", "0", "--judge", str(judge), "--json",
                  "--no-save", *[a for k, v in flags.items() for a in (f"--{k.replace('_', '-')}", str(v))])
    assert cli.returncode == 0, cli.stderr[-2000:]
    expected = json.loads(cli.stdout)
    q = expected["quality"]
    _notebook_with(tmp_path, {"run_dir": str(workbook), "runs_root": str(workbook), "smoke": True})
    with _panel_06(tmp_path, until) as driver:
        Select(driver.find_element("css selector", ".sunfish-sampler select")).select_by_visible_text("threshold")
        _set_input(driver, "threshold", flags["threshold"])
        _set_input(driver, "block_length", flags["block_length"])
        driver.find_element("css selector", "button.sunfish-generate").click()
        visible = [visible_text(t) for t in expected["texts"]]
        shown = _wait("the threshold samples in the output area", until,
                      lambda: (t := _text_of(driver, ".sunfish-output")) and all(v in t for v in visible) and t,
                      every=1.0)
        view = _wait("the new point in the speed-quality view", until,
                     lambda: (t := _text_of(driver, ".sunfish-tradeoff")) and "1 run(s)" in t and t, every=1.0)
        driver.save_screenshot(str(tmp_path / "06_threshold.png"))
        assert "error:" not in shown and f"{expected['forward_passes']} forward passes" in shown
        command = _text_of(driver, ".sunfish-command-line")
        assert "--sampler threshold" in command and "--threshold 0.3" in command and "--block-length 4" in command
        per_token = expected["forward_passes"] / q["tokens_per_sample"]
        assert f"{per_token:.3f} forward passes per generated token ({expected['forward_passes']} passes)" in view
        assert f"entropy {q['entropy']:.3f} nats, judge perplexity {q['judge_ppl']:.2f}" in view


SHOW_S = 45  # per notebook: open it; then as long again for its images


def _open(driver, port: int, token: str, name: str, until: float) -> None:
    driver.get(f"http://127.0.0.1:{port}/lab/tree/{name}?token={token}")
    _wait(f"{name} to render", until, lambda: driver.execute_script(
        "const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        "return !!(w && w.content && w.content.widgets && w.content.widgets.length"
        " && w.context && w.context.path === arguments[0] && w.content.widgets.every(c => c.isAttached)"
        " && w.node.querySelectorAll('.jp-Cell').length === w.content.widgets.length);", name))


def _images_shown(driver, cells: list[int]) -> dict[int, bool]:
    """cell index -> whether that cell shows a decoded image (scrolled into view first)."""
    return driver.execute_script("""
        const w = window.jupyterapp.shell.currentWidget;  // this notebook's cells only, not other tabs
        const cells = w.node.querySelectorAll('.jp-Cell'), out = {};
        for (const i of arguments[0]) {
          const c = cells[i]; if (!c) { out[i] = false; continue; }
          c.scrollIntoView();
          const imgs = c.querySelectorAll('.jp-OutputArea img');
          out[i] = imgs.length > 0 && Array.from(imgs).every(im => im.complete && im.naturalWidth > 0);
        }
        return out;""", cells)


def _screenshot(driver, path: Path) -> None:
    """The whole notebook: the window as tall as its content (at most 16,000 px)."""
    scroller = ("const c = window.jupyterapp.shell.currentWidget.content.node;"
                "const n = c.querySelector('.jp-WindowedPanel-outer') || c;")
    h = driver.execute_script(scroller + "return n.scrollHeight;")
    driver.set_window_size(1400, min(max(int(h) + 250, 900), 16000))
    driver.execute_script(scroller + "n.scrollTop = 0;")
    time.sleep(0.5)
    driver.save_screenshot(str(path))


def test_executed_workbook_renders_in_jupyterlab(tmp_path_factory):
    """Each executed smoke-workbook notebook, opened in JupyterLab: every figure cell shows a rendered
    image, no cell says "Error displaying widget"; full-notebook screenshots go to <run>/screenshots/."""
    reason = _missing_browser()
    if reason:
        pytest.skip(reason)
    run = smoke_workbook(tmp_path_factory.mktemp("workbook"))
    tmp = tmp_path_factory.mktemp("lab")
    notebooks = executed_notebooks(run)
    assert len(notebooks) == len(workbook_notebooks()) or os.environ.get("SUNFISH_SMOKE_WORKBOOK")  # a given folder may hold fewer
    shots = run / "screenshots"
    shots.mkdir(exist_ok=True)
    t0 = time.monotonic()
    until = t0 + 60 + SHOW_S * len(notebooks)
    port, token = _free_port(), secrets.token_hex(16)
    lab = _start_lab(tmp, port, token, root=run)
    driver, problems = None, {}
    try:
        _wait("JupyterLab to answer on 127.0.0.1", until, lambda: _lab_ready(port, token) or _exited(lab, tmp))
        driver = _browser(tmp)
        for nb_path in notebooks:
            cells = figure_cells(read(nb_path))
            driver.set_window_size(1400, 1800)
            _open(driver, port, token, nb_path.name, min(until, time.monotonic() + SHOW_S))
            shown, deadline = {}, min(until, time.monotonic() + SHOW_S)
            while cells and time.monotonic() < deadline:
                shown = _images_shown(driver, cells)
                if all(shown.values()):
                    break
                time.sleep(1.0)
            missing = [int(i) for i, ok in shown.items() if not ok]
            if missing:
                problems[nb_path.name] = f"figure cells without a rendered image: {missing}"
            text = driver.execute_script("return window.jupyterapp.shell.currentWidget.node.innerText;")
            outputs = driver.execute_script(  # what the cells showed, not their source
                "return Array.from(window.jupyterapp.shell.currentWidget.node"
                ".querySelectorAll('.jp-OutputArea-output')).map(o => o.innerText).join(' ');")
            if "Error displaying widget" in text:
                problems[nb_path.name] = problems.get(nb_path.name, "") + " Error displaying widget"
            if "VBox(children" in outputs or "Tab(children" in outputs:  # an executed copy shows static twins only
                problems[nb_path.name] = problems.get(nb_path.name, "") + " a raw widget repr"
            _screenshot(driver, shots / f"{nb_path.stem}.png")
            driver.execute_script("const w = window.jupyterapp.shell.currentWidget;"  # closed unsaved: a copy is read
                                  "w.context.model.dirty = false; w.close();")
    finally:
        if driver is not None:
            driver.quit()
        _stop_lab(lab, port, token)
    seconds = time.monotonic() - t0
    (shots / "timing.txt").write_text(f"{len(notebooks)} notebooks opened and checked in {seconds:.1f} s\n")
    assert problems == {}
    assert all((shots / f"{p.stem}.png").stat().st_size > 20_000 for p in notebooks)


def test_workbook_report_opens_from_disk_with_every_figure_an_image(tmp_path_factory):
    """report.html of the smoke workbook, opened as a file (no server): each notebook page linked from the index
    shows every figure cell's image decoded, HTML tables as tables no wider than the page, and no raw widget repr."""
    reason = _missing_browser()
    if reason:
        pytest.skip(reason)
    run = smoke_workbook(tmp_path_factory.mktemp("workbook"))
    summary, index = write_report(run)
    tmp = tmp_path_factory.mktemp("report")
    driver, problems = _browser(tmp), {}
    try:
        driver.get(index.as_uri())
        links = driver.execute_script("return Array.from(document.querySelectorAll('li a')).map(a => a.href);")
        assert len(links) == len(executed_notebooks(run))
        assert driver.execute_script("return document.querySelectorAll('table').length;") >= 2  # the summary's
        for href, nb_path in zip(links, executed_notebooks(run)):
            driver.get(href)
            nb = read(nb_path)
            found = driver.execute_script("""
                const imgs = Array.from(document.querySelectorAll('.jp-OutputArea-output img'));
                return {images: imgs.length, decoded: imgs.filter(im => im.complete && im.naturalWidth > 0).length,
                        tables: document.querySelectorAll('.jp-OutputArea-output table').length,
                        wide: Array.from(document.querySelectorAll('.jp-OutputArea-output table'))
                                  .filter(t => t.getBoundingClientRect().width > window.innerWidth).length,
                        text: Array.from(document.querySelectorAll('.jp-OutputArea-output'))
                                  .map(o => o.innerText).join(' ')};""")
            tables = sum("<table" in "".join(o.get("data", {}).get("text/html", "")) for c in nb.cells
                         for o in c.get("outputs", []))
            if found["decoded"] != found["images"] or found["images"] < len(figure_cells(nb)):
                problems[nb_path.name] = f"{found['decoded']}/{found['images']} images decoded, " \
                                         f"{len(figure_cells(nb))} figure cells"
            if found["tables"] < tables:
                problems[nb_path.name] = f"{found['tables']} tables shown of {tables}"
            if "VBox(children" in found["text"] or "Tab(children" in found["text"]:
                problems[nb_path.name] = "a raw widget repr"
            if found["wide"]:
                problems[nb_path.name] = f"{found['wide']} table(s) wider than the page"
    finally:
        driver.quit()
    assert problems == {}
