"""The `vllm` backend on a real GPU: greedy agreement with `hf`, seeded sampling, logprobs, LoRA.

Skipped without CUDA (see tests/conftest.py) or without vllm installed
(``pip install 'persona-eval[vllm]'``). Uses the embedded SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gpu

vllm = pytest.importorskip("vllm")

from persona_eval.contracts.records import GenParams, GenRequest  # noqa: E402
from persona_eval.plugins.generators.vllm import VLLMGenerator  # noqa: E402

PROMPTS = ["Name a fruit.", "Explain in one sentence why the sky is blue.", "Say hi."]


@pytest.fixture(scope="module")
def engine(embedded_model_dir):
    generator = VLLMGenerator("embedded", dtype="float32", gpu_memory_utilization=0.3, enforce_eager=True,
                              max_model_len=2048)
    yield generator
    generator.close()


def _requests(params, prompts=PROMPTS):
    return [GenRequest(id=str(i), prompt=p, params=params) for i, p in enumerate(prompts)]


def test_greedy_starts_like_the_hf_backend(engine):
    from persona_eval.plugins.generators.hf import HFGenerator

    params = GenParams(max_new_tokens=8)
    ours = engine.generate(_requests(params))
    reference = HFGenerator("embedded", device="cuda", dtype="float32").generate(_requests(params))
    assert all(r.text and r.finish_reason in ("stop", "length") for r in ours)
    # Different kernels may part ways late; the first words must agree.
    for a, b in zip(ours, reference):
        assert a.text.split()[:2] == b.text.split()[:2]


def test_seeded_sampling_is_reproducible_per_request(engine):
    params = GenParams(max_new_tokens=8, temperature=1.0, seed=5)
    together = [r.text for r in engine.generate(_requests(params))]
    alone = engine.generate(_requests(params)[1:2])[0].text
    assert alone == together[1]
    other = [r.text for r in engine.generate(_requests(GenParams(max_new_tokens=8, temperature=1.0, seed=6)))]
    assert other != together


def test_choice_probs_match_hf(engine):
    from persona_eval.plugins.generators.hf import HFGenerator

    requests = [GenRequest(id="1", prompt="Answer A or B.", response_prefix="Answer:")]
    [ours] = engine.choice_probs(requests, ["A", "B"])
    [reference] = HFGenerator("embedded", device="cuda", dtype="float32").choice_probs(requests, ["A", "B"])
    assert abs(sum(ours.values()) - 1) < 1e-5
    assert abs(ours["A"] - reference["A"]) < 0.02


def test_lora_adapter_changes_the_output(embedded_model_dir, tmp_path, engine):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=128, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(tmp_path / "adapter")
    engine.close()  # one engine at a time on the GPU
    adapted = VLLMGenerator("embedded", adapter=str(tmp_path / "adapter"), dtype="float32",
                            gpu_memory_utilization=0.3, enforce_eager=True, max_model_len=2048)
    try:
        assert adapted.kwargs["enable_lora"] and adapted.kwargs["max_lora_rank"] == 8
        params = GenParams(max_new_tokens=6)
        with_adapter = [r.text for r in adapted.generate(_requests(params))]
    finally:
        adapted.close()
    plain = VLLMGenerator("embedded", dtype="float32", gpu_memory_utilization=0.3, enforce_eager=True, max_model_len=2048)
    try:
        assert with_adapter != [r.text for r in plain.generate(_requests(params))]
    finally:
        plain.close()
