"""The dry-run plan's tokenizer (tokenizers + jinja2, no transformers) counts as transformers does."""

from __future__ import annotations

import pytest

from persona_eval.contracts.records import GenParams, GenRequest
from persona_eval.rendering.chat import render_request
from persona_eval.rendering.light_tokenizer import light_tokenizer


@pytest.fixture(scope="module")
def embedded_folder():
    from persona_eval.plugins.generators.common import model_location

    path, _ = model_location("embedded")
    return path


REQUESTS = [
    GenRequest(id="a", prompt="Prompt: How do I boil an egg?\nPersona: The user is busy.\nResponse:"),
    GenRequest(id="b", prompt="Compare A and B.", system="You are a fair judge assistant.", response_prefix="[RESULT] "),
    GenRequest(id="c", prompt="[INST] system text\nuser text [/INST]", raw=True),
    GenRequest(id="d", prompt="Unicode: café, naïve, 日本語 <|im_start|> tokens", params=GenParams(max_new_tokens=4)),
]


@pytest.mark.parametrize("use_chat_template", [True, False])
def test_light_tokenizer_renders_and_counts_like_transformers(embedded_folder, use_chat_template):
    from transformers import AutoTokenizer

    full = AutoTokenizer.from_pretrained(embedded_folder)
    light = light_tokenizer(embedded_folder)
    assert light is not None and light.chat_template
    for request in REQUESTS:
        if request.raw:
            expected_text, expected_specials = request.prompt, False
            text, specials = request.prompt, False
        else:
            expected_text, expected_specials = render_request(full, request, use_chat_template)
            text, specials = render_request(light, request, use_chat_template)
        assert (text, specials) == (expected_text, expected_specials)
        assert light(text, add_special_tokens=not specials)["input_ids"] == \
            full(expected_text, add_special_tokens=not expected_specials)["input_ids"]


def test_folders_it_cannot_read_fall_back(tmp_path):
    assert light_tokenizer(tmp_path) is None  # no tokenizer.json
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    assert light_tokenizer(tmp_path) is None


def test_dry_run_of_the_demo_imports_neither_torch_nor_transformers(tmp_path, embedded_folder):
    from cli_support import imported_after

    from persona_eval.plugins.generators.hf import _torch_is_cpu_only

    if not _torch_is_cpu_only():
        pytest.skip("a GPU build of torch: the device is asked of torch itself")
    completed, heavy = imported_after(["run", "--dry-run", "--limit", "2", "--output-dir", str(tmp_path / "run")])
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert heavy == []
    assert not (tmp_path / "run").exists()
