"""`vllm:` through `--executor ray` on a real GPU: Ray Data LLM gives the local `vllm` backend's answers.

Skipped without CUDA (tests/conftest.py), without vllm (``pip install 'persona-eval[vllm]'``) or
without Ray Data LLM. A one-GPU local Ray instance runs one engine of the embedded model; the
same requests through the local backend must agree (greedy: the same text, or at least the same
first words where kernels part ways late), and every seeded sample must be what it is locally.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gpu

pytest.importorskip("vllm")
pytest.importorskip("ray.data.llm")

from persona_eval.contracts.records import GenParams, GenRequest, GenResult  # noqa: E402

SPEC = "vllm:embedded,dtype=float32,gpu_memory_utilization=0.3,enforce_eager=true,max_model_len=2048"
PROMPTS = ["Name a fruit.", "Explain in one sentence why the sky is blue.", "Say hi.", "Count to five."]


def _requests(params):
    return [GenRequest(id=str(i), prompt=p, params=params) for i, p in enumerate(PROMPTS)]


def _through(executor_text: str, requests) -> list[GenResult]:
    from persona_eval.contracts.factories import build_generator
    from persona_eval.executors import parse_executor
    from persona_eval.executors.work import GenerateWork
    from persona_eval.pipeline.cached_map import cached_map
    from persona_eval.storage.cache import NullCache

    generator = build_generator(SPEC)
    executor = parse_executor(executor_text)
    executor.prepare([generator])
    out: list[GenResult | None] = [None] * len(requests)
    try:
        cached_map(stage="generate", identity=generator.identity(), inputs=requests, payload=GenRequest.cache_input,
                   compute=generator.generate, encode=lambda r: {"text": r.text}, decode=lambda d: GenResult(text=d["text"]),
                   cache=NullCache(), batch_size=generator.preferred_batch_size,
                   on_result=lambda i, r, cached: out.__setitem__(i, r), executor=executor, work=GenerateWork(SPEC))
    finally:
        executor.close()
    return out  # type: ignore[return-value]


@pytest.fixture(scope="module")
def local_results(embedded_model_dir):
    from persona_eval.contracts.factories import close_generators

    greedy = _through("local", _requests(GenParams(max_new_tokens=12)))
    sampled = _through("local", _requests(GenParams(max_new_tokens=12, temperature=1.0, seed=5)))
    close_generators()  # the local engine leaves the GPU to the Ray one
    return greedy, sampled


def test_ray_data_llm_gives_the_local_answers(local_results):
    import ray

    ray.init(num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        greedy = _through("ray,replicas=1", _requests(GenParams(max_new_tokens=12)))
        sampled = _through("ray,replicas=1", _requests(GenParams(max_new_tokens=12, temperature=1.0, seed=5)))
    finally:
        ray.shutdown()
    local_greedy, local_sampled = local_results
    for ours, theirs in zip(greedy, local_greedy):
        assert ours.text and ours.finish_reason in ("stop", "length") and ours.output_tokens
        assert ours.text.split()[:2] == theirs.text.split()[:2]
    # A per-request seed: each sample is the one the local engine draws for that request.
    assert sum(a.text == b.text for a, b in zip(sampled, local_sampled)) >= len(PROMPTS) - 1
