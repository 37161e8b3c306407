"""Task files: the YAML schema, loading with file:line errors, discovery, and reading the data.
"""
