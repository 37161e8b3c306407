"""persona-eval: does a language model tailor its answers to the person asking?

The core package. Everything importable here is light; heavy libraries (torch,
transformers, vllm) load only inside the plugins that need them. The Python entry points
`evaluate`, `rejudge` and `load_run` (module `persona_eval.api`) load on first use.
"""

from persona_eval.versions import __version__

__all__ = ["__version__", "evaluate", "load_run", "rejudge"]


def __getattr__(name: str):
    # Lazy: `import persona_eval` (and so `persona-eval --help`) must not import the pipeline.
    if name in ("evaluate", "load_run", "rejudge", "RunRecords"):
        from persona_eval import api

        return getattr(api, name)
    raise AttributeError(f"module 'persona_eval' has no attribute {name!r}")
