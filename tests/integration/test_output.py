"""``processors.output.Output`` (the worker's librdkafka producer) against the real broker."""

from __future__ import annotations

import os
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from deploy.kafka.topics import ensure_topics
from processors.output import DeliveryFailed, Output
from schemas.topics import RAW
from tests.infra import Infra

pytestmark = pytest.mark.integration


class FakeStore:
    """What ``Output`` uses of a Faust store: open partitions and ``set_persisted_offset``."""

    def __init__(self, open_partitions: set[int]) -> None:
        self._dbs = {p: object() for p in open_partitions}
        self.persisted: dict[tuple[str, int], int] = {}

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted[(tp.topic, tp.partition)] = offset


def read_all(
    bootstrap: str, topic: str, partitions: int, expect: int
) -> list[tuple[int, bytes | None, bytes | None]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out = []
        for _ in range(200):
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append((msg.partition(), msg.key(), msg.value()))
            if len(out) >= expect and msg is None:
                break
        return out
    finally:
        consumer.close()


async def test_flush_means_acknowledged_and_records_changelog_offsets(infra: Infra, unique: str) -> None:
    topic = RAW.namespaced(unique)  # 4 partitions
    ensure_topics(infra.bootstrap, [topic])
    out = Output(infra.bootstrap)
    store = FakeStore(open_partitions={0, 1})  # partition 2 "revoked": its store is not reopened
    out.track(type("T", (), {"changelog_topic_name": topic.name, "data": store})())
    for i in range(30):
        out.send(topic.name, f"k{i}".encode(), f"v{i}".encode(), i % 3)
    out.send(topic.name, b"gone", None, 0)  # a tombstone
    await out.flush()
    assert len(out) == 0 and out.sent == 31
    # the highest acknowledged offset per partition (0: 10 records + the tombstone; 1: 10)
    assert store.persisted == {(topic.name, 0): 10, (topic.name, 1): 9}
    got = read_all(infra.bootstrap, topic.name, topic.partitions, 31)
    assert sorted(got, key=lambda r: (r[0], r[1] or b"")) == sorted(
        [(i % 3, f"k{i}".encode(), f"v{i}".encode()) for i in range(30)] + [(0, b"gone", None)],
        key=lambda r: (r[0], r[1] or b""),
    )
    assert out.close() == 0
    await out.flush()  # after a clean close: nothing pending, nothing raised


async def test_a_refused_record_fails_the_flush(infra: Infra, unique: str) -> None:
    topic = RAW.namespaced(unique)
    ensure_topics(infra.bootstrap, [topic])
    # the client allows 3 MB, the broker (default message.max.bytes ~1 MB) refuses it
    out = Output(infra.bootstrap, **{"message.max.bytes": 4_000_000, "batch.size": 4_000_000})
    out.send(topic.name, b"k", os.urandom(3_000_000), 0)  # random: lz4 cannot shrink it
    with pytest.raises(DeliveryFailed, match="1 record"):
        await out.flush()
    out.send(topic.name, b"k", b"small", 0)
    assert isinstance(out.failed, DeliveryFailed)  # what processors.worker.failure reports
    with pytest.raises(DeliveryFailed, match="1 record"):
        await out.flush()  # sticky: no later flush (and so no later commit) passes over a loss
    out.close()


async def test_records_dropped_at_close_keep_later_commits_from_happening(unique: str) -> None:
    out = Output("127.0.0.1:9", **{"message.timeout.ms": 60_000})  # nothing listens there
    out.send(f"{unique}-t", None, b"v")
    assert out.close(timeout=0.5) == 1  # purged instead of blocking forever
    with pytest.raises(DeliveryFailed, match="dropped unacknowledged at close"):
        await out.flush()  # what Faust's final commit calls: the offsets must not be committed
