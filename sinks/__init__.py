"""Sinks: where ctpipe's results leave Kafka (ClickHouse)."""
