"""The ``persona-eval serve-openai`` command: put any generator behind an OpenAI-compatible API.

``persona-eval serve-openai --model hf:embedded --port 8000`` serves POST /v1/chat/completions
and GET /v1/models (see `persona_eval.serving.openai_server`), so any OpenAI client, or this
harness's own ``openai:embedded,base_url=http://127.0.0.1:8000/v1`` backend, can use it.
"""

from __future__ import annotations

from persona_eval.contracts.hookspecs import hookimpl


@hookimpl
def register_commands(cli):
    import click

    from persona_eval.cli_options import bounded

    @cli.command(name="serve-openai")
    @click.option("--model", default="hf:embedded", show_default=True, help="Generator spec to serve, e.g. hf:embedded.")
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
    @click.option("--port", type=bounded("port"), default=8000, show_default=True, help="Port (0 picks a free one).")
    @click.option("--served-name", default=None, help="Model name clients send (default: the spec's model part).")
    @click.option("--max-batch", type=bounded("max_batch"), default=None, help="Most requests generated together (default: backend's).")
    @click.option("--batch-wait-ms", type=bounded("batch_wait_ms"), default=5.0, show_default=True,
                  help="How long a request waits for others to share its batch.")
    @click.option("--api-key-env", default=None,
                  help="Require clients to send the key held in this environment variable.")
    @click.option("--logprob-choices", default="A,B", show_default=True,
                  help="Tokens whose probabilities answer logprobs requests (comma-separated).")
    def serve_openai(model, host, port, served_name, max_batch, batch_wait_ms, api_key_env, logprob_choices):
        """Serve a generator over an OpenAI-compatible HTTP API until Ctrl-C."""
        import os

        from persona_eval.contracts.factories import build_generator
        from persona_eval.contracts.model_spec import parse_model_spec
        from persona_eval.contracts.records import GenParams, GenRequest
        from persona_eval.errors import UsageError

        try:
            import aiohttp  # noqa: F401
        except ImportError as exc:
            raise UsageError("serve-openai needs aiohttp: pip install 'persona-eval[serve]'") from exc
        from persona_eval.serving.openai_server import GeneratorResponder, run_server

        spec = parse_model_spec(model)
        name = served_name or spec.model
        api_key = None
        if api_key_env:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise UsageError(f"--api-key-env {api_key_env}: that environment variable is empty or unset")
        generator = build_generator(model)
        # Load the model before announcing the server, so the first clients do not time out on it.
        click.echo(f"Loading {model}...", err=True)
        try:
            generator.generate([GenRequest(id="warm-up", prompt="Hello", params=GenParams(max_new_tokens=1))])
        except UsageError:
            pass  # a backend that cannot answer this probe (precomputed outputs) has nothing to load
        responder = GeneratorResponder(
            generator, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
            logprob_choices=[c.strip() for c in logprob_choices.split(",") if c.strip()],
        )

        def ready(server):
            click.echo(f"Serving {model} as model {name!r} at {server.base_url} (Ctrl-C to stop)", err=True)

        try:
            run_server(responder, ready=ready, host=host, port=port, models=[name], api_key=api_key)
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        finally:
            generator.close()
