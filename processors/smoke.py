"""Smoke counter: keyed messages in, per-partition per-key counts out to a writer callback.

Input: any topic of keyed messages. Output: for each batch and partition, the offset range it
covers and the count of messages per key, handed to ``write`` before the batch is acknowledged
(offsets are committed only after the writer returned).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import faust


@dataclass(slots=True)
class PartitionCounts:
    """Counts of one partition's slice of a batch."""

    partition: int
    first_offset: int
    last_offset: int
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


Writer = Callable[[str, PartitionCounts], None]


def count_by_partition(records: Iterable[tuple[int, int, bytes | None]]) -> list[PartitionCounts]:
    """(partition, offset, key) records -> per-partition key counts with their offset ranges."""
    slices: dict[int, PartitionCounts] = {}
    for partition, offset, key in records:
        part = slices.get(partition)
        if part is None:
            part = slices[partition] = PartitionCounts(partition, offset, offset)
        part.first_offset = min(part.first_offset, offset)
        part.last_offset = max(part.last_offset, offset)
        part.counts[key.decode("utf-8", "replace") if key is not None else ""] += 1
    return [slices[p] for p in sorted(slices)]


def register(
    app: faust.App, topic_name: str, write: Writer, *, batch: int = 10_000, within: float = 0.5
) -> Any:
    """Add the smoke counting agent for ``topic_name`` to ``app``."""
    topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw")

    @app.agent(topic, name=f"smoke-counter-{topic_name}")
    async def smoke_counter(stream: faust.StreamT[bytes]) -> None:
        # take_events (faust-streaming) is on Stream, not yet on the StreamT interface.
        async for events in stream.take_events(batch, within=within):  # type: ignore[attr-defined]
            records = ((e.message.partition, e.message.offset, e.message.key) for e in events)
            for part in count_by_partition(records):
                write(topic_name, part)

    return smoke_counter
