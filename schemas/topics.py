"""Every Kafka topic ctpipe uses, declared once: name, key, value, partitions, retention, DLQ.

Topic creation (``deploy.kafka.topics.ensure_topics``), producers and Faust agents all refer to
these declarations; no other module spells a topic name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from schemas.framing import partition_for as partition_for  # compiled; records of many keys per message

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True, slots=True)
class Topic:
    """One topic: what it carries and how the broker keeps it."""

    name: str
    key: str  # what the message key is
    value: str  # what the message value is
    partitions: int
    retention_ms: int | None = 7 * DAY_MS  # None = broker default; -1 = forever
    compacted: bool = False
    dlq: str | None = None  # name of the dead-letter topic for this topic's consumers
    description: str = ""

    def config(self) -> dict[str, str]:
        """Topic-level broker configuration for creation."""
        cfg: dict[str, str] = {"cleanup.policy": "compact" if self.compacted else "delete"}
        if self.retention_ms is not None:
            cfg["retention.ms"] = str(self.retention_ms)
        return cfg

    def namespaced(self, namespace: str) -> Topic:
        """The same declaration under ``<namespace>.<name>`` (tests, demo runs, tenants)."""
        if not namespace:
            return self
        dlq = f"{namespace}.{self.dlq}" if self.dlq else None
        return dataclasses.replace(self, name=f"{namespace}.{self.name}", dlq=dlq)


DLQ = Topic(
    name="ctpipe.dlq",
    key="original message key (bytes, as received)",
    value="schemas.dlq envelope (JSON): reason, original bytes (base64), source topic/partition/offset",
    partitions=1,
    retention_ms=30 * DAY_MS,
    description="Dead letters: permanent failures of any stage, never transient ones.",
)

RAW = Topic(
    name="ctpipe.raw",
    key="session_id, else ctx_token, else content_telemetry_id (UTF-8)",
    value="raw emitter document bytes (CT session/event/batch, OA session or API body, CDN log record)",
    partitions=4,
    dlq=DLQ.name,
    description="Everything producers accept, as sent, before normalisation.",
)

EVENTS = Topic(
    name="ctpipe.events",
    key="none: the partition is partition_for(session key) of every envelope in the message",
    value="EVENTS envelopes (schemas.records), one object or a JSON array of them (records.pack)",
    partitions=4,
    dlq=DLQ.name,
    description="Canonical events in document envelopes, partitioned by session key.",
)

RETRIEVALS = Topic(
    name="ctpipe.retrievals",
    key="none: the partition is partition_for(content_telemetry_id, else event_id) of every event",
    value="canonical content_retrieved events (JSON), one object or a JSON array (records.pack)",
    partitions=4,
    dlq=DLQ.name,
    description="Retrievals repartitioned by Content-Telemetry-ID for observer correlation.",
)

SESSIONS = Topic(
    name="ctpipe.sessions",
    key="none (records of any session; the sink does not care)",
    value="schemas.records.SessionRecord (JSON), one object or a JSON array (records.pack)",
    partitions=4,
    dlq=DLQ.name,
    description="Sessions as assembled by sessionize, at close and at each late amendment.",
)

CORRELATED = Topic(
    name="ctpipe.correlated",
    key="none (records of any retrieval)",
    value="schemas.records.CorrelatedRetrieval (JSON), one object or a JSON array (records.pack)",
    partitions=4,
    dlq=DLQ.name,
    description="Retrievals with their observers (agent/edge/origin/index), corroborated or not.",
)

FUNNEL = Topic(
    name="ctpipe.funnel",
    key="none (deltas of any row; each carries its own contribution_id)",
    value="schemas.records.FunnelDelta (JSON), one object or a JSON array (records.pack)",
    partitions=4,
    dlq=DLQ.name,
    description="Aggregated funnel rows on their way to the ClickHouse sink.",
)

SMOKE = Topic(
    name="ctpipe.smoke",
    key="smoke key (UTF-8)",
    value='{"seq": int, "key": str} (JSON)',
    partitions=4,
    retention_ms=1 * DAY_MS,
    dlq=DLQ.name,
    description="Smoke workload of the demo and the foundation integration test.",
)

ALL: tuple[Topic, ...] = (DLQ, RAW, EVENTS, RETRIEVALS, SESSIONS, CORRELATED, FUNNEL, SMOKE)


def by_name(name: str) -> Topic:
    for topic in ALL:
        if topic.name == name:
            return topic
    raise KeyError(name)
