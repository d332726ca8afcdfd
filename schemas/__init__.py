"""ctpipe's single source of truth: wire models, canonical event, topics, codec.

This package imports nothing else of ctpipe's; producers, processors and sinks import it.
"""

from schemas import _native

# The hot modules load from a native (mypyc) build when one matches these exact sources.
_native.activate(__name__, __path__)
