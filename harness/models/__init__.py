"""Facts about model weights that generators and trainers share: content fingerprints and revisions.
"""
