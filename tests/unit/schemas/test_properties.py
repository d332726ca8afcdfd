"""Property tests: nothing raises out of decode/validate/normalise; valid documents keep their
event count and get the same ids twice."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings, strategies as st

from schemas.normalize import ingest
from schemas.validate import check_bytes
from tests.unit.schemas.strategies import JSON, ct_document, mutated, oa_session

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    result = ingest(raw, emitter="fuzz")
    assert result.accepted or result.errors
    check_bytes(raw)


@FAST
@given(JSON)
def test_arbitrary_json_never_raises(doc: Any) -> None:
    raw = orjson.dumps(doc)
    result = ingest(raw, emitter="fuzz")
    assert result.accepted or (result.errors and all(e.rule and e.message for e in result.errors))
    verdict = check_bytes(raw)
    assert verdict.accepted == result.accepted or verdict.kind.value == "oa_session_start"


@FAST
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "document_type",
                "schema_version",
                "events",
                "event",
                "session_id",
                "started_at",
                "outcome",
                "roles",
                "$schema",
            ]
        ),
        JSON,
        max_size=6,
    )
)
def test_document_shaped_junk_never_raises(doc: dict[str, Any]) -> None:
    result = ingest(orjson.dumps(doc), emitter="fuzz")
    assert result.accepted or result.errors


@FAST
@given(mutated(ct_document()) | mutated(oa_session()))
def test_mutated_documents_never_raise(doc: dict[str, Any]) -> None:
    result = ingest(orjson.dumps(doc), emitter="fuzz")
    assert result.accepted or result.errors


def _count(doc: dict[str, Any]) -> int:
    return 1 if "event" in doc else len(doc.get("events", []))


@FAST
@given(ct_document() | oa_session())
def test_valid_documents_keep_event_count_and_ids(doc: dict[str, Any]) -> None:
    raw = orjson.dumps(doc)
    first = ingest(raw, emitter="prop")
    assert first.accepted, first.errors
    assert len(first.events) == _count(doc)
    second = ingest(raw, emitter="prop")
    assert [e.event_id for e in first.events] == [e.event_id for e in second.events]
    assert first.events == second.events
