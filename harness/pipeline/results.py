"""Stage 5, results: the one builder of the ``results.json`` document, for `run` and `judge RUN_DIR`.

The document names everything a number depends on (task and data hashes, models,
strategies, persona source, judges and every identity, the resolved config, package
versions) beside the metrics, and the statistics of API generators (requests, retries).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from persona_eval.versions import __version__

logger = logging.getLogger(__name__)

RESULTS_SCHEMA = "persona-eval/results@1"


def generator_stats(generators: Mapping[str, Any]) -> dict[str, Any]:
    """``stats()`` of every generator that has it (API backends: requests, retries, errors)."""
    out: dict[str, Any] = {}
    for spec, generator in generators.items():
        stats = getattr(generator, "stats", None)
        if not callable(stats):
            continue
        try:
            value = stats()
        except Exception as exc:  # noqa: BLE001 - statistics must never break a run
            logger.warning("stats() of %s raised %s: %s", spec, type(exc).__name__, exc)
            continue
        if value:
            out[spec] = value
    return out


def build_results(
    *,
    run_dir: str,
    run_key: str | None,
    config: Mapping[str, Any],
    judges: list[str],
    judge_model: str,
    identities: Mapping[str, Any],
    scored: Mapping[str, Any],
    generators: Mapping[str, Any],
    seconds: float,
    rejudge_of: str | None = None,
    full_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The results document. `config` is the run's ``config.json``; `full_config` what to embed (default: it)."""
    return {
        "schema": RESULTS_SCHEMA,
        "persona_eval_version": __version__,
        "run_dir": run_dir,
        "run_key": run_key,
        **({"rejudge_of": rejudge_of} if rejudge_of is not None else {}),
        "task": {k: v for k, v in config["task"].items() if k != "resolved"},
        "split": config.get("split"),
        "model": config.get("model"),
        "baseline": config.get("baseline"),
        "strategies": config.get("strategies"),
        "persona_source": config.get("persona_source"),
        "judges": judges,
        "judge_model": judge_model,
        "identities": dict(identities),
        "config": dict(full_config if full_config is not None else config),
        "versions": config.get("versions"),
        **scored,
        "api": generator_stats(generators),
        "seconds": round(seconds, 2),
    }
