"""HTTP layer of the ingest gateway, with an in-memory implementation of the publisher interface.

The Kafka side (202 only after the broker's ack, 503 when it is unreachable) is covered by
tests/integration/test_gateway_kafka.py against a real broker.
"""

from __future__ import annotations

import gzip
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from producers.apikeys import KeyStore
from producers.gateway import DEFAULT_MAX_BODY, create_app
from producers.publisher import HEADER_EMITTER, HEADER_SOURCE, NotAcknowledged, QueueFull, TooLarge
from schemas.normalize import ingest

SID = "550e8400-e29b-41d4-a716-446655440000"
CTID = "990e8400-e29b-41d4-a716-446655440050"


class MemoryPublisher:
    """Test double of producers.publisher.Publisher: records messages, or fails as told."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes, list[tuple[str, Any]]]] = []
        self.fail: list[Exception] = []  # raised in order by the next publish calls
        self.is_ready = True

    async def publish(self, key: bytes, value: bytes, headers: list[tuple[str, Any]]) -> None:
        if self.fail:
            raise self.fail.pop(0)
        self.sent.append((key, value, headers))

    async def ready(self) -> bool:
        return self.is_ready

    def close(self) -> None:
        pass


def session_doc(n: int = 2, **over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema_version": "0.1",
        "session_id": SID,
        "agent_id": "research-bot",
        "started_at": "2026-03-28T10:00:00Z",
        "events": [
            {
                "type": "content_retrieved",
                "timestamp": f"2026-03-28T10:00:{i % 60:02d}Z",
                "source_role": "agent",
                "content_url": f"https://www.ft.com/content/{i}",
            }
            for i in range(n)
        ],
    }
    doc.update(over)
    return doc


def edge_event() -> dict[str, Any]:
    return {
        "document_type": "event",
        "schema_version": "0.1",
        "event": {
            "type": "content_retrieved",
            "timestamp": "2026-03-28T08:15:00Z",
            "source_role": "edge",
            "content_telemetry_id": CTID,
            "content_url": "https://www.telegraph.co.uk/business/markets",
        },
    }


def batch_doc(n: int = 100) -> dict[str, Any]:
    d = session_doc(n)
    return {"document_type": "event_batch", "schema_version": "0.1", "session_id": SID, "events": d["events"]}


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    store = KeyStore(tmp_path / "keys.json")
    agent, _ = store.add("acme-agent", "agent")
    cdn, _ = store.add("acme-cdn", "edge,origin")
    return {"agent": agent, "cdn": cdn, "path": str(tmp_path / "keys.json")}


@pytest.fixture
def publisher() -> MemoryPublisher:
    return MemoryPublisher()


@pytest.fixture
async def client(publisher: MemoryPublisher, keys: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(publisher, KeyStore(Path(keys["path"])), max_body=1024 * 1024)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        yield c


def auth(token: str, bearer: bool = True) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if bearer else {"X-API-Key": token}


JSON = {"Content-Type": "application/json"}


async def post(
    client: httpx.AsyncClient, token: str, body: Any, route: str = "/v1/telemetry", **headers: str
) -> httpx.Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return await client.post(route, content=raw, headers={**JSON, **auth(token), **headers})


# --- accepted documents ------------------------------------------------------------------------


async def test_session_is_published_as_received_and_ids_are_the_pipelines(
    client: httpx.AsyncClient, publisher: MemoryPublisher, keys: dict[str, str]
) -> None:
    raw = orjson.dumps(session_doc(3))
    r = await post(client, keys["agent"], raw)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] == 3 and body["session_id"] == SID and body["stripped"] == []
    assert len(publisher.sent) == 1
    key, value, headers = publisher.sent[0]
    assert value == raw and key == SID.encode()
    hdr = dict(headers)
    assert hdr[HEADER_EMITTER] == b"acme-agent" and hdr[HEADER_SOURCE] == b"/v1/telemetry"
    # The normalise stage re-runs ingest on the published bytes with the headers: same ids.
    again = ingest(value, emitter=hdr[HEADER_EMITTER].decode(), source=hdr[HEADER_SOURCE].decode())
    assert [e.event_id for e in again.events] == body["event_ids"]
    assert len(set(body["event_ids"])) == 3


async def test_x_api_key_header_and_edge_event_keyed_by_content_telemetry_id(
    client: httpx.AsyncClient, publisher: MemoryPublisher, keys: dict[str, str]
) -> None:
    r = await client.post(
        "/v1/telemetry",
        content=orjson.dumps(edge_event()),
        headers={**JSON, **auth(keys["cdn"], bearer=False)},
    )
    assert r.status_code == 202, r.text
    assert r.json()["session_id"] is None and r.json()["accepted"] == 1
    assert publisher.sent[0][0] == CTID.encode()


async def test_gzip_batch_of_100_publishes_the_decoded_bytes(
    client: httpx.AsyncClient, publisher: MemoryPublisher, keys: dict[str, str]
) -> None:
    raw = orjson.dumps(batch_doc(100))
    r = await post(client, keys["agent"], gzip.compress(raw), **{"Content-Encoding": "gzip"})
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 100
    assert publisher.sent[0][1] == raw
    r2 = await client.post(
        "/v1/telemetry",
        content=gzip.compress(raw),
        headers={"Content-Type": "application/gzip", **auth(keys["agent"])},
    )
    assert r2.status_code == 202 and r2.json()["event_ids"] == r.json()["event_ids"]


async def test_privacy_violations_are_reported_and_the_document_accepted(
    client: httpx.AsyncClient, publisher: MemoryPublisher, keys: dict[str, str]
) -> None:
    doc = session_doc(1)
    doc["events"].append(
        {
            "type": "turn_completed",
            "timestamp": "2026-03-28T10:00:05Z",
            "turn_id": "t1",
            "turn": {"privacy_level": "minimal", "query_text": "secret question", "response_tokens": 10},
        }
    )
    r = await post(client, keys["agent"], doc)
    assert r.status_code == 202, r.text
    stripped = r.json()["stripped"]
    assert stripped and stripped[0]["pointer"].startswith("/events/1/turn/query_text")
    assert len(publisher.sent) == 1
    # The stripped text never reaches Kafka; what was published re-ingests to the same events.
    published = publisher.sent[0][1]
    assert b"secret question" not in published
    again = ingest(published, emitter="acme-agent", source="/v1/telemetry")
    assert again.accepted and not again.stripped
    assert [e.event_id for e in again.events] == r.json()["event_ids"]


# --- bad input: a 4xx with the reason, nothing published, the app keeps serving -----------------


@pytest.mark.parametrize(
    ("body", "headers", "status", "rule"),
    [
        (b'{"schema_version": "0.1", "session_id": "550e', JSON, 400, "json:syntax"),  # truncated
        (b"\x1f\x8b\x08\x00garbage-not-deflate", {**JSON, "Content-Encoding": "gzip"}, 400, "gzip"),
        (gzip.compress(b'{"a": 1}' * 50)[:-12], {**JSON, "Content-Encoding": "gzip"}, 400, "gzip"),
        (b'{"a": 1}', {"Content-Type": "text/plain"}, 415, "http:content-type"),
        (b'{"a": 1}', {"Content-Type": "application/x-www-form-urlencoded"}, 415, "http:content-type"),
        (b'{"a": 1}', {**JSON, "Content-Encoding": "br"}, 415, "http:content-encoding"),
        (b"\xff\xfe not utf8", JSON, 400, "json:syntax"),
        (b"[1, 2, 3]", JSON, 422, "jsonschema:type"),
    ],
    ids=["truncated", "broken-gzip", "truncated-gzip", "text-plain", "form", "brotli", "not-utf8", "array"],
)
async def test_bad_bodies(
    client: httpx.AsyncClient,
    publisher: MemoryPublisher,
    keys: dict[str, str],
    body: bytes,
    headers: dict[str, str],
    status: int,
    rule: str,
) -> None:
    r = await client.post("/v1/telemetry", content=body, headers={**headers, **auth(keys["agent"])})
    assert r.status_code == status, r.text
    err = r.json()
    assert err["errors"] and err["errors"][0]["rule"] == rule and err["errors"][0]["message"]
    assert publisher.sent == []
    ok = await post(client, keys["agent"], session_doc(1))  # still serving
    assert ok.status_code == 202


async def test_missing_content_type_is_415(client: httpx.AsyncClient, keys: dict[str, str]) -> None:
    r = await client.post("/v1/telemetry", content=b'{"a":1}', headers=auth(keys["agent"]))
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"


async def test_ten_megabyte_body_is_413_without_publishing(
    client: httpx.AsyncClient, publisher: MemoryPublisher, keys: dict[str, str]
) -> None:
    big = b'{"pad": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    r = await post(client, keys["agent"], big)
    assert r.status_code == 413 and r.json()["errors"][0]["rule"] == "ctpipe:size"
    assert publisher.sent == []


async def test_gzip_bomb_stops_at_the_limit(
    client: httpx.AsyncClient, publisher: MemoryPublisher, keys: dict[str, str]
) -> None:
    bomb = gzip.compress(b'{"pad": "' + b"0" * (50 * 1024 * 1024) + b'"}')
    assert len(bomb) < 100 * 1024
    r = await post(client, keys["agent"], bomb, **{"Content-Encoding": "gzip"})
    assert r.status_code == 413 and "decompressed" in r.json()["errors"][0]["message"]
    assert publisher.sent == []


async def test_chunked_body_over_the_limit_is_413(
    client: httpx.AsyncClient, publisher: MemoryPublisher, keys: dict[str, str]
) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit applies while reading
        for _ in range(40):
            yield b"x" * 65536

    r = await client.post("/v1/telemetry", content=chunks(), headers={**JSON, **auth(keys["agent"])})
    assert r.status_code == 413
    assert publisher.sent == []


async def test_unknown_document_type_and_invalid_uuid_are_422_with_pointers(
    client: httpx.AsyncClient, publisher: MemoryPublisher, keys: dict[str, str]
) -> None:
    r = await post(client, keys["agent"], {**batch_doc(1), "document_type": "telemetry_blob"})
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/document_type"
    r = await post(client, keys["agent"], session_doc(1, session_id="not-a-uuid"))
    assert r.status_code == 422
    assert {"pointer": "/session_id", "rule": "jsonschema:format"}.items() <= r.json()["errors"][0].items()
    bad_ctid = edge_event()
    bad_ctid["event"]["content_telemetry_id"] = "990e8400-zzzz"
    r = await post(client, keys["cdn"], bad_ctid)
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/event/content_telemetry_id"
    assert publisher.sent == []


async def test_one_bad_event_rejects_the_whole_batch(
    client: httpx.AsyncClient, publisher: MemoryPublisher, keys: dict[str, str]
) -> None:
    doc = batch_doc(100)
    doc["events"][57]["timestamp"] = "yesterday"
    r = await post(client, keys["agent"], doc)
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/events/57/timestamp"
    assert publisher.sent == []


async def test_manifest_and_oa_fragments_are_refused_on_the_ct_route(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    manifest = {"schema_version": "0.1", "operator": {"name": "x"}, "roles": ["agent"]}
    r = await post(client, keys["agent"], manifest)
    assert r.status_code == 422
    r = await post(client, keys["agent"], {"session_id": SID, "outcome": {"type": "browse"}})
    assert r.status_code == 422 and r.json()["errors"][0]["rule"] == "ctpipe:route"


# --- authentication and source roles -----------------------------------------------------------


async def test_missing_and_unknown_keys_are_401(
    client: httpx.AsyncClient, publisher: MemoryPublisher, keys: dict[str, str]
) -> None:
    raw = orjson.dumps(session_doc(1))
    r = await client.post("/v1/telemetry", content=raw, headers=JSON)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = await client.post("/v1/telemetry", content=raw, headers={**JSON, **auth("ctp_" + "A" * 43)})
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    r = await client.post(
        "/v1/telemetry", content=raw, headers={**JSON, "Authorization": "Basic Zm9vOmJhcg=="}
    )
    assert r.status_code == 401
    assert publisher.sent == []


async def test_role_not_allowed_is_403_with_the_pointer(
    client: httpx.AsyncClient, publisher: MemoryPublisher, keys: dict[str, str]
) -> None:
    r = await post(client, keys["agent"], edge_event())  # agent key reporting an edge event
    assert r.status_code == 403
    assert r.json()["errors"][0]["pointer"] == "/event/source_role"
    doc = session_doc(3)
    del doc["events"][2]["source_role"]  # absent = agent: a CDN key may not report it
    for ev in doc["events"][:2]:
        ev["source_role"] = "edge"
    r = await post(client, keys["cdn"], doc)
    assert r.status_code == 403
    assert [e["pointer"] for e in r.json()["errors"]] == ["/events/2/source_role"]
    assert publisher.sent == []


# --- broker outcomes ----------------------------------------------------------------------------


async def test_queue_full_is_429_not_acked_503_too_large_413(
    client: httpx.AsyncClient, publisher: MemoryPublisher, keys: dict[str, str]
) -> None:
    publisher.fail = [QueueFull("full"), NotAcknowledged("no ack"), TooLarge("big"), RuntimeError("bug")]
    r = await post(client, keys["agent"], session_doc(1))
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    r = await post(client, keys["agent"], session_doc(1))
    assert r.status_code == 503 and r.json()["error"] == "unavailable"
    r = await post(client, keys["agent"], session_doc(1))
    assert r.status_code == 413
    r = await post(client, keys["agent"], session_doc(1))
    assert r.status_code == 500
    r = await post(client, keys["agent"], session_doc(1))
    assert r.status_code == 202 and len(publisher.sent) == 1


# --- OpenAttribution API ------------------------------------------------------------------------


async def test_oa_session_lifecycle(
    client: httpx.AsyncClient, publisher: MemoryPublisher, keys: dict[str, str]
) -> None:
    start = {
        "initiator_type": "user",
        "initiator": None,
        "content_scope": "mix-1",
        "agent_id": "shop-bot",
        "external_session_id": "ext-42",
        "user_context": {"segments": ["premium"]},
        "manifest_ref": None,
        "prior_session_ids": [],
    }
    r = await post(client, keys["agent"], start, route="/session/start")
    assert r.status_code == 202, r.text
    sid = r.json()["session_id"]
    assert str(uuid.UUID(sid)) == sid
    key, value, headers = publisher.sent[-1]
    published = orjson.loads(value)
    assert key == sid.encode() and published["session_id"] == sid
    assert published["external_session_id"] == "ext-42" and published["content_scope"] == "mix-1"
    assert dict(headers)[HEADER_SOURCE] == b"/session/start"
    assert ingest(value, emitter="acme-agent", source="/session/start").accepted

    events = {
        "session_id": sid,
        "events": [
            {
                "id": str(uuid.uuid4()),
                "type": "content_retrieved",
                "timestamp": "2026-03-28T10:00:01Z",
                "content_url": "https://www.wirecutter.com/reviews/x",
            },
            {"type": "cart_add", "timestamp": "2026-03-28T10:00:02Z", "product_id": str(uuid.uuid4())},
        ],
    }
    r = await post(client, keys["agent"], events, route="/events")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "ok" and r.json()["events_created"] == 2
    assert r.json()["event_ids"][0] == events["events"][0]["id"]
    key, value, headers = publisher.sent[-1]
    assert key == sid.encode() and value == orjson.dumps(events)
    again = ingest(value, emitter="acme-agent", source="/events")
    assert [e.event_id for e in again.events] == r.json()["event_ids"]

    end = {"session_id": sid, "outcome": {"type": "conversion", "value_amount": 9999, "currency": "USD"}}
    r = await post(client, keys["agent"], end, route="/session/end")
    assert r.status_code == 202 and r.json() == {"status": "ok", "session_id": sid}
    assert dict(publisher.sent[-1][2])[HEADER_SOURCE] == b"/session/end"
    assert len(publisher.sent) == 3


async def test_oa_bulk_mints_a_server_id_and_keeps_the_callers(
    client: httpx.AsyncClient, publisher: MemoryPublisher, keys: dict[str, str]
) -> None:
    caller = str(uuid.uuid4())
    session = {
        "schema_version": "0.4",
        "session_id": caller,
        "initiator_type": "agent",
        "agent_id": "my-agent",
        "started_at": "2026-03-28T10:00:00Z",
        "events": [
            {
                "type": "content_retrieved",
                "timestamp": "2026-03-28T10:00:01Z",
                "content_url": "https://r.com/a",
            },
            {"type": "content_cited", "timestamp": "2026-03-28T10:00:02Z", "content_url": "https://r.com/a"},
        ],
        "outcome": {"type": "conversion", "value_amount": 9999},
    }
    r = await post(client, keys["agent"], session, route="/session/bulk")
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["session_id"] != caller and body["external_session_id"] == caller
    assert body["events_created"] == 2 and body["outcome_recorded"] is True
    key, value, _ = publisher.sent[-1]
    published = orjson.loads(value)
    assert published["session_id"] == body["session_id"] and published["external_session_id"] == caller
    assert key == body["session_id"].encode()
    again = ingest(value, emitter="acme-agent", source="/session/bulk")
    assert again.session is not None and again.session.external_session_id == caller
    assert [e.event_id for e in again.events] == body["event_ids"]
    # A retried upload maps to the same server session and the same event ids.
    r2 = await post(client, keys["agent"], session, route="/session/bulk")
    assert r2.json()["session_id"] == body["session_id"] and r2.json()["event_ids"] == body["event_ids"]


async def test_oa_bad_bodies(
    client: httpx.AsyncClient, publisher: MemoryPublisher, keys: dict[str, str]
) -> None:
    r = await post(client, keys["agent"], b'{"session_id": ', route="/session/start")
    assert r.status_code == 400
    r = await post(client, keys["agent"], {"session_id": "nope", "events": []}, route="/events")
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/session_id"
    r = await post(client, keys["agent"], {"session_id": SID}, route="/session/end")
    assert r.status_code == 422
    assert publisher.sent == []


# --- operations ---------------------------------------------------------------------------------


async def test_health_ready_and_docs(client: httpx.AsyncClient, publisher: MemoryPublisher) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200
    publisher.is_ready = False
    assert (await client.get("/readyz")).status_code == 503
    spec = (await client.get("/openapi.json")).json()
    assert {"/v1/telemetry", "/session/start", "/events", "/session/end", "/session/bulk"} <= set(
        spec["paths"]
    )
    assert (await client.get("/docs")).status_code == 200


def test_default_body_limit_is_five_mebibytes() -> None:
    assert DEFAULT_MAX_BODY == 5 * 1024 * 1024


async def test_client_disconnect_mid_body_is_a_400_and_nothing_is_published(
    publisher: MemoryPublisher, keys: dict[str, str]
) -> None:
    app = create_app(publisher, KeyStore(Path(keys["path"])))
    sent: list[dict[str, Any]] = []
    parts = [
        {"type": "http.request", "body": b'{"schema_version": "0.1", ', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return parts.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/telemetry",
        "raw_path": b"/v1/telemetry",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", b"2000"),
            (b"authorization", f"Bearer {keys['agent']}".encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("gw", 80),
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 400
    assert publisher.sent == []
