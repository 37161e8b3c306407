"""The `lm-eval` backend: lm-eval's registry, its `hf` model through generate_until, identity."""

from __future__ import annotations

import pytest

pytest.importorskip("lm_eval")

from persona_eval.contracts import registry  # noqa: E402
from persona_eval.contracts.model_spec import parse_model_spec  # noqa: E402
from persona_eval.contracts.records import GenParams, GenRequest  # noqa: E402
from persona_eval.errors import UsageError  # noqa: E402
from persona_eval.plugins.generators.lm_eval import LMEvalGenerator, gen_kwargs  # noqa: E402

SPEC = "lm-eval:hf,pretrained=embedded,dtype=float32,device=cpu,batch_size=2"


def _build(text: str):
    spec = parse_model_spec(text)
    return registry.generators.create(spec.backend, spec.model, **spec.options)


def test_gen_kwargs_greedy_and_sampled():
    assert gen_kwargs(GenParams(max_new_tokens=7, stop=("\n",))) == {
        "until": ["\n"], "max_gen_toks": 7, "do_sample": False, "temperature": 0.0,
    }
    sampled = gen_kwargs(GenParams(max_new_tokens=7, temperature=0.6, top_p=0.8))
    assert sampled["do_sample"] is True and sampled["temperature"] == 0.6 and sampled["top_p"] == 0.8


def test_unknown_lm_eval_model_gets_a_suggestion():
    with pytest.raises(UsageError, match=r"unknown model type 'hff'.*did you mean 'hf'"):
        _build("lm-eval:hff,pretrained=x")


def test_identity_pins_local_weights_and_ignores_speed_options(embedded_model_dir):
    generator = _build(SPEC)
    assert isinstance(generator, LMEvalGenerator) and generator._lm is None  # nothing loaded yet
    identity = generator.identity()
    assert identity["backend"] == "lm-eval" and identity["model"] == "hf"
    assert identity["revision"]["pretrained"].startswith("sha256:")
    assert "batch_size" not in identity["options"] and "device" not in identity["options"]
    assert identity["options"]["dtype"] == "float32"
    faster = _build(SPEC.replace("batch_size=2", "batch_size=16")).identity()
    assert faster == identity
    assert _build(SPEC.replace("float32", "bfloat16")).identity() != identity


def test_a_folder_without_a_model_is_a_clear_error(tmp_path):
    from persona_eval.errors import RunError

    generator = _build(f"lm-eval:hf,pretrained={tmp_path},device=cpu")
    with pytest.raises(RunError, match="lm-eval: cannot load 'hf'"):
        generator.generate([GenRequest(id="1", prompt="hi")])


@pytest.mark.slow
def test_lm_eval_hf_matches_our_hf_backend_greedy(embedded_model_dir):
    from persona_eval.plugins.generators.hf import HFGenerator

    params = GenParams(max_new_tokens=6)
    requests = [
        GenRequest(id="a", prompt="Name a fruit.", params=params),
        GenRequest(id="b", prompt="Explain in one sentence why the sky is blue.", params=params, system="Be brief."),
    ]
    generator = _build(SPEC)
    ours = HFGenerator("embedded", batch_size=2).generate(requests)
    theirs = generator.generate(requests)
    assert [r.text for r in theirs] == [r.text for r in ours]
    assert all(r.output_tokens and r.output_tokens <= 6 for r in theirs)
    # The chat template came from the model, as lm-eval's --apply_chat_template renders it.
    assert generator.render(requests[1]).startswith("<|im_start|>system\nBe brief.")
    plain = _build(SPEC + ",chat_template=false")
    assert plain.render(requests[1]) == "Be brief.\n\nExplain in one sentence why the sky is blue."
