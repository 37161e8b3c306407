"""`LightTokenizer`: a model folder's tokenizer and chat template without transformers (or torch).

The dry-run plan counts the input tokens of every request. Importing transformers pulls in
torch (3-5 s on a small machine), more than the whole plan may take, so for a local folder
holding a ``tokenizer.json`` we read it with the `tokenizers` library (what transformers'
fast tokenizers run on) and render the chat template with jinja2 the way transformers does
(sandboxed, ``trim_blocks``/``lstrip_blocks``, ``raise_exception``, ``strftime_now``, a
``tojson`` filter). The object offers the three things `rendering.chat.render_request` and
a token count use: ``chat_template``, ``apply_chat_template`` and calling it on a text.
Anything it cannot do (a template using transformers-only tags, a folder without
``tokenizer.json``) makes `light_tokenizer` return None, and the caller uses transformers.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any


def _special(value: Any) -> str | None:
    # tokenizer_config.json writes a special token as a string or as an AddedToken dict.
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class LightTokenizer:
    def __init__(self, tokenizer, template_text: str | None, specials: dict[str, str]):
        self._tokenizer = tokenizer
        self.chat_template = template_text
        self._specials = specials
        self._template = None
        if template_text:
            import jinja2.ext
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            def raise_exception(message):
                raise jinja2.exceptions.TemplateError(message)

            def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
                return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
            env.filters["tojson"] = tojson
            env.globals["raise_exception"] = raise_exception
            env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
            self._template = env.from_string(template_text)

    def apply_chat_template(self, messages, tokenize: bool = False, add_generation_prompt: bool = True) -> str:
        if tokenize or self._template is None:
            raise ValueError("LightTokenizer renders text only, and only with a chat template")
        return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt, **self._specials)

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids}


def light_tokenizer(path: str | Path) -> LightTokenizer | None:
    """The folder's tokenizer without transformers, or None where it needs transformers."""
    folder = Path(path)
    if not (folder / "tokenizer.json").is_file():
        return None
    try:
        from tokenizers import Tokenizer

        config = {}
        if (folder / "tokenizer_config.json").is_file():
            config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        template = config.get("chat_template")
        if (folder / "chat_template.jinja").is_file():  # transformers >= 4.43 writes it beside the config
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        if template is not None and not isinstance(template, str):
            return None  # named templates (a list): transformers picks among them
        specials = {name: token for name in ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token",
                                             "cls_token", "mask_token")
                    if (token := _special(config.get(name))) is not None}
        return LightTokenizer(Tokenizer.from_file(str(folder / "tokenizer.json")), template, specials)
    except Exception:  # noqa: BLE001 - a template transformers alone compiles, a newer tokenizer format
        return None
