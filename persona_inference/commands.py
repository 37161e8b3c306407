"""CLI commands of persona inference: `persona-eval infer`, `pi-accuracy` and `analyze`.

`add_commands` adds them to the CLI; the plugin `persona_eval.plugins.commands.infer` calls it
from its `register_commands` hook. Each command only parses options and imports its machinery
when it runs (`infer_file` and `export`, `accuracy`, `bias`), so `persona-eval --help` stays light.
"""

from __future__ import annotations

import json
from pathlib import Path

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")


def _records_or_task(source: str, include_paths, partition: str):
    """('records', [(where, record)]) for a data file, ('task', Task) for a task name or YAML."""
    from persona_eval.errors import UsageError
    from persona_eval.persona_inference.pairs import read_local_records
    from persona_eval.taskfile.loading import resolve_task

    path = Path(source).expanduser()
    if path.suffix.lower() in DATA_SUFFIXES:
        if not path.is_file():
            raise UsageError("data file not found", where=str(path))
        return "records", read_local_records(path)
    task = resolve_task(source, list(include_paths))
    if not task.has_partition(partition):
        raise UsageError(f"task {task.name!r} has no {partition!r} data", where=str(task.path))
    return "task", task


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    counts = summary["counts"]
    table = Table("", "count", title=f"persona inference -> {summary['output']}")
    rows = [
        ("items (pairs)", counts["items"]),
        ("  kept (both personas valid)", counts["items_kept"]),
        ("  dropped", counts["items_dropped"]),
        ("personas", counts["personas"]),
        ("  kept", counts["kept"]),
        ("  re-asked", counts["reasked"]),
        ("  dropped: protected attribute", counts["dropped_protected"]),
        ("  dropped: format", counts["dropped_format"]),
        ("  flagged protected (any attempt)", counts["flagged_protected"]),
        ("  flagged adversarial", counts["flagged_adversarial"]),
        ("resumed from earlier runs (items)", summary["resumed"]),
    ]
    requests = counts.get("requests_this_run") or {}
    if requests:
        rows.append(("model requests this run (cached)", f"{requests.get('requests', 0)} ({requests.get('cached', 0)})"))
        if "input_tokens" in requests:
            rows.append(("  tokens of the new ones (in / out)", f"{requests['input_tokens']} / {requests.get('output_tokens', 0)}"))
    for name, value in rows:
        table.add_row(name, str(value))
    console = Console(stderr=True)
    console.print(table)
    if summary.get("dropped_file"):
        console.print(f"dropped items (with their candidates and reasons): {summary['dropped_file']}")


def add_commands(cli):
    """Add `infer`, `pi-accuracy` and `analyze` to the `persona-eval` group."""
    import click

    from persona_eval.executors import EXECUTOR_HELP
    from persona_eval.limits import bounded
    from persona_eval.persona_inference import defaults as pi

    @cli.command()
    @click.argument("source")
    @click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Persona-augmented JSON Lines file (resumed if it exists).")
    @click.option("--model", default="hf:embedded", show_default=True, help="PI model spec (any generator backend).")
    @click.option("--hf-config", default=None, help="Hugging Face dataset config.")
    @click.option("--hf-split", default=None, help="Hugging Face dataset split (default: train).")
    @click.option("--revision", default=None, help="Hugging Face dataset revision (commit, tag or branch).")
    @click.option("--prompt-field", default="prompt", show_default=True, help="Field holding the prompt (absent: split HH-style dialogues).")
    @click.option("--chosen-field", default="chosen", show_default=True)
    @click.option("--rejected-field", default="rejected", show_default=True)
    @click.option("--id-field", default="id", show_default=True, help="Field holding a unique item id (absent: row-N).")
    @click.option("--k", "k", type=bounded("k"), default=pi.K, show_default=True, help="Few-shot exemplars per prompt (the paper: 5).")
    @click.option("--exemplars", type=click.Path(dir_okay=False), default=None, help="Exemplars file (YAML or JSONL); default: ours.")
    @click.option("--max-attempts", type=bounded("max_attempts"), default=pi.MAX_ATTEMPTS, show_default=True, help="Asks per persona before it is dropped.")
    @click.option("--max-new-tokens", type=bounded("max_new_tokens"), default=pi.MAX_NEW_TOKENS, show_default=True, help="The paper: 200 (at least 5).")
    @click.option("--temperature", type=bounded("temperature"), default=pi.TEMPERATURE, show_default=True, help="First attempt; re-asks sample at >= 0.7.")
    @click.option("--seed", type=bounded("seed"), default=0, show_default=True)
    @click.option("--max-response-chars", type=bounded("max_response_chars"), default=pi.MAX_RESPONSE_CHARS, show_default=True, help="Clip each response in the prompt (0 = never, as the paper).")
    @click.option("--cut", type=click.Choice(pi.CUTS), default=pi.CUT, show_default=True, help="Keep the answer's first line (the paper) or first sentence.")
    @click.option("--prefix/--no-prefix", "use_prefix", default=pi.USE_PREFIX, show_default=True,
                  help="Make the reply begin with 'The user is' (helps small models; the paper does not).")
    @click.option("--chosen-persona-field", default="chosen_persona", show_default=True, help="Output field of the chosen persona.")
    @click.option("--rejected-persona-field", default="rejected_persona", show_default=True, help="Output field of the rejected persona.")
    @click.option("--limit", type=bounded("limit"), default=None, help="Only the first N pairs (0 = all).")
    @click.option("--parquet", type=click.Path(dir_okay=False), default=None, help="Also write the output as Parquet.")
    @click.option("--push-to-hub", "hub_repo", default=None, help="Also push the output to this Hugging Face dataset repo.")
    @click.option("--public", is_flag=True, help="With --push-to-hub: make the repo public (default private).")
    @click.option("--no-cache", is_flag=True, help="Neither read nor write the result cache.")
    @click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
    @click.option("--quiet", is_flag=True, help="No progress display.")
    @click.option("--executor", default="local", show_default=True, metavar="local|ray[,KEY=VALUE...]", help=EXECUTOR_HELP)
    @click.option("--dry-run", is_flag=True, help="Print the plan (calls, cached, estimated tokens and cost) and exit: nothing is written.")
    @click.option("--price", "prices", multiple=True, metavar="MODEL=IN_PER_1M:OUT_PER_1M",
                  help="Dollars per million input:output tokens of a model spec, for --dry-run; repeatable (also: $PERSONA_EVAL_PRICES).")
    def infer(source, output, model, hf_config, hf_split, revision, prompt_field, chosen_field, rejected_field, id_field, k,
              exemplars, max_attempts, max_new_tokens, temperature, seed, max_response_chars, cut, use_prefix, chosen_persona_field,
              rejected_persona_field, limit, parquet, hub_repo, public, no_cache, as_json, quiet, executor, dry_run, prices):
        """Infer the chosen and rejected persona of every preference pair in SOURCE.

        SOURCE is a local JSONL/JSON/CSV/Parquet file, a local dataset folder or a Hugging
        Face dataset id. Rerunning the same command resumes: finished items are skipped.
        """
        from persona_eval.contracts.factories import build_generator, close_generators
        from persona_eval.contracts.model_spec import parse_model_spec
        from persona_eval.display.quiet import quiet_library_progress
        from persona_eval.errors import UsageError
        from persona_eval.executors import parse_executor
        from persona_eval.persona_inference.export import push_to_hub, write_parquet
        from persona_eval.persona_inference.infer_file import InferConfig, infer_file
        from persona_eval.persona_inference.pairs import FieldNames, input_identity, load_pairs
        from persona_eval.persona_inference.prompt import load_exemplars
        from persona_eval.storage.cache import NullCache

        if quiet:
            quiet_library_progress()
        parse_model_spec(model, option="--model")
        runner = parse_executor(executor)
        if limit is not None and limit < 0:
            raise UsageError("--limit must be zero (all items) or positive")
        for option, value in (("--k", k), ("--max-new-tokens", max_new_tokens - 1), ("--max-attempts", max_attempts - 1),
                              ("--max-response-chars", max_response_chars)):
            if value < 0:
                raise UsageError(f"{option} is out of range")
        if chosen_persona_field == rejected_persona_field:
            raise UsageError("--chosen-persona-field and --rejected-persona-field must differ")
        if Path(source).expanduser().exists() and Path(source).expanduser().resolve() == Path(output).expanduser().resolve():
            raise UsageError("-o must not be the input file itself", where=str(output))
        names = FieldNames(prompt=prompt_field, chosen=chosen_field, rejected=rejected_field, id=id_field or None)
        pairs = load_pairs(source, names=names, hf_config=hf_config, hf_split=hf_split, revision=revision, limit=limit or None)
        load_exemplars(exemplars)  # a bad exemplars file fails before any model loads
        config = InferConfig(
            model=model, k=k, exemplars=exemplars, max_attempts=max_attempts, max_new_tokens=max_new_tokens,
            temperature=temperature, seed=seed, max_response_chars=max_response_chars, cut=cut, use_prefix=use_prefix,
            chosen_persona_field=chosen_persona_field, rejected_persona_field=rejected_persona_field,
        )
        if dry_run:
            from persona_eval.persona_inference.dry_run import plan_infer
            from persona_eval.pipeline.plan import emit_plan

            try:
                plan = plan_infer(pairs, output, config, names=names, use_cache=not no_cache, prices=prices, source=source)
            finally:
                close_generators()
            emit_plan(plan, as_json)
            return
        try:
            runner.prepare([build_generator(model, option="--model")])  # an unreachable cluster fails before -o is written
            summary = infer_file(
                pairs, output, config, names=names, progress=not quiet, cache=NullCache() if no_cache else None,
                input_info=input_identity(source, hf_config=hf_config, hf_split=hf_split, revision=revision),
                executor=runner,
            )
        finally:
            runner.close()
            close_generators()
        if parquet:
            rows = write_parquet(Path(output), Path(parquet))
            summary["parquet"] = {"path": parquet, "rows": rows}
        if hub_repo:
            push_to_hub(Path(output), hub_repo, private=not public)
            summary["hub"] = hub_repo
        if as_json:
            click.echo(json.dumps(summary, indent=2, default=str))
        else:
            _print_summary(summary)

    @cli.command(name="pi-accuracy")
    @click.argument("source")
    @click.option("--judge-model", default="hf:embedded", show_default=True, help="Model that picks the response a persona prefers.")
    @click.option("--mode", type=click.Choice(["auto", "logprobs", "text"]), default="auto", show_default=True,
                  help="Read A/B from log-probabilities (when the backend has them) or parse generated text.")
    @click.option("--side", type=click.Choice(["both", "chosen", "rejected"]), default="both", show_default=True)
    @click.option("--partition", default="test", show_default=True, help="With a task: which data (test, train, fewshot).")
    @click.option("--include-path", "include_paths", multiple=True, type=click.Path())
    @click.option("--prompt-field", default="prompt", show_default=True)
    @click.option("--chosen-field", default="chosen", show_default=True)
    @click.option("--rejected-field", default="rejected", show_default=True)
    @click.option("--chosen-persona-field", default="chosen_persona", show_default=True)
    @click.option("--rejected-persona-field", default="rejected_persona", show_default=True)
    @click.option("--id-field", default="id", show_default=True)
    @click.option("--limit", type=bounded("limit"), default=None, help="Only the first N items (0 = all).")
    @click.option("--max-new-tokens", type=bounded("max_new_tokens"), default=8, show_default=True, help="Text mode: tokens for the answer.")
    @click.option("--max-response-chars", type=bounded("max_response_chars"), default=2000, show_default=True, help="Clip each response (0 = never).")
    @click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write the report and every answer as JSON.")
    @click.option("--no-cache", is_flag=True)
    @click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
    @click.option("--quiet", is_flag=True)
    def pi_accuracy(source, judge_model, mode, side, partition, include_paths, prompt_field, chosen_field, rejected_field,
                    chosen_persona_field, rejected_persona_field, id_field, limit, max_new_tokens, max_response_chars,
                    output, no_cache, as_json, quiet):
        """PI accuracy of the personas in SOURCE (a persona-augmented file or a task).

        A judge sees the prompt, both responses (in both orders) and a persona and names the
        response the persona prefers; chance is 0.5.
        """
        from persona_eval.contracts.factories import build_generator, close_generators
        from persona_eval.contracts.model_spec import parse_model_spec
        from persona_eval.display.quiet import quiet_library_progress
        from persona_eval.errors import UsageError
        from persona_eval.persona_inference import accuracy as pia
        from persona_eval.storage.cache import NullCache
        from persona_eval.storage.files import atomic_write_json

        if quiet:
            quiet_library_progress()
        parse_model_spec(judge_model, option="--judge-model")
        if limit is not None and limit < 0:
            raise UsageError("--limit must be zero (all items) or positive")
        kind, loaded = _records_or_task(source, include_paths, partition)
        if kind == "records":
            fields = {"prompt": prompt_field, "chosen": chosen_field, "rejected": rejected_field,
                      "chosen_persona": chosen_persona_field, "rejected_persona": rejected_persona_field}
            items = pia.items_from_records(loaded, fields, id_field=id_field or None, limit=limit or None)
            source_info = {"file": str(Path(source).resolve())}
        else:
            examples = loaded.load(partition)
            items = pia.items_from_examples(examples[:limit] if limit else examples)
            source_info = {"task": loaded.name, "task_hash": loaded.task_hash, "data_hash": loaded.data_hash, "partition": partition}
        sides = ("chosen", "rejected") if side == "both" else (side,)
        try:
            judge = pia.PIJudge(build_generator(judge_model, option="--judge-model"), mode=mode,
                                max_new_tokens=max_new_tokens, max_response_chars=max_response_chars)
            report, answers = pia.evaluate(items, judge, cache=NullCache() if no_cache else None, progress=not quiet, sides=sides)
        finally:
            close_generators()
        report = {"source": source_info, "judge_model": judge_model, **report}
        if output:
            atomic_write_json(output, {**report, "answers": answers})
        if as_json:
            click.echo(json.dumps(report, indent=2, default=str))
        else:
            pia.render_report(report)

    @cli.command()
    @click.argument("source", required=False)
    @click.option("--paper-outputs", type=click.Path(file_okay=False), default=None,
                  help="Folder of the paper's released outputs (read in place); persona taken from the prompt field.")
    @click.option("--dataset", default=None, help="With --paper-outputs: the dataset folder (beavertails, hhh).")
    @click.option("--kind", type=click.Choice(["gold", "retr"]), default="gold", show_default=True,
                  help="With --paper-outputs: gold (inferred from the pair) or retrieved personas.")
    @click.option("--partition", default="test", show_default=True, help="With a task: which data.")
    @click.option("--include-path", "include_paths", multiple=True, type=click.Path())
    @click.option("--chosen-persona-field", default="chosen_persona", show_default=True)
    @click.option("--rejected-persona-field", default="rejected_persona", show_default=True)
    @click.option("--preset", type=click.Choice(["ours", "paper"]), default="ours", show_default=True,
                  help="paper: the settings of the paper's word_saliency.py (every token, WordNet lemmas, cut-off 3, ...).")
    @click.option("--min-count", type=bounded("min_count"), default=None, help="Leave out words counted fewer times [ours: 10, paper: 3].")
    @click.option("--top", type=bounded("top"), default=None, help="Words listed per side [ours: 15, paper: 10].")
    @click.option("--lemmatizer", type=click.Choice(["none", "suffix", "wordnet"]), default=None,
                  help="suffix: plurals and -s verbs (ours); wordnet: NLTK's WordNet noun lemmas [ours: none, paper: wordnet].")
    @click.option("--lemmatize/--no-lemmatize", default=None, help="Short for --lemmatizer suffix / none.")
    @click.option("--cut-contrast/--no-cut-contrast", default=None,
                  help="Cut each persona at its first contrast phrase ('rather than', 'over', 'versus', ...) [both presets: cut].")
    @click.option("--keep-duplicates/--dedup", "keep_duplicates", default=None,
                  help="Count identical personas every time they occur [ours: once, paper: every time].")
    @click.option("--cutoffs", default="3,5,10,20", show_default=True, help="Cut-offs of the stability table (comma-separated).")
    @click.option("-o", "--output-dir", type=click.Path(file_okay=False), default=None,
                  help="Write persona_bias.md, persona_bias.json and persona_bias.png here.")
    @click.option("--no-chart", is_flag=True, help="Skip the PNG chart.")
    @click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
    def analyze(source, paper_outputs, dataset, kind, partition, include_paths, chosen_persona_field, rejected_persona_field,
                preset, min_count, top, lemmatizer, lemmatize, cut_contrast, keep_duplicates, cutoffs, output_dir, no_chart, as_json):
        """Persona bias: words over-represented in chosen vs rejected personas, P(chosen | word).

        The report lists the top words at several cut-offs side by side, so a list that is an
        artefact of --min-count shows as one.
        """
        from persona_eval.errors import UsageError
        from persona_eval.persona_inference import bias as pb

        if bool(source) == bool(paper_outputs):
            raise UsageError("give either SOURCE (a persona file or a task) or --paper-outputs DIR")
        if (min_count is not None and min_count < 1) or (top is not None and top < 1):
            raise UsageError("--min-count and --top must be positive")
        if lemmatize is not None:
            short = "suffix" if lemmatize else "none"
            if lemmatizer is not None and lemmatizer != short:
                raise UsageError(f"--{'' if lemmatize else 'no-'}lemmatize contradicts --lemmatizer {lemmatizer}")
            lemmatizer = short
        cutoff_list = pb.parse_cutoffs(cutoffs)
        settings = pb.settings_for(preset, min_count=min_count, top=top, lemmatizer=lemmatizer, cut_contrast=cut_contrast,
                                   keep_duplicates=keep_duplicates)
        if paper_outputs:
            root = Path(paper_outputs)
            if not root.is_dir():
                raise UsageError("folder not found", where=str(root))
            if dataset is None:
                found = sorted(p.name for p in root.iterdir() if p.is_dir())
                if found and not any(root.glob(f"*__{kind}-chosen.json")):
                    raise UsageError(f"this folder holds several datasets; pick one with --dataset ({', '.join(found)})", where=str(root))
            chosen, rejected = pb.paper_personas(root, dataset or "", kind=kind)
            source_info = {"paper_outputs": str((root / dataset) if dataset else root), "kind": kind}
        else:
            loaded_kind, loaded = _records_or_task(source, include_paths, partition)
            if loaded_kind == "records":
                chosen, rejected = pb.personas_from_records(loaded, chosen_persona_field, rejected_persona_field)
                source_info = {"file": str(Path(source).resolve())}
            else:
                examples = loaded.load(partition)
                chosen = [e.chosen_persona for e in examples if e.chosen_persona.strip()]
                rejected = [e.rejected_persona for e in examples if e.rejected_persona.strip()]
                source_info = {"task": loaded.name, "partition": partition}
        report = pb.bias_report(chosen, rejected, settings=settings, cutoffs=cutoff_list, source=source_info)
        if output_dir:
            report["files"] = pb.write_report(report, Path(output_dir), chart=not no_chart)
        if as_json:
            click.echo(json.dumps({k: v for k, v in report.items() if k != "words"}, indent=2))
        else:
            click.echo(pb.render_markdown(report))
            if output_dir:
                click.echo(f"written: {', '.join(report['files'].values())}")
