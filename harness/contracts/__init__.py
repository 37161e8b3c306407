"""What plugins and the core agree on: the data types that flow between stages (`records`),
the Generator/Judge/PersonaSource/Retriever interfaces, the hook specs, the plugin manager,
the named registries, model-spec parsing and the factories that build components from specs.
"""
