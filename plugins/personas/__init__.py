"""Persona sources, one file per registered name: gold, retrieved, user, precomputed, inferred.
"""
