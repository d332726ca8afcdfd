"""Emitter SDK: buffering/batching, document shapes, and the HTTP transport against the gateway app.

The gateway app runs in-process (httpx ASGI/WSGI-less transports) with an in-memory publisher;
the Kafka transport against a real broker is in tests/integration/test_emitter_kafka.py.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from producers.apikeys import KeyStore
from producers.emitter import (
    BULK,
    END,
    EVENTS,
    START,
    AsyncOpenAttributionClient,
    EmitterError,
    HttpTransport,
    OpenAttributionClient,
    TransientError,
    prepare,
)
from producers.gateway import create_app
from producers.publisher import HEADER_EMITTER, HEADER_SOURCE, QueueFull
from schemas.normalize import ingest
from tests.unit.test_gateway import MemoryPublisher

OUTCOME = {"type": "conversion", "value_amount": 9999, "currency": "USD"}


class Recorder:
    """Test double of the Transport interface: records documents, answers like the gateway."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.fail: list[Exception] = []
        self.closed = False

    def send(self, route: str, doc: dict[str, Any]) -> dict[str, Any]:
        if self.fail:
            raise self.fail.pop(0)
        self.sent.append((route, doc))
        _, _, response = prepare(route, doc, "rec")  # what the gateway/Kafka transport answers
        return response

    async def asend(self, route: str, doc: dict[str, Any]) -> dict[str, Any]:
        return self.send(route, doc)

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True

    def routes(self) -> list[str]:
        return [r for r, _ in self.sent]


def test_events_are_batched_per_session_and_flushed_at_n() -> None:
    rec = Recorder()
    client = OpenAttributionClient(rec, batch_size=3, flush_interval=0, flush_at_exit=False)
    a = client.start_session(content_scope="mix", agent_id="bot")
    b = client.start_session()
    for i in range(2):
        client.record_event(a, "content_retrieved", content_url=f"https://x.com/{i}")
        client.record_event(b, "content_retrieved", content_url=f"https://y.com/{i}")
    assert rec.routes() == [START, START] and client.pending == 4
    client.record_event(
        a, "content_cited", content_url="https://x.com/0", data={"citation_type": "paraphrase"}
    )
    assert rec.routes() == [START, START, EVENTS]
    route, doc = rec.sent[-1]
    assert doc["session_id"] == a and len(doc["events"]) == 3 and client.pending == 2
    client.end_session(b, outcome=OUTCOME)  # flushes b's events first, then ends
    assert rec.routes()[-2:] == [EVENTS, END]
    assert rec.sent[-2][1]["session_id"] == b and rec.sent[-1][1]["outcome"] == OUTCOME
    client.close()
    assert rec.closed and client.pending == 0
    for route, doc in rec.sent:
        if route != START:
            assert ingest(orjson.dumps(doc), emitter="e", source=route).accepted, (route, doc)


def test_flush_interval_sends_in_the_background() -> None:
    rec = Recorder()
    client = OpenAttributionClient(rec, batch_size=100, flush_interval=0.05, flush_at_exit=False)
    event_id = client.record_event(str(uuid.uuid4()), "content_retrieved", content_url="https://x.com/a")
    for _ in range(100):
        if rec.sent:
            break
        threading_sleep(0.02)
    assert rec.routes() == [EVENTS] and rec.sent[0][1]["events"][0]["id"] == event_id
    client.close()


def threading_sleep(s: float) -> None:
    import time

    time.sleep(s)


def test_context_manager_flushes_and_transient_failures_keep_events() -> None:
    rec = Recorder()
    sid = str(uuid.uuid4())
    with OpenAttributionClient(rec, batch_size=10, flush_interval=0, flush_at_exit=False) as client:
        client.record_event(sid, "content_retrieved", content_url="https://x.com/a")
        rec.fail = [TransientError("gateway down")]
        with pytest.raises(TransientError):
            client.flush()
        assert client.pending == 1  # kept for the next attempt
    assert rec.routes() == [EVENTS] and len(rec.sent[0][1]["events"]) == 1


def test_refused_documents_raise() -> None:
    rec = Recorder()
    client = OpenAttributionClient(rec, batch_size=1, flush_interval=0, flush_at_exit=False)
    with pytest.raises(EmitterError, match="timestamp"):
        client.record_event(str(uuid.uuid4()), "content_retrieved", timestamp="last tuesday")
    client.close()


def test_upload_session_returns_the_server_id_and_keeps_the_callers() -> None:
    rec = Recorder()
    client = OpenAttributionClient(rec, flush_interval=0, flush_at_exit=False)
    caller = str(uuid.uuid4())
    session = {
        "schema_version": "0.4",
        "session_id": caller,
        "started_at": "2026-03-28T10:00:00Z",
        "events": [
            {"id": str(uuid.uuid4()), "type": "content_retrieved", "timestamp": "2026-03-28T10:00:01Z"}
        ],
        "outcome": {"type": "browse"},
    }
    server_id = client.upload_session(session)
    assert server_id != caller and str(uuid.UUID(server_id)) == server_id
    key, value, _ = prepare(BULK, session, "rec")
    assert orjson.loads(value)["external_session_id"] == caller and key == server_id.encode()
    client.close()


async def test_async_client_batches_and_flushes_on_exit() -> None:
    rec = Recorder()
    async with AsyncOpenAttributionClient(rec, batch_size=2, flush_interval=0, flush_at_exit=False) as client:
        sid = await client.start_session(agent_id="bot")
        await client.record_event(sid, "content_retrieved", content_url="https://x.com/a")
        await client.record_event(sid, "content_retrieved", content_url="https://x.com/b")
        await client.record_event(sid, "content_displayed", content_url="https://x.com/b")
        assert rec.routes() == [START, EVENTS] and client.pending == 1
    assert rec.routes() == [START, EVENTS, EVENTS] and rec.closed


async def test_async_flush_interval() -> None:
    rec = Recorder()
    client = AsyncOpenAttributionClient(rec, batch_size=100, flush_interval=0.05, flush_at_exit=False)
    await client.record_event(str(uuid.uuid4()), "content_retrieved")
    for _ in range(100):
        if rec.sent:
            break
        await asyncio.sleep(0.02)
    assert rec.routes() == [EVENTS]
    await client.aclose()


# --- HTTP transport against the real gateway app (in-memory publisher) ---------------------------


@pytest.fixture
def gateway(tmp_path: Path) -> tuple[Any, MemoryPublisher, str]:
    store = KeyStore(tmp_path / "keys.json")
    token, _ = store.add("sdk-agent", "agent")
    pub = MemoryPublisher()
    return create_app(pub, store), pub, token


def _check_published(pub: MemoryPublisher) -> list[str]:
    sources = []
    for _key, value, headers in pub.sent:
        h = dict(headers)
        result = ingest(value, emitter=h[HEADER_EMITTER].decode(), source=h[HEADER_SOURCE].decode())
        assert result.accepted, result.reason
        sources.append(h[HEADER_SOURCE].decode())
    return sources


async def test_async_http_transport_full_session(gateway: tuple[Any, MemoryPublisher, str]) -> None:
    app, pub, token = gateway
    transport = HttpTransport("http://gw", token, async_http_transport=httpx.ASGITransport(app=app))
    async with AsyncOpenAttributionClient(
        transport, batch_size=50, flush_interval=0, flush_at_exit=False
    ) as c:
        sid = await c.start_session(content_scope="mix", user_context={"segments": ["premium"]})
        ids = [
            await c.record_event(sid, "content_retrieved", content_url=f"https://www.rtings.com/{i}")
            for i in range(120)
        ]
        await c.end_session(sid, outcome=OUTCOME)
    assert _check_published(pub) == [START, EVENTS, EVENTS, EVENTS, END]
    assert all(k == sid.encode() for k, _, _ in pub.sent)
    published_ids = [
        ev["id"]
        for _, v, h in pub.sent
        if dict(h)[HEADER_SOURCE] == b"/events"
        for ev in orjson.loads(v)["events"]
    ]
    assert published_ids == ids


async def test_http_transport_retries_on_429_and_503(gateway: tuple[Any, MemoryPublisher, str]) -> None:
    from producers.publisher import NotAcknowledged

    app, pub, token = gateway
    pub.fail = [QueueFull("full"), NotAcknowledged("slow")]
    transport = HttpTransport(
        "http://gw", token, backoff=0.01, max_backoff=0.02, async_http_transport=httpx.ASGITransport(app=app)
    )
    client = AsyncOpenAttributionClient(transport, flush_interval=0, flush_at_exit=False)
    sid = await client.start_session()  # 429, 503, then 202
    assert len(pub.sent) == 1 and orjson.loads(pub.sent[0][1])["session_id"] == sid
    pub.fail = [NotAcknowledged("x")] * 10
    transport.retries = 2
    with pytest.raises(TransientError, match="3 attempts"):
        await client.upload_session(
            {"schema_version": "0.4", "session_id": str(uuid.uuid4()), "started_at": "2026-03-28T10:00:00Z"}
        )
    await client.aclose()


def test_sync_http_transport_reports_refusals(gateway: tuple[Any, MemoryPublisher, str]) -> None:
    _app, _pub, _token = gateway

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["x-api-key"] == "bad"
        return httpx.Response(401, json={"error": "unauthorized", "errors": []})

    transport = HttpTransport("http://gw", "bad", http_transport=httpx.MockTransport(handler))
    client = OpenAttributionClient(transport, flush_interval=0, flush_at_exit=False)
    with pytest.raises(EmitterError, match="HTTP 401"):
        client.start_session()
    client.close()
