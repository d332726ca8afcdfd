"""``ctpipe sink``: run the ClickHouse sink process (``sinks.consumer``).

Input: the namespaced FUNNEL, SESSIONS, CORRELATED and EVENTS topics on the configured broker.
Output: rows in ClickHouse (``sinks/ddl``), dead letters on the DLQ, a one-line summary on
stderr. Migrates the schema and creates missing topics first. Exit 0 on a clean stop (Ctrl-C /
SIGTERM, or caught up with ``--until-caught-up``), 1 on an error, 130 when interrupted hard.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import TextIO

from ctpipe.settings import Settings


def run(
    settings: Settings,
    *,
    batch_rows: int = 10_000,
    batch_seconds: float = 1.0,
    group: str | None = None,
    until_caught_up: bool = False,
    timeout: float | None = None,
    retention_days: int | None = None,
    err: TextIO = sys.stderr,
) -> int:
    """Run the sink until stopped (or caught up); return the exit code."""
    from confluent_kafka import KafkaException

    from deploy.kafka.topics import TopicError, ensure_topics
    from producers.kafka import make_producer
    from schemas.topics import CORRELATED, DLQ, EVENTS, FUNNEL, SESSIONS
    from sinks.clickhouse import ClickHouseError, connect, migrate
    from sinks.consumer import ClickHouseSink, SinkConfig

    days = retention_days or settings.clickhouse_retention_days
    stopping = False

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    try:
        client = connect(settings.clickhouse_url)
        migrate(client, retention_days=days)
        ns = settings.topic_namespace
        ensure_topics(
            settings.bootstrap, [t.namespaced(ns) for t in (DLQ, EVENTS, SESSIONS, CORRELATED, FUNNEL)]
        )
        config = SinkConfig(
            bootstrap=settings.bootstrap,
            group_id=group or f"{settings.app_id}-sink",
            namespace=ns,
            batch_rows=batch_rows,
            batch_seconds=batch_seconds,
        )
        sink = ClickHouseSink(config, client, producer=make_producer(settings.bootstrap))
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            stats = sink.run(stop=lambda: stopping, until_caught_up=until_caught_up, timeout=timeout)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    except (ClickHouseError, TopicError, KafkaException, TimeoutError, ValueError) as exc:
        print(f"error: {exc}", file=err)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return 130
    print(
        f"sink: {stats.messages} records, {stats.rows_inserted} rows in {stats.batches} batches, "
        f"{stats.duplicates} duplicate contributions dropped, {stats.dead_letters} dead letters, "
        f"{stats.transient_errors} transient errors retried, {stats.rebuilt_batches} batches rebuilt",
        file=err,
    )
    return 0
