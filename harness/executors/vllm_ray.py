"""``vllm:`` generation on a Ray cluster through Ray Data LLM (`ray.data.llm`): vLLM engine replicas.

Ray Data LLM runs a pool of vLLM engines (``concurrency`` replicas, each with the spec's
``tensor_parallel_size`` GPUs, prefix caching on) over a dataset of rows. The generator supplies
the three pieces through methods, so the core never imports the plugin:

* ``ray_llm_config(replicas=, batch_size=)``: keyword arguments of ``vLLMEngineProcessorConfig``
  (a pure mapping of the spec, tested without vLLM);
* ``ray_llm_rows(requests)``: one row per request, rendered and tokenized exactly as the local
  backend renders it (``tokenized_prompt``, ``sampling_params``, and ``model`` for an adapter);
* ``ray_llm_result(row, request)``: the `GenResult` of one output row.

Rows carry their position, so the driver maps each finished block back to its inputs.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from persona_eval.errors import PersonaEvalError, RunError, UsageError

OUTPUT_COLUMNS = ("generated_text", "num_generated_tokens", "num_input_tokens")


def _keep_outputs(row: dict[str, Any]) -> dict[str, Any]:
    """Ray Data LLM postprocess: the position and what `ray_llm_result` reads, nothing else."""
    return {"i": row["i"], **{name: row.get(name) for name in OUTPUT_COLUMNS}}


def llm_map(generator, inputs: Sequence[Any], options, batch_size: int) -> Iterator[tuple[list[int], list[Any]]]:
    try:
        import ray.data
        from ray.data.llm import build_processor, vLLMEngineProcessorConfig
    except ImportError as exc:
        raise UsageError("--executor ray with a vllm: model needs Ray Data LLM: pip install 'persona-eval[ray]'") from exc
    config = vLLMEngineProcessorConfig(**generator.ray_llm_config(replicas=options.replicas, batch_size=batch_size))
    rows = generator.ray_llm_rows(list(inputs))
    for position, row in enumerate(rows):
        row["i"] = position
    processor = build_processor(config, postprocess=_keep_outputs)
    results = processor(ray.data.from_items(rows))
    try:
        for batch in results.iter_batches(batch_size=None, batch_format="pandas"):
            positions, outputs = [], []
            for row in batch.to_dict(orient="records"):
                position = int(row["i"])
                positions.append(position)
                outputs.append(generator.ray_llm_result(row, inputs[position]))
            yield positions, outputs
    except PersonaEvalError:
        raise
    except Exception as exc:  # noqa: BLE001 - an engine that cannot start, a lost cluster: one line
        detail = " ".join(str(exc).split())[:200]
        raise RunError(f"vllm on the Ray cluster failed: {type(exc).__name__}: {detail} "
                       "(finished results are saved; rerun the same command to resume)") from exc
