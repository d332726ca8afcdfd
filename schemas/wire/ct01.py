"""Content Telemetry 0.1 wire models: session document, standalone event, event batch, manifest.

Field tables: CT 0.1 sections 5.1 (session), 5.2 (event), 5.4 (turn), 7.1 (envelopes) and
8.2-8.6 (manifest). Consumers MUST tolerate unknown fields (section 5.7.4), so every model keeps
them (``extra="allow"``). Open vocabularies (intent, response_mode, media_type, display_type,
engagement_type) are plain strings, as the spec requires consumers to accept unknown values.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

EventType = Literal[
    "content_retrieved",
    "content_grounded",
    "content_cited",
    "content_displayed",
    "content_engaged",
    "turn_started",
    "turn_completed",
]
PrivacyLevel = Literal["full", "summary", "intent", "minimal"]
SourceRole = Literal["origin", "edge", "index", "agent"]
ConformanceLevel = Literal["retrieval", "grounding", "citation"]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ConversationTurn(_Wire):
    """Section 5.4; which fields may be present depends on ``privacy_level`` (section 5.5)."""

    privacy_level: PrivacyLevel
    query_text: str | None = None
    response_text: str | None = None
    query_intent: str | None = None
    response_type: str | None = None
    response_mode: str | None = None
    topics: list[str] | None = None
    content_urls_retrieved: list[str] | None = None
    content_urls_cited: list[str] | None = None
    query_tokens: int | None = Field(default=None, ge=0)
    response_tokens: int | None = Field(default=None, ge=0)
    model_id: str | None = None
    ad_rendered: bool | None = None


class TelemetryEvent(_Wire):
    """Section 5.2; ``data`` follows the section 6 profile of its ``type``."""

    id: str | None = None
    type: EventType
    timestamp: AwareDatetime
    turn_id: str | None = None
    source_role: SourceRole | None = None
    content_telemetry_id: str | None = None
    content_url: str | None = None
    content_id: str | None = None
    license_ref: str | None = None
    turn: ConversationTurn | None = None
    data: dict[str, Any] | None = None


class Session(_Wire):
    """Session document (section 5.1); ``document_type`` absent means session (section 7.1)."""

    document_type: Literal["session"] | None = None
    schema_version: Literal["0.1"]
    session_id: str
    agent_id: str | None = None
    content_scope: str | None = None
    manifest_ref: str | None = None
    conformance_level: ConformanceLevel | None = None
    started_at: AwareDatetime
    ended_at: AwareDatetime | None = None
    events: list[TelemetryEvent] = Field(default_factory=list)


class _Envelope(_Wire):
    schema_version: Literal["0.1"]
    session_id: str | None = None
    ctx_token: str | None = None  # section 7.1 click token, in place of session_id
    agent_id: str | None = None
    started_at: AwareDatetime | None = None


class StandaloneEvent(_Envelope):
    """Standalone event envelope (section 7.1, ``telemetry-event.json``)."""

    document_type: Literal["event"]
    event: TelemetryEvent


class EventBatch(_Envelope):
    """Event batch envelope (section 7.1, ``telemetry-event-batch.json``)."""

    document_type: Literal["event_batch"]
    events: list[TelemetryEvent] = Field(min_length=1)


class Operator(_Wire):
    name: str
    domain: str | None = None


class ManifestKey(_Wire):
    id: str
    type: Literal["Ed25519"]
    public_key: str = Field(alias="publicKey")
    expires: AwareDatetime | None = None


class ManifestTelemetry(_Wire):
    endpoint: str
    conformance_level: ConformanceLevel | None = None


class Manifest(_Wire):
    """``/.well-known/content-telemetry.json`` (section 8.2)."""

    schema_version: Literal["0.1"]
    id: str
    roles: list[Literal["content_owner", "agent", "platform"]] = Field(min_length=1)
    operator: Operator
    keys: list[ManifestKey] | None = None
    telemetry: ManifestTelemetry | None = None
    domains: list[str] | None = None
