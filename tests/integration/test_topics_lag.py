"""``deploy.kafka.topics.group_lag`` / ``message_count`` against the real broker."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, TopicPartition

from deploy.kafka.topics import ensure_topics, group_lag, message_count
from producers.kafka import make_producer
from schemas.topics import RAW
from tests.infra import Infra

pytestmark = pytest.mark.integration


def test_group_lag_counts_what_the_group_has_not_committed(infra: Infra, unique: str) -> None:
    topic = RAW.namespaced(unique)
    ensure_topics(infra.bootstrap, [topic])
    producer = make_producer(infra.bootstrap)
    for i in range(40):
        producer.produce(topic.name, value=b"x", key=str(i).encode())
    assert producer.flush(30) == 0
    group = f"{unique}-g"
    assert message_count(infra.bootstrap, topic.name) == 40
    assert group_lag(infra.bootstrap, group, [topic.name]) == 40  # never committed: whole backlog

    consumer = Consumer(
        {"bootstrap.servers": infra.bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(topic.name, p, 0) for p in range(topic.partitions)])
        seen = 0
        while seen < 40:
            msg = consumer.poll(10)
            assert msg is not None and msg.error() is None
            seen += 1
            if seen == 25:
                consumer.commit(asynchronous=False)  # commits the 25 consumed so far
        assert group_lag(infra.bootstrap, group, [topic.name]) == 15
        consumer.commit(asynchronous=False)
        assert group_lag(infra.bootstrap, group, [topic.name, "no-such-topic"]) == 0
    finally:
        consumer.close()
    assert group_lag(infra.bootstrap, f"{unique}-other", [topic.name]) == 40
