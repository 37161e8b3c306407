"""What persists between runs: the SQLite result cache, JSON Lines records, atomic file writes,
the cache folder and the retriever index cache.
"""
