"""How records travel in Kafka messages: packing, and RETRIEVALS observation records.

Split from ``schemas.records`` (which re-exports all of it and documents the formats) so the
native build (``schemas._native``) compiles it: it runs for every record a worker writes or reads.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from schemas.codec import dumps, loads


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of ``key`` on the topics whose messages pack records of many keys (EVENTS,
    RETRIEVALS): the message's partition, so every key's records always meet on one partition.
    CRC-32 (C, ~30x faster than Kafka's pure-Python murmur2 in aiokafka, which cost the worker
    2.6 % of its CPU); ``processors.normalize`` is these topics' only writer, so it need not
    match a client's default partitioner. Here (compiled), not in ``schemas.topics``: it runs
    for every record normalize writes; ``schemas.topics`` re-exports it."""
    return zlib.crc32(key) % partitions


#: Packed messages stay below this (Kafka's default message limit is 1 MiB).
PACK_MAX_BYTES = 512 * 1024


def pack(items: Iterable[bytes], max_bytes: int = PACK_MAX_BYTES) -> list[bytes]:
    """Encoded JSON records -> message values, each a JSON array of at most ``max_bytes``
    (a single larger record travels alone, as a one-element array)."""
    out: list[bytes] = []
    chunk: list[bytes] = []
    size = 2
    for item in items:
        if chunk and size + len(item) + 1 > max_bytes:
            out.append(b"[" + b",".join(chunk) + b"]")
            chunk, size = [], 2
        chunk.append(item)
        size += len(item) + 1
    if chunk:
        out.append(b"[" + b",".join(chunk) + b"]")
    return out


def unpack(raw: bytes | str) -> list[Any]:
    """A message value -> its decoded records: a JSON array's elements, or the one object."""
    doc = loads(raw)
    return doc if type(doc) is list else [doc]


# --- RETRIEVALS observations ----------------------------------------------------------------------
#: the tag (format version) that opens a RETRIEVALS observation array
OBSERVATION_TAG = "r1"
#: what follows the tag, in order: the canonical event's fields (``timestamp`` as integer epoch
#: microseconds, UTC); every one but event_id and ts_us may be null (absent in the event)
OBSERVATION_FIELDS = (
    "event_id",
    "source_role",
    "emitter",
    "ts_us",
    "canonical_url",
    "content_id",
    "session_id",
    "agent_id",
    "content_scope",
    "owner_domain",
    "content_url",
    "content_telemetry_id",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_us(dt: datetime) -> int:
    """A datetime (naive = UTC) -> integer epoch microseconds."""
    delta = (dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def encode_observation(event: Any) -> bytes:
    """A ``retrieved`` event's RETRIEVALS record, from its wire dict (``schemas.normalize``'s
    ``IngestResult.wire``: model values, datetimes) or from the model itself."""
    get = event.get if isinstance(event, dict) else event.__dict__.get
    return dumps(
        [
            OBSERVATION_TAG,
            get("event_id"),
            get("source_role"),
            get("emitter"),
            epoch_us(get("timestamp")),  # type: ignore[arg-type]
            get("canonical_url"),
            get("content_id"),
            get("session_id"),
            get("agent_id"),
            get("content_scope"),
            get("owner_domain"),
            get("content_url"),
            get("content_telemetry_id"),
        ]
    )


def observation_fields(raw: bytes | str) -> dict[str, Any]:
    """An observation record as {field: value} (for reading one: tests, a dead letter)."""
    rec = loads(raw)
    if type(rec) is not list or not rec or rec[0] != OBSERVATION_TAG:
        raise ValueError("not a RETRIEVALS observation record")
    return dict(zip(OBSERVATION_FIELDS, rec[1:], strict=True))
