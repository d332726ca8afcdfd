"""The worker on a real broker: RAW documents in, exact funnel rows, sessions, retrievals, DLQ out.

Every input is delivered twice; one session ends by ``ended_at``, one by inactivity, an OA session
carries a checkout; a late event amends a closed session (revision 1) and one arriving beyond the
lateness is dead-lettered; an invalid document is dead-lettered with its origin.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from ctpipe.worker import WorkerConfig, running_worker
from deploy.kafka.topics import ensure_topics
from processors.worker import WorkerTopics
from producers.kafka import make_producer
from schemas import dlq
from schemas.codec import dumps
from schemas.funnel import FunnelKey
from schemas.records import CorrelatedRetrieval, FunnelDelta, SessionRecord, unpack
from schemas.urls import canonical_url
from tests.infra import Infra

pytestmark = pytest.mark.integration

S1 = "550e8400-e29b-41d4-a716-446655440001"
S2 = "550e8400-e29b-41d4-a716-446655440002"
S3 = "550e8400-e29b-41d4-a716-446655440003"
CTI1 = "770e8400-e29b-41d4-a716-446655440301"
CTI2 = "770e8400-e29b-41d4-a716-446655440302"
PRODUCT = "880e8400-e29b-41d4-a716-446655440020"
URL_A = "https://www.wirecutter.com/reviews/best-headphones"
URL_B = "https://www.ft.com/content/abc"
URL_C = "https://www.nytimes.com/2026/01/15/tech/c.html"
URL_D = "https://www.bbc.co.uk/news/d"
URL_E = "https://www.youtube.com/watch?v=x"
HOUR = datetime(2026, 1, 15, 10, tzinfo=UTC)


def ts(mmss: str) -> str:
    return f"2026-01-15T10:{mmss}Z"


def session_s1() -> dict[str, Any]:
    return {
        "schema_version": "0.1",
        "session_id": S1,
        "agent_id": "bot",
        "content_scope": "news",
        "started_at": ts("30:00"),
        "ended_at": ts("35:00"),
        "events": [
            {"type": "turn_started", "timestamp": ts("30:00"), "turn_id": "1"},
            {
                "type": "content_retrieved",
                "timestamp": ts("30:01"),
                "source_role": "agent",
                "content_telemetry_id": CTI1,
                "content_url": URL_A,
            },
            {
                "type": "content_grounded",
                "timestamp": ts("30:02"),
                "content_url": URL_A,
                "data": {"scope": "session", "cached": False, "tokens_ingested": 100},
            },
            {"type": "turn_started", "timestamp": ts("31:00"), "turn_id": "2"},
            {
                "type": "content_cited",
                "timestamp": ts("31:05"),
                "content_url": URL_A,
                "data": {"citation_type": "paraphrase", "position": "primary"},
            },
            {"type": "content_cited", "timestamp": ts("31:06"), "content_url": URL_B},
            {
                "type": "content_displayed",
                "timestamp": ts("31:07"),
                "content_url": URL_A,
                "data": {"display_type": "link"},
            },
            {
                "type": "content_engaged",
                "timestamp": ts("32:00"),
                "content_url": URL_A,
                "data": {"engagement_type": "link_click"},
            },
        ],
    }


def edge(url: str, cti: str | None, role: str = "edge") -> dict[str, Any]:
    ev: dict[str, Any] = {"type": "content_retrieved", "timestamp": ts("30:01"), "source_role": role}
    ev["content_url"] = url
    if cti:
        ev["content_telemetry_id"] = cti
    return {"document_type": "event", "schema_version": "0.1", "event": ev}


def batch_s2() -> dict[str, Any]:  # no ended_at: closed by inactivity
    return {
        "document_type": "event_batch",
        "schema_version": "0.1",
        "session_id": S2,
        "agent_id": "bot2",
        "started_at": ts("40:00"),
        "events": [
            {
                "type": "content_displayed",
                "timestamp": ts("40:01"),
                "content_url": URL_E,
                "data": {"display_type": "embed"},
            }
        ],
    }


def oa_s3() -> dict[str, Any]:
    return {
        "schema_version": "0.4",
        "session_id": S3,
        "agent_id": "shop",
        "started_at": ts("50:00"),
        "ended_at": ts("55:00"),
        "events": [
            {
                "id": "660e8400-e29b-41d4-a716-446655440007",
                "type": "cart_add",
                "timestamp": ts("51:00"),
                "product_id": PRODUCT,
            },
            {
                "id": "660e8400-e29b-41d4-a716-446655440008",
                "type": "checkout_completed",
                "timestamp": ts("52:00"),
                "product_id": PRODUCT,
                "data": {"order_value_amount": 34999, "currency": "USD"},
            },
        ],
        "outcome": {"type": "conversion", "value_amount": 34999, "currency": "USD"},
    }


def late_s1(mmss: str, url: str) -> dict[str, Any]:
    return {
        "document_type": "event",
        "schema_version": "0.1",
        "session_id": S1,
        "agent_id": "bot",
        "content_scope": "news",
        "started_at": ts("30:00"),
        "event": {
            "type": "content_grounded",
            "timestamp": ts(mmss),
            "content_url": url,
            "data": {"scope": "turn", "cached": True, "tokens_ingested": 50},
        },
    }


INVALID = b'{"schema_version":"0.1","session_id":"not-a-uuid","events":42}'


def fkey(
    url: str | None, agent: str, scope: str, role: str, ck: str | None = None, od: str = ""
) -> FunnelKey:
    from schemas.urls import owner_domain

    return FunnelKey(
        HOUR,
        (owner_domain(url) if url else None) or od,
        ck or (canonical_url(url) if url else "") or "",
        agent,
        scope,
        role,
    )


EXPECTED: dict[FunnelKey, dict[str, Any]] = {
    fkey(URL_A, "bot", "news", "agent"): {
        "retrieved": 1,
        "retrieved_corroborated": 1,
        "grounded": 1,
        "grounded_live": 1,
        "tokens_ingested": 100,
        "turns_influenced": 1,  # session scope: the turn at 10:31 (the one at 10:30:00 precedes it)
        "cited": 1,
        "cited_paraphrase": 1,
        "cited_position_primary": 1,
        "displayed": 1,
        "displayed_link": 1,
        "engaged": 1,
        "engaged_link_click": 1,
    },
    # cited without grounding at first; the late grounding (revision 1) withdraws the departure
    fkey(URL_B, "bot", "news", "agent"): {
        "cited": 1,
        "cited_unclassified": 1,
        "cited_position_unclassified": 1,
        "grounded": 1,
        "grounded_cached": 1,
        "tokens_ingested": 50,
        "turns_influenced": 1,
    },
    fkey(URL_A, "", "", "edge"): {"retrieved": 1, "retrieved_corroborated": 1},
    fkey(URL_C, "", "", "edge"): {"retrieved": 1, "retrieved_uncorroborated": 1},
    fkey(URL_D, "", "", "origin"): {"retrieved": 1, "retrieved_standalone": 1},
    fkey(URL_E, "bot2", "", "agent"): {
        "displayed": 1,
        "displayed_embed": 1,
        "displayed_without_cited": 1,
        "displayed_without_grounded": 1,
    },
    fkey(None, "shop", "", "agent", ck=PRODUCT): {"checkouts": 1, "conversion_value": {"USD": 34999}},
}


def produce(producer: Producer, topic: str, docs: list[tuple[bytes, bytes, str]]) -> list[int]:
    """(key, value, emitter) -> RAW; returns the offsets in order."""
    offsets: dict[int, int] = {}

    def cb(i: int):  # type: ignore[no-untyped-def]
        def done(err: Any, msg: Any) -> None:
            assert err is None, err
            offsets[i] = msg.offset()

        return done

    for i, (key, value, emitter) in enumerate(docs):
        producer.produce(
            topic, value=value, key=key, headers=[("ctpipe-emitter", emitter.encode())], on_delivery=cb(i)
        )
    assert producer.flush(30) == 0
    return [offsets[i] for i in range(len(docs))]


class Outputs:
    def __init__(self, bootstrap: str, group: str, topics: WorkerTopics) -> None:
        self.topics = topics
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"}
        )
        self.consumer.subscribe(
            [topics.funnel.name, topics.sessions.name, topics.correlated.name, topics.dlq.name]
        )
        self.by_topic: dict[str, list[Any]] = defaultdict(list)

    def poll(self) -> None:
        for msg in self.consumer.consume(500, timeout=0.2):
            if msg.error() is None:
                self.by_topic[msg.topic()].append(msg)

    def deltas(self) -> list[Any]:
        return [
            FunnelDelta.model_validate(r)
            for m in self.by_topic[self.topics.funnel.name]
            for r in unpack(m.value())
        ]

    def sessions(self) -> list[Any]:
        return [
            SessionRecord.model_validate(r)
            for m in self.by_topic[self.topics.sessions.name]
            for r in unpack(m.value())
        ]

    def retrievals(self) -> list[Any]:
        return [
            CorrelatedRetrieval.model_validate(r)
            for m in self.by_topic[self.topics.correlated.name]
            for r in unpack(m.value())
        ]

    def letters(self) -> list[Any]:
        return [dlq.decode(m.value()) for m in self.by_topic[self.topics.dlq.name]]


async def wait_for(outputs: Outputs, handle: Any, cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        handle.check()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {handle.stats()}")
        await asyncio.to_thread(outputs.poll)


def summed(deltas: list[Any]) -> dict[FunnelKey, dict[str, Any]]:
    unique = {d.contribution_id: d for d in deltas}  # what the sink's dedup does
    rows: dict[FunnelKey, dict[str, Any]] = defaultdict(dict)
    for d in unique.values():
        row = rows[d.key]
        for m, n in d.measures.items():
            row[m] = row.get(m, 0) + n
        for c, v in d.conversion_value.items():
            cv = row.setdefault("conversion_value", {})
            cv[c] = cv.get(c, 0) + v
    out: dict[FunnelKey, dict[str, Any]] = {}
    for k, row in rows.items():
        clean = {m: n for m, n in row.items() if m != "conversion_value" and n}
        values = {c: v for c, v in row.get("conversion_value", {}).items() if v}
        if values:
            clean["conversion_value"] = values
        if clean:
            out[k] = clean
    return out


async def test_worker_end_to_end(infra: Infra, unique: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    topics = WorkerTopics.for_namespace(unique)
    ensure_topics(infra.bootstrap, topics.all())
    producer = make_producer(infra.bootstrap)
    docs = [
        (S1.encode(), dumps(session_s1()), "agent-sdk"),
        (CTI1.encode(), dumps(edge(URL_A, CTI1)), "cdn"),
        (CTI2.encode(), dumps(edge(URL_C, CTI2)), "cdn"),
        (b"", dumps(edge(URL_D, None, role="origin")), "origin-log"),
        (S2.encode(), dumps(batch_s2()), "agent-sdk"),
        (S3.encode(), dumps(oa_s3()), "oa-sdk"),
        (b"bad", INVALID, "broken-sdk"),
    ]
    offsets = produce(producer, topics.raw.name, docs + docs)  # every input delivered twice
    invalid_offsets = {offsets[6], offsets[13]}

    config = WorkerConfig(
        inactivity_timeout=5.0,
        end_grace=1.0,
        lateness=6.0,
        correlation_window=3.0,
        tick=0.25,
        batch_within=0.05,
        store="rocksdb://",
    )
    outputs = Outputs(infra.bootstrap, f"{unique}-check", topics)
    try:
        async with running_worker(
            bootstrap=infra.bootstrap, datadir=tmp_path, namespace=unique, config=config, app_id=unique
        ) as handle:
            await wait_for(
                outputs, handle, lambda: any(s.session_id == S1 for s in outputs.sessions()), 40, "S1 r0"
            )
            # a late event within lateness, delivered twice: S1 becomes revision 1
            late = dumps(late_s1("33:00", URL_B))
            produce(producer, topics.raw.name, [(S1.encode(), late, "agent-sdk")] * 2)

            def settled() -> bool:
                revs = {(s.session_id, s.revision) for s in outputs.sessions()}
                statuses = sorted(r.status for r in outputs.retrievals())
                return {(S1, 1), (S2, 0), (S3, 0)} <= revs and statuses == [
                    "corroborated",
                    "standalone",
                    "standalone",  # the standalone retrieval's redelivery is re-emitted (same id)
                    "uncorroborated",
                ]

            await wait_for(outputs, handle, settled, 30, "sessions and retrievals")
            # beyond lateness: S1's state is a tombstone now; the next event is dead-lettered
            await asyncio.sleep(config.lateness + 1.0)
            beyond = dumps(late_s1("34:00", URL_E))
            produce(producer, topics.raw.name, [(S1.encode(), beyond, "agent-sdk")])
            await wait_for(
                outputs,
                handle,
                lambda: any(letter.reason == "late:beyond-lateness" for letter in outputs.letters()),
                20,
                "the beyond-lateness dead letter",
            )
            await asyncio.sleep(1.0)
            await asyncio.to_thread(outputs.poll)
            stats = handle.stats()
    finally:
        outputs.consumer.close()

    # the exact funnel, per row, with every input delivered twice
    assert summed(outputs.deltas()) == EXPECTED

    sessions = {(s.session_id, s.revision): s for s in outputs.sessions()}
    s1 = sessions[(S1, 0)]
    assert (s1.closed_by, s1.event_count, s1.cited_without_grounded, s1.turns) == ("ended", 8, 1, 2)
    assert s1.duplicate_events == 8  # the redelivered document
    s1r1 = sessions[(S1, 1)]
    assert (s1r1.late_events, s1r1.cited_without_grounded, s1r1.grounded, s1r1.event_count) == (1, 0, 2, 9)
    assert sessions[(S2, 0)].closed_by == "inactivity"
    s3 = sessions[(S3, 0)]
    assert (s3.closed_by, s3.outcome_type, s3.outcome_value_minor, s3.outcome_currency) == (
        "ended",
        "conversion",
        34999,
        "USD",
    )
    assert set(sessions) == {(S1, 0), (S1, 1), (S2, 0), (S3, 0)}

    by_cti = {r.content_telemetry_id: r for r in outputs.retrievals()}
    assert by_cti[CTI1].status == "corroborated"
    assert by_cti[CTI1].observer_roles == ("agent", "edge")
    assert by_cti[CTI1].agent_session_id == S1 and by_cti[CTI1].agent_id == "bot"
    assert {o.emitter for o in by_cti[CTI1].observations} == {"agent-sdk", "cdn"}
    assert by_cti[CTI2].status == "uncorroborated" and by_cti[CTI2].observer_roles == ("edge",)
    assert by_cti[None].status == "standalone"

    letters = outputs.letters()
    invalid = [x for x in letters if x.stage == "normalize"]
    assert {x.source_offset for x in invalid} == invalid_offsets
    assert all(
        x.original == INVALID
        and x.key == b"bad"
        and x.source_topic == topics.raw.name
        and x.emitter == "broken-sdk"
        and x.reason
        and x.errors
        for x in invalid
    )
    beyond_letters = [x for x in letters if x.reason == "late:beyond-lateness"]
    assert len(beyond_letters) == 1
    assert beyond_letters[0].stage == "sessionize" and beyond_letters[0].source_topic == topics.events.name
    assert b'"session_id":"%s"' % S1.encode() in beyond_letters[0].original
    assert len(letters) == 3

    assert stats["normalize"]["invalid"] == 2 and stats["normalize"]["messages"] == 17
    assert stats["sessionize"]["late_events"] == 1


async def test_circuit_breaker_stops_the_worker(infra: Infra, unique: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    topics = WorkerTopics.for_namespace(unique)
    ensure_topics(infra.bootstrap, topics.all())
    producer = make_producer(infra.bootstrap)
    good = (S1.encode(), dumps(session_s1()), "agent-sdk")
    bad = (b"bad", INVALID, "broken-sdk")
    produce(producer, topics.raw.name, [good] * 10 + [bad] * 40)
    config = WorkerConfig(breaker_window=50, breaker_min_invalid=20, max_invalid_ratio=0.5, store="memory://")
    async with running_worker(
        bootstrap=infra.bootstrap, datadir=tmp_path, namespace=unique, config=config, app_id=unique
    ) as handle:
        deadline = time.monotonic() + 40
        with pytest.raises(
            RuntimeError, match=r"circuit breaker: 20 of the last 30 messages were invalid \(67% > 50%\)"
        ):
            while time.monotonic() < deadline:
                handle.check()
                await asyncio.sleep(0.2)
        stats = handle.stats()["normalize"]
    # it stopped at the message that tipped the ratio, not after dead-lettering all 40
    assert stats["invalid"] == 20 and stats["accepted"] == 10


def _cited_session(session: str, when: str, url: str, *, ended: str) -> dict[str, Any]:
    return {
        "schema_version": "0.1",
        "session_id": session,
        "agent_id": "bot",
        "started_at": when,
        "ended_at": ended,
        "events": [{"type": "content_cited", "timestamp": when, "content_url": url}],  # derived ids
    }


async def test_an_expired_session_is_forgotten_and_its_redelivery_refused(  # type: ignore[no-untyped-def]
    infra: Infra, unique: str, tmp_path
) -> None:
    """Bounded state on a real worker: a session's tombstone is deleted once the partition's
    stream time passed its newest event's hour by the retention; then a redelivery of its
    document is dead-lettered (late:beyond-retention), not counted again, while an event of
    the same session inside the retention opens a new state whose rows (a later hour) add up."""
    from schemas.topics import partition_for

    topics = WorkerTopics.for_namespace(unique)
    ensure_topics(infra.bootstrap, topics.all())
    producer = make_producer(infra.bootstrap)
    partitions = topics.events.partitions
    first = "550e8400-e29b-41d4-a716-446655440101"
    # a second session in the same sessionize partition: it moves that partition's stream time
    other = next(
        s
        for n in range(200, 10_000)
        if partition_for((s := f"550e8400-e29b-41d4-a716-44665544{n:04d}").encode(), partitions)
        == partition_for(first.encode(), partitions)
    )
    old = _cited_session(first, "2026-01-15T10:30:00Z", URL_A, ended="2026-01-15T10:31:00Z")
    config = WorkerConfig(
        inactivity_timeout=5.0,
        end_grace=0.5,
        lateness=1.0,
        correlation_window=2.0,
        tick=0.25,
        batch_within=0.05,
        store="rocksdb://",
        state_retention=3600.0,  # an hour of event time past the newest event's hour
    )
    outputs = Outputs(infra.bootstrap, f"{unique}-check", topics)
    try:
        async with running_worker(
            bootstrap=infra.bootstrap, datadir=tmp_path, namespace=unique, config=config, app_id=unique
        ) as handle:
            produce(producer, topics.raw.name, [(first.encode(), dumps(old), "agent-sdk")])
            await wait_for(
                outputs, handle, lambda: any(s.session_id == first for s in outputs.sessions()), 30, "r0"
            )
            await asyncio.sleep(config.lateness + 1.0)  # closed + lateness: a tombstone now
            # 13:30 >= 11:00 (the end of the tombstone's newest hour) + 1 h: it expires
            later = _cited_session(other, "2026-01-15T13:30:00Z", URL_B, ended="2026-01-15T13:31:00Z")
            produce(producer, topics.raw.name, [(other.encode(), dumps(later), "agent-sdk")])
            await wait_for(
                outputs, handle, lambda: handle.stats()["sessionize"]["expired"] >= 1, 30, "the expiry"
            )
            # the redelivered document: its session has no state, its event is older than 12:30
            produce(producer, topics.raw.name, [(first.encode(), dumps(old), "agent-sdk")])
            await wait_for(
                outputs,
                handle,
                lambda: any(x.reason == "late:beyond-retention" for x in outputs.letters()),
                30,
                "the beyond-retention dead letter",
            )
            # the same session at 13:40 (inside the retention): a new state, counted
            again = _cited_session(first, "2026-01-15T13:40:00Z", URL_C, ended="2026-01-15T13:41:00Z")
            produce(producer, topics.raw.name, [(first.encode(), dumps(again), "agent-sdk")])
            await wait_for(
                outputs,
                handle,
                lambda: sum(s.session_id == first for s in outputs.sessions()) >= 2,
                30,
                "the new state's close",
            )
            await asyncio.sleep(0.5)
            await asyncio.to_thread(outputs.poll)
            stats = handle.stats()["sessionize"]
    finally:
        outputs.consumer.close()

    def row(url: str, hour: int) -> FunnelKey:
        from schemas.urls import owner_domain

        return FunnelKey(
            datetime(2026, 1, 15, hour, tzinfo=UTC),
            owner_domain(url) or "",
            canonical_url(url) or "",
            "bot",
            "",
            "agent",
        )

    cited = {
        "cited": 1,
        "cited_unclassified": 1,
        "cited_position_unclassified": 1,
        "cited_without_grounded": 1,
    }
    # the forgotten session counted once, its redelivery not at all, the new state in its own hour
    assert summed(outputs.deltas()) == {row(URL_A, 10): cited, row(URL_B, 13): cited, row(URL_C, 13): cited}
    (letter,) = [x for x in outputs.letters() if x.reason == "late:beyond-retention"]
    assert letter.stage == "sessionize" and letter.source_topic == topics.events.name
    assert stats["expired"] >= 1 and stats["beyond_retention"] == 1 and stats["beyond_lateness"] == 0
    first_records = sorted(s.revision for s in outputs.sessions() if s.session_id == first)
    assert first_records == [0, 0]  # two states of one session id, each revision 0
