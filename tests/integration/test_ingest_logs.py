"""``ctpipe ingest-logs`` against the real broker: exact documents, stable ids, checkpoints, follow."""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from ctpipe.ingest_logs import ingest, run
from ctpipe.settings import Settings
from producers.cdn_logs import EdgeObservation, Retrieval, process_line, render_line
from schemas.normalize import ingest as normalize
from schemas.topics import RAW
from tests.infra import Infra

pytestmark = pytest.mark.integration

SITE = "www.example.com"
EMITTER = "cdn:test:www.example.com"
AI = [
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Claude-User/1.0; +Claude-User@anthropic.com)",
    "Mozilla/5.0 (compatible; PerplexityBot/1.0; +https://perplexity.ai/perplexitybot)",
]
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"


def _lines(n: int, seed: int) -> tuple[list[str], int]:
    """Mixed Cloudflare + nginx lines and how many of them are AI requests with content."""
    t0 = datetime(2026, 2, 1, tzinfo=UTC) + timedelta(days=seed)
    out: list[str] = []
    ai = 0
    for i in range(n):
        fmt = "cloudflare" if i % 2 else "nginx"
        kind = i % 5  # 0,1: AI page; 2: browser page; 3: static asset for an AI bot; 4: malformed
        if kind == 4:
            out.append(f"this is not a log line {seed}-{i}" if i % 10 == 4 else '{"ClientRequestHost": 1}')
            continue
        o = EdgeObservation(
            timestamp=t0 + timedelta(seconds=i),
            host=SITE,
            path=f"/news/{seed}-{i}" if kind != 3 else f"/static/{i}.js",
            method="GET",
            status=200,
            response_bytes=1000 + i,
            user_agent=AI[i % 3] if kind != 2 else CHROME,
            client_ip=f"203.0.113.{i % 250}",
            content_telemetry_id=str(uuid.uuid4()) if i % 3 == 0 else None,
            cache_status="miss",
            verified_bot_category="AI Crawler" if i % 7 == 0 and kind != 2 else None,
        )
        out.append(render_line(fmt, o))
        ai += kind in (0, 1)
    return out, ai


def _expected_ids(lines: list[str]) -> set[str]:
    ids = set()
    for line in lines:
        r = process_line("auto", line.encode(), emitter=EMITTER, site_host=SITE)
        if isinstance(r, Retrieval):
            ids.add(r.document["event"]["id"])
    return ids


def _settings(infra: Infra, unique: str, tmp_path: Path) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, kafka_bootstrap=infra.bootstrap, topic_namespace=unique, data_dir=tmp_path / "data"
    )


def _consume(bootstrap: str, topic: str) -> list[tuple[bytes, bytes, dict[str, bytes]]]:
    """Every message of ``topic`` up to its current high watermarks: (key, value, headers)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4()}", "enable.auto.commit": False}
    )
    try:
        md = consumer.list_topics(topic, timeout=10)
        parts = sorted(md.topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        out: list[tuple[bytes, bytes, dict[str, bytes]]] = []
        pos = dict.fromkeys(parts, 0)
        deadline = time.monotonic() + 60
        while any(pos[p] < ends[p] for p in parts) and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is None or m.error():
                continue
            pos[m.partition()] = (m.offset() or 0) + 1
            headers = {str(h[0]): h[1] for h in m.headers() or [] if isinstance(h[1], bytes)}
            out.append((m.key() or b"", m.value() or b"", headers))
        assert all(pos[p] >= ends[p] for p in parts), "did not read the topic to its end"
        return out
    finally:
        consumer.close()


def _log_file(tmp_path: Path, n: int, seed: int) -> tuple[Path, set[str], int]:
    """``mixed.log`` of ``n`` lines: (its path, the event ids of its AI retrievals, their count)."""
    lines, ai = _lines(n, seed=seed)
    path = tmp_path / "mixed.log"
    path.write_text("\n".join(lines) + "\n")
    return path, _expected_ids(lines), ai


def test_ingest_publishes_exactly_the_ai_retrievals_and_reingest_adds_nothing(
    infra: Infra, unique: str, tmp_path: Path
) -> None:
    settings = _settings(infra, unique, tmp_path)
    topic = RAW.namespaced(unique).name
    path, expected, ai = _log_file(tmp_path, 200, seed=1)
    assert len(expected) == ai == 80

    stats = ingest(
        [str(path)], settings=settings, fmt="auto", site_host=SITE, emitter=EMITTER, batch_events=1
    )
    assert (stats.lines, stats.published) == (200, 80)
    assert stats.skips == {"malformed": 20, "wrong_format": 20, "static_asset": 40, "not_ai_bot": 40}

    first = _consume(infra.bootstrap, topic)
    assert len(first) == 80
    docs = [orjson.loads(v) for _, v, _ in first]
    assert {d["event"]["id"] for d in docs} == expected
    for key, value, headers in first:
        doc = orjson.loads(value)
        ev = doc["event"]
        assert key.decode() == ev.get("content_telemetry_id", ev["content_url"])
        assert headers == {"ctpipe-emitter": EMITTER.encode()}
        assert b"203.0.113." not in value  # never a raw client IP
        assert normalize(value, emitter=EMITTER).accepted
    assert {d["event"]["source_role"] for d in docs} == {"edge", "origin"}

    # a plain re-run resumes at the checkpoint: nothing new
    again = ingest(
        [str(path)], settings=settings, fmt="auto", site_host=SITE, emitter=EMITTER, batch_events=1
    )
    assert (again.lines, again.published) == (0, 0)
    assert len(_consume(infra.bootstrap, topic)) == 80

    # --from-start re-publishes the same documents with identical event ids (downstream dedupes)
    code = run(
        [str(path)],
        settings=settings,
        fmt="auto",
        site_host=SITE,
        emitter=EMITTER,
        from_start=True,
        batch_events=1,
    )
    assert code == 0
    both = _consume(infra.bootstrap, topic)
    assert len(both) == 160
    second = [orjson.loads(v)["event"]["id"] for _, v, _ in both]
    assert sorted(second) == sorted([*expected, *expected])


def _event_ids(messages: list[tuple[bytes, bytes, dict[str, bytes]]]) -> list[str]:
    """Event ids of standalone and batch documents alike."""
    ids: list[str] = []
    for _key, value, _headers in messages:
        doc = orjson.loads(value)
        ids.extend(e["id"] for e in (doc["events"] if "events" in doc else [doc["event"]]))
    return ids


def test_default_publishing_batches_events_into_ct_event_batch_documents(
    infra: Infra, unique: str, tmp_path: Path
) -> None:
    settings = _settings(infra, unique, tmp_path)
    topic = RAW.namespaced(unique).name
    path, expected, ai = _log_file(tmp_path, 400, seed=7)
    assert len(expected) == ai > 100

    stats = ingest(
        [str(path)], settings=settings, fmt="auto", site_host=SITE, emitter=EMITTER, batch_events=64
    )
    assert stats.published == ai
    messages = _consume(infra.bootstrap, topic)
    assert len(messages) == -(-ai // 64)  # ceil: full batches of 64, then the rest
    for _key, value, headers in messages:
        doc = orjson.loads(value)
        assert doc["document_type"] == "event_batch" and 1 <= len(doc["events"]) <= 64
        assert not ({"session_id", "ctx_token", "agent_id"} & doc.keys())  # no session context
        assert headers == {"ctpipe-emitter": EMITTER.encode()}
        result = normalize(value, emitter=EMITTER)
        assert result.accepted and len(result.events) == len(doc["events"])
        assert all(ev.session_id is None and ev.source_role in ("edge", "origin") for ev in result.events)
    ids = _event_ids(messages)
    assert len(ids) == len(set(ids)) and set(ids) == expected


def test_follow_resumes_from_the_checkpoint_and_survives_rotation(
    infra: Infra, unique: str, tmp_path: Path
) -> None:
    settings = _settings(infra, unique, tmp_path)
    topic = RAW.namespaced(unique).name
    path = tmp_path / "access.log"
    a, _ = _lines(50, seed=2)
    b, _ = _lines(50, seed=3)
    c, _ = _lines(50, seed=4)
    d, _ = _lines(50, seed=5)

    def follow(idle: float) -> int:
        return ingest(
            [str(path)], settings=settings, fmt="auto", site_host=SITE, emitter=EMITTER,
            follow=True, idle_exit=idle, poll_interval=0.05,
        ).published  # fmt: skip

    # run 1: the complete lines of A; a half-written last line waits for its newline
    partial = b[0]
    path.write_text("\n".join(a) + "\n" + partial[:20])
    assert follow(0.3) == len(_expected_ids(a))
    assert len(_event_ids(_consume(infra.bootstrap, topic))) == len(_expected_ids(a))

    # run 2 (a restart): only what was appended since, starting with the completed line
    with path.open("a") as fh:
        fh.write(partial[20:] + "\n" + "\n".join(b[1:]) + "\n")
    assert follow(0.3) == len(_expected_ids(b))

    # run 3: appends and a rotation while following (rename + new file at the same path)
    published: list[int] = []
    worker = threading.Thread(target=lambda: published.append(follow(2.0)))
    worker.start()
    time.sleep(0.5)
    with path.open("a") as fh:
        fh.write("\n".join(c) + "\n")
    time.sleep(0.5)
    os.rename(path, tmp_path / "access.log.1")
    path.write_text("\n".join(d) + "\n")
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert published == [len(_expected_ids(c)) + len(_expected_ids(d))]

    ids = _event_ids(_consume(infra.bootstrap, topic))
    expected = _expected_ids(a) | _expected_ids(b) | _expected_ids(c) | _expected_ids(d)
    assert len(ids) == len(set(ids)) == len(expected)  # every line exactly once across restarts
    assert set(ids) == expected
