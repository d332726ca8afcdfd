"""Benchmark of the schemas hot path: decode + detect + validate + normalise (``ingest``).

Also reported: decode + ``check`` alone (the schema layer is jsonschema-rs running the shipped
schemas, plus the application-layer rules), to see validation apart from normalisation.

Typical mix (by events): CT 0.1 session documents (~8 events, turns + all five stages), CT event
batches from agents, CT standalone edge retrievals, OA 0.4 SDK sessions with commerce events.
Baseline in the same process: orjson decode + the ``jsonschema`` library validating the same
documents against the shipped schemas (no normalisation, so the baseline is flattered).

    .venv/bin/python bench/bench_schemas.py [--docs 2000] [--seconds 3]
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from typing import Any

import orjson

from schemas.normalize import ingest
from schemas.reference import is_schema_valid
from schemas.validate import check

HOSTS = [
    "www.ft.com",
    "www.theguardian.com",
    "news.bbc.co.uk",
    "www.nature.com",
    "arstechnica.com",
    "example.github.io",
]


def _ts(rng: random.Random) -> str:
    day, hour, minute, second = rng.randint(1, 28), rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)
    return f"2026-03-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}Z"


def _url(rng: random.Random) -> str:
    q = rng.choice(["", "", "?utm_source=chatgpt.com", "?id=7"])
    return f"https://{rng.choice(HOSTS)}/article/{rng.randint(1, 5000)}/{q}"


def _ct_session(rng: random.Random) -> dict[str, Any]:
    url = _url(rng)
    turn = {"privacy_level": "intent", "query_intent": "comparison", "topics": ["a", "b"], "query_tokens": 12}
    events = [
        {"type": "turn_started", "timestamp": _ts(rng), "turn_id": "1", "turn": turn},
        {
            "type": "content_retrieved",
            "timestamp": _ts(rng),
            "source_role": "agent",
            "content_telemetry_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "content_url": url,
        },
        {
            "type": "content_grounded",
            "timestamp": _ts(rng),
            "content_url": url,
            "content_id": f"id:{rng.random()}",
            "data": {
                "scope": "session",
                "cached": False,
                "tokens_ingested": rng.randint(100, 9000),
                "media_type": "text",
            },
        },
        {
            "type": "content_cited",
            "timestamp": _ts(rng),
            "turn_id": "1",
            "content_url": url,
            "data": {"citation_type": "paraphrase", "excerpt_tokens": 85, "position": "primary"},
        },
        {
            "type": "content_displayed",
            "timestamp": _ts(rng),
            "turn_id": "1",
            "content_url": url,
            "data": {"display_type": "link"},
        },
        {
            "type": "turn_completed",
            "timestamp": _ts(rng),
            "turn_id": "1",
            "turn": {
                **turn,
                "response_type": "recommendation",
                "content_urls_cited": [url],
                "response_tokens": 150,
            },
        },
        {
            "type": "content_engaged",
            "timestamp": _ts(rng),
            "turn_id": "1",
            "content_url": url,
            "data": {"engagement_type": "link_click"},
        },
        {
            "type": "content_retrieved",
            "timestamp": _ts(rng),
            "source_role": "agent",
            "content_url": _url(rng),
        },
    ]
    return {
        "schema_version": "0.1",
        "session_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "agent_id": "assistant-v4",
        "started_at": _ts(rng),
        "ended_at": _ts(rng),
        "events": events,
    }


def _ct_batch(rng: random.Random) -> dict[str, Any]:
    url = _url(rng)
    events = [
        {"type": "content_retrieved", "timestamp": _ts(rng), "source_role": "agent", "content_url": url},
        {"type": "content_grounded", "timestamp": _ts(rng), "content_url": url, "data": {"scope": "turn"}},
        {
            "type": "content_cited",
            "timestamp": _ts(rng),
            "content_url": url,
            "data": {"citation_type": "reference"},
        },
    ]
    return {
        "document_type": "event_batch",
        "schema_version": "0.1",
        "agent_id": "a",
        "session_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "started_at": _ts(rng),
        "events": events,
    }


def _ct_edge(rng: random.Random) -> dict[str, Any]:
    return {
        "document_type": "event",
        "schema_version": "0.1",
        "event": {
            "type": "content_retrieved",
            "timestamp": _ts(rng),
            "source_role": "edge",
            "content_telemetry_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "content_url": _url(rng),
            "data": {
                "user_agent": "GPTBot/1.1",
                "bot_category": "inference",
                "bot_name": "GPTBot",
                "verified": True,
                "cache_status": "miss",
                "response_status": 200,
                "response_bytes": 42100,
                "asn": 14618,
                "country": "US",
                "ip_hash": "sha256:" + "ab" * 32,
            },
        },
    }


def _oa_session(rng: random.Random) -> dict[str, Any]:
    def eid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    url = _url(rng)
    product = eid()
    events = [
        {
            "id": eid(),
            "type": "content_retrieved",
            "timestamp": _ts(rng),
            "source_role": "agent",
            "content_telemetry_id": None,
            "content_url": url,
            "product_id": None,
            "turn": None,
            "data": {},
        },
        {
            "id": eid(),
            "type": "content_cited",
            "timestamp": _ts(rng),
            "content_url": url,
            "product_id": None,
            "turn": None,
            "data": {"citation_type": "paraphrase", "position": "primary"},
        },
        {
            "id": eid(),
            "type": "turn_completed",
            "timestamp": _ts(rng),
            "content_url": None,
            "product_id": None,
            "turn": {
                "privacy_level": "minimal",
                "topics": [],
                "content_urls_cited": [url],
                "response_tokens": 99,
            },
            "data": {},
        },
        {"id": eid(), "type": "cart_add", "timestamp": _ts(rng), "product_id": product, "data": {}},
        {
            "id": eid(),
            "type": "checkout_completed",
            "timestamp": _ts(rng),
            "product_id": None,
            "data": {"order_value_amount": 4999, "currency": "GBP"},
        },
    ]
    return {
        "schema_version": "0.1",
        "session_id": eid(),
        "initiator_type": "user",
        "initiator": None,
        "agent_id": "shop",
        "content_scope": "mix",
        "manifest_ref": None,
        "prior_session_ids": [],
        "started_at": _ts(rng),
        "ended_at": None,
        "user_context": {"external_id": None, "segments": ["returning"], "attributes": {}},
        "events": events,
        "outcome": {
            "type": "conversion",
            "value_amount": 4999,
            "currency": "GBP",
            "products": [product],
            "metadata": {},
        },
    }


def corpus(n: int, seed: int = 7) -> list[bytes]:
    """``n`` documents: 40% CT sessions, 20% CT batches, 25% CT edge events, 15% OA sessions."""
    rng = random.Random(seed)
    makers = [_ct_session] * 8 + [_ct_batch] * 4 + [_ct_edge] * 5 + [_oa_session] * 3
    return [orjson.dumps(rng.choice(makers)(rng)) for _ in range(n)]


def _events(doc: dict[str, Any]) -> int:
    return 1 if "event" in doc else len(doc["events"])


def bench_ingest(docs: list[bytes], seconds: float) -> tuple[float, float]:
    events = total_docs = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for raw in docs:
            result = ingest(raw, emitter="bench")
            assert result.accepted, result.errors
            events += len(result.events)
        total_docs += len(docs)
    elapsed = time.perf_counter() - start
    return events / elapsed, total_docs / elapsed


def bench_check(docs: list[bytes], seconds: float) -> tuple[float, float]:
    events = total_docs = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for raw in docs:
            verdict = check(orjson.loads(raw))
            assert verdict.accepted, verdict.errors
            events += _events(verdict.doc)
        total_docs += len(docs)
    elapsed = time.perf_counter() - start
    return events / elapsed, total_docs / elapsed


def bench_jsonschema(docs: list[bytes], seconds: float) -> float:
    kinds = [check(orjson.loads(raw)).kind for raw in docs]
    events = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for raw, kind in zip(docs, kinds, strict=True):
            doc = orjson.loads(raw)
            assert is_schema_valid(doc, kind)
            events += _events(doc)
    return events / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    docs = corpus(args.docs)
    n_events = sum(_events(orjson.loads(d)) for d in docs)
    print(f"corpus: {len(docs)} documents, {n_events} events, {sum(map(len, docs)) / len(docs):.0f} B/doc")
    bench_ingest(docs[:200], 0.5)  # warm caches (URL canonicalisation, regexes)
    eps, dps = bench_ingest(docs, args.seconds)
    print(f"ingest (decode+detect+validate+normalise): {eps:,.0f} events/s, {dps:,.0f} docs/s")
    ceps, cdps = bench_check(docs, args.seconds)
    print(f"validate (decode+detect+check): {ceps:,.0f} events/s, {cdps:,.0f} docs/s")
    base = bench_jsonschema(docs, args.seconds)
    print(f"baseline (orjson + jsonschema validate only): {base:,.0f} events/s")
    print(f"ratio: {eps / base:.1f}x")


if __name__ == "__main__":
    main()
