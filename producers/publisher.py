"""Publishing shell shared by the HTTP gateway and the emitter SDK's Kafka transport.

Input: one validated raw document (bytes), its message key and the emitter/source it came from.
Output: exactly one message on the RAW topic (``schemas.topics.RAW``), acknowledged by the
broker (acks=all, idempotent producer) or a typed failure.

Wire contract (what the normalise stage relies on):
- value = the document's bytes as received (after gzip decoding). For OA 0.4 ``/session/start``
  and ``/session/bulk`` bodies the server assigns the session id first (OA 0.4 section 4.1;
  ``oa_start_document`` / ``oa_bulk_document``), so the published bytes already carry it.
- key = session_id, else ctx_token, else the first event's content_telemetry_id, else random
  (``message_key``); one document is never split over several messages.
- headers ``ctpipe-emitter`` (the emitter identity bound to the API key) and ``ctpipe-source``
  (the HTTP route, e.g. ``/v1/telemetry``, ``/events``): re-running
  ``schemas.normalize.ingest(value, emitter=..., source=...)`` with them reproduces the same
  event ids the gateway answered with.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import uuid
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from producers.kafka import Headers, producer_config
from schemas.normalize import IngestResult
from schemas.validate import MAX_DOCUMENT_BYTES

HEADER_EMITTER = "ctpipe-emitter"
HEADER_SOURCE = "ctpipe-source"

#: Namespace of server-assigned OA bulk session ids (UUIDv5 over emitter + the caller's id), so a
#: retried ``/session/bulk`` upload maps to the same session and the same event ids.
OA_BULK_NAMESPACE = uuid.UUID("2b0f7d5e-4c1a-5e8b-9a3f-6d2c8e1b7a40")


class PublishError(RuntimeError):
    """The document was not published (base class)."""


class QueueFull(PublishError):
    """The producer's local queue is full: back off and retry (HTTP 429)."""


class NotAcknowledged(PublishError):
    """The broker did not acknowledge within the bound (HTTP 503); a retry is safe (stable ids)."""


class TooLarge(PublishError):
    """The message exceeds the producer's or the broker's message size limit (HTTP 413)."""


class Publisher(Protocol):
    """What the gateway needs from a publisher (the Kafka one below, or a test double)."""

    async def publish(self, key: bytes, value: bytes, headers: Headers) -> None: ...

    async def ready(self) -> bool: ...

    def close(self) -> None: ...


def headers_for(emitter: str, source: str) -> Headers:
    return [(HEADER_EMITTER, emitter.encode()), (HEADER_SOURCE, source.encode())]


def message_key(result: IngestResult) -> bytes:
    """session_id, else ctx_token, else first content_telemetry_id, else a random key."""
    s = result.session
    if s is not None:
        if s.session_id:
            return s.session_id.encode()
        if s.ctx_token:
            return s.ctx_token.encode()
    for ev in result.events[:1]:
        if ev.session_id:
            return ev.session_id.encode()
        if ev.ctx_token:
            return ev.ctx_token.encode()
        if ev.content_telemetry_id:
            return ev.content_telemetry_id.encode()
    return uuid.uuid4().hex.encode()


def oa_start_document(body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """OA ``/session/start`` body + a server-minted session id (OA 0.4 section 4.1).

    A caller-sent ``session_id`` is not trusted as the server's id; it is kept as
    ``external_session_id`` unless the caller already set one.
    """
    sid = str(uuid.uuid4())
    doc = dict(body)
    caller = doc.get("session_id")
    if caller is not None and doc.get("external_session_id") in (None, ""):
        doc["external_session_id"] = str(caller)
    doc["session_id"] = sid
    return doc, sid


def oa_bulk_document(body: dict[str, Any], emitter: str) -> tuple[dict[str, Any], str]:
    """OA ``/session/bulk`` body with the server's session id; the caller's id becomes
    ``external_session_id`` (OA reference server behaviour, README "Bulk Upload").

    The server id is a UUIDv5 over (emitter, caller's session id): deterministic, so a retried
    upload is idempotent downstream. A body without a usable ``session_id`` gets a random id
    (validation then reports what is missing).
    """
    doc = dict(body)
    caller = doc.get("session_id")
    if isinstance(caller, str) and caller:
        sid = str(uuid.uuid5(OA_BULK_NAMESPACE, f"{emitter}\x1f{caller.lower()}"))
        doc["external_session_id"] = caller
    else:
        sid = str(uuid.uuid4())
    doc["session_id"] = sid
    return doc, sid


class KafkaPublisher:
    """An idempotent confluent-kafka producer (acks=all, lz4, linger 5 ms), polled by a background
    thread; ``publish`` resolves when the broker acknowledged, within ``ack_timeout`` seconds."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        ack_timeout: float = 5.0,
        ready_ttl: float = 5.0,
        **overrides: Any,
    ) -> None:
        self.topic = topic
        self.ack_timeout = ack_timeout
        self.ready_ttl = ready_ttl
        config = producer_config(
            bootstrap,
            # Give up on a message around the time the caller stops waiting, so a 503 rarely
            # races a late delivery (a retry after one is still safe: event ids are stable).
            **{
                "message.timeout.ms": max(int(ack_timeout * 1000), 1000),
                "message.max.bytes": MAX_DOCUMENT_BYTES + 64 * 1024,
                "linger.ms": 5,
                **overrides,
            },
        )
        self._producer = Producer(config)
        self._stop = threading.Event()
        self._ready_at = 0.0
        self._ready = False
        self._thread = threading.Thread(target=self._poll_loop, name="ctpipe-publisher-poll", daemon=True)
        self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def _produce(self, key: bytes, value: bytes, headers: Headers, on_delivery: Any) -> None:
        try:
            self._producer.produce(self.topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
        except BufferError as exc:
            raise QueueFull("the producer queue is full") from exc
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                raise TooLarge(f"message of {len(value)} bytes is over the producer limit") from exc
            raise PublishError(str(exc)) from exc

    @staticmethod
    def _failure(err: KafkaError) -> PublishError:
        if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
            return TooLarge(f"the broker refused the message as too large: {err.str()}")
        return NotAcknowledged(f"not acknowledged by the broker: {err.str()}")

    async def publish(self, key: bytes, value: bytes, headers: Headers) -> None:
        """Produce one message and wait for its acknowledgement (QueueFull/NotAcknowledged/TooLarge)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[KafkaError | None] = loop.create_future()

        def settle(err: KafkaError | None) -> None:
            if not fut.done():
                fut.set_result(err)

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            loop.call_soon_threadsafe(settle, err)

        self._produce(key, value, headers, on_delivery)
        try:
            err = await asyncio.wait_for(fut, self.ack_timeout)
        except TimeoutError as exc:
            raise NotAcknowledged(f"no acknowledgement within {self.ack_timeout:g} s") from exc
        if err is not None:
            raise self._failure(err)

    def publish_sync(self, key: bytes, value: bytes, headers: Headers, timeout: float | None = None) -> None:
        """Blocking ``publish`` for synchronous callers (the SDK's sync client)."""
        fut: concurrent.futures.Future[KafkaError | None] = concurrent.futures.Future()

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if not fut.done():
                fut.set_result(err)

        deadline = time.monotonic() + (timeout if timeout is not None else self.ack_timeout)
        while True:
            try:
                self._produce(key, value, headers, on_delivery)
                break
            except QueueFull:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        try:
            err = fut.result(max(deadline - time.monotonic(), 0.0))
        except concurrent.futures.TimeoutError as exc:
            raise NotAcknowledged(f"no acknowledgement within {self.ack_timeout:g} s") from exc
        if err is not None:
            raise self._failure(err)

    def check_ready(self, timeout: float = 2.0) -> bool:
        """Broker reachable and the topic known (a metadata request, cached ``ready_ttl`` s)."""
        now = time.monotonic()
        if now - self._ready_at < self.ready_ttl:
            return self._ready
        try:
            md = self._producer.list_topics(self.topic, timeout=timeout)
            t = md.topics.get(self.topic)
            ok = bool(md.brokers) and t is not None and t.error is None and bool(t.partitions)
        except KafkaException:
            ok = False
        self._ready, self._ready_at = ok, time.monotonic()
        return ok

    async def ready(self) -> bool:
        if time.monotonic() - self._ready_at < self.ready_ttl:
            return self._ready
        return await asyncio.to_thread(self.check_ready)

    def flush(self, timeout: float = 10.0) -> int:
        return int(self._producer.flush(timeout))

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout``), then stop the poll thread."""
        if self._stop.is_set():
            return
        self._producer.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=2.0)
