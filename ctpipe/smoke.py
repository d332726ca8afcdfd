"""The smoke pipeline: producer -> real Kafka -> Faust agent -> ClickHouse -> read back.

Wires the project's own pieces (``producers.smoke``, ``processors.smoke``, ``sinks.clickhouse``)
exactly as the services will be wired; used by ``ctpipe demo`` and the foundation integration
test.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clickhouse_connect.driver.client import Client

from deploy.kafka.topics import delete_topics, ensure_topics
from processors import smoke as smoke_processor
from processors.app import crash_reason, create_app
from producers.kafka import make_producer
from producers.smoke import expected_counts, publish_smoke
from schemas.topics import SMOKE
from sinks.clickhouse import insert_rows
from sinks.rows import SMOKE_KEY_COUNTS

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True, slots=True)
class SmokeResult:
    run_id: str
    topic: str
    expected: dict[str, int]
    stored: dict[str, int]
    produced: int
    seconds: float

    @property
    def exact(self) -> bool:
        return self.stored == self.expected


def read_counts(client: Client, run_id: str) -> dict[str, int]:
    t = SMOKE_KEY_COUNTS
    rows = client.query(
        f"SELECT key, sum(n) FROM {t.name} WHERE run_id = {{run_id:String}} GROUP BY key ORDER BY key",
        parameters={"run_id": run_id},
    ).result_rows
    return {str(k): int(n) for k, n in rows}


def run_smoke(
    *,
    bootstrap: str,
    client: Client,
    datadir: Path,
    app_id: str,
    messages: int = 10_000,
    keys: int = 10,
    timeout: float = 120.0,
    keep_topic: bool = False,
    progress: Progress | None = None,
) -> SmokeResult:
    """Push ``messages`` keyed messages through Kafka and Faust into ClickHouse; read them back."""
    run_id = uuid.uuid4().hex[:12]
    topic = SMOKE.namespaced(f"smoke-{run_id}")
    started = time.monotonic()
    ensure_topics(bootstrap, [topic])
    try:
        producer = make_producer(bootstrap)
        produced = publish_smoke(producer, topic.name, messages, keys)
        if progress:
            progress("produced", produced, messages)
        asyncio.run(
            _consume(bootstrap, client, datadir, app_id, run_id, topic.name, messages, timeout, progress)
        )
    finally:
        if not keep_topic:
            delete_topics(bootstrap, [topic.name])
    return SmokeResult(
        run_id=run_id,
        topic=topic.name,
        expected=dict(sorted(expected_counts(messages, keys).items())),
        stored=read_counts(client, run_id),
        produced=produced,
        seconds=time.monotonic() - started,
    )


async def _consume(
    bootstrap: str,
    client: Client,
    datadir: Path,
    app_id: str,
    run_id: str,
    topic: str,
    messages: int,
    timeout: float,
    progress: Progress | None,
) -> None:
    done = asyncio.Event()
    written = 0
    t = SMOKE_KEY_COUNTS

    def write(topic_name: str, part: smoke_processor.PartitionCounts) -> None:
        nonlocal written
        rows = [[run_id, topic_name, key, n] for key, n in sorted(part.counts.items())]
        token = f"{topic_name}:{part.partition}:{part.first_offset}-{part.last_offset}"
        insert_rows(client, t.name, t.columns, rows, dedup_token=token)
        written += part.total
        if progress:
            progress("stored", written, messages)
        if written >= messages:
            done.set()

    app = create_app(f"{app_id}-smoke-{run_id}", bootstrap, datadir / "faust" / run_id)
    smoke_processor.register(app, topic, write)
    await app.start()
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while not done.is_set():
            reason = crash_reason(app)
            if reason is not None:
                raise RuntimeError(f"the Faust consumer crashed: {reason!r}") from reason
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(
                    f"only {written} of {messages} messages reached ClickHouse within {timeout:.0f} s"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.25)
    finally:
        await app.stop()


def summary(counts: Counter[str] | dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
