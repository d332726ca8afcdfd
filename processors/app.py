"""The one Faust app of ctpipe.

Agents are registered on it by their own modules (``processors.<verb>.register``), so a process
runs exactly the agents it was built with (the worker, the demo, a test).
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faust
import orjson
from faust.streams import _current_event

from processors import batch
from processors.deadlines import Deadlines
from processors.output import ChangelogStore, ChangelogTable, Output, PartitionState, StateMemory
from processors.source import BatchSource
from schemas import dlq


class PipelineApp(faust.App):
    """A Faust app whose records and changelog writes go through ``output`` (librdkafka,
    ``processors.output``); Faust's own producer is flushed after it, before every commit."""

    output: Output
    #: the memory budget every RocksDB state database of this app shares (None: Faust's own
    #: per-database caches; ``processors.output.StateMemory``)
    state_memory: StateMemory | None = None
    #: stateless stages' inputs (``processors.source``): started with the app, stopped first
    sources: list[BatchSource]

    def add_source(self, source: BatchSource) -> None:
        """Run ``source`` from app start (``app.task``) until ``on_stop``."""
        self.sources.append(source)

        async def run() -> None:
            await source.run()

        self.task(run)

    def _new_producer(self) -> Any:
        producer = super()._new_producer()
        faust_flush = producer.flush
        output = self.output

        async def flush() -> None:
            await output.flush()  # before Faust commits offsets: see processors.output
            await faust_flush()

        producer.flush = flush  # type: ignore[method-assign]
        return producer

    async def on_stop(self) -> None:
        for source in self.sources:  # final flush + commit while the output is still open
            try:
                await source.stop()
            except Exception as exc:  # never abort Faust's stop (its threads must end)
                self.log.warning("%s: stop failed: %r", source.topic, exc)
        await super().on_stop()  # stops the consumer, flushes (above)
        try:
            left = self.output.close()
        except Exception as exc:  # never abort Faust's stop (its threads must end)
            self.log.warning("output: close failed: %r", exc)
            return
        if left:
            self.log.warning("output: %d record(s) unacknowledged at stop (reprocessed on restart)", left)


def create_app(app_id: str, bootstrap: str, datadir: Path, **overrides: Any) -> PipelineApp:
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
        # A crashed worker's partitions move to its successor after this (Faust's default 60 s);
        # heartbeats run on the consumer's own thread, so busy agents do not miss them.
        "broker_session_timeout": 20.0,
        "producer_acks": -1,  # records and changelogs go through ``PipelineApp.output`` instead
        "autodiscover": False,
    }
    options.update(overrides)
    app = PipelineApp(app_id, **options)
    app.output = Output(bootstrap, client_id=app_id)
    app.sources = []
    return app


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


def state_table(app: PipelineApp, name: str, partitions: int, help: str = "") -> Any:
    """A changelog-backed table of raw bytes keyed by raw bytes (values are orjson documents);
    its changelog writes go through the app's ``Output``."""
    table = ChangelogTable(
        app,
        name=name,
        default=None,
        beacon=app.tables.beacon,
        partitions=partitions,
        key_type=bytes,  # -> the "raw" serializer for keys and values (faust.tables.base)
        value_type=bytes,
        help=help or None,
    )
    app.output.track(table)
    return app.tables.add(table)


class ScopedState:
    """The same through Faust's table API in the partition's scope (stores other than rocksdb,
    e.g. ``memory://`` in tests)."""

    __slots__ = ("_table", "_topic", "partition")

    def __init__(self, table: Any, topic: str, partition: int) -> None:
        self._table, self._topic, self.partition = table, topic, partition

    def get(self, key: bytes) -> bytes | None:
        with partition_scope(self._topic, self.partition):
            return self._table.get(key)  # type: ignore[no-any-return,unused-ignore]

    def set(self, key: bytes, value: bytes) -> None:
        with partition_scope(self._topic, self.partition):
            self._table[key] = value

    def delete(self, key: bytes) -> None:
        with partition_scope(self._topic, self.partition):
            if self._table.get(key) is not None:
                del self._table[key]


class Health:
    """What a stage reports to its host: the failure that parked a batch (None: healthy)."""

    __slots__ = ("failed",)

    def __init__(self) -> None:
        self.failed: BaseException | None = None


class Backoff:
    """Retry pacing of a batch: 0.1 s doubling to 2 s; after ``RETRY_FOR`` seconds the batch is
    parked (``park_unacknowledged``) and ``failed`` never returns."""

    def __init__(self, app: faust.App, stage: str, health: Health) -> None:
        self.app, self.stage, self.health = app, stage, health
        self.delay = 0.1
        self.give_up = time.monotonic() + RETRY_FOR

    async def failed(self, exc: BaseException) -> None:
        if time.monotonic() >= self.give_up:
            await park_unacknowledged(self.app, self.stage, exc, self.health)
        self.app.log.warning("%s: batch failed, retrying in %.1f s: %r", self.stage, self.delay, exc)
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, 2.0)


async def send_reliably(
    app: PipelineApp, stage: str, sends: list[tuple[str, bytes | None, bytes, int | None]], health: Health
) -> None:
    """Enqueue (topic, key, value, partition) messages on the app's ``Output``, retrying a
    failing send (``Backoff``). Delivery is awaited by the flush before Faust's next commit."""
    output = app.output
    backoff = Backoff(app, stage, health)
    i = 0
    while i < len(sends):
        topic, key, value, partition = sends[i]
        try:
            output.send(topic, key, value, partition)
            i += 1
        except Exception as exc:
            await backoff.failed(exc)
    output.poll()


async def park_unacknowledged(app: faust.App, stage: str, exc: BaseException, health: Health) -> None:
    """A batch failed: never let it be acknowledged. Park this agent forever.

    Faust's ``take_events`` acknowledges a batch when the agent leaves it - also when it leaves
    by an exception - and the consumer then commits the offsets of messages that were never
    processed (lost). Parked, the batch stays unacknowledged, so its offsets are never
    committed. ``health.failed`` tells the host, which must then end the process WITHOUT a
    graceful Faust stop (that would close the generator, acknowledge and commit the batch):
    ``ctpipe worker`` exits at once, and a restart reprocesses the batch (at-least-once; every
    effect is idempotent).
    """
    health.failed = exc
    app.log.critical("%s: a batch failed and was NOT acknowledged; the worker must exit: %r", stage, exc)
    app.conf.stream_wait_empty = False  # a stop must not wait for this batch
    await asyncio.Event().wait()


def assigned_partitions(app: faust.App) -> frozenset[Any]:
    """The active topic partitions of this worker (changes on rebalance); empty when unknown."""
    known = known_assignment(app)
    return known if known is not None else frozenset()


def known_assignment(app: faust.App) -> frozenset[Any] | None:
    """The active topic partitions of this worker, or None while the assignor cannot tell (not
    assigned yet, or mid-rebalance)."""
    try:
        return frozenset(app.assignor.assigned_actives())
    except Exception:
        return None


def busy(app: faust.App) -> bool:
    """True while rebalancing or recovering tables: timers must not touch state then."""
    return bool(getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False))


Send = batch.Send  # (topic, key, value)
#: A batch of a stateful stage is processed in parts of at most this much input (``parts``):
#: its messages are packed (up to 512 KiB each), and a whole batch decoded at once held ~0.5 GB
#: of Python objects - memory first touched (page faults: a quarter of the worker's CPU went to
#: the kernel) instead of the same few MB reused, hot in cache (bench/PIPELINE_BENCH.md).
PART_BYTES = 4 * 1024 * 1024
#: Keys closed per output flush (a drain closes every open key: the same bound on its memory).
CLOSE_PART = 4096
#: The close timer re-reads stored states to check the deadline index (``_audit``): per tick
#: enough for a round over the open keys every ``AUDIT_ROUND`` seconds, at least ``AUDIT_KEYS``.
AUDIT_ROUND = 600.0
AUDIT_KEYS = 100
#: With a state retention (``StateStage.retention_us``) the audit also reads every stored key at
#: least once per ``SWEEP_ROUND`` seconds, and deletes the tombstones that expired.
SWEEP_ROUND = 3600.0
#: Where a table partition keeps its stream time (the newest event time it accepted, epoch us).
#: No state key can be this: session keys never contain NUL (sessionize ``items``), and a
#: Content-Telemetry-ID with one is dead-lettered (correlate ``items``).
STREAM_TIME_KEY = b"\x00ctpipe\x00stream-time"
#: An event may move the stream time at most this far ahead of the wall clock (a clock running
#: ahead, a mistyped year): it would otherwise make every later event look too old.
STREAM_TIME_SKEW_US = 3_600_000_000
_HOUR_US = 3_600_000_000
RETENTION_REASON = "late:beyond-retention"


def advance_stream_time(current: int, newest: int, now: float) -> int:
    """The stream time after accepting events up to ``newest`` (epoch us) at wall time ``now``."""
    return max(current, min(newest, int(now * 1_000_000) + STREAM_TIME_SKEW_US))


def stream_time_of(store: Any) -> int:
    """A table partition's stream time (0: none yet); ``store``: its ``PartitionState`` /
    ``ScopedState`` or its RocksDB database."""
    raw = store.get(STREAM_TIME_KEY)
    return int(raw) if raw else 0


def expired(state: Mapping[str, Any], stream_time: int, retention_us: int) -> bool:
    """Whether a tombstone may be forgotten: the hour of its newest event (``mt``, epoch us) ended
    ``retention_us`` before the stream time. Events for its key that the stage still accepts
    afterwards are newer than that hour (older ones, for a key without state, are refused:
    ``StateStage.refuse_old``), so a new state of the key counts only events its old one never
    held, into rows of later hours: no contribution id of the old one can come back. A
    tombstone without ``mt`` (written before retention existed) is kept."""
    mt = state.get("mt")
    if not state.get("tomb") or type(mt) is not int:
        return False
    return stream_time >= (mt // _HOUR_US + 1) * _HOUR_US + retention_us


#: How long a stage retries a failing batch before it parks it and the worker must exit.
RETRY_FOR = 60.0
Item = batch.Item  # (the Kafka message it came in, one decoded record)


def parts(msgs: list[Any], limit: int) -> list[list[Any]]:
    """Consecutive runs of ``msgs`` whose values add up to at most ``limit`` bytes (a larger
    message alone); order kept, nothing dropped."""
    out: list[list[Any]] = []
    part: list[Any] = []
    size = 0
    for m in msgs:
        n = len(m.value or b"")
        if part and size + n > limit:
            out.append(part)
            part, size = [], 0
        part.append(m)
        size += n
    if part:
        out.append(part)
    return out


class StateStage:
    """A keyed, changelog-backed stateful stage: a batching agent plus a close timer.

    Subclasses say how a message splits into records and which state each belongs to
    (``items``), how records change a state (``apply_items``), when the timer must look at a
    state again (``deadline``) and what it does then (``step``: close, expire). This class owns
    the table, the deadline index (``Deadlines``: key -> (deadline, partition) in one-second
    buckets, so a tick touches only due keys; rebuilt from the table after every rebalance, so only
    keys, never state, live in memory), the lock that keeps agent and timer from
    interleaving, output packing and drains.

    Outputs: records to the topics in ``packed_topics`` are packed (``schemas.records.pack``)
    into as few messages as the batch or tick allows; dead letters travel one per message.
    """

    name: str = "stage"
    #: event time (us) a tombstone is kept past its newest event's hour (None: for ever); see
    #: ``expired`` and ``refuse_old``
    retention_us: int | None = None
    #: the partition of the table being worked on (set by ``process`` and ``close_due`` before
    #: they call the hooks, which read and write further keys of that partition through it)
    state: PartitionState | ScopedState

    def __init__(
        self,
        app: PipelineApp,
        *,
        source_topic: str,
        dlq_topic: str,
        partitions: int,
        batch: int,
        within: float,
        tick: float,
        drain_after_idle: float | None,
        packed_topics: frozenset[str] = frozenset(),
        retention: float | None = None,
    ) -> None:
        self.app = app
        if retention is not None and retention <= 0:
            raise ValueError(f"state retention must be > 0 s (or None), got {retention}")
        self.retention_us = None if retention is None else int(retention * 1_000_000)
        self.expired = 0  # tombstones deleted after the retention (``expired``)
        self.source_topic = source_topic
        self.dlq_topic = dlq_topic
        self.packed_topics = packed_topics
        self.batch = batch
        self.within = within
        self.drain_after_idle = drain_after_idle
        self.tick = tick
        self.table = state_table(app, f"ctpipe-{self.name}", partitions, f"{self.name} state")
        self.deadlines = Deadlines()
        self.lock = asyncio.Lock()
        self.last_input = time.time()
        self._drain_requested = False
        self._drained = asyncio.Event()
        self._assigned: frozenset[Any] | None = None
        self.health = Health()  # .failed: set when a batch could not be processed
        # CPU seconds of the event loop's thread in ``process`` (batches) and in closes (timer)
        self.cpu_process = 0.0
        self.cpu_close = 0.0
        # index upkeep checks: open keys a drain found in the table but not in the index, and
        # indexed keys a close found no state for (both 0 unless something is wrong)
        self.index_misses = 0
        self.index_stale = 0
        # where the index audit resumes: (partition, last key read there or None = from the start)
        self._audit_at: tuple[int, bytes | None] = (0, None)
        source = app.topic(source_topic, key_serializer="raw", value_serializer="raw")

        @app.agent(source, name=f"ctpipe-{self.name}")
        async def agent(stream: faust.StreamT[bytes]) -> None:
            async for events in stream.take_events(self.batch, within=self.within):  # type: ignore[attr-defined]
                await self._process_reliably([e.message for e in events])

        @app.timer(tick, name=f"ctpipe-{self.name}-timer")
        async def timer() -> None:
            if busy(self.app):
                return
            try:
                async with self.lock:
                    await self.close_due(time.time())
            except Exception as exc:  # e.g. a store closed by a rebalance: the next tick retries
                # (a close is emitted before its state is stored: a retry re-emits the same ids)
                self.app.log.warning("%s: close timer failed, retrying next tick: %r", self.name, exc)
                self._assigned = None  # rebuild the deadline index from the table next time

        self.agent = agent

    def partition_state(self, partition: int) -> PartitionState | ScopedState:
        """Access to one partition of the table (co-partitioned with the source topic)."""
        data = self.table.data
        if isinstance(data, ChangelogStore):
            return PartitionState(
                data._db_for_partition(partition), self.app.output, self.table.changelog_topic_name, partition
            )
        return ScopedState(self.table, self.source_topic, partition)

    # -- subclass hooks -----------------------------------------------------------------------
    def items(self, msg: Any, sends: list[Send]) -> list[tuple[bytes | None, Any]]:
        """A message's records as (state key, or None when it needs no state; record).
        Undecodable input is dead-lettered into ``sends`` here."""
        raise NotImplementedError

    def new_state(self, key: bytes, partition: int) -> dict[str, Any]:
        raise NotImplementedError

    def apply_items(self, state: dict[str, Any], items: list[Item], now: float, sends: list[Send]) -> bool:
        """Apply the records of one key; append DLQ/immediate outputs to ``sends``; True if changed."""
        raise NotImplementedError

    def stateless(self, items: list[Item], now: float, sends: list[Send]) -> None:
        """Records ``items`` gave no state key (default: ignored)."""

    def deadline(self, state: dict[str, Any]) -> float | None:
        raise NotImplementedError

    def refuse_old(self, items: list[Item], horizon: int, sends: list[Send]) -> list[Item]:
        """Records for a key with no stored state: dead-letter (``RETENTION_REASON``) those whose
        event time is before ``horizon`` (epoch us: the partition's stream time - retention) and
        return the rest. Such a key may have had a state that expired: its events are refused,
        not counted a second time. Only called with a retention."""
        raise NotImplementedError

    def step(self, state: dict[str, Any], now: float, drain: bool) -> tuple[Any, list[Send]]:
        """Timer action on one due state: (new state or None if unchanged, outputs)."""
        raise NotImplementedError

    # -- machinery ----------------------------------------------------------------------------
    async def _process_reliably(self, msgs: list[Any]) -> None:
        """``process`` a batch, in parts of at most ``PART_BYTES`` of input (``parts``); on an
        exception (an I/O failure, a store closed by a rebalance, a bug - never bad input, which
        is dead-lettered) retry the part with backoff, without the messages of partitions this
        worker lost meanwhile (their new owner processes them from its committed offset).
        Retrying is safe: applying a record twice changes nothing (ids are deduplicated in state)
        and re-emitted outputs carry the same ids. After ``RETRY_FOR`` seconds the batch is parked
        unacknowledged and the worker must exit (``park_unacknowledged``): leaving the batch would
        acknowledge it unprocessed."""
        for part in parts(msgs, PART_BYTES):
            backoff = Backoff(self.app, self.name, self.health)
            while True:
                try:
                    async with self.lock:
                        cpu = time.thread_time()
                        try:
                            await self.process(part, time.time())
                        finally:
                            self.cpu_process += time.thread_time() - cpu
                    break
                except Exception as exc:
                    await backoff.failed(exc)
                    # Only partitions this worker is known to have lost are left out: while the
                    # assignor cannot tell (it raises mid-rebalance), wait - an empty answer
                    # would drop the whole part and acknowledge it unprocessed.
                    while (assigned := None if busy(self.app) else known_assignment(self.app)) is None:
                        await asyncio.sleep(0.1)
                    part = [m for m in part if m.tp in assigned]

    def cpu_stats(self) -> dict[str, Any]:
        """Open keys tracked, and the event loop thread's CPU seconds in batches / in closes."""
        return {
            "tracked": len(self.index),
            "expired": self.expired,
            "cpu_process_s": round(self.cpu_process, 3),
            "cpu_close_s": round(self.cpu_close, 3),
            "index_misses": self.index_misses,
            "index_stale": self.index_stale,
        }

    def request_drain(self) -> asyncio.Event:
        """Close everything open at the next tick; the returned event is set when done."""
        self._drained = asyncio.Event()
        self._drain_requested = True
        return self._drained

    def dead_letter(self, msg: Any, reason: str, value: bytes | None = None) -> Send:
        """A DLQ record for ``msg`` (or for one record of it: ``value`` = that record's bytes)."""
        letter = dlq.make(
            value if value is not None else (msg.value or b""),
            reason=reason,
            stage=self.name,
            key=msg.key,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
        )
        return (self.dlq_topic, msg.key, dlq.encode(letter))

    @property
    def index(self) -> dict[bytes, tuple[float, int]]:
        """Open key -> (deadline, partition)."""
        return self.deadlines.index

    def _schedule(self, key: bytes, due: float | None, partition: int) -> None:
        self.deadlines.set(key, due, partition)

    def _due(self, now: float, drain: bool) -> list[tuple[bytes, int]]:
        """Keys whose deadline passed (every indexed key on drain), each once, each taken out of
        the index until ``_close`` schedules it again."""
        return self.deadlines.pop_all() if drain else self.deadlines.pop_due(now)

    def _send(self, sends: list[Send]) -> None:
        """Enqueue outputs on the app's ``Output`` (packed where declared)."""
        batch.send_all(self.app.output, sends, self.packed_topics)

    async def process(self, msgs: list[Any], now: float) -> None:
        """One batch: load each key's state once, apply its records, store it once
        (``processors.batch``: the loops, compiled)."""
        self.last_input = now
        sends: list[Send] = []
        by_partition, skipped = batch.group_records(self, msgs, sends)
        if skipped:
            self.stateless(skipped, now, sends)
        retention = self.retention_us
        for (_topic, partition), by_key in by_partition.items():
            self.state = store = self.partition_state(partition)
            if retention is None:
                batch.apply_groups(self, store, partition, by_key, now, sends, None)
                continue
            # read per part, not cached: another worker may have owned the partition meanwhile
            stream_time = stream_time_of(store)
            horizon = stream_time - retention if stream_time else None
            newest = batch.apply_groups(self, store, partition, by_key, now, sends, horizon)
            advanced = advance_stream_time(stream_time, newest, now)
            if advanced > stream_time:
                store.set(STREAM_TIME_KEY, str(advanced).encode())
        # Enqueued only: Faust flushes the output before it commits the source offsets.
        self._send(sends)

    def _rescan(self) -> int:
        """Rebuild the deadline index from the table (the active partitions' states); returns
        how many scheduled keys the table had that the index had not (0 when it was right)."""
        before = self.index
        self.deadlines = Deadlines()
        missed = 0
        for key, raw in self._stored():
            state = orjson.loads(raw)
            self._schedule(key, self.deadline(state), int(state["p"]))
            if key in self.index and key not in before:
                missed += 1
        return missed

    def _schedule_unindexed(self) -> int:
        """Schedule every stored open state the deadline index lacks; returns how many. What a
        drain needs of ``_rescan`` (it closes every indexed key whatever its deadline): only the
        states missing from the index are read and decoded (a full rescan decoded every stored
        state, ~3 % of a bench run's worker CPU)."""
        index, missed = self.index, 0
        for key, raw in self._stored(skip=index):
            state = orjson.loads(raw)
            due = self.deadline(state)
            if due is not None:
                self._schedule(key, due, int(state["p"]))
                missed += 1
        return missed

    def _state_partitions(self, assigned: frozenset[Any]) -> list[int]:
        """The table partitions among ``assigned`` (its changelog's), in order."""
        changelog = self.table.changelog_topic_name
        return sorted(tp.partition for tp in assigned if tp.topic == changelog)

    def _stored(self, skip: Mapping[bytes, Any] | None = None) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of every state in the active partitions (but the keys in ``skip``, whose
        values are then never read): straight from their RocksDB databases (Faust's table
        iteration cost ~4x as much), through the table for other stores."""
        data = self.table.data
        if not isinstance(data, ChangelogStore):
            for key, raw in list(self.table.items()):
                if raw is not None and key != STREAM_TIME_KEY and (skip is None or bytes(key) not in skip):
                    yield bytes(key), raw
            return
        for partition in self._state_partitions(assigned_partitions(self.app)):
            db = data._db_for_partition(partition)
            if skip is None:
                for key, raw in db.items():
                    if key != data.offset_key and key != STREAM_TIME_KEY:
                        yield key, raw
                continue
            for key in db.keys():  # noqa: SIM118 - an Rdict is not iterable (keys() is)
                if key != data.offset_key and key != STREAM_TIME_KEY and key not in skip:
                    raw = db.get(key)
                    if raw is not None:
                        yield key, raw

    def _stored_estimate(self, assigned: frozenset[Any]) -> int:
        """RocksDB's estimate of the keys stored in the active partitions (0 for other stores)."""
        data = self.table.data
        if not isinstance(data, ChangelogStore):
            return 0
        total = 0
        for partition in self._state_partitions(assigned):
            total += data._db_for_partition(partition).property_int_value("rocksdb.estimate-num-keys") or 0
        return total

    def _audit(self, assigned: frozenset[Any], budget: int) -> int:
        """Re-read up to ``budget`` stored states, resuming where the last audit stopped (a
        round over every active partition takes keys / ``budget`` ticks), and schedule an open
        state the deadline index lacks; returns how many it lacked (counted, logged).

        The index is a cache of the table's deadlines; a key it lost would otherwise stay open
        until the next rebalance or drain (a bench run once ended with 320 groups stored open,
        never closed: cause not found, bench/PIPELINE_BENCH.md). A spurious entry is harmless:
        ``_close`` reads the current state. RocksDB stores only (others are test stores); a fresh
        iterator per tick, so none pins memtables between ticks.

        With a retention, the tombstones it reads that ``expired`` by their partition's stream
        time are deleted (store and changelog; counted in ``self.expired``)."""
        data = self.table.data
        partitions = self._state_partitions(assigned)
        if not isinstance(data, ChangelogStore) or not partitions:
            return 0

        def after(p: int) -> int:
            return next((q for q in partitions if q > p), partitions[0])

        partition, last = self._audit_at
        if partition not in partitions:
            partition, last = after(partition), None
        index, missed, retention = self.index, 0, self.retention_us
        for _ in range(len(partitions)):  # at most one pass over the partitions per tick
            finished = True
            db = data._db_for_partition(partition)
            stream_time = stream_time_of(db) if retention is not None else 0
            store = self.partition_state(partition) if stream_time else None
            for key, raw in db.items(from_key=last):
                if key == last:  # read by the last tick
                    continue
                if not budget:
                    finished = False
                    break
                budget -= 1
                last = key
                if key == data.offset_key or key == STREAM_TIME_KEY or key in index:
                    continue
                state = orjson.loads(raw)
                if store is not None and retention is not None and expired(state, stream_time, retention):
                    store.delete(key)  # + a changelog tombstone
                    self.expired += 1
                    continue
                due = self.deadline(state)
                if due is not None:
                    self._schedule(key, due, partition)
                    missed += 1
            if not finished:
                break
            partition, last = after(partition), None
            if not budget:
                break
        self._audit_at = (partition, last)
        if missed:
            self.index_misses += missed
            self.app.log.warning(
                "%s: audit found %d open key(s) the deadline index had lost", self.name, missed
            )
        return missed

    async def close_due(self, now: float) -> int:
        """Run ``step`` on every due state (every indexed one on drain), ``CLOSE_PART`` keys at a
        time: emit, await delivery, then store, so a crash in between re-emits (same ids) rather
        than loses."""
        cpu = time.thread_time()
        assigned = assigned_partitions(self.app)
        drain = self._drain_requested
        if self.drain_after_idle is not None and now - self.last_input >= self.drain_after_idle:
            drain = drain or bool(self.index)
        if assigned != self._assigned:  # (re)built from the table only when partitions moved
            self._assigned = assigned
            self._rescan()
        elif drain:
            # A drain closes what the TABLE holds open, not what the index remembers: the index
            # is a cache of the table's deadlines, and a key it lost would stay open for ever.
            # A miss means a bug in the index upkeep: counted (``index_misses``) and logged.
            missed = self._schedule_unindexed()
            if missed:
                self.index_misses += missed
                self.app.log.warning(
                    "%s: drain found %d open key(s) the deadline index had lost", self.name, missed
                )
        else:
            budget = max(AUDIT_KEYS, math.ceil(len(self.index) * self.tick / AUDIT_ROUND))
            if self.retention_us is not None:  # every stored key once per SWEEP_ROUND
                budget = max(budget, math.ceil(self._stored_estimate(assigned) * self.tick / SWEEP_ROUND))
            self._audit(assigned, budget)
        due = self._due(now, drain)
        self.cpu_close += time.thread_time() - cpu
        closed = 0
        for start in range(0, len(due), CLOSE_PART):
            closed += await self._close(due[start : start + CLOSE_PART], now, drain)
        if self._drain_requested:
            self._drain_requested = False
            self._drained.set()
        return closed

    async def _close(self, due: list[tuple[bytes, int]], now: float, drain: bool) -> int:
        cpu = time.thread_time()
        by_partition: dict[int, list[bytes]] = {}
        for key, partition in due:
            by_partition.setdefault(partition, []).append(key)
        writes: list[tuple[bytes, Any, Any]] = []
        sends: list[Send] = []
        for partition, keys in by_partition.items():
            self.state = store = self.partition_state(partition)
            # indexed, not stored (stale): only after a partition moved
            self.index_stale += batch.step_keys(self, store, partition, keys, now, drain, writes, sends)
        if sends:
            self._send(sends)
            # other tasks run on this thread while the flush is awaited: not this stage's CPU
            self.cpu_close += time.thread_time() - cpu
            await self.app.output.flush()
            cpu = time.thread_time()
        batch.store_all(self, writes)
        self.cpu_close += time.thread_time() - cpu
        return len(writes)
