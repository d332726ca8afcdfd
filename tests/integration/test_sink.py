"""The ClickHouse sink on the real broker and ClickHouse: every topic lands, duplicates count once,
poison goes to the DLQ, transient ClickHouse errors retry without DLQ, replays add nothing."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from confluent_kafka import Consumer

from deploy.kafka.topics import delete_topics, ensure_topics
from producers.kafka import make_producer, produce_all
from schemas import dlq
from schemas.canonical import CanonicalEvent, DocKind, EventType, SourceFormat
from schemas.funnel import MEASURES, FunnelCounts, FunnelKey, hour_of, merge_rows, totals
from schemas.records import (
    CorrelatedRetrieval,
    FunnelDelta,
    Observation,
    SessionRecord,
    encode,
    encode_event,
)
from schemas.topics import CORRELATED, DLQ, EVENTS, FUNNEL, SESSIONS, Topic
from sinks.consumer import ClickHouseSink, SinkConfig
from sinks.report import as_totals, funnel_report
from tests.infra import Infra

pytestmark = pytest.mark.integration

#: Recent enough for every table's retention TTL (rows older than it are dropped on insert).
BASE_HOUR = hour_of(datetime.now(UTC) - timedelta(days=2))


def make_deltas(n: int, seed: int = 7) -> list[FunnelDelta]:
    """``n`` distinct contributions over a few owners, contents, hours and roles."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        key = FunnelKey(
            BASE_HOUR + timedelta(hours=i % 5),
            f"owner{i % 3}.com",
            f"https://owner{i % 3}.com/doc/{i % 7}",
            f"agent-{i % 2}",
            "full",
            ("agent", "edge")[i % 2],
        )
        counts = FunnelCounts()
        for m in rng.sample(MEASURES, 3):
            counts.add(m, rng.randint(1, 4))
        if i % 11 == 0:
            counts.add_value(("USD", "EUR")[i % 2], rng.randint(100, 9000))
        out.append(FunnelDelta.build(key, counts, scope=f"session-{i}:r0"))
    return out


def expected(deltas: list[FunnelDelta]) -> dict[tuple[object, ...], dict[str, object]]:
    unique = {d.contribution_id: d for d in deltas}
    return totals(merge_rows((d.key, d.counts) for d in unique.values()))


def make_event(i: int) -> CanonicalEvent:
    return CanonicalEvent(
        event_id=f"ev-{i}", seq=i, session_id=f"s-{i % 4}", event_type=EventType.RETRIEVED,
        timestamp=BASE_HOUR + timedelta(minutes=i), content_url=f"https://owner0.com/doc/{i}",
        source_format=SourceFormat.CONTENT_TELEMETRY, source_version="0.1", source_kind=DocKind.SESSION,
        emitter="test",
    )  # fmt: skip


def make_session(i: int, revision: int) -> SessionRecord:
    return SessionRecord(
        session_id=f"s-{i}", revision=revision, agent_id="agent-0", content_scope="full",
        started_at=BASE_HOUR, ended_at=BASE_HOUR + timedelta(minutes=30), closed_by="ended",
        event_count=10 + revision, late_events=revision, duplicate_events=0, turns=2, grounded=1, cited=1,
        displayed=1, engaged=0, cited_without_grounded=0, displayed_without_cited=0, displayed_without_grounded=0,
    )  # fmt: skip


def make_retrieval(i: int) -> CorrelatedRetrieval:
    obs = Observation(event_id=f"ev-{i}", source_role="agent", emitter="test", timestamp=BASE_HOUR)
    return CorrelatedRetrieval(
        retrieval_id=f"r-{i}", content_telemetry_id=f"ct-{i}", canonical_url=f"https://owner0.com/doc/{i}",
        content_id=None, owner_domain="owner0.com", status="standalone", observer_roles=("agent",),
        agent_session_id=f"s-{i}", agent_id="agent-0", first_seen=BASE_HOUR, last_seen=BASE_HOUR,
        observations=(obs,),
    )  # fmt: skip


def sink_topics(ns: str) -> dict[str, Topic]:
    return {t.name: t.namespaced(ns) for t in (FUNNEL, SESSIONS, CORRELATED, EVENTS, DLQ)}


@pytest.fixture
def topics(infra: Infra, unique: str) -> Iterator[dict[str, Topic]]:
    declared = sink_topics(unique)
    ensure_topics(infra.bootstrap, declared.values())
    yield declared
    delete_topics(infra.bootstrap, [t.name for t in declared.values()])


def produce_funnel(bootstrap: str, topic: str, deltas: list[FunnelDelta]) -> int:
    return produce_all(
        make_producer(bootstrap), topic, ((d.contribution_id.encode(), encode(d)) for d in deltas)
    )


def dead_letters(
    bootstrap: str, topic: str, expected_count: int, timeout: float = 30.0
) -> list[dlq.DeadLetter]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    letters: list[dlq.DeadLetter] = []
    deadline = datetime.now(UTC) + timedelta(seconds=timeout)
    try:
        while datetime.now(UTC) < deadline and len(letters) < expected_count:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                letters.append(dlq.decode(msg.value() or b""))
        # nothing more than expected arrives
        extra = consumer.poll(1.0)
        if extra is not None and extra.error() is None:
            letters.append(dlq.decode(extra.value() or b""))
    finally:
        consumer.close()
    return letters


def config(infra: Infra, unique: str, **kw: Any) -> SinkConfig:
    base: dict[str, Any] = {
        "group_id": f"{unique}-sink",
        "batch_rows": 64,
        "batch_seconds": 0.3,
        "backoff_initial": 0.05,
        "backoff_max": 0.4,
    }
    base.update(kw)
    return SinkConfig(bootstrap=infra.bootstrap, namespace=unique, **base)


def scalar(ch: Any, sql: str) -> int:
    return int(ch.query(sql).result_rows[0][0])


def test_sink_writes_every_topic_once_and_duplicates_count_once(  # type: ignore[no-untyped-def]
    infra: Infra, unique: str, ch, topics: dict[str, Topic]
) -> None:
    deltas = make_deltas(400)
    redelivered = deltas[::10]  # the same contributions again, at later offsets (processor crash)
    produce_funnel(infra.bootstrap, topics[FUNNEL.name].name, deltas + redelivered)
    producer = make_producer(infra.bootstrap)
    events = [make_event(i) for i in range(120)]
    produce_all(
        producer, topics[EVENTS.name].name, ((f"s-{e.seq % 4}".encode(), encode_event(e)) for e in events)
    )
    produce_all(  # 10 events delivered twice
        producer,
        topics[EVENTS.name].name,
        ((f"s-{e.seq % 4}".encode(), encode_event(e)) for e in events[:10]),
    )
    sessions = [make_session(i, r) for i in range(20) for r in ((0, 1) if i % 2 else (0,))]
    produce_all(producer, topics[SESSIONS.name].name, ((s.session_id.encode(), encode(s)) for s in sessions))
    retrievals = [make_retrieval(i) for i in range(30)]
    produce_all(
        producer, topics[CORRELATED.name].name, ((r.retrieval_id.encode(), encode(r)) for r in retrievals)
    )
    poison = [(b"k1", b"{not json"), (b"k2", b'{"contribution_id": "x"}'), (None, b"\xff")]
    produce_all(producer, topics[FUNNEL.name].name, ((k or b"", v) for k, v in poison))

    sink = ClickHouseSink(config(infra, unique), ch)
    stats = sink.run(until_caught_up=True, timeout=90)

    assert stats.messages == len(deltas) + len(redelivered) + len(events) + 10 + len(sessions) + 30 + 3
    assert stats.duplicates == len(redelivered)
    assert stats.dead_letters == 3 and stats.transient_errors == 0
    assert stats.batches >= 4  # one insert per (topic, partition) batch, several per partition here

    report = funnel_report(ch)
    assert as_totals(report) == expected(deltas)
    assert scalar(ch, "SELECT count() FROM funnel_contributions") == len(deltas)
    assert scalar(ch, "SELECT count() FROM events FINAL") == len(events)
    assert scalar(ch, "SELECT count() FROM correlated_retrievals FINAL") == 30
    revisions = dict(ch.query("SELECT session_id, revision FROM sessions FINAL").result_rows)
    assert revisions == {f"s-{i}": i % 2 for i in range(20)}
    # the views agree with the hourly table
    daily = ch.query("SELECT sum(retrieved), sum(cited) FROM funnel_daily").result_rows[0]
    truth = report["totals"]
    assert (daily[0], daily[1]) == (truth["retrieved"], truth["cited"])
    ratios = ch.query("SELECT sum(grounded), count() FROM funnel_stage_ratios").result_rows[0]
    assert ratios[0] == truth["grounded"] and ratios[1] > 0

    # every recorded batch is an offset range of a sink topic; commits match ClickHouse records
    recorded = ch.query(
        "SELECT topic, partition, max(last_offset) FROM sink_offsets GROUP BY topic, partition"
    )
    assert {r[0] for r in recorded.result_rows} <= {t.name for t in topics.values()}

    letters = dead_letters(infra.bootstrap, topics[DLQ.name].name, 3)
    assert len(letters) == 3
    assert {ltr.stage for ltr in letters} == {"sink"}
    assert {ltr.original for ltr in letters} == {v for _, v in poison}
    assert all(
        ltr.source_topic == topics[FUNNEL.name].name and ltr.source_offset is not None for ltr in letters
    )

    # a second run of the same group finds nothing new, and the report is unchanged
    again = ClickHouseSink(config(infra, unique), ch).run(until_caught_up=True, timeout=60)
    assert again.rows_inserted == 0
    assert as_totals(funnel_report(ch)) == expected(deltas)

    # a full replay (new group, sink_offsets forgotten, other batch sizes) inserts no funnel row twice
    ch.command("TRUNCATE TABLE sink_offsets")
    replay = ClickHouseSink(config(infra, unique, group_id=f"{unique}-replay", batch_rows=97), ch)
    rstats = replay.run(until_caught_up=True, timeout=90)
    assert rstats.duplicates >= len(deltas) + len(redelivered) - 1
    assert as_totals(funnel_report(ch)) == expected(deltas)
    assert scalar(ch, "SELECT count() FROM funnel_contributions") == len(deltas)
    assert scalar(ch, "SELECT count() FROM events FINAL") == len(events)


class FlakyClient:
    """A real client whose first ``n`` inserts fail the way a busy or unreachable server does."""

    def __init__(self, client: Any, n: int) -> None:
        self._client = client
        self.failures_left = n
        self.errors = itertools.cycle(
            [
                OperationalError("connection refused"),
                DatabaseError("Code: 252. DB::Exception: Too many parts (600). (TOO_MANY_PARTS)"),
            ]
        )

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures_left > 0:
            self.failures_left -= 1
            raise next(self.errors)
        return self._client.insert(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_transient_clickhouse_errors_retry_with_backpressure_and_never_dlq(  # type: ignore[no-untyped-def]
    infra: Infra, unique: str, ch, topics: dict[str, Topic]
) -> None:
    deltas = make_deltas(150, seed=11)
    produce_funnel(infra.bootstrap, topics[FUNNEL.name].name, deltas)
    flaky = FlakyClient(ch, 5)
    sink = ClickHouseSink(config(infra, unique), flaky)  # type: ignore[arg-type]
    paused: list[int] = []
    original = sink._back_off

    def spy(consumer: Any, exc: Exception) -> None:
        original(consumer, exc)
        paused.append(len([tp for tp in consumer.assignment()]))

    sink._back_off = spy  # type: ignore[method-assign]
    stats = sink.run(until_caught_up=True, timeout=90)
    assert flaky.failures_left == 0
    assert stats.transient_errors == 5 and stats.dead_letters == 0
    assert paused and all(n > 0 for n in paused)  # consumption was paused while retrying
    assert as_totals(funnel_report(ch)) == expected(deltas)
    assert scalar(ch, "SELECT count() FROM funnel_contributions") == len(deltas)
    assert dead_letters(infra.bootstrap, topics[DLQ.name].name, 0, timeout=2) == []


def test_report_filters_by_owner_and_hour(  # type: ignore[no-untyped-def]
    infra: Infra, unique: str, ch, topics: dict[str, Topic]
) -> None:
    deltas = make_deltas(60, seed=3)
    produce_funnel(infra.bootstrap, topics[FUNNEL.name].name, deltas)
    ClickHouseSink(config(infra, unique), ch).run(until_caught_up=True, timeout=60)
    since, until = BASE_HOUR + timedelta(hours=1), BASE_HOUR + timedelta(hours=3)
    report = funnel_report(ch, owner="OWNER1.com", since=since.isoformat(), until=until.isoformat())
    chosen = [d for d in deltas if d.owner_domain == "owner1.com" and since <= d.hour < until]
    assert chosen and as_totals(report) == expected(chosen)
    assert [o["owner_domain"] for o in report["owners"]] == ["owner1.com"]
    assert report["filters"]["owner"] == "owner1.com"
