"""The CT 0.1 conformance fixtures and worked examples, classified for the right reasons."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from schemas.canonical import DocKind
from schemas.normalize import ingest
from schemas.validate import check_bytes
from tests.unit.schemas._spec import CT01, INVALID, OA04, VALID, json_blocks

# fixture -> (pointer, rule) of the reason it must fail for (its _test_description says why)
EXPECTED: dict[str, tuple[str, str]] = {
    "batch-missing-schema-version.json": ("/schema_version", "jsonschema:required"),
    "content-event-missing-identifier.json": ("/events/0", "CT-0.1 §5.7.5"),
    "invalid-event-type.json": ("/events/0/type", "jsonschema:enum"),
    "invalid-privacy-level.json": ("/events/0/turn/privacy_level", "jsonschema:enum"),
    "invalid-schema-version.json": ("/schema_version", "CT-0.1 §5.7.4"),
    "manifest-bad-conformance-level.json": ("/telemetry/conformance_level", "jsonschema:enum"),
    "manifest-bad-role.json": ("/roles/0", "jsonschema:enum"),
    "manifest-duplicate-key-id.json": ("/keys/1/id", "CT-0.1 §8.7"),
    "manifest-missing-key-publickey.json": ("/keys/0/publicKey", "jsonschema:required"),
    "missing-event-timestamp.json": ("/events/0/timestamp", "jsonschema:required"),
    "missing-privacy-level.json": ("/events/0/turn/privacy_level", "jsonschema:required"),
    "missing-schema-version.json": ("/schema_version", "jsonschema:required"),
    "missing-session-id.json": ("/session_id", "jsonschema:required"),
    "privacy-violation-ad-rendered-at-minimal.json": ("/events/0/turn/ad_rendered", "CT-0.1 §5.5"),
    "privacy-violation-query-at-minimal.json": ("/events/0/turn/query_text", "CT-0.1 §5.5"),
    "standalone-missing-document-type.json": ("/session_id", "jsonschema:required"),
    "standalone-missing-session-and-ctx-token.json": ("/session_id", "CT-0.1 §5.7.5"),
}


def test_fixture_suite_is_complete() -> None:
    assert len(VALID) == 17
    assert {p.name for p in INVALID} == set(EXPECTED)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_fixture_passes(path: Path) -> None:
    verdict = check_bytes(path.read_bytes())
    assert verdict.valid, verdict.errors
    expected_kind = (
        DocKind.MANIFEST
        if path.name.startswith("manifest")
        else DocKind.EVENT_BATCH
        if path.name.startswith("event-batch")
        else DocKind.EVENT
        if path.name.startswith("event-standalone")
        else DocKind.SESSION
    )
    assert verdict.kind is expected_kind
    assert verdict.version == "0.1"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_fixture_fails_for_the_right_reason(path: Path) -> None:
    verdict = check_bytes(path.read_bytes())
    assert not verdict.valid
    pointer, rule = EXPECTED[path.name]
    assert (pointer, rule) in {(e.pointer, e.rule) for e in verdict.errors}, verdict.errors


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_ingestion_rejects_invalid_fixtures_except_privacy_violations(path: Path) -> None:
    result = ingest(path.read_bytes(), emitter="fixtures")
    if path.name.startswith("privacy-violation"):
        # CT 0.1 section 5.7.5: strip the offending turn fields and accept the rest.
        assert result.accepted
        assert [v.pointer for v in result.stripped] == [EXPECTED[path.name][0]]
        field = EXPECTED[path.name][0].rsplit("/", 1)[1]
        event = result.events[0]
        assert field not in orjson.loads(event.turn_json or "{}")
        assert any(field in note and "§5.5" in note for note in event.notes)
    else:
        assert not result.accepted
        assert result.errors and not result.events


def _spec_documents(markdown: Path) -> list[tuple[object, DocKind]]:
    docs: list[tuple[object, DocKind]] = []
    for block in json_blocks(markdown):
        if not isinstance(block, dict) or "schema_version" not in block:
            continue  # fragments (bare events, turns, snippets) are not documents
        if block.get("document_type") == "event":
            docs.append((block, DocKind.EVENT))
        elif block.get("document_type") == "event_batch":
            docs.append((block, DocKind.EVENT_BATCH))
        elif "roles" in block:
            docs.append((block, DocKind.MANIFEST))
        elif "session_id" in block and "started_at" in block:
            docs.append((block, DocKind.OA_SESSION if "outcome" in block else DocKind.SESSION))
    return docs


def test_ct_worked_examples_validate_as_their_kind() -> None:
    docs = _spec_documents(CT01 / "SPECIFICATION.md")
    kinds = sorted(k.value for _, k in docs)
    # B.1, B.3 sessions; 7.1 standalone event and batch; 8.8 four manifests.
    assert kinds == [
        "event",
        "event_batch",
        "manifest",
        "manifest",
        "manifest",
        "manifest",
        "session",
        "session",
    ]
    for doc, kind in docs:
        verdict = check_bytes(orjson.dumps(doc))
        assert verdict.kind is kind
        assert verdict.valid, (doc, verdict.errors)


def test_oa_worked_examples_validate_and_normalise() -> None:
    docs = _spec_documents(OA04 / "SPECIFICATION.md")
    assert len(docs) == 2
    for doc, _ in docs:
        raw = orjson.dumps(doc)
        verdict = check_bytes(raw)
        assert verdict.kind is DocKind.OA_SESSION and verdict.valid, verdict.errors
        result = ingest(raw, emitter="oa")
        assert result.accepted and len(result.events) == len(doc["events"])  # type: ignore[index]
