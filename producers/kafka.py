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


# confluent-kafka's header list shape
Headers = list[tuple[str, str | bytes | None]]


class AckedSender:
    """Sends to one topic and tracks acknowledgements; ``flush`` raises unless all were acked.

    The one send loop of ctpipe's producers: a full local queue (``BufferError``) is waited out
    by polling, never dropped; delivery failures are collected and reported by ``flush``.
    """

    def __init__(self, producer: Producer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.sent = 0
        self.acked = 0
        self.failures: list[KafkaError] = []

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.failures.append(err)
        else:
            self.acked += 1

    def send(self, key: bytes | None, value: bytes, headers: Headers | None = None) -> None:
        while True:
            try:
                self.producer.produce(
                    self.topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery
                )
                break
            except BufferError:
                self.producer.poll(0.05)  # local queue full: let deliveries drain
        self.sent += 1
        self.producer.poll(0)

    def flush(self, timeout: float = 60.0) -> int:
        """Wait for every acknowledgement; returns the acked count so far, or raises DeliveryError."""
        remaining = self.producer.flush(timeout)
        if remaining:
            raise DeliveryError(
                f"{remaining} messages to {self.topic} not acknowledged within {timeout:.0f} s"
            )
        if self.failures:
            raise DeliveryError(f"{len(self.failures)} messages to {self.topic} failed: {self.failures[0]}")
        return self.acked


def produce_all(
    producer: Producer,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes] | tuple[bytes | None, bytes, Headers]],
    *,
    timeout: float = 60.0,
) -> int:
    """Send (key, value[, headers]) messages and wait for every acknowledgement; return the acked count."""
    sender = AckedSender(producer, topic)
    for message in messages:
        sender.send(message[0], message[1], message[2] if len(message) > 2 else None)
    return sender.flush(timeout)
