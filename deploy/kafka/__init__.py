"""Real Apache Kafka for machines without Docker: resolve, format, start, stop (see local.py)."""
