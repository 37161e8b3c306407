"""Built-in plugins. Each module registers through the same `persona_eval` hooks a
third-party package uses; the core never imports them by name."""
