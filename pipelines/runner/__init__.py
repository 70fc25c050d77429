"""Runs end to end: a Recipe (setup, then train), comparisons of recipes, hyperparameter search."""
