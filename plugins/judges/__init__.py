"""Pairwise judges: the shared re-asking base (`pairwise`), Prometheus 2 and GPT-4o.
"""
