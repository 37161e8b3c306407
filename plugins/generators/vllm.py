"""The `vllm` generator: vLLM's offline `LLM` engine on GPUs, with LoRA and prefix caching.

Spec: ``vllm:NAME_OR_PATH[,dtype=bfloat16][,tensor_parallel_size=2][,adapter=DIR]
[,max_lora_rank=16][,gpu_memory_utilization=0.9][,max_model_len=4096][,revision=REV]
[,quantization=awq][,enforce_eager=true][,chat_template=true|false]``.
``vllm:embedded`` serves the embedded SmolLM2 copy. vllm itself is imported only when a
model is loaded (it needs a CUDA build of torch: ``pip install 'persona-eval[vllm]'``).
The pure functions `engine_kwargs` and `sampling_kwargs` map our options and GenParams
to vLLM's arguments, so the mapping is tested on machines without vllm.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from persona_eval.contracts.hookspecs import hookimpl
from persona_eval.contracts.interfaces import Generator
from persona_eval.contracts.records import GenParams, GenRequest, GenResult
from persona_eval.errors import RunError, UsageError
from persona_eval.plugins.generators.common import (
    adapter_folder,
    check_engine_option,
    engine_class,
    model_location,
    sampler_kwargs,
)

INSTALL_HINT = "the vllm backend needs vLLM and a CUDA GPU: pip install 'persona-eval[vllm]'"

# LoRA ranks vLLM's kernels are built for; an adapter's rank is rounded up to one of them.
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
_DTYPES = ("auto", "bfloat16", "float16", "half", "float32", "float")
# Options handed straight to LLM(...) as they are, with the type each must have.
_PASSTHROUGH: dict[str, type | tuple[type, ...]] = {
    "tensor_parallel_size": int,
    "pipeline_parallel_size": int,
    "gpu_memory_utilization": (int, float),
    "max_model_len": int,
    "quantization": str,
    "enforce_eager": bool,
    "swap_space": (int, float),
    "cpu_offload_gb": (int, float),
    "max_num_seqs": int,
    "kv_cache_dtype": str,
    "tokenizer": str,
    "download_dir": str,
}
# Options this backend reads itself (listed when an unknown option is reported).
_OWN_OPTIONS = ("dtype", "revision", "adapter", "max_lora_rank", "seed", "trust_remote_code", "chat_template")


def lora_rank_for(adapter: str | os.PathLike) -> int:
    """The smallest LoRA rank vLLM supports that fits the adapter's own rank."""
    config_path = Path(adapter) / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"vllm: cannot read the adapter config: {exc}", where=str(config_path)) from exc
    ranks = [int(config.get("r") or 8)]
    ranks += [int(v) for v in (config.get("rank_pattern") or {}).values()]
    needed = max(ranks)
    for rank in LORA_RANKS:
        if rank >= needed:
            return rank
    raise UsageError(f"vllm: adapter rank {needed} exceeds the largest rank vLLM supports ({LORA_RANKS[-1]})",
                     where=str(config_path))


def engine_kwargs(model_path: str, options: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM(...)`` from a spec's options (already without our own keys)."""
    options = dict(options)
    dtype = str(options.pop("dtype", "auto") or "auto")
    if dtype not in _DTYPES:
        raise UsageError(f"vllm: unknown dtype {dtype!r} (use {', '.join(_DTYPES)})")
    kwargs: dict[str, Any] = {
        "model": model_path,
        "dtype": dtype,
        "tensor_parallel_size": 1,
        # Every persona strategy shares long prefixes (system prompt, few-shot exemplars).
        "enable_prefix_caching": True,
        "trust_remote_code": bool(options.pop("trust_remote_code", False)),
        "seed": int(options.pop("seed", 0)),
    }
    revision = options.pop("revision", None)
    if revision is not None:
        kwargs["revision"] = str(revision)
    adapter = options.pop("adapter", None)
    max_lora_rank = options.pop("max_lora_rank", None)
    if adapter:
        kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=int(max_lora_rank or lora_rank_for(adapter)))
    elif max_lora_rank is not None:
        raise UsageError("vllm: max_lora_rank= only makes sense with adapter=")
    for key, value in options.items():
        check_engine_option("vllm", key, value, _PASSTHROUGH, _OWN_OPTIONS)
        kwargs[key] = value
    if kwargs["tensor_parallel_size"] < 1:
        raise UsageError("vllm: tensor_parallel_size must be at least 1")
    return kwargs


def sampling_kwargs(params: GenParams, *, request_seed: int | None = None) -> dict[str, Any]:
    """Keyword arguments for ``vllm.SamplingParams(...)``: greedy at temperature 0, seeded sampling above."""
    kwargs = sampler_kwargs(params, request_seed)
    kwargs["skip_special_tokens"] = True
    if params.stop:
        kwargs["stop"] = list(params.stop)
    # Only where set: the arguments (and so the outputs) of tasks without them stay as they were.
    if params.min_new_tokens is not None:
        kwargs["min_tokens"] = int(params.min_new_tokens)
    if params.repetition_penalty is not None:
        kwargs["repetition_penalty"] = float(params.repetition_penalty)
    if params.temperature > 0:
        kwargs["top_p"] = float(params.top_p)
    return kwargs


def choice_sampling_kwargs() -> dict[str, Any]:
    """SamplingParams for reading the log-probability of the last prompt token."""
    return {"max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0}


# --executor ray: the same engine and sampling through Ray Data LLM (persona_eval.executors.vllm_ray).

def ray_llm_config(kwargs: dict[str, Any], *, replicas: int, batch_size: int) -> dict[str, Any]:
    """Keyword arguments of ``ray.data.llm.vLLMEngineProcessorConfig`` from `engine_kwargs`'s output.

    `replicas` engines (a fixed pool), each with the spec's tensor and pipeline parallel sizes
    (Ray places their GPUs), prefix caching and every other engine option as the local backend
    passes them. Rows arrive rendered and tokenized by our own chat formatting, and the engine
    detokenizes itself, so Ray's chat-template, tokenize and detokenize stages are off: they would
    redo the same work another way.
    """
    engine = {key: value for key, value in kwargs.items() if key != "model"}
    return {
        "model_source": kwargs["model"],
        "engine_kwargs": engine,
        "concurrency": (int(replicas), int(replicas)),
        "batch_size": int(batch_size),
        "chat_template_stage": False,
        "tokenize_stage": False,
        "detokenize_stage": False,
    }


def ray_sampling_params(params: GenParams, *, request_seed: int) -> dict[str, Any]:
    """`sampling_kwargs` with every key present (each is an Arrow column of the Ray dataset), unset ones at vLLM's defaults.

    A greedy request gets a seed too, which greedy decoding ignores; the column then never mixes
    integers with nulls (which Arrow would turn into floats, and a 60-bit seed with them).
    """
    kwargs = {"top_p": 1.0, "stop": [], "min_tokens": 0, "repetition_penalty": 1.0,
              **sampling_kwargs(params, request_seed=request_seed)}
    kwargs["seed"] = int(request_seed)
    return kwargs


def ray_llm_result(row: dict[str, Any], max_tokens: int) -> GenResult:
    """The `GenResult` of one Ray Data LLM output row (as `VLLMGenerator.generate` builds it).

    Ray's output rows carry no finish reason: a completion that used every allowed token is
    ``length``, any other stopped (EOS or a stop string).
    """
    generated = int(row.get("num_generated_tokens") or 0)
    return GenResult(text=str(row.get("generated_text") or "").strip(),
                     finish_reason="length" if generated >= int(max_tokens) else "stop",
                     output_tokens=generated, input_tokens=int(row.get("num_input_tokens") or 0), usage_source="tokenizer")


class VLLMGenerator(Generator):
    # A raw request (the paper judge's fastchat string) is encoded as it is, as prometheus-eval's VLLM does.
    accepts_raw_prompt = True

    def __init__(self, model: str, chat_template: bool = True, **options: Any):
        self.model_name = model
        self.path, self.display_name = model_location(model)
        self.adapter = adapter_folder("vllm", options.get("adapter"))
        if self.adapter:
            options["adapter"] = self.adapter
        self.use_chat_template = bool(chat_template)
        self.options = options
        # Validate the whole mapping now: a bad option fails before any GPU work.
        self.kwargs = engine_kwargs(self.path, options)
        self.preferred_batch_size = 256  # vLLM schedules continuously: hand it plenty
        self._llm = None
        self._tokenizer = None
        self._identity: dict[str, Any] | None = None

    def _load(self):
        if self._llm is not None:
            return self._llm
        LLM = engine_class("vllm", "LLM", INSTALL_HINT)  # noqa: N806 - it is a class
        try:
            self._llm = LLM(**self.kwargs)
        except Exception as exc:  # noqa: BLE001 - engine start-up errors are many and varied
            raise RunError(f"vllm: cannot start the engine for {self.display_name!r}: {type(exc).__name__}: {exc}") from exc
        self._tokenizer = self._llm.get_tokenizer()
        return self._llm

    def _lora_request(self):
        if not self.adapter:
            return None
        from vllm.lora.request import LoRARequest

        return LoRARequest("persona-eval-adapter", 1, self.adapter)

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            from persona_eval.models.fingerprint import model_revision, weights_fingerprint

            self._identity = {
                "backend": "vllm",
                "model": self.display_name,
                "revision": model_revision(self.path, self.kwargs.get("revision"),
                                           trust_remote_code=self.kwargs["trust_remote_code"]),
                "adapter": f"sha256:{weights_fingerprint(Path(self.adapter))}" if self.adapter else None,
                "dtype": self.kwargs["dtype"],
                "quantization": self.kwargs.get("quantization"),
                "chat_template": self.use_chat_template,
            }
        return self._identity

    def render_input(self, request: GenRequest) -> str:
        """The text `_prompt` encodes for the engine, from the model's tokenizer alone (no engine, no weights)."""
        from persona_eval.rendering.chat import render_request

        tokenizer = self._tokenizer
        if tokenizer is None and not request.raw:  # a raw prompt is sent as it is: no tokenizer needed
            from transformers import AutoTokenizer

            own = self.kwargs.get("tokenizer")
            try:
                tokenizer = AutoTokenizer.from_pretrained(own or self.path, revision=None if own else self.kwargs.get("revision"),
                                                          trust_remote_code=self.kwargs["trust_remote_code"])
            except OSError as exc:
                raise RunError(f"vllm: cannot load the tokenizer of {self.display_name!r}: {str(exc).splitlines()[0]}") from exc
            self._tokenizer = tokenizer
        return render_request(tokenizer, request, self.use_chat_template)[0]

    def unapplied_params(self, params: GenParams) -> list[str]:
        """The settings of `params` this backend cannot apply (none: SamplingParams takes them all)."""
        from persona_eval.plugins.generators.sampling import unapplied_params

        return unapplied_params("vllm", params)

    def _prompt(self, request: GenRequest) -> tuple[str, list[int]]:
        """The rendered text and its token ids: vLLM gets the ids, so no second BOS sneaks in."""
        from persona_eval.rendering.chat import render_request

        self._load()
        text, has_specials = render_request(self._tokenizer, request, self.use_chat_template)
        return text, list(self._tokenizer.encode(text, add_special_tokens=not has_specials))

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        if not requests:
            return []
        llm = self._load()
        from vllm import SamplingParams

        from persona_eval.plugins.generators.sampling import request_seed

        rendered = [self._prompt(r) for r in requests]
        params = [
            SamplingParams(**sampling_kwargs(r.params, request_seed=request_seed(r.params.seed, text)))
            for r, (text, _) in zip(requests, rendered)
        ]
        prompts = [{"prompt_token_ids": ids} for _, ids in rendered]
        outputs = llm.generate(prompts, params, use_tqdm=False, lora_request=self._lora_request())
        if len(outputs) != len(requests):
            raise RunError(f"vllm: {len(outputs)} outputs for {len(requests)} requests")
        results = []
        for output, (_, ids) in zip(outputs, rendered):
            completion = output.outputs[0]
            results.append(GenResult(text=completion.text.strip(), finish_reason=completion.finish_reason,
                                     output_tokens=len(completion.token_ids), input_tokens=len(ids), usage_source="tokenizer"))
        return results

    def ray_llm_config(self, *, replicas: int, batch_size: int) -> dict[str, Any]:
        """Ray Data LLM's processor config for this spec (see `ray_llm_config`)."""
        return ray_llm_config(self.kwargs, replicas=replicas, batch_size=batch_size)

    def _input_tokenizer(self):
        """The model's tokenizer without starting the engine (the driver of a Ray run never starts one)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            own = self.kwargs.get("tokenizer")
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(
                    own or self.path, revision=None if own else self.kwargs.get("revision"),
                    trust_remote_code=self.kwargs["trust_remote_code"])
            except OSError as exc:
                raise RunError(f"vllm: cannot load the tokenizer of {self.display_name!r}: {str(exc).splitlines()[0]}") from exc
        return self._tokenizer

    def ray_llm_rows(self, requests: Sequence[GenRequest]) -> list[dict[str, Any]]:
        """One Ray Data LLM row per request: token ids and sampling exactly as `generate` sends them."""
        from persona_eval.plugins.generators.sampling import request_seed
        from persona_eval.rendering.chat import render_request

        tokenizer = self._input_tokenizer()
        rows = []
        for request in requests:
            text, has_specials = render_request(tokenizer, request, self.use_chat_template)
            row: dict[str, Any] = {
                "tokenized_prompt": list(tokenizer.encode(text, add_special_tokens=not has_specials)),
                "sampling_params": ray_sampling_params(request.params, request_seed=request_seed(request.params.seed, text)),
            }
            if self.adapter:  # a row naming another model than the engine's is a LoRA request for it
                row["model"] = self.adapter
            rows.append(row)
        return rows

    def ray_llm_result(self, row: dict[str, Any], request: GenRequest) -> GenResult:
        return ray_llm_result(row, request.params.max_new_tokens)

    def choice_probs(self, requests: Sequence[GenRequest], choices: Sequence[str]) -> list[dict[str, float]]:
        """P(choice) as the next token, from the exact log-probability of each choice token.

        Each candidate token is appended to the prompt and its prompt log-probability read
        back; prefix caching makes the shared prompt nearly free. Top-k logprobs would miss
        a choice outside the top k.
        """
        if not requests:
            return []
        import math

        llm = self._load()
        from vllm import SamplingParams

        from persona_eval.plugins.generators.sampling import choice_token_ids

        choice_ids = choice_token_ids(self._tokenizer, choices)
        flat_ids = sorted({i for ids in choice_ids for i in ids})
        probes, owners = [], []
        for index, request in enumerate(requests):
            _, base = self._prompt(request)
            for token in flat_ids:
                probes.append({"prompt_token_ids": [*base, token]})
                owners.append((index, token))
        outputs = llm.generate(probes, SamplingParams(**choice_sampling_kwargs()), use_tqdm=False,
                               lora_request=self._lora_request())
        found: list[dict[int, float]] = [{} for _ in requests]
        for (index, token), output in zip(owners, outputs):
            last = output.prompt_logprobs[-1]
            found[index][token] = math.exp(last[token].logprob)
        out = []
        for probs in found:
            mass = [sum(probs[t] for t in ids) for ids in choice_ids]
            total = sum(mass) or 1.0
            out.append({c: m / total for c, m in zip(choices, mass)})
        return out

    def close(self) -> None:
        if self._llm is None:
            return
        self._llm = None
        try:
            import gc

            import torch

            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass


@hookimpl
def register_generators(register):
    register("vllm", "persona_eval.plugins.generators.vllm:VLLMGenerator", description="vLLM offline engine (GPU)")
