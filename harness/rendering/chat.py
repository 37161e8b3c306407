"""The `hf` generator: Hugging Face transformers, batched, left-padded, chat templates.

Spec: ``hf:NAME_OR_PATH[,dtype=bfloat16][,device=cpu|cuda|auto][,adapter=DIR]
[,batch_size=8|auto][,revision=REV][,chat_template=true|false][,merge_adapter=true]
[,threads=auto|N]``.
``hf:embedded`` is the embedded SmolLM2-135M-Instruct. Requests are grouped by
generation parameters and sorted by length so each batch pads little; batch_size=auto
halves on out-of-memory. Greedy unless the temperature is above zero; sampling draws
each request's tokens from its own generator seeded by (seed, rendered input), so a
sampled answer does not depend on which other requests share its batch. On CPU,
threads=auto fits torch's thread count to the CPUs other processes leave free (see
`torch_threads`); the count changes speed only, so it is not part of the identity.

Also home to the helpers other local-weights backends share: `weights_fingerprint`
and `model_revision` (what goes into an identity), and `render_request`.
"""

from __future__ import annotations

import logging

from persona_eval.contracts.records import GenRequest

logger = logging.getLogger("persona_eval.hf")


def render_request(tokenizer, request: GenRequest, use_chat_template: bool = True) -> tuple[str, bool]:
    """The full model input text for a request, and whether it already holds special tokens.

    Module-level so the trainers render training inputs with this very function. A chat
    template that rejects a system turn (some do) gets the system text folded into the
    user turn instead.
    """
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
