"""End to end: simulator -> producers -> worker -> sink -> ClickHouse equals the ground truth.

Every delivery format (CT session documents, standalone events, batches, OA sessions, origin CT
events) plus the Cloudflare, Fastly and nginx logs of the simulated CDN/origin observers, through
the real broker and real ClickHouse. Then the same workload with every input delivered twice:
identical numbers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ctpipe.demo import expected_rows, log_files, run_pipeline
from ctpipe.settings import Settings
from producers.generator import GeneratorConfig, generate
from schemas.funnel import MEASURES
from sinks.clickhouse import connect, migrate
from sinks.report import as_totals
from tests.infra import Infra

pytestmark = pytest.mark.integration

SEED, SESSIONS = 5, 24


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("workload")
    generate(GeneratorConfig(seed=SEED, sessions=SESSIONS), out=path)
    return path


def _settings(infra: Infra, tmp_path: Path) -> Settings:
    return Settings(_env_file=None, kafka_bootstrap=infra.bootstrap, data_dir=tmp_path)  # type: ignore[call-arg]


def test_the_workload_covers_every_format(workload: Path) -> None:
    formats = {fmt for fmt, _ in log_files(workload)}
    assert formats == {"cloudflare", "fastly", "nginx"}
    for name in ("ct/sessions.jsonl", "ct/events.jsonl", "ct/batches.jsonl", "oa/sessions.jsonl"):
        assert (workload / name).stat().st_size > 0, name


def test_funnel_equals_ground_truth_and_double_delivery_changes_nothing(
    infra: Infra,
    ch,
    unique: str,
    workload: Path,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    truth = expected_rows(workload)
    assert truth is not None and len(truth) > 100
    once = run_pipeline(_settings(infra, tmp_path / "once"), ch, workload, namespace=f"{unique}-1")
    assert once.mismatches == []
    assert once.stored_rows == truth  # every row, every measure, every currency
    grand = once.report["totals"]
    for stage in (
        "retrieved",
        "retrieved_corroborated",
        "retrieved_uncorroborated",
        "retrieved_standalone",
        "grounded",
        "cited",
        "displayed",
        "engaged",
        "turns_influenced",
        "checkouts",
        "cited_without_grounded",
        "displayed_without_cited",
        "displayed_without_grounded",
    ):
        assert grand[stage] > 0, stage  # the workload exercises every stage and departure
    assert grand["retrieved"] == sum(r["retrieved"] for r in truth.values())
    assert once.dead_letters == 0  # every document and log line of the workload is valid
    events = once.worker_stats["normalize"]["events"]
    assert ch.query("SELECT uniqExact(event_id) FROM events").result_rows[0][0] == events > 1000

    twice_db = f"{unique}_twice"
    client = connect(infra.clickhouse_url, database=twice_db)
    try:
        migrate(client)
        twice = run_pipeline(
            _settings(infra, tmp_path / "twice"), client, workload, namespace=f"{unique}-2", deliveries=2
        )
        assert twice.documents == 2 * once.documents
        assert twice.log_events == 2 * once.log_events
        assert twice.stored_rows == once.stored_rows
        assert as_totals(twice.report) == as_totals(once.report)
        assert twice.dead_letters == 0
        assert client.query("SELECT uniqExact(event_id) FROM events").result_rows[0][0] == events
        dupes = twice.worker_stats["sessionize"]["duplicates"] + twice.worker_stats["correlate"]["duplicates"]
        assert dupes > 0  # the second delivery really arrived and was recognised
        assert set(MEASURES) <= set(twice.report["totals"])
    finally:
        client.command(f"DROP DATABASE IF EXISTS {twice_db}")
