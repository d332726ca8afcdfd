"""Two workers in one consumer group: scale out, hand over on a clean stop, rebalance back; exact funnel.

``ctpipe worker`` keeps its sessionize/correlate state in changelog-backed Faust tables (rocksdb
store on the worker's own disk, no standby replicas), co-partitioned with EVENTS/RETRIEVALS
(4 partitions each; RAW is read by the stateless normalize source in a group of its own). A worker that takes over a partition must rebuild its state from the
changelog, and the close timers must follow the assignment (``StateStage._rescan``).

1. Simulated workload (generator) published to RAW; its ground truth from the simulator.
2. Workers A and B start together: same namespace, so the same app id and consumer group, each
   with its own ``CTPIPE_DATA_DIR`` (B's tables are not on A's disk). Both must own EVENTS
   partitions (aiokafka's "Setting newly assigned partitions" line, INFO) and be ready.
3. B is stopped cleanly (SIGTERM) once it has committed sessionized EVENTS and while it still
   holds open sessions: A takes every partition and recovers B's table partitions from the
   changelogs (its log must show the restore), then closes what B left open.
4. B is started again on its old data directory (its rocksdb is now stale: A changed those keys
   since): the group rebalances back, B must own partitions again and close state it recovered
   (sessions/groups are held open ``HOLD`` s for that).
5. Both run until inputs are committed, drain-after-idle has passed and outputs stopped growing;
   SIGTERM both. ``ctpipe sink --until-caught-up`` writes ClickHouse; a reader subprocess
   returns the funnel: every row equals the truth, no dead letters, no contribution stored twice.

Process model and the committed-offset probe (one consumer per worker group, never the admin
offset API) are those of ``test_worker_crash`` (see its docstring), whose helpers are reused.
"""

from __future__ import annotations

import ast
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from ctpipe.worker import worker_app_id
from deploy.kafka.topics import message_count
from schemas.topics import EVENTS
from tests.infra import Infra
from tests.integration.test_worker_crash import (
    READY,
    REPO,
    Probe,
    Settled,
    Worker,
    _env,
    assert_exact,
    prepared_workload,
    publish,
    sink_then_read,
)

pytestmark = pytest.mark.integration

SEED, SESSIONS = 23, 40
ALL_PARTITIONS = frozenset(range(EVENTS.partitions))  # co-partitioned: RETRIEVALS, changelogs
ASSIGNED = re.compile(r"Setting newly assigned partitions (.*) for group")
#: Sessions/groups stay open this long after their last input (wall clock) and the worker drains
#: after this long idle: long enough that B, back after the handover, still finds open state on
#: the partitions it gets and must close it (test_worker_crash uses 3 s / 5 s).
HOLD = 12.0
RESTORING = "Restoring state from changelog topics"
STATS = re.compile(r"ctpipe worker: stopping; (\{.*\})")


class ScaleWorker(Worker):
    """``Worker`` of test_worker_crash with drain-after-idle ``HOLD``."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        cmd = [sys.executable, "-m", "ctpipe.cli", "worker", "--drain-after-idle", str(HOLD)]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def worker_env(infra: Infra, namespace: str, data_dir: Path, clickhouse_url: str) -> dict[str, str]:
    env = _env(infra, namespace, data_dir, clickhouse_url)
    hold = str(HOLD)
    return {**env, "CTPIPE_WORKER_INACTIVITY_TIMEOUT": hold, "CTPIPE_WORKER_CORRELATION_WINDOW": hold}


@dataclass(frozen=True)
class Phase:
    """One assignment a worker was given (aiokafka INFO line) and what its log says after it."""

    events: frozenset[int]  # EVENTS partitions (co-partitioned with RETRIEVALS, changelogs)
    restored: bool  # read table changelogs ("Restoring state from changelog topics")
    ready: bool  # recovered and resumed ("Worker ready") before any later assignment


def phases(worker: Worker, events_topic: str) -> list[Phase]:
    """Every assignment of this worker, in order."""
    tp = re.compile(rf"TopicPartition\(topic='{re.escape(events_topic)}', partition=(\d+)\)")
    text = worker.log.read_text(errors="replace")
    found = list(ASSIGNED.finditer(text))
    out = []
    for i, m in enumerate(found):
        after = text[m.end() : found[i + 1].start() if i + 1 < len(found) else len(text)]
        out.append(
            Phase(frozenset(int(p) for p in tp.findall(m.group(1))), RESTORING in after, READY in after)
        )
    return out


def current(worker: Worker, events_topic: str) -> frozenset[int] | None:
    """EVENTS partitions of the worker's latest assignment once it is ready on it, else None."""
    history = phases(worker, events_topic)
    return history[-1].events if history and history[-1].ready else None


def until(
    workers: Sequence[Worker], what: str, check: Callable[[], Any], *, timeout: float, every: float
) -> Any:
    """Poll ``check()`` until truthy; fail if a worker exits or time's up (with their log tails)."""
    deadline = time.monotonic() + timeout
    while True:
        for w in workers:
            assert w.proc.poll() is None, f"{w.log.name} exited ({w.proc.returncode}):\n{w.tail()}"
        result = check()
        if result:
            return result
        tails = "\n".join(f"--- {w.log.name}:\n{w.tail()}" for w in workers)
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{tails}"
        time.sleep(every)


def stop(worker: Worker) -> dict[str, Any]:
    """SIGTERM (clean stop: commit and flush); the stage counters it logs on the way out."""
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(40) == 0, worker.tail()
    match = STATS.search(worker.log.read_text(errors="replace"))
    assert match, worker.tail()
    stats: dict[str, Any] = ast.literal_eval(match.group(1))
    return stats


def test_two_workers_scale_out_hand_over_and_rebalance_back_give_the_exact_funnel(
    infra: Infra, unique: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    workload, truth, topics = prepared_workload(infra, unique, tmp_path, SEED, SESSIONS)

    clickhouse_url = f"chdb://{tmp_path / 'clickhouse'}?database=scale"
    owners = {"CTPIPE_OWNER_REGISTRY": str(workload / "owners.json")}  # as the truth attributes content ids
    env_a = {**worker_env(infra, unique, tmp_path / "data-a", clickhouse_url), **owners}
    env_b = {**worker_env(infra, unique, tmp_path / "data-b", clickhouse_url), **owners}
    raw_topic, events_topic, funnel = topics["raw"], topics["events"], topics["funnel"]
    inputs = [topics["raw"], topics["events"], topics["retrievals"]]
    outputs = [topics[n] for n in ("funnel", "sessions", "correlated", "dlq")]
    probe = Probe(infra.bootstrap, worker_app_id("ctpipe", unique), topics["raw"])
    workers: list[Worker] = []

    def clock() -> str:
        return f"{time.monotonic() - started:.1f}s"

    notes: list[str] = []
    try:
        # -- A and B together: both must own EVENTS partitions ----------------------------------------
        notes.append(f"workers start at {clock()}")
        a = ScaleWorker(env_a, tmp_path / "worker-a.log")
        b = ScaleWorker(env_b, tmp_path / "worker-b.log")
        workers += [a, b]

        def split() -> tuple[frozenset[int], frozenset[int]] | None:
            mine_a, mine_b = current(a, events_topic), current(b, events_topic)
            if mine_a and mine_b and not mine_a & mine_b and mine_a | mine_b == ALL_PARTITIONS:
                return mine_a, mine_b
            return None

        parts_a, parts_b = until([a, b], "A and B to share EVENTS", split, timeout=60, every=0.1)
        notes.append(
            f"split A{sorted(parts_a)} B{sorted(parts_b)} at {clock()}, input lag {probe.lag(inputs)}"
        )

        # The input goes in only now, so both workers have work from their first batch.
        documents, log_events = publish(infra, unique, tmp_path, workload, topics)
        total = probe.count(raw_topic)
        assert documents < total < documents + log_events

        # -- B stops cleanly mid-stream: A takes over and recovers B's tables --------------------
        # B has sessionized once it stored session state (only B writes the sessionize changelog's
        # partitions of B's EVENTS partitions now) and committed EVENTS there. Committed offsets
        # alone do not say it: EVENTS also carries edge/origin retrievals, which sessionize skips
        # (no session), so B can commit EVENTS before it has seen a single session event.
        changelog = f"{worker_app_id('ctpipe', unique)}-ctpipe-sessionize-changelog"

        def b_sessionized() -> bool:
            tps = [TopicPartition(topics["events"], p) for p in sorted(parts_b)]
            committed = sum(max(tp.offset, 0) for tp in probe.consumer.committed(tps, timeout=10))
            return committed > 0 and probe.written(changelog, parts_b) > 0

        until([a, b], "B to commit sessionized EVENTS", b_sessionized, timeout=60, every=0.05)
        lag_at_stop = probe.lag(inputs)
        stats_b1 = stop(b)
        notes.append(f"B stopped at {clock()}, input lag {lag_at_stop}; B stats {stats_b1}")
        sessions_b1 = stats_b1["sessionize"]
        assert sessions_b1["events"] > 0, stats_b1
        # Each close of this (fresh) incarnation counted once, each state tracked: open ones remain.
        assert sessions_b1["tracked"] > sessions_b1["closed"], f"B held no open session: {stats_b1}"

        seen_a = len(phases(a, events_topic))

        def took_over() -> Phase | None:
            later = phases(a, events_topic)[seen_a:]
            return next((ph for ph in later if ph.events == ALL_PARTITIONS and ph.ready), None)

        handover = until([a], "A to take over every partition", took_over, timeout=60, every=0.05)
        notes.append(f"A took all at {clock()} (restored {handover.restored}) input lag {probe.lag(inputs)}")
        assert handover.restored, "A did not read B's table changelogs when it took B's partitions"

        # -- B again, on its (now stale) data dir: the group rebalances back -----------------------
        b2 = ScaleWorker(env_b, tmp_path / "worker-b2.log")
        workers.append(b2)

        def rebalanced() -> frozenset[int] | None:
            mine_a, mine_b2 = current(a, events_topic), current(b2, events_topic)
            if mine_a and mine_b2 and not mine_a & mine_b2 and mine_a | mine_b2 == ALL_PARTITIONS:
                return mine_b2
            return None

        parts_b2 = until([a, b2], "A and B to share EVENTS again", rebalanced, timeout=60, every=0.1)
        notes.append(f"B2 owns {sorted(parts_b2)} at {clock()} input lag {probe.lag(inputs)}")

        # -- both run to the end -------------------------------------------------------------------
        live = [a, b2]

        def ready() -> tuple[int, ...] | None:
            if any(current(w, events_topic) is None for w in live):
                return None
            return tuple(w.log.read_text(errors="replace").count(READY) for w in live)

        finished = Settled(probe, inputs, outputs, ready, HOLD)
        until(live, "A and B to finish", finished, timeout=60, every=0.5)
        notes.append(f"finished at {clock()}")
        stats_b2, stats_a = stop(b2), stop(a)
        notes.append(f"B2 stats {stats_b2}; A stats {stats_a}")
        # B, back on a stale store, closed state it recovered (the sessions/groups open on its
        # partitions when it rejoined).
        assert stats_b2["sessionize"]["closed"] + stats_b2["correlate"]["groups_closed"] > 0, notes
        funnel_final = probe.count(funnel)
    finally:
        for w in workers:
            w.stop()
        probe.close()
    dead_letters = message_count(infra.bootstrap, topics["dlq"])

    result, sink_tail = sink_then_read(env_a, f"{unique}-sink", clickhouse_url)
    context = f"raw {total}; funnel messages {funnel_final}; {sink_tail}; " + "; ".join(notes)
    assert_exact(result, truth, dead_letters, context)
    print(f"worker scale-out: {context}; {time.monotonic() - started:.1f} s")
    assert time.monotonic() - started < 120, context
