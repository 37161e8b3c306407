"""persona-eval: does a language model tailor its answers to the person asking?

The core package. Everything importable here is light; heavy libraries (torch,
transformers, vllm) load only inside the plugins that need them.
"""

__version__ = "0.1.0"
