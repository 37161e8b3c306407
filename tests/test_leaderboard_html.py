"""The leaderboard page in a real headless Chromium: it renders, sorts, and stays offline.

Chromium (Debian package ``chromium``; `.ci/run` installs it) is driven two ways:
``--screenshot`` for a picture whose pixels must show the table and the chart, and the
DevTools protocol over ``--remote-debugging-pipe`` (no port) to record every network
request, console message and exception of the page and to click a column header. A
control page that does load from a loopback server proves the recorder sees requests.
"""

from __future__ import annotations

import fcntl
import http.server
import json
import os
import select
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from leaderboard_support import make_run

from persona_eval.leaderboards.build import build_leaderboard
from persona_eval.leaderboards.render import write_page

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)")
HOSTILE = "<script>alert('x')</script>"


def chromium_args(profile: Path) -> list[str]:
    return [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
    ]


def chromium_env() -> dict[str, str]:
    # No D-Bus in a container: pointing Chromium at none skips its reconnect attempts.
    return {**os.environ, "DBUS_SESSION_BUS_ADDRESS": "disabled:", "DBUS_SYSTEM_BUS_ADDRESS": "disabled:"}


class DevTools:
    """A minimal Chrome DevTools Protocol client over --remote-debugging-pipe (fds 3 and 4)."""

    def __init__(self, profile: Path, timeout: float = 60.0):
        self.timeout = timeout
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_fds():
            # Move both ends above 10 first, so dup2 onto 3 and 4 cannot clobber one of them.
            high_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            high_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen(
            [*chromium_args(profile), "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=wire_fds, close_fds=False, env=chromium_env(),
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from Chromium")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 16)
                if not chunk:
                    raise RuntimeError("Chromium closed the pipe: " + self.proc.stderr.read().decode(errors="replace")[-2000:])
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str) -> dict:
        deadline = time.monotonic() + self.timeout
        for event in self.events:
            if event.get("method") == method and event.get("sessionId") == session:
                return event
        while True:
            event = self._read_message(deadline)
            self.events.append(event)
            if event.get("method") == method and event.get("sessionId") == session:
                return event

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events.append(self._read_message(deadline))
        except TimeoutError:
            pass

    def open(self, url: str) -> str:
        """Open ``url`` in a new tab with network, console and log recording on; returns the session."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Network", "Log", "Runtime", "Page"):
            self.send(f"{domain}.enable", session=session)
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired", session)
        self.drain(0.5)  # anything the page starts after load
        return session

    def evaluate(self, expression: str, session: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}, session=session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def requests(self, session: str) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent" and e.get("sessionId") == session]

    def problems(self, session: str) -> list[str]:
        """Console errors and warnings, log errors (CSP refusals land here) and exceptions."""
        found = []
        for e in self.events:
            if e.get("sessionId") != session:
                continue
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                found.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
                found.append(f"log {params['entry']['level']}: {params['entry'].get('text')}")
            elif method == "Runtime.exceptionThrown":
                found.append(f"exception: {params.get('exceptionDetails')}")
        return found

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:  # noqa: BLE001 - it may already be gone
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        self.proc.stderr.close()


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """A rendered leaderboard: four models on both splits, hostile strings included."""
    root = tmp_path_factory.mktemp("lb-html")
    runs = root / "runs"
    specs = [
        ("hf:HuggingFaceTB/SmolLM2-1.7B-Instruct", "pt", 28.0, 9.0),
        ("hf:Qwen/Qwen2.5-7B-Instruct", "pt", 41.0, 17.5),
        (f"hf:{HOSTILE}", "inline", 12.0, -6.0),
        ("hf:meta-llama/Llama-3.1-8B-Instruct", "pt_fs", None, 3.0),
    ]
    for i, (model, strategy, chosen, rejected) in enumerate(specs):
        for split, dpq in (("chosen", chosen), ("rejected", rejected)):
            make_run(runs, f"m{i}-{split}", split=split, model=model, strategy=strategy, dpq=dpq,
                     personas=(f"The user is {HOSTILE} and prefers short answers.", "The user is a careful planner."))
    doc = build_leaderboard([runs], base=root, title="Demo leaderboard")
    return write_page(doc, root / "site", source_dir=root)


def test_screenshot_shows_table_and_chart(page, tmp_path):
    shot = tmp_path / "page.png"
    result = subprocess.run(
        [*chromium_args(tmp_path / "profile"), "--window-size=1280,1200", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120, env=chromium_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert shot.stat().st_size > 30_000, "a blank page compresses to a few kB"
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 1200)
    colors = image.getcolors(maxcolors=1 << 20)
    assert len(colors) > 200, "too few colours for text, table and chart"
    counts = {rgb: n for n, rgb in colors}

    def pixels_near(target, tolerance=6):
        return sum(n for rgb, n in counts.items() if all(abs(a - b) <= tolerance for a, b in zip(rgb, target)))

    # The chart's markers and whiskers (rejected red, chosen blue) and the table's
    # highlighted hard-benchmark header are drawn in colours used nowhere else.
    assert pixels_near((0xC0, 0x39, 0x2B)) > 300, "no rejected-split marks of the chart"
    assert pixels_near((0x24, 0x70, 0xB3)) > 300, "no chosen-split marks of the chart"
    assert pixels_near((0xFB, 0xEA, 0xE8)) > 1000, "no table header"
    keep = os.environ.get("PERSONA_EVAL_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def column(key: str) -> str:
    """JavaScript: the data-sort values of one column of the first table, top to bottom."""
    return (
        "(() => { const t = document.querySelector('#table-0');"
        f" const i = Array.from(t.tHead.rows[0].cells).findIndex(c => c.dataset.key === '{key}');"
        " return Array.from(t.tBodies[0].rows).map(r => r.cells[i].getAttribute('data-sort')); })()"
    )


def test_page_runs_offline_without_errors_and_sorts(page, tmp_path):
    browser = DevTools(tmp_path / "profile")
    try:
        session = browser.open(page.as_uri())
        assert browser.problems(session) == []
        assert browser.requests(session) == [page.as_uri()], "the page made a request beyond itself"
        assert browser.evaluate("document.documentElement.getAttribute('data-sortable')", session) == "1"
        # The hostile model name is text, not markup: no extra script ran or exists.
        assert browser.evaluate("document.scripts.length", session) == 1
        assert browser.evaluate("typeof window.alert === 'function' && !document.querySelector('img')", session) is True
        models = "Array.from(document.querySelectorAll('#table-0 tbody tr')).map(r => r.dataset.model)"
        assert browser.evaluate(models, session) == [
            "hf:Qwen/Qwen2.5-7B-Instruct", "hf:HuggingFaceTB/SmolLM2-1.7B-Instruct",
            "hf:meta-llama/Llama-3.1-8B-Instruct", f"hf:{HOSTILE}",
        ]
        box = browser.evaluate(
            "(() => { const t = document.querySelector('#table-0').getBoundingClientRect();"
            " const c = document.querySelector('#chart-0').getBoundingClientRect();"
            " return [t.width, t.height, c.width, c.height, document.querySelectorAll('#chart-0 circle').length]; })()",
            session,
        )
        assert box[0] > 600 and box[1] > 150 and box[2] > 600 and box[3] > 150, box
        assert box[4] == 7 + 2, "7 defined dPQ markers and 2 legend dots"
        click = "document.querySelector('#table-0 th[data-key=\"gap\"] button').click()"
        browser.evaluate(click, session)  # numbers sort largest first
        assert browser.evaluate(models, session) == [
            f"hf:{HOSTILE}", "hf:HuggingFaceTB/SmolLM2-1.7B-Instruct", "hf:Qwen/Qwen2.5-7B-Instruct",
            "hf:meta-llama/Llama-3.1-8B-Instruct",
        ]
        assert browser.evaluate(column("gap"), session) == ["-18.0", "-19.0", "-23.5", ""]
        assert browser.evaluate("document.querySelector('#table-0').dataset.sortedBy", session) == "gap:desc"
        browser.evaluate(click, session)
        assert browser.evaluate(column("gap"), session) == ["-23.5", "-19.0", "-18.0", ""], "undefined stays last"
        browser.evaluate("document.querySelector('#table-0 th[data-key=\"model\"] button').click()", session)
        names = browser.evaluate(models, session)
        assert names == sorted(names, key=str.lower)
        # Sorting from the URL fragment, as a shared link would.
        fragment = browser.open(page.as_uri() + "#sort=0:dpq-chosen:asc")
        assert browser.evaluate(column("dpq-chosen"), fragment) == ["12.0", "28.0", "41.0", ""]
        assert browser.problems(session) == [] and browser.problems(fragment) == []
    finally:
        browser.close()


class _Counter(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 - the http.server API
        _Counter.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/gif")
        self.end_headers()
        self.wfile.write(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")

    def log_message(self, *args):
        pass


def test_the_recorder_catches_requests_and_csp_refusals(page, tmp_path):
    """Controls: a request from a page is seen, and a request the CSP blocks is reported."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/pixel.gif"
    leaky = tmp_path / "leaky.html"
    leaky.write_text(f'<!DOCTYPE html><html><body><img src="{url}"></body></html>')
    blocked = tmp_path / "blocked.html"
    blocked.write_text(page.read_text().replace("<main>", f'<main><img src="{url}?csp">', 1))
    browser = DevTools(tmp_path / "profile")
    try:
        session = browser.open(leaky.as_uri())
        assert url in browser.requests(session)
        assert "/pixel.gif" in _Counter.hits
        session = browser.open(blocked.as_uri())
        assert any("Content Security Policy" in p for p in browser.problems(session)), browser.problems(session)
        assert "/pixel.gif?csp" not in _Counter.hits
    finally:
        browser.close()
        server.shutdown()
        server.server_close()
