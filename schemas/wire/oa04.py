"""OpenAttribution 0.4 wire models: session (initiator, user_context, prior_session_ids, outcome,
commerce events, product_id) and the HTTP API bodies of section 4.1.

Unknown fields are kept (``extra="allow"``): the OA SDKs add ``source_role`` and
``content_telemetry_id`` to events and write ``schema_version: "0.1"`` on 0.4-shaped sessions.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

EventType = Literal[
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
]
IntentCategory = Literal[
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
]
PrivacyLevel = Literal["full", "summary", "intent", "minimal"]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


class Initiator(_Wire):
    """Section 3.1.4: the calling agent when ``initiator_type`` is ``agent``."""

    agent_id: str | None = None
    manifest_ref: str | None = None
    operator_id: str | None = None


class UserContext(_Wire):
    """Section 3.8: segmentation data; ``external_id`` is opaque, never PII."""

    external_id: str | None = None
    segments: list[str] = Field(default_factory=list)
    attributes: dict[str, Any] = Field(default_factory=dict)


class ConversationTurn(_Wire):
    """Section 3.4, gated by ``privacy_level`` (section 3.5)."""

    privacy_level: PrivacyLevel
    query_text: str | None = None
    response_text: str | None = None
    query_intent: IntentCategory | None = None
    response_type: str | None = None
    topics: list[str] = Field(default_factory=list)
    content_urls_retrieved: list[str] = Field(default_factory=list)
    content_urls_cited: list[str] = Field(default_factory=list)
    query_tokens: int | None = Field(default=None, ge=0)
    response_tokens: int | None = Field(default=None, ge=0)
    model_id: str | None = None


class TelemetryEvent(_Wire):
    """Section 3.2; commerce events carry ``product_id`` or amounts in ``data`` (section 3.3)."""

    id: str | None = None
    type: EventType
    timestamp: AwareDatetime
    content_url: str | None = None
    product_id: str | None = None
    turn: ConversationTurn | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class SessionOutcome(_Wire):
    """Section 3.7: ``value_amount`` is an integer in the currency's minor unit (cents, yen)."""

    type: Literal["conversion", "abandonment", "browse"]
    value_amount: int = Field(default=0, ge=0)
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    products: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class Session(_Wire):
    """Section 3.1 session; also the body of ``POST /session/bulk``."""

    schema_version: Literal["0.4", "0.1"]
    session_id: str
    initiator_type: Literal["user", "agent"] = "user"
    initiator: Initiator | None = None
    agent_id: str | None = None
    content_scope: str | None = None
    manifest_ref: str | None = None
    prior_session_ids: list[str] = Field(default_factory=list)
    started_at: AwareDatetime
    ended_at: AwareDatetime | None = None
    user_context: UserContext | None = None
    events: list[TelemetryEvent] = Field(default_factory=list)
    outcome: SessionOutcome | None = None


class SessionStartBody(_Wire):
    """Body of ``POST /session/start``; the server assigns the session id."""

    session_id: str | None = None  # absent from SDK bodies; a gateway may add it
    initiator_type: Literal["user", "agent"] = "user"
    initiator: Initiator | None = None
    content_scope: str | None = None
    agent_id: str | None = None
    manifest_ref: str | None = None
    external_session_id: str | None = None
    user_context: UserContext | None = None
    prior_session_ids: list[str] = Field(default_factory=list)


class EventsBody(_Wire):
    """Body of ``POST /events``."""

    session_id: str
    events: list[TelemetryEvent]


class SessionEndBody(_Wire):
    """Body of ``POST /session/end``."""

    session_id: str
    outcome: SessionOutcome
    ended_at: AwareDatetime | None = None


#: The body of ``POST /session/bulk`` is a whole session.
SessionBulkBody = Session
