from __future__ import annotations

from collections import Counter

from processors.smoke import count_by_partition
from producers.smoke import expected_counts, smoke_messages
from schemas import codec


def test_smoke_messages_are_keyed_json() -> None:
    msgs = list(smoke_messages(5, 2))
    assert [k for k, _ in msgs] == [b"key-000", b"key-001", b"key-000", b"key-001", b"key-000"]
    assert codec.loads(msgs[3][1]) == {"seq": 3, "key": "key-001"}
    assert expected_counts(10_000, 37).total() == 10_000
    assert expected_counts(10, 3) == Counter({"key-000": 4, "key-001": 3, "key-002": 3})


def test_count_by_partition_tracks_offset_ranges() -> None:
    records = [(1, 10, b"a"), (0, 5, b"a"), (1, 11, b"b"), (1, 9, b"a"), (0, 6, None)]
    parts = count_by_partition(records)
    assert [(p.partition, p.first_offset, p.last_offset) for p in parts] == [(0, 5, 6), (1, 9, 11)]
    assert parts[0].counts == Counter({"a": 1, "": 1})
    assert parts[1].counts == Counter({"a": 2, "b": 1})
    assert sum(p.total for p in parts) == len(records)
    assert count_by_partition([]) == []
