"""Hypothesis strategies: arbitrary JSON, valid CT 0.1 / OA 0.4 documents, and mutations."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

UUIDS = st.uuids().map(str)
TIMESTAMPS = st.datetimes(
    min_value=__import__("datetime").datetime(2000, 1, 1),
    max_value=__import__("datetime").datetime(2099, 1, 1),
).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S") + "Z")
URLS = st.builds(
    lambda host, path, q: f"https://{host}/{path}{q}",
    st.sampled_from(["www.ft.com", "news.bbc.co.uk", "Example.COM", "foo.github.io", "a.b.example.org"]),
    st.text("abcdefghij-/", max_size=12),
    st.sampled_from(["", "?utm_source=x", "?id=3&gclid=z", "#frag"]),
)
TEXT = st.text(max_size=8)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(TEXT, kids, max_size=4),
    max_leaves=20,
)

_DATA: dict[str, Any] = {
    "content_retrieved": st.fixed_dictionaries(
        {},
        optional={"bot_category": TEXT, "response_status": st.integers(100, 599), "country": st.just("US")},
    ),
    "content_grounded": st.fixed_dictionaries(
        {},
        optional={
            "scope": st.sampled_from(["session", "turn"]),
            "cached": st.booleans(),
            "tokens_ingested": st.integers(0, 10**6),
        },
    ),
    "content_cited": st.fixed_dictionaries(
        {},
        optional={
            "citation_type": st.sampled_from(["paraphrase", "reference"]),
            "position": st.just("primary"),
        },
    ),
    "content_displayed": st.fixed_dictionaries({}, optional={"display_type": TEXT}),
    "content_engaged": st.fixed_dictionaries({}, optional={"engagement_type": TEXT}),
}


@st.composite
def ct_event(draw: st.DrawFn, types: tuple[str, ...] | None = None) -> dict[str, Any]:
    etype = draw(st.sampled_from(types or (*_DATA, "turn_started", "turn_completed")))
    ev: dict[str, Any] = {"type": etype, "timestamp": draw(TIMESTAMPS)}
    if draw(st.booleans()):
        ev["id"] = draw(UUIDS)
    if etype in _DATA:
        if draw(st.booleans()):
            ev["content_url"] = draw(URLS)
        else:
            ev["content_id"] = draw(st.text(min_size=1, max_size=8))
        ev["data"] = draw(_DATA[etype])
        if etype == "content_retrieved":
            ev["source_role"] = draw(st.sampled_from(["origin", "edge", "index", "agent"]))
    else:
        ev["turn_id"] = draw(st.sampled_from(["1", "2"]))
        level = draw(st.sampled_from(["full", "summary", "intent", "minimal"]))
        turn: dict[str, Any] = {"privacy_level": level, "response_tokens": draw(st.integers(0, 999))}
        if level in ("full", "summary"):
            turn["query_text"] = draw(TEXT)
        if level != "minimal":
            turn["query_intent"] = draw(st.sampled_from(["question", "comparison", "price_check"]))
        ev["turn"] = turn
    if draw(st.booleans()):
        ev["x_unknown"] = draw(TEXT)
    return ev


@st.composite
def ct_document(draw: st.DrawFn) -> dict[str, Any]:
    """A valid CT 0.1 session, standalone event or event batch."""
    kind = draw(st.sampled_from(["session", "event", "event_batch"]))
    if kind == "session":
        doc: dict[str, Any] = {
            "schema_version": "0.1",
            "session_id": draw(UUIDS),
            "started_at": draw(TIMESTAMPS),
            "events": draw(st.lists(ct_event(), max_size=8)),
        }
        if draw(st.booleans()):
            doc["document_type"] = "session"
        if draw(st.booleans()):
            doc["agent_id"] = draw(TEXT)
        return doc
    doc = {"document_type": kind, "schema_version": "0.1", "session_id": draw(UUIDS)}
    if kind == "event":
        doc["event"] = draw(ct_event())
    else:
        doc["events"] = draw(st.lists(ct_event(), min_size=1, max_size=8))
    return doc


@st.composite
def oa_session(draw: st.DrawFn) -> dict[str, Any]:
    """A valid OA 0.4 session."""
    events = []
    for _ in range(draw(st.integers(0, 5))):
        etype = draw(
            st.sampled_from(["content_retrieved", "content_cited", "cart_add", "checkout_completed"])
        )
        ev: dict[str, Any] = {"id": draw(UUIDS), "type": etype, "timestamp": draw(TIMESTAMPS)}
        if etype.startswith("content"):
            ev["content_url"] = draw(URLS)
        else:
            ev["product_id"] = draw(UUIDS)
        events.append(ev)
    doc: dict[str, Any] = {
        "schema_version": draw(st.sampled_from(["0.4", "0.1"])),
        "session_id": draw(UUIDS),
        "started_at": draw(TIMESTAMPS),
        "user_context": {"segments": draw(st.lists(TEXT, max_size=2))},
        "events": events,
    }
    if draw(st.booleans()):
        doc["outcome"] = {
            "type": "conversion",
            "value_amount": draw(st.integers(0, 10**6)),
            "currency": "EUR",
        }
    return doc


#: Values a mutation may put anywhere: right and wrong types, good and bad formats.
NASTY = st.sampled_from(
    [
        None,
        0,
        -1,
        1.0,
        1.5,
        True,
        "",
        "x",
        [],
        {},
        ["x"],
        "550e8400-e29b-41d4-a716-446655440000",
        "550e8400-e29b-41d4-a716-44665544000",
        "2026-01-15T10:30:00Z",
        "2026-02-30T10:30:00Z",
        "2026-01-15 10:30:00Z",
        "2026-01-15t10:30:00.5+01:00",
        "https://example.com/a",
        "not a uri",
        "content_cited",
        "turn_completed",
        "minimal",
        "full",
        "session",
        "edge",
        "sha256:" + "a" * 64,
        "0.1",
        "0.4",
        "event",
        600,
        "US",
    ]
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


_FIELD_NAMES = st.sampled_from(
    [
        "type",
        "timestamp",
        "id",
        "data",
        "turn",
        "privacy_level",
        "scope",
        "cached",
        "content_url",
        "session_id",
        "tokens_ingested",
        "citation_type",
        "query_text",
        "ctx_token",
        "outcome",
        "value_amount",
        "currency",
    ]
)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A valid document with 1-3 random edits: replace a value, delete a key, add a key.

    NASTY samples shared objects: every drawn value is copied, or an edit can make a cycle."""
    doc = draw(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if not path:
            if isinstance(doc, dict):
                doc[draw(_FIELD_NAMES)] = copy.deepcopy(draw(NASTY))
            continue
        parent: Any = doc
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        if action == "delete" and isinstance(parent, dict):
            del parent[last]
        elif action == "add" and isinstance(parent[last], dict):
            parent[last][draw(_FIELD_NAMES)] = copy.deepcopy(draw(NASTY))
        else:
            parent[last] = copy.deepcopy(draw(NASTY))
    return doc
