"""Smoke workload: ``n`` keyed JSON messages spread over ``keys`` keys (demo, integration test)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from confluent_kafka import Producer

from producers.kafka import produce_all
from schemas import codec


def smoke_messages(n: int, keys: int) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs: message i goes to key ``key-{i % keys:03d}``."""
    for seq in range(n):
        key = f"key-{seq % keys:03d}"
        yield key.encode(), codec.dumps({"seq": seq, "key": key})


def expected_counts(n: int, keys: int) -> Counter[str]:
    return Counter(key.decode() for key, _ in smoke_messages(n, keys))


def publish_smoke(producer: Producer, topic: str, n: int, keys: int) -> int:
    """Publish the workload; returns the number of messages the broker acknowledged."""
    return produce_all(producer, topic, smoke_messages(n, keys))
