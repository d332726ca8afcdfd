"""The one way producers write to Kafka: an idempotent confluent-kafka producer.

acks=all + enable.idempotence: a retried send never duplicates or reorders within a partition.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

# librdkafka's own log lines go through Python logging under this name (not raw to stderr), so
# transient notices right after a broker start ("coordinator load in progress") stay quiet.
CLIENT_LOGGER = logging.getLogger("ctpipe.librdkafka")


class DeliveryError(RuntimeError):
    """The broker did not acknowledge every message (one line, for the user)."""


def producer_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 5,
        "batch.size": 256 * 1024,
        "queue.buffering.max.messages": 500_000,
        "logger": CLIENT_LOGGER,
    }
    config.update(overrides)
    return config


def make_producer(bootstrap: str, **overrides: Any) -> Producer:
    return Producer(producer_config(bootstrap, **overrides))


Headers = list[tuple[str, bytes]]


def produce_all(
    producer: Producer,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes] | tuple[bytes | None, bytes, Headers]],
    *,
    timeout: float = 60.0,
) -> int:
    """Send (key, value[, headers]) messages and wait for every acknowledgement; return the acked count."""
    failures: list[KafkaError] = []
    acked = 0

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        nonlocal acked
        if err is not None:
            failures.append(err)
        else:
            acked += 1

    for message in messages:
        key, value = message[0], message[1]
        headers = message[2] if len(message) > 2 else None  # type: ignore[misc]
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)  # local queue full: let deliveries drain
        producer.poll(0)
    remaining = producer.flush(timeout)
    if remaining:
        raise DeliveryError(f"{remaining} messages to {topic} not acknowledged within {timeout:.0f} s")
    if failures:
        raise DeliveryError(f"{len(failures)} messages to {topic} failed: {failures[0]}")
    return acked
