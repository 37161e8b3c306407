"""Hostile files: every input is a one-line error naming the place, or a documented acceptance.

In the spirit of `test_hostile_input.py`: the real CLI runs in-process through click's
CliRunner; every refused input ends with exactly one ``Error:`` line on stderr naming the
file and the line, item or field, exit 2, no traceback, no results.json or leaderboard
written and no temporary file. Four classes of input:

- ambiguous run folders: two different records for one (item, role) or one judgment key;
- leaderboard inputs: NaN, 1e400, unknown schema versions, contradicting or out-of-range numbers;
- library errors: binary .parquet, over-long CSV fields, symbolic link loops, deep JSON;
- common real files: Excel CSV (BOM, CRLF), quoted multi-line fields, unknown persona ids.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import reliability_support as rs
from click.testing import CliRunner
from leaderboard_support import edit_results, make_run
from openai_server_support import serve

from persona_eval.cli import _add_plugin_commands, cli
from persona_eval.errors import PersonaEvalError, RunError, UsageError

ITEMS = 4


@pytest.fixture(scope="module")
def judge_server():
    with serve(rs.judge_responder(), models=["judge"]) as server:
        yield server


class Env:
    def __init__(self, root: Path, judge_url: str):
        self.root, self.judge_url = root, judge_url
        rs.write_task(root / "task", ITEMS)
        rs.write_outputs(root / "test.json", ITEMS, "test")
        rs.write_outputs(root / "base.json", ITEMS, "baseline")

    @property
    def task(self) -> Path:
        return self.root / "task" / "task.yaml"

    @property
    def out(self) -> Path:
        return self.root / "out"

    def use_data(self, name: str, content: bytes | str) -> Path:
        path = self.root / "task" / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        self.task.write_text(self.task.read_text().replace("test: test.jsonl", f"test: {name}"))
        return path

    def args(self, *extra: str, model: str | None = None) -> list[str]:
        return [
            "run", "--task", str(self.task), "--split", "rejected",
            "--model", model or f"file:{self.root / 'test.json'}", "--baseline", f"file:{self.root / 'base.json'}",
            "--judge", "gpt-4o", "--judge-model", f"openai:judge,base_url={self.judge_url},max_retries=1,backoff=0.01",
            "--limit", "0", "--output-dir", str(self.out), "--bootstrap", "50", "--quiet", *extra,
        ]


@pytest.fixture
def env(tmp_path, judge_server):
    return Env(tmp_path, judge_server.base_url)


def invoke(args):
    _add_plugin_commands()  # `judge`, `leaderboard`, `infer` are plugin commands
    return CliRunner().invoke(cli, [str(a) for a in args])


def ok(args):
    result = invoke(args)
    assert result.exit_code == 0, result.output
    return result


def one_error(result, *places: str, code: int = 2, root: Path | None = None) -> str:
    """Exactly one `Error:` line naming every place, exit `code`, no traceback, no temporary file."""
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), (
        f"a traceback instead of an error line: {result.exception!r}"
    )
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for place in places:
        assert place in lines[0], f"the error does not name {place!r}: {lines[0]}"
    assert "Traceback" not in result.output
    if root is not None:
        assert not list(root.rglob("*.tmp")), "temporary files left"
    return lines[0]


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# ---- 4. ambiguous run folders -----------------------------------------------------------------


def _finished_run(env: Env) -> Path:
    ok(env.args())
    return env.out


def _edit_first(path: Path, role_or_order: str, change) -> tuple[int, dict]:
    """Append a copy of the first record with `change` applied; returns (its line number, the copy)."""
    records = [json.loads(line) for line in lines_of(path)]
    first = next(r for r in records if role_or_order in (r.get("role"), r.get("order")))
    copy = change(dict(first))
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(copy) + "\n")
    return len(records) + 1, copy


def test_conflicting_generation_is_an_error_on_judge_naming_item_and_line(env):
    run = _finished_run(env)
    line, copy = _edit_first(run / "generations.jsonl", "test", lambda r: {**r, "response": "something else"})
    (run / "results.json").unlink()
    result = invoke(["judge", run, "--quiet", "--output-dir", env.root / "rejudged"])
    message = one_error(result, f"generations.jsonl:{line}", repr(copy["item_id"]), "'response'", root=env.root)
    assert "conflicting duplicate" in message
    assert not (env.root / "rejudged" / "results.json").exists()


def test_conflicting_generation_is_an_error_on_resume(env):
    run = _finished_run(env)
    before = (run / "results.json").read_bytes()
    line, copy = _edit_first(run / "generations.jsonl", "baseline", lambda r: {**r, "response": "other"})
    one_error(invoke(env.args()), f"generations.jsonl:{line}", repr(copy["item_id"]), root=env.root)
    assert (run / "results.json").read_bytes() == before  # untouched


def test_conflicting_generation_is_an_error_in_load_run(env):
    import persona_eval

    run = _finished_run(env)
    line, copy = _edit_first(run / "generations.jsonl", "test", lambda r: {**r, "persona": "The user is someone else."})
    with pytest.raises(UsageError, match=rf"generations\.jsonl:{line}: conflicting duplicate .*{copy['item_id']}.*'persona'"):
        persona_eval.load_run(run)


def test_conflicting_judgment_is_an_error_on_resume_and_in_load_run(env):
    import persona_eval

    run = _finished_run(env)
    line, copy = _edit_first(run / "judgments.jsonl", "baseline_first",
                             lambda r: {**r, "winner": "B" if r.get("winner") == "A" else "A", "raw": "changed"})
    (run / "results.json").unlink()
    one_error(invoke(env.args()), f"judgments.jsonl:{line}", repr(copy["item_id"]), root=env.root)
    assert not (run / "results.json").exists()
    with pytest.raises(UsageError, match=rf"judgments\.jsonl:{line}: conflicting duplicate judgment"):
        persona_eval.load_run(run)


def test_identical_duplicates_are_dropped_with_a_count(env, caplog):
    """Accepted: a record written twice (a crash between writing it and noting the progress).

    Rule: records with one key are the same record when they agree in every field except
    ``cached``, ``attempts`` and timing fields (`storage.jsonl.NOT_CONTENT`); the first is kept.
    """
    import persona_eval

    run = _finished_run(env)
    first_results = json.loads((run / "results.json").read_text())
    _edit_first(run / "generations.jsonl", "test", lambda r: {**r, "cached": not r.get("cached")})
    _edit_first(run / "judgments.jsonl", "test_first", lambda r: {**r, "cached": True, "attempts": 2})
    with caplog.at_level(logging.WARNING):
        loaded = persona_eval.load_run(run)
    assert len(loaded.generations) == 2 * ITEMS and len(loaded.judgments) == ITEMS * 4
    assert any("identical duplicate" in r.getMessage() and "1" in r.getMessage() for r in caplog.records)
    (run / "results.json").unlink()
    ok(env.args())
    again = json.loads((run / "results.json").read_text())
    assert again["metrics"]["dpq"] == first_results["metrics"]["dpq"]
    ok(["judge", run, "--quiet", "--output-dir", env.root / "rejudged"])


def test_record_without_its_key_names_the_line(env):
    run = _finished_run(env)
    with (run / "generations.jsonl").open("a") as handle:
        handle.write(json.dumps({"role": "test", "response": "x"}) + "\n")
    (run / "results.json").unlink()
    line = len(lines_of(run / "generations.jsonl"))
    one_error(invoke(["judge", run, "--quiet", "--output-dir", env.root / "rj"]), f"generations.jsonl:{line}", "'item_id'")


# ---- 5. leaderboard inputs --------------------------------------------------------------------


def _lb(tmp_path: Path, edit=None, text_edit=None) -> tuple[Path, Path]:
    runs = tmp_path / "runs"
    make_run(runs, "alpha-chosen", split="chosen", model="hf:alpha", dpq=4.0)
    run = make_run(runs, "alpha-rejected", split="rejected", model="hf:alpha", dpq=-2.0)
    if edit:
        edit_results(run, edit)
    if text_edit:
        path = run / "results.json"
        path.write_text(text_edit(path.read_text()))
    return runs, run / "results.json"


def _build(tmp_path: Path, runs: Path):
    out = tmp_path / "lb.json"
    return invoke(["leaderboard", "build", runs, "-o", out]), out


def _metrics(**changes):
    def edit(d):
        for dotted, value in changes.items():
            target = d
            parts = dotted.split("__")
            for part in parts[:-1]:
                target = target[part]
            target[parts[-1]] = value
    return edit


LEADERBOARD_CASES = {
    "dpq-nan": (None, lambda t: t.replace('"dpq": -2.0', '"dpq": NaN', 1), "metrics.dpq", "finite"),
    "dpq-1e400": (None, lambda t: t.replace('"dpq": -2.0', '"dpq": 1e400', 1), "metrics.dpq", "finite"),
    "dpq-minus-infinity": (None, lambda t: t.replace('"dpq": -2.0', '"dpq": -Infinity', 1), "metrics.dpq", "finite"),
    "nan-deep-inside": (None, lambda t: t.replace('"seconds": 1.0', '"seconds": NaN'), "seconds", "finite"),
    "schema-v2": (_metrics(schema="persona-eval/results@2"), None, "schema", "persona-eval/results@2"),
    "schema-not-text": (_metrics(schema=7), None, "results.json", "schema"),
    "dpq-250": (_metrics(metrics__dpq=250), None, "metrics.dpq: 250 is outside [-100, 100]", ""),
    "dpq-contradicts-win-rates": (_metrics(metrics__dpq=30.0), None, "metrics.dpq", "contradicts"),
    "dpq-null-with-win-rates": (_metrics(metrics__dpq=None), None, "metrics.dpq", "contradicts"),
    "dpq-not-a-number": (_metrics(metrics__dpq="12"), None, "metrics.dpq", "not a number"),
    "win-rate-above-1": (lambda d: d["metrics"]["criteria"]["quality"].update(win_rate=1.5), None,
                         "metrics.criteria.quality.win_rate", "outside [0, 1]"),
    "negative-count": (lambda d: d["metrics"]["criteria"]["quality"].update(ties=-1), None,
                       "metrics.criteria.quality.ties", "non-negative integer"),
    "fractional-count": (lambda d: d["metrics"]["criteria"]["personalization"].update(test_wins=2.5), None,
                         "metrics.criteria.personalization.test_wins", "non-negative integer"),
    "boolean-count": (_metrics(metrics__items=True), None, "metrics.items", "non-negative integer"),
    "reversed-interval": (_metrics(metrics__dpq_ci95=[5.0, -5.0]), None, "metrics.dpq_ci95", "above high"),
    "interval-out-of-range": (_metrics(metrics__dpq_ci95=[-120.0, 5.0]), None, "metrics.dpq_ci95[0]", "outside"),
    "weighted-dpq-nan": (None, None, "metrics.weighted.dpq", "finite"),  # built below
    "weighted-dpq-out-of-range": (lambda d: d["metrics"].update(weighted={"dpq": 180.0, "dpq_ci95": None, "criteria": {}}),
                                  None, "metrics.weighted.dpq", "outside"),
    "weighted-win-rate-negative": (lambda d: d["metrics"].update(weighted={
        "dpq": None, "dpq_ci95": None,
        "criteria": {"personalization": {"win_rate": -0.1, "win_rate_ci95": None, "items": 3, "items_without_prob_a": 0}}}),
        None, "metrics.weighted.criteria.personalization.win_rate", "outside"),
    "weighted-contradicts": (lambda d: d["metrics"].update(weighted={
        "dpq": 50.0, "dpq_ci95": None, "method": "x",
        "criteria": {c: {"win_rate": 0.5, "win_rate_ci95": None, "items": 3, "items_without_prob_a": 0}
                     for c in ("personalization", "quality")}}),
        None, "metrics.weighted.dpq", "contradicts"),
}


@pytest.mark.parametrize("name", list(LEADERBOARD_CASES))
def test_leaderboard_inputs_are_checked(name, tmp_path):
    edit, text_edit, place, message = LEADERBOARD_CASES[name]
    if name == "weighted-dpq-nan":
        text_edit = None
        edit = lambda d: d["metrics"].update(weighted={"dpq": 1.0, "dpq_ci95": None, "criteria": {}})  # noqa: E731
        runs, results = _lb(tmp_path, edit)
        results.write_text(results.read_text().replace('"dpq": 1.0', '"dpq": NaN'))
    else:
        runs, results = _lb(tmp_path, edit, text_edit)
    result, out = _build(tmp_path, runs)
    line = one_error(result, str(results), place, root=tmp_path)
    assert message.lower() in line.lower()
    assert line.startswith(f"Error: {results}: "), line
    assert not out.exists()


def test_dpq_250_names_the_input_file_and_field(tmp_path):
    runs, results = _lb(tmp_path, _metrics(metrics__dpq=250))
    line = one_error(_build(tmp_path, runs)[0])
    assert line == f"Error: {results}: metrics.dpq: 250 is outside [-100, 100]"


def test_legitimate_leaderboard_inputs_are_accepted(tmp_path):
    """Accepted: null dPQ with null win rates, null weighted block, no schema field (read as @1), bounds exactly."""
    runs = tmp_path / "runs"
    make_run(runs, "a-chosen", split="chosen", model="hf:alpha", dpq=None)
    edge = make_run(runs, "a-rejected", split="rejected", model="hf:alpha", dpq=100.0, p=1.0)
    edit_results(edge, lambda d: (d.pop("schema"), d["metrics"].update(weighted=None, dpq_ci95=[88.0, 100.0])))
    result, out = _build(tmp_path, runs)
    assert result.exit_code == 0, result.output
    json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the leaderboard"))


def test_json_out_is_always_valid(tmp_path):
    from persona_eval.storage.files import atomic_write_json

    target = tmp_path / "results.json"
    target.write_text('{"previous": true}\n')
    for bad in (float("nan"), float("inf"), {"metrics": {"dpq": float("-inf")}}):
        with pytest.raises(RunError, match=rf"^{target}: not written: a value is not a finite number"):
            atomic_write_json(target, bad)
    assert json.loads(target.read_text()) == {"previous": True}
    assert not list(tmp_path.glob("*.tmp"))


def test_leaderboard_validation_rejects_nan_in_a_built_document(tmp_path):
    from persona_eval.leaderboards import validation_errors
    from persona_eval.leaderboards.build import build_leaderboard

    runs, _ = _lb(tmp_path)
    doc = build_leaderboard([runs])
    doc["groups"][0]["rows"][0]["splits"]["rejected"]["weighted_dpq"] = float("nan")
    assert any("weighted_dpq: not a finite number" in e for e in validation_errors(doc))


# ---- 6. library errors wrapped ----------------------------------------------------------------


def _loop(folder: Path, name: str) -> Path:
    a, b = folder / name, folder / f"{name}.other"
    os.symlink(b, a)
    os.symlink(a, b)
    return a


def test_binary_parquet_data_file(env):
    pytest.importorskip("pyarrow")
    path = env.use_data("test.parquet", os.urandom(256))
    line = one_error(invoke(env.args()), str(path), root=env.root)
    assert "Parquet" in line
    assert not (env.out / "results.json").exists()


def test_binary_parquet_pairs_file(tmp_path):
    pytest.importorskip("pyarrow")
    from persona_eval.persona_inference.pairs import load_pairs

    path = tmp_path / "pairs.parquet"
    path.write_bytes(b"PAR1" + os.urandom(64))
    with pytest.raises(UsageError, match=rf"^{path}: not a readable Parquet file"):
        load_pairs(str(path))


def test_csv_field_over_the_limit(env, monkeypatch):
    from persona_eval.storage import readers

    monkeypatch.setattr(readers, "CSV_FIELD_LIMIT", 1 << 16)  # the limit itself is 64 MiB
    rows = ["id,prompt,chosen,rejected,chosen_persona,rejected_persona", "a,short,c,r,p,q", f"b,{'x' * (1 << 17)},c,r,p,q"]
    path = env.use_data("test.csv", "\n".join(rows) + "\n")
    line = one_error(invoke(env.args()), f"{path}:3", root=env.root)
    assert "longer than" in line


def test_csv_field_over_the_csv_module_default_is_accepted():
    """Accepted: fields up to 64 MiB (the csv module alone refuses anything over 128 KiB)."""
    import tempfile

    from persona_eval.storage.readers import read_table

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "big.csv"
        path.write_text(f"id,response\na,{'y' * (1 << 18)}\n")
        [(where, row)] = read_table(path)
    assert where.endswith("big.csv:2") and len(row["response"]) == 1 << 18


def test_csv_unclosed_quote_in_outputs(env):
    path = env.root / "outputs.csv"
    path.write_text('id,response\nitem-00000,"never closed\n' + "filler\n" * 3)
    # An unclosed quote makes the rest one field: here short, so the run fails matching items, in one line.
    one_error(invoke(env.args(model=f"file:{path}")), str(path), root=env.root)


def test_symlink_loop_data_file(env):
    loop = _loop(env.root / "task", "test.jsonl.loop")
    env.task.write_text(env.task.read_text().replace("test: test.jsonl", f"test: {loop.name}"))
    one_error(invoke(env.args()), loop.name, "symbolic link loop", root=env.root)


def test_symlink_loop_outputs_file(env):
    loop = _loop(env.root, "outputs.json")
    one_error(invoke(env.args(model=f"file:{loop}")), "outputs.json", "symbolic link loop", root=env.root)


def test_symlink_loop_persona_file(env):
    loop = _loop(env.root, "personas.jsonl")
    one_error(invoke(env.args("--persona-file", str(loop))), str(loop), "symbolic link loop", root=env.root)


def test_symlink_loop_pairs_file(tmp_path):
    from persona_eval.persona_inference.pairs import load_pairs

    loop = _loop(tmp_path, "pairs.jsonl")
    with pytest.raises(UsageError, match="symbolic link loop"):
        load_pairs(str(loop))
    result = invoke(["infer", loop, "-o", tmp_path / "out.jsonl", "--quiet"])
    one_error(result, str(loop), "symbolic link loop")


def test_broken_symlink_says_so(env):
    link = env.root / "gone.json"
    os.symlink(env.root / "nowhere.json", link)
    one_error(invoke(env.args(model=f"file:{link}")), "broken symbolic link")


def test_deeply_nested_json(env):
    deep = "[" * 100_000 + "]" * 100_000
    path = env.use_data("test.json", deep)
    one_error(invoke(env.args()), str(path), "nested too deeply", root=env.root)
    outputs = env.root / "outputs.jsonl"
    outputs.write_text('{"id": "item-00000", "response": ' + deep + "}\n")
    one_error(invoke(env.args(model=f"file:{outputs}")), f"{outputs}:1", "nested too deeply")


def test_deeply_nested_results_json(tmp_path):
    runs, results = _lb(tmp_path)
    results.write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    one_error(_build(tmp_path, runs)[0], str(results), "nested too deeply")


def test_unreadable_data_file(env):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = env.root / "task" / "test.jsonl"
    path.chmod(0)
    one_error(invoke(env.args()), str(path), "cannot read")


def test_csv_row_with_more_cells_than_header(env):
    rows = ["id,prompt,chosen,rejected,chosen_persona,rejected_persona", "a,p,c,r,x,y", "b,p,c,r,x,y,extra"]
    path = env.use_data("test.csv", "\n".join(rows) + "\n")
    one_error(invoke(env.args()), f"{path}:3", "more cells than header columns")


def test_csv_header_with_a_column_twice(env):
    rows = ["id,prompt,prompt,chosen,rejected,chosen_persona,rejected_persona", "a,p,q,c,r,x,y"]
    path = env.use_data("test.csv", "\n".join(rows) + "\n")
    one_error(invoke(env.args()), f"{path}:1", "'prompt' twice")


# ---- 7. common real files ---------------------------------------------------------------------


def _excel_csv(rows: list[list[str]]) -> bytes:
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return b"\xef\xbb\xbf" + buffer.getvalue().encode("utf-8")


def _items_rows(n: int = ITEMS) -> list[list[str]]:
    head = ["id", "prompt", "chosen", "rejected", "chosen_persona", "rejected_persona"]
    return [head] + [[rs.item(i)[k] for k in head] for i in range(n)]


def test_excel_csv_task_data_is_accepted(env):
    """Accepted: a UTF-8 byte-order mark and CRLF line ends (Excel's "CSV UTF-8")."""
    env.use_data("test.csv", _excel_csv(_items_rows()))
    ok(env.args())
    results = json.loads((env.out / "results.json").read_text())
    assert results["metrics"]["items"] == ITEMS


def test_excel_csv_persona_file_is_accepted(env):
    rows = [["id", "persona"]] + [[rs.item(i)["id"], f"The user is person {i}."] for i in range(ITEMS)]
    path = env.root / "personas.csv"
    path.write_bytes(_excel_csv(rows))
    ok(env.args("--persona-file", str(path)))
    gens = rs.records(env.out / "generations.jsonl")
    assert {g["persona"] for g in gens if g["role"] == "test"} == {f"The user is person {i}." for i in range(ITEMS)}


def test_excel_csv_outputs_are_accepted(env):
    rows = [["id", "response"]] + [[rs.item(i)["id"], f"answer {i}"] for i in range(ITEMS)]
    path = env.root / "outputs.csv"
    path.write_bytes(_excel_csv(rows))
    ok(env.args(model=f"file:{path}"))


def test_multiline_csv_field_reports_the_first_line_of_the_record(env):
    head = "id,prompt,chosen,rejected,chosen_persona,rejected_persona"
    # Record 1 spans lines 2-4, record 2 lines 5-6 (and has a cell too many): the error names line 5.
    path = env.use_data("test.csv", f'{head}\na,"one\ntwo\nthree",c,r,x,y\nb,"four\nfive",c,r,x,y,TOO-MANY\n')
    one_error(invoke(env.args()), f"{path}:5", "more cells", root=env.root)


def test_multiline_persona_csv_reports_the_first_line_of_the_record(env):
    path = env.root / "personas.csv"
    path.write_text('id,persona\nitem-00000,"The user is\na poet."\nitem-00001,""\n')
    one_error(invoke(env.args("--persona-file", str(path))), f"{path}:4", "'persona'")


def test_multiline_csv_where_is_the_first_line():
    import tempfile

    from persona_eval.storage.readers import read_table

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.tsv"
        path.write_text('id\ttext\n\na\t"x\ny\nz"\nb\tw\n')
        records = read_table(path)
    assert [w.rsplit(":", 1)[1] for w, _ in records] == ["3", "6"]
    assert records[0][1] == {"id": "a", "text": "x\ny\nz"}


def test_skip_names_unknown_persona_ids(env, caplog):
    lines = [json.dumps({"id": rs.item(i)["id"], "persona": f"The user is person {i}."}) for i in (0, 1, 3)]
    lines.append(json.dumps({"id": "item-0002", "persona": "A typo'd id."}))  # one zero short
    path = env.root / "personas.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        ok(env.args("--persona-file", str(path), "--on-missing", "skip"))
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "'item-0002'" in warned and "match no item" in warned and "1 id(s)" in warned


def test_error_for_missing_personas_also_names_unknown_ids(env):
    lines = [json.dumps({"id": rs.item(i)["id"], "persona": f"The user is person {i}."}) for i in (0, 1, 3)]
    lines.append(json.dumps({"id": "item-2", "persona": "A typo'd id."}))
    path = env.root / "personas.jsonl"
    path.write_text("\n".join(lines) + "\n")
    one_error(invoke(env.args("--persona-file", str(path))), "item-00002", "'item-2'", root=env.root)


def test_the_corpus_is_big_enough():
    tests = [name for name in globals() if name.startswith("test_")]
    assert len(tests) + len(LEADERBOARD_CASES) >= 40
    assert issubclass(UsageError, PersonaEvalError)
