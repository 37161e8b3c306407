"""Task YAML files and the project's own demo data, shipped as package data.

`demo/` is our own small persona dataset (48 test and 48 train items) used by the
default `persona-eval run`.
"""
