"""Emitter SDK: the OpenAttribution client API over Kafka or over HTTP to the ctpipe gateway.

Input: calls shaped like the OA SDK's ``Client`` (``start_session``, ``record_event``,
``end_session``, ``upload_session``; OA 0.4 section 4.1 and the OA README), sync
(``OpenAttributionClient``) or async (``AsyncOpenAttributionClient``).
Output: OA 0.4 API documents (``/session/start``, ``/events``, ``/session/end``,
``/session/bulk`` bodies) delivered through a transport:

- ``HttpTransport(base_url, api_key)``: POSTs them to the gateway (httpx), retrying with
  exponential backoff on 429/503/connection errors (honouring ``Retry-After``).
- ``KafkaTransport(bootstrap, topic, emitter)``: publishes exactly what the gateway would publish
  (same bytes shape: server-assigned session id on start/bulk, same key, same ``ctpipe-emitter``/
  ``ctpipe-source`` headers; ``producers.publisher``), after validating with ``ingest`` so nothing
  the pipeline would reject leaves the process.

Buffering: ``record_event`` appends to a per-session buffer; a session's events go out as one
``/events`` document when it reaches ``batch_size`` events, every ``flush_interval`` seconds, on
``flush()``, before that session's ``end_session``, on ``close()``/context-manager exit, and at
interpreter exit (``atexit``). Each event gets a client-side UUID ``id`` (as the OA SDK does), so a
retried delivery carries the same event ids.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import random
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import orjson

from producers.publisher import (
    KafkaPublisher,
    PublishError,
    QueueFull,
    headers_for,
    message_key,
    oa_bulk_document,
    oa_start_document,
)
from schemas.normalize import ingest

log = logging.getLogger("ctpipe.emitter")

START, EVENTS, END, BULK = "/session/start", "/events", "/session/end", "/session/bulk"


class EmitterError(RuntimeError):
    """A document was refused (permanent: invalid, unauthorised, too large)."""


class TransientError(EmitterError):
    """Delivery failed after retries (broker or gateway unavailable); the data may be re-sent."""


class Transport(Protocol):
    """Delivers one OA API document to a route; returns the (gateway-shaped) response body."""

    def send(self, route: str, doc: dict[str, Any]) -> dict[str, Any]: ...

    async def asend(self, route: str, doc: dict[str, Any]) -> dict[str, Any]: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


# --- transports --------------------------------------------------------------------------------


def prepare(route: str, doc: dict[str, Any], emitter: str) -> tuple[bytes, bytes, dict[str, Any]]:
    """(key, value, response) of the message the gateway would publish for this route and body.

    EmitterError when ``ingest`` rejects the document: nothing invalid is published.
    """
    sid: str | None = None
    if route == START:
        doc, sid = oa_start_document(doc)
    elif route == BULK:
        doc, sid = oa_bulk_document(doc, emitter)
    value = orjson.dumps(doc)
    result = ingest(value, emitter=emitter, source=route)
    if not result.accepted:
        raise EmitterError(f"{route}: {result.reason}")
    response: dict[str, Any] = {
        "status": "ok",
        "session_id": sid or (result.session.session_id if result.session else None),
        "events_created": len(result.events),
        "event_ids": [e.event_id for e in result.events],
    }
    if route == BULK:
        response["external_session_id"] = doc.get("external_session_id")
    return message_key(result), value, response


class KafkaTransport:
    """Direct to Kafka: the same message the gateway would publish for this route."""

    def __init__(
        self, bootstrap: str, topic: str, emitter: str, *, ack_timeout: float = 10.0, **overrides: Any
    ):
        self.emitter = emitter
        self.publisher = KafkaPublisher(bootstrap, topic, ack_timeout=ack_timeout, **overrides)

    def prepare(self, route: str, doc: dict[str, Any]) -> tuple[bytes, bytes, dict[str, Any]]:
        return prepare(route, doc, self.emitter)

    def send(self, route: str, doc: dict[str, Any]) -> dict[str, Any]:
        key, value, response = self.prepare(route, doc)
        try:
            self.publisher.publish_sync(key, value, headers_for(self.emitter, route))
        except PublishError as exc:
            raise TransientError(f"{route}: {exc}") from exc
        return response

    async def asend(self, route: str, doc: dict[str, Any]) -> dict[str, Any]:
        key, value, response = self.prepare(route, doc)
        for attempt in range(50):
            try:
                await self.publisher.publish(key, value, headers_for(self.emitter, route))
                return response
            except QueueFull:
                await asyncio.sleep(min(0.01 * (attempt + 1), 0.2))
            except PublishError as exc:
                raise TransientError(f"{route}: {exc}") from exc
        raise TransientError(f"{route}: the producer queue stayed full")

    def close(self) -> None:
        self.publisher.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.publisher.close)


RETRY_STATUSES = frozenset({429, 502, 503, 504})


class HttpTransport:
    """HTTP to the ctpipe gateway (or any OA 0.4 section 4.1 server), with retries and backoff."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        retries: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        http_transport: httpx.BaseTransport | None = None,
        async_http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http_transport = http_transport
        self._async_http_transport = async_http_transport
        self.base_url = base_url.rstrip("/")
        self.headers = {"X-API-Key": api_key, "Content-Type": "application/json"}
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._client: httpx.Client | None = None
        self._aclient: httpx.AsyncClient | None = None

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            after = response.headers.get("retry-after")
            if after:
                try:
                    return min(float(after), self.max_backoff)
                except ValueError:
                    pass
        return min(self.backoff * 2**attempt, self.max_backoff) * (0.5 + random.random() / 2)

    def _result(self, route: str, response: httpx.Response) -> dict[str, Any]:
        if response.is_success:
            body = response.json() if response.content else {}
            return body if isinstance(body, dict) else {"response": body}
        raise EmitterError(f"{route}: HTTP {response.status_code}: {response.text[:500]}")

    def send(self, route: str, doc: dict[str, Any]) -> dict[str, Any]:
        if self._client is None:
            self._client = httpx.Client(
                timeout=self.timeout, headers=self.headers, transport=self._http_transport
            )
        body = orjson.dumps(doc)
        last = ""
        for attempt in range(self.retries + 1):
            response: httpx.Response | None = None
            try:
                response = self._client.post(self.base_url + route, content=body)
                if response.status_code not in RETRY_STATUSES:
                    return self._result(route, response)
                last = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt < self.retries:
                time.sleep(self._delay(attempt, response))
        raise TransientError(f"{route}: gave up after {self.retries + 1} attempts ({last})")

    async def asend(self, route: str, doc: dict[str, Any]) -> dict[str, Any]:
        if self._aclient is None:
            self._aclient = httpx.AsyncClient(
                timeout=self.timeout, headers=self.headers, transport=self._async_http_transport
            )
        body = orjson.dumps(doc)
        last = ""
        for attempt in range(self.retries + 1):
            response: httpx.Response | None = None
            try:
                response = await self._aclient.post(self.base_url + route, content=body)
                if response.status_code not in RETRY_STATUSES:
                    return self._result(route, response)
                last = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt < self.retries:
                await asyncio.sleep(self._delay(attempt, response))
        raise TransientError(f"{route}: gave up after {self.retries + 1} attempts ({last})")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        if self._aclient is not None:
            await self._aclient.aclose()
            self._aclient = None
        self.close()


# --- document builders (OA SDK argument names) -----------------------------------------------


def _plain(value: Any) -> Any:
    """Pydantic models (e.g. the OA SDK's) -> JSON-ready dicts; anything else unchanged."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json", exclude_none=True)
    return value


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _ts(value: datetime | str | None) -> str:
    if value is None:
        return _now()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value


def start_document(
    *,
    content_scope: str | None = None,
    agent_id: str | None = None,
    external_session_id: str | None = None,
    user_context: Any = None,
    manifest_ref: str | None = None,
    prior_session_ids: list[Any] | None = None,
    initiator_type: str = "user",
    initiator: Any = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "initiator_type": initiator_type,
        "initiator": _plain(initiator),
        "content_scope": content_scope,
        "agent_id": agent_id,
        "external_session_id": external_session_id,
        "user_context": _plain(user_context) or {},
        "manifest_ref": manifest_ref,
        "prior_session_ids": [str(s) for s in prior_session_ids or ()],
    }
    return {k: v for k, v in doc.items() if v is not None}


def event_document(
    event_type: str,
    *,
    content_url: str | None = None,
    content_id: Any = None,
    product_id: Any = None,
    turn: Any = None,
    data: Mapping[str, Any] | None = None,
    timestamp: datetime | str | None = None,
    event_id: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "id": str(event_id or uuid.uuid4()),
        "type": event_type,
        "timestamp": _ts(timestamp),
    }
    for name, value in (("content_url", content_url), ("content_id", content_id), ("product_id", product_id)):
        if value is not None:
            ev[name] = str(value)
    if turn is not None:
        ev["turn"] = _plain(turn)
    if data:
        ev["data"] = dict(data)
    ev.update({k: _plain(v) for k, v in extra.items() if v is not None})
    return ev


def session_document(session: Any) -> dict[str, Any]:
    doc = _plain(session)
    if not isinstance(doc, dict):
        raise TypeError("upload_session takes a session dict or a model with model_dump()")
    return doc


# --- clients -------------------------------------------------------------------------------------


class _Buffers:
    """Per-session pending events (guarded by the owning client's lock)."""

    def __init__(self) -> None:
        self.pending: dict[str, list[dict[str, Any]]] = {}

    def add(self, session_id: str, event: dict[str, Any]) -> int:
        events = self.pending.setdefault(session_id, [])
        events.append(event)
        return len(events)

    def take(self, session_id: str | None = None) -> list[tuple[str, list[dict[str, Any]]]]:
        if session_id is not None:
            events = self.pending.pop(session_id, None)
            return [(session_id, events)] if events else []
        out = [(s, e) for s, e in self.pending.items() if e]
        self.pending = {}
        return out

    def put_back(self, session_id: str, events: list[dict[str, Any]]) -> None:
        self.pending[session_id] = events + self.pending.get(session_id, [])

    def __len__(self) -> int:
        return sum(len(e) for e in self.pending.values())


def _register_atexit(client: Any) -> Callable[[], None]:
    ref = weakref.ref(client)

    def on_exit() -> None:
        c = ref()
        if c is not None:
            try:
                c._exit_flush()
            except Exception:
                log.exception("emitter: flush at exit failed")

    atexit.register(on_exit)
    return on_exit


class OpenAttributionClient:
    """Synchronous OA client: buffered, batched per session, flushed on exit."""

    def __init__(
        self,
        transport: Transport,
        *,
        batch_size: int = 100,
        flush_interval: float = 1.0,
        flush_at_exit: bool = True,
    ) -> None:
        self.transport = transport
        self.batch_size = max(1, batch_size)
        self.flush_interval = flush_interval
        self._buffers = _Buffers()
        self._lock = threading.RLock()  # buffer + send order
        self._closed = False
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        if flush_interval > 0:
            self._timer = threading.Thread(target=self._tick, name="ctpipe-emitter-flush", daemon=True)
            self._timer.start()
        self._atexit = _register_atexit(self) if flush_at_exit else None

    def _tick(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self._flush(raise_errors=False)
            except Exception:
                log.exception("emitter: background flush failed")

    def start_session(self, **kwargs: Any) -> str:
        """Start a session (OA ``/session/start``); returns the server-assigned session id."""
        return str(self.transport.send(START, start_document(**kwargs))["session_id"])

    def record_event(self, session_id: Any, event_type: str, **kwargs: Any) -> str:
        """Buffer one event; returns its id. Sent at ``batch_size`` / ``flush_interval`` / ``flush``."""
        ev = event_document(event_type, **kwargs)
        sid = str(session_id)
        with self._lock:
            if self._closed:
                raise EmitterError("the client is closed")
            if self._buffers.add(sid, ev) >= self.batch_size:
                self._send_events(self._buffers.take(sid), raise_errors=True)
        return str(ev["id"])

    def record_events(self, session_id: Any, events: list[Mapping[str, Any]]) -> None:
        for ev in events:
            kwargs = {k: v for k, v in ev.items() if k != "type"}
            if "id" in kwargs:
                kwargs["event_id"] = kwargs.pop("id")
            self.record_event(session_id, str(ev["type"]), **kwargs)

    def end_session(self, session_id: Any, outcome: Any) -> None:
        """Send the session's pending events, then ``/session/end`` with the outcome (OA 0.4 §3.7)."""
        sid = str(session_id)
        with self._lock:
            self._send_events(self._buffers.take(sid), raise_errors=True)
            self.transport.send(END, {"session_id": sid, "outcome": _plain(outcome)})

    def upload_session(self, session: Any) -> str:
        """Upload a whole session (OA ``/session/bulk``); returns the server's session id."""
        return str(self.transport.send(BULK, session_document(session))["session_id"])

    def _send_events(self, batches: list[tuple[str, list[dict[str, Any]]]], *, raise_errors: bool) -> None:
        for i, (sid, events) in enumerate(batches):
            try:
                self.transport.send(EVENTS, {"session_id": sid, "events": events})
            except TransientError:
                for s, e in batches[i:]:
                    self._buffers.put_back(s, e)
                if raise_errors:
                    raise
                log.warning("emitter: %d events kept for retry (transport unavailable)", len(self._buffers))
                return
            except EmitterError:
                if raise_errors:
                    raise
                log.exception("emitter: dropped %d events of session %s (refused)", len(events), sid)

    def _flush(self, *, raise_errors: bool) -> None:
        with self._lock:
            self._send_events(self._buffers.take(), raise_errors=raise_errors)

    def flush(self) -> None:
        """Send every buffered event now."""
        self._flush(raise_errors=True)

    @property
    def pending(self) -> int:
        return len(self._buffers)

    def _exit_flush(self) -> None:
        if not self._closed:
            self.close()

    def close(self) -> None:
        """Flush, stop the timer, close the transport."""
        if self._closed:
            return
        self._stop.set()
        try:
            self.flush()
        finally:
            self._closed = True
            if self._atexit is not None:
                atexit.unregister(self._atexit)
            self.transport.close()

    def __enter__(self) -> OpenAttributionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncOpenAttributionClient:
    """Asynchronous OA client (same API, awaitable), buffered and batched like the sync one."""

    def __init__(
        self,
        transport: Transport,
        *,
        batch_size: int = 100,
        flush_interval: float = 1.0,
        flush_at_exit: bool = True,
    ) -> None:
        self.transport = transport
        self.batch_size = max(1, batch_size)
        self.flush_interval = flush_interval
        self._buffers = _Buffers()
        self._lock: asyncio.Lock | None = None
        self._timer: asyncio.Task[None] | None = None
        self._closed = False
        self._atexit = _register_atexit(self) if flush_at_exit else None

    def _ensure(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        if self._timer is None and self.flush_interval > 0:
            self._timer = asyncio.get_running_loop().create_task(self._tick())
        return self._lock

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self._flush(raise_errors=False)
            except Exception:
                log.exception("emitter: background flush failed")

    async def start_session(self, **kwargs: Any) -> str:
        self._ensure()
        return str((await self.transport.asend(START, start_document(**kwargs)))["session_id"])

    async def record_event(self, session_id: Any, event_type: str, **kwargs: Any) -> str:
        ev = event_document(event_type, **kwargs)
        sid = str(session_id)
        async with self._ensure():
            if self._closed:
                raise EmitterError("the client is closed")
            if self._buffers.add(sid, ev) >= self.batch_size:
                await self._send_events(self._buffers.take(sid), raise_errors=True)
        return str(ev["id"])

    async def end_session(self, session_id: Any, outcome: Any) -> None:
        sid = str(session_id)
        async with self._ensure():
            await self._send_events(self._buffers.take(sid), raise_errors=True)
            await self.transport.asend(END, {"session_id": sid, "outcome": _plain(outcome)})

    async def upload_session(self, session: Any) -> str:
        self._ensure()
        return str((await self.transport.asend(BULK, session_document(session)))["session_id"])

    async def _send_events(
        self, batches: list[tuple[str, list[dict[str, Any]]]], *, raise_errors: bool
    ) -> None:
        for i, (sid, events) in enumerate(batches):
            try:
                await self.transport.asend(EVENTS, {"session_id": sid, "events": events})
            except TransientError:
                for s, e in batches[i:]:
                    self._buffers.put_back(s, e)
                if raise_errors:
                    raise
                log.warning("emitter: %d events kept for retry (transport unavailable)", len(self._buffers))
                return
            except EmitterError:
                if raise_errors:
                    raise
                log.exception("emitter: dropped %d events of session %s (refused)", len(events), sid)

    async def _flush(self, *, raise_errors: bool) -> None:
        async with self._ensure():
            await self._send_events(self._buffers.take(), raise_errors=raise_errors)

    async def flush(self) -> None:
        await self._flush(raise_errors=True)

    @property
    def pending(self) -> int:
        return len(self._buffers)

    def _exit_flush(self) -> None:
        """At interpreter exit no event loop runs: deliver leftovers with the sync transport path."""
        if self._closed:
            return
        for sid, events in self._buffers.take():
            self.transport.send(EVENTS, {"session_id": sid, "events": events})
        self._closed = True
        self.transport.close()

    async def aclose(self) -> None:
        if self._closed:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            await self.flush()
        finally:
            self._closed = True
            if self._atexit is not None:
                atexit.unregister(self._atexit)
            await self.transport.aclose()

    close = aclose

    async def __aenter__(self) -> AsyncOpenAttributionClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
