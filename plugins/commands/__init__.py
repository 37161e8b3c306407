"""CLI commands that plugins add through `register_commands`, one file per command group.
"""
