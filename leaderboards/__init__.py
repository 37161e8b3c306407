"""Leaderboards: the JSON Schema, building and rendering leaderboard files from results."""
