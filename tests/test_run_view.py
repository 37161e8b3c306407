"""`persona-eval view RUN_DIR`: the run browser page, in a real headless Chromium.

A small run of the scripted backends (judged again into a ``judge-*`` folder) gets hostile
text planted in its records and a few verdicts changed, so every outcome kind shows. The
page must render (a screenshot with real pixels), make no request and log no error, filter
by outcome, criterion, judge and text, show hostile text as text, and switch judge. A
synthetic 10,000-item run must load (one page of items in the DOM) and filter and search
(its speed is bench/view.py's, against a bare page of the same bytes), and a run with three judges and no results.json yet shows the majority and each judge.
The Chromium driver (DevTools over a pipe) is the leaderboard page test's.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from html import unescape
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_leaderboard_html import CHROMIUM, DevTools, chromium_args, chromium_env

import persona_eval
from persona_eval.cli import _add_plugin_commands, cli

needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)")

HOSTILE_PERSONA = ("The user is <script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\"> "
                   "<b>bold</b> & prefers ]]> <!-- short --> answers.")
HOSTILE_ID = "demo-<i>003</i>\"'&"
LONG_LINE = "x" * 40_000
RTL = "\u0645\u0631\u062d\u0628\u0627\u060c \u0647\u0630\u0647 \u0625\u062c\u0627\u0628\u0629 \u0642\u0635\u064a\u0631\u0629. \u202eevil"
FEEDBACK = "</script><script>window.__pwned = 3</script> feedback-marker-qz: B is better.\n[RESULT] B"


def _invoke(*args):
    _add_plugin_commands()
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _rewrite(path: Path, change) -> None:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    path.write_text("".join(json.dumps(change(r) or r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """Three scripted items judged by `longer` (with P(A)) and re-judged by `shorter`, then made hostile.

    After planting, the run's own outcomes are: item 1 win/win, item 2 unscored/win, item 3 (a
    hostile id) win/tie; the re-judging's are loss everywhere.
    """
    import judging_support as js

    root = tmp_path_factory.mktemp("run-view")
    plugin = js.install()
    try:
        cache = str(root / "cache.sqlite")
        persona_eval.evaluate(model="scripted:writer", judge="gpt-4o", judge_model="scripted:longer,probs=true", limit=3,
                              bootstrap=100, output_dir=root / "run", cache_path=cache)
        persona_eval.rejudge(root / "run", judge_model="scripted:shorter", cache_path=cache, resamples=100)
    finally:
        js.uninstall(plugin)
    run = root / "run"
    rejudging = next(run.glob("judge-*"))

    def rename(record):
        if record["item_id"] == "demo-test-003":
            record["item_id"] = HOSTILE_ID

    def plant_generation(record):
        rename(record)
        if record["item_id"] == "demo-test-001":
            record["persona"] = HOSTILE_PERSONA
        if record["item_id"] == "demo-test-002":
            record["response"] = LONG_LINE if record["role"] == "test" else RTL

    def plant_judgment(record):
        rename(record)
        if (record["item_id"], record["criterion"], record["order"]) == ("demo-test-002", "personalization", "baseline_first"):
            record.update(winner=None, prob_a=None, raw=FEEDBACK.replace("[RESULT] B", "no verdict"),
                          unscored_reason="no verdict at the end of the judge's text", attempts=2)
        if (record["item_id"], record["criterion"], record["order"]) == (HOSTILE_ID, "quality", "test_first"):
            record.update(winner="B", raw=FEEDBACK)

    _rewrite(run / "generations.jsonl", plant_generation)
    _rewrite(run / "judgments.jsonl", plant_judgment)
    _rewrite(rejudging / "judgments.jsonl", rename)
    outcome = _invoke("view", str(run))
    assert outcome.exit_code == 0, outcome.output
    assert outcome.output.strip() == f"wrote {run / 'view' / 'index.html'}: 3 items, 2 judges"
    return run


def test_page_is_one_offline_file_with_data_as_json(run_dir):
    html = (run_dir / "view" / "index.html").read_text(encoding="utf-8")
    csp = unescape(html.split('http-equiv="Content-Security-Policy" content="', 1)[1].split('"', 1)[0])
    assert csp.startswith("default-src 'none'; style-src 'sha256-") and "connect-src 'none'" in csp
    # No text of the run appears as markup: the data element holds it with < > & escaped.
    for raw in ("<script>window", "</script><script>", "<img", "<b>bold", "<i>003"):
        assert raw not in html
    assert html.count("<script") == 2 and 'type="application/json" id="run-data"' in html
    assert "<link" not in html and 'src="' not in html and "@import" not in html


@needs_chromium
def test_screenshot_shows_the_items(run_dir, tmp_path):
    page = run_dir / "view" / "index.html"
    shot = tmp_path / "view.png"
    result = subprocess.run(
        [*chromium_args(tmp_path / "profile"), "--window-size=1280,1400", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120, env=chromium_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert shot.exists() and shot.stat().st_size > 30_000, "a blank page compresses to a few kB"
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 1400)
    colors = image.getcolors(maxcolors=1 << 20)
    assert len(colors) > 200, "too few colours for text, badges and panels"
    counts = {rgb: n for n, rgb in colors}

    def pixels_near(target, tolerance=6):
        return sum(n for rgb, n in counts.items() if all(abs(a - b) <= tolerance for a, b in zip(rgb, target)))

    # The win badges, the test response's top border and the persona panel use colours found nowhere else.
    assert pixels_near((0x1E, 0x7B, 0x4F)) > 300, "no win badges"
    assert pixels_near((0x24, 0x70, 0xB3)) > 300, "no test-response panels"
    assert pixels_near((0xF6, 0xF3, 0xFB)) > 3000, "no persona panel"


def _texts(selector: str) -> str:
    return f"Array.from(document.querySelectorAll({json.dumps(selector)})).map(e => e.textContent)"


def _choose(select_id: str, value: str) -> str:
    """JavaScript: pick an option of a <select> as a user does (value, then a change event)."""
    return (f"(() => {{ const s = document.getElementById({json.dumps(select_id)}); s.value = {json.dumps(value)};"
            " s.dispatchEvent(new Event('change', {bubbles: true})); return s.value; })()")


def _type(text: str) -> str:
    return (f"(() => {{ const s = document.getElementById('search'); s.value = {json.dumps(text)};"
            " s.dispatchEvent(new Event('input', {bubbles: true})); })()")


def _click(browser: DevTools, session: str, selector: str) -> None:
    """A real mouse click (press and release at the element's centre) through the DevTools protocol."""
    box = browser.evaluate(
        f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
        " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()", session)
    for kind in ("mousePressed", "mouseReleased"):
        browser.send("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1},
                     session=session)


def _headline(folder: Path, key: str) -> str:
    metrics = json.loads((folder / "results.json").read_text())["metrics"]
    return " · headline" if metrics.get("headline", "dpq") == key else ""


def _expected_tiles(folder: Path) -> list[str | None]:
    """What the dPQ tile and the weighted-dPQ tile (None without one) must start with, from results.json."""
    metrics = json.loads((folder / "results.json").read_text())["metrics"]

    def value(block):
        ci = block.get("dpq_ci95")
        dpq = "undefined" if block.get("dpq") is None else f"{block['dpq']:+.1f}"
        return dpq + (f"[{ci[0]:+.1f}, {ci[1]:+.1f}]" if ci else "")

    weighted = metrics.get("weighted")
    return [f"dPQ (paper){_headline(folder, 'dpq')}{value(metrics)}",
            None if weighted is None else f"weighted dPQ{_headline(folder, 'weighted_dpq')}{value(weighted)}"]


def _tiles(browser: DevTools, session: str) -> list[str | None]:
    return browser.evaluate(
        "['dpq-tile', 'weighted-tile'].map(id => document.getElementById(id))"
        ".map(t => t && Array.from(t.querySelectorAll('.tile-label, .tile-value, .tile-ci')).map(e => e.textContent).join(''))",
        session)


SHOWN_IDS = "Array.from(document.querySelectorAll('article.item')).map(a => a.dataset.itemId)"


@needs_chromium
def test_page_filters_escapes_and_switches_judge(run_dir, tmp_path):
    page = run_dir / "view" / "index.html"
    browser = DevTools(tmp_path / "profile")
    try:
        session = browser.open(page.as_uri())
        assert browser.evaluate("document.documentElement.dataset.ready", session) == "1"
        assert browser.problems(session) == []
        assert browser.requests(session) == [page.as_uri()], "the page made a request beyond itself"
        assert browser.evaluate(SHOWN_IDS, session) == ["demo-test-001", "demo-test-002", HOSTILE_ID]

        # Hostile text is text: nothing injected ran or exists, and the very characters show.
        assert browser.evaluate("window.__pwned === undefined && document.scripts.length === 2", session) is True
        assert browser.evaluate("document.querySelectorAll('main img, main b, main i, main iframe, main script').length",
                                session) == 0
        first = "article[data-index='0']"
        assert browser.evaluate(f"document.querySelector(\"{first} .persona .text\").textContent", session) == HOSTILE_PERSONA
        assert browser.evaluate(_texts("article .item-id"), session)[2] == HOSTILE_ID
        second = "document.querySelector(\"article[data-index='1'] .response.baseline .text\")"
        assert browser.evaluate(f"{second}.textContent", session) == RTL
        assert browser.evaluate(f"getComputedStyle({second}).direction", session) == "rtl"
        assert browser.evaluate(f"{second.replace('baseline', 'test')}.textContent.length", session) == len(LONG_LINE)
        assert browser.evaluate("document.documentElement.scrollWidth <= window.innerWidth", session) is True, \
            "a 40,000-character line widened the page"
        feedback = _texts("article[data-index='1'] .criterion[data-criterion='personalization'] .feedback")
        assert browser.evaluate(feedback, session)[0].startswith("</script><script>window.__pwned = 3</script>")

        # Verdicts, P(A) and the outcome per criterion of item 1 under the run's judge.
        rows = ("Array.from(document.querySelectorAll(\"article[data-index='0'] .criterion[data-criterion='personalization']"
                " tbody tr\")).map(r => Array.from(r.cells).slice(0, 4).map(c => c.textContent))")
        assert browser.evaluate(rows, session) == [
            ["A = baseline, B = test", "B \u2192 test", "0.300", "1"], ["A = test, B = baseline", "A \u2192 test", "0.800", "1"]]
        assert browser.evaluate(_texts("article[data-index='1'] .badges .badge"), session) == [
            "personalization: unscored", "quality: win"]
        assert "unscored: no verdict at the end" in browser.evaluate(
            _texts("article[data-index='1'] .criterion[data-criterion='personalization'] td.verdict"), session)[0]
        assert _tiles(browser, session) == _expected_tiles(run_dir)
        assert _tiles(browser, session)[0] == "dPQ (paper)+100.0[+100.0, +100.0]".replace(")", ")" + _headline(run_dir, "dpq"))
        assert "judge health: tie rate 0.00" in browser.evaluate("document.getElementById('summary').textContent", session)

        # Outcome and criterion filters.
        browser.evaluate(_choose("outcome-select", "t"), session)
        assert browser.evaluate(SHOWN_IDS, session) == [HOSTILE_ID]
        assert "tie (1)" in browser.evaluate(_texts("#outcome-select option"), session)
        browser.evaluate(_choose("outcome-select", "u"), session)
        assert browser.evaluate(SHOWN_IDS, session) == ["demo-test-002"]
        browser.evaluate(_choose("criterion-select", "1"), session)  # quality: nothing unscored
        assert browser.evaluate(SHOWN_IDS, session) == []
        assert browser.evaluate("document.querySelector('main .empty').textContent", session) == "No item matches these filters."
        browser.evaluate(_choose("outcome-select", "w"), session)
        assert browser.evaluate(SHOWN_IDS, session) == ["demo-test-001", "demo-test-002"]
        # Only the chosen criterion's verdicts are shown.
        assert browser.evaluate(_texts("article[data-index='0'] .criterion h3"), session) == ["quality win"]
        browser.evaluate(_choose("criterion-select", ""), session)
        browser.evaluate(_choose("outcome-select", ""), session)

        # Text search: the prompt of item 1, then a word only the planted feedback holds.
        browser.evaluate(_type("TOMATO pasta"), session)
        assert browser.evaluate(SHOWN_IDS, session) == ["demo-test-001"]
        browser.evaluate(_type("feedback-marker-qz"), session)
        assert browser.evaluate(SHOWN_IDS, session) == ["demo-test-002", HOSTILE_ID]
        browser.evaluate(_type(""), session)
        assert len(browser.evaluate(SHOWN_IDS, session)) == 3

        # A real click opens the input the test model saw.
        _click(browser, session, "article[data-index='0'] .response.test details summary")
        assert browser.evaluate("document.querySelector(\"article[data-index='0'] .response.test details\").open", session) is True

        # Switching to the re-judging (scripted:shorter): every outcome a loss, its own dPQ.
        judges = browser.evaluate(_texts("#judge-select option"), session)
        assert judges[0] == "gpt-4o on scripted:longer,probs=true (this run)"
        assert judges[1].startswith("gpt-4o on scripted:shorter (judge-gpt-4o-shorter-") and len(judges) == 2
        browser.evaluate(_choose("judge-select", "1"), session)
        assert _tiles(browser, session) == _expected_tiles(next(run_dir.glob("judge-*")))
        assert _tiles(browser, session)[0].startswith("dPQ (paper)" + _headline(next(run_dir.glob("judge-*")), "dpq") + "-100.0")
        assert set(browser.evaluate(_texts("article .badges .badge"), session)) == {"personalization: loss", "quality: loss"}
        assert browser.evaluate(_texts("article[data-index='0'] td.verdict"), session)[0] == "A \u2192 baseline"
        browser.evaluate(_choose("outcome-select", "w"), session)
        assert browser.evaluate(SHOWN_IDS, session) == []
        browser.evaluate(_choose("outcome-select", "l"), session)
        assert len(browser.evaluate(SHOWN_IDS, session)) == 3
        browser.evaluate(_choose("judge-select", "0"), session)
        assert browser.evaluate(SHOWN_IDS, session) == [], "the run's judge has no loss"
        assert browser.problems(session) == []
        assert browser.requests(session) == [page.as_uri()]
    finally:
        browser.close()


def test_output_dir_and_open(run_dir, tmp_path, monkeypatch):
    opened = []
    monkeypatch.setattr("webbrowser.open", lambda url, *a, **k: opened.append(url) or True)
    out = tmp_path / "site"
    outcome = _invoke("view", str(run_dir), "-o", str(out), "--open")
    assert outcome.exit_code == 0, outcome.output
    assert (out / "index.html").is_file() and opened == [(out / "index.html").resolve().as_uri()]
    # A judge-* folder is a run of its own to the command: its verdicts, the parent's generations.
    rejudging = next(run_dir.glob("judge-*"))
    outcome = _invoke("view", str(rejudging), "-o", str(tmp_path / "sub"))
    assert outcome.exit_code == 0 and outcome.output.endswith(": 3 items, 1 judge\n"), outcome.output


def _fails(*args) -> str:
    _add_plugin_commands()
    outcome = CliRunner().invoke(cli, list(args))
    assert outcome.exit_code == 2, outcome.output
    lines = outcome.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), outcome.output
    return lines[0]


def test_bad_input_is_one_line_and_writes_nothing(run_dir, tmp_path):
    import shutil

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "not a run directory" in _fails("view", str(empty))
    assert "no such folder" in _fails("view", str(tmp_path / "missing"))
    assert not (empty / "view").exists()

    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken, ignore=shutil.ignore_patterns("view", "judge-*"))
    lines = (broken / "judgments.jsonl").read_text().splitlines()
    (broken / "judgments.jsonl").write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    assert f"{broken / 'judgments.jsonl'}:2: malformed JSON Lines record" in _fails("view", str(broken))
    record = json.loads(lines[3])
    del record["order"]
    (broken / "judgments.jsonl").write_text("\n".join([*lines[:3], "", json.dumps(record), *lines[4:]]) + "\n")
    line = _fails("view", str(broken))
    # Refused while the run is read back (the record has no key), naming the line: the blank line counts.
    assert f"{broken / 'judgments.jsonl'}:5: judgment record lacks 'order'" in line, line
    (broken / "judgments.jsonl").write_text("\n".join(lines) + "\n")
    generations = (broken / "generations.jsonl").read_text().splitlines()
    record = json.loads(generations[1])
    record["role"] = "other"
    (broken / "generations.jsonl").write_text("\n".join([generations[0], json.dumps(record), *generations[2:]]) + "\n")
    assert f"{broken / 'generations.jsonl'}:2: generation record with role 'other'" in _fails("view", str(broken))
    assert not (broken / "view").exists()

    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    outcome = CliRunner().invoke(cli, ["view", str(run_dir), "-o", str(a_file)])  # click's own check of the option
    assert outcome.exit_code == 2 and "is a file" in outcome.output, outcome.output
    assert a_file.read_text() == "x"


# -- several judges, an unfinished run ---------------------------------------------------------

SIDES = {"w": ("B", "A"), "l": ("A", "B"), "t": ("A", "A"), "u": (None, None)}  # (baseline_first, test_first) winners


def test_several_judges_majority_of_an_unfinished_run(tmp_path):
    """Three judges, no results.json yet: a majority choice and one per judge, outcomes counted from the records."""
    from persona_eval.plugins.commands.view import build_run_view

    run = tmp_path / "run"
    run.mkdir()
    labels = ["prometheus", "gpt-4o", "gpt-4o@openai:gpt-4o-mini"]
    planned = {  # item -> criterion -> one outcome per judge
        "a": {"personalization": "wwl", "quality": "tul"},
        "b": {"personalization": "uuu", "quality": "llu"},
    }
    (run / "config.json").write_text(json.dumps({"judges": labels, "judge_model": "hf:judge", "model": "m", "baseline": "b"}))
    (run / "generations.jsonl").write_text("".join(
        json.dumps({"item_id": i, "role": role, "prompt": f"prompt {i}", "persona": "The user is kind.", "response": role})
        + "\n" for i in planned for role in ("test", "baseline")))
    records = []
    for item, per_criterion in planned.items():
        for criterion, outcomes in per_criterion.items():
            for label, outcome in zip(labels, outcomes):
                for order, winner in zip(("baseline_first", "test_first"), SIDES[outcome]):
                    records.append({"item_id": item, "criterion": criterion, "order": order, "judge": label, "winner": winner,
                                    "raw": f"{label} says {winner}", "prob_a": None})
    (run / "judgments.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    view = build_run_view(run)
    assert view["run"]["finished"] is False and view["criteria"] == ["personalization", "quality"]
    names = [c["name"] for c in view["choices"]]
    assert names == ["majority of prometheus, gpt-4o, gpt-4o@openai:gpt-4o-mini on hf:judge", "prometheus on hf:judge",
                     "gpt-4o on hf:judge", "gpt-4o@openai:gpt-4o-mini"]
    # unscored judges abstain; no majority is a tie; all unscored is unscored
    assert view["choices"][0]["outcomes"] == ["wu", "tl"]
    assert [c["outcomes"] for c in view["choices"][1:]] == [["wu", "tl"], ["wu", "ul"], ["lu", "lu"]]
    assert all(c["summary"] is None for c in view["choices"])
    assert len(view["sets"]) == 1 and len(view["sets"][0]["verdicts"][0]) == 12

    if not CHROMIUM.exists():
        return
    outcome = _invoke("view", str(run))
    assert outcome.exit_code == 0 and outcome.output.endswith(": 2 items, 4 judges\n"), outcome.output
    page = run / "view" / "index.html"
    browser = DevTools(tmp_path / "profile")
    try:
        session = browser.open(page.as_uri())
        assert browser.problems(session) == []
        assert "no results.json yet" in browser.evaluate("document.getElementById('run-line').textContent", session)
        assert browser.evaluate(_texts(".tile-value"), session) == ["1 W · 0 L · 0 T · 1 U", "0 W · 1 L · 1 T · 0 U"]
        judge_column = _texts("article[data-index='0'] .criterion[data-criterion='quality'] td.judge")
        assert browser.evaluate(judge_column, session) == [label for label in labels for _ in range(2)]
        browser.evaluate(_choose("judge-select", "3"), session)  # one judge: only its verdicts, no judge column
        assert browser.evaluate(judge_column, session) == []
        assert browser.evaluate(_texts("article[data-index='0'] .badges .badge"), session) == [
            "personalization: loss", "quality: loss"]
        assert browser.problems(session) == []
    finally:
        browser.close()


# -- 10,000 items --------------------------------------------------------------------------

WORDS = ("answer budget recipe travel plan quick simple detailed steps careful list tips advice short long clear "
         "friendly expert beginner phone kitchen money health garden code weekend morning").split()


def write_synthetic_run(folder: Path, items: int, seed: int = 0) -> None:
    """A run directory shaped like the runner's, written directly: `items` items, both criteria, both orders."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)

    def words(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n))

    criteria = ("personalization", "quality")
    generations, judgments = [], []
    for i in range(items):
        item_id = f"syn-{i:05d}"
        prompt, persona = words(18).capitalize() + "?", f"The user is {words(8)} and prefers {words(10)}."
        for role, strategy, length in (("test", "pt", 110), ("baseline", "baseline", 80)):
            rendered = f"Prompt: {prompt}\nPersona: {persona}\nResponse:" if role == "test" else f"Prompt: {prompt}\nResponse:"
            generations.append({
                "item_id": item_id, "role": role, "model": "hf:synthetic", "strategy": strategy, "persona": persona,
                "persona_source": "retrieved", "persona_provenance": {"item_id": f"train-{rng.randrange(50000)}",
                                                                       "score": round(rng.random(), 4), "rank": 1},
                "prompt": prompt, "input": rendered, "response": words(length), "finish_reason": "stop",
                "output_tokens": length, "cached": False,
            })
        for criterion in criteria:
            for order in ("baseline_first", "test_first"):
                winner = rng.choice(("A", "B", "A", "B", None))
                judgments.append({
                    "item_id": item_id, "criterion": criterion, "order": order, "judge": "prometheus", "judge_key": "k",
                    "winner": winner, "raw": f"{words(55)}. [RESULT] {winner or 'C'}",
                    "prob_a": round(rng.random(), 3), "unscored_reason": None if winner else "no verdict",
                    "attempts": 1, "cached": False,
                })
    config = {"run_key": "synthetic", "task": {"name": "synthetic", "resolved": {"judge": {"criteria": {c: {} for c in criteria}}}},
              "split": "rejected", "model": "hf:synthetic", "baseline": "hf:synthetic",
              "strategies": {"test": "pt", "baseline": "baseline"}, "persona_source": {"name": "retrieved"},
              "judges": ["prometheus"], "judge_model": "hf:judge"}
    block = {"test_wins": 1, "baseline_wins": 1, "ties": 1, "unscored": 1, "win_rate": 0.5, "win_rate_ci95": [0.49, 0.51]}
    metrics = {"dpq": 0.0, "dpq_ci95": [-1.2, 1.3], "items": items, "criteria": {c: block for c in criteria},
               "judge_health": {"tie_rate": 0.4, "position_a_win_share": 0.5}, "headline": "weighted_dpq",
               "weighted": {"criteria": {c: {"win_rate": 0.52, "win_rate_ci95": [0.5, 0.54], "items": items} for c in criteria},
                            "dpq": 4.0, "dpq_ci95": [0.1, 8.2], "method": "synthetic weights"}}
    results = {**{k: config[k] for k in ("run_key", "task", "split", "model", "baseline", "strategies", "persona_source",
                                          "judges", "judge_model")}, "metrics": metrics}
    for name, records in (("generations.jsonl", generations), ("judgments.jsonl", judgments)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "results.json").write_text(json.dumps(results))


@needs_chromium
def test_ten_thousand_items_load_and_filter(tmp_path):
    # What it works out and shows is pinned here; how fast is bench/view.py's (against a bare page
    # of the same bytes, measured in the same run), since wall time on a shared box is the queue's.
    run = tmp_path / "big"
    write_synthetic_run(run, 10_000)
    start = time.perf_counter()
    outcome = _invoke("view", str(run))
    built = time.perf_counter() - start
    assert outcome.exit_code == 0, outcome.output
    page = run / "view" / "index.html"
    size_mb = page.stat().st_size / 1e6
    browser = DevTools(tmp_path / "profile")
    try:
        session = browser.open(page.as_uri())
        assert browser.problems(session) == [] and browser.requests(session) == [page.as_uri()]
        timings = browser.evaluate("window.runView.timings", session)
        assert browser.evaluate("window.runView.items", session) == 10_000
        assert browser.evaluate("document.querySelectorAll('article.item').length", session) == 20, "one page of items in the DOM"
        # The weighted dPQ is the headline of this run, shown beside the paper's.
        assert browser.evaluate("document.getElementById('weighted-tile').textContent", session).startswith(
            "weighted dPQ · headline+4.0[+0.1, +8.2]")

        browser.evaluate(_choose("outcome-select", "u"), session)
        outcome_ms = browser.evaluate("window.runView.timings.filter", session)
        unscored = int(browser.evaluate("document.documentElement.dataset.matches", session))
        browser.evaluate(_choose("criterion-select", "1"), session)
        criterion_ms = browser.evaluate("window.runView.timings.filter", session)
        quality = int(browser.evaluate("document.documentElement.dataset.matches", session))
        assert 0 < quality < unscored < 10_000
        browser.evaluate(_choose("criterion-select", ""), session)
        browser.evaluate(_choose("outcome-select", ""), session)
        browser.evaluate(_type("SYN-0123 kitchen"), session)  # the first search also indexes the text
        time.sleep(0.4)  # the search waits for a pause in typing on a big run
        search_ms = browser.evaluate("window.runView.timings.filters.at(-1)", session)
        assert search_ms["what"] == "search" and 0 < search_ms["matches"] <= 10
        browser.evaluate("(() => { const s = document.getElementById('search'); s.value = '';"
                         " s.form.dispatchEvent(new Event('submit', {cancelable: true})); })()", session)  # Enter: at once
        _click(browser, session, "#next")
        assert browser.evaluate("document.getElementById('status').textContent", session).startswith("items 21\u201340 of ")
        assert browser.problems(session) == []
    finally:
        browser.close()
    print(f"\n10k items: page {size_mb:.1f} MB built in {built:.2f} s; in Chromium: JSON.parse {timings['parse']:.0f} ms, "
          f"loaded (navigation start to first page laid out) {timings['load']:.0f} ms, script {timings['script']:.0f} ms; "
          f"filter outcome {outcome_ms:.1f} ms, outcome+criterion {criterion_ms:.1f} ms, first search {search_ms['ms']:.1f} ms")
    assert timings["load"] > 0 and outcome_ms > 0 and criterion_ms > 0 and search_ms["ms"] > 0, timings
