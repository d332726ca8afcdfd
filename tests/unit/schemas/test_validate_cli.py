"""``ctpipe validate``: verdicts, JSON output, JSON Lines, stdin and exit codes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import orjson

from ctpipe.validate import run
from tests.unit.schemas._spec import CT01, INVALID, VALID


def _run(paths: list[str], as_json: bool = True, stdin: bytes = b"") -> tuple[int, str]:
    out = io.StringIO()
    code = run(paths, as_json=as_json, stdin=io.BytesIO(stdin), out=out)
    return code, out.getvalue()


def test_valid_directory_exits_zero() -> None:
    code, text = _run([str(CT01 / "tests" / "valid")])
    records = json.loads(text)
    assert code == 0 and len(records) == len(VALID)
    assert all(r["valid"] and r["errors"] == [] and r["version"] == "0.1" for r in records)
    assert set(records[0]) == {"path", "kind", "version", "valid", "errors", "stripped"}


def test_invalid_directory_exits_one_with_located_reasons() -> None:
    code, text = _run([str(CT01 / "tests" / "invalid")])
    records = {Path(r["path"]).name: r for r in json.loads(text)}
    assert code == 1 and len(records) == len(INVALID)
    assert not any(r["valid"] for r in records.values())
    dup = records["manifest-duplicate-key-id.json"]
    assert dup["kind"] == "manifest"
    assert dup["errors"] == [
        {"pointer": "/keys/1/id", "rule": "CT-0.1 §8.7", "message": "duplicate key id 'key-1'"}
    ]
    privacy = records["privacy-violation-query-at-minimal.json"]
    assert privacy["stripped"] == ["/events/0/turn/query_text"]
    assert privacy["errors"][0]["rule"] == "CT-0.1 §5.5"


def test_human_output_has_a_verdict_line_and_indented_reasons() -> None:
    code, text = _run([str(CT01 / "tests" / "invalid" / "missing-session-id.json")], as_json=False)
    lines = text.splitlines()
    assert code == 1
    assert lines[0].startswith("INVALID ") and "(session 0.1)" in lines[0]
    assert lines[1] == "    /session_id: required field 'session_id' is missing [jsonschema:required]"


def test_stdin_json_lines(tmp_path: Path) -> None:
    good = (CT01 / "tests" / "valid" / "session-minimal.json").read_bytes()
    lines = orjson.dumps(orjson.loads(good)) + b"\n\n" + b'{"document_type": "event"}\n' + b"{trunc\n"
    code, text = _run(["-"], stdin=lines)
    records = json.loads(text)
    assert code == 1
    assert [r["path"] for r in records] == ["-:1", "-:3", "-:4"]
    assert [r["valid"] for r in records] == [True, False, False]
    assert records[2]["errors"][0]["rule"] == "json:syntax"
    f = tmp_path / "docs.jsonl"
    f.write_bytes(orjson.dumps(orjson.loads(good)) + b"\n")
    assert _run([str(f)])[0] == 0


def test_usage_errors_exit_two(tmp_path: Path) -> None:
    assert _run([])[0] == 2
    assert _run([str(tmp_path / "missing.json")])[0] == 2


def test_single_bad_json_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.json"
    f.write_bytes(b'{"schema_version": "0.1",\n "session_id": ')
    code, text = _run([str(f)])
    (record,) = json.loads(text)
    assert code == 1 and record["kind"] == "unknown" and record["errors"][0]["rule"] == "json:syntax"
