"""The `vllm` backend without vllm: option and GenParams mapping, construction, identity, errors."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from persona_eval.contracts.records import GenParams, GenRequest
from persona_eval.errors import UsageError
from persona_eval.plugins.generators.vllm import (
    VLLMGenerator,
    choice_sampling_kwargs,
    engine_kwargs,
    lora_rank_for,
    sampling_kwargs,
)

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def _adapter(path, r=8, **extra):
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": r, "peft_type": "LORA", **extra}))
    (path / "adapter_model.safetensors").write_bytes(b"weights-" + str(r).encode())
    return path


def _model_dir(path):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text('{"model_type": "llama"}')
    (path / "model.safetensors").write_bytes(b"not really weights")
    return path


def test_engine_defaults_turn_prefix_caching_on():
    kwargs = engine_kwargs("/models/m", {})
    assert kwargs == {
        "model": "/models/m", "dtype": "auto", "tensor_parallel_size": 1, "enable_prefix_caching": True,
        "trust_remote_code": False, "seed": 0,
    }


def test_engine_options_pass_through_with_their_types():
    kwargs = engine_kwargs("m", {"tensor_parallel_size": 4, "dtype": "bfloat16", "gpu_memory_utilization": 0.8,
                                 "max_model_len": 4096, "enforce_eager": True, "revision": "abc123", "seed": 5})
    assert kwargs["tensor_parallel_size"] == 4
    assert kwargs["dtype"] == "bfloat16"
    assert kwargs["gpu_memory_utilization"] == 0.8
    assert kwargs["max_model_len"] == 4096
    assert kwargs["enforce_eager"] is True
    assert kwargs["revision"] == "abc123"
    assert kwargs["seed"] == 5
    assert kwargs["enable_prefix_caching"] is True


@pytest.mark.parametrize("options, message", [
    ({"tensor_parralel_size": 2}, "unknown option 'tensor_parralel_size'"),
    ({"tensor_parallel_size": "two"}, "wrong type"),
    ({"tensor_parallel_size": True}, "wrong type"),
    ({"tensor_parallel_size": 0}, "at least 1"),
    ({"dtype": "int3"}, "unknown dtype"),
    ({"max_lora_rank": 16}, "only makes sense with adapter"),
])
def test_engine_rejects_bad_options(options, message):
    with pytest.raises(UsageError, match=message):
        engine_kwargs("m", options)


@pytest.mark.parametrize("rank, expected", [(4, 8), (8, 8), (12, 16), (24, 32), (64, 64), (300, 320)])
def test_lora_rank_rounds_up_to_a_supported_rank(tmp_path, rank, expected):
    assert lora_rank_for(_adapter(tmp_path / "a", r=rank)) == expected


def test_lora_rank_reads_rank_pattern_and_rejects_huge_ranks(tmp_path):
    assert lora_rank_for(_adapter(tmp_path / "a", r=8, rank_pattern={"q_proj": 40})) == 64
    with pytest.raises(UsageError, match="exceeds"):
        lora_rank_for(_adapter(tmp_path / "b", r=1024))


def test_engine_enables_lora_for_an_adapter(tmp_path):
    adapter = _adapter(tmp_path / "a", r=16)
    kwargs = engine_kwargs("m", {"adapter": str(adapter)})
    assert kwargs["enable_lora"] is True and kwargs["max_loras"] == 1 and kwargs["max_lora_rank"] == 16
    assert "adapter" not in kwargs
    assert engine_kwargs("m", {"adapter": str(adapter), "max_lora_rank": 64})["max_lora_rank"] == 64


def test_sampling_greedy_by_default():
    kwargs = sampling_kwargs(GenParams(max_new_tokens=32))
    assert kwargs == {"max_tokens": 32, "temperature": 0.0, "skip_special_tokens": True}


def test_sampling_seeded_per_request_with_stops():
    params = GenParams(max_new_tokens=8, temperature=0.7, top_p=0.9, seed=3, stop=("\n\n", "###"))
    kwargs = sampling_kwargs(params, request_seed=12345)
    assert kwargs["temperature"] == 0.7 and kwargs["top_p"] == 0.9
    assert kwargs["seed"] == 12345
    assert kwargs["stop"] == ["\n\n", "###"]
    assert sampling_kwargs(params)["seed"] == 3


def test_choice_probe_reads_prompt_logprobs():
    assert choice_sampling_kwargs() == {"max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0}


def test_generator_builds_from_a_spec_without_importing_vllm(tmp_path):
    from persona_eval.contracts import registry
    from persona_eval.contracts.model_spec import parse_model_spec

    model = _model_dir(tmp_path / "model")
    adapter = _adapter(tmp_path / "adapter", r=4)
    spec = parse_model_spec(f"vllm:{model},tensor_parallel_size=2,adapter={adapter},dtype=float16")
    generator = registry.generators.create(spec.backend, spec.model, **spec.options)
    assert isinstance(generator, VLLMGenerator)
    assert generator.kwargs["tensor_parallel_size"] == 2
    assert generator.kwargs["enable_lora"] is True and generator.kwargs["max_lora_rank"] == 8
    assert generator.kwargs["dtype"] == "float16"
    if not HAS_VLLM:
        assert "vllm" not in sys.modules


def test_generator_rejects_a_bad_option_at_construction(tmp_path):
    with pytest.raises(UsageError, match="unknown option 'gpu_mem'"):
        VLLMGenerator(str(_model_dir(tmp_path / "m")), gpu_mem=0.5)
    with pytest.raises(UsageError, match="no adapter_config.json"):
        VLLMGenerator(str(_model_dir(tmp_path / "m")), adapter=str(tmp_path))


def test_identity_pins_weights_and_adapter_content(tmp_path):
    model = _model_dir(tmp_path / "model")
    adapter = _adapter(tmp_path / "adapter", r=4)
    base = VLLMGenerator(str(model)).identity()
    with_adapter = VLLMGenerator(str(model), adapter=str(adapter)).identity()
    assert base["backend"] == "vllm" and base["revision"].startswith("sha256:")
    assert base["adapter"] is None and with_adapter["adapter"].startswith("sha256:")
    (adapter / "adapter_model.safetensors").write_bytes(b"retrained weights")
    assert VLLMGenerator(str(model), adapter=str(adapter)).identity()["adapter"] != with_adapter["adapter"]
    (model / "model.safetensors").write_bytes(b"other weights")
    assert VLLMGenerator(str(model)).identity()["revision"] != base["revision"]


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here")
def test_generate_without_vllm_says_how_to_install(tmp_path):
    generator = VLLMGenerator(str(_model_dir(tmp_path / "m")))
    with pytest.raises(UsageError, match=r"pip install 'persona-eval\[vllm\]'"):
        generator.generate([GenRequest(id="1", prompt="hi")])
