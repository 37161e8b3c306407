"""An OpenAI-compatible HTTP server over any generator (the `serve-openai` command; tests and
benchmarks use it as a loopback endpoint).
"""
