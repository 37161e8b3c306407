"""The `hf` generator: Hugging Face transformers, batched, left-padded, chat templates.

Spec: ``hf:NAME_OR_PATH[,dtype=bfloat16][,device=cpu|cuda|auto][,adapter=DIR]
[,batch_size=8|auto][,revision=REV][,chat_template=true|false]``. ``hf:embedded`` is
the embedded SmolLM2-135M-Instruct. Requests are grouped by generation parameters and
sorted by length so each batch pads little; batch_size=auto halves on out-of-memory.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Sequence

from persona_eval.errors import RunError, UsageError
from persona_eval.hookspecs import hookimpl
from persona_eval.interfaces import Generator
from persona_eval.records import GenParams, GenRequest, GenResult
from persona_eval.util import cache_dir, file_hash, stable_hash

logger = logging.getLogger("persona_eval.hf")

_LOADED: dict[tuple, tuple[Any, Any]] = {}
_LOAD_LOCK = threading.Lock()


def weights_fingerprint(folder: Path) -> str:
    """Content hash of a local model folder's weights and config, memoized by size and mtime."""
    files = sorted(
        p for p in folder.iterdir()
        if p.is_file() and (p.suffix in (".safetensors", ".bin", ".gguf") or p.name in ("config.json", "adapter_config.json"))
    )
    memo_path = cache_dir() / "file-hashes.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    parts, changed = [], False
    for path in files:
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in memo:
            memo[key] = file_hash(path)
            changed = True
        parts.append((path.name, memo[key]))
    if changed:
        from persona_eval.util import atomic_write_json

        atomic_write_json(memo_path, memo)
    return stable_hash(parts, 16)


def _resolve_dtype(name: str | None, device: str):
    import torch

    if name in (None, "auto"):
        # On CPU float32 prefill runs ~5x faster than bfloat16 (no native bf16 matmul).
        return torch.float32 if device == "cpu" else torch.bfloat16
    try:
        dtype = getattr(torch, str(name))
    except AttributeError:
        dtype = None
    if not isinstance(dtype, torch.dtype):
        raise UsageError(f"hf: unknown dtype {name!r} (use bfloat16, float16 or float32)")
    return dtype


def _resolve_device(name: str | None) -> str:
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"hf: device {name!r} asked for, but no CUDA GPU is available")
    return str(name)


class HFGenerator(Generator):
    def __init__(
        self,
        model: str,
        dtype: str | None = None,
        device: str | None = None,
        adapter: str | None = None,
        batch_size: int | str = 8,
        revision: str | None = None,
        chat_template: bool = True,
        trust_remote_code: bool = False,
    ):
        self.model_name = model
        if model == "embedded":
            from persona_eval.plugins.embedded_model import MODEL_NAME, ensure_embedded_model

            self.path = str(ensure_embedded_model())
            self.display_name = f"embedded/{MODEL_NAME}"
        else:
            self.path = os.path.expanduser(model)
            self.display_name = model
        self.device = _resolve_device(device)
        self.dtype_name = str(dtype or "auto")
        self.adapter = os.path.abspath(os.path.expanduser(adapter)) if adapter else None
        if self.adapter and not Path(self.adapter, "adapter_config.json").exists():
            raise UsageError(f"hf: adapter folder {self.adapter!r} has no adapter_config.json")
        self.auto_batch = batch_size == "auto"
        self.batch_size = 16 if self.auto_batch else int(batch_size)
        if self.batch_size < 1:
            raise UsageError("hf: batch_size must be a positive integer or 'auto'")
        self.preferred_batch_size = max(self.batch_size, 8)
        self.revision = revision
        self.use_chat_template = bool(chat_template)
        self.trust_remote_code = bool(trust_remote_code)
        self._model = None
        self._tokenizer = None
        self._identity: dict[str, Any] | None = None

    # -- loading -------------------------------------------------------------------------

    def _load(self):
        if self._model is not None:
            return self._model, self._tokenizer
        key = (self.path, self.revision, self.dtype_name, self.device, self.adapter)
        with _LOAD_LOCK:
            if key not in _LOADED:
                _LOADED[key] = self._load_uncached()
        self._model, self._tokenizer = _LOADED[key]
        return self._model, self._tokenizer

    def _load_uncached(self):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dtype = _resolve_dtype(self.dtype_name, self.device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.path, revision=self.revision, trust_remote_code=self.trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(
                self.path, revision=self.revision, dtype=dtype, trust_remote_code=self.trust_remote_code
            )
        except OSError as exc:
            raise RunError(f"hf: cannot load model {self.display_name!r}: {str(exc).splitlines()[0]}") from exc
        if self.adapter:
            try:
                from peft import PeftModel
            except ImportError as exc:
                raise UsageError("hf: adapter= needs peft: pip install 'persona-eval[train]'") from exc
            model = PeftModel.from_pretrained(model, self.adapter)
        model.to(self.device)
        model.eval()
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        torch.set_grad_enabled(False)
        return model, tokenizer

    # -- identity ------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            local = Path(self.path)
            if local.is_dir():
                revision = f"sha256:{weights_fingerprint(local)}"
            else:
                revision = self.revision or "unpinned"
            self._identity = {
                "backend": "hf",
                "model": self.display_name,
                "revision": revision,
                "adapter": f"sha256:{weights_fingerprint(Path(self.adapter))}" if self.adapter else None,
                "dtype": self.dtype_name,
                "chat_template": self.use_chat_template,
            }
        return self._identity

    # -- rendering -----------------------------------------------------------------------

    def render(self, request: GenRequest) -> tuple[str, bool]:
        """The full model input text, and whether it already holds special tokens."""
        _, tokenizer = self._load()
        if self.use_chat_template and tokenizer.chat_template:
            messages = []
            if request.system:
                messages.append({"role": "system", "content": request.system})
            messages.append({"role": "user", "content": request.prompt})
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return text + request.response_prefix, True
        system = f"{request.system}\n\n" if request.system else ""
        return f"{system}{request.prompt}{request.response_prefix}", False

    # -- generation ----------------------------------------------------------------------

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        results: list[GenResult | None] = [None] * len(requests)
        groups: dict[GenParams, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(request.params, []).append(index)
        for params, indices in groups.items():
            rendered = {i: self.render(requests[i]) for i in indices}
            indices.sort(key=lambda i: -len(rendered[i][0]))
            start = 0
            while start < len(indices):
                batch = indices[start : start + self.batch_size]
                try:
                    outputs = self._generate_batch([rendered[i] for i in batch], params)
                except RuntimeError as exc:
                    if self.auto_batch and "out of memory" in str(exc).lower() and self.batch_size > 1:
                        self.batch_size //= 2
                        logger.warning("hf: out of memory; batch size now %d", self.batch_size)
                        self._empty_cache()
                        continue
                    raise
                for i, output in zip(batch, outputs):
                    results[i] = output
                start += len(batch)
        return [r for r in results if r is not None]

    def _empty_cache(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _encode(self, texts: list[tuple[str, bool]]):
        _, tokenizer = self._load()
        specials = texts[0][1]
        encoded = tokenizer([t for t, _ in texts], return_tensors="pt", padding=True, add_special_tokens=not specials)
        return {k: v.to(self.device) for k, v in encoded.items()}

    def _generate_batch(self, texts: list[tuple[str, bool]], params: GenParams) -> list[GenResult]:
        import torch

        model, tokenizer = self._load()
        encoded = self._encode(texts)
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_new_tokens, "pad_token_id": tokenizer.pad_token_id}
        if params.temperature > 0:
            torch.manual_seed(params.seed)
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=tokenizer)
        with torch.inference_mode():
            output = model.generate(**encoded, **kwargs)
        new_tokens = output[:, encoded["input_ids"].shape[1] :]
        eos_ids = _eos_ids(model, tokenizer)
        results = []
        for row in new_tokens.tolist():
            # Finished rows are padded after their end-of-sequence token: cut at the first one.
            end = next((i for i, token in enumerate(row) if token in eos_ids), None)
            length = len(row) if end is None else end
            text = tokenizer.decode(row[:length], skip_special_tokens=True)
            finish = "stop" if end is not None or length < params.max_new_tokens else "length"
            for stop in params.stop:
                cut = text.find(stop)
                if cut >= 0:
                    text, finish = text[:cut], "stop"
            results.append(GenResult(text=text.strip(), finish_reason=finish, output_tokens=length))
        return results

    # -- log-probabilities ---------------------------------------------------------------

    def choice_probs(self, requests: Sequence[GenRequest], choices: Sequence[str]) -> list[dict[str, float]]:
        import torch

        model, tokenizer = self._load()
        choice_ids = []
        for choice in choices:
            ids = {tokenizer.encode(variant, add_special_tokens=False)[0] for variant in (choice, " " + choice)}
            choice_ids.append(sorted(ids))
        out: list[dict[str, float]] = []
        texts = [self.render(r) for r in requests]
        for start in range(0, len(texts), self.batch_size):
            encoded = self._encode(texts[start : start + self.batch_size])
            with torch.inference_mode():
                logits = model(**encoded, logits_to_keep=1).logits[:, -1, :].float()
            probs = torch.softmax(logits, dim=-1)
            for row in probs:
                mass = [float(row[ids].sum()) for ids in choice_ids]
                total = sum(mass) or 1.0
                out.append({c: m / total for c, m in zip(choices, mass)})
        return out


def _eos_ids(model, tokenizer) -> set[int]:
    ids = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


@hookimpl
def register_generators(register):
    register("hf", HFGenerator, aliases=["transformers", "huggingface"], description="Hugging Face transformers")
