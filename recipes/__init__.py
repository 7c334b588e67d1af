"""Recipes: what runs (data, the training engine, the command-line verbs)."""
