"""Emitter SDK over both transports, real broker: sessions arrive as documents ``ingest`` accepts.

HTTP: a real uvicorn gateway server (thread, free port) with the Kafka publisher.
Kafka: the SDK's KafkaTransport straight to the RAW topic. Both must publish the same shapes.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import uvicorn

from deploy.kafka.topics import delete_topics, ensure_topics
from producers.apikeys import KeyStore
from producers.emitter import (
    AsyncOpenAttributionClient,
    HttpTransport,
    KafkaTransport,
    OpenAttributionClient,
)
from producers.gateway import create_app
from producers.publisher import HEADER_EMITTER, HEADER_SOURCE, KafkaPublisher
from schemas.normalize import ingest
from schemas.topics import RAW
from tests.infra import Infra, free_port
from tests.integration.test_gateway_kafka import consume

pytestmark = pytest.mark.integration

OUTCOME = {"type": "conversion", "value_amount": 4999, "currency": "EUR"}


@pytest.fixture
def raw_topic(infra: Infra, unique: str) -> Iterator[str]:
    topic = RAW.namespaced(unique)
    ensure_topics(infra.bootstrap, [topic])
    yield topic.name
    delete_topics(infra.bootstrap, [topic.name])


@pytest.fixture
def server(infra: Infra, raw_topic: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    store = KeyStore(tmp_path / "keys.json")
    token, _ = store.add("sdk-http", "agent")
    pub = KafkaPublisher(infra.bootstrap, raw_topic, ack_timeout=15.0)
    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(create_app(pub, store), host="127.0.0.1", port=port, log_level="warning")
    )
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started
    yield f"http://127.0.0.1:{port}", token
    srv.should_exit = True
    t.join(10)
    pub.close()


def run_session(client: OpenAttributionClient) -> tuple[str, list[str], str]:
    sid = client.start_session(content_scope="mix", agent_id="bot", external_session_id="ext-1")
    ids = [
        client.record_event(sid, "content_retrieved", content_url=f"https://www.rtings.com/r/{i}")
        for i in range(7)
    ]
    ids.append(
        client.record_event(
            sid,
            "turn_completed",
            turn_id="t1",
            turn={"privacy_level": "intent", "query_intent": "comparison", "response_tokens": 42},
        )
    )
    client.end_session(sid, outcome=OUTCOME)
    caller = str(uuid.uuid4())
    bulk = client.upload_session(
        {
            "schema_version": "0.4",
            "session_id": caller,
            "started_at": "2026-03-28T10:00:00Z",
            "events": [
                {
                    "type": "content_cited",
                    "timestamp": "2026-03-28T10:00:02Z",
                    "content_url": "https://a.com/",
                }
            ],
            "outcome": {"type": "browse"},
        }
    )
    assert bulk != caller
    return sid, ids, bulk


def check_topic(
    bootstrap: str, topic: str, group: str, emitter: str, sid: str, ids: list[str], bulk: str
) -> None:
    # start, 2 event batches (batch_size=5: 5 + 3), end, bulk
    msgs = consume(bootstrap, topic, 5, group)
    assert len(msgs) == 5
    sources, event_ids = [], []
    for m in msgs:
        h = {k: v.decode() for k, v in m.headers() or []}
        assert h[HEADER_EMITTER] == emitter
        result = ingest(m.value(), emitter=h[HEADER_EMITTER], source=h[HEADER_SOURCE])
        assert result.accepted, result.reason
        sources.append(h[HEADER_SOURCE])
        if h[HEADER_SOURCE] == "/events":
            event_ids += [e.event_id for e in result.events]
            assert m.key() == sid.encode()
        if h[HEADER_SOURCE] == "/session/bulk":
            assert m.key() == bulk.encode() and orjson.loads(m.value())["session_id"] == bulk
    assert sorted(sources) == sorted(
        ["/session/start", "/events", "/events", "/session/end", "/session/bulk"]
    )
    assert event_ids == ids


def test_sync_client_over_http_gateway(
    infra: Infra, raw_topic: str, unique: str, server: tuple[str, str]
) -> None:
    url, token = server
    with OpenAttributionClient(HttpTransport(url, token), batch_size=5, flush_interval=0) as client:
        sid, ids, bulk = run_session(client)
    check_topic(infra.bootstrap, raw_topic, unique, "sdk-http", sid, ids, bulk)


def test_sync_client_over_kafka(infra: Infra, raw_topic: str, unique: str) -> None:
    transport = KafkaTransport(infra.bootstrap, raw_topic, "sdk-kafka")
    with OpenAttributionClient(transport, batch_size=5, flush_interval=0) as client:
        sid, ids, bulk = run_session(client)
    check_topic(infra.bootstrap, raw_topic, unique, "sdk-kafka", sid, ids, bulk)


async def test_async_client_over_kafka_and_http(
    infra: Infra,
    raw_topic: str,
    unique: str,
    server: tuple[str, str],
) -> None:
    url, token = server
    for transport in (KafkaTransport(infra.bootstrap, raw_topic, "sdk-async"), HttpTransport(url, token)):
        async with AsyncOpenAttributionClient(transport, batch_size=100, flush_interval=0.05) as client:
            sid = await client.start_session(agent_id="async-bot")
            for i in range(3):
                await client.record_event(sid, "content_retrieved", content_url=f"https://x.com/{i}")
            await client.end_session(sid, outcome=OUTCOME)
    msgs = consume(infra.bootstrap, raw_topic, 6, unique)
    assert len(msgs) == 6
    for m in msgs:
        h = {k: v.decode() for k, v in m.headers() or []}
        assert ingest(m.value(), emitter=h[HEADER_EMITTER], source=h[HEADER_SOURCE]).accepted
    assert (
        sorted({k: v.decode() for k, v in m.headers() or []}[HEADER_EMITTER] for m in msgs)
        == ["sdk-async"] * 3 + ["sdk-http"] * 3
    )
