"""The `hf` generator: Hugging Face transformers, batched, left-padded, chat templates.

Spec: ``hf:NAME_OR_PATH[,dtype=bfloat16][,device=cpu|cuda|auto][,adapter=DIR][,batch_size=8|auto]
[,revision=REV][,chat_template=true|false][,merge_adapter=true][,threads=auto|N]``; ``hf:embedded``
is the embedded SmolLM2-135M-Instruct. Requests are grouped by generation parameters and sorted by
length so each batch pads little; batch_size=auto halves on out-of-memory. Greedy unless the
temperature is above zero; then each request samples from its own seeded generator (`sampling`),
whatever its batch mates. On CPU, threads=auto fits torch's thread count to the CPUs other processes
leave free (`torch_threads`); the count changes speed only, so it is not part of the identity.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Sequence

from persona_eval.contracts.hookspecs import hookimpl
from persona_eval.contracts.interfaces import Generator
from persona_eval.contracts.records import GenParams, GenRequest, GenResult
from persona_eval.display.quiet import library_bars_off
from persona_eval.errors import RunError, UsageError
from persona_eval.models.fingerprint import model_revision, unprepared_folders, weights_fingerprint
from persona_eval.plugins.generators.common import adapter_folder, model_location
from persona_eval.plugins.generators.sampling import (
    choice_token_ids,
    hf_generate_settings,
    make_seeded_sampler,
    request_seed,
    unapplied_params,
)
from persona_eval.plugins.generators.torch_threads import ThreadPolicy, parse_threads, prefer_sleeping_waits
from persona_eval.rendering.chat import render_request

logger = logging.getLogger(__name__)


_LOADED: dict[tuple, tuple[Any, Any]] = {}


_LOAD_LOCK = threading.Lock()


AUTO_BATCH_START = {"cpu": 16, "cuda": 64}


def _resolve_dtype(name: str | None, device: str):
    import torch

    if name in (None, "auto"):
        # On CPU float32 prefill runs ~5x faster than bfloat16 (no native bf16 matmul).
        if device == "cpu":
            return torch.float32
        if device.startswith("cuda") and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    try:
        dtype = getattr(torch, str(name))
    except AttributeError:
        dtype = None
    if not isinstance(dtype, torch.dtype):
        raise UsageError(f"hf: unknown dtype {name!r} (use bfloat16, float16 or float32)")
    return dtype


def _torch_is_cpu_only() -> bool:
    """True when the installed torch cannot see a GPU whatever the machine has: a CPU-only Linux build.

    Read from the package's files, without importing torch (3-5 s on a small machine, more than a
    whole dry-run plan may take). A CUDA or ROCm build ships libtorch_cuda / libtorch_hip; macOS
    (MPS) and anything unsure answer False, and the caller asks torch itself.
    """
    import importlib.util

    if sys.platform != "linux":
        return False
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False
    lib = Path(list(spec.submodule_search_locations)[0]) / "lib"
    if not lib.is_dir():
        return False
    return not any(lib.glob("libtorch_cuda*")) and not any(lib.glob("libtorch_hip*"))


def _dtype_label(name: str | None, device: str) -> str:
    """The dtype `_resolve_dtype` gives, as its name ("float32"), without importing torch where it can."""
    if (name in (None, "auto") and device == "cpu") or name in ("float32", "float16", "bfloat16"):
        return "float32" if name in (None, "auto") else str(name)
    return str(_resolve_dtype(name, device)).replace("torch.", "")


def _resolve_device(name: str | None) -> str:
    # Once torch is imported, asking it costs nothing and is the authority.
    if name in (None, "auto", "cpu") and "torch" not in sys.modules and _torch_is_cpu_only():
        return "cpu"
    import torch

    if name in (None, "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"hf: device {name!r} asked for, but no CUDA GPU is available")
    try:
        # torch parses the name ("cpu", "cuda:1", "mps", ...) here, at construction: a typo
        # fails before the run folder exists, not when the weights are moved.
        torch.device(str(name))
    except (RuntimeError, TypeError) as exc:
        raise UsageError(f"hf: device {str(name)[:40]!r} is not a torch device (cpu, cuda, cuda:N, mps, ...)") from exc
    return str(name)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class HFGenerator(Generator):
    # A raw request (the paper judge's fastchat string) is tokenized as it is, BOS added, as vLLM does.
    accepts_raw_prompt = True

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
        merge_adapter: bool = True,
        threads: int | str = "auto",
    ):
        self.model_name = model
        threads = parse_threads("hf", threads)
        if threads == "auto":
            prefer_sleeping_waits()  # before anything below imports torch
        self.path, self.display_name = model_location(model)
        self.device = _resolve_device(device)
        self.threads = ThreadPolicy(threads, self.device)
        self.dtype_name = str(dtype or "auto")
        _dtype_label(self.dtype_name, self.device)  # a bad dtype fails now, not after loading
        self.adapter = adapter_folder("hf", adapter)
        self.auto_batch = batch_size == "auto"
        if self.auto_batch:
            self.batch_size = AUTO_BATCH_START.get(self.device.split(":")[0], 16)
        else:
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
                raise UsageError(f"hf: batch_size must be a positive integer or 'auto', not {batch_size!r}")
            self.batch_size = batch_size
        # Handing the generator several batches at once lets it sort them by length.
        self.preferred_batch_size = min(256, max(8, 4 * self.batch_size))
        self.revision = None if revision is None else str(revision)
        self.use_chat_template = bool(chat_template)
        self.trust_remote_code = bool(trust_remote_code)
        self.merge_adapter = bool(merge_adapter)
        self._model = None
        self._tokenizer = None
        self._eos: set[int] = set()
        self._identity: dict[str, Any] | None = None

    # -- loading -------------------------------------------------------------------------

    def _load(self):
        if self._model is not None:
            return self._model, self._tokenizer
        key = (self.path, self.revision, self.dtype_name, self.device, self.adapter, self.merge_adapter)
        with _LOAD_LOCK:
            if key not in _LOADED:
                _LOADED[key] = self._load_uncached()
        self._model, self._tokenizer = _LOADED[key]
        self._eos = _eos_ids(self._model, self._tokenizer)
        return self._model, self._tokenizer

    def _load_uncached(self):
        # Loading runs under our progress display, which the libraries' own bars ("Loading weights",
        # downloads) would break into. Their warnings stay visible: about a user's model, they are the user's.
        with library_bars_off():
            model, tokenizer = self._read_weights()
        model.to(self.device)
        model.eval()
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise RunError(f"hf: tokenizer of {self.display_name!r} has neither a pad nor an end-of-sequence token")
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer

    def _read_weights(self):
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
            try:
                with warnings.catch_warnings():
                    # peft asks transformers for a property it has deprecated: nothing the user can act on.
                    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                                            category=FutureWarning)
                    model = PeftModel.from_pretrained(model, self.adapter)
            except Exception as exc:  # noqa: BLE001 - a mismatched adapter is the user's to fix
                raise UsageError(f"hf: cannot apply adapter to {self.display_name!r}: {type(exc).__name__}: {exc}",
                                 where=self.adapter) from exc
            if self.merge_adapter:
                # Folding LoRA into the weights makes generation as fast as the base model.
                model = model.merge_and_unload()
        return model, tokenizer

    # -- identity ------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            self._identity = {
                "backend": "hf",
                "model": self.display_name,
                "revision": model_revision(self.path, self.revision, trust_remote_code=self.trust_remote_code),
                "adapter": f"sha256:{weights_fingerprint(Path(self.adapter))}" if self.adapter else None,
                # The dtype actually used: "auto" means float32 on CPU but bfloat16 on a GPU.
                "dtype": _dtype_label(self.dtype_name, self.device),
                "chat_template": self.use_chat_template,
            }
        return self._identity

    def context_length(self) -> int | None:
        """The model's position limit from its config.json (read without the weights), or None."""
        if not hasattr(self, "_context_length"):
            self._context_length = None
            if self.path in unprepared_folders():
                return None  # a dry-run plan before the first run made the folder: nothing to read
            local = Path(self.path) / "config.json"
            if local.is_file() and not self.trust_remote_code:
                # A local folder: its config.json read directly (transformers costs seconds to import).
                try:
                    config = json.loads(local.read_text(encoding="utf-8"))
                    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
                        value = config.get(name)
                        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                            self._context_length = value
                            return value
                except (OSError, ValueError, AttributeError):
                    pass
            try:
                from transformers import AutoConfig

                config = AutoConfig.from_pretrained(self.path, revision=self.revision, trust_remote_code=self.trust_remote_code)
                for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
                    value = getattr(config, name, None)
                    if isinstance(value, int) and value > 0:
                        self._context_length = value
                        break
            except Exception:  # noqa: BLE001 - unknown is allowed: the harness then checks nothing
                pass
        return self._context_length

    # -- rendering -----------------------------------------------------------------------

    def render(self, request: GenRequest) -> tuple[str, bool]:
        """The full model input text, and whether it already holds special tokens."""
        _, tokenizer = self._load()
        return render_request(tokenizer, request, self.use_chat_template)

    def render_input(self, request: GenRequest) -> str:
        """What `render` gives, from the tokenizer alone: the weights stay unloaded (a raw prompt needs neither)."""
        tokenizer = self._tokenizer if self._tokenizer is not None else getattr(self, "_input_tokenizer", None)
        if tokenizer is None and not request.raw:
            from transformers import AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(self.path, revision=self.revision, trust_remote_code=self.trust_remote_code)
            except OSError as exc:
                raise RunError(f"hf: cannot load the tokenizer of {self.display_name!r}: {str(exc).splitlines()[0]}") from exc
            self._input_tokenizer = tokenizer
        return render_request(tokenizer, request, self.use_chat_template)[0]

    def unapplied_params(self, params: GenParams) -> list[str]:
        """The settings of `params` this backend cannot apply (none: transformers takes them all)."""
        return unapplied_params("hf", params)

    def count_input_tokens(self, requests: Sequence[GenRequest]) -> list[int] | None:
        """Input tokens of each request as `generate` sends it, from the tokenizer alone (for the dry-run plan).

        Never downloads and loads no weights: None where the tokenizer is not on this machine.
        """
        tokenizer = self._tokenizer if self._tokenizer is not None else getattr(self, "_input_tokenizer", None)
        if tokenizer is None and self.path in unprepared_folders():
            return None  # not made yet (a dry-run plan before the first run): the plan estimates
        if tokenizer is None and self.revision is None and not self.trust_remote_code:
            # A local folder's tokenizer.json without transformers (and torch): the plan stays fast.
            from persona_eval.rendering.light_tokenizer import light_tokenizer

            tokenizer = light_tokenizer(self.path)
            if tokenizer is not None:
                self._input_tokenizer = tokenizer
        if tokenizer is None:
            try:
                from transformers import AutoTokenizer

                with library_bars_off():
                    tokenizer = AutoTokenizer.from_pretrained(self.path, revision=self.revision, local_files_only=True,
                                                              trust_remote_code=self.trust_remote_code)
            except Exception:  # noqa: BLE001 - not at hand: the plan then estimates from characters
                return None
            self._input_tokenizer = tokenizer
        counts = []
        for request in requests:
            text, specials = (request.prompt, False) if request.raw else render_request(tokenizer, request, self.use_chat_template)
            counts.append(len(tokenizer(text, add_special_tokens=not specials)["input_ids"]))
        return counts

    # -- generation ----------------------------------------------------------------------

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        self.threads.apply()
        results: list[GenResult | None] = [None] * len(requests)
        groups: dict[GenParams, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(request.params, []).append(index)
        for params, indices in groups.items():
            rendered = {i: self.render(requests[i]) for i in indices}
            # Longest first: similar lengths share a batch, and an OOM shows up at once.
            indices.sort(key=lambda i: -len(rendered[i][0]))
            ordered = [rendered[i] for i in indices]
            outputs = self._batched(ordered, lambda chunk: self._generate_batch(chunk, params))
            for i, output in zip(indices, outputs):
                results[i] = output
        missing = [requests[i].id for i, r in enumerate(results) if r is None]
        if missing:
            raise RunError(f"hf: no output for item(s) {', '.join(missing[:5])}")
        return results  # type: ignore[return-value]

    def _batched(self, items: list, run) -> list:
        """`run` over consecutive batches; with batch_size=auto, an out-of-memory batch is halved and retried."""
        out: list = []
        start = 0
        while start < len(items):
            batch = items[start : start + self.batch_size]
            try:
                outputs = run(batch)
            except RuntimeError as exc:
                if not _is_oom(exc):
                    raise
                self._empty_cache()
                if self.auto_batch and len(batch) > 1:
                    self.batch_size = max(1, len(batch) // 2)
                    logger.warning("hf: out of memory; batch size now %d", self.batch_size)
                    continue
                hint = "even one request at a time" if len(batch) == 1 else "use batch_size=auto or a smaller batch_size"
                raise RunError(f"hf: out of memory running {self.display_name!r} ({hint})") from exc
            out.extend(outputs)
            start += len(batch)
        return out

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
        # The model's generation_config may carry sampling defaults; null them so that only
        # our parameters decide (greedy, or our per-request sampler below).
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        # min_new_tokens / repetition_penalty, where the task sets them (transformers' own processors,
        # which run before our sampler below).
        kwargs.update(hf_generate_settings(params))
        if params.temperature > 0:
            seeds = [request_seed(params.seed, text) for text, _ in texts]
            kwargs["logits_processor"] = [make_seeded_sampler(seeds, params.temperature, params.top_p, self.device)]
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=tokenizer)
        with torch.inference_mode():
            output = model.generate(**encoded, **kwargs)
        new_tokens = output[:, encoded["input_ids"].shape[1] :]
        results = [self._decode_row(row, params) for row in new_tokens.tolist()]
        # Each row's own input tokens: the attention mask is 0 on its left padding only.
        mask = encoded.get("attention_mask")
        lengths = mask.sum(dim=1).tolist() if mask is not None else [encoded["input_ids"].shape[1]] * len(results)
        for result, length in zip(results, lengths):
            result.input_tokens, result.usage_source = int(length), "tokenizer"
        return results

    def _decode_row(self, row: list[int], params: GenParams) -> GenResult:
        _, tokenizer = self._load()
        # A row that finished early is padded to the batch's length, after its
        # end-of-sequence token (or, when a stop string ended it, right after that).
        ends = self._eos | ({tokenizer.pad_token_id} if tokenizer.pad_token_id is not None else set())
        end = next((i for i, token in enumerate(row) if token in ends), None)
        length = len(row) if end is None else end
        text = tokenizer.decode(row[:length], skip_special_tokens=True)
        finish = "stop" if end is not None or length < params.max_new_tokens else "length"
        cut = min((found for found in (text.find(stop) for stop in params.stop if stop) if found >= 0), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
        return GenResult(text=text.strip(), finish_reason=finish, output_tokens=length)

    # -- log-probabilities ---------------------------------------------------------------

    def choice_probs(self, requests: Sequence[GenRequest], choices: Sequence[str]) -> list[dict[str, float]]:
        import torch

        model, tokenizer = self._load()
        self.threads.apply()
        choice_ids = choice_token_ids(tokenizer, choices)
        texts = [self.render(r) for r in requests]

        def run(chunk):
            encoded = self._encode(chunk)
            with torch.inference_mode():
                logits = model(**encoded, logits_to_keep=1).logits[:, -1, :].float()
            probs = torch.softmax(logits, dim=-1)
            found = []
            for row in probs:
                mass = [float(row[ids].sum()) for ids in choice_ids]
                total = sum(mass) or 1.0
                found.append({c: m / total for c, m in zip(choices, mass)})
            return found

        return self._batched(texts, run) if texts else []


def _eos_ids(model, tokenizer) -> set[int]:
    ids = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
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
