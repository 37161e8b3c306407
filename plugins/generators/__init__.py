"""Generator backends, one file per registered backend (hf, openai, vllm, lm-eval, file, gguf),
the embedded default model, and helpers only these backends share.
"""
