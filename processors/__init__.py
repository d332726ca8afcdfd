"""Processors: the Faust app and its agents (one module per verb)."""
