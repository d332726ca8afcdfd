"""ctpipe's single source of truth: wire models, canonical event, topics, codec.

This package imports nothing else of ctpipe's; producers, processors and sinks import it.
"""
