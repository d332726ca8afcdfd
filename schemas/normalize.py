"""Ingestion: raw emitter bytes -> canonical events + session header, or a rejection.

Input: one message as received (CT 0.1 session / standalone event / event batch, OA 0.4
session or HTTP body), the emitter's identity, and optionally a ``source`` hint (the HTTP route
or a DocKind value). Output: an ``IngestResult``. ``ingest`` is pure, never raises (any input
yields either accepted events or a rejection with located reasons), and is the hot path of the
normalise stage and the HTTP gateway.

Contract:
- A document is accepted or rejected whole: one bad event rejects the document (never a silently
  dropped event); the rejection goes to the DLQ with its reasons.
- Privacy-violating turn fields are stripped, not rejected (CT 0.1 section 5.7.5), and each
  affected event carries a note saying what was removed and why.
- ``event_id`` is the emitter's ``id`` when sent; otherwise a UUIDv5 over emitter, session,
  position and the event's own content, so a retried delivery gets the same id.
- Manifests validate but are not telemetry: accepted with no events and no session header.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from schemas.canonical import (
    CONTENT_TYPES,
    WIRE_TYPES,
    CanonicalEvent,
    DocKind,
    SessionHeader,
    SourceFormat,
)
from schemas.urls import canonical_url, owner_domain
from schemas.validate import MAX_DOCUMENT_BYTES, Verdict, Violation, check_bytes, parse_datetime

#: Namespace of ctpipe's derived event ids (UUIDv5, RFC 9562 section 5.5).
EVENT_ID_NAMESPACE = UUID("6f1d5c3e-8a0b-5c1e-9d2f-3c7a4b8e9f10")
_NS_BYTES = EVENT_ID_NAMESPACE.bytes

#: Event fields lifted into canonical columns; everything else goes to ``extra_json``.
KNOWN_EVENT_FIELDS = frozenset(
    {
        "id",
        "type",
        "timestamp",
        "turn_id",
        "source_role",
        "content_telemetry_id",
        "content_url",
        "content_id",
        "license_ref",
        "product_id",
        "turn",
        "data",
    }
)
#: Funnel-relevant ``data`` fields (CT 0.1 section 6) and the Python type each must have to be
#: lifted; a field of another type stays in ``data_json`` (kept, never dropped).
FUNNEL_FIELDS: tuple[tuple[str, type], ...] = (
    ("scope", str),
    ("cached", bool),
    ("tokens_ingested", int),
    ("citation_type", str),
    ("position", str),
    ("display_type", str),
    ("engagement_type", str),
    ("bot_category", str),
    ("bot_name", str),
    ("media_type", str),
    ("provenance", str),
)
_FUNNEL_NAMES = frozenset(n for n, _ in FUNNEL_FIELDS)
_INT64_MAX = 2**63 - 1


@dataclass(slots=True, init=False)
class IngestResult:
    """What ingesting one message produced."""

    accepted: bool
    kind: DocKind
    version: str | None
    #: per event, its canonical JSON object without default fields, in the model's field order:
    #: ``schemas.codec.dumps(wire[i]) == schemas.records.encode_event(events[i])``; the values
    #: are the model's (datetimes, enums), so the models are built from it when first asked for
    wire: list[dict[str, Any]] = field(default_factory=list)
    #: the session header's JSON object without default fields, in the model's field order
    #: (``schemas.codec.dumps(session_wire) == schemas.records.encode_header(session)``), or None
    #: when the document has no session key; ``session`` builds the model from it when asked for
    session_wire: dict[str, Any] | None = None
    errors: list[Violation] = field(default_factory=list)  # why it was rejected
    stripped: list[Violation] = field(default_factory=list)  # what was removed on acceptance
    # The decoded document as accepted, privacy-violating turn fields already removed: what a
    # gateway publishes when ``stripped`` is not empty, so stripped text never reaches Kafka.
    document: Any = None

    _events: list[CanonicalEvent] | None = field(default=None, repr=False)
    _session: SessionHeader | None = field(default=None, repr=False)

    # init=False + this __init__: the native build compiles it (a generated one stays Python)
    def __init__(
        self,
        accepted: bool,
        kind: DocKind,
        version: str | None,
        wire: list[dict[str, Any]] | None = None,
        session_wire: dict[str, Any] | None = None,
        errors: list[Violation] | None = None,
        stripped: list[Violation] | None = None,
        document: Any = None,
    ) -> None:
        self.accepted, self.kind, self.version = accepted, kind, version
        self.wire = wire if wire is not None else []
        self.session_wire = session_wire
        self.errors = errors if errors is not None else []
        self.stripped = stripped if stripped is not None else []
        self.document = document
        self._events = None
        self._session = None

    @property
    def events(self) -> list[CanonicalEvent]:
        """The events as models (built on first use: the worker's hot path needs only ``wire``)."""
        if self._events is None:
            self._events = [_model(w) for w in self.wire]
        return self._events

    @property
    def session(self) -> SessionHeader | None:
        """The session header as a model (validated from ``session_wire`` on first use: the
        worker's hot path needs only the wire dict), or None."""
        if self._session is None and self.session_wire is not None:
            self._session = SessionHeader.model_validate(self.session_wire)
        return self._session

    @property
    def reason(self) -> str:
        """One-line summary of the rejection (for the DLQ envelope and logs)."""
        if not self.errors:
            return ""
        first = self.errors[0]
        more = f" (+{len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        return f"{first.pointer or '/'}: {first.message} [{first.rule}]{more}"


def derived_event_id(emitter: str, session_key: str, seq: int, event: Any) -> str:
    """UUIDv5 (same bytes as ``uuid.uuid5``) over emitter, session, position and content."""
    content = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
    name = b"%s\x1f%s\x1f%d\x1f%s" % (emitter.encode(), session_key.encode(), seq, content)
    digest = bytearray(hashlib.sha1(_NS_BYTES + name, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _str(v: Any) -> str | None:
    return v if type(v) is str else None


def _ts(v: Any) -> datetime | None:
    return parse_datetime(v) if type(v) is str else None


def _lower_uuid(v: Any) -> str | None:
    return v.lower() if type(v) is str else None


@dataclass(slots=True, init=False)
class _Ctx:
    """Envelope/session facts shared by every event of one document."""

    emitter: str
    fmt: SourceFormat
    version: str
    kind: DocKind
    session_id: str | None
    ctx_token: str | None
    agent_id: str | None
    content_scope: str | None
    notes: dict[int, list[str]]
    head: dict[str, Any] = field(default_factory=dict)  # the non-None of the four above (model order)
    tail: dict[str, Any] = field(default_factory=dict)  # source_format .. emitter (model order)

    # init=False + this __init__: the native build compiles it (a generated one stays Python)
    def __init__(
        self,
        emitter: str,
        fmt: SourceFormat,
        version: str,
        kind: DocKind,
        session_id: str | None,
        ctx_token: str | None,
        agent_id: str | None,
        content_scope: str | None,
        notes: dict[int, list[str]],
    ) -> None:
        self.emitter, self.fmt, self.version, self.kind = emitter, fmt, version, kind
        self.session_id, self.ctx_token, self.agent_id = session_id, ctx_token, agent_id
        self.content_scope, self.notes = content_scope, notes
        head: dict[str, Any] = {}
        for name, value in (
            ("session_id", session_id),
            ("ctx_token", ctx_token),
            ("agent_id", agent_id),
            ("content_scope", content_scope),
        ):
            if value is not None:
                head[name] = value
        self.head = head
        self.tail = {"source_format": fmt, "source_version": version, "source_kind": kind, "emitter": emitter}


_EVENT_FIELDS = frozenset(CanonicalEvent.model_fields)


def _construct(cls: type[CanonicalEvent], values: dict[str, Any]) -> CanonicalEvent:
    """``model_construct`` without its per-field default pass: every field is given, already
    validated by schemas.validate (tests prove the result equals a validated model)."""
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", set(_EVENT_FIELDS))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


#: every CanonicalEvent field at its default, in the model's order (required ones: a placeholder
#: that every event's wire dict overwrites)
_EVENT_TEMPLATE: dict[str, Any] = {
    name: (None if info.is_required() else info.get_default(call_default_factory=True))
    for name, info in CanonicalEvent.model_fields.items()
}
_FUNNEL_ORDER = tuple(n for n, _ in FUNNEL_FIELDS)
#: string fields taken as sent, in the model's order (lower: a UUID, lower-cased)
_STRING_FIELDS = (
    ("content_id", False),
    ("product_id", True),
    ("license_ref", False),
    ("turn_id", False),
)  # the model's order of the lifted fields


def _model(w: dict[str, Any]) -> CanonicalEvent:
    """The CanonicalEvent of a wire dict (``_event``): the template updated by it."""
    return _construct(CanonicalEvent, {**_EVENT_TEMPLATE, **w})


def _event(ev: dict[str, Any], seq: int, ctx: _Ctx) -> dict[str, Any]:
    """One wire event -> its canonical wire dict (``_model`` builds its CanonicalEvent).

    The wire dict holds exactly the fields whose value differs from the model's default, in the
    model's field order: ``schemas.codec.dumps`` of it is ``records.encode_event`` of the model
    (= ``model_dump_json(exclude_defaults=True)``, unit-tested), built here in one pass instead of
    filtering a full model afterwards.
    """
    wire_type = ev["type"]
    etype = WIRE_TYPES[wire_type]
    emitter_id = ev.get("id")
    if type(emitter_id) is str:
        w: dict[str, Any] = {"event_id": emitter_id.lower(), "emitter_event_id": emitter_id, "seq": seq}
    else:
        w = {
            "event_id": derived_event_id(ctx.emitter, ctx.session_id or ctx.ctx_token or "", seq, ev),
            "seq": seq,
        }
    if ctx.head:
        w.update(ctx.head)  # session_id, ctx_token, agent_id, content_scope (those not None)
    w["event_type"] = etype
    w["timestamp"] = parse_datetime(ev["timestamp"])
    v = ev.get("source_role")
    if type(v) is str:
        w["source_role"] = v
    v = ev.get("content_telemetry_id")
    if type(v) is str:
        w["content_telemetry_id"] = v.lower()
    url = ev.get("content_url")
    if type(url) is str and url:
        w["content_url"] = url
        v = canonical_url(url)
        if v is not None:
            w["canonical_url"] = v
        v = owner_domain(url)
        if v is not None:
            w["owner_domain"] = v
    elif type(url) is str:  # "" is kept as sent (not None), derives nothing
        w["content_url"] = url
    for name, lower in _STRING_FIELDS:
        v = ev.get(name)
        if type(v) is str:
            w[name] = v.lower() if lower else v
    turn = ev.get("turn")
    if type(turn) is dict:
        v = turn.get("privacy_level")
        if type(v) is str:
            w["privacy_level"] = v
    data = ev.get("data")
    lifted: dict[str, Any] = {}
    rest: dict[str, Any] | None = None
    if type(data) is dict and data:
        rest = {}
        value: Any
        for key, value in data.items():
            if key in _FUNNEL_NAMES:
                want = _LIFT_TYPES[key]
                if type(value) is want or (want is int and type(value) is float and value.is_integer()):
                    if want is int:
                        value = int(value)  # type: ignore[call-overload]
                        if not 0 <= value <= _INT64_MAX:
                            rest[key] = value
                            continue
                    lifted[key] = value
                    continue
            rest[key] = value
    if etype in CONTENT_TYPES and "media_type" not in lifted:
        lifted["media_type"] = "text"  # CT 0.1 sections 6.1, 6.5, 6.6: defaults to text when absent
    if lifted:
        for name in _FUNNEL_ORDER:
            if name in lifted:
                w[name] = lifted[name]
    if type(turn) is dict:
        w["turn_json"] = _json(turn)
    if rest:
        w["data_json"] = _json(rest)
    if (
        not ev.keys() <= KNOWN_EVENT_FIELDS
    ):  # unknown event-level fields: tolerated and kept (CT 0.1 section 5.7.4)
        w["extra_json"] = _json({k: v for k, v in ev.items() if k not in KNOWN_EVENT_FIELDS})
    w.update(ctx.tail)  # source_format, source_version, source_kind, emitter
    note = ctx.notes.get(seq) if ctx.notes else None
    if note:
        w["notes"] = tuple(note)
    return w


_LIFT_TYPES: dict[str, type] = dict(FUNNEL_FIELDS)

_SESSION_FIELDS = frozenset(
    {
        "document_type",
        "schema_version",
        "session_id",
        "ctx_token",
        "agent_id",
        "content_scope",
        "manifest_ref",
        "conformance_level",
        "started_at",
        "ended_at",
        "events",
        "event",
        "initiator_type",
        "initiator",
        "prior_session_ids",
        "external_session_id",
        "user_context",
        "outcome",
    }
)


def _header(doc: dict[str, Any], ctx: _Ctx, complete: bool, event_count: int) -> dict[str, Any]:
    """The document's ``SessionHeader`` as its wire dict: the fields whose value differs from the
    model's default, in the model's field order (``IngestResult.session_wire``). Every value is
    of its field's type by construction (``_str``, ``_ts``, tuples of str, ``_json``); tests hold
    it strictly valid (``model_validate(strict=True)``) and ``dumps`` of it equal to the model's
    ``model_dump_json(exclude_defaults=True)``."""
    initiator = doc.get("initiator")
    initiator = initiator if type(initiator) is dict else {}
    user = doc.get("user_context")
    user = user if type(user) is dict else {}
    outcome = doc.get("outcome")
    outcome = outcome if type(outcome) is dict else {}
    value = outcome.get("value_amount")
    # OA 0.4 section 3.7: integers in the currency's minor unit; the schema defaults are 0/USD.
    value_minor: int | None = None
    if value is not None:
        if type(value) is not int and not (type(value) is float and value.is_integer()):
            raise ValueError(f"outcome.value_amount is not an integer: {value!r}")
        value_minor = int(value)
    elif outcome:
        value_minor = 0
    attributes = user.get("attributes")
    metadata = outcome.get("metadata")
    extra = {k: v for k, v in doc.items() if k not in _SESSION_FIELDS}
    fields: tuple[tuple[str, Any], ...] = (
        ("session_id", ctx.session_id),
        ("ctx_token", ctx.ctx_token),
        ("complete", complete),  # required: always present
        ("agent_id", ctx.agent_id),
        ("content_scope", ctx.content_scope),
        ("manifest_ref", _str(doc.get("manifest_ref"))),
        ("conformance_level", _str(doc.get("conformance_level"))),
        ("started_at", _ts(doc.get("started_at"))),
        ("ended_at", _ts(doc.get("ended_at"))),
        ("initiator_type", _str(doc.get("initiator_type"))),
        ("initiator_agent_id", _str(initiator.get("agent_id"))),
        ("initiator_operator_id", _str(initiator.get("operator_id"))),
        ("initiator_manifest_ref", _str(initiator.get("manifest_ref"))),
        ("prior_session_ids", _strs(doc.get("prior_session_ids"), lower=True)),
        ("external_session_id", _str(doc.get("external_session_id"))),
        ("user_external_id", _str(user.get("external_id"))),
        ("user_segments", _strs(user.get("segments"))),
        ("user_attributes_json", _json(attributes) if type(attributes) is dict and attributes else None),
        ("outcome_type", _str(outcome.get("type"))),
        ("outcome_value_minor", value_minor),
        ("outcome_currency", _str(outcome.get("currency")) or ("USD" if outcome else None)),
        ("outcome_products", _strs(outcome.get("products"), lower=True)),
        ("outcome_metadata_json", _json(metadata) if type(metadata) is dict and metadata else None),
        ("event_count", event_count or None),
        ("extra_json", _json(extra) if extra else None),
    )
    w: dict[str, Any] = {}
    for name, v in fields:  # None stands for the field's default (None, () or "{}"), left out
        if v is not None:
            w[name] = v
    w.update(ctx.tail)  # source_format, source_version, source_kind, emitter
    return w


def _strs(values: Any, lower: bool = False) -> tuple[str, ...] | None:
    """The strings of a JSON array (others skipped; ``lower``: lower-cased, for UUIDs), or None
    when there are none."""
    if type(values) is not list:
        return None
    out = tuple((s.lower() if lower else s) for s in values if type(s) is str)
    return out or None


def _strip(verdict: Verdict) -> dict[int, list[str]]:
    """Remove privacy-violating turn fields (CT 0.1 section 5.7.5); notes keyed by event seq."""
    notes: dict[int, list[str]] = {}
    for turn, name, violation in verdict.strip:
        turn.pop(name, None)
        parts = violation.pointer.split("/")
        seq = int(parts[2]) if len(parts) > 2 and parts[1] == "events" else 0
        notes.setdefault(seq, []).append(
            f"stripped turn.{name}: {violation.message.split(' (')[0]} [{violation.rule}]"
        )
    return notes


def _normalise(verdict: Verdict, emitter: str) -> IngestResult:
    doc: dict[str, Any] = verdict.doc
    kind = verdict.kind
    result = IngestResult(True, kind, verdict.version, stripped=verdict.stripped)
    if kind is DocKind.MANIFEST:
        return result
    notes = _strip(verdict) if verdict.strip else {}
    result.document = doc
    fmt = verdict.format or SourceFormat.CONTENT_TELEMETRY
    version = verdict.version or ("0.4" if fmt is SourceFormat.OPENATTRIBUTION else "0.1")
    ctx = _Ctx(
        emitter=emitter,
        fmt=fmt,
        version=version,
        kind=kind,
        session_id=_lower_uuid(doc.get("session_id")),
        ctx_token=_str(doc.get("ctx_token")),
        agent_id=_str(doc.get("agent_id")),
        content_scope=_str(doc.get("content_scope")),
        notes=notes,
    )
    raw_events: list[Any] = [doc["event"]] if kind is DocKind.EVENT else doc.get("events") or []
    result.wire = [_event(ev, seq, ctx) for seq, ev in enumerate(raw_events)]
    if ctx.session_id or ctx.ctx_token:
        complete = kind in (DocKind.SESSION, DocKind.OA_SESSION)
        result.session_wire = _header(doc, ctx, complete, len(raw_events))
    elif kind is DocKind.OA_SESSION_START:
        # OA 0.4 section 4.1: the server assigns the session id; a gateway must add it first.
        result.accepted = False
        result.errors = [
            Violation(
                "/session_id",
                "OA-0.4 §4.1",
                "a /session/start body has no session_id: the gateway must assign one before ingestion",
                layer="app",
            )
        ]
    return result


def ingest(
    raw: bytes | bytearray | memoryview | str,
    *,
    emitter: str,
    source: str | None = None,
    max_bytes: int = MAX_DOCUMENT_BYTES,
) -> IngestResult:
    """Decode, detect, validate and normalise one message. Never raises."""
    try:
        verdict = check_bytes(raw, source, max_bytes)
        if not verdict.accepted:
            return IngestResult(False, verdict.kind, verdict.version, errors=verdict.errors)
        return _normalise(verdict, emitter)
    except orjson.JSONEncodeError as exc:
        # orjson decodes 1024 levels but re-encodes only 254: junk nested in ``data`` lands here.
        return IngestResult(
            False,
            DocKind.UNKNOWN,
            None,
            errors=[Violation("", "ctpipe:depth", f"document nests too deeply to re-encode as JSON: {exc}")],
        )
    except Exception as exc:  # last line of defence: a bug must reject the message, not crash the stage
        return IngestResult(
            False,
            DocKind.UNKNOWN,
            None,
            errors=[
                Violation(
                    "", "ctpipe:internal", f"internal error while ingesting: {type(exc).__name__}: {exc}"
                )
            ],
        )
