"""The canonical event and session header: the one strict shape everything downstream sees.

Every delivery format (CT 0.1 session / standalone event / event batch, OA 0.4 session and HTTP
bodies) normalises to one ``CanonicalEvent`` per event plus, where the document carries
session-level facts, one ``SessionHeader``. Both are internal models: strict and frozen.

Room for Content Telemetry 1.0: ``source_format``/``source_version`` record where an event came
from, the stage names are those both versions share (1.0's ``content_presented`` is the
``displayed`` stage), and 1.0-only facts (grounding ``provenance``, ``parent_session_id``) have
optional fields that 0.1 input leaves empty.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class SourceFormat(StrEnum):
    """Which specification a document follows."""

    CONTENT_TELEMETRY = "content-telemetry"
    OPENATTRIBUTION = "openattribution"


class DocKind(StrEnum):
    """What one received document is (CT 0.1 section 7.1 delivery formats, OA 0.4 section 4.1)."""

    SESSION = "session"  # CT session document
    EVENT = "event"  # CT standalone event envelope
    EVENT_BATCH = "event_batch"  # CT event batch envelope
    MANIFEST = "manifest"  # CT manifest (section 8); validated, never normalised to events
    OA_SESSION = "oa_session"  # OA session (also the body of POST /session/bulk)
    OA_SESSION_START = "oa_session_start"  # body of POST /session/start
    OA_EVENTS = "oa_events"  # body of POST /events
    OA_SESSION_END = "oa_session_end"  # body of POST /session/end
    UNKNOWN = "unknown"  # undecodable or unrecognisable


class EventType(StrEnum):
    """Canonical event type: the funnel stage, turn boundary, or a namespaced commerce event."""

    RETRIEVED = "retrieved"
    GROUNDED = "grounded"
    CITED = "cited"
    DISPLAYED = "displayed"  # CT 0.1 content_displayed, CT 1.0 content_presented
    ENGAGED = "engaged"
    TURN_STARTED = "turn_started"
    TURN_COMPLETED = "turn_completed"
    # OA 0.4 section 3.3 commerce events, namespaced so they never collide with content stages.
    PRODUCT_VIEWED = "commerce.product_viewed"
    PRODUCT_COMPARED = "commerce.product_compared"
    CART_ADD = "commerce.cart_add"
    CART_REMOVE = "commerce.cart_remove"
    CHECKOUT_STARTED = "commerce.checkout_started"
    CHECKOUT_COMPLETED = "commerce.checkout_completed"
    CHECKOUT_ABANDONED = "commerce.checkout_abandoned"


#: Wire event type -> canonical type (both specs; CT 1.0's presented is included for later).
WIRE_TYPES: dict[str, EventType] = {
    "content_retrieved": EventType.RETRIEVED,
    "content_grounded": EventType.GROUNDED,
    "content_cited": EventType.CITED,
    "content_displayed": EventType.DISPLAYED,
    "content_presented": EventType.DISPLAYED,
    "content_engaged": EventType.ENGAGED,
    "turn_started": EventType.TURN_STARTED,
    "turn_completed": EventType.TURN_COMPLETED,
    "product_viewed": EventType.PRODUCT_VIEWED,
    "product_compared": EventType.PRODUCT_COMPARED,
    "cart_add": EventType.CART_ADD,
    "cart_remove": EventType.CART_REMOVE,
    "checkout_started": EventType.CHECKOUT_STARTED,
    "checkout_completed": EventType.CHECKOUT_COMPLETED,
    "checkout_abandoned": EventType.CHECKOUT_ABANDONED,
}

CONTENT_TYPES: frozenset[EventType] = frozenset(
    {EventType.RETRIEVED, EventType.GROUNDED, EventType.CITED, EventType.DISPLAYED, EventType.ENGAGED}
)


class CanonicalEvent(BaseModel):
    """One event, whatever format it arrived in. Ids are stable across redelivery."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str  # emitter's ``id`` (lower-cased UUID) or a UUIDv5 (see schemas.normalize)
    emitter_event_id: str | None = None  # the ``id`` as the emitter sent it, if any
    seq: int  # position of the event within its document
    session_id: str | None = None
    ctx_token: str | None = None  # CT 0.1 section 7.1 click token, in place of session_id
    parent_session_id: str | None = None  # CT 1.0 only
    agent_id: str | None = None
    content_scope: str | None = None
    event_type: EventType
    timestamp: datetime  # UTC
    source_role: str | None = None
    content_telemetry_id: str | None = None
    content_url: str | None = None  # as sent
    canonical_url: str | None = None
    owner_domain: str | None = None
    content_id: str | None = None
    product_id: str | None = None  # OA 0.4 commerce
    license_ref: str | None = None
    turn_id: str | None = None
    privacy_level: str | None = None
    # Funnel-relevant ``data`` fields (CT 0.1 section 6), lifted only when well-typed.
    scope: str | None = None
    cached: bool | None = None
    tokens_ingested: int | None = None
    citation_type: str | None = None
    position: str | None = None
    display_type: str | None = None
    engagement_type: str | None = None
    bot_category: str | None = None
    bot_name: str | None = None
    media_type: str | None = None
    provenance: str | None = None  # CT 1.0 grounding provenance
    turn_json: str | None = None  # the conversation turn (after privacy stripping), JSON
    data_json: str = "{}"  # remaining ``data`` fields, JSON
    extra_json: str = "{}"  # unknown event-level fields, JSON (specs: tolerate and keep)
    source_format: SourceFormat
    source_version: str
    source_kind: DocKind
    emitter: str
    notes: tuple[str, ...] = ()  # what ingestion changed, e.g. stripped privacy fields


class SessionHeader(BaseModel):
    """Session-level facts of one document (a whole session, or what an envelope carries)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    session_id: str | None = None
    ctx_token: str | None = None
    complete: bool  # True for a whole session document, False for envelopes and API fragments
    agent_id: str | None = None
    content_scope: str | None = None
    manifest_ref: str | None = None
    conformance_level: str | None = None  # informational only (CT 0.1 section 5.7)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    initiator_type: str | None = None
    initiator_agent_id: str | None = None
    initiator_operator_id: str | None = None
    initiator_manifest_ref: str | None = None
    prior_session_ids: tuple[str, ...] = ()
    external_session_id: str | None = None
    user_external_id: str | None = None
    user_segments: tuple[str, ...] = ()
    user_attributes_json: str = "{}"
    outcome_type: str | None = None
    outcome_value_minor: int | None = None  # OA 0.4 section 3.7: minor currency units
    outcome_currency: str | None = None
    outcome_products: tuple[str, ...] = ()
    outcome_metadata_json: str = "{}"
    event_count: int = 0
    extra_json: str = "{}"
    source_format: SourceFormat
    source_version: str
    source_kind: DocKind
    emitter: str
