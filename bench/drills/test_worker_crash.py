"""Crash drill: SIGKILL the worker process mid-stream, restart it: the funnel is still exact.

Run: `.venv/bin/python -m pytest bench/drills -p no:cacheprovider` (not part of `make test`).
Status: passed (exact on all rows) when run under gdb; run plainly, the *test process* (which
hosts the in-process sink and embedded chdb) dies with SIGSEGV at a timing-dependent point, with
no Python traceback. Until that is understood this drill stays out of CI; see the closing note
of issue 5.

The worker runs as its own process (`ctpipe worker`) with Faust's exactly-once processing
(Kafka transactions: state changelog, outputs and input offsets commit together); the sink reads
committed records only. A killed worker's open transaction is aborted when its successor starts,
so nothing it emitted after its last commit is counted, and its successor redoes that work from
the recovered state. Compared row by row with the simulator's ground truth.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ctpipe.demo import expected_rows, publish_workload, stored_rows
from ctpipe.settings import Settings
from deploy.kafka.topics import ensure_topics, group_lag
from producers.generator import GeneratorConfig, generate
from producers.kafka import make_producer
from schemas.topics import ALL
from sinks.consumer import ClickHouseSink, SinkConfig
from tests.infra import Infra

pytestmark = pytest.mark.integration


def _worker(infra: Infra, namespace: str, data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CTPIPE_KAFKA_BOOTSTRAP": infra.bootstrap,
        "CTPIPE_TOPIC_NAMESPACE": namespace,
        "CTPIPE_DATA_DIR": str(data_dir),
        "CTPIPE_WORKER_INACTIVITY_TIMEOUT": "4",
        "CTPIPE_WORKER_END_GRACE": "0.5",
        "CTPIPE_WORKER_CORRELATION_WINDOW": "4",
        "CTPIPE_LOG_LEVEL": "ERROR",
    }
    cmd = [sys.executable, "-m", "ctpipe.cli", "worker", "--drain-after-idle", "6"]
    return subprocess.Popen(cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def test_sigkill_mid_stream_then_restart_gives_the_exact_funnel(
    infra: Infra,
    ch,
    unique: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    workload = tmp_path / "workload"
    generate(GeneratorConfig(seed=9, sessions=30), out=workload)
    truth = expected_rows(workload)
    assert truth
    settings = Settings(_env_file=None, kafka_bootstrap=infra.bootstrap, topic_namespace=unique)  # type: ignore[call-arg]
    topics = {t.name.rsplit(".", 1)[-1]: t.namespaced(unique).name for t in ALL}
    ensure_topics(infra.bootstrap, [t.namespaced(unique) for t in ALL])
    documents, log_events = publish_workload(settings, workload, topics["raw"])
    total = documents + log_events

    sink_config = SinkConfig(
        bootstrap=infra.bootstrap,
        group_id=f"{unique}-sink",
        namespace=unique,
        batch_rows=500,
        batch_seconds=0.3,
    )
    sink = ClickHouseSink(sink_config, ch, producer=make_producer(infra.bootstrap))
    stop = threading.Event()
    sink_thread = threading.Thread(target=lambda: sink.run(stop=stop.is_set), daemon=True)
    sink_thread.start()

    group = f"ctpipe-{unique}-worker"
    inputs = [topics["raw"], topics["events"], topics["retrievals"]]
    log = tmp_path / "worker.log"
    worker = _worker(infra, unique, tmp_path / "data", log)
    try:
        # Kill it once it has committed some, but not all, of its input.
        deadline = time.monotonic() + 120
        while True:
            assert worker.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the worker made no progress"
            raw_lag = group_lag(infra.bootstrap, group, [topics["raw"]])
            if raw_lag < total * 0.8:
                break
            time.sleep(0.1)
        assert raw_lag > 0, "the worker finished before it could be killed: grow the workload"
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)

        worker = _worker(infra, unique, tmp_path / "data", log)
        deadline = time.monotonic() + 240
        streak = 0
        # Inputs consumed and the sink caught up, for longer than the worker's drain-after-idle (6 s),
        # so the timers have closed every session and window and the sink wrote the result.
        # (ClickHouse is read only after the sink stopped: one embedded engine, one user at a time.)
        while streak < 6:
            assert worker.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "worker and sink did not catch up"
            done = (
                group_lag(infra.bootstrap, group, inputs) == 0
                and group_lag(
                    infra.bootstrap,
                    sink_config.group_id,
                    [topics[n] for n in ("funnel", "sessions", "correlated")],
                )
                == 0
            )
            streak = streak + 1 if done else 0
            time.sleep(2.0)
    finally:
        worker.terminate()
        worker.wait(30)
        stop.set()
        sink_thread.join(60)
    assert sink.stats.rows_inserted > 0
    assert stored_rows(ch) == truth
