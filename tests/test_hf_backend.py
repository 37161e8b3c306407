"""The `hf` backend: batching and left padding, seeded sampling, adapters, OOM back-off, identity."""

from __future__ import annotations

import json
import shutil

import pytest

from persona_eval.contracts.records import GenParams, GenRequest, GenResult
from persona_eval.errors import RunError, UsageError
from persona_eval.models.fingerprint import weights_fingerprint
from persona_eval.plugins.generators.hf import HFGenerator
from persona_eval.plugins.generators.sampling import request_seed

PROMPTS = [
    "Name a fruit.",
    "Explain in one sentence why the sky looks blue during the day but red at sunset.",
    "Say hi.",
]


def _requests(params: GenParams, prompts=PROMPTS) -> list[GenRequest]:
    return [GenRequest(id=f"q{i}", prompt=p, params=params) for i, p in enumerate(prompts)]


@pytest.fixture(scope="module")
def generator(embedded_model_dir):
    return HFGenerator("embedded", batch_size=len(PROMPTS))


# -- fast: no model runs ------------------------------------------------------------------


@pytest.mark.parametrize("options, message", [
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": "many"}, "batch_size"),
    ({"dtype": "float13"}, "unknown dtype"),
])
def test_bad_options_fail_before_loading(embedded_model_dir, options, message):
    with pytest.raises(UsageError, match=message):
        HFGenerator("embedded", **options)


def test_adapter_folder_must_hold_an_adapter(embedded_model_dir, tmp_path):
    with pytest.raises(UsageError, match="adapter_config.json"):
        HFGenerator("embedded", adapter=str(tmp_path))


def test_identity_pins_weights_tokenizer_and_options(embedded_model_dir, tmp_path):
    identity = HFGenerator("embedded", device="cpu").identity()
    assert identity["backend"] == "hf" and identity["revision"].startswith("sha256:")
    assert identity["adapter"] is None and identity["dtype"] == "float32"
    assert HFGenerator("embedded", device="cpu", dtype="bfloat16").identity() != identity
    # On CPU "auto" is float32, so both spellings share cache entries.
    assert HFGenerator("embedded", dtype="float32", device="cpu").identity() == \
        HFGenerator("embedded", device="cpu").identity()
    assert HFGenerator("embedded", device="cpu", chat_template=False).identity() != identity
    # The fingerprint covers the chat template: editing it must give another identity.
    copy = tmp_path / "copy"
    shutil.copytree(embedded_model_dir, copy)
    before = weights_fingerprint(copy)
    template = next(copy.glob("*.jinja"), None) or copy / "tokenizer_config.json"
    template.write_text(template.read_text() + " ")
    assert weights_fingerprint(copy) != before


def test_request_seed_depends_on_seed_and_input_only():
    assert request_seed(1, "abc") == request_seed(1, "abc")
    assert request_seed(1, "abc") != request_seed(2, "abc")
    assert request_seed(1, "abc") != request_seed(1, "abd")


class _FakeOOM:
    """Stands in for _generate_batch: out of memory above `limit` rows, else echoes."""

    def __init__(self, limit: int):
        self.limit = limit
        self.sizes: list[int] = []

    def __call__(self, texts, params):
        self.sizes.append(len(texts))
        if len(texts) > self.limit:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [GenResult(text=f"out:{text}", finish_reason="stop", output_tokens=1) for text, _ in texts]


def _fake_render(request):
    return request.prompt, False


def test_auto_batch_size_halves_on_oom_and_keeps_order(embedded_model_dir, monkeypatch):
    generator = HFGenerator("embedded", batch_size="auto", device="cpu")
    assert generator.batch_size == 16
    fake = _FakeOOM(limit=3)
    monkeypatch.setattr(generator, "render", _fake_render)
    monkeypatch.setattr(generator, "_generate_batch", fake)
    prompts = [f"prompt {'x' * i}" for i in range(10)]
    results = generator.generate(_requests(GenParams(), prompts))
    assert [r.text for r in results] == [f"out:{p}" for p in prompts]
    # 10 rows fail, then 5 fail, then batches of 2 go through.
    assert fake.sizes[:2] == [10, 5] and set(fake.sizes[2:]) <= {2}
    assert generator.batch_size == 2


def test_fixed_batch_size_oom_is_a_clear_error(embedded_model_dir, monkeypatch):
    generator = HFGenerator("embedded", batch_size=4, device="cpu")
    monkeypatch.setattr(generator, "render", _fake_render)
    monkeypatch.setattr(generator, "_generate_batch", _FakeOOM(limit=1))
    with pytest.raises(RunError, match="batch_size=auto"):
        generator.generate(_requests(GenParams()))


def test_other_runtime_errors_are_not_taken_for_oom(embedded_model_dir, monkeypatch):
    generator = HFGenerator("embedded", batch_size="auto", device="cpu")
    monkeypatch.setattr(generator, "render", _fake_render)

    def broken(texts, params):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(generator, "_generate_batch", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        generator.generate(_requests(GenParams()))
    assert generator.batch_size == 16


# -- slow: the embedded model generates --------------------------------------------------


@pytest.mark.slow
def test_left_padded_batch_gives_the_single_request_answers(generator):
    params = GenParams(max_new_tokens=6)
    batched = generator.generate(_requests(params))
    single = HFGenerator("embedded", batch_size=1).generate(_requests(params))
    assert [r.text for r in batched] == [r.text for r in single]
    assert all(r.text for r in batched)
    # Results come back in request order although the batch ran sorted by length.
    reordered = generator.generate(_requests(params, PROMPTS[::-1]))
    assert [r.text for r in reordered] == [r.text for r in batched][::-1]


@pytest.mark.slow
def test_chat_template_or_plain_text(generator, embedded_model_dir):
    request = GenRequest(id="1", prompt="Hello", system="Be terse.")
    text, specials = generator.render(request)
    assert specials and text.startswith("<|im_start|>system\nBe terse.") and text.endswith("<|im_start|>assistant\n")
    plain = HFGenerator("embedded", chat_template=False)
    assert plain.render(request) == ("Be terse.\n\nHello", False)


@pytest.mark.slow
def test_finish_reason_tokens_and_stop_strings(generator):
    [short] = generator.generate([GenRequest(id="a", prompt=PROMPTS[1], params=GenParams(max_new_tokens=3))])
    assert short.finish_reason == "length" and short.output_tokens == 3
    params = GenParams(max_new_tokens=24, stop=(" ",))
    [stopped] = generator.generate([GenRequest(id="b", prompt=PROMPTS[1], params=params)])
    assert stopped.finish_reason == "stop" and " " not in stopped.text and stopped.text


@pytest.mark.slow
def test_seeded_sampling_is_reproducible_and_batch_independent(generator):
    params = GenParams(max_new_tokens=6, temperature=1.0, seed=11)
    together = generator.generate(_requests(params))
    alone = HFGenerator("embedded", batch_size=1).generate(_requests(params)[1:2])
    assert alone[0].text == together[1].text
    assert [r.text for r in generator.generate(_requests(params))] == [r.text for r in together]
    other_seed = generator.generate(_requests(GenParams(max_new_tokens=6, temperature=1.0, seed=12)))
    assert [r.text for r in other_seed] != [r.text for r in together]
    greedy = generator.generate(_requests(GenParams(max_new_tokens=6)))
    assert [r.text for r in greedy] != [r.text for r in together]


@pytest.mark.slow
def test_choice_probs_are_a_distribution(generator):
    requests = [GenRequest(id="1", prompt="Answer A or B.", response_prefix="Answer:")]
    [probs] = generator.choice_probs(requests, ["A", "B"])
    assert set(probs) == {"A", "B"} and abs(sum(probs.values()) - 1) < 1e-6


@pytest.mark.slow
def test_lora_adapter_loads_and_enters_the_identity(embedded_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32)
    # Non-zero B matrices so the fresh adapter actually changes what the model says.
    config = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(tmp_path / "adapter")
    adapted = HFGenerator("embedded", adapter=str(tmp_path / "adapter"), batch_size=2)
    plain = HFGenerator("embedded", batch_size=2)
    assert adapted.identity()["adapter"].startswith("sha256:")
    assert adapted.identity() != plain.identity()

    params = GenParams(max_new_tokens=5)
    requests = _requests(params, PROMPTS[:2])
    assert [r.text for r in adapted.generate(requests)] != [r.text for r in plain.generate(requests)]

    # Retrained adapter weights: a new identity, so the cache can never serve the old answers.
    weights = tmp_path / "adapter" / "adapter_model.safetensors"
    data = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert data["r"] == 4
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x00\x01")
    assert HFGenerator("embedded", adapter=str(tmp_path / "adapter")).identity()["adapter"] != adapted.identity()["adapter"]
