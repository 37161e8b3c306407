"""`vllm:` on Ray Data LLM without vLLM or a GPU: our spec and GenParams mapped to its config, rows and results.

The config is checked against Ray's own `vLLMEngineProcessorConfig` (a pydantic model that loads
without vLLM), the rows against the local backend's own rendering and sampling arguments.
"""

from __future__ import annotations

import pytest

from persona_eval.contracts.records import GenParams, GenRequest
from persona_eval.plugins.generators.sampling import request_seed
from persona_eval.plugins.generators.vllm import (
    VLLMGenerator,
    engine_kwargs,
    ray_llm_config,
    ray_llm_result,
    ray_sampling_params,
    sampling_kwargs,
)


def test_the_config_carries_the_engine_replicas_and_tensor_parallel_size():
    kwargs = engine_kwargs("/models/m", {"tensor_parallel_size": 4, "dtype": "bfloat16", "max_model_len": 4096})
    config = ray_llm_config(kwargs, replicas=2, batch_size=64)
    assert config == {
        "model_source": "/models/m",
        "engine_kwargs": {"dtype": "bfloat16", "tensor_parallel_size": 4, "enable_prefix_caching": True,
                          "trust_remote_code": False, "seed": 0, "max_model_len": 4096},
        "concurrency": (2, 2),
        "batch_size": 64,
        "chat_template_stage": False,
        "tokenize_stage": False,
        "detokenize_stage": False,
    }


def test_rays_own_config_class_accepts_the_mapping():
    llm = pytest.importorskip("ray.data.llm")
    config = llm.vLLMEngineProcessorConfig(**ray_llm_config(engine_kwargs("/models/m", {"tensor_parallel_size": 2}),
                                                            replicas=3, batch_size=16))
    assert config.get_concurrency() == {"min_size": 3, "max_size": 3}  # a fixed pool of 3 engines
    assert config.engine_kwargs["tensor_parallel_size"] == 2 and config.engine_kwargs["enable_prefix_caching"]
    assert config.model_source == "/models/m" and config.batch_size == 16


def test_a_lora_adapter_reaches_the_engine_options():
    kwargs = engine_kwargs("/models/m", {"adapter": "/adapters/a", "max_lora_rank": 16})
    engine = ray_llm_config(kwargs, replicas=1, batch_size=8)["engine_kwargs"]
    assert engine["enable_lora"] and engine["max_loras"] == 1 and engine["max_lora_rank"] == 16


@pytest.mark.parametrize("params", [
    GenParams(max_new_tokens=8),
    GenParams(max_new_tokens=32, temperature=0.8, top_p=0.9, seed=7, stop=("\n",)),
    GenParams(max_new_tokens=16, min_new_tokens=4, repetition_penalty=1.2),
])
def test_sampling_params_mean_what_the_local_backend_sends(params):
    seed = request_seed(params.seed, "the rendered input")
    row = ray_sampling_params(params, request_seed=seed)
    local = sampling_kwargs(params, request_seed=seed)
    # Every key the local backend sets has the same value; the others are vLLM's defaults.
    assert {k: row[k] for k in local if k != "seed"} == {k: v for k, v in local.items() if k != "seed"}
    defaults = {"top_p": 1.0, "stop": [], "min_tokens": 0, "repetition_penalty": 1.0}
    assert all(row[k] == v for k, v in defaults.items() if k not in local)
    # Every row has the same keys (one Arrow column each) and an integer seed (greedy ignores it).
    assert set(row) == {"max_tokens", "temperature", "top_p", "stop", "min_tokens", "repetition_penalty",
                        "skip_special_tokens", "seed"}
    assert row["seed"] == seed and isinstance(row["seed"], int)


def test_results_read_the_output_row():
    done = ray_llm_result({"generated_text": " Hello there. ", "num_generated_tokens": 3, "num_input_tokens": 12}, 8)
    assert (done.text, done.finish_reason, done.output_tokens, done.input_tokens, done.usage_source) == (
        "Hello there.", "stop", 3, 12, "tokenizer")
    assert ray_llm_result({"generated_text": "cut", "num_generated_tokens": 8, "num_input_tokens": 5}, 8).finish_reason == "length"


def test_rows_are_rendered_and_tokenized_as_the_local_backend_does(embedded_model_dir):
    from transformers import AutoTokenizer

    from persona_eval.rendering.chat import render_request

    generator = VLLMGenerator("embedded", dtype="float32")  # no engine starts: only the tokenizer loads
    requests = [GenRequest(id="1", prompt="Say hi.", params=GenParams(max_new_tokens=8), system="Be brief."),
                GenRequest(id="2", prompt="Name a fruit.", params=GenParams(max_new_tokens=4, temperature=1.0, seed=3),
                           response_prefix="Sure:")]
    rows = generator.ray_llm_rows(requests)
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    for row, request in zip(rows, requests):
        text, has_specials = render_request(tokenizer, request, True)
        assert row["tokenized_prompt"] == tokenizer.encode(text, add_special_tokens=not has_specials)
        assert row["sampling_params"] == ray_sampling_params(request.params, request_seed=request_seed(request.params.seed, text))
        assert "model" not in row  # no adapter: the engine's own model
    assert generator._llm is None
    config = generator.ray_llm_config(replicas=2, batch_size=32)
    assert config["model_source"] == str(embedded_model_dir) and config["engine_kwargs"]["dtype"] == "float32"
