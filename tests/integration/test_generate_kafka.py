"""``ctpipe generate --to-kafka``: a small workload through the real broker and back.

What arrives on the namespaced RAW topic must be exactly the documents the same seed writes to
files: same bytes, key = session_id (else content_telemetry_id), and the gateway's headers
(``ctpipe-emitter``, ``ctpipe-source``) with which ``ingest`` accepts every document.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Message
from rich.console import Console

from ctpipe.generate import run
from ctpipe.settings import Settings
from deploy.kafka.topics import delete_topics
from producers.generator import DOC_FILES, GeneratorConfig, generate, iter_kafka_key
from producers.publisher import HEADER_EMITTER, HEADER_SOURCE
from schemas.normalize import ingest
from schemas.topics import RAW
from schemas.urls import owner_domain
from tests.infra import Infra

pytestmark = pytest.mark.integration

SEED = 21
SESSIONS = 12


def _consume(bootstrap: str, topic: str, n: int, group: str, timeout: float = 60.0) -> list[Message]:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < n and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and msg.error() is None:
                out.append(msg)
        extra = c.poll(2.0)  # anything beyond n would be a duplicate
        if extra is not None and extra.error() is None:
            out.append(extra)
    finally:
        c.close()
    return out


def test_generate_publishes_the_workload_documents_to_the_raw_topic(
    infra: Infra, unique: str, tmp_path: Path
) -> None:
    settings = Settings(_env_file=None, kafka_bootstrap=infra.bootstrap, topic_namespace=unique)  # type: ignore[call-arg]
    topic = RAW.namespaced(unique).name
    console = Console(file=io.StringIO(), width=120)
    try:
        code = run(
            settings,
            seed=SEED,
            sessions=SESSIONS,
            out=tmp_path / "kafka",
            to_kafka=True,
            rate=0.0,
            console=console,
        )
        assert code == 0, console.file.getvalue()  # type: ignore[attr-defined]

        # the same seed written to files: the reference for what the topic must hold
        files = tmp_path / "files"
        result = generate(GeneratorConfig(seed=SEED, sessions=SESSIONS), out=files)
        agents = {a["agent_id"]: a["emitter"] for a in result.manifest["agents"]}
        expected: list[bytes] = []
        for rel in DOC_FILES.values():
            path = files / rel
            if path.exists():
                expected.extend(line for line in path.read_bytes().splitlines() if line)
        assert len(expected) == sum(result.stats.documents.values()) > 50

        got = _consume(infra.bootstrap, topic, len(expected), group=unique)
        assert len(got) == len(expected)
        assert Counter(m.value() for m in got) == Counter(expected)
        for msg in got:
            value = msg.value()
            assert isinstance(value, bytes)
            doc = orjson.loads(value)
            assert msg.key() == iter_kafka_key(doc)
            if "session_id" in doc:
                assert msg.key() == doc["session_id"].encode()
            pairs: list[tuple[str, Any]] = list(msg.headers() or [])  # type: ignore[arg-type]
            headers = {k: v.decode() for k, v in pairs if isinstance(v, bytes)}
            emitter = headers[HEADER_EMITTER]
            if "ctx_token" in doc:  # a landing page's click-out report (CT 0.1 7.1)
                assert msg.key() == doc["ctx_token"].encode()
                want = f"destination:{owner_domain(doc['event']['content_url'])}"
            elif "agent_id" in doc:
                want = agents[doc["agent_id"]]
            else:
                want = f"origin:{owner_domain(doc['event']['content_url'])}"
            assert emitter == want
            accepted = ingest(value, emitter=emitter, source=headers[HEADER_SOURCE])
            assert accepted.accepted, accepted.reason

        # one session's documents keep their delivery order within its partition
        sessions: dict[bytes, list[bytes]] = {}
        for msg in sorted(got, key=lambda m: (m.partition(), m.offset())):
            k, v = msg.key(), msg.value()
            if k is not None and v is not None:
                sessions.setdefault(k, []).append(v)
        file_order: dict[bytes, list[bytes]] = {}
        for value in expected:
            key = iter_kafka_key(orjson.loads(value))
            if key is not None:
                file_order.setdefault(key, []).append(value)
        for key, values in file_order.items():
            if len(values) > 1 and orjson.loads(values[0]).get("document_type") in ("event", "event_batch"):
                assert sessions[key] == values

        # logs, truth and manifest were still written; documents were not
        out = tmp_path / "kafka"
        assert (out / "expected_funnel.json").read_bytes() == (files / "expected_funnel.json").read_bytes()
        assert not (out / "ct").exists() and not (out / "oa").exists()
        assert sorted(p.name for p in (out / "cdn" / "cloudflare").iterdir()) == sorted(
            p.name for p in (files / "cdn" / "cloudflare").iterdir()
        )
        manifest = orjson.loads((out / "manifest.json").read_bytes())
        kafka_files = [f for f in manifest["files"] if f.get("kafka_topic")]
        assert kafka_files and all(f["kafka_topic"] == topic for f in kafka_files)
        assert sum(f["documents"] for f in kafka_files) == len(expected)
    finally:
        delete_topics(infra.bootstrap, [topic])
