"""Leaderboards: schema, comparability, grouping, sorting, escaping, publishing, CLI.

The HTML page in a real browser is tested in test_leaderboard_html.py.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import html as html_lib
import inspect
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner
from leaderboard_support import edit_results, make_run

from persona_eval.cli import cli
from persona_eval.contracts import plugin_manager
from persona_eval.errors import RunError, UsageError
from persona_eval.leaderboards import load_leaderboard, load_schema, validate, validation_errors
from persona_eval.leaderboards.build import build_leaderboard, sort_rows, write_leaderboard
from persona_eval.leaderboards.publish import publish_to_hub
from persona_eval.leaderboards.render import render_html, safe_href, show_leaderboard

REPO = Path(__file__).resolve().parents[1]
HOSTILE = "<script>alert('x')</script>"


def invoke(*args):
    if "leaderboard" not in cli.commands:
        plugin_manager.call_each("register_commands", cli=cli)
    separate = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner).parameters else {}
    result = CliRunner(**separate).invoke(cli, [str(a) for a in args])
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def runs(tmp_path):
    """Three models on both splits, comparable: the usual input of a build."""
    root = tmp_path / "runs"
    specs = [("hf:alpha", 20.0, 5.0), ("hf:beta", 35.0, -4.0), ("hf:gamma", None, 12.0)]
    for model, chosen, rejected in specs:
        slug = model.split(":")[1]
        make_run(root, f"{slug}-chosen", split="chosen", model=model, dpq=chosen)
        make_run(root, f"{slug}-rejected", split="rejected", model=model, dpq=rejected)
    return root


@pytest.fixture
def doc(runs, tmp_path):
    return build_leaderboard([runs], base=tmp_path)


# ---- schema ------------------------------------------------------------------------------


def test_schema_is_a_valid_draft_2020_12_schema():
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(load_schema())


def test_built_document_is_valid_and_complete(doc, runs, tmp_path):
    assert validation_errors(doc) == []
    assert doc["schema"] == "persona-eval/leaderboard@1" and doc["schema_version"] == 1 and doc["mixed"] is False
    [group] = doc["groups"]
    assert group["task"] == {"name": "demo", "version": 1, "hash": "aac5607cc31a479d", "data_hash": "fd81ca1371e0596d"}
    assert group["judges"]["names"] == ["prometheus"] and group["judges"]["identity"]["prometheus"]["template"] == "bdc5f629ffd7eaf4"
    assert group["baseline"]["model"] == "hf:embedded" and group["baseline"]["strategy"] == "baseline"
    assert group["persona_source"]["name"] == "gold" and group["persona_source"]["retriever"] is None
    beta = next(r for r in group["rows"] if r["model"] == "hf:beta")
    assert list(beta["splits"]) == ["rejected", "chosen"]
    assert beta["gap"] == pytest.approx(-4.0 - 35.0)
    rejected = beta["splits"]["rejected"]
    assert rejected["dpq"] == -4.0 and rejected["dpq_ci95"] == [-16.0, 5.0] and rejected["items"] == 16
    # dPQ -4 with P = Q: P = 0.48 of the fixture's 10,000 decided pairs
    assert rejected["personalization"]["test_wins"] == 4800 and "tie_rate" not in rejected["personalization"]
    # Links are relative to the leaderboard's folder and point at the real file.
    assert (tmp_path / rejected["results_file"]).resolve() == (runs / "beta-rejected" / "results.json").resolve()
    assert {e["split"] for e in group["examples"]} == {"rejected", "chosen"}
    assert group["examples"][0]["persona"] == "The user is a home cook."


def test_demo_leaderboard_in_the_repo_is_valid():
    demo = REPO / "leaderboards" / "demo.json"
    doc = load_leaderboard(demo)
    [group] = doc["groups"]
    assert group["task"]["name"] == "demo"
    assert all({"chosen", "rejected"} <= set(row["splits"]) for row in group["rows"])


def _set(path: str, value):
    def edit(d):
        obj = d
        parts = path.split(".")
        for part in parts[:-1]:
            obj = obj[int(part)] if part.isdigit() else obj[part]
        last = parts[-1]
        if value is _DELETE:
            del obj[last]
        else:
            obj[int(last) if last.isdigit() else last] = value
    return edit


_DELETE = object()
INVALID = [
    ("wrong schema id", _set("schema", "persona-eval/leaderboard@2"), "$.schema"),
    ("future schema version", _set("schema_version", 2), "$.schema_version"),
    ("no generation time", _set("generated", _DELETE), "'generated' is a required property"),
    ("bad generation time", _set("generated", "yesterday"), "$.generated"),
    ("unknown top-level field", _set("extra", 1), "Additional properties"),
    ("no groups", _set("groups", []), "$.groups"),
    ("dPQ above 100", _set("groups.0.rows.0.splits.rejected.dpq", 140.0), "$.groups[0].rows[0].splits.rejected.dpq"),
    ("win rate above 1", _set("groups.0.rows.0.splits.chosen.personalization.win_rate", 1.5), "personalization.win_rate"),
    ("negative count", _set("groups.0.rows.0.splits.chosen.quality.ties", -1), "quality.ties"),
    ("interval of three numbers", _set("groups.0.rows.0.splits.rejected.dpq_ci95", [1, 2, 3]), "dpq_ci95"),
    ("interval as a string", _set("groups.0.rows.0.splits.rejected.dpq_ci95", "[1, 2]"), "dpq_ci95"),
    ("reversed interval", _set("groups.0.rows.0.splits.rejected.dpq_ci95", [9.0, -9.0]), "low 9.0 is above high -9.0"),
    ("task hash not hex", _set("groups.0.task.hash", "not-a-hash!"), "$.groups[0].task.hash"),
    ("row without model", _set("groups.0.rows.0.model", _DELETE), "'model' is a required property"),
    ("empty model name", _set("groups.0.rows.0.model", ""), "$.groups[0].rows[0].model"),
    ("row without splits", _set("groups.0.rows.0.splits", {}), "splits"),
    ("split without results link", _set("groups.0.rows.0.splits.rejected.results_file", _DELETE), "results_file"),
    ("gap inconsistent with the splits", _set("groups.0.rows.0.gap", 99.0), "is not rejected dPQ - chosen dPQ"),
    ("judge names not a list", _set("groups.0.judges.names", "prometheus"), "$.groups[0].judges.names"),
    ("persona source without retriever field", _set("groups.0.persona_source.retriever", _DELETE), "'retriever' is a required"),
    ("not an object", lambda d: d.clear(), "is a required property"),
]


@pytest.mark.parametrize("edit, expected", [(e, x) for _, e, x in INVALID], ids=[name for name, _, _ in INVALID])
def test_invalid_documents_are_rejected(doc, edit, expected):
    bad = copy.deepcopy(doc)
    edit(bad)
    errors = validation_errors(bad)
    assert errors, "an invalid document passed validation"
    assert any(expected in e for e in errors), errors
    with pytest.raises(UsageError, match="not a valid leaderboard"):
        validate(bad, where="x.json")


def test_duplicate_rows_are_invalid(doc):
    bad = copy.deepcopy(doc)
    bad["groups"][0]["rows"].append(copy.deepcopy(bad["groups"][0]["rows"][0]))
    assert any("duplicate row" in e for e in validation_errors(bad))


def test_loading_an_invalid_file_names_file_and_path(doc, tmp_path):
    path = tmp_path / "lb.json"
    bad = copy.deepcopy(doc)
    bad["groups"][0]["rows"][1]["splits"]["chosen"]["items"] = "many"
    path.write_text(json.dumps(bad))
    with pytest.raises(UsageError) as info:
        load_leaderboard(path)
    assert str(path) in str(info.value) and "$.groups[0].rows[1].splits.chosen.items" in str(info.value)
    path.write_text("{\n  \"schema\": oops\n}")
    with pytest.raises(UsageError, match=re.escape(f"{path}:2")):
        load_leaderboard(path)


# ---- comparability -----------------------------------------------------------------------


def _retriever(d):
    d["persona_source"]["identity"]["retriever"] = {"name": "bm25", "k": 5}


MISMATCHES = [
    ("task.hash", lambda d: d["task"].update(hash="0123456789abcdef")),
    ("task.data_hash", lambda d: d["task"].update(data_hash="0123456789abcdef")),
    ("judges", lambda d: d.update(judges=["gpt-4o"])),
    ("identities.judges.prometheus.template", lambda d: d["identities"]["judges"]["prometheus"].update(template="ffffffffffffffff")),
    ("identities.judges.prometheus.model.revision", lambda d: d["identities"]["judges"]["prometheus"]["model"].update(revision="sha256:0")),
    ("baseline", lambda d: d.update(baseline="hf:other")),
    ("identities.baseline.adapter", lambda d: d["identities"]["baseline"].update(adapter="ckpt/dpo")),
    ("strategies.baseline", lambda d: d["strategies"].update(baseline="inline")),
    ("persona_source.name", lambda d: d["persona_source"].update(name="retrieved")),
    ("persona_source.identity.retriever", _retriever),
]


@pytest.mark.parametrize("field, edit", MISMATCHES, ids=[m[0] for m in MISMATCHES])
def test_mixing_is_refused_naming_file_and_field(runs, tmp_path, field, edit):
    odd = make_run(tmp_path / "more", "odd-rejected", split="rejected", model="hf:delta", dpq=3.0)
    edit_results(odd, edit)
    with pytest.raises(UsageError) as info:
        build_leaderboard([runs, odd])
    message = str(info.value)
    assert message.startswith(str(odd / "results.json") + ":")
    assert f"field {field!r}" in message and "--allow-mixed" in message
    # Through the CLI: one line, exit 2, and no file written.
    out = tmp_path / "lb.json"
    result = invoke("leaderboard", "build", runs, odd, "-o", out)
    assert result.returncode == 2, result.stdout + result.stderr
    assert field in result.stderr and str(odd / "results.json") in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_allow_mixed_groups_incomparable_results(runs, tmp_path):
    odd = make_run(tmp_path / "more", "odd-rejected", split="rejected", model="hf:delta", dpq=3.0)
    other_judge = make_run(tmp_path / "more", "odd-chosen", split="chosen", model="hf:delta", dpq=1.0)
    edit_results(odd, MISMATCHES[0][1])
    edit_results(other_judge, MISMATCHES[3][1])
    out = tmp_path / "lb.json"
    result = invoke("leaderboard", "build", runs, odd, other_judge, "-o", out, "--allow-mixed")
    assert result.returncode == 0, result.stderr
    doc = load_leaderboard(out)
    assert doc["mixed"] is True and len(doc["groups"]) == 3
    sizes = sorted(len(g["rows"]) for g in doc["groups"])
    assert sizes == [1, 1, 3]
    keys = {g["key"] for g in doc["groups"]}
    assert len(keys) == 3
    hashes = {g["task"]["hash"] for g in doc["groups"]}
    assert hashes == {"aac5607cc31a479d", "0123456789abcdef"}
    page = render_html(doc)
    assert page.count('<table class="lb"') == 3 and "Mixed leaderboard" in page


def test_retriever_is_recorded_and_shown(tmp_path):
    run = make_run(tmp_path / "runs", "r", split="rejected")
    edit_results(run, lambda d: d["persona_source"].update(name="retrieved", identity={
        "source": "retrieved", "k": 5, "retriever": {"name": "bm25<b>", "k1": 1.5}}))
    doc = build_leaderboard([tmp_path / "runs"])
    assert doc["groups"][0]["persona_source"]["retriever"] == {"name": "bm25<b>", "k1": 1.5}
    assert "retriever <code>bm25&lt;b&gt; (" in render_html(doc)


def test_same_model_split_twice_is_refused(runs, tmp_path):
    again = make_run(tmp_path / "more", "alpha-again", split="rejected", model="hf:alpha", dpq=1.0)
    with pytest.raises(UsageError, match="a second result for model 'hf:alpha', strategy 'pt', split 'rejected'") as info:
        build_leaderboard([runs, again])
    assert str(again / "results.json") in str(info.value) and "alpha-rejected" in str(info.value)


def test_one_model_spec_with_two_identities_is_refused(runs, tmp_path):
    other = make_run(tmp_path / "more", "alpha-other", split="rejected", model="hf:alpha", strategy="inline", dpq=1.0)
    edit_results(other, lambda d: d["identities"]["test"].update(adapter="ckpt"))
    build_leaderboard([runs, other])  # another strategy is another row: fine
    (runs / "alpha-rejected" / "results.json").unlink()
    (runs / "alpha-rejected" / "generations.jsonl").unlink()
    (runs / "alpha-rejected").rmdir()
    edit_results(other, lambda d: d["strategies"].update(test="pt"))
    with pytest.raises(UsageError, match=r"another identity .* field 'identities\.test\.adapter'"):
        build_leaderboard([runs, other])


@pytest.mark.parametrize("content, expected", [
    ("not json at all", "not JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({"schema": "something-else@1"}), "not a persona-eval results file"),
])
def test_bad_results_files_are_usage_errors(tmp_path, content, expected):
    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=expected) as info:
        build_leaderboard([path])
    assert str(path) in str(info.value)


def test_missing_fields_are_named(tmp_path):
    run = make_run(tmp_path, "r", split="rejected")
    edit_results(run, lambda d: d["metrics"]["criteria"]["quality"].pop("win_rate_ci95"))
    with pytest.raises(UsageError, match=re.escape("lacks the field 'metrics.criteria.quality.win_rate_ci95'")):
        build_leaderboard([run])
    edit_results(run, lambda d: d["identities"].pop("judges"))
    with pytest.raises(UsageError, match=re.escape("lacks the field 'identities.judges'")):
        build_leaderboard([run])


def test_missing_inputs_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="no such results file"):
        build_leaderboard([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no results.json here"):
        build_leaderboard([tmp_path / "empty"])


def test_writing_over_a_directory_is_refused_and_nothing_half_written(doc, tmp_path):
    with pytest.raises(UsageError, match="is a directory"):
        write_leaderboard(doc, tmp_path)
    bad = copy.deepcopy(doc)
    bad["groups"][0]["rows"][0]["splits"]["rejected"]["dpq"] = 500
    with pytest.raises(UsageError):
        write_leaderboard(bad, tmp_path / "lb.json")
    assert not (tmp_path / "lb.json").exists()
    assert not list(tmp_path.glob(".lb.json.*"))


# ---- sorting -----------------------------------------------------------------------------


def test_rows_sorted_by_rejected_dpq_undefined_last(doc):
    models = [row["model"] for row in doc["groups"][0]["rows"]]
    assert models == ["hf:gamma", "hf:alpha", "hf:beta"]  # rejected +12, +5, -4
    rows = copy.deepcopy(doc["groups"][0]["rows"])
    rows[0]["splits"]["rejected"]["dpq"] = None  # gamma loses its rejected score
    assert [r["model"] for r in sort_rows(rows)] == ["hf:alpha", "hf:beta", "hf:gamma"]
    del rows[1]["splits"]["rejected"]  # alpha has no rejected run: after beta, ahead of gamma on chosen dPQ
    assert [r["model"] for r in sort_rows(rows)] == ["hf:beta", "hf:alpha", "hf:gamma"]


def test_show_prints_rows_in_rejected_dpq_order(runs, tmp_path):
    out = tmp_path / "lb.json"
    assert invoke("leaderboard", "build", runs, "-o", out).returncode == 0
    # Shuffle the file's rows: show must sort, not trust the order on disk.
    doc = json.loads(out.read_text())
    doc["groups"][0]["rows"].reverse()
    out.write_text(json.dumps(doc))
    result = invoke("leaderboard", "show", out)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    positions = [text.index(name) for name in ("gamma", "alpha", "beta")]
    assert positions == sorted(positions), text
    assert "+12.0" in text and "-39.0" in text  # beta's gap: -4 - 35


def test_show_does_not_interpret_markup_in_names(tmp_path):
    from rich.console import Console

    make_run(tmp_path / "runs", "m", split="rejected", model="hf:[bold red]boom[/]")
    doc = build_leaderboard([tmp_path / "runs"])
    console = Console(record=True, width=200)
    show_leaderboard(doc, console)
    assert "hf:[bold red]boom[/]" in console.export_text()


# ---- escaping and links ------------------------------------------------------------------


class _Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.script_text.append(data)


def test_hostile_strings_are_escaped_everywhere(tmp_path):
    root = tmp_path / "runs"
    hostile_persona = f'The user is "evil" {HOSTILE} <img src=x onerror=alert(1)>'
    for split in ("chosen", "rejected"):
        make_run(root, f"h-{split}", split=split, model=f"hf:{HOSTILE}", strategy='pt"><b onmouseover=alert(2)>',
                 task_name=f"demo{HOSTILE}", personas=(hostile_persona,), dpq=5.0 if split == "chosen" else 1.0)
    doc = build_leaderboard([root], title=f"Board {HOSTILE}")
    assert doc["groups"][0]["examples"][0]["persona"] == hostile_persona
    html = render_html(doc)
    parser = _Elements()
    parser.feed(html)
    assert parser.tags.count("script") == 1, "a hostile string became a script element"
    assert "img" not in parser.tags and "b" not in parser.tags
    assert "alert('x')" not in "".join(parser.script_text)
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert 'data-strategy="pt&#34;&gt;&lt;b onmouseover=alert(2)&gt;"' in html


def test_csp_allows_only_the_pages_own_inline_blocks(doc):
    html = render_html(doc)
    csp = html_lib.unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1))
    script = re.search(r"<script>(.*?)</script>", html, re.S).group(1)
    style = re.search(r"<style>(.*?)</style>", html, re.S).group(1)

    def digest(text):
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    assert f"script-src {digest(script)};" in csp and f"style-src {digest(style)};" in csp
    assert csp.startswith("default-src 'none';") and "unsafe-inline" not in csp
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "the page references something remote"


@pytest.mark.parametrize("link, expected", [
    ("../runs/a/results.json", "../runs/a/results.json"),
    ("runs/with space/results.json", "runs/with%20space/results.json"),
    ("https://example.org/r.json", "https://example.org/r.json"),
    ("javascript:alert(1)", None),
    ("JaVaScRiPt:alert(1)", None),
    ("data:text/html,<script>alert(1)</script>", None),
    ("//evil.example/x", None),
    ("/abs/path/results.json", None),
    ("runs\\x\\results.json", None),
])
def test_safe_href(link, expected):
    assert safe_href(link, None, None) == expected


def test_links_are_rebased_onto_the_page_folder(runs, tmp_path):
    out = tmp_path / "boards" / "lb.json"
    out.parent.mkdir()
    assert invoke("leaderboard", "build", runs, "-o", out).returncode == 0
    page_dir = tmp_path / "site" / "deep"
    assert invoke("leaderboard", "render", out, "-o", page_dir).returncode == 0
    html = (page_dir / "index.html").read_text()
    hrefs = re.findall(r'<a href="([^"]+)"', html)
    assert len(hrefs) == 6
    for href in hrefs:
        assert (page_dir / href).resolve().is_file(), href


# ---- publishing --------------------------------------------------------------------------


@pytest.fixture
def board(runs, tmp_path):
    out = tmp_path / "lb.json"
    assert invoke("leaderboard", "build", runs, "-o", out).returncode == 0
    return out


def test_publish_to_a_folder(board, tmp_path):
    result = invoke("leaderboard", "publish", board, "--to", tmp_path / "site")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "site" / "lb.json").read_text()) == json.loads(board.read_text())
    assert "<svg" in (tmp_path / "site" / "index.html").read_text()


def test_publish_to_the_hub_up_to_the_upload_call(board, monkeypatch):
    from huggingface_hub import HfApi

    calls = []

    def fake_upload(self, **kwargs):
        local = Path(kwargs["path_or_fileobj"])
        calls.append({**kwargs, "content": local.read_text(), "api_token": self.token})
        return type("CommitInfo", (), {"commit_url": f"https://hf.invalid/commit/{len(calls)}"})()

    def no_network(*args, **kwargs):
        raise AssertionError("tried to reach the network")

    monkeypatch.setattr(HfApi, "upload_file", fake_upload)
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append({"create": repo_id, **kw}))
    monkeypatch.setattr("huggingface_hub.utils._http.get_session", no_network, raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    result = invoke("leaderboard", "publish", board, "--repo", "someone/persona-leaderboard", "--create",
                    "--path-in-repo", "boards/demo.json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert calls[0] == {"create": "someone/persona-leaderboard", "repo_type": "dataset", "exist_ok": True, "token": "hf_test_token"}
    json_call, page_call = calls[1], calls[2]
    assert json_call["repo_id"] == "someone/persona-leaderboard" and json_call["repo_type"] == "dataset"
    assert json_call["path_in_repo"] == "boards/demo.json" and json_call["token"] == "hf_test_token"
    assert json.loads(json_call["content"]) == json.loads(board.read_text())
    assert page_call["path_in_repo"] == "boards/index.html" and "<svg" in page_call["content"]
    assert "<a href=" not in page_call["content"]  # the repo has no run directories to link to
    assert "https://hf.invalid/commit/2" in result.stdout


def test_publish_needs_a_token_and_a_valid_file(board, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    monkeypatch.setattr(HfApi, "upload_file", lambda self, **kw: pytest.fail("uploaded"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UsageError, match="needs a token"):
        publish_to_hub(board, "someone/board")
    monkeypatch.setenv("HF_TOKEN", "x")
    bad = tmp_path / "bad.json"
    doc = json.loads(board.read_text())
    doc["groups"][0]["rows"][0]["gap"] = 77.0
    bad.write_text(json.dumps(doc))
    with pytest.raises(UsageError, match="not a valid leaderboard"):
        publish_to_hub(bad, "someone/board")
    with pytest.raises(UsageError, match="not a Hub repo id"):
        publish_to_hub(board, "../etc/passwd")
    assert invoke("leaderboard", "publish", board).returncode == 2
    assert invoke("leaderboard", "publish", board, "--repo", "a/b", "--to", tmp_path / "x").returncode == 2


def test_upload_failures_are_run_errors(board, monkeypatch):
    from huggingface_hub import HfApi

    def fail(self, **kwargs):
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(HfApi, "upload_file", fail)
    monkeypatch.setenv("HF_TOKEN", "x")
    with pytest.raises(RunError, match="hub unreachable"):
        publish_to_hub(board, "someone/board")


def test_leaderboard_commands_do_not_import_torch(board):
    code = (
        "import sys\n"
        "from persona_eval.cli import main\n"
        f"try:\n    main(['leaderboard', 'show', {str(board)!r}])\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'huggingface_hub') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "hf:gamma" in result.stdout


# ---- real runs ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory, embedded_model_dir):
    """Two tiny real runs of the demo task on the embedded model: chosen and rejected.

    The task is a copy of the demo with shorter answers (16 new tokens, not 64), so the
    two runs fit the time of a slow test on two CPU cores.
    """
    import shutil

    from persona_eval.contracts.factories import close_generators
    from persona_eval.pipeline.run import Run, RunOptions

    root = tmp_path_factory.mktemp("demo-runs")
    task_dir = root / "task"
    shutil.copytree(REPO / "tasks" / "demo", task_dir)
    task_yaml = task_dir / "demo.yaml"
    text = task_yaml.read_text()
    assert "max_new_tokens: 64" in text
    task_yaml.write_text(text.replace("max_new_tokens: 64", "max_new_tokens: 16", 1))
    dirs = []
    try:
        for split in ("chosen", "rejected"):
            options = RunOptions(task=str(task_yaml), split=split, limit=1, output_dir=str(root / f"demo-{split}"), bootstrap=200)
            Run(options, progress=False).execute()
            dirs.append(root / f"demo-{split}")
    finally:
        close_generators()
    return dirs


@pytest.mark.slow
def test_build_from_real_demo_runs(demo_runs, tmp_path):
    out = tmp_path / "board" / "lb.json"
    out.parent.mkdir()
    result = invoke("leaderboard", "build", *demo_runs, "-o", out)
    assert result.returncode == 0, result.stderr
    doc = load_leaderboard(out)
    [group] = doc["groups"]
    [row] = group["rows"]
    assert row["model"] == "hf:embedded" and row["strategy"] == "pt"
    assert set(row["splits"]) == {"chosen", "rejected"}
    real = json.loads((demo_runs[1] / "results.json").read_text())
    assert group["task"]["hash"] == real["task"]["hash"]
    assert group["judges"]["identity"] == real["identities"]["judges"]
    rejected = row["splits"]["rejected"]
    assert rejected["items"] == 1 and rejected["dpq"] == real["metrics"]["dpq"]
    assert (out.parent / rejected["results_file"]).resolve() == (demo_runs[1] / "results.json").resolve()
    personas = {json.loads(line)["persona"] for line in (demo_runs[1] / "generations.jsonl").read_text().splitlines()}
    assert {e["persona"] for e in group["examples"] if e["split"] == "rejected"} <= personas
    assert invoke("leaderboard", "render", out, "-o", tmp_path / "site").returncode == 0
    assert "hf:embedded" in (tmp_path / "site" / "index.html").read_text()
