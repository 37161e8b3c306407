"""The `lm-eval` generator: any model in lm-evaluation-harness's registry, via `generate_until`.

Spec: ``lm-eval:MODEL_TYPE[,key=value...]``, e.g.
``lm-eval:hf,pretrained=HuggingFaceTB/SmolLM2-135M-Instruct,dtype=float32`` or
``lm-eval:vllm,pretrained=...``; every option except ``chat_template`` (ours: true or
false) goes to lm-eval's model constructor, and ``pretrained=embedded`` names the
embedded model. Requests become lm-eval ``Instance`` objects; the model's own
``apply_chat_template`` renders chat models, exactly as lm-eval's ``--apply_chat_template``
would. Sampling seeds the global RNGs before each call (lm-eval has no per-request
seed), so a sampled answer can depend on its batch mates; greedy answers do not.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from persona_eval.contracts.hookspecs import hookimpl
from persona_eval.contracts.interfaces import Generator
from persona_eval.contracts.records import GenParams, GenRequest, GenResult
from persona_eval.errors import RunError, UsageError

# Options that change how fast, not what, a model generates: kept out of the identity.
_SPEED_ONLY = {"batch_size", "max_batch_size", "device", "parallelize", "max_memory_per_gpu", "max_cpu_memory",
               "offload_folder", "num_concurrent", "max_retries", "timeout"}
# Options that name local weights, whose content (not path) goes into the identity.
_WEIGHT_OPTIONS = ("pretrained", "peft", "delta", "tokenizer")


def _lm_eval_registry():
    try:
        import lm_eval.models  # noqa: F401 - fills lm-eval's model registry; without it built-ins vanish
        from lm_eval.api import registry
    except ImportError as exc:
        raise UsageError("the lm-eval backend needs lm-evaluation-harness: pip install 'persona-eval[lm-eval]'") from exc
    return registry


def gen_kwargs(params: GenParams) -> dict[str, Any]:
    """lm-eval's generation kwargs for our parameters (it adds the EOS string to `until`)."""
    kwargs: dict[str, Any] = {
        "until": list(params.stop),
        "max_gen_toks": int(params.max_new_tokens),
        "do_sample": params.temperature > 0,
    }
    if params.temperature > 0:
        kwargs.update(temperature=float(params.temperature), top_p=float(params.top_p))
    else:
        kwargs["temperature"] = 0.0
    return kwargs


class LMEvalGenerator(Generator):
    def __init__(self, model: str, chat_template: bool = True, **options: Any):
        registry = _lm_eval_registry()
        try:
            self.lm_class = registry.get_model(model)
        except ValueError as exc:
            import difflib

            known = sorted(registry.MODEL_REGISTRY.keys())
            close = difflib.get_close_matches(model, known, n=3)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            raise UsageError(f"lm-eval: unknown model type {model!r}{hint}; lm-eval has: {', '.join(known)}") from exc
        self.model_type = model
        self.use_chat_template = bool(chat_template)
        if options.get("pretrained") == "embedded":
            from persona_eval.plugins.generators.embedded import ensure_embedded_model

            options["pretrained"] = str(ensure_embedded_model())
        options.setdefault("batch_size", 8)
        self.options = options
        batch = options["batch_size"]
        self.preferred_batch_size = max(8, 4 * batch) if isinstance(batch, int) else 64
        self._lm = None
        self._identity: dict[str, Any] | None = None

    def _load(self):
        if self._lm is None:
            try:
                self._lm = self.lm_class.create_from_arg_obj(dict(self.options))
            except TypeError as exc:
                raise UsageError(f"lm-eval: model {self.model_type!r} rejected its options: {exc}") from exc
            except (OSError, ValueError) as exc:
                raise RunError(f"lm-eval: cannot load {self.model_type!r}: {str(exc).splitlines()[0]}") from exc
        return self._lm

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            from importlib.metadata import version

            from persona_eval.models.fingerprint import model_revision, weights_fingerprint

            options = {k: v for k, v in sorted(self.options.items()) if k not in _SPEED_ONLY}
            pinned: dict[str, str] = {}
            for key in _WEIGHT_OPTIONS:
                value = options.get(key)
                if not isinstance(value, str):
                    continue
                if Path(os.path.expanduser(value)).exists():
                    pinned[key] = f"sha256:{weights_fingerprint(Path(os.path.expanduser(value)))}"
                    options[key] = Path(value).name  # the content hash names it; the path would split caches
                elif key == "pretrained":
                    pinned[key] = model_revision(value, options.get("revision"),
                                                 trust_remote_code=bool(options.get("trust_remote_code")))
            self._identity = {
                "backend": "lm-eval",
                "model": self.model_type,
                "options": options,
                "revision": pinned,
                "chat_template": self.use_chat_template,
                "lm_eval": version("lm_eval"),
            }
        return self._identity

    def render(self, request: GenRequest) -> str:
        lm = self._load()
        tokenizer = getattr(lm, "tokenizer", None)
        has_template = tokenizer is None or bool(getattr(tokenizer, "chat_template", None))
        if self.use_chat_template and has_template:
            messages = [{"role": "user", "content": request.prompt}]
            if request.system:
                messages.insert(0, {"role": "system", "content": request.system})
            if request.response_prefix:
                messages.append({"role": "assistant", "content": request.response_prefix})
            try:
                return lm.apply_chat_template(messages, add_generation_prompt=not request.response_prefix)
            except NotImplementedError:
                pass  # this lm-eval model has no chat support: plain text below
        system = f"{request.system}\n\n" if request.system else ""
        return f"{system}{request.prompt}{request.response_prefix}"

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        if not requests:
            return []
        from lm_eval.api.instance import Instance

        lm = self._load()
        groups: dict[GenParams, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(request.params, []).append(index)
        results: list[GenResult | None] = [None] * len(requests)
        for params, indices in groups.items():
            instances = [
                Instance(request_type="generate_until", doc={}, arguments=(self.render(requests[i]), gen_kwargs(params)),
                         idx=n, metadata=("persona-eval", n, 1))
                for n, i in enumerate(indices)
            ]
            if params.temperature > 0:
                _seed_everything(params.seed)
            texts = lm.generate_until(instances, disable_tqdm=True)
            if len(texts) != len(instances):
                raise RunError(f"lm-eval: {self.model_type} returned {len(texts)} outputs for {len(instances)} requests")
            for i, (text, instance) in enumerate(zip(texts, instances)):
                index = indices[i]
                output_tokens, input_tokens = self._count(lm, text), self._count(lm, instance.arguments[0])
                counted = output_tokens is not None and input_tokens is not None
                results[index] = GenResult(text=text.strip(), finish_reason=None, output_tokens=output_tokens,
                                           input_tokens=input_tokens, usage_source="tokenizer" if counted else None)
        return results  # type: ignore[return-value]

    @staticmethod
    def _count(lm, text: str) -> int | None:
        try:
            return len(lm.tok_encode(text))
        except Exception:  # noqa: BLE001 - API models without a tokenizer cannot count
            return None


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    try:
        import numpy as np
        import torch

        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
    except ImportError:
        pass


@hookimpl
def register_generators(register):
    register("lm-eval", "persona_eval.plugins.generators.lm_eval:LMEvalGenerator", aliases=["lm_eval", "lmeval"],
             description="any model of lm-evaluation-harness's registry (generate_until)")
