"""processors.source.BatchSource bookkeeping without a broker: failed commits come back."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from processors.source import BatchSource


async def _noop(msgs: list[Any]) -> None:
    return None


def make() -> BatchSource:
    src = BatchSource(bootstrap="127.0.0.1:1", group="g", topic="t", output=None, handler=_noop)  # type: ignore[arg-type]
    src.assigned = frozenset({0, 1})
    return src


def test_a_failed_commit_is_retried_with_the_next_one() -> None:
    src = make()
    src._pending = {1: 7}  # handled since: newer than the failed commit's offset
    failed = KafkaError(KafkaError.ILLEGAL_GENERATION)
    src._on_commit(failed, [TopicPartition("t", 0, 10), TopicPartition("t", 1, 5), TopicPartition("t", 2, 3)])
    # partition 0 back to pending; 1 keeps its later offset; 2 is no longer ours (its new owner
    # starts from the last commit)
    assert src._pending == {0: 10, 1: 7}


def test_a_successful_commit_changes_nothing() -> None:
    src = make()
    src._on_commit(None, [TopicPartition("t", 0, 10)])
    assert src._pending == {}


def test_revoked_partitions_drop_their_pending_offsets() -> None:
    src = make()
    src._pending = {0: 3, 1: 4}
    src._on_revoke(None, [TopicPartition("t", 1)])
    assert src._pending == {0: 3} and src.assigned == frozenset({0})
    src._on_assign(None, [TopicPartition("t", 2)])
    assert src.assigned == frozenset({0, 2})
