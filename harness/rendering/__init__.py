"""Turning items into model inputs: the paper's prompt strategies, chat-template rendering of a
request (shared by the generators and the trainers), conversation flattening.
"""
