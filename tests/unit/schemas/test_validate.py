"""The schema layer (jsonschema-rs on the shipped schemas): formats, OA HTTP bodies, how errors
are reported, and inputs it cannot take."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.canonical import DocKind
from schemas.validate import check

UUID = "550e8400-e29b-41d4-a716-446655440000"
SESSION: dict[str, Any] = {"schema_version": "0.1", "session_id": UUID, "started_at": "2026-01-15T10:30:00Z"}


def _event(**fields: Any) -> dict[str, Any]:
    return {**SESSION, "events": [{"type": "turn_started", "timestamp": "2026-01-15T10:30:00Z", **fields}]}


def _errors(doc: Any, source: str | None = None) -> list[tuple[str, str]]:
    return [(e.pointer, e.rule) for e in check(doc, source).errors]


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("2026-01-15T10:30:00Z", True),
        ("2026-01-15t10:30:00.5+01:00", True),  # RFC 3339's ABNF is case-insensitive
        ("2026-12-31T23:59:60Z", True),  # leap second
        ("2026-02-30T10:30:00Z", False),
        ("2026-01-15 10:30:00Z", False),
        ("2026-01-15T10:30:00", False),  # no offset
        ("2026-01-15T10:30:00+24:00", False),
        ("202,-02-29T00:00:00Z", False),  # jsonschema-rs's own date-time lets this through
        ("0000-01-15T10:30:00Z", False),  # RFC 3339, but no Python datetime can hold it
        # ... nor these in UTC (they used to raise OverflowError: an "internal error" rejection)
        ("9999-12-31T23:59:59-01:00", False),
        ("0001-01-01T00:00:00+01:00", False),
    ],
)
def test_date_time_format(value: str, valid: bool) -> None:
    assert _errors(_event(timestamp=value)) == (
        [] if valid else [("/events/0/timestamp", "jsonschema:format")]
    )


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("https://example.com/a?b=c#d", True),
        ("urn:isbn:0451450523", True),
        ("https://example.com/%41", True),
        ("not a uri", False),
        ("https://example.com/é", False),  # RFC 3986: non-ASCII must be percent-encoded
        ("https://example.com/%zz", False),
        ("https://example.com/?a[0]=1", False),  # brackets belong to IP-literal hosts only
        ("//example.com/a", False),  # relative reference, not a URI
    ],
)
def test_uri_format(value: str, valid: bool) -> None:
    doc = _event(type="content_retrieved", content_url=value)
    assert _errors(doc) == ([] if valid else [("/events/0/content_url", "jsonschema:format")])


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (UUID, True),
        (UUID.upper(), True),
        (UUID[:-1], False),
        (UUID.replace("-", ""), False),
        ("{" + UUID + "}", False),
        ("urn:uuid:" + UUID, False),
    ],
)
def test_uuid_format(value: str, valid: bool) -> None:
    assert _errors({**SESSION, "session_id": value}) == (
        [] if valid else [("/session_id", "jsonschema:format")]
    )


def test_a_wrong_type_is_one_error_not_also_an_enum_or_const_error() -> None:
    verdict = check({**_event(type=5), "document_type": 7})
    assert [(e.pointer, e.rule, e.message) for e in verdict.errors] == [
        (
            "/document_type",
            "CT-0.1 §7.1",
            "unknown document_type 7: expected 'session', 'event' or 'event_batch'",
        )
    ]
    verdict = check(_event(type=5))
    assert [(e.pointer, e.rule, e.message) for e in verdict.errors] == [
        ("/events/0/type", "jsonschema:type", "type must be string, got integer")
    ]


def test_nullable_definitions_report_the_definitions_own_errors() -> None:
    # The schemas spell "nullable" as oneOf [definition, null]: report what is wrong inside.
    verdict = check(_event(turn={"privacy_level": "secret", "query_tokens": -1}))
    assert [(e.pointer, e.rule) for e in verdict.errors] == [
        ("/events/0/turn/privacy_level", "jsonschema:enum"),
        ("/events/0/turn/query_tokens", "jsonschema:minimum"),
    ]
    verdict = check(_event(turn=5))
    assert [(e.pointer, e.rule, e.message) for e in verdict.errors] == [
        ("/events/0/turn", "jsonschema:type", "turn must be object or null, got integer")
    ]


def test_every_error_is_reported_with_a_message_naming_the_field() -> None:
    doc = {
        **SESSION,
        "ended_at": 4,
        "events": [
            {
                "type": "content_cited",
                "timestamp": "2026-01-15T10:30:00Z",
                "content_url": "https://a.example/x",
                "data": {"position": "top", "excerpt_tokens": -1, "content_hash": "md5:x"},
            }
        ],
    }
    verdict = check(doc)
    found = {e.pointer: (e.rule, e.message) for e in verdict.errors}
    assert found == {
        "/ended_at": ("jsonschema:type", "ended_at must be string or null, got integer"),
        "/events/0/data/position": (
            "jsonschema:enum",
            "position 'top' is not one of: primary, supporting, mentioned, unclassified",
        ),
        "/events/0/data/excerpt_tokens": (
            "jsonschema:minimum",
            "excerpt_tokens -1 is less than the minimum 0",
        ),
        "/events/0/data/content_hash": (
            "jsonschema:pattern",
            "content_hash 'md5:x' does not match ^sha256:[a-f0-9]{64}$",
        ),
    }


def test_oa_sdk_version_is_validated_as_0_4_without_touching_the_document() -> None:
    doc = {**SESSION, "initiator_type": "robot"}
    verdict = check(doc)
    assert verdict.kind is DocKind.OA_SESSION
    assert _errors(doc) == [("/initiator_type", "jsonschema:enum")]
    assert doc["schema_version"] == "0.1"
    assert _errors({**doc, "schema_version": "0.3"}) == [("/schema_version", "OA-0.4 §8")]


@pytest.mark.parametrize(
    ("source", "doc", "errors"),
    [
        ("/session/start", {"initiator_type": "user", "user_context": {"segments": ["a"]}}, []),
        (
            "/session/start",
            {"initiator_type": "robot", "started_at": "now"},
            ["/initiator_type", "/started_at"],
        ),
        (
            "/events",
            {"session_id": UUID, "events": [{"type": "cart_add", "timestamp": "2026-01-15T10:30:00Z"}]},
            [],
        ),
        ("/events", {"session_id": UUID, "events": [{"type": "cart_add"}]}, ["/events/0/timestamp"]),
        ("/events", {"events": []}, ["/session_id"]),
        ("/session/end", {"session_id": UUID, "outcome": {"type": "browse"}, "ended_at": None}, []),
        (
            "/session/end",
            {"session_id": UUID, "outcome": {"type": "sale", "currency": "eur"}},
            ["/outcome/type", "/outcome/currency"],
        ),
        ("/session/end", {"session_id": UUID}, ["/outcome"]),
    ],
)
def test_oa_http_bodies(source: str, doc: dict[str, Any], errors: list[str]) -> None:
    assert [p for p, _ in _errors(doc, source)] == errors


def _deep(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [300, 100_000])
def test_values_nested_past_the_validators_limit_are_a_violation_not_an_exception(depth: int) -> None:
    assert _errors(_event(turn=_deep(depth))) == [("", "ctpipe:depth")]
    assert _errors({**SESSION, "document_type": _deep(depth)}) == [("/document_type", "CT-0.1 §7.1")]
    # Where the schema does not look (``data`` is open), depth is no concern of validation.
    assert _errors(_event(data={"junk": _deep(depth)})) == []


def test_python_values_json_cannot_hold_are_a_violation_not_an_exception() -> None:
    assert _errors({**SESSION, "agent_id": {1, 2}}) == [("", "ctpipe:not-json")]
