"""processors.normalize: RAW message -> EVENTS envelopes, RETRIEVALS, DLQ; the circuit breaker."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from processors import normalize
from processors.aggregate import ts_us
from processors.normalize import Breaker, BreakerTripped, normalize_message
from schemas import dlq
from schemas.codec import dumps, loads
from schemas.normalize import ingest
from schemas.owners import OwnerRegistry
from schemas.records import encode_event, observation_fields
from tests.unit.schemas.strategies import ct_document, oa_session

SID = "550e8400-e29b-41d4-a716-446655440000"
CTI = "770e8400-e29b-41d4-a716-446655440300"
URL = "https://www.wirecutter.com/reviews/best-wireless-headphones"


def session_doc(**extra: object) -> bytes:
    doc = {
        "schema_version": "0.1",
        "session_id": SID,
        "agent_id": "shopping-assistant-v2",
        "content_scope": "electronics-reviews",
        "started_at": "2026-01-15T10:30:00Z",
        "ended_at": "2026-01-15T10:35:00Z",
        "events": [
            {"type": "turn_started", "timestamp": "2026-01-15T10:30:00Z", "turn_id": "1"},
            {
                "type": "content_retrieved",
                "timestamp": "2026-01-15T10:30:01Z",
                "source_role": "agent",
                "content_telemetry_id": CTI,
                "content_url": URL,
            },
            {"type": "content_retrieved", "timestamp": "2026-01-15T10:30:01Z", "content_url": URL + "?p=2"},
            {
                "type": "content_cited",
                "timestamp": "2026-01-15T10:30:05Z",
                "content_url": URL,
                "data": {"citation_type": "paraphrase"},
            },
        ],
        **extra,
    }
    return dumps(doc)


def edge_event(cti: str | None = CTI) -> bytes:
    ev: dict[str, object] = {
        "type": "content_retrieved",
        "timestamp": "2026-01-15T10:30:01Z",
        "source_role": "edge",
        "content_url": URL,
        "data": {"bot_category": "inference"},
    }
    if cti:
        ev["content_telemetry_id"] = cti
    return dumps({"document_type": "event", "schema_version": "0.1", "event": ev})


def test_session_document_becomes_one_envelope_and_its_retrievals() -> None:
    out = normalize_message(session_doc(), headers=[("ctpipe-emitter", b"agent-sdk")])
    assert out.dead_letter is None and out.event_count == 4
    assert len(out.events) == 1
    key, value = out.events[0]
    assert key == SID.encode()
    header, events = normalize.decode_envelope(value)
    assert loads(value)["s"] == SID
    assert header is not None and header["ended_at"] == "2026-01-15T10:35:00Z"
    assert header["agent_id"] == "shopping-assistant-v2" and header["emitter"] == "agent-sdk"
    assert [e["event_type"] for e in events] == ["turn_started", "retrieved", "retrieved", "cited"]
    assert all(e["emitter"] == "agent-sdk" and e["session_id"] == SID for e in events)
    # retrievals: keyed by content_telemetry_id, else their own event id
    assert [k for k, _ in out.retrievals] == [CTI.encode(), events[2]["event_id"].encode()]
    # each as the observation record correlate reads (schemas.records.encode_observation)
    ev = events[1]
    assert loads(out.retrievals[0][1]) == [
        "r1",
        ev["event_id"],
        ev.get("source_role"),
        "agent-sdk",
        ts_us(ev["timestamp"]),
        ev["canonical_url"],
        ev.get("content_id"),
        SID,
        "shopping-assistant-v2",
        ev.get("content_scope"),
        ev["owner_domain"],
        ev["content_url"],
        CTI,
    ]
    assert loads(out.retrievals[1][1])[1] == events[2]["event_id"] and loads(out.retrievals[1][1])[12] is None


def test_sessionless_edge_event_keyed_by_telemetry_id_and_marked() -> None:
    out = normalize_message(edge_event())
    assert [k for k, _ in out.events] == [CTI.encode()]
    assert out.events[0][1].startswith(normalize.SESSIONLESS_PREFIX)
    header, events = normalize.decode_envelope(out.events[0][1])
    assert header is None and events[0]["source_role"] == "edge" and events[0]["emitter"] == "unknown"
    assert [k for k, _ in out.retrievals] == [CTI.encode()]
    no_id = normalize_message(edge_event(None))
    eid = observation_fields(no_id.retrievals[0][1])["event_id"]
    assert [k for k, _ in no_id.events] == [eid.encode()] == [k for k, _ in no_id.retrievals]


def test_source_hint_header_reaches_ingest() -> None:
    body = dumps({"session_id": SID, "outcome": {"type": "conversion", "value_amount": 100}})
    out = normalize_message(body, headers={"ctpipe-source": b"/session/end", "ctpipe-emitter": b"oa"})
    assert out.dead_letter is None
    header, events = normalize.decode_envelope(out.events[0][1])
    assert events == [] and header is not None
    assert header["source_kind"] == "oa_session_end" and header["outcome_value_minor"] == 100


def test_invalid_document_becomes_a_dead_letter_with_its_origin() -> None:
    raw = b'{"schema_version":"0.1","session_id":"nope","events":"x"}'
    out = normalize_message(
        raw,
        key=b"k1",
        headers=[("ctpipe-emitter", b"bad-sdk")],
        topic="ns.ctpipe.raw",
        partition=2,
        offset=41,
    )
    assert out.events == [] and out.retrievals == [] and out.dead_letter is not None
    letter = dlq.decode(out.dead_letter)
    assert letter.original == raw and letter.key == b"k1"
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == ("ns.ctpipe.raw", 2, 41)
    assert letter.stage == "normalize" and letter.emitter == "bad-sdk"
    assert letter.reason == out.reason and letter.errors
    assert normalize_message(None).dead_letter is not None  # a null value too


def test_large_documents_are_split_into_envelopes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(normalize, "ENVELOPE_MAX_BYTES", 1500)
    out = normalize_message(session_doc())
    assert len(out.events) > 1
    parts = [normalize.decode_envelope(v) for _, v in out.events]
    assert parts[0][0] is not None and all(h is None for h, _ in parts[1:])
    assert sum(len(e) for _, e in parts) == 4
    assert {k for k, _ in out.events} == {SID.encode()}


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    out = normalize_message(raw, headers=[("ctpipe-emitter", raw[:5])])
    if out.dead_letter is not None:
        assert out.events == [] and out.retrievals == []
        assert dlq.decode(out.dead_letter).original == raw


def test_breaker_trips_on_ratio_after_min_invalid() -> None:
    b = Breaker(max_ratio=0.5, window=100, min_invalid=10)
    for _ in range(9):
        b.record(False, "bad")  # 9 invalid of 9: below min_invalid
    with pytest.raises(BreakerTripped, match=r"10 of the last 10 .*100%.*bad"):
        b.record(False, "bad")


def test_breaker_tolerates_half_and_rolls_its_window() -> None:
    b = Breaker(max_ratio=0.5, window=40, min_invalid=10)
    for i in range(400):
        b.record(i % 2 == 0, "x")  # exactly 50%: not more than the limit
    assert b.ratio == 0.5
    for _ in range(40):
        b.record(True)
    for _ in range(20):
        b.record(False, "y")  # 20 of the last 40
    with pytest.raises(BreakerTripped):
        b.record(False, "y")  # 21 of 40


# --- content owner resolution by content_id prefix (CT 0.1 section 7.3) -----------------------------
OWNERS = OwnerRegistry.from_owners(
    [("wirecutter.com", ["wirecutter:"]), ("ft.com", ["ft:"]), ("nytimes.com", ["wirecutter:archive:"])]
)


def cached_session_doc() -> bytes:
    """CT B.3-like: a cached grounding without URL, a URL event with a foreign content_id, others."""
    events: list[dict[str, object]] = [
        {
            "type": "content_grounded",
            "timestamp": "2026-03-28T09:00:00Z",
            "content_id": "ft:abc123",
            "data": {"scope": "session", "cached": True},
        },
        {  # URL owner wins over a registered content_id prefix of another owner
            "type": "content_cited",
            "timestamp": "2026-03-28T09:00:05Z",
            "content_url": URL,
            "content_id": "ft:abc123",
        },
        {"type": "content_cited", "timestamp": "2026-03-28T09:00:06Z", "content_id": "wirecutter:archive:9"},
        {"type": "content_displayed", "timestamp": "2026-03-28T09:00:07Z", "content_id": "wirecutter:x"},
        {"type": "content_displayed", "timestamp": "2026-03-28T09:00:08Z", "content_id": "unknown:1"},
        {  # a retrieval with no URL: RETRIEVALS gets the resolved owner too
            "type": "content_retrieved",
            "timestamp": "2026-03-28T09:00:09Z",
            "source_role": "agent",
            "content_telemetry_id": CTI,
            "content_id": "ft:abc123",
        },
    ]
    return dumps(
        {
            "schema_version": "0.1",
            "session_id": SID,
            "agent_id": "copilot-v3",
            "started_at": "2026-03-28T09:00:00Z",
            "events": events,
        }
    )


def _owners_of(out: normalize.Normalized) -> list[str | None]:
    _, events = normalize.decode_envelope(out.events[0][1])
    return [e.get("owner_domain") for e in events]


def test_without_a_registry_content_id_only_events_have_no_owner() -> None:
    out = normalize_message(cached_session_doc())
    assert _owners_of(out) == [None, "wirecutter.com", None, None, None, None]
    assert out.owners_resolved == 0
    assert normalize_message(cached_session_doc(), owners=OwnerRegistry()).events == out.events


def test_registry_resolves_content_id_only_events_and_never_overrides_url_owners() -> None:
    plain = normalize_message(cached_session_doc())
    out = normalize_message(cached_session_doc(), owners=OWNERS)
    assert _owners_of(out) == ["ft.com", "wirecutter.com", "nytimes.com", "wirecutter.com", None, "ft.com"]
    assert out.owners_resolved == 4 and out.event_count == plain.event_count == 6
    ((_, retrieval),) = out.retrievals
    assert observation_fields(retrieval)["owner_domain"] == "ft.com"
    # only owner_domain changed: same keys, same event ids, same everything else
    assert [k for k, _ in out.events] == [k for k, _ in plain.events]
    _, with_reg = normalize.decode_envelope(out.events[0][1])
    _, without = normalize.decode_envelope(plain.events[0][1])
    for a, b in zip(with_reg, without, strict=True):
        assert {k: v for k, v in a.items() if k != "owner_domain"} == {
            k: v for k, v in b.items() if k != "owner_domain"
        }


def test_registry_applies_to_sessionless_events_and_keeps_url_owners() -> None:
    ev = {
        "type": "content_retrieved",
        "timestamp": "2026-01-15T10:30:01Z",
        "source_role": "index",
        "content_telemetry_id": CTI,
        "content_id": "wirecutter:best-wireless-headphones-2026",
    }
    doc = dumps({"document_type": "event", "schema_version": "0.1", "event": ev})
    out = normalize_message(doc, owners=OWNERS)
    assert out.events[0][1].startswith(normalize.SESSIONLESS_PREFIX)
    assert _owners_of(out) == ["wirecutter.com"]
    assert observation_fields(out.retrievals[0][1])["owner_domain"] == "wirecutter.com"
    edge = normalize_message(edge_event(), owners=OWNERS)  # URL only: untouched
    assert edge.owners_resolved == 0 and edge.events == normalize_message(edge_event()).events


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_with_a_registry(raw: bytes) -> None:
    out = normalize_message(raw, owners=OWNERS)
    assert (out.dead_letter is None) or (out.events == [] and out.retrievals == [])


@settings(max_examples=200, deadline=None)
@given(st.one_of(ct_document(), oa_session()), st.integers(1, 6))
def test_wire_owner_resolution_encodes_as_the_resolved_models(doc: dict[str, object], cut: int) -> None:
    """``resolve_wire_owners`` (wire dicts) == the models' own resolution (``model_copy`` with
    the owner, encoded): the same events resolved, byte for byte the same JSON."""
    result = ingest(dumps(doc), emitter="sdk:test")
    ids = sorted({w["content_id"] for w in result.wire if w.get("content_id")})
    # a registry over prefixes of the document's own content ids (so some resolve, some do not)
    prefixes: dict[str, str] = {}
    for i, cid in enumerate(ids[::2]):
        if cid[:cut].strip():
            prefixes.setdefault(cid[:cut], f"owner{i}.com")
    registry = OwnerRegistry.from_owners([(d, [p]) for p, d in prefixes.items()])
    wire, resolved = normalize.resolve_wire_owners(result.wire, registry)
    expected, n = [], 0
    for ev in result.events:
        domain = registry.resolve(ev.content_id) if ev.content_id and not ev.owner_domain else None
        n += domain is not None
        expected.append(encode_event(ev.model_copy(update={"owner_domain": domain}) if domain else ev))
    assert resolved == n
    assert [dumps(w) for w in wire] == expected
    assert (wire is result.wire) == (n == 0)
