"""Processor hot paths without Kafka: normalize, sessionize (apply + close), correlate (add + close).

Run: .venv/bin/python bench/bench_processors.py [--sessions N]
Baseline (same run, same documents): bare ``schemas.normalize.ingest``; the stages' numbers are
reported as ratios to it. Faust/broker overhead is not included (see the integration test).
"""

from __future__ import annotations

import argparse
import time
import uuid

import orjson

from processors import correlate, normalize, sessionize

URLS = [f"https://www.site{i % 6}.com/articles/{i}" for i in range(5000)]


def docs(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        sid = str(uuid.UUID(int=i + 1))
        url = URLS[i % len(URLS)]
        cti = str(uuid.UUID(int=10**9 + i))
        evs = [
            {"type": "turn_started", "timestamp": "2026-01-15T10:30:00Z", "turn_id": "1"},
            {
                "type": "content_retrieved",
                "timestamp": "2026-01-15T10:30:01Z",
                "source_role": "agent",
                "content_telemetry_id": cti,
                "content_url": url,
            },
            {
                "type": "content_grounded",
                "timestamp": "2026-01-15T10:30:02Z",
                "content_url": url,
                "data": {"scope": "session", "cached": False, "tokens_ingested": 900},
            },
            {
                "type": "content_cited",
                "timestamp": "2026-01-15T10:30:03Z",
                "content_url": url,
                "data": {"citation_type": "paraphrase", "position": "primary"},
            },
            {
                "type": "content_displayed",
                "timestamp": "2026-01-15T10:30:04Z",
                "content_url": url,
                "data": {"display_type": "link"},
            },
            {"type": "turn_completed", "timestamp": "2026-01-15T10:30:05Z", "turn_id": "1"},
            {
                "type": "content_engaged",
                "timestamp": "2026-01-15T10:31:00Z",
                "content_url": url,
                "data": {"engagement_type": "link_click"},
            },
        ]
        out.append(
            orjson.dumps(
                {
                    "schema_version": "0.1",
                    "session_id": sid,
                    "agent_id": "bot",
                    "started_at": "2026-01-15T10:30:00Z",
                    "ended_at": "2026-01-15T10:35:00Z",
                    "events": evs,
                }
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=3000)
    n = ap.parse_args().sessions
    raw = docs(n)
    events = n * 7
    from schemas.normalize import ingest

    t = time.perf_counter()
    for d in raw:
        ingest(d, emitter="bench")
    base = events / (time.perf_counter() - t)

    t = time.perf_counter()
    outs = [normalize.normalize_message(d, headers=[("ctpipe-emitter", b"bench")]) for d in raw]
    norm = events / (time.perf_counter() - t)

    cfg = sessionize.SessionizeConfig()
    t = time.perf_counter()
    for o in outs:
        for key, value in o.events:
            doc = orjson.loads(value)
            state = sessionize.new_state(key.decode(), 0)
            sessionize.apply(state, doc["h"], doc["e"], now=0.0)
            blob = orjson.dumps(state)  # what the table stores
            state = orjson.loads(blob)
            sessionize.step(state, 10.0, cfg, drain=False)
    sess = events / (time.perf_counter() - t)

    ccfg = correlate.CorrelateConfig()
    t = time.perf_counter()
    for o in outs:
        for key, value in o.retrievals:  # observation records, read as the stage reads them
            checked = correlate.Correlator._check_record(orjson.loads(value))
            assert not isinstance(checked, str), checked
            state = correlate.new_state(key.decode(), 0)
            correlate.add_obs(state, [checked[0]], now=0.0)
            correlate.step(orjson.loads(orjson.dumps(state)), 1000.0, ccfg, drain=False)
    corr = n / (time.perf_counter() - t)

    print(f"events: {events} in {n} session documents (7 events each, 1 retrieval)")
    print("| stage | events/s | ratio to bare ingest |")
    print("|---|---:|---:|")
    print(f"| baseline: schemas ingest | {base:,.0f} | 1.00x |")
    print(f"| normalize (ingest + envelopes + retrievals) | {norm:,.0f} | {norm / base:.2f}x |")
    print(
        f"| sessionize (decode, apply, state round trip, close + deltas) | {sess:,.0f} | {sess / base:.2f}x |"
    )
    print(f"| correlate (retrievals/s: add, round trip, close + deltas) | {corr:,.0f} | {corr / base:.2f}x |")


if __name__ == "__main__":
    main()
