"""Stage 5, results: the one builder of the ``results.json`` document, for `run` and `judge RUN_DIR`.

The document names everything a number depends on (task and data hashes, models,
strategies, persona source, judges and every identity, the resolved config, package
versions) beside the metrics, the statistics of API generators (requests, retries) and the
``usage`` block (`scoring.usage.UsageTally.block`: calls, cached, tokens, cost where priced).
``judge_policy`` names how each judge reached its verdicts and ``departures`` what a backend
could not apply of the task's settings (`fidelity_block`), so no number stands under a policy
the document does not name.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from persona_eval.versions import __version__

logger = logging.getLogger(__name__)

RESULTS_SCHEMA = "persona-eval/results@1"

# GenParams settings the paper's pipeline sets and older tasks never do (None: unset), with the
# value at which each changes nothing.
_OPTIONAL_SETTINGS = {"min_new_tokens": 0, "repetition_penalty": 1.0}


def unapplied_settings(generator: Any, params: Any) -> list[str]:
    """The set generation settings `generator` cannot apply, as it says (`unapplied_params`).

    A backend without that method gets a sentence saying it does not tell, for every such
    setting that is set: silence must never read as "applied".
    """
    if params is None or generator is None:
        return []
    method = getattr(generator, "unapplied_params", None)
    if callable(method):
        return list(method(params))
    backend = type(generator).__name__
    return [f"{name}={getattr(params, name)}: backend {backend} does not say whether it applies it"
            for name, neutral in _OPTIONAL_SETTINGS.items()
            if getattr(params, name, None) is not None and getattr(params, name) != neutral]


def fidelity_block(judges: Mapping[str, Any], roles: Mapping[str, tuple[Any, Any]],
                   earlier: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``judge_policy`` (each judge's `policy()`, by label) and ``departures`` for config.json and results.json.

    `roles` maps a generating role ("test", "baseline") to (its generator, its GenParams).
    ``departures`` lists, per role and per judge label, what the backend cannot apply of the
    task's settings and what a judge cannot send as its options ask; only entries with any.
    A re-judge passes the judged run's config as `earlier`: its roles' departures carry over.
    """
    policy = {label: judge.policy() for label, judge in judges.items() if callable(getattr(judge, "policy", None))}
    departures: dict[str, list[str]] = {
        role: list(found) for role, found in ((earlier or {}).get("departures") or {}).items() if role in ("test", "baseline")
    }
    for role, (generator, params) in roles.items():
        found = unapplied_settings(generator, params)
        if found:
            departures[role] = found
    for label, judge in judges.items():
        found = unapplied_settings(getattr(judge, "generator", None), getattr(judge, "params", None))
        own = getattr(judge, "departures", None)
        found += list(own()) if callable(own) else []
        if found:
            departures[label] = found
    return {"judge_policy": policy, "departures": departures}


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
    usage: Mapping[str, Any] | None = None,
    fidelity: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The results document. `config` is the run's ``config.json``; `full_config` what to embed (default: it).

    `usage` is the stages' `UsageTally.block` (calls, cached, tokens, seconds, cost where priced).
    `fidelity` is `fidelity_block` (``judge_policy`` and ``departures``), placed beside the judges.
    """
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
        **(dict(fidelity) if fidelity is not None else {}),
        "identities": dict(identities),
        "config": dict(full_config if full_config is not None else config),
        "versions": config.get("versions"),
        **scored,
        "api": generator_stats(generators),
        **({"usage": dict(usage)} if usage is not None else {}),
        "seconds": round(seconds, 2),
    }
