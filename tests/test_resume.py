"""`persona-eval run` after an interruption does only the missing work, and ends where an uninterrupted run ends."""

from __future__ import annotations

import json

import judging_support as js
import pytest

from persona_eval.pipeline.run import Run, RunOptions

ITEMS = 3
JUDGMENTS = ITEMS * 2 * 2  # criteria x orders


def _options(tmp_path, name: str, **changes) -> RunOptions:
    options = dict(model="scripted:writer", judges=("gpt-4o",), judge_model="scripted:longer", limit=ITEMS,
                   output_dir=str(tmp_path / name), cache_path=str(tmp_path / f"{name}.sqlite"), bootstrap=300)
    options.update(changes)
    return RunOptions(**options)


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _keys(records):
    return [(r["item_id"], r["criterion"], r["order"]) for r in records]


def test_truncated_judgments_with_a_torn_line(scripted, tmp_path):
    reference = Run(_options(tmp_path, "reference", use_cache=False), progress=False).execute()
    options = _options(tmp_path, "run", use_cache=False)  # no cache: the JSON Lines records alone resume
    Run(options, progress=False).execute()
    path = tmp_path / "run" / "judgments.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) == JUDGMENTS
    kept = lines[: JUDGMENTS // 2]
    path.write_text("".join(kept) + lines[JUDGMENTS // 2][:25])  # half, then a torn partial line
    missing = set(_keys(_records(tmp_path / "reference" / "judgments.jsonl"))) - set(_keys([json.loads(x) for x in kept]))
    assert len(missing) == JUDGMENTS // 2
    scripted.calls.clear()

    resumed = Run(options, progress=False).execute()

    assert [c for c in scripted.calls if c[0] == "writer"] == []  # generations were complete
    assert len(scripted.judge_calls()) == len(missing)  # only the missing judgments
    records = _records(path)  # the torn line is gone and every line parses
    assert len(records) == JUDGMENTS and len(set(_keys(records))) == JUDGMENTS  # nothing counted twice
    assert set(_keys(records[JUDGMENTS // 2 :])) == missing
    assert resumed["metrics"] == reference["metrics"]
    assert resumed["per_judge"] == reference["per_judge"]


def test_killed_while_judging_resumes_from_cache_and_records(scripted, tmp_path):
    reference = Run(_options(tmp_path, "reference"), progress=False).execute()
    scripted.calls.clear()
    options = _options(tmp_path, "run")
    scripted.kill_after = 6  # dies inside the second batch of four judge requests
    with pytest.raises(js.Killed):
        Run(options, progress=False).execute()
    written = _records(tmp_path / "run" / "judgments.jsonl")
    assert len(written) == 4  # the finished batch; the one in flight is lost
    assert not (tmp_path / "run" / "results.json").exists()
    scripted.kill_after = None
    scripted.calls.clear()

    resumed = Run(options, progress=False).execute()

    assert [c for c in scripted.calls if c[0] == "writer"] == []  # generation is not repeated
    assert len(scripted.judge_calls()) == JUDGMENTS - 4
    records = _records(tmp_path / "run" / "judgments.jsonl")
    assert len(records) == JUDGMENTS and len(set(_keys(records))) == JUDGMENTS
    assert resumed["metrics"] == reference["metrics"]

    # and a rerun of a finished run does nothing at all
    scripted.calls.clear()
    again = Run(options, progress=False).execute()
    assert scripted.calls == [] and again["metrics"] == reference["metrics"]
    assert len(_records(tmp_path / "run" / "judgments.jsonl")) == JUDGMENTS


def test_concurrent_judge_calls_give_the_same_run(scripted, tmp_path):
    """A backend that allows several calls at once gets them, and nothing else changes."""
    reference = Run(_options(tmp_path, "reference", limit=6), progress=False).execute()
    assert scripted.peak_active == 1
    scripted.reset()
    scripted.max_concurrent_calls = 3
    scripted.delay_s = 0.05
    run = Run(_options(tmp_path, "run", limit=6), progress=False).execute()
    assert scripted.peak_active >= 2  # judge batches overlapped
    assert len(scripted.judge_calls()) == 6 * 4  # each judgment asked once
    records = _records(tmp_path / "run" / "judgments.jsonl")
    assert _keys(records) == _keys(_records(tmp_path / "reference" / "judgments.jsonl"))  # stored in batch order
    assert run["metrics"] == reference["metrics"]
