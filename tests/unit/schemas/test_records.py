"""The wire records between stages: fast encoder parity, packing."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from schemas.canonical import SessionHeader
from schemas.codec import dumps
from schemas.funnel import FunnelCounts, FunnelKey
from schemas.normalize import ingest
from schemas.records import (
    CorrelatedRetrieval,
    FunnelDelta,
    Observation,
    SessionRecord,
    construct,
    encode,
    encode_event,
    encode_header,
    pack,
    unpack,
)
from tests.unit.schemas._spec import VALID
from tests.unit.schemas.strategies import ct_document, mutated, oa_session

T1 = datetime(2026, 1, 15, 8, 30, 13, 443000, tzinfo=UTC)
T2 = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


def _pydantic(record: object) -> bytes:
    return dumps(record.model_dump(mode="json"))  # type: ignore[attr-defined]


def _records() -> list[object]:
    key = FunnelKey(T2, "example.com", "https://example.com/a", "agent-1", "https://a.example/m", "agent")
    delta = FunnelDelta.build(
        key,
        FunnelCounts({"cited": 2, "cited_other": 2, "retrieved": -1}, {"USD": -1250}),
        scope="session:s:r1",
    )
    obs = Observation.model_construct(
        event_id="e1", source_role="edge", emitter="cdn:x", timestamp=T1, content_url="https://example.com/a?x=1",
        canonical_url="https://example.com/a", content_id=None, session_id=None, agent_id=None,
    )  # fmt: skip
    retrieval = CorrelatedRetrieval.model_construct(
        retrieval_id="r" * 32, content_telemetry_id="0b6f2f1e-1111-4222-8333-444455556666",
        canonical_url="https://example.com/a", content_id="cid-1", owner_domain="example.com",
        status="corroborated", observer_roles=("agent", "edge"), agent_session_id="s", agent_id="agent-1",
        first_seen=T1, last_seen=T2, observations=(obs, obs),
    )  # fmt: skip
    session = SessionRecord(
        session_id="s", revision=1, agent_id="agent-1", content_scope="", started_at=T1, ended_at=None,
        closed_by="ended", event_count=9, late_events=1, duplicate_events=0, turns=2, grounded=1, cited=2,
        displayed=1, engaged=0, cited_without_grounded=1, displayed_without_cited=0,
        displayed_without_grounded=1, user_segments=("a", "b"), source_formats=("content-telemetry",),
    )  # fmt: skip
    return [delta, obs, retrieval, session]


@pytest.mark.parametrize("record", _records(), ids=lambda r: type(r).__name__)
def test_encode_is_byte_identical_to_pydantic_serialisation(record: object) -> None:
    assert encode(record) == _pydantic(record)  # type: ignore[arg-type]


def test_constructed_records_validate_back_to_equal_models() -> None:
    for record in _records():
        model = type(record)
        assert model.model_validate(orjson.loads(encode(record))) == model.model_validate(  # type: ignore[attr-defined]
            record.model_dump(mode="json")  # type: ignore[attr-defined]
        )


def test_build_rejects_unknown_measures() -> None:
    key = FunnelKey(T2, "", "k", "", "", "agent")
    with pytest.raises(ValueError, match="unknown funnel measures"):
        FunnelDelta.build(key, FunnelCounts({"nope": 1}), scope="x")


@given(
    st.lists(st.binary(min_size=0, max_size=50).map(lambda b: dumps(b.hex())), max_size=60),
    st.integers(8, 200),
)
def test_pack_keeps_every_record_in_order_within_the_size_limit(items: list[bytes], limit: int) -> None:
    messages = pack(items, max_bytes=limit)
    assert [r for m in messages for r in unpack(m)] == [orjson.loads(i) for i in items]
    for m in messages:
        assert len(m) <= limit or len(unpack(m)) == 1  # a record larger than the limit travels alone
    assert (messages == []) == (items == [])


def test_unpack_takes_a_single_record_too() -> None:
    assert unpack(b'{"a": 1}') == [{"a": 1}]
    assert unpack(b"[1, 2]") == [1, 2]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(ct_document(), oa_session(), mutated(ct_document())))
def test_encode_event_is_byte_identical_to_pydantic_without_defaults(doc: dict[str, object]) -> None:
    result = ingest(orjson.dumps(doc), emitter="sdk:test")
    assert len(result.wire) == len(result.events)
    for event, wire in zip(result.events, result.wire, strict=True):
        expected = event.model_dump_json(exclude_defaults=True).encode()
        assert encode_event(event) == expected
        assert dumps(wire) == expected  # the wire dict ingest builds is the same encoding
    assert (result.session is None) == (result.session_wire is None)
    if result.session is not None:
        expected = result.session.model_dump_json(exclude_defaults=True).encode()
        assert encode_header(result.session) == expected
        assert dumps(result.session_wire) == expected  # the header wire dict normalize sends
        # every wire value already has its field's type (the hot path never validates it)
        assert SessionHeader.model_validate(result.session_wire, strict=True) == result.session


def test_encode_event_matches_pydantic_on_the_conformance_fixtures() -> None:
    seen = 0
    for path in VALID:
        result = ingest(path.read_bytes(), emitter="sdk:test")
        assert len(result.wire) == len(result.events)
        for event, wire in zip(result.events, result.wire, strict=True):
            expected = event.model_dump_json(exclude_defaults=True).encode()
            assert encode_event(event) == expected
            assert dumps(wire) == expected
            seen += 1
        if result.session is not None:
            assert (
                dumps(result.session_wire) == result.session.model_dump_json(exclude_defaults=True).encode()
            )
            assert SessionHeader.model_validate(result.session_wire, strict=True) == result.session
    assert seen > 20


def test_construct_equals_model_construct() -> None:
    for record in _records():
        cls = type(record)
        values = dict(record.__dict__)  # type: ignore[attr-defined]
        built = construct(cls, **values)  # type: ignore[type-var]
        assert built == cls.model_construct(**values)  # type: ignore[attr-defined]
        assert list(built.__dict__) == list(cls.model_fields)  # type: ignore[attr-defined]
        assert built.model_fields_set == set(cls.model_fields)  # type: ignore[attr-defined]
        assert encode(built) == _pydantic(built)
    partial = construct(Observation, event_id="e1")  # a field missing: model_construct's defaults
    assert partial == Observation.model_construct(event_id="e1")


def test_session_header_keeps_values_that_look_like_defaults() -> None:
    """A string field sent as "{}" or "" is a value, not the default (None): kept in the header
    wire dict and the model; empty objects and arrays are the defaults and are left out."""
    oa = {
        "schema_version": "0.4",
        "session_id": "550e8400-e29b-41d4-a716-446655440000",
        "started_at": "2026-01-15T10:30:00Z",
        "manifest_ref": "{}",
        "external_session_id": "",
        "prior_session_ids": [],
        "user_context": {"external_id": "{}", "segments": [], "attributes": {}},
        "outcome": {"type": "browse", "value_amount": 0, "currency": "EUR", "metadata": {}, "products": []},
        "events": [],
    }
    result = ingest(orjson.dumps(oa), emitter="sdk:test")
    assert result.accepted, result.errors
    header = result.session
    assert header is not None and result.session_wire is not None
    assert (header.manifest_ref, header.external_session_id) == ("{}", "")
    assert (header.user_external_id, header.outcome_type) == ("{}", "browse")
    assert (header.outcome_value_minor, header.outcome_currency) == (0, "EUR")
    assert header.prior_session_ids == () and header.user_segments == () and header.outcome_products == ()
    assert header.user_attributes_json == "{}" and header.outcome_metadata_json == "{}"
    for absent in ("prior_session_ids", "user_segments", "user_attributes_json", "outcome_metadata_json"):
        assert absent not in result.session_wire
    assert dumps(result.session_wire) == header.model_dump_json(exclude_defaults=True).encode()
    assert SessionHeader.model_validate(result.session_wire, strict=True) == header
