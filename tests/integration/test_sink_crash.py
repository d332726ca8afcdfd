"""Crash the sink for real (SIGKILL at each injected point), restart it, and get exact totals.

The sink runs in a subprocess with its own embedded ClickHouse directory (chdb: one process per
data path), is killed at ``before_record``, ``before_insert``, ``after_insert`` and
``after_commit`` of some batch, restarted with the same consumer group each time, and finally runs
to the end and reports what ClickHouse holds. Background merges are stopped in every run, so a
row inserted twice would show in plain ``count()`` instead of being merged away.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from deploy.kafka.topics import delete_topics, ensure_topics
from producers.kafka import make_producer, produce_all
from schemas.records import encode_event
from schemas.topics import EVENTS, FUNNEL
from tests.infra import Infra
from tests.integration.test_sink import expected, make_deltas, make_event, produce_funnel, sink_topics

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]

RUNNER = r"""
import json, os, signal, sys
from dataclasses import asdict
from sinks.clickhouse import connect, migrate
from sinks.consumer import ClickHouseSink, SinkConfig
from sinks.report import as_totals, funnel_report

url, bootstrap, ns, group, point, topic, nth, rows = sys.argv[1:9]
client = connect(url)
migrate(client)
client.command("SYSTEM STOP MERGES")
seen = {}

def hook(at, token):
    if at != point or not token.startswith(topic + ":"):
        return
    seen[at] = seen.get(at, 0) + 1
    if seen[at] == int(nth):
        os.kill(os.getpid(), signal.SIGKILL)

config = SinkConfig(
    bootstrap=bootstrap, group_id=group, namespace=ns, batch_rows=int(rows), batch_seconds=0.2,
    consumer_overrides={"group.instance.id": group + "-0", "session.timeout.ms": 6000},
)
stats = ClickHouseSink(config, client, crash_hook=hook).run(until_caught_up=True, timeout=60)
q = lambda sql: int(client.query(sql).result_rows[0][0])
print(json.dumps({
    "stats": asdict(stats),
    "report": [[k[0], k[1], v] for k, v in as_totals(funnel_report(client)).items()],
    "contributions": q("SELECT count() FROM funnel_contributions"),
    "events": q("SELECT count() FROM events"),
    "event_ids": q("SELECT uniqExact(event_id) FROM events"),
}))
"""

#: (crash point, topic, at its n-th occurrence there, batch_rows): every restart closes batches
#: elsewhere (as time-based flushing does), so only the recorded batch boundaries make a repeat
#: match. Funnel rows are also protected by the contribution-id filter; events only by the token.
CRASHES = [
    ("before_insert", FUNNEL, 1, 33),
    ("after_insert", FUNNEL, 2, 41),
    ("before_record", EVENTS, 1, 40),
    ("after_insert", EVENTS, 1, 47),
    ("after_commit", EVENTS, 1, 29),
    ("after_insert", EVENTS, 1, 38),
]


def run_sink(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", RUNNER, *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_sigkill_at_every_point_then_restart_gives_exact_totals(
    infra: Infra, unique: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    topics = sink_topics(unique)
    ensure_topics(infra.bootstrap, topics.values())
    try:
        deltas = make_deltas(320, seed=5)
        produce_funnel(infra.bootstrap, topics[FUNNEL.name].name, deltas + deltas[::8])
        events = [make_event(i) for i in range(1200)]
        produce_all(
            make_producer(infra.bootstrap),
            topics[EVENTS.name].name,
            ((f"s-{e.seq % 4}".encode(), encode_event(e)) for e in events),
        )
        url = f"chdb://{tmp_path / 'chdb'}?database=crash"
        base = [url, infra.bootstrap, unique, f"{unique}-sink"]
        for point, topic, nth, rows in CRASHES:
            proc = run_sink([*base, point, topics[topic.name].name, str(nth), str(rows)])
            assert proc.returncode == -signal.SIGKILL, (
                f"{point}#{nth} did not crash:\n{proc.stdout[:300]}{proc.stderr[-2000:]}"
            )
        final = run_sink([*base, "never", "-", "0", "36"])
        assert final.returncode == 0, final.stdout + final.stderr
        result: dict[str, Any] = json.loads(final.stdout.strip().splitlines()[-1])
    finally:
        delete_topics(infra.bootstrap, [t.name for t in topics.values()])

    truth = expected(deltas)
    got = {(o, c): v for o, c, v in result["report"]}
    assert got == truth
    assert result["contributions"] == len(deltas)  # no contribution row inserted twice
    assert result["events"] == result["event_ids"] == len(events)  # no event row inserted twice
    assert result["stats"]["rebuilt_batches"] >= 1  # the last crash left a recorded batch to rebuild
    assert time.monotonic() - started < 90
