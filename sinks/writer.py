"""The batching writer: one Kafka (topic, partition) offset range -> one ClickHouse insert.

Input: a ``Batch`` - the rows built from a contiguous offset range ``first..last`` of one
partition (``sinks.rows``). Output: at most one INSERT into the batch's table, carrying the
deduplication token ``f"{topic}:{partition}:{first}-{last}"``, preceded by a write-ahead record
of the batch in ``sink_offsets``. The caller (``sinks.consumer``) commits the Kafka offset only
after ``write`` returned.

Exactly-once, step by step (crash points named as the crash hook sees them):

1. ``before_record`` - funnel contributions whose id is already stored (or repeated within the
   batch) are dropped: the same contribution can arrive again at another offset after a processor
   crash, where no offset token can recognise it. If any were dropped, the token gets a digest of
   the ids that remain, so a repeat with different content never matches an earlier insert.
2. the batch is recorded in ``sink_offsets`` (skipped when the batch is a rebuild of a recorded
   one); ``before_insert``.
3. INSERT with the token (a materialized view fans it out into ``funnel_hourly`` in the same
   insert; a deduplicated block is skipped there too); ``after_insert``.

After a crash at any point the consumer rebuilds the last recorded batch with the same offsets
and writes it again: the insert is dropped by ClickHouse as a duplicate of the token, or (for
contributions) finds every id stored and inserts nothing. Transient ClickHouse errors surface as
``TransientClickHouseError`` (retry the same batch); anything else is a bug or a schema mismatch
and propagates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from clickhouse_connect.driver.client import Client

from sinks.clickhouse import TransientClickHouseError, insert_rows, is_transient
from sinks.rows import SINK_OFFSETS, Table, column_index, hour_bounds

CrashHook = Callable[[str, str], None]  # (crash point, batch token)
CRASH_POINTS = ("before_record", "before_insert", "after_insert", "after_commit")
T = TypeVar("T")


@dataclass(slots=True)
class Batch:
    """Rows of one contiguous offset range of one partition, bound for one table."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    table: Table
    rows: list[list[Any]] = field(default_factory=list)
    id_column: str | None = None  # funnel contributions: drop ids already stored
    messages: int = 0  # records in the range (rows + dead letters + skipped)
    rebuild: bool = False  # rebuilt from a sink_offsets record: already recorded

    @property
    def token(self) -> str:
        return f"{self.topic}:{self.partition}:{self.first_offset}-{self.last_offset}"


@dataclass(frozen=True, slots=True)
class WriteResult:
    inserted: int
    duplicates: int  # contributions dropped (already stored or repeated in the batch)
    token: str


@dataclass(frozen=True, slots=True)
class RecordedBatch:
    first_offset: int
    last_offset: int


class BatchWriter:
    """Writes batches; one instance per ClickHouse client (not thread-safe)."""

    def __init__(self, client: Client, *, crash_hook: CrashHook | None = None, lookup_chunk: int = 2000):
        self.client = client
        self.crash_hook = crash_hook
        self.lookup_chunk = lookup_chunk

    def _crash(self, point: str, batch: Batch) -> None:
        if self.crash_hook is not None:
            self.crash_hook(point, batch.token)

    def write(self, batch: Batch) -> WriteResult:
        """Record (write-ahead) and insert one batch; raises ``TransientClickHouseError`` to retry."""
        rows = batch.rows
        duplicates = 0
        token = batch.token
        if batch.id_column is not None and rows:
            rows = _unique_by(rows, column_index(batch.table, batch.id_column))
            stored = _transient(lambda: self.stored_ids(batch.table, batch.id_column or "", rows))
            i = column_index(batch.table, batch.id_column)
            kept = [r for r in rows if r[i] not in stored]
            duplicates = len(batch.rows) - len(kept)
            if duplicates:
                digest = hashlib.sha256("\x1f".join(str(r[i]) for r in kept).encode()).hexdigest()[:16]
                token = f"{token}:{digest}"
            rows = kept
        self._crash("before_record", batch)
        if rows and not batch.rebuild:
            record = [batch.topic, batch.partition, batch.first_offset, batch.last_offset, len(rows), token]
            _transient(
                lambda: insert_rows(
                    self.client, SINK_OFFSETS.name, SINK_OFFSETS.columns, [[*record, datetime.now(UTC)]]
                )
            )
        self._crash("before_insert", batch)
        if rows:
            _transient(
                lambda: insert_rows(
                    self.client, batch.table.name, batch.table.columns, rows, dedup_token=token
                )
            )
        self._crash("after_insert", batch)
        return WriteResult(inserted=len(rows), duplicates=duplicates, token=token)

    def stored_ids(self, table: Table, id_column: str, rows: Sequence[Sequence[Any]]) -> set[str]:
        """Ids of ``rows`` already in ``table`` (lookup bounded by the rows' hours)."""
        lo, hi = hour_bounds(rows)
        i = column_index(table, id_column)
        ids = sorted({str(r[i]) for r in rows})
        found: set[str] = set()
        for start in range(0, len(ids), self.lookup_chunk):
            chunk = ids[start : start + self.lookup_chunk]
            result = self.client.query(
                f"SELECT DISTINCT {id_column} FROM {table.name} "
                "WHERE hour >= {lo:DateTime('UTC')} AND hour <= {hi:DateTime('UTC')} "
                f"AND {id_column} IN {{ids:Array(String)}}",
                parameters={"lo": lo, "hi": hi, "ids": chunk},
            )
            found.update(str(r[0]) for r in result.result_rows)
        return found

    def recorded_batches(self, topics: Iterable[str]) -> dict[tuple[str, int], RecordedBatch]:
        """The highest recorded batch per (topic, partition) - the sink's own offset truth."""
        names = sorted(set(topics))
        if not names:
            return {}
        result = _transient(
            lambda: self.client.query(
                f"SELECT topic, partition, argMax(first_offset, last_offset), max(last_offset) "
                f"FROM {SINK_OFFSETS.name} WHERE topic IN {{topics:Array(String)}} GROUP BY topic, partition",
                parameters={"topics": names},
            )
        )
        return {(str(t), int(p)): RecordedBatch(int(f), int(last)) for t, p, f, last in result.result_rows}


def _unique_by(rows: list[list[Any]], i: int) -> list[list[Any]]:
    """First row per id, in order."""
    seen: set[Any] = set()
    out = []
    for r in rows:
        if r[i] not in seen:
            seen.add(r[i])
            out.append(r)
    return out


def _transient(call: Callable[[], T]) -> T:
    """Run a ClickHouse call; transient failures become ``TransientClickHouseError``."""
    try:
        return call()
    except TransientClickHouseError:
        raise
    except Exception as exc:
        if is_transient(exc):
            raise TransientClickHouseError(f"{type(exc).__name__}: {exc}") from exc
        raise
