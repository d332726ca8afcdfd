"""Crash the worker for real (SIGKILL, twice), restart it, and get the exact funnel in ClickHouse.

The worker (``ctpipe worker``) runs with Faust's at-least-once guarantee: the producer (outputs
and table changelogs) is flushed before input offsets are committed, state changes are idempotent
(events deduplicated by id), closes carry deterministic contribution ids and are delivered before
their state is stored, and the sink drops contribution ids it already holds. So a worker killed
at any point and restarted on the same data directory must still give the ground truth.

1. Simulated workload (generator) published to RAW; its ground truth from the simulator.
2. Worker #1 is SIGKILLed once it has committed part, but not all, of RAW.
3. Worker #2 (same data dir, same group) is SIGKILLed once RAW is fully committed and its
   closes have started to reach the FUNNEL topic (the closing phase).
4. Worker #3 runs until it is assigned and recovered, its inputs are committed, its
   drain-after-idle has passed and its outputs have stopped growing; then SIGTERM.
5. ``ctpipe sink --until-caught-up`` writes ClickHouse; a reader subprocess returns the funnel.
6. Every funnel row equals the truth; no dead letters; no contribution stored twice.

Process model: the workers, the sink and the reader are subprocesses; embedded ClickHouse opens
only in them, one after the other. The pytest process polls committed offsets through ONE
consumer of the worker's group (``Consumer.committed``), never through
``AdminClient.list_consumer_group_offsets``: librdkafka answers a NOT_COORDINATOR reply to the
admin OffsetFetch by signalling the client's consumer group, which an admin client does not have
(NULL): SIGSEGV in ``rd_kafka_cgrp_op`` (librdkafka issue #5040; seen in a core dump of this
test). That, not chdb, is what killed the test process of the old drill (bench/drills, now
removed); ``deploy.kafka.topics.group_lag`` reads committed offsets the same safe way since.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from ctpipe.demo import expected_rows, publish_workload
from ctpipe.settings import Settings
from ctpipe.worker import worker_app_id
from deploy.kafka.topics import ensure_topics, message_count
from processors.worker import normalize_group
from producers.generator import GeneratorConfig, generate
from schemas.funnel import KEY_FIELDS
from schemas.topics import ALL
from tests.infra import Infra

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]

SEED, SESSIONS = 9, 36
DRAIN_AFTER_IDLE = 5.0  # s: the worker closes every session/group after this long without input
TICK = 1.0  # s: the worker's close timer (processors.worker.WorkerConfig.tick default)
READY = "Worker ready"  # Faust (INFO): assigned, tables recovered, streams resumed

#: Reads the funnel back in a process of its own: chdb never opens in the pytest process.
READER = r"""
import json, sys
from ctpipe.demo import stored_rows
from sinks.clickhouse import connect

client = connect(sys.argv[1])
q = lambda sql: int(client.query(sql).result_rows[0][0])
print(json.dumps({
    "rows": [[list(k), v] for k, v in stored_rows(client).items()],
    "contributions": q("SELECT count() FROM funnel_contributions"),
    "contribution_ids": q("SELECT uniqExact(contribution_id) FROM funnel_contributions"),
    "event_ids": q("SELECT uniqExact(event_id) FROM events"),
}))
"""


class Probe:
    """Committed offsets of the worker's groups (its Faust app's; RAW: its normalize source's)
    and topic sizes, through long-lived consumers.

    They never subscribe (never join the groups); ``committed`` asks the group coordinator.
    """

    def __init__(self, bootstrap: str, app_id: str, raw_topic: str) -> None:
        def member(group: str) -> Consumer:
            return Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})

        # the worker's groups: RAW is committed by the normalize source's own group
        self.consumer = member(app_id)
        self.raw_topic, self.raw_consumer = raw_topic, member(normalize_group(app_id))
        self.partitions: dict[str, list[int]] = {}

    def _tps(self, topics: Iterable[str]) -> list[TopicPartition]:
        out: list[TopicPartition] = []
        for name in topics:
            if name not in self.partitions:
                meta = self.consumer.list_topics(name, timeout=10).topics[name]
                self.partitions[name] = sorted(meta.partitions)
            out.extend(TopicPartition(name, p) for p in self.partitions[name])
        return out

    def _marks(self, tp: TopicPartition) -> tuple[int, int]:
        low, high = self.consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)
        return int(low), int(high)

    def lag(self, topics: Iterable[str]) -> int:
        """Messages of ``topics`` the group has not committed (a partition never committed: all)."""
        committed: list[TopicPartition] = []
        for consumer, tps in (
            (self.raw_consumer, self._tps(t for t in topics if t == self.raw_topic)),
            (self.consumer, self._tps(t for t in topics if t != self.raw_topic)),
        ):
            for attempt in range(50):
                try:
                    committed += consumer.committed(tps, timeout=10) if tps else []
                    break
                except KafkaException:  # coordinator loading/moving: transient
                    if attempt == 49:
                        raise
                    time.sleep(0.2)
        lag = 0
        for tp in committed:
            low, high = self._marks(tp)
            lag += max(0, high - (tp.offset if tp.offset >= 0 else low))
        return lag

    def count(self, topic: str) -> int:
        """Messages a topic holds."""
        return sum(high - low for low, high in map(self._marks, self._tps([topic])))

    def written(self, topic: str, partitions: Iterable[int]) -> int:
        """Messages ever written to these partitions of ``topic`` (0 while it does not exist)."""
        try:
            return sum(self._marks(TopicPartition(topic, p))[1] for p in partitions)
        except KafkaException:  # not created yet
            return 0

    def close(self) -> None:
        self.consumer.close()
        self.raw_consumer.close()


def _env(infra: Infra, namespace: str, data_dir: Path, clickhouse_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "CTPIPE_KAFKA_BOOTSTRAP": infra.bootstrap,
        "CTPIPE_TOPIC_NAMESPACE": namespace,
        "CTPIPE_DATA_DIR": str(data_dir),
        "CTPIPE_CLICKHOUSE_URL": clickhouse_url,
        "CTPIPE_WORKER_INACTIVITY_TIMEOUT": "3",
        "CTPIPE_WORKER_END_GRACE": "0.5",
        "CTPIPE_WORKER_CORRELATION_WINDOW": "3",
        # small batches: many commits, so a kill lands with RAW partly committed however fast
        # the worker is (with 2,000-message batches the whole RAW can commit in two steps)
        "CTPIPE_WORKER_BATCH_SIZE": "100",
        "CTPIPE_LOG_LEVEL": "INFO",  # Faust's "Worker ready" line
        # Faust reads these from the environment: a killed member's partitions go to its
        # successor after 6 s (the broker's minimum session timeout) instead of Faust's 60 s.
        "BROKER_SESSION_TIMEOUT": "6",
        "BROKER_HEARTBEAT_INTERVAL": "1",
    }


class Worker:
    """One ``ctpipe worker`` incarnation (its own log file)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        cmd = [sys.executable, "-m", "ctpipe.cli", "worker", "--drain-after-idle", str(DRAIN_AFTER_IDLE)]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def until(self, what: str, check: Callable[[], Any], *, timeout: float, every: float) -> Any:
        """Poll ``check()`` until it returns something truthy; fail if the worker exits or time's up."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, (
                f"{self.log.name} exited ({self.proc.returncode}):\n{self.tail()}"
            )
            result = check()
            if result:
                return result
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{self.tail()}"
            time.sleep(every)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(10) == -signal.SIGKILL

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def sink_then_read(env: dict[str, str], group: str, clickhouse_url: str) -> tuple[dict[str, Any], str]:
    """``ctpipe sink --until-caught-up``, then the reader: each its own process, one after the
    other (embedded ClickHouse opens in one process at a time, never in pytest's). Returns the
    reader's result (``rows``, counts) and the sink's stderr tail."""
    sink_cmd = [sys.executable, "-m", "ctpipe.cli", "sink", "--until-caught-up", "--timeout", "60"]
    sink = subprocess.run(
        [*sink_cmd, "--group", group, "--batch-seconds", "0.2"],
        env={**env, "CTPIPE_LOG_LEVEL": "WARNING"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sink.returncode == 0, sink.stdout + sink.stderr[-3000:]
    reader = subprocess.run(
        [sys.executable, "-c", READER, clickhouse_url], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert reader.returncode == 0, reader.stderr[-3000:]
    result: dict[str, Any] = json.loads(reader.stdout.strip().splitlines()[-1])
    return result, sink.stderr.strip()[-300:]


def assert_exact(result: dict[str, Any], truth: dict[Any, Any], dead_letters: int, context: str) -> None:
    """Every funnel row equals the truth; no dead letters; no contribution stored twice."""
    stored = {tuple(k): v for k, v in result["rows"]}
    mismatches = [
        f"{dict(zip(KEY_FIELDS, key, strict=True))}: stored {stored.get(key)} expected {truth.get(key)}"
        for key in sorted(set(stored) | set(truth))
        if stored.get(key) != truth.get(key)
    ]
    assert not mismatches, f"{len(mismatches)} of {len(truth)} rows differ ({context}):\n" + "\n".join(
        mismatches[:20]
    )
    assert stored == truth
    assert dead_letters == 0, context
    assert result["contributions"] == result["contribution_ids"], context  # none stored twice
    assert result["event_ids"] > 1000


class Settled:
    """A wait predicate: the worker(s) are ready (``ready()``: a token that changes on every
    (re)assignment + recovery, None while not ready), the inputs have no lag, and since then
    ``hold`` seconds (the drain-after-idle) and two ticks passed with the outputs unchanged."""

    def __init__(
        self, probe: Probe, inputs: list[str], outputs: list[str], ready: Callable[[], Any], hold: float
    ) -> None:
        self.probe, self.inputs, self.outputs, self.ready, self.hold = probe, inputs, outputs, ready, hold
        self.seen: dict[str, Any] = {"ready": None, "ready_at": 0.0, "idle_since": None, "counts": None}

    def __call__(self) -> bool:
        seen, now = self.seen, time.monotonic()
        ready = self.ready()
        if ready != seen["ready"]:  # (re)assigned and recovered
            seen["ready"], seen["ready_at"] = ready, now
        if ready is None or self.probe.lag(self.inputs) != 0:
            seen["idle_since"] = None
            return False
        seen["idle_since"] = seen["idle_since"] or now
        counts = tuple(map(self.probe.count, self.outputs))
        if counts != seen["counts"]:
            seen["counts"], seen["stable_since"] = counts, now
        quiet_since = max(seen["ready_at"], seen["idle_since"])
        return now - quiet_since > self.hold + 2 * TICK and now - seen["stable_since"] > 2 * TICK


def prepared_workload(
    infra: Infra, unique: str, tmp_path: Path, seed: int, sessions: int
) -> tuple[Path, dict[Any, Any], dict[str, str]]:
    """A simulated workload and fresh topics for it: (directory, truth, topic names)."""
    workload = tmp_path / "workload"
    generate(GeneratorConfig(seed=seed, sessions=sessions), out=workload)
    truth = expected_rows(workload)
    assert truth is not None and len(truth) > 500
    topics = {t.name.rsplit(".", 1)[-1]: t.namespaced(unique).name for t in ALL}
    ensure_topics(infra.bootstrap, [t.namespaced(unique) for t in ALL])
    return workload, truth, topics


def publish(
    infra: Infra, unique: str, tmp_path: Path, workload: Path, topics: dict[str, str]
) -> tuple[int, int]:
    """Publish the workload to RAW: (documents, log events)."""
    publisher = Settings(  # type: ignore[call-arg]
        _env_file=None, kafka_bootstrap=infra.bootstrap, topic_namespace=unique, data_dir=tmp_path / "pub"
    )
    return publish_workload(publisher, workload, topics["raw"])


def test_sigkill_worker_twice_then_restart_gives_the_exact_funnel(
    infra: Infra, unique: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    workload, truth, topics = prepared_workload(infra, unique, tmp_path, SEED, SESSIONS)
    documents, log_events = publish(infra, unique, tmp_path, workload, topics)

    clickhouse_url = f"chdb://{tmp_path / 'clickhouse'}?database=crash"
    env = {
        **_env(infra, unique, tmp_path / "data", clickhouse_url),
        "CTPIPE_OWNER_REGISTRY": str(workload / "owners.json"),
    }
    raw, funnel = [topics["raw"]], topics["funnel"]
    inputs = [topics["raw"], topics["events"], topics["retrievals"]]
    outputs = [topics[n] for n in ("funnel", "sessions", "correlated", "dlq")]
    probe = Probe(infra.bootstrap, worker_app_id("ctpipe", unique), topics["raw"])
    worker: Worker | None = None
    try:
        total = probe.count(topics["raw"])  # log events travel in batch documents
        assert documents < total < documents + log_events

        # -- #1: killed with part of RAW committed ----------------------------------------------
        worker = Worker(env, tmp_path / "worker-1.log")
        (lag_at_kill_1,) = worker.until(
            "worker #1 to commit part of RAW",
            lambda: (lag,) if (lag := probe.lag(raw)) < total else None,
            timeout=60,
            every=0.05,
        )
        worker.kill()
        assert lag_at_kill_1 > 0, "worker #1 committed all of RAW before it could be killed"

        # -- #2: killed in the closing phase (RAW committed, closes under way) ----------------------
        worker = Worker(env, tmp_path / "worker-2.log")
        worker.until("worker #2 to commit all of RAW", lambda: probe.lag(raw) == 0, timeout=60, every=0.1)
        funnel_at_raw_done = probe.count(funnel)
        funnel_at_kill_2 = worker.until(
            "worker #2 to emit closes",
            lambda: n if (n := probe.count(funnel)) > funnel_at_raw_done else None,
            timeout=30,
            every=0.05,
        )
        worker.kill()

        # -- #3: runs to the end ------------------------------------------------------------------
        worker = Worker(env, tmp_path / "worker-3.log")
        w3 = worker
        finished = Settled(
            probe,
            inputs,
            outputs,
            lambda: w3.log.read_text(errors="replace").count(READY) or None,
            DRAIN_AFTER_IDLE,
        )

        worker.until("worker #3 to finish", finished, timeout=90, every=0.5)
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(40) == 0, worker.tail()
        funnel_final = probe.count(funnel)
    finally:
        if worker is not None:
            worker.stop()
        probe.close()
    dead_letters = message_count(infra.bootstrap, topics["dlq"])

    result, sink_tail = sink_then_read(env, f"{unique}-sink", clickhouse_url)
    context = (
        f"raw {total} (lag {lag_at_kill_1} at kill #1); funnel messages {funnel_at_raw_done} at RAW "
        f"done, {funnel_at_kill_2} at kill #2, {funnel_final} final; {sink_tail}"
    )
    assert_exact(result, truth, dead_letters, context)
    print(f"worker crash: {context}; {time.monotonic() - started:.1f} s")
    assert time.monotonic() - started < 120, context
