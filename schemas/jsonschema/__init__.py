"""The specifications' JSON Schemas, shipped as package data (see README.md in this folder).

Plus the three OpenAttribution 0.4 HTTP request bodies (section 4.1), which the spec defines by
example only: ``OA_BODIES`` gives them schemas built from the shipped OA session schema's own
definitions (by ``$ref``), following the reference server's request models.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

FILES: dict[str, str] = {
    "session": "ct-0.1-telemetry-session.json",
    "event": "ct-0.1-telemetry-event.json",
    "event_batch": "ct-0.1-telemetry-event-batch.json",
    "manifest": "ct-0.1-manifest.json",
    "oa_session": "oa-0.4-telemetry-session.json",
}

_OA = "https://openattribution.org/schema/v0.4/telemetry-session.json"
_DRAFT = "https://json-schema.org/draft/2020-12/schema"
_UUID = {"type": "string", "format": "uuid"}

#: OA 0.4 section 4.1 bodies: POST /session/start, /events, /session/end.
OA_BODIES: dict[str, dict[str, Any]] = {
    "oa_session_start": {
        "$schema": _DRAFT,
        "$id": "urn:ctpipe:schema:oa-0.4:session-start",
        "type": "object",
        "properties": {
            "session_id": _UUID,  # not sent by the SDKs; a gateway may assign one
            "initiator_type": {"$ref": f"{_OA}#/properties/initiator_type"},
            "initiator": {"$ref": f"{_OA}#/properties/initiator"},
            "content_scope": {"$ref": f"{_OA}#/properties/content_scope"},
            "agent_id": {"$ref": f"{_OA}#/properties/agent_id"},
            "manifest_ref": {"$ref": f"{_OA}#/properties/manifest_ref"},
            "external_session_id": {"type": ["string", "null"]},
            "user_context": {"$ref": f"{_OA}#/$defs/UserContext"},
            "prior_session_ids": {"$ref": f"{_OA}#/properties/prior_session_ids"},
            "started_at": {"$ref": f"{_OA}#/properties/started_at"},
        },
    },
    "oa_events": {
        "$schema": _DRAFT,
        "$id": "urn:ctpipe:schema:oa-0.4:events",
        "type": "object",
        "required": ["session_id", "events"],
        "properties": {"session_id": _UUID, "events": {"$ref": f"{_OA}#/properties/events"}},
    },
    "oa_session_end": {
        "$schema": _DRAFT,
        "$id": "urn:ctpipe:schema:oa-0.4:session-end",
        "type": "object",
        "required": ["session_id", "outcome"],
        "properties": {
            "session_id": _UUID,
            "outcome": {"$ref": f"{_OA}#/properties/outcome"},
            "ended_at": {"$ref": f"{_OA}#/properties/ended_at"},
        },
    },
}


@cache
def load(name: str) -> dict[str, Any]:
    """One shipped schema by document kind (``session``, ``event``, ... ``oa_session``)."""
    text = resources.files(__name__).joinpath(FILES[name]).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def schema(name: str) -> dict[str, Any]:
    """A schema by ``DocKind`` value: a shipped file, or one of ``OA_BODIES``."""
    return OA_BODIES[name] if name in OA_BODIES else load(name)


def all_schemas() -> list[dict[str, Any]]:
    """Every schema above, for a ``$ref`` registry (each carries its ``$id``)."""
    return [load(name) for name in FILES] + list(OA_BODIES.values())
