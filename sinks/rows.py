"""Row shapes of ctpipe's ClickHouse tables: each table name and column list exists once here.

Input: one Kafka message value (bytes) of EVENTS, SESSIONS, CORRELATED or FUNNEL: a record or a
packed array of records (wire shapes in ``schemas.records``). Output: rows (lists in the table's
column order) for its table, built by pure functions, and the records that cannot be rows. A
record that cannot become a row - undecodable JSON, a shape violation, an unknown funnel
measure, a number or time outside its column's range - is a ``PoisonRecord`` with a reason; the
sink sends that record alone to the dead-letter topic. Range checks live here because a
value ClickHouse refuses would otherwise fail the whole batch insert, forever.

The DDL in ``sinks/ddl/*.sql`` declares the same columns (an integration test compares them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from schemas.canonical import CanonicalEvent
from schemas.codec import DecodeError, dumps
from schemas.funnel import KEY_FIELDS, MEASURE_SET, MEASURES
from schemas.records import CorrelatedRetrieval, FunnelDelta, SessionRecord, unpack
from schemas.topics import CORRELATED, EVENTS, FUNNEL, SESSIONS, Topic


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[str, ...]


# sinks/ddl/0001_smoke_key_counts.sql
SMOKE_KEY_COUNTS = Table("smoke_key_counts", ("run_id", "topic", "key", "n"))

# sinks/ddl/0002_events.sql - CanonicalEvent, one row per event id (ReplacingMergeTree).
EVENTS_TABLE = Table(
    "events",
    (
        "event_id",
        "emitter_event_id",
        "seq",
        "session_id",
        "ctx_token",
        "parent_session_id",
        "agent_id",
        "content_scope",
        "event_type",
        "timestamp",
        "source_role",
        "content_telemetry_id",
        "content_url",
        "canonical_url",
        "owner_domain",
        "content_id",
        "product_id",
        "license_ref",
        "turn_id",
        "privacy_level",
        "scope",
        "cached",
        "tokens_ingested",
        "citation_type",
        "position",
        "display_type",
        "engagement_type",
        "bot_category",
        "bot_name",
        "media_type",
        "provenance",
        "turn_json",
        "data_json",
        "extra_json",
        "source_format",
        "source_version",
        "source_kind",
        "emitter",
        "notes",
    ),
)

#: SessionRecord's per-session counters (Int64 columns, range-checked in ``session_row``).
SESSION_COUNTS = (
    "event_count",
    "late_events",
    "duplicate_events",
    "turns",
    "grounded",
    "cited",
    "displayed",
    "engaged",
    "cited_without_grounded",
    "displayed_without_cited",
    "displayed_without_grounded",
)

# sinks/ddl/0003_sessions.sql - SessionRecord, latest revision wins (ReplacingMergeTree(revision)).
SESSIONS_TABLE = Table(
    "sessions",
    (
        "session_id",
        "revision",
        "session_time",
        "agent_id",
        "content_scope",
        "started_at",
        "ended_at",
        "closed_by",
        *SESSION_COUNTS,
        "outcome_type",
        "outcome_value_minor",
        "outcome_currency",
        "user_segments",
        "source_formats",
        "emitters",
    ),
)

# sinks/ddl/0004_correlated_retrievals.sql - CorrelatedRetrieval, last record per retrieval wins.
CORRELATED_TABLE = Table(
    "correlated_retrievals",
    (
        "retrieval_id",
        "content_telemetry_id",
        "canonical_url",
        "content_id",
        "owner_domain",
        "status",
        "observer_roles",
        "observer_count",
        "agent_session_id",
        "agent_id",
        "first_seen",
        "last_seen",
        "observations_json",
    ),
)

# sinks/ddl/0005_funnel.sql - every FunnelDelta (ReplacingMergeTree by contribution id) ...
FUNNEL_CONTRIBUTIONS = Table(
    "funnel_contributions",
    ("contribution_id", *KEY_FIELDS, *MEASURES, "conversion_value", "origin"),
)
# ... summed per row key by the materialized view funnel_hourly_mv into SummingMergeTree.
FUNNEL_HOURLY = Table("funnel_hourly", (*KEY_FIELDS, *MEASURES, "conversion_value"))
FUNNEL_HOURLY_MV = "funnel_hourly_mv"
FUNNEL_DAILY_VIEW = "funnel_daily"
FUNNEL_STAGE_RATIOS_VIEW = "funnel_stage_ratios"

# sinks/ddl/0006_sink_offsets.sql - the batches the sink wrote (written ahead of each insert).
SINK_OFFSETS = Table(
    "sink_offsets",
    ("topic", "partition", "first_offset", "last_offset", "rows", "token", "inserted_at"),
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# DateTime('UTC') holds 1970-01-01 .. 2106-02-07; DateTime64 1900 .. 2299. Keep both well inside.
_DT_MIN = datetime(1970, 1, 2, tzinfo=UTC)
_DT_MAX = datetime(2105, 12, 31, tzinfo=UTC)
_DT64_MIN = datetime(1900, 1, 2, tzinfo=UTC)
_DT64_MAX = datetime(2299, 12, 30, tzinfo=UTC)


class PoisonRecord(ValueError):
    """A record that can never become a row (permanent: goes to the dead-letter topic)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# ---------------------------------------------------------------------------------------------
# value checks


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _time(value: datetime, field: str, *, wide: bool = True) -> datetime:
    ts = _utc(value)
    lo, hi = (_DT64_MIN, _DT64_MAX) if wide else (_DT_MIN, _DT_MAX)
    if not lo <= ts <= hi:
        raise PoisonRecord("time out of range", f"{field}={ts.isoformat()}")
    return ts


def _opt_time(value: datetime | None, field: str) -> datetime | None:
    return None if value is None else _time(value, field)


def _int(value: int | None, field: str, lo: int = INT64_MIN, hi: int = INT64_MAX) -> int | None:
    if value is None:
        return None
    if not lo <= value <= hi:
        raise PoisonRecord("number out of range", f"{field}={value}")
    return value


def _req_int(value: int, field: str, lo: int = INT64_MIN, hi: int = INT64_MAX) -> int:
    out = _int(value, field, lo, hi)
    assert out is not None
    return out


# ---------------------------------------------------------------------------------------------
# records -> rows (pure)


def event_row(event: CanonicalEvent) -> list[Any]:
    """A canonical event as an ``events`` row."""
    values: dict[str, Any] = {
        "seq": _req_int(event.seq, "seq"),
        "timestamp": _time(event.timestamp, "timestamp"),
        "tokens_ingested": _int(event.tokens_ingested, "tokens_ingested"),
        "event_type": event.event_type.value,
        "source_format": event.source_format.value,
        "source_kind": event.source_kind.value,
        "notes": list(event.notes),
    }
    return [values[c] if c in values else getattr(event, c) for c in EVENTS_TABLE.columns]


def session_row(record: SessionRecord, received_at: datetime) -> list[Any]:
    """A session record as a ``sessions`` row; ``session_time`` (partition, TTL) is its start,
    else its end, else when Kafka received the record (deterministic for a given record)."""
    started = _opt_time(record.started_at, "started_at")
    ended = _opt_time(record.ended_at, "ended_at")
    values: dict[str, Any] = {
        "revision": _req_int(record.revision, "revision", 0, 2**32 - 1),
        "session_time": _time(started or ended or received_at, "session_time"),
        "started_at": started,
        "ended_at": ended,
        "outcome_value_minor": _int(record.outcome_value_minor, "outcome_value_minor"),
        "user_segments": list(record.user_segments),
        "source_formats": list(record.source_formats),
        "emitters": list(record.emitters),
    }
    for name in SESSION_COUNTS:
        values[name] = _req_int(getattr(record, name), name)
    return [values[c] if c in values else getattr(record, c) for c in SESSIONS_TABLE.columns]


def retrieval_row(record: CorrelatedRetrieval) -> list[Any]:
    """A correlated retrieval as a ``correlated_retrievals`` row (observations kept as JSON)."""
    values: dict[str, Any] = {
        "observer_roles": list(record.observer_roles),
        "observer_count": len(record.observations),
        "first_seen": _time(record.first_seen, "first_seen"),
        "last_seen": _time(record.last_seen, "last_seen"),
        "observations_json": dumps([o.model_dump(mode="json") for o in record.observations]).decode(),
    }
    return [values[c] if c in values else getattr(record, c) for c in CORRELATED_TABLE.columns]


def contribution_row(delta: FunnelDelta) -> list[Any]:
    """A funnel delta as a ``funnel_contributions`` row: every measure a column (0 if absent)."""
    unknown = set(delta.measures) - MEASURE_SET
    if unknown:
        raise PoisonRecord("unknown funnel measure", ", ".join(sorted(unknown)))
    hour = _time(delta.hour, "hour", wide=False)
    if hour.minute or hour.second or hour.microsecond:
        raise PoisonRecord("hour not truncated to the hour", hour.isoformat())
    # signed: correction deltas of late amendments may be negative (sinks/ddl/0005_funnel.sql)
    measures = [_req_int(delta.measures.get(m, 0), m) for m in MEASURES]
    value = {str(c): _req_int(v, f"conversion_value[{c}]") for c, v in delta.conversion_value.items() if v}
    keys = [getattr(delta, f) for f in KEY_FIELDS[1:]]
    return [delta.contribution_id, hour, *keys, *measures, value, delta.origin]


# ---------------------------------------------------------------------------------------------
# topic -> table


@dataclass(frozen=True, slots=True)
class Destination:
    """Where one topic's records go and how one record becomes rows."""

    topic: Topic  # base (un-namespaced) declaration
    table: Table
    build: Callable[[Any, datetime], list[list[Any]]]  # (decoded record, Kafka timestamp) -> rows
    id_column: str | None = None  # contributions: dropped when the id is already stored


def _validating(model: Callable[[Any], Any], obj: Any) -> Any:
    try:
        return model(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "$"
        raise PoisonRecord("invalid record", f"{where}: {first['msg']} ({exc.error_count()} errors)") from exc
    except (TypeError, ValueError, UnicodeDecodeError) as exc:
        raise PoisonRecord("undecodable record", str(exc)) from exc


def _build_events(obj: Any, _ts: datetime) -> list[list[Any]]:
    """An EVENTS envelope (schemas.records) -> one row per canonical event; a bare canonical event
    is accepted too."""
    if type(obj) is dict and obj.get("t") == "d":  # processors.normalize's envelope
        events = obj.get("e") or []
        if type(events) is not list:
            raise PoisonRecord("invalid record", "envelope 'e' is not a list")
        return [event_row(_validating(CanonicalEvent.model_validate, e)) for e in events]
    return [event_row(_validating(CanonicalEvent.model_validate, obj))]


def _build_session(obj: Any, ts: datetime) -> list[list[Any]]:
    return [session_row(_validating(SessionRecord.model_validate, obj), ts)]


def _build_retrieval(obj: Any, _ts: datetime) -> list[list[Any]]:
    return [retrieval_row(_validating(CorrelatedRetrieval.model_validate, obj))]


def _build_contribution(obj: Any, _ts: datetime) -> list[list[Any]]:
    return [contribution_row(_validating(FunnelDelta.model_validate, obj))]


DESTINATIONS: tuple[Destination, ...] = (
    Destination(FUNNEL, FUNNEL_CONTRIBUTIONS, _build_contribution, id_column="contribution_id"),
    Destination(SESSIONS, SESSIONS_TABLE, _build_session),
    Destination(CORRELATED, CORRELATED_TABLE, _build_retrieval),
    Destination(EVENTS, EVENTS_TABLE, _build_events),
)


def destinations(namespace: str = "") -> dict[str, Destination]:
    """Namespaced topic name -> destination, for the sink's subscription."""
    return {d.topic.namespaced(namespace).name: d for d in DESTINATIONS}


def _build_one(dest: Destination, obj: Any, timestamp: datetime) -> list[list[Any]]:
    try:
        return dest.build(obj, timestamp)
    except PoisonRecord:
        raise
    except Exception as exc:  # bad input never crashes the sink
        raise PoisonRecord("unbuildable record", f"{type(exc).__name__}: {exc}") from exc


@dataclass(slots=True)
class Built:
    """What one Kafka message gave: rows, and the records that could not become rows."""

    rows: list[list[Any]]
    poison: list[tuple[bytes, PoisonRecord]]  # (the record's bytes, why)


def build_message(dest: Destination, raw: bytes | None, timestamp: datetime) -> Built:
    """One message (a record or a packed array, ``schemas.records.pack``) -> rows of
    ``dest.table`` and its poison records, each on its own (a bad record never costs the good
    ones of its message). Never raises."""
    if raw is None:
        return Built([], [(b"", PoisonRecord("empty record", "no value (tombstone)"))])
    try:
        records = unpack(raw)
    except DecodeError as exc:
        return Built([], [(raw, PoisonRecord("undecodable JSON", str(exc)))])
    if not records:  # records.pack never writes an empty array
        return Built([], [(raw, PoisonRecord("invalid record", "empty packed message"))])
    single = len(records) == 1
    out = Built([], [])
    for obj in records:
        try:
            out.rows.extend(_build_one(dest, obj, timestamp))
        except PoisonRecord as exc:
            out.poison.append((raw if single else dumps(obj), exc))
    return out


def build_rows(dest: Destination, raw: bytes | None, timestamp: datetime) -> list[list[Any]]:
    """One message -> its rows of ``dest.table``; raises ``PoisonRecord`` (the first) if any
    record of it cannot become rows."""
    built = build_message(dest, raw, timestamp)
    if built.poison:
        raise built.poison[0][1]
    return built.rows


def column_index(table: Table, column: str) -> int:
    return table.columns.index(column)


def hour_bounds(rows: Sequence[Sequence[Any]]) -> tuple[datetime, datetime]:
    """Smallest and largest ``hour`` of funnel contribution rows (bounds the id lookup)."""
    i = column_index(FUNNEL_CONTRIBUTIONS, "hour")
    hours = [r[i] for r in rows]
    return min(hours), max(hours)
