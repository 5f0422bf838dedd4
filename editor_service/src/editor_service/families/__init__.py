"""Editing-model families: each module one family; the registry is the one list of them.

Adding a family is its module here, its builder in tiny_models and one line in ``registry``.
"""
