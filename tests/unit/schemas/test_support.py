"""URLs, the DLQ envelope, wire models, shipped schemas and the import boundary."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from schemas import dlq, jsonschema as shipped
from schemas.normalize import ingest
from schemas.urls import canonical_url, owner_domain
from schemas.wire import ct01, oa04
from tests.unit.schemas._spec import CT01, OA04, VALID


@pytest.mark.parametrize(
    ("url", "canonical", "owner"),
    [
        (
            "HTTPS://WWW.Example.COM:443/a/b/?utm_source=x&id=3&fbclid=1#frag",
            "https://www.example.com/a/b?id=3",
            "example.com",
        ),
        ("https://arstechnica.com/science/x/", "https://arstechnica.com/science/x", "arstechnica.com"),
        ("https://news.bbc.co.uk", "https://news.bbc.co.uk/", "bbc.co.uk"),
        ("http://user:pw@me.github.io:8080/", "http://me.github.io:8080/", "me.github.io"),
        ("http://192.168.0.1/x", "http://192.168.0.1/x", "192.168.0.1"),
        ("urn:isbn:0451450523", "urn:isbn:0451450523", None),
        ("http://a:99999/", None, None),
    ],
)
def test_canonical_url_and_owner(url: str, canonical: str | None, owner: str | None) -> None:
    assert canonical_url(url) == canonical
    assert owner_domain(url) == owner


def test_dlq_round_trip() -> None:
    raw = b'\xff{"not": json'
    result = ingest(raw, emitter="e")
    letter = dlq.make(
        raw,
        reason=result.reason,
        stage="normalize",
        errors=result.errors,
        key=b"k",
        topic="ctpipe.raw",
        partition=2,
        offset=41,
        emitter="e",
    )
    back = dlq.decode(dlq.encode(letter))
    assert back == letter and back.original == raw and back.key == b"k"
    assert back.errors[0].rule == "json:syntax" and back.source_offset == 41


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_wire_models_parse_fixtures_and_keep_unknown_fields(path: object) -> None:
    doc = orjson.loads(path.read_bytes())  # type: ignore[attr-defined]
    model = {
        "event": ct01.StandaloneEvent,
        "event_batch": ct01.EventBatch,
    }.get(doc.get("document_type"), ct01.Manifest if "roles" in doc else ct01.Session)
    parsed = model.model_validate(doc)
    assert (
        parsed.model_extra is not None and parsed.model_extra["_test_description"] == doc["_test_description"]
    )


def test_oa_wire_models() -> None:
    import re

    text = (OA04 / "SPECIFICATION.md").read_text()
    blocks = [
        orjson.loads(b) for b in re.findall(r"```json\n(.*?)```", text, re.DOTALL) if '"session_id"' in b
    ]
    for block in blocks:
        session = oa04.Session.model_validate(block)
        assert session.events
    end = oa04.SessionEndBody.model_validate(
        {"session_id": "s", "outcome": {"type": "conversion", "value_amount": 4999}}
    )
    assert end.outcome.currency == "USD"


def test_shipped_schemas_are_verbatim_copies() -> None:
    for kind, name in (
        ("session", "telemetry-session.json"),
        ("event", "telemetry-event.json"),
        ("event_batch", "telemetry-event-batch.json"),
        ("manifest", "manifest.json"),
    ):
        assert shipped.load(kind) == orjson.loads((CT01 / name).read_bytes())
    assert shipped.load("oa_session") == orjson.loads((OA04 / "schema.json").read_bytes())


def test_schemas_import_nothing_else_of_ctpipe() -> None:
    code = (
        "import sys, schemas.normalize, schemas.validate, schemas.dlq, schemas.reference, schemas.detect, "
        "schemas.wire.ct01, schemas.wire.oa04, schemas.topics, schemas.codec;"
        "ours = {'ctpipe', 'producers', 'processors', 'sinks', 'deploy'};"
        "bad = [m for m in sys.modules if m.split('.')[0] in ours];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
