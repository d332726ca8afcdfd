"""Create ctpipe's topics on a broker from their one declaration (``schemas.topics``)."""

from __future__ import annotations

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
