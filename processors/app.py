"""The one Faust app of ctpipe.

Agents are registered on it by their own modules (``processors.<verb>.register``), so a process
runs exactly the agents it was built with (the worker, the demo, a test).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faust
import orjson
from faust.streams import _current_event

from schemas import dlq


def create_app(app_id: str, bootstrap: str, datadir: Path, **overrides: Any) -> faust.App:
    """A Faust app on the real broker. State stores default to memory; tables opt into rocksdict."""
    datadir.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "broker": f"kafka://{bootstrap}",
        "datadir": str(datadir),
        "store": "memory://",
        "web_enabled": False,
        "consumer_auto_offset_reset": "earliest",
        "topic_replication_factor": 1,
        "topic_allow_declare": True,
        "broker_commit_every": 1000,
        "broker_commit_interval": 1.0,
        "producer_acks": -1,
        "autodiscover": False,
    }
    options.update(overrides)
    return faust.App(app_id, **options)


def crash_reason(app: faust.App) -> BaseException | None:
    """Why the app (or its consumer/fetcher) crashed, if it did: lets callers fail fast."""
    for service in (app, getattr(app, "consumer", None), getattr(app, "_fetcher", None)):
        if service is not None and getattr(service, "crashed", False):
            reason = getattr(service, "crash_reason", None)
            return reason if isinstance(reason, BaseException) else RuntimeError(f"{service} crashed")
    return None


# --- state tables -------------------------------------------------------------------------------
# Faust tables locate a key's partition through the *current stream event* (changelog partition,
# and the rocksdb store's per-partition database). Stages write state outside that context (in
# batches from ``take_events``, where the current event is the batch's last one, and from timers,
# where there is none), so every table access names its partition explicitly through
# ``partition_scope``. A state value records its own partition for the timers.


class _ScopeMessage:
    __slots__ = ("partition", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition


class _ScopeEvent:
    __slots__ = ("__weakref__", "message")

    def __init__(self, topic: str, partition: int) -> None:
        self.message = _ScopeMessage(topic, partition)


@contextmanager
def partition_scope(topic: str, partition: int) -> Iterator[None]:
    """Table reads/writes inside this block go to ``partition`` (co-partitioned with ``topic``)."""
    stub = _ScopeEvent(topic, partition)
    token = _current_event.set(weakref.ref(stub))  # type: ignore[arg-type]
    try:
        yield
    finally:
        _current_event.reset(token)


def state_table(app: faust.App, name: str, partitions: int, help: str = "") -> Any:
    """A changelog-backed table of raw bytes keyed by raw bytes (values are orjson documents)."""
    return app.Table(
        name,
        default=None,
        partitions=partitions,
        key_type=bytes,  # -> the "raw" serializer for keys and values (faust.tables.base)
        value_type=bytes,
        help=help or None,
    )


def assigned_partitions(app: faust.App) -> frozenset[Any]:
    """The active topic partitions of this worker (changes on rebalance)."""
    try:
        return frozenset(app.assignor.assigned_actives())
    except Exception:  # not assigned yet
        return frozenset()


def busy(app: faust.App) -> bool:
    """True while rebalancing or recovering tables: timers must not touch state then."""
    return bool(getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False))


Send = tuple[str, bytes | None, bytes]  # (topic, key, value)


class StateStage:
    """A keyed, changelog-backed stateful stage: a batching agent plus a close timer.

    Subclasses say how a message changes a state (``apply_messages``), when the timer must look
    at a state again (``deadline``) and what it does then (``step``: close, expire). This class
    owns the table, the in-memory deadline index (key -> (deadline, partition); rebuilt from the
    table after every rebalance and for a drain, so only keys, never state, live in memory), the
    lock that keeps agent and timer from interleaving, and drains.
    """

    name: str = "stage"

    def __init__(
        self,
        app: faust.App,
        *,
        source_topic: str,
        dlq_topic: str,
        partitions: int,
        batch: int,
        within: float,
        tick: float,
        drain_after_idle: float | None,
    ) -> None:
        self.app = app
        self.source_topic = source_topic
        self.dlq_topic = dlq_topic
        self.batch = batch
        self.within = within
        self.drain_after_idle = drain_after_idle
        self.table = state_table(app, f"ctpipe-{self.name}", partitions, f"{self.name} state")
        self.index: dict[bytes, tuple[float, int]] = {}
        self.lock = asyncio.Lock()
        self.last_input = time.time()
        self._drain_requested = False
        self._drained = asyncio.Event()
        self._assigned: frozenset[Any] | None = None
        source = app.topic(source_topic, key_serializer="raw", value_serializer="raw")

        @app.agent(source, name=f"ctpipe-{self.name}")
        async def agent(stream: faust.StreamT[bytes]) -> None:
            async for events in stream.take_events(self.batch, within=self.within):  # type: ignore[attr-defined]
                async with self.lock:
                    await self.process([e.message for e in events], time.time())

        @app.timer(tick, name=f"ctpipe-{self.name}-timer")
        async def timer() -> None:
            if busy(self.app):
                return
            async with self.lock:
                await self.close_due(time.time())

        self.agent = agent

    # -- subclass hooks -----------------------------------------------------------------------
    def route(self, msg: Any) -> bytes | None:
        """The state key of a message, or None to skip it here (it needs no state)."""
        return msg.key if msg.key is not None else None

    def new_state(self, key: bytes, partition: int) -> dict[str, Any]:
        raise NotImplementedError

    def apply_messages(self, state: dict[str, Any], msgs: list[Any], now: float, sends: list[Send]) -> bool:
        """Apply messages of one key; append DLQ/immediate outputs to ``sends``; True if changed."""
        raise NotImplementedError

    def stateless(self, msgs: list[Any], now: float, sends: list[Send]) -> None:
        """Messages ``route`` sent nowhere (default: ignored)."""

    def deadline(self, state: dict[str, Any]) -> float | None:
        raise NotImplementedError

    def step(self, state: dict[str, Any], now: float, drain: bool) -> tuple[Any, list[Send]]:
        """Timer action on one due state: (new state or None if unchanged, outputs)."""
        raise NotImplementedError

    # -- machinery ----------------------------------------------------------------------------
    def request_drain(self) -> asyncio.Event:
        """Close everything open at the next tick; the returned event is set when done."""
        self._drained = asyncio.Event()
        self._drain_requested = True
        return self._drained

    def dead_letter(self, msg: Any, reason: str) -> Send:
        letter = dlq.make(
            msg.value or b"",
            reason=reason,
            stage=self.name,
            key=msg.key,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
        )
        return (self.dlq_topic, msg.key, dlq.encode(letter))

    async def process(self, msgs: list[Any], now: float) -> None:
        """One batch: load each key's state once, apply its messages, store it once."""
        self.last_input = now
        by_key: dict[bytes, list[Any]] = {}
        skipped: list[Any] = []
        for msg in msgs:
            key = self.route(msg)
            if key is None:
                skipped.append(msg)
            else:
                by_key.setdefault(key, []).append(msg)
        sends: list[Send] = []
        if skipped:
            self.stateless(skipped, now, sends)
        for key, group in by_key.items():
            partition = group[0].partition
            with partition_scope(group[0].topic, partition):
                raw = self.table.get(key)
                state = orjson.loads(raw) if raw is not None else self.new_state(key, partition)
                if self.apply_messages(state, group, now, sends) or raw is None:
                    self.table[key] = orjson.dumps(state)
                    due = self.deadline(state)
                    if due is not None:
                        self.index[key] = (due, partition)
        producer = self.app.producer
        for topic, k, v in sends:  # flushed by Faust before the source offsets are committed
            await producer.send(topic, k, v, None, None, None)

    def _rescan(self) -> None:
        self.index.clear()
        for key, raw in list(self.table.items()):
            if raw is None:
                continue
            state = orjson.loads(raw)
            due = self.deadline(state)
            if due is not None:
                self.index[bytes(key)] = (due, int(state["p"]))

    async def close_due(self, now: float) -> int:
        """Run ``step`` on every due state (every indexed one on drain): emit, await delivery,
        then store, so a crash in between re-emits (same ids) rather than loses."""
        assigned = assigned_partitions(self.app)
        drain = self._drain_requested
        if self.drain_after_idle is not None and now - self.last_input >= self.drain_after_idle:
            drain = True
        if assigned != self._assigned or self._drain_requested:
            self._assigned = assigned
            self._rescan()
        due = [(k, p) for k, (d, p) in self.index.items() if drain or d <= now]
        writes: list[tuple[bytes, int, dict[str, Any]]] = []
        sends: list[Send] = []
        for key, partition in due:
            with partition_scope(self.source_topic, partition):
                raw = self.table.get(key)
            if raw is None:
                self.index.pop(key, None)
                continue
            state = orjson.loads(raw)
            new, out = self.step(state, now, drain)
            if new is None:
                d = self.deadline(state)
                if d is None:
                    self.index.pop(key, None)
                else:
                    self.index[key] = (d, partition)
                continue
            writes.append((key, partition, new))
            sends.extend(out)
        if sends:
            producer = self.app.producer
            futures = [await producer.send(t, k, v, None, None, None) for t, k, v in sends]
            await asyncio.gather(*futures)
        for key, partition, new in writes:
            with partition_scope(self.source_topic, partition):
                self.table[key] = orjson.dumps(new)
            d = self.deadline(new)
            if d is None:
                self.index.pop(key, None)
            else:
                self.index[key] = (d, partition)
        if self._drain_requested:
            self._drain_requested = False
            self._drained.set()
        return len(writes)
