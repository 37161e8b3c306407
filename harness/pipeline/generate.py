"""Stage 2, generate: the test model and the baseline answer every item for its persona.

Inputs are rendered by the task's strategies (`rendering.prompts`), looked up in the
result cache and generated in batches where missing (`cached_map`); each answer is one
line of ``generations.jsonl``, flushed as it is written. Records already in the file (a
resumed run) are reused, after checking they saw exactly today's input and persona.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

from persona_eval.contracts.factories import build_generator, gen_params, generator_origin
from persona_eval.contracts.records import Example, GenRequest, GenResult, Persona
from persona_eval.errors import UsageError, plugin_call
from persona_eval.executors.work import GenerateWork
from persona_eval.limits import CHARS_PER_TOKEN_BOUND
from persona_eval.pipeline.cached_map import cached_map
from persona_eval.pipeline.context import RunContext
from persona_eval.pipeline.items import ROLES
from persona_eval.rendering.prompts import choose_shots, render_input, render_response_prefix
from persona_eval.scoring.usage import call_usage
from persona_eval.storage.jsonl import GENERATION_KEY, JsonlWriter, read_keyed

# The option that names each role's model, for error messages.
ROLE_OPTIONS = {"test": "--model", "baseline": "--baseline"}


def slim_generation(record: dict[str, Any]) -> dict[str, Any]:
    """The fields of a generation record that resuming and judging read."""
    return {k: record.get(k) for k in ("item_id", "role", "input", "persona", "response")}


def render_requests(task, strategy: str, examples: Sequence[Example], personas: Sequence[Persona], seed: int) -> list[GenRequest]:
    """One generator request per item: the strategy's rendered input, the task's system text and reply prefix."""
    spec = task.spec
    params = gen_params(spec.generation, seed)
    pool: list[Example] = []
    if strategy == "pt_fs":
        source = spec.few_shot.source if task.has_partition(spec.few_shot.source) else "train"
        pool = task.load(source)
    requests = []
    for example, persona in zip(examples, personas):
        shots = choose_shots(pool, spec.few_shot.k, seed, example.prompt) if pool else ()
        try:
            prompt = render_input(spec.prompts, strategy, example, persona.text, shots)
        except UsageError as exc:  # undefined variables and sandbox violations show only when rendered
            raise UsageError(f"prompts.{strategy} (item {example.id!r}): {exc}", where=str(task.path)) from exc
        try:
            prefix = render_response_prefix(spec.response_prefix, example, persona.text)
        except UsageError as exc:
            raise UsageError(f"response_prefix (item {example.id!r}): {exc}", where=str(task.path)) from exc
        requests.append(GenRequest(id=example.id, prompt=prompt, params=params, system=spec.system_prompt, response_prefix=prefix))
    return requests


def check_context_lengths(generator, requests: Sequence[GenRequest], role: str) -> None:
    """Refuse, naming the item, an input that cannot fit the generator's context (where it says its length).

    A cheap bound, no tokenizer: an input longer than `CHARS_PER_TOKEN_BOUND` characters per
    token of the context left after ``max_new_tokens`` is refused (natural text averages about
    4 characters a token). Inputs under the bound may still be cut by the backend itself.
    """
    context = generator.context_length() if callable(getattr(generator, "context_length", None)) else None
    if not context:
        return
    for request in requests:
        room = max(0, int(context) - int(request.params.max_new_tokens or 0))
        chars = len(request.prompt) + len(request.system or "") + len(request.response_prefix or "")
        if chars > room * CHARS_PER_TOKEN_BOUND:
            raise UsageError(
                f"item {request.id!r} ({ROLE_OPTIONS.get(role, role)}): the rendered input is {chars:,} characters, "
                f"more than {CHARS_PER_TOKEN_BOUND} per token of the model's {context:,}-token context "
                f"after {request.params.max_new_tokens} new tokens"
            )


def check_resumable(path, role, examples, personas, requests, done) -> None:
    """Records resumed from an earlier run must have seen exactly today's input and persona.

    The run key names the persona source and its options, not the content of a persona
    file or training set; if that content changed, reusing old records would mix personas.
    """
    for example, persona, request in zip(examples, personas, requests):
        record = done.get((example.id, role))
        if record is None:
            continue
        if record.get("input") != request.prompt or record.get("persona") != persona.text:
            raise UsageError(
                f"item {example.id!r} ({role}) was generated from a different input or persona than this run "
                "renders (did a persona file or the task data change?); use another --output-dir or remove "
                "the old run directory",
                where=str(path),
            )


def encode_result(result: GenResult) -> dict[str, Any]:
    """A generation's cache value; the usage fields only where the backend gave them (older values lack them)."""
    value = {"text": result.text, "finish_reason": result.finish_reason, "output_tokens": result.output_tokens}
    if result.input_tokens is not None:
        value["input_tokens"] = result.input_tokens
    if result.usage_source is not None:
        value["usage_source"] = result.usage_source
    return value


def decode_result(value: dict[str, Any]) -> GenResult:
    return GenResult(text=value["text"], finish_reason=value.get("finish_reason"), output_tokens=value.get("output_tokens"),
                     input_tokens=value.get("input_tokens"), usage_source=value.get("usage_source"), cached=True)


def generate_stage(ctx: RunContext, examples: Sequence[Example], personas: Sequence[Persona],
                   specs: Mapping[str, str], strategies: Mapping[str, str],
                   requests_by_role: Mapping[str, Sequence[GenRequest]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Generate both roles from their rendered requests (`render_requests`, one per item).

    Returns the slim record of every (item id, role). Sets the roles' identities.
    """
    path = ctx.out_dir / "generations.jsonl"
    # In memory a generation keeps only what judging reads; the whole record is on disk.
    done = dict(read_keyed(path, GENERATION_KEY, transform=slim_generation, what="generation", repair_tail=True))
    # Each record is flushed as it is written (a killed process loses none); the fsync for
    # power loss is paid once per batch, not per record (~7 ms each on a slow disk: 14 s
    # of a fully cached 1,000-item rerun).
    with JsonlWriter(path, fsync=False) as writer:
        for role in ROLES:
            generator = build_generator(specs[role], option=ROLE_OPTIONS[role])
            ctx.generators[specs[role]] = generator
            # Plugins need not subclass Generator: the hook is optional.
            if callable(getattr(generator, "bind_run_dir", None)):
                generator.bind_run_dir(ctx.out_dir)
            identity = generator.identity()
            ctx.identities[role] = identity
            requests = requests_by_role[role]
            check_resumable(path, role, examples, personas, requests, done)
            todo = [i for i, ex in enumerate(examples) if (ex.id, role) not in done]
            bar = ctx.progress.add(f"generate {role} ({strategies[role]})", len(examples), len(examples) - len(todo))
            batch_size = max(1, generator.preferred_batch_size)
            written = [0]
            what = generator_origin(specs[role])

            def on_result(j: int, result: GenResult, cached: bool, role=role, todo=todo, requests=requests, bar=bar,
                          batch_size=batch_size, written=written):
                index = todo[j]
                example, persona, request = examples[index], personas[index], requests[index]
                usage = call_usage(request, result)  # estimated where the backend counted nothing
                ctx.usage.add("generate", specs[role], cached=cached, usage=usage)
                record = {
                    "item_id": example.id,
                    "role": role,
                    "model": specs[role],
                    "strategy": strategies[role],
                    "persona": persona.text,
                    "persona_source": persona.source,
                    "persona_provenance": persona.provenance,
                    "prompt": example.prompt,
                    "input": request.prompt,
                    "response": result.text,
                    "finish_reason": result.finish_reason,
                    "input_tokens": usage["input_tokens"],
                    "output_tokens": usage["output_tokens"],
                    "usage_source": usage["source"],
                    "cached": cached,
                }
                writer.write(record)
                # Cached records can be rebuilt from the cache: only new work pays for fsync.
                written[0] += not cached
                if not cached and written[0] % batch_size == 0:
                    writer.sync()
                done[(example.id, role)] = slim_generation(record)
                ctx.progress.advance(bar)
                ctx.record_written(record)

            ctx.usage.add_resumed("generate", specs[role], len(examples) - len(todo))
            started = time.perf_counter()
            cached_map(
                stage="generate",
                identity=identity,
                inputs=[requests[i] for i in todo],
                payload=GenRequest.cache_input,
                compute=lambda batch, g=generator, what=what: plugin_call(what, g.generate, batch),
                encode=encode_result,
                decode=decode_result,
                cache=ctx.cache,
                batch_size=batch_size,
                on_result=on_result,
                # --executor ray: the misses are generated by workers that build this very spec.
                executor=ctx.executor,
                work=GenerateWork(spec=specs[role], option=ROLE_OPTIONS[role]),
            )
            ctx.usage.add_seconds("generate", specs[role], time.perf_counter() - started)
            writer.sync()
    return done
