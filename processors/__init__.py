"""Processors: the Faust app and its agents (one module per verb)."""

from schemas import _native

# The hot pure modules load from a native (mypyc) build when one matches these exact sources.
_native.activate(__name__, __path__)
