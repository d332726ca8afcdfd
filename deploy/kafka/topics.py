"""Create ctpipe's topics on a broker from their one declaration (``schemas.topics``)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.topics import Topic


class TopicError(RuntimeError):
    """A declared topic could not be created (one line, for the user)."""


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def ensure_topics(
    bootstrap: str, topics: Iterable[Topic], *, replication_factor: int = 1, timeout: float = 30.0
) -> list[str]:
    """Create every missing topic with its declared partitions and config; return the created names.

    Idempotent: existing topics are left as they are.
    """
    wanted = list(topics)
    if not wanted:
        return []
    admin = _admin(bootstrap)
    futures = admin.create_topics(
        [NewTopic(t.name, t.partitions, replication_factor, config=t.config()) for t in wanted],
        request_timeout=timeout,
        operation_timeout=timeout,
    )
    created: list[str] = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise TopicError(f"cannot create topic {name} on {bootstrap}: {err}") from exc
    return sorted(created)


def delete_topics(bootstrap: str, names: Iterable[str], *, timeout: float = 30.0) -> None:
    """Delete topics, ignoring those that do not exist."""
    names = list(names)
    if not names:
        return
    admin = _admin(bootstrap)  # keep a reference: a destroyed client fails its pending futures
    futures = admin.delete_topics(names, operation_timeout=timeout, request_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                continue
            raise TopicError(f"cannot delete topic {name} on {bootstrap}: {err}") from exc


def describe_partitions(bootstrap: str, name: str, timeout: float = 10.0) -> int:
    """Number of partitions of a topic (0 if it does not exist)."""
    admin = _admin(bootstrap)
    md = admin.list_topics(topic=name, timeout=timeout)
    topic = md.topics.get(name)
    if topic is None or topic.error is not None:
        return 0
    return len(topic.partitions)


_COORDINATOR_BUSY = frozenset(
    {
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
    }
)


def group_lag(bootstrap: str, group: str, topics: Iterable[str], timeout: float = 10.0) -> int:
    """Messages of ``topics`` the consumer group has not committed yet (0 = caught up).

    A partition the group never committed counts with its whole backlog (from the low watermark).
    The committed offsets are read by a consumer *of that group* that never subscribes (so it
    never joins or disturbs the group), not by the AdminClient: librdkafka's admin OffsetFetch
    can crash the process when the coordinator answers NOT_COORDINATOR (it signals a consumer
    group the AdminClient does not have: librdkafka #5040, confluent-kafka-python #1982).
    """
    from confluent_kafka import Consumer, TopicPartition

    admin = _admin(bootstrap)
    names = list(topics)
    metadata = admin.list_topics(timeout=timeout)
    tps = [
        TopicPartition(name, partition)
        for name in names
        if (topic := metadata.topics.get(name)) is not None
        for partition in topic.partitions
    ]
    if not tps:
        return 0
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                committed = reader.committed(tps, timeout=timeout)
                break
            except KafkaException as exc:
                err = exc.args[0]
                # e.g. COORDINATOR_LOAD_IN_PROGRESS right after a broker or group (re)start
                transient = isinstance(err, KafkaError) and (
                    err.retriable() or err.code() in _COORDINATOR_BUSY
                )
                if transient and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                raise
        lag = 0
        for tp in committed:
            low, high = reader.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout)
            lag += max(0, high - (tp.offset if tp.offset >= 0 else low))
        return lag
    finally:
        reader.close()


def message_count(bootstrap: str, name: str, timeout: float = 10.0) -> int:
    """Messages currently held by a topic (sum over partitions of high - low watermark)."""
    from confluent_kafka import Consumer, TopicPartition

    admin = _admin(bootstrap)
    topic = admin.list_topics(topic=name, timeout=timeout).topics.get(name)
    if topic is None or topic.error is not None:
        return 0
    probe = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "ctpipe-count-probe", "enable.auto.commit": False}
    )
    try:
        total = 0
        for partition in topic.partitions:
            low, high = probe.get_watermark_offsets(TopicPartition(name, partition), timeout=timeout)
            total += max(0, high - low)
        return total
    finally:
        probe.close()
