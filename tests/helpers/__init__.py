"""Builders shared by the test modules: tiny checkpoints, data writers and run comparisons."""
