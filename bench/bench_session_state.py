"""Changelog bytes of session state in an interleaved stream: one state vs sealed chunks.

A live stream interleaves many sessions; every batch that touches a session rewrites its state to
the changelog. This replays a simulated workload's session envelopes round-robin across sessions
(the worst case for long sessions), in batches of N envelopes, through ``processors.sessionize``
``apply`` (+ ``seal`` for the chunked variant, as the worker does), and sums the bytes each batch
would write to the changelog. No Kafka; one process.

    .venv/bin/python bench/bench_session_state.py [--sessions 200] [--batch 50]
"""

from __future__ import annotations

import argparse
import collections
import itertools
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processors import sessionize as sz
from processors.normalize import SESSIONLESS_PREFIX, normalize_message
from producers.generator import GeneratorConfig, generate
from producers.replay import workload_messages


def envelopes(sessions: int) -> list[dict[str, Any]]:
    """The workload's session envelopes, interleaved round-robin across sessions."""
    out = Path(tempfile.mkdtemp(prefix="ctpipe-bench-state-"))
    generate(GeneratorConfig(seed=1, sessions=sessions), out=out)
    by_session: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for m in workload_messages(out):
        key, value, headers = m.as_message()
        for _key, env in normalize_message(value, key=key, headers=headers).events:
            if not env.startswith(SESSIONLESS_PREFIX):
                doc = orjson.loads(env)
                by_session[doc["s"]].append(doc)
    return [x for row in itertools.zip_longest(*by_session.values()) for x in row if x is not None]


def changelog_bytes(order: list[dict[str, Any]], batch: int, chunked: bool) -> tuple[int, int]:
    """(bytes, writes) the session table's changelog receives."""
    states: dict[str, dict[str, Any]] = {}
    seen: dict[str, set[str]] = {}
    written = writes = 0
    for i in range(0, len(order), batch):
        touched = set()
        for env in order[i : i + batch]:
            sid = env["s"]
            state = states.setdefault(sid, sz.new_state(sid, 0))
            sz.apply(state, env.get("h"), env.get("e") or [], 0.0, seen.setdefault(sid, set()))
            touched.add(sid)
        for sid in touched:
            if chunked:
                chunk = sz.seal(states[sid])
                if chunk is not None:
                    written += len(orjson.dumps(chunk))
                    writes += 1
            written += len(orjson.dumps(states[sid]))
            writes += 1
    return written, writes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--batch", type=int, default=50, help="envelopes per worker batch")
    a = ap.parse_args()
    order = envelopes(a.sessions)
    base, base_writes = changelog_bytes(order, a.batch, chunked=False)
    new, new_writes = changelog_bytes(order, a.batch, chunked=True)
    print(f"{len(order)} envelopes of {a.sessions} sessions, batches of {a.batch}")
    print(f"baseline, one state per session: {base / 1e6:.1f} MB in {base_writes} writes")
    ratio = base / new
    label = f"sealed chunks of {sz.CHUNK_EVENTS} ids"
    print(f"{label}: {new / 1e6:.1f} MB in {new_writes} writes ({ratio:.2f}x less)")


if __name__ == "__main__":
    main()
