"""The specifications' JSON Schemas, shipped as package data (see README.md in this folder)."""

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


@cache
def load(name: str) -> dict[str, Any]:
    """One shipped schema by document kind (``session``, ``event``, ... ``oa_session``)."""
    text = resources.files(__name__).joinpath(FILES[name]).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
