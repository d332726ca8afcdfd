"""Producers: everything that publishes into ctpipe's Kafka topics (one module per source)."""
