"""Spec-exact validation: the specs' JSON Schemas plus their application-layer rules.

Input: raw bytes (``check_bytes``) or a decoded document (``check``). Output: a ``Verdict`` with
every ``Violation`` found, each located by a JSON pointer and naming the rule: ``jsonschema:<kw>``
for the shipped schemas (``schemas/jsonschema``), or the spec section for the rules a schema
cannot express (CT 0.1 sections 5.7.4, 5.7.5, 5.5, 8.6, 8.7).

The schemas are implemented by hand rather than interpreted: it is the hot path of ingestion
(the ``jsonschema`` library is ~50x slower) and it reports all errors with useful pointers.
``tests/unit/schemas/test_parity.py`` proves this agrees with ``jsonschema`` on the shipped
files. Formats are asserted (``uuid``, ``date-time`` per RFC 3339, ``uri`` per RFC 3986), since
the issue demands invalid UUIDs and timestamps be rejected.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import orjson

from schemas.canonical import DocKind, SourceFormat
from schemas.detect import CT_VERSION, OA_VERSION, detect
from schemas.urls import host_of

#: Largest document accepted (bytes). Kafka's default message limit is 1 MiB; a whole session
#: rarely reaches 100 KiB. Larger inputs are rejected with rule ``ctpipe:size`` before decoding.
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024

#: Versions an OA-shaped document may declare: the spec's "0.4", and "0.1", which the OA SDKs
#: still write on 0.4-shaped sessions (their schema module's default was never bumped).
OA_ACCEPTED_VERSIONS = frozenset({OA_VERSION, "0.1"})

_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class Violation:
    """One reason a document is not valid."""

    pointer: str  # RFC 6901 JSON pointer into the document ("" = the whole document)
    rule: str  # "jsonschema:<keyword>", or the spec section, e.g. "CT-0.1 §5.7.5"
    message: str
    layer: str = "schema"  # "decode" | "schema" | "app"
    strippable: bool = False  # CT 0.1 §5.7.5: consumers SHOULD strip, not reject

    def as_dict(self) -> dict[str, str]:
        return {"pointer": self.pointer, "rule": self.rule, "message": self.message}


@dataclass(slots=True)
class Verdict:
    """The outcome of validating one document."""

    kind: DocKind
    format: SourceFormat | None
    version: str | None
    doc: Any = None
    errors: list[Violation] = field(default_factory=list)
    # (turn object, field name, violation) for each privacy-violating turn field (CT 0.1 §5.5)
    strip: list[tuple[dict[str, Any], str, Violation]] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        """Valid as a document: schema and every application-layer rule hold."""
        return not self.errors

    @property
    def accepted(self) -> bool:
        """Ingestible: nothing is wrong but fields that ingestion strips (CT 0.1 §5.7.5)."""
        return all(e.strippable for e in self.errors)

    @property
    def stripped(self) -> list[Violation]:
        return [v for _, _, v in self.strip]

    @property
    def schema_valid(self) -> bool:
        """Whether the JSON Schema alone accepts it (for parity with the jsonschema library)."""
        return not any(e.layer != "app" for e in self.errors)


Errs = list[Violation]
Check = Callable[[Any, str, Errs], None]


# --- primitive checks --------------------------------------------------------------------------


def json_type(v: Any) -> str:
    """The JSON type name of a decoded value."""
    if v is None:
        return "null"
    t = type(v)
    if t is bool:
        return "boolean"
    if t is int:
        return "integer"
    if t is float:
        return "number"
    if t is str:
        return "string"
    if t is list:
        return "array"
    if t is dict:
        return "object"
    return t.__name__


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(v: Any) -> bool:
    t = type(v)
    return t is int or (t is float and v.is_integer())


_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# RFC 3339 section 5.6 date-time (the ABNF is case-insensitive: "t" and "z" are allowed).
_DT_RE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")
# RFC 3986 URI: scheme ":" then only unreserved / reserved characters or percent-escapes.
_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")


def is_uuid(s: str) -> bool:
    return _UUID_RE.fullmatch(s) is not None


@lru_cache(maxsize=8192)
def parse_datetime(s: str) -> datetime | None:
    """An RFC 3339 date-time as an aware UTC datetime, or None if ``s`` is not one."""
    if _DT_RE.fullmatch(s) is None:
        return None
    text = s.upper()
    if text[17:19] == "60":  # leap second: RFC 3339 allows it, datetime cannot hold it
        text = text[:17] + "59" + text[19:]
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    offset = text[-6:]
    if offset[0] in "+-" and (int(offset[1:3]) > 23 or int(offset[4:6]) > 59):
        return None
    return dt if dt.utcoffset() == _ZERO else dt.astimezone(UTC)


_ZERO = datetime(2000, 1, 1, tzinfo=UTC).utcoffset()


def is_uri(s: str) -> bool:
    return _URI_RE.fullmatch(s) is not None


def _type_err(v: Any, ptr: str, expected: str, errs: Errs) -> None:
    errs.append(Violation(ptr, "jsonschema:type", f"expected {expected}, got {json_type(v)}"))


def c_str(nullable: bool = False) -> Check:
    expected = "string or null" if nullable else "string"

    def check(v: Any, ptr: str, errs: Errs) -> None:
        if type(v) is not str and not (nullable and v is None):
            _type_err(v, ptr, expected, errs)

    return check


def c_bool(nullable: bool = False) -> Check:
    expected = "boolean or null" if nullable else "boolean"

    def check(v: Any, ptr: str, errs: Errs) -> None:
        if type(v) is not bool and not (nullable and v is None):
            _type_err(v, ptr, expected, errs)

    return check


def c_int(minimum: int | None = None, maximum: int | None = None, nullable: bool = False) -> Check:
    expected = "integer or null" if nullable else "integer"

    def check(v: Any, ptr: str, errs: Errs) -> None:
        if nullable and v is None:
            return
        if not _is_int(v):
            _type_err(v, ptr, expected, errs)
            return
        if minimum is not None and v < minimum:
            errs.append(
                Violation(ptr, "jsonschema:minimum", f"{_short(v)} is less than the minimum {minimum}")
            )
        if maximum is not None and v > maximum:
            errs.append(
                Violation(ptr, "jsonschema:maximum", f"{_short(v)} is more than the maximum {maximum}")
            )

    return check


def c_enum(values: Iterable[str], nullable: bool = False, typed: bool = True) -> Check:
    """A string enum. ``typed=False`` for schemas whose enum has no ``type`` (none here)."""
    allowed = frozenset(values)
    shown = ", ".join(sorted(allowed))

    def check(v: Any, ptr: str, errs: Errs) -> None:
        if nullable and v is None:
            return
        if typed and type(v) is not str:
            _type_err(v, ptr, "string or null" if nullable else "string", errs)
        elif v not in allowed:
            errs.append(Violation(ptr, "jsonschema:enum", f"{_short(v)} is not one of: {shown}"))

    return check


def c_const(value: str) -> Check:
    def check(v: Any, ptr: str, errs: Errs) -> None:
        if type(v) is not str:
            _type_err(v, ptr, "string", errs)
        elif v != value:
            errs.append(Violation(ptr, "jsonschema:const", f"{_short(v)} is not {value!r}"))

    return check


def c_format(fmt: str, nullable: bool = False) -> Check:
    tests: dict[str, Callable[[str], object]] = {"uuid": is_uuid, "date-time": parse_datetime, "uri": is_uri}
    test = tests[fmt]
    expected = "string or null" if nullable else "string"
    hint = {
        "uuid": "a UUID (RFC 9562, 8-4-4-4-12 hex digits)",
        "date-time": "an RFC 3339 date-time, e.g. 2026-01-15T10:30:00Z",
        "uri": "an absolute URI (RFC 3986; percent-encode spaces and non-ASCII)",
    }[fmt]

    def check(v: Any, ptr: str, errs: Errs) -> None:
        if type(v) is str:
            ok = test(v)
            if ok is None or ok is False:
                errs.append(Violation(ptr, "jsonschema:format", f"{_short(v)} is not {hint}"))
        elif not (nullable and v is None):
            _type_err(v, ptr, expected, errs)

    return check


def c_pattern(pattern: str, nullable: bool = False) -> Check:
    # re.search with the schema's own pattern: exactly what JSON Schema's "pattern" means.
    regex = re.compile(pattern)

    def check(v: Any, ptr: str, errs: Errs) -> None:
        if type(v) is str:
            if regex.search(v) is None:
                errs.append(Violation(ptr, "jsonschema:pattern", f"{_short(v)} does not match {pattern}"))
        elif not (nullable and v is None):
            _type_err(v, ptr, "string", errs)

    return check


def c_array(item: Check | None = None, min_items: int = 0, unique: bool = False) -> Check:
    def check(v: Any, ptr: str, errs: Errs) -> None:
        if type(v) is not list:
            _type_err(v, ptr, "array", errs)
            return
        if len(v) < min_items:
            errs.append(Violation(ptr, "jsonschema:minItems", f"needs at least {min_items} item(s)"))
        if item is not None:
            for i, x in enumerate(v):
                item(x, f"{ptr}/{i}", errs)
        if unique:
            seen: list[Any] = []
            for x in v:
                key = orjson.dumps(x, option=orjson.OPT_SORT_KEYS)
                if key in seen:
                    errs.append(
                        Violation(ptr, "jsonschema:uniqueItems", f"{_short(x)} appears more than once")
                    )
                    break
                seen.append(key)

    return check


Props = tuple[tuple[str, Check], ...]


def c_object(props: Props, required: tuple[str, ...] = (), nullable: bool = False) -> Check:
    def check(v: Any, ptr: str, errs: Errs) -> None:
        if type(v) is not dict:
            if not (nullable and v is None):
                _type_err(v, ptr, "object or null" if nullable else "object", errs)
            return
        for key in required:
            if key not in v:
                errs.append(
                    Violation(f"{ptr}/{key}", "jsonschema:required", f"required field {key!r} is missing")
                )
        for key, sub in props:
            x = v.get(key, _MISSING)
            if x is not _MISSING:
                sub(x, f"{ptr}/{key}", errs)

    return check


# --- Content Telemetry 0.1 (telemetry-session.json, telemetry-event*.json, manifest.json) -----

CT_EVENT_TYPES = (
    "content_retrieved",
    "content_grounded",
    "content_cited",
    "content_displayed",
    "content_engaged",
    "turn_started",
    "turn_completed",
)
CT_CONTENT_TYPES = frozenset(t for t in CT_EVENT_TYPES if t.startswith("content_"))
PRIVACY_LEVELS = ("full", "summary", "intent", "minimal")
SOURCE_ROLES = ("origin", "edge", "index", "agent")
CONFORMANCE_LEVELS = ("retrieval", "grounding", "citation")
_SHA256 = "^sha256:[a-f0-9]{64}$"

_CT_TURN = c_object(
    (
        ("privacy_level", c_enum(PRIVACY_LEVELS)),
        ("query_text", c_str(True)),
        ("response_text", c_str(True)),
        ("query_intent", c_str(True)),  # IntentCategory is an open string (section 5.6)
        ("response_type", c_str(True)),
        ("response_mode", c_str(True)),  # ResponseMode is an open string (section 5.4.1)
        ("topics", c_array(c_str())),
        ("content_urls_retrieved", c_array(c_format("uri"))),
        ("content_urls_cited", c_array(c_format("uri"))),
        ("query_tokens", c_int(0, nullable=True)),
        ("response_tokens", c_int(0, nullable=True)),
        ("model_id", c_str(True)),
        ("ad_rendered", c_bool(True)),
    ),
    required=("privacy_level",),
    nullable=True,
)

# Section 6 data profiles, applied through the schema's allOf/if-then on ``type``.
_CT_DATA: dict[str, Check] = {
    "content_grounded": c_object(
        (
            ("scope", c_enum(("session", "turn"))),
            ("cached", c_bool()),
            ("tokens_ingested", c_int(0)),
            ("content_version", c_str()),
            ("content_last_modified", c_format("date-time")),
            ("content_hash", c_pattern(_SHA256)),
            ("media_type", c_str()),
        )
    ),
    "content_cited": c_object(
        (
            (
                "citation_type",
                c_enum(("direct_quote", "paraphrase", "reference", "contradiction", "unclassified")),
            ),
            ("media_type", c_str()),
            ("excerpt_tokens", c_int(0)),
            ("excerpt_chars", c_int(0)),
            ("excerpt_hash", c_pattern(_SHA256)),
            ("position", c_enum(("primary", "supporting", "mentioned", "unclassified"))),
            ("content_hash", c_pattern(_SHA256)),
            ("url_verified", c_bool()),
        )
    ),
    "content_displayed": c_object((("display_type", c_str()), ("media_type", c_str()))),
    "content_engaged": c_object((("engagement_type", c_str()),)),
    "content_retrieved": c_object(
        (
            ("media_type", c_str()),
            ("user_agent", c_str()),
            ("bot_category", c_str()),
            ("bot_name", c_str()),
            ("verified", c_bool()),
            ("cache_status", c_str()),
            ("response_status", c_int(100, 599)),
            ("response_bytes", c_int(0)),
            ("ja4", c_str()),
            ("asn", c_int()),
            ("asn_org", c_str()),
            ("country", c_pattern("^[A-Z]{2}$")),
            ("ip_hash", c_pattern(_SHA256)),
        )
    ),
}

_CT_EVENT_BASE = c_object(
    (
        ("id", c_format("uuid")),
        ("type", c_enum(CT_EVENT_TYPES)),
        ("timestamp", c_format("date-time")),
        ("turn_id", c_str(True)),
        ("source_role", c_enum(SOURCE_ROLES)),
        ("content_telemetry_id", c_format("uuid", True)),
        ("content_url", c_format("uri", True)),
        ("content_id", c_str(True)),
        ("license_ref", c_str(True)),
        ("turn", _CT_TURN),
        ("data", c_object(())),
    ),
    required=("type", "timestamp"),
)


def _ct_event(v: Any, ptr: str, errs: Errs) -> None:
    _CT_EVENT_BASE(v, ptr, errs)
    if type(v) is dict:
        etype = v.get("type")
        profile = _CT_DATA.get(etype) if type(etype) is str else None
        data = v.get("data")
        if profile is not None and type(data) is dict:
            profile(data, f"{ptr}/data", errs)


_CT_SESSION = c_object(
    (
        ("document_type", c_const("session")),
        ("schema_version", c_const(CT_VERSION)),
        ("conformance_level", c_enum(CONFORMANCE_LEVELS)),
        ("session_id", c_format("uuid")),
        ("agent_id", c_str(True)),
        ("content_scope", c_str(True)),
        ("manifest_ref", c_str(True)),
        ("started_at", c_format("date-time")),
        ("ended_at", c_format("date-time", True)),
        ("events", c_array(_ct_event)),
    ),
    required=("schema_version", "session_id", "started_at"),
)

_ENVELOPE_PROPS: Props = (
    ("schema_version", c_const(CT_VERSION)),
    ("session_id", c_format("uuid")),
    ("ctx_token", c_str()),
    ("agent_id", c_str()),
    ("started_at", c_format("date-time")),
)
_CT_EVENT_ENVELOPE = c_object(
    (("document_type", c_const("event")), *_ENVELOPE_PROPS, ("event", _ct_event)),
    required=("document_type", "schema_version", "event"),
)
_CT_BATCH = c_object(
    (
        ("document_type", c_const("event_batch")),
        *_ENVELOPE_PROPS,
        ("events", c_array(_ct_event, min_items=1)),
    ),
    required=("document_type", "schema_version", "events"),
)

_CT_MANIFEST = c_object(
    (
        ("schema_version", c_const(CT_VERSION)),
        ("id", c_format("uri")),
        ("roles", c_array(c_enum(("content_owner", "agent", "platform")), min_items=1, unique=True)),
        ("operator", c_object((("name", c_str()), ("domain", c_str())), required=("name",))),
        (
            "keys",
            c_array(
                c_object(
                    (
                        ("id", c_str()),
                        ("type", c_const("Ed25519")),
                        ("publicKey", c_str()),
                        ("expires", c_format("date-time")),
                    ),
                    required=("id", "type", "publicKey"),
                )
            ),
        ),
        (
            "telemetry",
            c_object(
                (("endpoint", c_format("uri")), ("conformance_level", c_enum(CONFORMANCE_LEVELS))),
                required=("endpoint",),
            ),
        ),
        ("domains", c_array(c_str())),
    ),
    required=("schema_version", "id", "roles", "operator"),
)

# --- OpenAttribution 0.4 (schema.json) and its HTTP bodies (section 4.1) ------------------------

OA_EVENT_TYPES = (
    "content_retrieved",
    "content_displayed",
    "content_engaged",
    "content_cited",
    "turn_started",
    "turn_completed",
    "product_viewed",
    "product_compared",
    "cart_add",
    "cart_remove",
    "checkout_started",
    "checkout_completed",
    "checkout_abandoned",
)
OA_INTENTS = (
    "product_research",
    "comparison",
    "how_to",
    "troubleshooting",
    "general_question",
    "purchase_intent",
    "price_check",
    "availability_check",
    "review_seeking",
    "chitchat",
    "other",
)

_OA_TURN = c_object(
    (
        ("privacy_level", c_enum(PRIVACY_LEVELS)),
        ("query_text", c_str(True)),
        ("response_text", c_str(True)),
        ("query_intent", c_enum(OA_INTENTS, nullable=True)),
        ("response_type", c_str(True)),
        ("topics", c_array(c_str())),
        ("content_urls_retrieved", c_array(c_format("uri"))),
        ("content_urls_cited", c_array(c_format("uri"))),
        ("query_tokens", c_int(0, nullable=True)),
        ("response_tokens", c_int(0, nullable=True)),
        ("model_id", c_str(True)),
    ),
    required=("privacy_level",),
    nullable=True,
)
_OA_EVENT = c_object(
    (
        ("id", c_format("uuid")),
        ("type", c_enum(OA_EVENT_TYPES)),
        ("timestamp", c_format("date-time")),
        ("content_url", c_format("uri", True)),
        ("product_id", c_format("uuid", True)),
        ("turn", _OA_TURN),
        ("data", c_object(())),
    ),
    required=("type", "timestamp"),
)
_OA_INITIATOR = c_object(
    (("agent_id", c_str(True)), ("manifest_ref", c_str(True)), ("operator_id", c_str(True))), nullable=True
)
_OA_USER_CONTEXT = c_object(
    (("external_id", c_str(True)), ("segments", c_array(c_str())), ("attributes", c_object(())))
)
_OA_OUTCOME = c_object(
    (
        ("type", c_enum(("conversion", "abandonment", "browse"))),
        ("value_amount", c_int(0)),
        ("currency", c_pattern("^[A-Z]{3}$")),
        ("products", c_array(c_format("uuid"))),
        ("metadata", c_object(())),
    ),
    required=("type",),
    nullable=True,
)
_OA_SESSION_PROPS: Props = (
    ("session_id", c_format("uuid")),
    ("initiator_type", c_enum(("user", "agent"))),
    ("initiator", _OA_INITIATOR),
    ("agent_id", c_str(True)),
    ("content_scope", c_str(True)),
    ("manifest_ref", c_str(True)),
    ("prior_session_ids", c_array(c_format("uuid"))),
    ("started_at", c_format("date-time")),
    ("ended_at", c_format("date-time", True)),
    ("user_context", _OA_USER_CONTEXT),
    ("events", c_array(_OA_EVENT)),
    ("outcome", _OA_OUTCOME),
)
_OA_SESSION = c_object(
    (("schema_version", c_enum(OA_ACCEPTED_VERSIONS)), *_OA_SESSION_PROPS),
    required=("schema_version", "session_id", "started_at"),
)
# The HTTP bodies have no JSON Schema in the spec; these follow the reference server's models.
_OA_START = c_object(
    (
        ("session_id", c_format("uuid")),  # not sent by SDKs; a gateway may assign one
        ("initiator_type", c_enum(("user", "agent"))),
        ("initiator", _OA_INITIATOR),
        ("content_scope", c_str(True)),
        ("agent_id", c_str(True)),
        ("manifest_ref", c_str(True)),
        ("external_session_id", c_str(True)),
        ("user_context", _OA_USER_CONTEXT),
        ("prior_session_ids", c_array(c_format("uuid"))),
        ("started_at", c_format("date-time")),
    )
)
_OA_EVENTS = c_object(
    (("session_id", c_format("uuid")), ("events", c_array(_OA_EVENT))), required=("session_id", "events")
)
_OA_END = c_object(
    (("session_id", c_format("uuid")), ("outcome", _OA_OUTCOME), ("ended_at", c_format("date-time", True))),
    required=("session_id", "outcome"),
)

_SCHEMAS: dict[DocKind, Check] = {
    DocKind.SESSION: _CT_SESSION,
    DocKind.EVENT: _CT_EVENT_ENVELOPE,
    DocKind.EVENT_BATCH: _CT_BATCH,
    DocKind.MANIFEST: _CT_MANIFEST,
    DocKind.OA_SESSION: _OA_SESSION,
    DocKind.OA_SESSION_START: _OA_START,
    DocKind.OA_EVENTS: _OA_EVENTS,
    DocKind.OA_SESSION_END: _OA_END,
}

# --- application-layer rules ---------------------------------------------------------------------

#: CT 0.1 section 5.5: turn fields a privacy level does not permit.
CT_PRIVACY_FORBIDDEN: dict[str, tuple[str, ...]] = {
    "full": (),
    "summary": (),
    "intent": ("query_text", "response_text"),
    "minimal": (
        "query_text",
        "response_text",
        "query_intent",
        "topics",
        "response_type",
        "response_mode",
        "model_id",
        "ad_rendered",
    ),
}
#: OA 0.4 section 3.5: the same gating, with only the columns that table has.
OA_PRIVACY_FORBIDDEN: dict[str, tuple[str, ...]] = {
    "full": (),
    "summary": (),
    "intent": ("query_text", "response_text"),
    "minimal": ("query_text", "response_text", "query_intent", "topics"),
}


def _populated(v: Any) -> bool:
    # A null, empty string or empty list reveals nothing, so it cannot exceed a privacy level.
    return v is not None and v != "" and v != []


def _gate_turn(ev: Any, ptr: str, forbidden: dict[str, tuple[str, ...]], spec: str, verdict: Verdict) -> None:
    if type(ev) is not dict:
        return
    turn = ev.get("turn")
    if type(turn) is not dict:
        return
    level = turn.get("privacy_level")
    if type(level) is not str:
        return
    for name in forbidden.get(level, ()):
        if name in turn and _populated(turn[name]):
            v = Violation(
                f"{ptr}/turn/{name}",
                f"{spec} §5.5" if spec == "CT-0.1" else f"{spec} §3.5",
                f"{name} is not permitted at privacy_level {level!r} (stripped on ingestion)",
                layer="app",
                strippable=True,
            )
            verdict.errors.append(v)
            verdict.strip.append((turn, name, v))


def _ct_content_identifier(ev: Any, ptr: str, errs: Errs) -> None:
    if type(ev) is not dict:
        return
    etype = ev.get("type")
    if (
        type(etype) is str
        and etype in CT_CONTENT_TYPES
        and not (ev.get("content_url") or ev.get("content_id"))
    ):
        errs.append(
            Violation(
                ptr,
                "CT-0.1 §5.7.5",
                f"{ev['type']} event carries neither content_url nor content_id (required on every "
                "content event, §4.5)",
                layer="app",
            )
        )


def _ct_rules(doc: dict[str, Any], kind: DocKind, verdict: Verdict) -> None:
    if kind is DocKind.EVENT:
        events: list[tuple[str, Any]] = [("/event", doc.get("event"))]
    else:
        raw = doc.get("events")
        events = [(f"/events/{i}", e) for i, e in enumerate(raw)] if type(raw) is list else []
    for ptr, ev in events:
        _ct_content_identifier(ev, ptr, verdict.errors)
        _gate_turn(ev, ptr, CT_PRIVACY_FORBIDDEN, "CT-0.1", verdict)
    if (
        kind in (DocKind.EVENT, DocKind.EVENT_BATCH)
        and not doc.get("session_id")
        and not doc.get("ctx_token")
    ):
        # Sections 5.7.5 and 7.1: only retrieval-only envelopes (origin/edge emitters at
        # Retrieval conformance) may omit both.
        others = sorted(
            {
                str(e.get("type"))
                for _, e in events
                if type(e) is dict and e.get("type") != "content_retrieved"
            },
            key=str,
        )
        if others:
            verdict.errors.append(
                Violation(
                    "/session_id",
                    "CT-0.1 §5.7.5",
                    "envelope carries neither session_id nor ctx_token; only retrieval-only envelopes may "
                    f"omit both (§7.1), this one has {', '.join(map(str, others))}",
                    layer="app",
                )
            )


def _manifest_rules(doc: dict[str, Any], verdict: Verdict) -> None:
    keys = doc.get("keys")
    if type(keys) is list:
        seen: set[str] = set()
        for i, key in enumerate(keys):
            kid = key.get("id") if type(key) is dict else None
            if type(kid) is str:
                if kid in seen:
                    verdict.errors.append(
                        Violation(f"/keys/{i}/id", "CT-0.1 §8.7", f"duplicate key id {kid!r}", layer="app")
                    )
                seen.add(kid)
    domains = doc.get("domains")
    mid = doc.get("id")
    if type(domains) is not list or type(mid) is not str:
        return
    host = host_of(mid)
    try:
        path = urlsplit(mid).path
    except ValueError:
        path = ""
    if path != "/.well-known/content-telemetry.json":
        verdict.errors.append(
            Violation(
                "/domains",
                "CT-0.1 §8.6",
                "domains may appear only on a manifest served at the domain root "
                "(https://<domain>/.well-known/content-telemetry.json)",
                layer="app",
            )
        )
        return
    for i, entry in enumerate(domains):
        if type(entry) is not str or host is None:
            continue
        base = entry.lower().rstrip(".")
        base = base[2:] if base.startswith("*.") else base
        if base != host and not base.endswith("." + host):
            verdict.errors.append(
                Violation(
                    f"/domains/{i}",
                    "CT-0.1 §8.6",
                    f"{entry!r} is neither the manifest's host {host!r} nor a subdomain of it",
                    layer="app",
                )
            )


def _version_rule(doc: dict[str, Any], verdict: Verdict) -> bool:
    """CT 0.1 §5.7.4 / §8.7 and OA 0.4 §8: reject unaccepted versions with that reason alone."""
    version = doc.get("schema_version")
    if type(version) is not str:
        return True
    fmt = verdict.format
    if fmt is SourceFormat.OPENATTRIBUTION:
        if version in OA_ACCEPTED_VERSIONS:
            return True
        verdict.errors.append(
            Violation(
                "/schema_version",
                "OA-0.4 §8",
                f"schema_version {version!r} is not accepted: this consumer reads OpenAttribution 0.4 "
                "(and '0.1', which OA SDKs write on 0.4-shaped sessions)",
            )
        )
        return False
    if version == CT_VERSION:
        return True
    section = "§8.7" if verdict.kind is DocKind.MANIFEST else "§5.7.4"
    verdict.errors.append(
        Violation(
            "/schema_version",
            f"CT-0.1 {section}",
            f"schema_version {version!r} is not accepted: a Content Telemetry 0.1 consumer accepts exactly "
            f"'0.1' during the preview period ({section}, §12)",
        )
    )
    return False


def check(doc: Any, source: str | None = None) -> Verdict:
    """Validate one decoded document against its detected kind: schema + application rules."""
    det = detect(doc, source)
    verdict = Verdict(det.kind, det.format, det.version, doc)
    if det.kind is DocKind.UNKNOWN:
        if type(doc) is dict:
            verdict.errors.append(
                Violation(
                    "/document_type",
                    "CT-0.1 §7.1",
                    f"unknown document_type {_short(doc.get('document_type'))}: expected 'session', 'event' "
                    "or 'event_batch'",
                )
            )
        else:
            verdict.errors.append(
                Violation("", "jsonschema:type", f"a document must be a JSON object, got {json_type(doc)}")
            )
        return verdict
    if not _version_rule(doc, verdict):
        return verdict
    _SCHEMAS[det.kind](doc, "", verdict.errors)
    if det.kind is DocKind.MANIFEST:
        _manifest_rules(doc, verdict)
    elif det.format is SourceFormat.CONTENT_TELEMETRY:
        _ct_rules(doc, det.kind, verdict)
    else:
        raw = doc.get("events")
        if type(raw) is list:
            for i, ev in enumerate(raw):
                _gate_turn(ev, f"/events/{i}", OA_PRIVACY_FORBIDDEN, "OA-0.4", verdict)
    return verdict


def decode(
    raw: bytes | bytearray | memoryview | str, max_bytes: int = MAX_DOCUMENT_BYTES
) -> tuple[Any, Violation | None]:
    """orjson-decode one document; a failure becomes a Violation (never an exception)."""
    if len(raw) > max_bytes:
        return None, Violation(
            "",
            "ctpipe:size",
            f"document is {len(raw)} bytes, over the {max_bytes}-byte limit",
            layer="decode",
        )
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError as exc:
        return None, Violation("", "json:syntax", f"not valid UTF-8 JSON (RFC 8259): {exc}", layer="decode")


def check_bytes(
    raw: bytes | bytearray | memoryview | str, source: str | None = None, max_bytes: int = MAX_DOCUMENT_BYTES
) -> Verdict:
    """Decode, detect and validate one document; never raises."""
    doc, err = decode(raw, max_bytes)
    if err is not None:
        return Verdict(DocKind.UNKNOWN, None, None, None, [err])
    return check(doc, source)
