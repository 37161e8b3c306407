"""Generation throughput of the `hf` backend against raw `model.generate` and lm-eval's `hf` model.

    python bench/generation.py [--prompts 64] [--batch-size 8] [--max-new-tokens 32] [--rounds 2]
                               [--threads N] [--device cpu] [--model embedded] [--check]

The workload is the demo task's persona-tailoring inputs (strategy `pt`, chosen personas),
64 by default, answered greedily. Three ways generate them with the same weights, the
same chat template, the same batch size and the same longest-first batching:

1. raw: the chat template, the tokenizer and ``model.generate`` called by hand;
2. persona-eval: ``HFGenerator.generate`` (the `hf` backend, as a run uses it);
3. lm-eval: lm-evaluation-harness's ``HFLM.generate_until`` on the same rendered inputs.

The inputs are sorted longest first and cut into batches once; every backend gets the
same batches. Timing is interleaved batch by batch, in an order that rotates, so a change
in machine load hits all three alike; each batch's best time over ``--rounds`` counts.
Throughput is generated tokens per second (each backend's own count; greedy outputs
are compared too). Targets: persona-eval/raw >= 0.95 and persona-eval/lm-eval >= 1.0;
``--check`` exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def workload(n: int, max_new_tokens: int):
    from persona_eval.contracts.records import GenParams, GenRequest
    from persona_eval.rendering.prompts import render_input
    from persona_eval.taskfile.loading import resolve_task

    task = resolve_task("demo")
    examples = task.load("test") + task.load("train")
    params = GenParams(max_new_tokens=max_new_tokens)
    requests = []
    for i in range(n):
        example = examples[i % len(examples)]
        persona = example.chosen_persona if (i // len(examples)) % 2 == 0 else example.rejected_persona
        prompt = render_input(task.spec.prompts, "pt", example, persona)
        requests.append(GenRequest(id=f"{example.id}-{i}", prompt=prompt, params=params, system=task.spec.system_prompt))
    return requests


def run_raw(model, tokenizer, requests, batch_size: int, max_new_tokens: int):
    """What one would write by hand: template, sort longest first, left-pad, generate, decode."""
    import torch

    from persona_eval.rendering.chat import render_request

    texts = [render_request(tokenizer, r, True)[0] for r in requests]
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    eos = {tokenizer.eos_token_id, model.generation_config.eos_token_id}
    outputs: list[str] = [""] * len(texts)
    tokens = 0
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        encoded = tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                 top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id)
        for i, row in zip(batch, out[:, encoded["input_ids"].shape[1]:].tolist()):
            length = next((j for j, t in enumerate(row) if t in eos), len(row))
            tokens += length
            outputs[i] = tokenizer.decode(row[:length], skip_special_tokens=True).strip()
    return outputs, tokens


def run_ours(generator, requests):
    results = generator.generate(requests)
    return [r.text for r in results], sum(r.output_tokens or 0 for r in results)


def run_lm_eval(lm, tokenizer, requests, max_new_tokens: int):
    from lm_eval.api.instance import Instance

    from persona_eval.rendering.chat import render_request

    kwargs = {"until": [], "max_gen_toks": max_new_tokens, "do_sample": False, "temperature": 0.0}
    instances = [
        Instance(request_type="generate_until", doc={}, arguments=(render_request(tokenizer, r, True)[0], dict(kwargs)),
                 idx=i, metadata=("bench", i, 1))
        for i, r in enumerate(requests)
    ]
    texts = lm.generate_until(instances, disable_tqdm=True)
    return [t.strip() for t in texts], sum(len(tokenizer.encode(t, add_special_tokens=False)) for t in texts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="embedded", help="hf model name or path (default: the embedded model)")
    parser.add_argument("--no-lm-eval", action="store_true", help="skip the lm-eval comparison")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args(argv)

    import torch

    from persona_eval.plugins.generators.hf import HFGenerator

    if args.threads:
        torch.set_num_threads(args.threads)
    requests = workload(args.prompts, args.max_new_tokens)
    generator = HFGenerator(args.model, batch_size=args.batch_size, device=args.device, dtype="float32")
    model, tokenizer = generator._load()

    runners = {
        "raw": lambda reqs: run_raw(model, tokenizer, reqs, args.batch_size, args.max_new_tokens),
        "persona-eval": lambda reqs: run_ours(generator, reqs),
    }
    if not args.no_lm_eval:
        try:
            import lm_eval.models  # noqa: F401 - fills lm-eval's registry
            from lm_eval.api.registry import get_model
        except ImportError:
            print("lm-eval is not installed: skipping that comparison (pip install 'persona-eval[lm-eval]')")
        else:
            lm = get_model("hf")(pretrained=generator.path, dtype="float32", device=args.device, batch_size=args.batch_size)
            runners["lm-eval"] = lambda reqs: run_lm_eval(lm, tokenizer, reqs, args.max_new_tokens)

    from persona_eval.rendering.chat import render_request

    order = sorted(range(len(requests)), key=lambda i: -len(render_request(tokenizer, requests[i], True)[0]))
    batches = [[requests[i] for i in order[k : k + args.batch_size]] for k in range(0, len(order), args.batch_size)]
    names = list(runners)
    for name in names:  # warm-up: first-call costs stay out of the timings
        runners[name](batches[-1])
    per_batch: dict[str, list[float]] = {name: [float("inf")] * len(batches) for name in names}
    outputs: dict[str, dict[str, str]] = {name: {} for name in names}
    tokens: dict[str, int] = {name: 0 for name in names}
    for round_index in range(args.rounds):
        for b, batch in enumerate(batches):
            shift = (b + round_index) % len(names)
            for name in names[shift:] + names[:shift]:
                started = time.perf_counter()
                texts, count = runners[name](batch)
                per_batch[name][b] = min(per_batch[name][b], time.perf_counter() - started)
                if round_index == 0:
                    tokens[name] += count
                    outputs[name].update({r.id: t for r, t in zip(batch, texts)})
    best = {name: sum(per_batch[name]) for name in names}
    outputs = {name: [outputs[name][r.id] for r in requests] for name in names}  # type: ignore[misc]

    rate = {name: tokens[name] / best[name] for name in runners}
    print(f"generation throughput: {args.prompts} prompts, batch size {args.batch_size}, max_new_tokens "
          f"{args.max_new_tokens}, device {args.device}, torch threads {torch.get_num_threads()}, "
          f"{len(batches)} batches, each batch's best of {args.rounds} rounds, model {generator.display_name}")
    for name in runners:
        same = sum(a == b for a, b in zip(outputs[name], outputs["persona-eval"]))
        print(f"  {name:<13} {rate[name]:8.1f} tokens/s  ({tokens[name]} tokens in {best[name]:.2f} s; "
              f"{same}/{len(requests)} outputs identical to persona-eval's)")
    figures = {"persona-eval/raw": rate["persona-eval"] / rate["raw"]}
    targets = {"persona-eval/raw": 0.95, "persona-eval/lm-eval": 1.0}
    if "lm-eval" in rate:
        figures["persona-eval/lm-eval"] = rate["persona-eval"] / rate["lm-eval"]
    missed = False
    for name, value in figures.items():
        ok = value >= targets[name]
        missed |= not ok
        print(f"  ratio {name:<22} {value:.3f}  (target >= {targets[name]}: {'met' if ok else 'MISSED'})")
    if args.json:
        print(json.dumps({"tokens_per_s": rate, "seconds": best, "tokens": tokens, "ratios": figures,
                          "prompts": args.prompts, "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
                          "threads": torch.get_num_threads(), "device": args.device}))
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
