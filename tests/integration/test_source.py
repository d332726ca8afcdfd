"""``processors.source.BatchSource`` (the normalize stage's RAW input) against the real broker:
offsets are committed only for handled batches whose outputs the broker acknowledged."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from deploy.kafka.topics import ensure_topics, group_lag, message_count
from processors.output import DeliveryFailed, Output
from processors.source import BatchSource
from producers.kafka import make_producer
from schemas.topics import RAW
from tests.infra import Infra

pytestmark = pytest.mark.integration


def publish(bootstrap: str, topic: str, n: int) -> None:
    producer = make_producer(bootstrap)
    for i in range(n):
        producer.produce(topic, f"v{i}".encode(), f"k{i}".encode())
    assert producer.flush(30) == 0


async def until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def source(
    infra: Infra,
    unique: str,
    topic: str,
    out: Output,
    handler: Callable[[list[Any]], Awaitable[None]],
    **kw: Any,
) -> BatchSource:
    return BatchSource(
        bootstrap=infra.bootstrap, group=f"{unique}-g", topic=topic, output=out, handler=handler, **kw
    )


async def test_every_handled_message_is_forwarded_then_committed(infra: Infra, unique: str) -> None:
    raw, copy = RAW.namespaced(unique), RAW.namespaced(f"{unique}c")
    ensure_topics(infra.bootstrap, [raw, copy])
    publish(infra.bootstrap, raw.name, 500)
    out = Output(infra.bootstrap)
    batches: list[int] = []

    async def forward(msgs: list[Any]) -> None:
        batches.append(len(msgs))
        for m in msgs:
            out.send(copy.name, m.key(), m.value())

    src = source(infra, unique, raw.name, out, forward, batch=64, commit_messages=100)
    task = asyncio.create_task(src.run())
    await until(lambda: src.consumed >= 500, "all 500 consumed")
    await until(lambda: group_lag(infra.bootstrap, f"{unique}-g", [raw.name]) == 0, "committed")
    assert src.assigned == frozenset(range(raw.partitions))
    await src.stop()
    await task
    assert src.consumed == 500 and max(batches) <= 64 and src.commits >= 3  # every >= 100 handled + the last
    assert message_count(infra.bootstrap, copy.name) == 500  # committed only once forwarded
    assert src.assigned == frozenset()  # left the group
    out.close()


async def test_a_batch_never_handled_is_never_committed(infra: Infra, unique: str) -> None:
    raw = RAW.namespaced(unique)
    ensure_topics(infra.bootstrap, [raw])
    publish(infra.bootstrap, raw.name, 40)
    out = Output(infra.bootstrap)
    parked = asyncio.Event()
    handled: list[int] = []

    async def park_second(msgs: list[Any]) -> None:
        if handled:  # the second batch: parked for ever (processors.app.park_unacknowledged)
            parked.set()
            await asyncio.Event().wait()
        handled.append(len(msgs))

    src = source(infra, unique, raw.name, out, park_second, batch=10, commit_messages=1)
    task = asyncio.create_task(src.run())
    await asyncio.wait_for(parked.wait(), 30)
    await asyncio.sleep(1.5)  # past commit_every: whatever could be committed is
    await src.stop(timeout=1.0)  # the parked batch is cancelled after 1 s, uncommitted
    assert task.cancelled()
    lag = group_lag(infra.bootstrap, f"{unique}-g", [raw.name])
    assert lag == 40 - handled[0] and handled == [10], (lag, handled)
    out.close()


async def test_a_lost_output_fails_the_source_and_commits_nothing(infra: Infra, unique: str) -> None:
    raw, copy = RAW.namespaced(unique), RAW.namespaced(f"{unique}c")
    ensure_topics(infra.bootstrap, [raw, copy])
    publish(infra.bootstrap, raw.name, 20)
    # the client allows 3 MB, the broker (default message.max.bytes ~1 MB) refuses it
    out = Output(infra.bootstrap, **{"message.max.bytes": 4_000_000, "batch.size": 4_000_000})

    async def too_large(msgs: list[Any]) -> None:
        out.send(copy.name, None, os.urandom(3_000_000))  # random: lz4 cannot shrink it

    src = source(infra, unique, raw.name, out, too_large, batch=100, commit_messages=1)
    with pytest.raises(DeliveryFailed):
        await asyncio.wait_for(src.run(), 60)
    assert isinstance(src.failed, DeliveryFailed)  # what processors.worker.failure reports
    assert group_lag(infra.bootstrap, f"{unique}-g", [raw.name]) == 20
    out.close()
