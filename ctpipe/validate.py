"""``ctpipe validate PATH...``: classify telemetry documents against the specs.

Input: files, directories (``*.json``, ``*.jsonl``, ``*.ndjson``, recursively) or ``-`` for
stdin, each holding one JSON document or JSON Lines. Output: per document a verdict with
JSON-pointer-located reasons naming the rule or spec section; ``--json`` prints
``[{"path", "kind", "version", "valid", "errors": [{"pointer", "rule", "message"}], "stripped"}]``.
Exit 0 when all are valid, 1 when any is invalid, 2 on usage errors (no paths, missing paths).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import orjson

from schemas.validate import Verdict, check_bytes

JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
DOC_SUFFIXES = frozenset({".json"}) | JSONL_SUFFIXES


def _documents(label: str, raw: bytes, jsonl: bool) -> Iterator[tuple[str, bytes]]:
    """Split one input into documents: one JSON value, or JSON Lines.

    A ``.jsonl``/``.ndjson`` file is always JSON Lines; any other input is JSON Lines only when
    it is not one JSON value, has several non-blank lines and its first line decodes alone.
    """
    lines = [(n, ln) for n, ln in enumerate(raw.splitlines(), start=1) if ln.strip()]
    if not jsonl and len(lines) > 1:
        try:
            orjson.loads(raw)
        except orjson.JSONDecodeError:
            try:
                orjson.loads(lines[0][1])
                jsonl = True
            except orjson.JSONDecodeError:
                pass
    if not jsonl:
        yield label, raw
        return
    for n, line in lines:
        yield f"{label}:{n}", line


def _expand(path: str) -> list[Path] | None:
    p = Path(path)
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in DOC_SUFFIXES)
    if p.is_file():
        return [p]
    return None


def _record(label: str, verdict: Verdict) -> dict[str, Any]:
    return {
        "path": label,
        "kind": verdict.kind.value,
        "version": verdict.version,
        "valid": verdict.valid,
        "errors": [e.as_dict() for e in verdict.errors],
        "stripped": [e.pointer for e in verdict.stripped],
    }


def _human(rec: dict[str, Any]) -> str:
    head = "valid  " if rec["valid"] else "INVALID"
    version = rec["version"] if rec["version"] is not None else "-"
    lines = [f"{head} {rec['path']}  ({rec['kind']} {version})"]
    for e in rec["errors"]:
        lines.append(f"    {e['pointer'] or '/'}: {e['message']} [{e['rule']}]")
    return "\n".join(lines)


def run(
    paths: list[str],
    *,
    as_json: bool,
    stdin: BinaryIO | None = None,
    out: TextIO | None = None,
) -> int:
    """Validate every document under ``paths``; print verdicts; return the exit code."""
    out = out if out is not None else sys.stdout
    if not paths:
        print("usage: ctpipe validate [--json] PATH... (files, directories, or - for stdin)", file=sys.stderr)
        return 2
    inputs: list[tuple[str, bytes, bool]] = []
    for path in paths:
        if path == "-":
            stream = stdin if stdin is not None else sys.stdin.buffer
            inputs.append(("-", stream.read(), False))
            continue
        files = _expand(path)
        if files is None:
            print(f"ctpipe validate: no such file or directory: {path}", file=sys.stderr)
            return 2
        for f in files:
            try:
                inputs.append((str(f), f.read_bytes(), f.suffix.lower() in JSONL_SUFFIXES))
            except OSError as exc:
                print(f"ctpipe validate: cannot read {f}: {exc}", file=sys.stderr)
                return 2
    records = [
        _record(label, check_bytes(doc))
        for name, raw, jsonl in inputs
        for label, doc in _documents(name, raw, jsonl)
    ]
    if as_json:
        out.write(json.dumps(records, indent=2, ensure_ascii=False) + "\n")
    else:
        for rec in records:
            out.write(_human(rec) + "\n")
        bad = sum(not r["valid"] for r in records)
        out.write(f"{len(records)} document(s), {len(records) - bad} valid, {bad} invalid\n")
    return 0 if all(r["valid"] for r in records) else 1
