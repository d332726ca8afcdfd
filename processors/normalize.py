"""Normalize: raw emitter documents (RAW) -> canonical events (EVENTS, RETRIEVALS) or the DLQ.

Input: RAW messages, value = raw document bytes, headers ``ctpipe-emitter`` (emitter identity,
default "unknown") and ``ctpipe-source`` (the ``ingest`` source hint: an HTTP route or DocKind).

Output, per accepted document:

* EVENTS — one *document envelope* per session key (chunked when large); events without a
  session key (edge/origin retrievals) get one envelope each. Envelope wire contract (JSON
  object, UTF-8)::

      {"t": "d", "s": <session key> | null, "h": <SessionHeader JSON> | null,
       "e": [<CanonicalEvent JSON>, ...]}

  ``s`` is the session key (session_id, else ctx_token; null for session-less events, whose
  envelopes always start with exactly ``{"t":"d","s":null``), ``h`` is ``IngestResult.session``
  (``encode_header``, on the first chunk only), each element of ``e`` is exactly
  ``schemas.records.encode_event(event)``. A header-only envelope (OA /session/start or /end) has
  ``"e": []``.
* RETRIEVALS — every ``retrieved`` event as an observation record
  (``schemas.records.encode_observation``: what correlate keeps of it), routed by
  content_telemetry_id, else event_id (CT 7.2 repartitioning for correlation).

Batching (``route_outputs``): the stage takes RAW in batches (``processors.source.BatchSource``:
librdkafka, its own consumer group, no Faust event per message) and writes each batch's records
packed (``schemas.records.pack``: a JSON array per message, at most 512 KiB) per destination
partition, the partition being ``schemas.topics.partition_for`` of the record's key (session
key; content_telemetry_id, else event_id), so all records of one session / one ID meet on one
partition. Session-less envelopes are packed apart from session envelopes, so a packed
session-less message starts with ``[{"t":"d","s":null`` and sessionize skips it unparsed.

Owner resolution (CT 0.1 section 7.3): owners come from ``content_url`` domains (in ``ingest``).
With an owner registry (``schemas.owners``, ``CTPIPE_OWNER_REGISTRY``), events that carry a
``content_id`` but got no owner from a URL take the owner of their longest registered
``content_id`` prefix; a URL-derived owner is never overridden. Without a registry nothing is
done per event.

Invalid documents go to the DLQ (``schemas.dlq`` envelope, stage "normalize": reason, errors,
original bytes and key, topic/partition/offset, emitter). A circuit breaker (``Breaker``) stops
the worker instead of dead-lettering everything when the invalid ratio over the last messages
says something is systematically wrong (a producer bug, a wrong topic).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mypy_extensions import mypyc_attr

from processors.app import Health, PipelineApp, send_reliably
from processors.source import BatchSource
from schemas import dlq
from schemas.canonical import CanonicalEvent, EventType
from schemas.codec import dumps
from schemas.framing import partition_for
from schemas.normalize import ingest
from schemas.owners import OwnerRegistry
from schemas.records import (
    EVENTS_SESSIONLESS_PREFIX,
    decode_events_envelope,
    encode_observation,
    pack,
)

STAGE = "normalize"
EMITTER_HEADER = "ctpipe-emitter"
SOURCE_HEADER = "ctpipe-source"
DEFAULT_EMITTER = "unknown"
#: A batch's outputs are routed and enqueued every this many events (a RAW batch of event_batch
#: documents carries up to ~1M events: built at once, its records held ~0.5 GB of memory).
PART_EVENTS = 5000
#: Envelopes above this many bytes are split (Kafka's default message limit is 1 MiB).
ENVELOPE_MAX_BYTES = 256 * 1024

#: How every envelope of events without a session key starts (sessionize skips them unparsed).
SESSIONLESS_PREFIX = EVENTS_SESSIONLESS_PREFIX
#: How every packed message of such envelopes starts.
SESSIONLESS_PACKED_PREFIX = b"[" + EVENTS_SESSIONLESS_PREFIX


def sessionless(value: bytes) -> bool:
    """True for an EVENTS message of session-less envelopes only (single or packed)."""
    return value.startswith(SESSIONLESS_PREFIX) or value.startswith(SESSIONLESS_PACKED_PREFIX)


Message = tuple[bytes, bytes]  # (key, value)


@mypyc_attr(native_class=False)  # an exception class stays a Python class (schemas/_native.py)
class BreakerTripped(RuntimeError):
    """Too many invalid documents: the worker stops instead of dead-lettering everything."""


@dataclass(slots=True)
class Breaker:
    """Rolling invalid ratio over the last ``window`` messages (Sentry arroyo's ``DlqLimit``).

    Trips when, within the window, at least ``min_invalid`` messages were invalid AND their share
    exceeds ``max_ratio``.
    """

    max_ratio: float = 0.5
    window: int = 1000
    min_invalid: int = 100
    _seen: deque[bool] = field(default_factory=deque)
    _invalid: int = 0
    _reasons: deque[str] = field(default_factory=lambda: deque(maxlen=5))
    tripped: BreakerTripped | None = None  # set once it tripped; the worker stops on it

    def record(self, valid: bool, reason: str = "") -> None:
        """Record one message; raise ``BreakerTripped`` when the limit is exceeded."""
        self._seen.append(valid)
        if not valid:
            self._invalid += 1
            self._reasons.append(reason)
        if len(self._seen) > self.window and not self._seen.popleft():
            self._invalid -= 1
        if self._invalid >= self.min_invalid and self._invalid > self.max_ratio * len(self._seen):
            ratio = self._invalid / len(self._seen)
            self.tripped = BreakerTripped(
                f"normalize circuit breaker: {self._invalid} of the last {len(self._seen)} messages "
                f"were invalid ({ratio:.0%} > {self.max_ratio:.0%}); stopping instead of dead-lettering "
                f"everything. Last reasons: {list(self._reasons)}"
            )
            raise self.tripped

    @property
    def ratio(self) -> float:
        return self._invalid / len(self._seen) if self._seen else 0.0


@dataclass(slots=True, init=False)
class Normalized:
    """What one RAW message produced."""

    events: list[Message] = field(default_factory=list)
    retrievals: list[Message] = field(default_factory=list)
    dead_letter: bytes | None = None  # encoded schemas.dlq envelope
    reason: str = ""
    event_count: int = 0
    owners_resolved: int = 0  # events whose owner came from the content_id registry (CT 7.3)

    # init=False + this __init__: the native build compiles it (a generated one stays Python)
    def __init__(
        self,
        dead_letter: bytes | None = None,
        reason: str = "",
        event_count: int = 0,
        owners_resolved: int = 0,
    ) -> None:
        self.events, self.retrievals = [], []
        self.dead_letter, self.reason = dead_letter, reason
        self.event_count, self.owners_resolved = event_count, owners_resolved


def header_values(headers: Any) -> tuple[str, str | None]:
    """(emitter, source hint) from Kafka headers (list of pairs or mapping)."""
    emitter = DEFAULT_EMITTER
    source: str | None = None
    if not headers:
        return emitter, source
    items: Iterable[tuple[str, Any]] = headers.items() if hasattr(headers, "items") else headers
    for name, value in items:
        if value is None:
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)
        if name == EMITTER_HEADER and text:
            emitter = text
        elif name == SOURCE_HEADER and text:
            source = text
    return emitter, source


def wire_key(w: dict[str, Any]) -> str:
    """EVENTS key of an event's wire dict (``schemas.normalize.IngestResult.wire``): session_id,
    else ctx_token, else content_telemetry_id, else event_id."""
    key: str = w.get("session_id") or w.get("ctx_token") or w.get("content_telemetry_id") or w["event_id"]
    return key


def _envelopes(session_key: str, header_json: bytes | None, encoded: Sequence[bytes]) -> list[bytes]:
    out: list[bytes] = []
    start = b'{"t":"d","s":' + dumps(session_key) + b',"h":'
    head = header_json if header_json is not None else b"null"
    chunk: list[bytes] = []
    size = len(head)
    for e in encoded:
        if chunk and size + len(e) > ENVELOPE_MAX_BYTES:
            out.append(start + head + b',"e":[' + b",".join(chunk) + b"]}")
            head, chunk, size = b"null", [], 4
        chunk.append(e)
        size += len(e) + 1
    out.append(start + head + b',"e":[' + b",".join(chunk) + b"]}")
    return out


#: the CanonicalEvent fields: its wire dicts' key order
_EVENT_ORDER = tuple(CanonicalEvent.model_fields)


def resolve_wire_owners(
    wire: list[dict[str, Any]], owners: OwnerRegistry
) -> tuple[list[dict[str, Any]], int]:
    """CT 0.1 section 7.3 secondary path: an event with a content_id and no URL-derived owner
    takes the owner of its longest registered content_id prefix. On the events' wire dicts
    (``IngestResult.wire``), without building their models: a resolved event's dict is a new
    one with ``owner_domain`` at its place in the model's field order, so ``dumps`` of it is
    still ``encode_event`` of the resolved model.
    Returns (wire dicts, how many got an owner); ``wire`` itself when none changed."""
    out = wire
    resolved = 0
    for i, w in enumerate(wire):
        if w.get("owner_domain"):
            continue
        content_id = w.get("content_id")
        if not content_id:
            continue
        domain = owners.resolve(content_id)
        if domain is None:
            continue
        if not resolved:
            out = list(wire)
        given = {**w, "owner_domain": domain}
        out[i] = {k: given[k] for k in _EVENT_ORDER if k in given}  # rare: ~1 % of documents
        resolved += 1
    return out, resolved


def normalize_message(
    value: bytes | None,
    *,
    key: bytes | None = None,
    headers: Any = None,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    owners: OwnerRegistry | None = None,
) -> Normalized:
    """One RAW message -> EVENTS/RETRIEVALS messages or a dead letter. Never raises.

    ``owners``: the content owner registry (``schemas.owners``) for events without a URL owner.
    """
    raw = value if value is not None else b""
    emitter, source = header_values(headers)
    result = ingest(raw, emitter=emitter, source=source)
    if not result.accepted:
        reason = result.reason or "rejected"
        letter = dlq.make(
            raw,
            reason=reason,
            stage=STAGE,
            errors=result.errors,
            key=key,
            topic=topic,
            partition=partition,
            offset=offset,
            emitter=emitter,
        )
        return Normalized(dead_letter=dlq.encode(letter), reason=reason)
    wire = result.wire
    resolved = 0
    if owners is not None and owners.prefixes:
        wire, resolved = resolve_wire_owners(wire, owners)
    # encode_event(model) from the wire dicts ingest built (the same bytes, schemas.normalize):
    # the hot path never builds the models
    encoded = [dumps(w) for w in wire]
    out = Normalized(event_count=len(wire), owners_resolved=resolved)
    hw = result.session_wire  # the header as its wire dict: encode_header(result.session) bytes
    session_key: str | None = (hw.get("session_id") or hw.get("ctx_token")) if hw is not None else None
    if session_key:
        skey = session_key.encode()
        head = dumps(hw) if hw is not None else None
        out.events.extend((skey, env) for env in _envelopes(session_key, head, encoded))
    else:
        for w, enc in zip(wire, encoded, strict=True):
            out.events.append((wire_key(w).encode(), SESSIONLESS_PREFIX + b',"h":null,"e":[' + enc + b"]}"))
    retrieved = EventType.RETRIEVED
    for w in wire:
        if w["event_type"] is retrieved:  # what correlate keeps of it (schemas.records)
            key = (w.get("content_telemetry_id") or w["event_id"]).encode()
            out.retrievals.append((key, encode_observation(w)))
    return out


def decode_envelope(value: bytes) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """An EVENTS message -> (session header dict or None, canonical event dicts)."""
    return decode_events_envelope(value)


@dataclass(slots=True)
class NormalizeStats:
    messages: int = 0
    accepted: int = 0
    invalid: int = 0
    events: int = 0
    retrievals: int = 0
    owners_resolved: int = 0  # events attributed by content_id prefix (CT 0.1 section 7.3)
    cpu_s: float = 0.0  # the event loop thread's CPU seconds in this stage's batches
    #: the process's CPU seconds (every thread, ``time.process_time``) when the first batch
    #: began: what start-up cost (imports, joining groups, opening stores), for benchmarks
    process_cpu_at_first_s: float | None = None


def register(
    app: PipelineApp,
    *,
    bootstrap: str,
    group: str,
    raw_topic: str,
    events_topic: str,
    retrievals_topic: str,
    dlq_topic: str,
    breaker: Breaker,
    events_partitions: int,
    retrievals_partitions: int,
    batch: int = 2000,
    stats: NormalizeStats | None = None,
    owners: OwnerRegistry | None = None,
    health: Health | None = None,
) -> BatchSource:
    """Add the normalize stage (RAW -> EVENTS + RETRIEVALS | DLQ) to ``app``.

    Stateless, so it reads RAW through a ``processors.source.BatchSource`` (consumer group
    ``group``: librdkafka batches, no Faust event per message) started and stopped with the app.
    ``owners``: content owner registry for content_id-only events (None = URL owners only).
    """
    st = stats if stats is not None else NormalizeStats()
    part_events = PART_EVENTS
    health = health if health is not None else Health()

    async def handle(msgs: list[Any]) -> None:
        if st.process_cpu_at_first_s is None:
            st.process_cpu_at_first_s = time.process_time()
        cpu = time.thread_time()
        try:
            await _handle(msgs)
        finally:
            st.cpu_s += time.thread_time() - cpu

    async def _handle(msgs: list[Any]) -> None:
        accepted: list[Normalized] = []
        letters: list[tuple[bytes | None, bytes]] = []
        events = 0  # in ``accepted``

        async def send() -> None:
            # Enqueued on the app's Output; the source commits RAW offsets only after its flush.
            sends: list[tuple[str, bytes | None, bytes, int | None]] = [
                (dlq_topic, k, v, None) for k, v in letters
            ]
            sends.extend(
                (topic, None, value, partition)
                for topic, partition, value in route_outputs(
                    accepted, events_topic, events_partitions, retrievals_topic, retrievals_partitions
                )
            )
            await send_reliably(app, STAGE, sends, health)

        for msg in msgs:
            key = msg.key()
            out = normalize_message(
                msg.value(),
                key=key,
                headers=msg.headers(),
                topic=msg.topic(),
                partition=msg.partition(),
                offset=msg.offset(),
                owners=owners,
            )
            st.messages += 1
            if out.dead_letter is not None:
                st.invalid += 1
                try:
                    breaker.record(False, out.reason)
                except BreakerTripped as exc:
                    # Park without returning: this batch's offsets are never committed; the
                    # host sees ``breaker.tripped`` and exits without a graceful stop.
                    app.log.error("%s", exc)
                    source.parked = True
                    await asyncio.Event().wait()
                letters.append((key, out.dead_letter))
                continue
            breaker.record(True)
            st.accepted += 1
            st.events += out.event_count
            st.retrievals += len(out.retrievals)
            st.owners_resolved += out.owners_resolved
            accepted.append(out)
            events += out.event_count
            if events >= part_events:  # bounded memory per part (processors.app.PART_BYTES)
                await send()
                accepted, letters, events = [], [], 0
        if accepted or letters:
            await send()

    source = BatchSource(
        bootstrap=bootstrap,
        group=group,
        topic=raw_topic,
        output=app.output,
        handler=handle,
        batch=batch,
        client_id=app.conf.id,
        log=app.log,
    )
    app.add_source(source)
    return source


def route_outputs(
    results: Iterable[Normalized],
    events_topic: str,
    events_partitions: int,
    retrievals_topic: str,
    retrievals_partitions: int,
) -> list[tuple[str, int, bytes]]:
    """A batch's EVENTS/RETRIEVALS records -> (topic, partition, packed value) messages."""
    sessions: dict[int, list[bytes]] = {}
    others: dict[int, list[bytes]] = {}
    retrievals: dict[int, list[bytes]] = {}
    for out in results:
        for k, v in out.events:
            target = others if v.startswith(SESSIONLESS_PREFIX) else sessions
            target.setdefault(partition_for(k, events_partitions), []).append(v)
        for k, v in out.retrievals:
            retrievals.setdefault(partition_for(k, retrievals_partitions), []).append(v)
    messages: list[tuple[str, int, bytes]] = []
    for topic, parts in ((events_topic, sessions), (events_topic, others), (retrievals_topic, retrievals)):
        for partition in sorted(parts):
            messages.extend((topic, partition, value) for value in pack(parts[partition]))
    return messages
