from __future__ import annotations

from schemas import topics


def test_every_topic_is_declared_once_with_a_dead_letter_topic() -> None:
    names = [t.name for t in topics.ALL]
    assert len(names) == len(set(names))
    for t in topics.ALL:
        assert t.partitions >= 1 and t.key and t.value
        if t is not topics.DLQ:
            assert t.dlq == topics.DLQ.name
        assert topics.by_name(t.name) is t


def test_broker_config_follows_the_declaration() -> None:
    assert topics.RAW.config() == {"cleanup.policy": "delete", "retention.ms": str(7 * topics.DAY_MS)}
    assert topics.DLQ.config()["retention.ms"] == str(30 * topics.DAY_MS)
    compacted = topics.Topic("x", "k", "v", 1, retention_ms=None, compacted=True)
    assert compacted.config() == {"cleanup.policy": "compact"}


def test_namespacing_renames_topic_and_its_dlq() -> None:
    t = topics.RAW.namespaced("tenant1")
    assert t.name == "tenant1.ctpipe.raw" and t.dlq == "tenant1.ctpipe.dlq"
    assert t.partitions == topics.RAW.partitions
    assert topics.RAW.namespaced("") is topics.RAW
