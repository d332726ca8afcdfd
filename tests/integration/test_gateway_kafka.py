"""Gateway + real Kafka: 202 only after the broker's ack, exact bytes/headers/keys, 503 unreachable."""

from __future__ import annotations

import asyncio
import gzip
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, Message

from deploy.kafka.topics import delete_topics, ensure_topics
from producers.apikeys import KeyStore
from producers.gateway import create_app
from producers.publisher import HEADER_EMITTER, HEADER_SOURCE, KafkaPublisher
from schemas.normalize import ingest
from schemas.topics import RAW
from tests.infra import Infra, free_port

pytestmark = pytest.mark.integration

SID = "6a0e8400-e29b-41d4-a716-446655440000"


def consume(bootstrap: str, topic: str, n: int, group: str, timeout: float = 30.0) -> list[Message]:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < n and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and msg.error() is None:
                out.append(msg)
        # anything beyond n would be a duplicate or a half-published document
        extra = c.poll(1.0)
        if extra is not None and extra.error() is None:
            out.append(extra)
    finally:
        c.close()
    return out


@pytest.fixture
def raw_topic(infra: Infra, unique: str) -> Iterator[str]:
    topic = RAW.namespaced(unique)
    ensure_topics(infra.bootstrap, [topic])
    yield topic.name
    delete_topics(infra.bootstrap, [topic.name])


@pytest.fixture
def keys(tmp_path: Path) -> tuple[KeyStore, str, str]:
    store = KeyStore(tmp_path / "keys.json")
    agent, _ = store.add("it-agent", "agent")
    cdn, _ = store.add("it-cdn", "edge")
    return store, agent, cdn


@pytest.fixture
async def gateway(
    infra: Infra, raw_topic: str, keys: tuple[KeyStore, str, str]
) -> AsyncIterator[tuple[httpx.AsyncClient, KafkaPublisher]]:
    pub = KafkaPublisher(infra.bootstrap, raw_topic, ack_timeout=15.0)
    app = create_app(pub, keys[0])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        yield client, pub
    pub.close()


def session(n: int) -> dict[str, Any]:
    return {
        "schema_version": "0.1",
        "session_id": SID,
        "started_at": "2026-03-28T10:00:00Z",
        "events": [
            {
                "type": "content_retrieved",
                "timestamp": "2026-03-28T10:00:01Z",
                "content_url": f"https://a.com/{i}",
            }
            for i in range(n)
        ],
    }


async def test_accepted_documents_are_on_the_topic_with_key_headers_and_same_ids(
    infra: Infra, raw_topic: str, unique: str, gateway: tuple[httpx.AsyncClient, KafkaPublisher], keys: Any
) -> None:
    client, _pub = gateway
    _, agent, cdn = keys
    hdr = {"Content-Type": "application/json", "Authorization": f"Bearer {agent}"}
    raw_session = orjson.dumps(session(100))
    r1 = await client.post(
        "/v1/telemetry", content=gzip.compress(raw_session), headers={**hdr, "Content-Encoding": "gzip"}
    )
    assert r1.status_code == 202, r1.text
    ctid = str(uuid.uuid4())
    edge = {
        "document_type": "event",
        "schema_version": "0.1",
        "event": {
            "type": "content_retrieved",
            "timestamp": "2026-03-28T10:00:01Z",
            "source_role": "edge",
            "content_telemetry_id": ctid,
            "content_url": "https://a.com/x",
        },
    }
    raw_edge = orjson.dumps(edge)
    r2 = await client.post(
        "/v1/telemetry", content=raw_edge, headers={"Content-Type": "application/json", "X-API-Key": cdn}
    )
    assert r2.status_code == 202, r2.text
    r3 = await client.post("/session/start", content=b'{"initiator_type": "user"}', headers=hdr)
    assert r3.status_code == 202, r3.text
    oa_sid = r3.json()["session_id"]
    # Rejected documents publish nothing.
    bad = await client.post("/v1/telemetry", content=raw_session[:-5], headers=hdr)
    assert bad.status_code == 400
    forbidden = await client.post("/v1/telemetry", content=raw_edge, headers=hdr)
    assert forbidden.status_code == 403

    msgs = consume(infra.bootstrap, raw_topic, 3, unique)
    assert len(msgs) == 3  # exactly the three accepted documents, nothing half-published
    by_key = {m.key(): m for m in msgs}
    m1, m2, m3 = by_key[SID.encode()], by_key[ctid.encode()], by_key[oa_sid.encode()]
    assert m1.value() == raw_session and m2.value() == raw_edge
    assert orjson.loads(m3.value())["session_id"] == oa_sid
    for msg, answer in ((m1, r1.json()), (m2, r2.json())):
        h = {k: v.decode() for k, v in msg.headers() or []}
        assert h[HEADER_SOURCE] == "/v1/telemetry"
        again = ingest(msg.value(), emitter=h[HEADER_EMITTER], source=h[HEADER_SOURCE])
        assert [e.event_id for e in again.events] == answer["event_ids"]
    assert dict(m1.headers() or [])[HEADER_EMITTER] == b"it-agent"
    assert dict(m2.headers() or [])[HEADER_EMITTER] == b"it-cdn"
    assert dict(m3.headers() or [])[HEADER_SOURCE] == b"/session/start"
    assert len(r1.json()["event_ids"]) == 100


async def test_ready_reflects_the_broker(gateway: tuple[httpx.AsyncClient, KafkaPublisher]) -> None:
    client, pub = gateway
    pub.ready_ttl = 0  # no caching: a just-created topic may need a moment to get a leader
    deadline = time.monotonic() + 30
    while (r := await client.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready"}


async def test_unreachable_broker_is_503_within_the_bound(keys: tuple[KeyStore, str, str]) -> None:
    store, agent, _ = keys
    pub = KafkaPublisher(f"127.0.0.1:{free_port()}", "ctpipe.raw", ack_timeout=1.5, ready_ttl=0)
    try:
        app = create_app(pub, store)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            started = time.monotonic()
            r = await client.post(
                "/v1/telemetry",
                content=orjson.dumps(session(2)),
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {agent}"},
            )
            elapsed = time.monotonic() - started
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "unavailable" and r.headers["retry-after"]
            assert elapsed < 10  # bounded (not librdkafka's default 300 s message timeout)
            assert (await client.get("/readyz")).status_code == 503
            assert (await client.get("/healthz")).status_code == 200
    finally:
        pub.close(timeout=0)
