"""Parity: the fast path (jsonschema-rs) and the jsonschema library agree on schema validity."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings

from schemas.reference import is_schema_valid, schema_errors
from schemas.validate import check
from tests.unit.schemas.strategies import ct_document, mutated, oa_session


def _agree(doc: dict[str, Any]) -> None:
    verdict = check(doc)
    if verdict.kind.value in ("unknown", "oa_session_start", "oa_events", "oa_session_end"):
        return  # no spec schema to compare with (unknown document_type, OA HTTP bodies)
    fast = verdict.schema_valid
    slow = is_schema_valid(doc, verdict.kind)
    assert fast == slow, (doc, verdict.errors, schema_errors(doc, verdict.kind))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(ct_document()))
def test_ct_parity(doc: dict[str, Any]) -> None:
    _agree(doc)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(oa_session()))
def test_oa_parity(doc: dict[str, Any]) -> None:
    _agree(doc)


@settings(max_examples=100, deadline=None)
@given(ct_document())
def test_valid_documents_are_valid_for_both(doc: dict[str, Any]) -> None:
    assert check(doc).valid
    _agree(doc)
