"""Format detection by shape: which spec, which delivery format, which version.

Input: one decoded JSON value (and optionally a ``source`` hint such as the HTTP route it came
in on). Output: a ``Detection``. ``schema_version`` alone is not trusted: the OpenAttribution
SDKs emit ``"0.1"`` on OA-0.4-shaped sessions, so OA is recognised by its fields (initiator,
user_context, prior_session_ids, outcome, product_id, commerce events) before the version.
A document without ``document_type`` is a session (CT 0.1 section 7.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.canonical import DocKind, SourceFormat

CT_VERSION = "0.1"
OA_VERSION = "0.4"

#: Top-level fields only OA 0.4 sessions and API bodies carry.
OA_SESSION_MARKERS: frozenset[str] = frozenset(
    {"initiator_type", "initiator", "user_context", "prior_session_ids", "outcome", "external_session_id"}
)
#: Event-level marks of OA 0.4 (section 3.2 ``product_id``, section 3.3 commerce types).
OA_EVENT_TYPES: frozenset[str] = frozenset(
    {
        "product_viewed",
        "product_compared",
        "cart_add",
        "cart_remove",
        "checkout_started",
        "checkout_completed",
        "checkout_abandoned",
    }
)
MANIFEST_MARKERS: frozenset[str] = frozenset({"roles", "operator", "keys", "telemetry", "domains"})

#: ``source`` hints: a DocKind value, or the OA HTTP route the body was posted to.
SOURCE_HINTS: dict[str, DocKind] = {
    **{k.value: k for k in DocKind if k is not DocKind.UNKNOWN},
    "/session/start": DocKind.OA_SESSION_START,
    "/sessions/start": DocKind.OA_SESSION_START,
    "/events": DocKind.OA_EVENTS,
    "/session/end": DocKind.OA_SESSION_END,
    "/sessions/end": DocKind.OA_SESSION_END,
    "/session/bulk": DocKind.OA_SESSION,
    "/sessions/bulk": DocKind.OA_SESSION,
}

_DOCUMENT_TYPES = {"session": DocKind.SESSION, "event": DocKind.EVENT, "event_batch": DocKind.EVENT_BATCH}


@dataclass(frozen=True, slots=True, init=False)
class Detection:
    """What a document is. ``version`` is the ``schema_version`` as sent (None if absent)."""

    kind: DocKind
    format: SourceFormat | None
    version: str | None

    # init=False + this __init__: the native build compiles it (a generated one stays Python)
    def __init__(self, kind: DocKind, format: SourceFormat | None, version: str | None) -> None:
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "format", format)
        object.__setattr__(self, "version", version)


def format_of(kind: DocKind) -> SourceFormat | None:
    if kind is DocKind.UNKNOWN:
        return None
    return SourceFormat.OPENATTRIBUTION if kind.value.startswith("oa_") else SourceFormat.CONTENT_TELEMETRY


def _version(doc: dict[str, Any]) -> str | None:
    v = doc.get("schema_version")
    return v if isinstance(v, str) else None


def _has_oa_events(events: Any) -> bool:
    if not isinstance(events, list):
        return False
    for ev in events:
        if isinstance(ev, dict) and (
            "product_id" in ev or (type(t := ev.get("type")) is str and t in OA_EVENT_TYPES)
        ):
            return True
    return False


def _from_schema_uri(uri: str) -> DocKind | None:
    u = uri.lower()
    if "openattribution" in u:
        return DocKind.OA_SESSION
    if "contenttelemetry" not in u and "content-telemetry" not in u:
        return None
    if "manifest" in u:
        return DocKind.MANIFEST
    if "event-batch" in u:
        return DocKind.EVENT_BATCH
    if "telemetry-event" in u:
        return DocKind.EVENT
    return DocKind.SESSION


def _oa_kind(doc: dict[str, Any]) -> DocKind:
    """Which OA 0.4 body an OA-shaped object is (section 4.1 routes)."""
    if "started_at" in doc or "schema_version" in doc:
        return DocKind.OA_SESSION
    if "events" in doc:
        return DocKind.OA_EVENTS
    if "outcome" in doc and "session_id" in doc:
        return DocKind.OA_SESSION_END
    return DocKind.OA_SESSION_START


def detect(doc: Any, source: str | None = None) -> Detection:
    """Classify one decoded document; never raises."""
    if not isinstance(doc, dict):
        return Detection(DocKind.UNKNOWN, None, None)
    version = _version(doc)
    if source:
        hinted = SOURCE_HINTS.get(source.strip().lower())
        if hinted is not None:
            return Detection(hinted, format_of(hinted), version)
    doc_type = doc.get("document_type")
    if doc_type is not None:
        # CT 0.1 section 7.1: the discriminator decides; an unknown value is UNKNOWN.
        kind = _DOCUMENT_TYPES.get(doc_type) if isinstance(doc_type, str) else None
        if kind is None:
            return Detection(DocKind.UNKNOWN, SourceFormat.CONTENT_TELEMETRY, version)
        return Detection(kind, SourceFormat.CONTENT_TELEMETRY, version)
    schema_uri = doc.get("$schema")
    if isinstance(schema_uri, str):
        kind = _from_schema_uri(schema_uri)
        if kind is DocKind.OA_SESSION:
            kind = _oa_kind(doc)
        if kind is not None:
            return Detection(kind, format_of(kind), version)
    if not OA_SESSION_MARKERS.isdisjoint(doc) or version == OA_VERSION or _has_oa_events(doc.get("events")):
        kind = _oa_kind(doc)
        return Detection(kind, SourceFormat.OPENATTRIBUTION, version)
    if "session_id" not in doc and "events" not in doc and not MANIFEST_MARKERS.isdisjoint(doc):
        return Detection(DocKind.MANIFEST, SourceFormat.CONTENT_TELEMETRY, version)
    # CT 0.1 section 7.1: "When document_type is absent, consumers SHOULD treat the document
    # as a session" - including envelope-shaped documents that forgot it.
    return Detection(DocKind.SESSION, SourceFormat.CONTENT_TELEMETRY, version)
