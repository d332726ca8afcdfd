"""The pipeline's pure functions over one workload, reduced to a digest (``tests/unit/test_native``).

Run in a subprocess per mode (``CTPIPE_NATIVE=1`` / ``0``): the native (mypyc) build and the
pure-Python sources must give byte-identical outputs. Covers every compiled module through the
stages' own functions: normalize (every document of a generated workload, its CDN/origin log
lines, the spec's conformance fixtures valid and invalid), sessionize (apply + close of every
session) and correlate (observation records -> groups -> close).

Usage: python -m tests.native_probe WORKLOAD_DIR SPEC_DIR   (prints JSON on stdout)
"""

from __future__ import annotations

import hashlib
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from processors import correlate, normalize, sessionize
from producers.cdn_logs import Retrieval, process_line
from producers.generator import DOC_FILES, SOURCE_OF
from schemas import _native
from schemas.records import unpack


def _documents(workload: Path, spec: Path) -> list[tuple[bytes, list[tuple[str, bytes]]]]:
    docs: list[tuple[bytes, list[tuple[str, bytes]]]] = []
    for fmt, rel in DOC_FILES.items():
        path = workload / rel
        if path.exists():
            hint = SOURCE_OF[fmt]
            headers = [(normalize.SOURCE_HEADER, hint.encode())] if hint else []
            docs.extend((line, headers) for line in path.read_bytes().splitlines() if line)
    for fmt in ("cloudflare", "fastly", "nginx"):
        folder = workload / ("origin" if fmt == "nginx" else "cdn") / fmt
        for path in sorted(folder.glob("*.*")):
            host = path.name.rsplit(".", 1)[0]
            for line in path.read_bytes().splitlines():
                got = process_line(fmt, line, emitter=f"{fmt}:{host}", site_host=host)
                if isinstance(got, Retrieval):
                    docs.append(
                        (orjson.dumps(got.document), [(normalize.EMITTER_HEADER, f"{fmt}:{host}".encode())])
                    )
    for path in sorted(spec.rglob("tests/*/*.json")):
        docs.append((path.read_bytes(), []))
    return docs


def digest(workload: Path, spec: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    counts: dict[str, int] = defaultdict(int)
    envelopes: dict[bytes, list[bytes]] = defaultdict(list)
    observations: dict[bytes, list[Any]] = defaultdict(list)
    for raw, headers in _documents(workload, spec):
        out = normalize.normalize_message(raw, headers=headers)
        counts["documents"] += 1
        if out.dead_letter is not None:
            counts["dead_letters"] += 1
            h.update(b"D" + out.reason.encode())
            continue
        for key, value in out.events:
            h.update(b"E" + key + b"\0" + value)
            envelopes[key].append(value)
        for key, value in out.retrievals:
            h.update(b"R" + key + b"\0" + value)
            observations[key].extend(unpack(b"[" + value + b"]"))
        counts["events"] += out.event_count
    cfg = sessionize.SessionizeConfig()
    for key in sorted(envelopes):
        state = sessionize.new_state(key.decode(), 0)
        for value in envelopes[key]:
            doc = orjson.loads(value)
            sessionize.apply(state, doc["h"], doc["e"], now=1.0)
        _new, closed = sessionize.step(state, 2.0, cfg, drain=True)
        if closed is not None:
            counts["sessions"] += 1
            h.update(b"S" + closed.record.model_dump_json().encode())
            for k, v in closed.delta_wire:
                h.update(b"F" + k + b"\0" + v)
    for key in sorted(observations):
        obs = []
        for rec in observations[key]:
            got = correlate.Correlator._check_record(rec)
            assert not isinstance(got, str), got
            obs.append(got[0])
        state = correlate.new_state(key.decode(), 0)
        correlate.add_obs(state, obs, 1.0)
        wire = correlate.close(state, 2.0)
        counts["groups"] += 1
        for k, v in wire.delta_wire + wire.record_wire:
            h.update(b"C" + k + b"\0" + v)
    return {"digest": h.hexdigest(), "counts": dict(counts), "compiled": _native.loaded()}


if __name__ == "__main__":
    print(orjson.dumps(digest(Path(sys.argv[1]), Path(sys.argv[2]))).decode())
