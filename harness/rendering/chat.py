"""`render_request`: a request's full model input, through the tokenizer's chat template.

One function for every path that feeds a local model the same way: the `hf` and `vllm`
generators and the trainers' datasets (`trainers.data`), so a model is trained on exactly
what evaluation gives it. Without a chat template (or with ``chat_template=false``) system
text, prompt and response prefix are joined as plain text; a template that rejects a system
turn gets the system text folded into the user turn. A raw request (``GenRequest.raw``, e.g. the
paper judge's fastchat "mistral" string) is already the model's whole input: it is sent as it is.
"""

from __future__ import annotations

from persona_eval.contracts.records import GenRequest


def render_request(tokenizer, request: GenRequest, use_chat_template: bool = True) -> tuple[str, bool]:
    """The full model input text for a request, and whether it already holds special tokens.

    Module-level so the trainers render training inputs with this very function. A chat
    template that rejects a system turn (some do) gets the system text folded into the
    user turn instead.
    """
    if request.raw:
        # Already formatted by whoever built it (no template, no system text to add). Not marked
        # as holding special tokens, so the tokenizer adds its BOS as vLLM does for a text prompt.
        return request.prompt + request.response_prefix, False
    if use_chat_template and tokenizer.chat_template:
        messages = [{"role": "user", "content": request.prompt}]
        if request.system:
            messages.insert(0, {"role": "system", "content": request.system})
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # noqa: BLE001 - jinja's TemplateError, raised by the template itself
            if not request.system or "system" not in str(exc).lower():
                raise
            folded = [{"role": "user", "content": f"{request.system}\n\n{request.prompt}"}]
            text = tokenizer.apply_chat_template(folded, tokenize=False, add_generation_prompt=True)
        return text + request.response_prefix, True
    system = f"{request.system}\n\n" if request.system else ""
    return f"{system}{request.prompt}{request.response_prefix}", False
