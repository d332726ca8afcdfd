"""Row building of the ClickHouse sink (``sinks.rows``): pure, no broker, no ClickHouse."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from schemas.canonical import CanonicalEvent, DocKind, EventType, SourceFormat
from schemas.codec import dumps, loads
from schemas.funnel import KEY_FIELDS, MEASURES, FunnelCounts, FunnelKey
from schemas.records import CorrelatedRetrieval, FunnelDelta, Observation, SessionRecord, encode, encode_event
from sinks.clickhouse import DDL_DIR, RETENTION_PLACEHOLDER, is_transient, load_migrations
from sinks.rows import (
    CORRELATED_TABLE,
    EVENTS_TABLE,
    FUNNEL_CONTRIBUTIONS,
    FUNNEL_HOURLY,
    SESSIONS_TABLE,
    SINK_OFFSETS,
    PoisonRecord,
    Table,
    build_rows,
    destinations,
)
from sinks.writer import Batch, _unique_by

HOUR = datetime(2026, 3, 4, 5, tzinfo=UTC)
NOW = datetime(2026, 3, 4, 6, 7, 8, tzinfo=UTC)
DEST = destinations("ns")


def delta(scope: str = "s1", **measures: int) -> FunnelDelta:
    counts = FunnelCounts()
    for m, n in (measures or {"retrieved": 1}).items():
        counts.add(m, n)
    counts.add_value("USD", 250)
    return FunnelDelta.build(
        FunnelKey(HOUR, "example.com", "c-1", "agent-1", "full", "agent"), counts, scope=scope
    )


def as_dict(table: Table, row: list[object]) -> dict[str, object]:
    assert len(row) == len(table.columns)
    return dict(zip(table.columns, row, strict=True))


def test_destinations_cover_the_four_sink_topics_namespaced() -> None:
    assert sorted(DEST) == [
        "ns.ctpipe.correlated",
        "ns.ctpipe.events",
        "ns.ctpipe.funnel",
        "ns.ctpipe.sessions",
    ]
    assert DEST["ns.ctpipe.funnel"].table is FUNNEL_CONTRIBUTIONS
    assert DEST["ns.ctpipe.funnel"].id_column == "contribution_id"
    assert all(d.id_column is None for n, d in DEST.items() if n != "ns.ctpipe.funnel")


def test_contribution_row_has_every_measure_as_a_column() -> None:
    d = delta(retrieved=3, cited_paraphrase=2, checkouts=1)
    row = as_dict(FUNNEL_CONTRIBUTIONS, build_rows(DEST["ns.ctpipe.funnel"], encode(d), NOW)[0])
    assert row["contribution_id"] == d.contribution_id
    assert row["hour"] == HOUR
    assert [row[m] for m in MEASURES].count(0) == len(MEASURES) - 3
    assert (row["retrieved"], row["cited_paraphrase"], row["checkouts"]) == (3, 2, 1)
    assert row["conversion_value"] == {"USD": 250}
    assert FUNNEL_HOURLY.columns == (*KEY_FIELDS, *MEASURES, "conversion_value")


def test_naive_hour_is_utc() -> None:
    raw = loads(encode(delta()))
    raw["hour"] = "2026-03-04T05:00:00"
    row = as_dict(FUNNEL_CONTRIBUTIONS, build_rows(DEST["ns.ctpipe.funnel"], dumps(raw), NOW)[0])
    assert row["hour"] == HOUR


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: r.update(measures={"retrieved": 1, "bogus": 2}), "unknown funnel measure"),
        (lambda r: r.update(measures={"retrieved": -1}), None),  # a correction delta may be negative
        (lambda r: r.update(measures={"retrieved": 2**63 - 1}), None),  # Int64 max is fine
        (lambda r: r.update(measures={"retrieved": 2**63}), "number out of range"),
        (lambda r: r.update(measures={"retrieved": 2**64}), "invalid record"),  # beyond orjson/pydantic
        (lambda r: r.update(conversion_value={"USD": 2**63}), "number out of range"),
        (lambda r: r.update(hour="2026-03-04T05:30:00Z"), "hour not truncated to the hour"),
        (lambda r: r.update(hour="1969-12-31T23:00:00Z"), "time out of range"),
        (lambda r: r.pop("contribution_id"), "invalid record"),
        (lambda r: r.update(extra_field=1), "invalid record"),
    ],
)
def test_bad_contributions_are_poison_with_a_reason(mutate, reason: str | None) -> None:  # type: ignore[no-untyped-def]
    raw = loads(encode(delta()))
    mutate(raw)
    if reason is None:
        build_rows(DEST["ns.ctpipe.funnel"], json.dumps(raw).encode(), NOW)[0]
        return
    with pytest.raises(PoisonRecord) as info:
        build_rows(DEST["ns.ctpipe.funnel"], json.dumps(raw).encode(), NOW)[0]  # orjson refuses 2**64
    assert info.value.reason == reason


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b"[]", b"null", b'"x"', None])
def test_undecodable_bytes_are_poison_on_every_topic(raw: bytes | None) -> None:
    for dest in DEST.values():
        with pytest.raises(PoisonRecord):
            build_rows(dest, raw, NOW)[0]


def event(**over: object) -> CanonicalEvent:
    base: dict[str, object] = dict(
        event_id="e-1", seq=0, session_id="s-1", event_type=EventType.CITED, timestamp=NOW,
        citation_type="paraphrase", notes=("stripped:turn",), source_format=SourceFormat.CONTENT_TELEMETRY,
        source_version="0.1", source_kind=DocKind.SESSION, emitter="test",
    )  # fmt: skip
    base.update(over)
    return CanonicalEvent.model_validate(base)


def test_event_row_keeps_every_canonical_field() -> None:
    ev = event()
    row = as_dict(EVENTS_TABLE, build_rows(DEST["ns.ctpipe.events"], encode_event(ev), NOW)[0])
    assert set(EVENTS_TABLE.columns) == set(CanonicalEvent.model_fields)
    assert row["event_type"] == "cited" and row["source_kind"] == "session"
    assert row["notes"] == ["stripped:turn"] and row["timestamp"] == NOW and row["cached"] is None
    with pytest.raises(PoisonRecord, match="out of range"):
        build_rows(DEST["ns.ctpipe.events"], encode_event(event(tokens_ingested=2**63)), NOW)


def test_an_events_envelope_becomes_one_row_per_event() -> None:
    """processors.normalize writes one EVENTS envelope per document (schemas.records)."""
    evs = [event(event_id=f"e-{i}", seq=i) for i in range(3)]
    envelope = b'{"t":"d","s":"s-1","h":null,"e":[' + b",".join(encode_event(e) for e in evs) + b"]}"
    rows = [as_dict(EVENTS_TABLE, r) for r in build_rows(DEST["ns.ctpipe.events"], envelope, NOW)]
    assert [r["event_id"] for r in rows] == ["e-0", "e-1", "e-2"]
    assert build_rows(DEST["ns.ctpipe.events"], b'{"t":"d","s":null,"h":null,"e":[]}', NOW) == []
    with pytest.raises(PoisonRecord):
        build_rows(DEST["ns.ctpipe.events"], b'{"t":"d","s":"s-1","h":null,"e":[{"bogus":1}]}', NOW)


def session(**over: object) -> SessionRecord:
    base: dict[str, object] = dict(
        session_id="s-1", revision=1, agent_id="a", content_scope="full", started_at=None, ended_at=None,
        closed_by="ended", event_count=3, late_events=0, duplicate_events=0, turns=1, grounded=1, cited=1,
        displayed=0, engaged=0, cited_without_grounded=0, displayed_without_cited=0, displayed_without_grounded=0,
    )  # fmt: skip
    base.update(over)
    return SessionRecord.model_validate(base)


def test_session_time_is_start_else_end_else_kafka_time() -> None:
    dest = DEST["ns.ctpipe.sessions"]
    start, end = NOW - timedelta(hours=2), NOW - timedelta(hours=1)
    assert set(SESSIONS_TABLE.columns) == set(SessionRecord.model_fields) | {"session_time"}
    rows = [
        as_dict(SESSIONS_TABLE, build_rows(dest, encode(session(started_at=start, ended_at=end)), NOW)[0]),
        as_dict(SESSIONS_TABLE, build_rows(dest, encode(session(ended_at=end)), NOW)[0]),
        as_dict(SESSIONS_TABLE, build_rows(dest, encode(session()), NOW)[0]),
    ]
    assert [r["session_time"] for r in rows] == [start, end, NOW]
    assert rows[0]["revision"] == 1


def test_retrieval_row_keeps_observations_as_json() -> None:
    obs = Observation(event_id="e-1", source_role="edge", emitter="cdn", timestamp=NOW)
    rec = CorrelatedRetrieval(
        retrieval_id="r-1", content_telemetry_id="ct-1", canonical_url="https://example.com/a", content_id=None,
        owner_domain="example.com", status="corroborated", observer_roles=("agent", "edge"), agent_session_id="s",
        agent_id="a", first_seen=NOW, last_seen=NOW, observations=(obs, obs),
    )  # fmt: skip
    row = as_dict(CORRELATED_TABLE, build_rows(DEST["ns.ctpipe.correlated"], encode(rec), NOW)[0])
    assert row["observer_count"] == 2 and row["observer_roles"] == ["agent", "edge"]
    assert [o["source_role"] for o in loads(str(row["observations_json"]))] == ["edge", "edge"]


def _ddl_columns(sql: str, table: str) -> tuple[str, ...]:
    """The table's columns as its CREATE TABLE declares them, then as later migrations' ``ADD
    COLUMN ... AFTER`` statements place theirs, in file order."""
    body = sql.split(f"CREATE TABLE IF NOT EXISTS {table}\n(", 1)[1].split("\n)", 1)[0]
    names = [ln.split()[0] for ln in body.splitlines() if ln.strip() and not ln.strip().startswith("INDEX")]
    pattern = rf"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS (\w+) [\w()]+ AFTER (\w+);"
    for column, after in re.findall(pattern, sql):
        names.insert(names.index(after) + 1, column)
    return tuple(names)


def test_ddl_files_declare_the_row_shapes_with_ttl_and_dedup_window() -> None:
    sql = "\n".join(m.sql for m in load_migrations(DDL_DIR))
    for table in (
        EVENTS_TABLE,
        SESSIONS_TABLE,
        CORRELATED_TABLE,
        FUNNEL_CONTRIBUTIONS,
        FUNNEL_HOURLY,
        SINK_OFFSETS,
    ):
        assert _ddl_columns(sql, table.name) == table.columns, table.name
        ddl = sql.split(f"CREATE TABLE IF NOT EXISTS {table.name}\n", 1)[1].split(";", 1)[0]
        assert "PARTITION BY toYYYYMM(" in ddl and f"INTERVAL {RETENTION_PLACEHOLDER} DAY" in ddl, table.name
        assert re.search(r"non_replicated_deduplication_window = [1-9]", ddl), table.name
    assert "CREATE MATERIALIZED VIEW IF NOT EXISTS funnel_hourly_mv TO funnel_hourly" in sql
    assert (
        "CREATE VIEW IF NOT EXISTS funnel_daily" in sql
        and "CREATE VIEW IF NOT EXISTS funnel_stage_ratios" in sql
    )


def test_batch_token_is_the_offset_range_and_ids_dedupe_in_order() -> None:
    b = Batch("ns.ctpipe.funnel", 3, 100, 199, FUNNEL_CONTRIBUTIONS)
    assert b.token == "ns.ctpipe.funnel:3:100-199"
    rows = [["a", 1], ["b", 2], ["a", 3]]
    assert _unique_by(rows, 0) == [["a", 1], ["b", 2]]


def test_transient_errors_are_told_from_permanent_ones() -> None:
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    assert is_transient(OperationalError("connection refused"))
    assert is_transient(DatabaseError("Code: 252. DB::Exception: Too many parts (300). (TOO_MANY_PARTS)"))
    assert is_transient(DatabaseError("Code: 159. Timeout exceeded"))
    assert is_transient(ConnectionResetError())
    assert not is_transient(DatabaseError("Code: 60. DB::Exception: Unknown table (UNKNOWN_TABLE)"))
    assert not is_transient(DatabaseError("Code: 62. Syntax error"))
