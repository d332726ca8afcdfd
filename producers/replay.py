"""Replay a workload directory (``ctpipe generate --out DIR``) into the raw topic.

Input: the directory's document files (``ct/sessions.jsonl``, ``ct/events.jsonl``,
``ct/batches.jsonl``, ``oa/sessions.jsonl``, ``origin/ct-events.jsonl``,
``destination/ct-events.jsonl``), one JSON document per
line, and ``manifest.json`` (agent_id -> emitter identity). Output: one RAW message per document,
key = session_id, else ctx_token, else the event's content_telemetry_id (none otherwise),
headers ``ctpipe-emitter`` (as the simulator assigned it) and ``ctpipe-source`` (the document
kind), exactly as ``ctpipe generate --to-kafka`` would have sent them. CDN/origin log files are not
documents: ``ctpipe ingest-logs`` (``ctpipe.ingest_logs``) reads those.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from producers.generator import destination_emitter, iter_kafka_key
from producers.kafka import Headers, produce_all
from producers.publisher import headers_for
from schemas import codec
from schemas.urls import owner_domain

#: (file, document kind used as the ``ctpipe-source`` hint), in replay order.
DOCUMENT_FILES: tuple[tuple[str, str], ...] = (
    ("ct/sessions.jsonl", "session"),
    ("ct/events.jsonl", "event"),
    ("ct/batches.jsonl", "event_batch"),
    ("oa/sessions.jsonl", "oa_session"),
    ("origin/ct-events.jsonl", "event"),
    ("destination/ct-events.jsonl", "event"),
)


@dataclass(frozen=True, slots=True)
class WorkloadMessage:
    key: bytes | None
    value: bytes
    emitter: str
    source: str

    def as_message(self) -> tuple[bytes | None, bytes, Headers]:
        return self.key, self.value, headers_for(self.emitter, self.source)


def _emitter(doc: dict[str, Any], agents: dict[str, str]) -> str:
    event = doc.get("event")
    if doc.get("ctx_token") and not doc.get("session_id") and isinstance(event, dict):
        url = event.get("content_url")  # a destination's click-out report (CT 0.1 7.1)
        if isinstance(url, str):
            return destination_emitter(url)
    agent = doc.get("agent_id")
    if isinstance(agent, str) and agent in agents:
        return agents[agent]
    if isinstance(event, dict) and event.get("source_role") == "origin":
        url = event.get("content_url")
        owner = owner_domain(url) if isinstance(url, str) else None
        return f"origin:{owner or 'unknown'}"
    return "unknown"


def workload_messages(workload: Path) -> Iterator[WorkloadMessage]:
    """Every document of a workload directory as the RAW message it becomes."""
    manifest = codec.loads((workload / "manifest.json").read_bytes())
    agents = {a["agent_id"]: a["emitter"] for a in manifest.get("agents", [])}
    for name, source in DOCUMENT_FILES:
        path = workload / name
        if not path.exists():
            continue
        with path.open("rb") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                doc = codec.loads(line)
                yield WorkloadMessage(iter_kafka_key(doc), line, _emitter(doc, agents), source)


def replay_documents(producer: Producer, topic: str, workload: Path) -> int:
    """Publish every document of ``workload`` to ``topic``; returns the acknowledged count."""
    return produce_all(producer, topic, (m.as_message() for m in workload_messages(workload)))
