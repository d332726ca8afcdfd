"""The worker: one Faust app running all four verbs (normalize, sessionize, correlate, aggregate).

Input: RAW (and, inside the app, EVENTS and RETRIEVALS). Output: EVENTS, RETRIEVALS, FUNNEL,
SESSIONS, CORRELATED, DLQ, all under one topic namespace. ``aggregate`` is not an agent: it is
the pure counting module that sessionize and correlate call when they close a session/group.
Sessionize and correlate are Faust agents (tables, co-partitioning, recovery are Faust's);
normalize, stateless, reads RAW through a ``processors.source.BatchSource`` in its own consumer
group (``normalize_group``) within the same app; ``input_groups`` names both groups.

``build_worker`` returns the app; ``stages(app)`` gives its stateful stages (for drains and
stats), ``drain(app)`` closes every open session and correlation group now.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faust

from processors import normalize
from processors.app import Health, crash_reason, create_app
from processors.correlate import CorrelateConfig, Correlator
from processors.output import ChangelogStore, StateMemory
from processors.sessionize import SessionizeConfig, Sessionizer
from schemas import _native, topics as t
from schemas.owners import OwnerRegistry


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Everything a worker can be tuned with (built from settings/args by ``ctpipe.worker``)."""

    inactivity_timeout: float = 1800.0  # s without activity before an open session closes
    end_grace: float = 2.0  # s after the last activity of an ended session before it closes
    lateness: float = 3600.0  # s after a close during which late events amend (revision+1)
    # s of event time a closed key's tombstone outlives its newest event's hour; older events of a
    # key without state are dead-lettered (processors.app.expired). None: tombstones for ever
    state_retention: float | None = 30 * 86_400.0
    correlation_window: float = 600.0  # s after a Content-Telemetry-ID's first observation
    max_invalid_ratio: float = 0.5  # circuit breaker: invalid share of the window that trips
    breaker_window: int = 1000  # circuit breaker: last N RAW messages
    breaker_min_invalid: int = 100  # circuit breaker: never trips below this many invalid
    batch_size: int = 2000  # take_events batch
    batch_within: float = 0.1  # s to wait for a batch to fill
    tick: float = 1.0  # s between close-timer runs
    store: str = "rocksdb://"  # Faust table store (rocksdb:// uses the rocksdict driver)
    # RocksDB memory of all state tables together: block cache + memtables (processors.output.StateMemory)
    state_memory_mb: int = 256
    drain_after_idle: float | None = None  # close everything once no input for this many s
    # CT 0.1 7.3 content_id prefix -> owner (schemas.owners; immutable, hashable); None = URL only
    owner_registry: OwnerRegistry | None = None

    def __post_init__(self) -> None:
        for name in ("inactivity_timeout", "end_grace", "lateness", "correlation_window", "tick"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.state_retention is not None and self.state_retention <= 0:
            raise ValueError(f"state_retention must be > 0 (or None), got {self.state_retention}")
        if not 0 < self.max_invalid_ratio <= 1:
            raise ValueError(f"max_invalid_ratio must be in (0, 1], got {self.max_invalid_ratio}")
        if self.state_memory_mb < 16:
            raise ValueError(f"state_memory_mb must be >= 16, got {self.state_memory_mb}")
        if self.batch_size < 1 or self.breaker_window < 1 or self.breaker_min_invalid < 1:
            raise ValueError("batch_size, breaker_window and breaker_min_invalid must be >= 1")


@dataclass(frozen=True, slots=True)
class WorkerTopics:
    raw: t.Topic
    events: t.Topic
    retrievals: t.Topic
    funnel: t.Topic
    sessions: t.Topic
    correlated: t.Topic
    dlq: t.Topic

    @classmethod
    def for_namespace(cls, namespace: str) -> WorkerTopics:
        return cls(
            raw=t.RAW.namespaced(namespace),
            events=t.EVENTS.namespaced(namespace),
            retrievals=t.RETRIEVALS.namespaced(namespace),
            funnel=t.FUNNEL.namespaced(namespace),
            sessions=t.SESSIONS.namespaced(namespace),
            correlated=t.CORRELATED.namespaced(namespace),
            dlq=t.DLQ.namespaced(namespace),
        )

    def all(self) -> list[t.Topic]:
        return [self.dlq, self.raw, self.events, self.retrievals, self.funnel, self.sessions, self.correlated]


@dataclass(slots=True)
class WorkerParts:
    topics: WorkerTopics
    config: WorkerConfig
    normalize_stats: normalize.NormalizeStats = field(default_factory=normalize.NormalizeStats)
    breaker: normalize.Breaker = field(default_factory=normalize.Breaker)
    normalize_health: Health = field(default_factory=Health)
    sessionizer: Sessionizer | None = None
    correlator: Correlator | None = None


_PARTS: weakref.WeakKeyDictionary[faust.App, WorkerParts] = weakref.WeakKeyDictionary()


def build_worker(
    app_id: str, bootstrap: str, datadir: Path, namespace: str, config: WorkerConfig
) -> faust.App:
    """A Faust app with every agent of the pipeline, on ``namespace``'s topics."""
    topics = WorkerTopics.for_namespace(namespace)
    app = create_app(
        app_id,
        bootstrap,
        datadir,
        store=config.store,
        table_standby_replicas=0,
        processing_guarantee="at_least_once",
    )
    app.state_memory = StateMemory(config.state_memory_mb * 2**20)
    parts = WorkerParts(
        topics=topics,
        config=config,
        breaker=normalize.Breaker(
            max_ratio=config.max_invalid_ratio,
            window=config.breaker_window,
            min_invalid=config.breaker_min_invalid,
        ),
    )
    common: dict[str, Any] = {"batch": config.batch_size, "within": config.batch_within}
    normalize.register(
        app,
        bootstrap=bootstrap,
        group=normalize_group(app_id),
        raw_topic=topics.raw.name,
        events_topic=topics.events.name,
        retrievals_topic=topics.retrievals.name,
        dlq_topic=topics.dlq.name,
        breaker=parts.breaker,
        events_partitions=topics.events.partitions,
        retrievals_partitions=topics.retrievals.partitions,
        stats=parts.normalize_stats,
        health=parts.normalize_health,
        owners=config.owner_registry,
        batch=config.batch_size,
    )
    parts.sessionizer = Sessionizer(
        app,
        events_topic=topics.events.name,
        funnel_topic=topics.funnel.name,
        sessions_topic=topics.sessions.name,
        dlq_topic=topics.dlq.name,
        config=SessionizeConfig(
            inactivity_timeout=config.inactivity_timeout,
            end_grace=config.end_grace,
            lateness=config.lateness,
            drain_after_idle=config.drain_after_idle,
            retention=config.state_retention,
        ),
        partitions=topics.events.partitions,
        tick=config.tick,
        **common,
    )
    parts.correlator = Correlator(
        app,
        retrievals_topic=topics.retrievals.name,
        funnel_topic=topics.funnel.name,
        correlated_topic=topics.correlated.name,
        dlq_topic=topics.dlq.name,
        config=CorrelateConfig(
            window=config.correlation_window,
            lateness=config.lateness,
            drain_after_idle=config.drain_after_idle,
            retention=config.state_retention,
        ),
        partitions=topics.retrievals.partitions,
        tick=config.tick,
        **common,
    )
    _PARTS[app] = parts
    return app


def normalize_group(app_id: str) -> str:
    """The consumer group of the normalize stage's RAW source (``processors.source``)."""
    return f"{app_id}-normalize"


def input_groups(app_id: str, topics: WorkerTopics) -> list[tuple[str, list[str]]]:
    """(consumer group, topics) of every input of a worker ``app_id``: what its committed
    offsets say it has consumed (RAW by the normalize source, the rest by the Faust app)."""
    return [
        (normalize_group(app_id), [topics.raw.name]),
        (app_id, [topics.events.name, topics.retrievals.name]),
    ]


#: A batch keeps ~50-200k young containers alive (records, state dicts, the deadline index's
#: growth); at 50k, gen 0 ran 44 times in a 329k-event peak run (0.42 s, 2.5 % of the worker's
#: CPU, each pass walking what was about to die anyway), at 200k once (0.03 s; peak RSS +45 MB).
GC_GEN0_THRESHOLD = 200_000


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a streaming process.

    The worker allocates short-lived objects by the million (messages, futures, JSON documents)
    while holding a large, long-lived heap (the app, its tables' caches); CPython's default gen-0
    threshold (700 allocations) runs the collector constantly and every gen-2 pass walks that
    heap. Freeze what exists at start-up (never collected, never walked) and collect gen 0 only
    after ``GC_GEN0_THRESHOLD`` net container allocations (bench/PIPELINE_BENCH.md). Process-wide;
    reference cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 100)
    if _gc_timer not in gc.callbacks:
        gc.callbacks.append(_gc_timer)


#: collections and their pause (thread CPU seconds) per generation since ``tune_gc``
GC_STATS: dict[str, list[float]] = {"gen0": [0, 0.0], "gen1": [0, 0.0], "gen2": [0, 0.0]}
_gc_started = [0.0]


def _gc_timer(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_started[0] = time.thread_time()
        return
    entry = GC_STATS[f"gen{info['generation']}"]
    entry[0] += 1
    entry[1] += time.thread_time() - _gc_started[0]


def parts(app: faust.App) -> WorkerParts:
    """The stages and stats of an app built by ``build_worker``."""
    return _PARTS[app]


async def drain(app: faust.App, timeout: float = 30.0) -> None:
    """Close every open session and correlation group now (at the stages' next tick)."""
    p = _PARTS[app]
    waits = [s.request_drain() for s in (p.sessionizer, p.correlator) if s is not None]
    await asyncio.wait_for(asyncio.gather(*(w.wait() for w in waits)), timeout)


def failure(app: faust.App) -> BaseException | None:
    """Why the worker must stop, if it must: a crash, the normalize circuit breaker, or a batch a
    stage could not process (parked unacknowledged: the process must exit WITHOUT a graceful
    Faust stop, which would acknowledge and commit it; see ``processors.app.park_unacknowledged``)."""
    reason = crash_reason(app)
    if reason is not None:
        return reason
    p = _PARTS.get(app)
    if p is None:
        return None
    output = getattr(app, "output", None)
    for failed in (
        output.failed if output is not None else None,  # a record the broker refused (lost)
        p.breaker.tripped,
        p.normalize_health.failed,
        *(source.failed for source in getattr(app, "sources", ())),
        *(s.health.failed for s in (p.sessionizer, p.correlator) if s),
    ):
        if failed is not None:
            return failed
    return None


def stats(app: faust.App) -> dict[str, dict[str, Any]]:
    """Counters of every stage (for logs, the demo and tests)."""
    p = _PARTS[app]
    out: dict[str, dict[str, Any]] = {"normalize": asdict(p.normalize_stats)}
    out["normalize"]["invalid_ratio"] = round(p.breaker.ratio, 4)
    if p.sessionizer is not None:
        out["sessionize"] = {**asdict(p.sessionizer.stats), **p.sessionizer.cpu_stats()}
    if p.correlator is not None:
        out["correlate"] = {**asdict(p.correlator.stats), **p.correlator.cpu_stats()}
    output = getattr(app, "output", None)
    if output is not None:
        out["output"] = {"sent": output.sent, "changelog": output.changelog_sent}
    out["gc"] = {gen: {"collections": int(n), "cpu_s": round(s, 3)} for gen, (n, s) in GC_STATS.items()}
    out["memory"] = memory(app)
    out["native"] = {"modules": _native.loaded()}  # what runs compiled (schemas._native)
    return out


def memory(app: faust.App) -> dict[str, Any]:
    """Where the worker's memory is: Python's allocator (live blocks) and RocksDB per table."""
    out: dict[str, Any] = {"python_blocks": sys.getallocatedblocks()}
    budget = getattr(app, "state_memory", None)
    if budget is not None:
        out["rocksdb"] = budget.usage()
    p = _PARTS[app]
    for stage in (p.sessionizer, p.correlator):
        if stage is None:
            continue
        data = stage.table.data
        if isinstance(data, ChangelogStore):
            out[stage.name] = data.memory()
        out[f"{stage.name}_index"] = stage.deadlines.stats()
    return out
