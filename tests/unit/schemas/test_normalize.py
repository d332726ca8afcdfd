"""ingest(): canonical events, stable ids, session headers, OA shapes, and bad input."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from schemas.canonical import CanonicalEvent, DocKind, EventType, SessionHeader, SourceFormat
from schemas.normalize import derived_event_id, ingest
from tests.unit.schemas._spec import CT01, VALID

SESSION = orjson.loads((CT01 / "tests" / "valid" / "session-citation-tier.json").read_bytes())

OA_SDK_SESSION: dict[str, Any] = {
    # What the OA Python SDK's model_dump writes: schema_version "0.1" on a 0.4-shaped session.
    "schema_version": "0.1",
    "session_id": "550E8400-E29B-41D4-A716-446655440000",
    "initiator_type": "user",
    "initiator": None,
    "agent_id": "shop-v2",
    "content_scope": "mix",
    "manifest_ref": None,
    "prior_session_ids": ["440e8400-e29b-41d4-a716-446655440999"],
    "started_at": "2026-01-15T10:30:00+01:00",
    "ended_at": None,
    "user_context": {"external_id": "u1", "segments": ["premium"], "attributes": {"tier": 2}},
    "events": [
        {
            "id": "660e8400-e29b-41d4-a716-446655440001",
            "type": "content_retrieved",
            "timestamp": "2026-01-15T10:30:01Z",
            "source_role": "agent",
            "content_telemetry_id": None,
            "content_url": "https://WWW.Wirecutter.com/reviews/x/?utm_source=ai#top",
            "product_id": None,
            "turn": None,
            "data": {},
        },
        {
            "id": "660e8400-e29b-41d4-a716-446655440002",
            "type": "checkout_completed",
            "timestamp": "2026-01-15T10:35:00Z",
            "product_id": "880e8400-e29b-41d4-a716-446655440020",
            "data": {"order_value_amount": 34999, "currency": "USD"},
        },
    ],
    "outcome": {"type": "conversion", "value_amount": 34999, "currency": "JPY", "products": []},
}


def _ok(doc: Any, **kw: Any) -> Any:
    result = ingest(orjson.dumps(doc), emitter=kw.pop("emitter", "e1"), **kw)
    assert result.accepted, result.errors
    return result


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_fixture_event_count_and_strict_models(path: Any) -> None:
    doc = orjson.loads(path.read_bytes())
    result = _ok(doc)
    expected = 1 if "event" in doc else len(doc.get("events", []))
    if path.name.startswith("manifest"):
        expected = 0
    assert len(result.events) == expected
    for event in result.events:
        # The fast constructor builds exactly what strict validation accepts.
        assert CanonicalEvent.model_validate(event.model_dump()) == event
        assert CanonicalEvent.model_validate_json(event.model_dump_json()) == event
        assert event.timestamp.utcoffset() is not None and event.timestamp.utcoffset().total_seconds() == 0
    if result.session is not None:
        assert SessionHeader.model_validate(result.session.model_dump()) == result.session


def test_session_normalises_to_canonical_fields() -> None:
    result = _ok(SESSION, emitter="agent-co")
    types = [e.event_type for e in result.events]
    assert types[:3] == [EventType.TURN_STARTED, EventType.RETRIEVED, EventType.GROUNDED]
    grounded = result.events[2]
    assert grounded.scope == "session" and grounded.cached is False and grounded.tokens_ingested == 6200
    assert grounded.content_id == "rw:best-trail-shoes-2026"
    assert grounded.owner_domain == "runnersworld.com"
    assert grounded.canonical_url == "https://www.runnersworld.com/gear/best-trail-running-shoes"
    assert "content_hash" in orjson.loads(grounded.data_json)
    assert grounded.session_id == SESSION["session_id"] and grounded.agent_id == "shopping-assistant-v2"
    assert grounded.content_scope == "electronics-reviews"
    assert grounded.source_format is SourceFormat.CONTENT_TELEMETRY and grounded.source_version == "0.1"
    assert grounded.emitter == "agent-co" and grounded.media_type == "text"
    assert result.session is not None and result.session.complete and result.session.event_count == 7
    assert [e.seq for e in result.events] == list(range(7))


def test_ids_are_stable_and_distinct() -> None:
    raw = orjson.dumps(SESSION)
    a, b = ingest(raw, emitter="x"), ingest(raw, emitter="x")
    assert [e.event_id for e in a.events] == [e.event_id for e in b.events]
    assert len({e.event_id for e in a.events}) == len(a.events)
    other = ingest(raw, emitter="y")
    assert {e.event_id for e in a.events}.isdisjoint(e.event_id for e in other.events)
    # Key order and whitespace do not change a derived id: the content is hashed canonically.
    reordered = orjson.dumps({k: SESSION[k] for k in reversed(list(SESSION))}, option=orjson.OPT_INDENT_2)
    assert [e.event_id for e in ingest(reordered, emitter="x").events] == [e.event_id for e in a.events]


def test_emitter_id_wins_and_is_lower_cased() -> None:
    doc = copy.deepcopy(SESSION)
    doc["events"][0]["id"] = "AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE"
    event = _ok(doc).events[0]
    assert event.event_id == "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
    assert event.emitter_event_id == "AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE"


def test_derived_id_is_a_real_uuid5() -> None:
    import uuid

    from schemas.normalize import EVENT_ID_NAMESPACE

    got = derived_event_id("e", "s", 3, {"b": 1, "a": 2})
    assert got == str(uuid.uuid5(EVENT_ID_NAMESPACE, 'e\x1fs\x1f3\x1f{"a":2,"b":1}'))


def test_unknown_fields_are_kept() -> None:
    doc = copy.deepcopy(SESSION)
    doc["x_vendor"] = {"k": 1}
    doc["events"][1]["x_trace"] = "t-1"
    doc["events"][1]["data"] = {"media_type": "video", "custom": [1, 2], "cached": "yes"}
    result = _ok(doc)
    assert orjson.loads(result.events[1].extra_json) == {"x_trace": "t-1"}
    # A lifted field of the wrong type stays in data_json rather than being dropped.
    assert orjson.loads(result.events[1].data_json) == {"custom": [1, 2], "cached": "yes"}
    assert result.events[1].media_type == "video" and result.events[1].cached is None
    assert result.session is not None and orjson.loads(result.session.extra_json)["x_vendor"] == {"k": 1}


def test_oa_sdk_session_is_detected_by_shape() -> None:
    result = _ok(OA_SDK_SESSION)
    assert result.kind is DocKind.OA_SESSION and result.version == "0.1"
    first, checkout = result.events
    assert first.canonical_url == "https://www.wirecutter.com/reviews/x"
    assert first.content_url == OA_SDK_SESSION["events"][0]["content_url"]
    assert first.owner_domain == "wirecutter.com" and first.source_role == "agent"
    assert checkout.event_type is EventType.CHECKOUT_COMPLETED
    assert checkout.product_id == "880e8400-e29b-41d4-a716-446655440020"
    assert first.session_id == "550e8400-e29b-41d4-a716-446655440000"
    header = result.session
    assert header is not None and header.source_format is SourceFormat.OPENATTRIBUTION
    assert header.outcome_type == "conversion" and header.outcome_value_minor == 34999
    assert header.outcome_currency == "JPY" and header.user_segments == ("premium",)
    assert header.prior_session_ids == ("440e8400-e29b-41d4-a716-446655440999",)
    assert header.started_at is not None and header.started_at.hour == 9  # converted to UTC


@pytest.mark.parametrize(
    ("body", "source", "kind", "n"),
    [
        (
            {"session_id": OA_SDK_SESSION["session_id"], "events": OA_SDK_SESSION["events"]},
            None,
            DocKind.OA_EVENTS,
            2,
        ),
        (
            {"session_id": OA_SDK_SESSION["session_id"], "outcome": {"type": "browse"}},
            None,
            DocKind.OA_SESSION_END,
            0,
        ),
        ({"session_id": OA_SDK_SESSION["session_id"], "events": []}, "/events", DocKind.OA_EVENTS, 0),
        (OA_SDK_SESSION, "/session/bulk", DocKind.OA_SESSION, 2),
    ],
)
def test_oa_http_bodies(body: Any, source: str | None, kind: DocKind, n: int) -> None:
    result = _ok(body, source=source)
    assert result.kind is kind and len(result.events) == n
    assert result.session is not None and not (result.session.complete and kind is not DocKind.OA_SESSION)


def test_oa_session_start_needs_gateway_assigned_id() -> None:
    body = {"initiator_type": "user", "content_scope": "mix", "user_context": {}, "prior_session_ids": []}
    result = ingest(orjson.dumps(body), emitter="e")
    assert result.kind is DocKind.OA_SESSION_START and not result.accepted
    assert result.errors[0].rule == "OA-0.4 §4.1"
    body["session_id"] = "550e8400-e29b-41d4-a716-446655440000"
    assert _ok(body).session is not None


def test_ct_1_0_is_rejected_with_the_version_reason() -> None:
    raw = (CT01.parent / "content-telemetry-1.0" / "tests" / "valid" / "session-multi-turn.json").read_bytes()
    result = ingest(raw, emitter="e")
    assert not result.accepted
    assert [(e.pointer, e.rule) for e in result.errors] == [("/schema_version", "CT-0.1 §5.7.4")]


def _rule_at(raw: bytes, pointer: str | None = None) -> tuple[str, str]:
    result = ingest(raw, emitter="e")
    assert not result.accepted and result.errors and not result.events
    err = result.errors[0] if pointer is None else next(e for e in result.errors if e.pointer == pointer)
    return err.pointer, err.rule


def _session_with(**event: Any) -> bytes:
    doc = copy.deepcopy(SESSION)
    doc["events"][1].update(event)
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    ("raw", "pointer", "rule"),
    [
        (orjson.dumps(SESSION)[:-40], "", "json:syntax"),  # truncated
        (b"\xff\xfe{}", "", "json:syntax"),  # not UTF-8
        (b"", "", "json:syntax"),
        (b"[" * 5000 + b"]" * 5000, "", "json:syntax"),  # nested past orjson's depth limit
        (b"[1, 2]", "", "jsonschema:type"),
        (b'"text"', "", "jsonschema:type"),
        (_session_with(timestamp="2026-02-30T10:00:00Z"), "/events/1/timestamp", "jsonschema:format"),
        (_session_with(timestamp="yesterday"), "/events/1/timestamp", "jsonschema:format"),
        (_session_with(id="not-a-uuid"), "/events/1/id", "jsonschema:format"),
        (_session_with(content_url=42), "/events/1/content_url", "jsonschema:type"),
        (_session_with(content_url="not a url"), "/events/1/content_url", "jsonschema:format"),
        (_session_with(data=[]), "/events/1/data", "jsonschema:type"),
        (_session_with(source_role=None), "/events/1/source_role", "jsonschema:type"),
        (
            _session_with(data={"response_status": 700}),
            "/events/1/data/response_status",
            "jsonschema:maximum",
        ),
        (orjson.dumps({**SESSION, "session_id": "123"}), "/session_id", "jsonschema:format"),
        (orjson.dumps({**SESSION, "document_type": "sesion"}), "/document_type", "CT-0.1 §7.1"),
    ],
)
def test_bad_input_is_a_clear_rejection(raw: bytes, pointer: str, rule: str) -> None:
    assert _rule_at(raw, pointer) == (pointer, rule)


def test_ten_megabyte_document_is_rejected_by_size() -> None:
    doc = copy.deepcopy(SESSION)
    doc["padding"] = "x" * (10 * 1024 * 1024)
    assert _rule_at(orjson.dumps(doc)) == ("", "ctpipe:size")


def test_deep_junk_inside_data_is_kept_or_rejected_never_raises() -> None:
    # Deeper than orjson re-encodes (254 levels), shallower than it decodes (1024).
    deep = b'{"d":' * 600 + b'"leaf"' + b"}" * 600
    raw = _session_with(data={"junk": "HOLE"}).replace(b'"HOLE"', deep)
    result = ingest(raw, emitter="e")
    assert not result.accepted and not result.events
    assert result.errors[0].rule == "ctpipe:depth"


def test_one_bad_event_rejects_the_whole_document() -> None:
    doc = copy.deepcopy(SESSION)
    del doc["events"][4]["timestamp"]
    result = ingest(orjson.dumps(doc), emitter="e")
    assert not result.accepted and not result.events
    assert result.errors[0].pointer == "/events/4/timestamp"
    assert "/events/4/timestamp" in result.reason
