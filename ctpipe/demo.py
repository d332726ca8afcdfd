"""The main job: a simulated fleet workload through the whole pipeline, into ClickHouse, reported.

``run_pipeline`` wires the project's own services in one process, exactly as they run apart:
a workload directory (``ctpipe generate --out``) is replayed to the raw topic
(``producers.replay``) and its CDN/origin logs go through the log ingester (``ctpipe.ingest_logs``);
the worker (``processors``: normalize, sessionize, correlate, aggregate) runs in this event
loop, the ClickHouse sink (``sinks.consumer``) in a thread. When the worker has consumed every
input, open sessions and correlation groups are drained, the sink catches up, and the funnel is
read back (``sinks.report``) and compared with the workload's ground truth, row by row. The
worker runs with the workload's content owner registry (``owners.json``, CT 0.1 section 7.3) when
it has one: the truth attributes content_id-only events with it.

Embedded ClickHouse: this process owns the data directory, so it both writes and answers the
report (see ``sinks.clickhouse``). Used by ``ctpipe demo`` and the end-to-end test.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from ctpipe.settings import Settings
from ctpipe.worker import WorkerConfig, running_worker, with_owner_registry, worker_app_id
from deploy.kafka.topics import delete_topics, ensure_topics, group_lag, message_count
from processors.worker import WorkerTopics, input_groups
from producers.kafka import make_producer
from producers.replay import replay_documents
from schemas import codec
from schemas.funnel import KEY_FIELDS, MEASURES
from schemas.topics import ALL
from sinks.consumer import ClickHouseSink, SinkConfig
from sinks.report import funnel_report
from sinks.rows import FUNNEL_HOURLY

Progress = Callable[[str, dict[str, Any]], None]  # (phase, figures)
RowKey = tuple[str, ...]

LOG_FORMATS = ("cloudflare", "fastly", "nginx")


@dataclass
class PipelineResult:
    namespace: str
    documents: int  # raw documents published (all deliveries)
    log_events: int  # AI-bot retrievals the log ingester published (all deliveries)
    seconds: float
    report: dict[str, Any]
    stored_rows: dict[RowKey, dict[str, Any]]
    expected_rows: dict[RowKey, dict[str, Any]] | None
    worker_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    sink_stats: dict[str, Any] = field(default_factory=dict)
    dead_letters: int = 0  # messages on the run's dead-letter topic

    @property
    def mismatches(self) -> list[str]:
        """Rows where ClickHouse and the ground truth differ (empty = exact)."""
        if self.expected_rows is None:
            return []
        out = []
        for key in sorted(set(self.stored_rows) | set(self.expected_rows)):
            got, want = self.stored_rows.get(key), self.expected_rows.get(key)
            if got != want:
                diff = {
                    m: (None if got is None else got.get(m), None if want is None else want.get(m))
                    for m in (*MEASURES, "conversion_value")
                    if (got or {}).get(m) != (want or {}).get(m)
                }
                out.append(f"{dict(zip(KEY_FIELDS, key, strict=True))}: stored vs expected {diff}")
        return out

    @property
    def exact(self) -> bool:
        return self.expected_rows is not None and not self.mismatches


def _row(measures: dict[str, Any], values: dict[str, Any] | None) -> dict[str, Any]:
    row: dict[str, Any] = {m: int(measures.get(m, 0)) for m in MEASURES}
    row["conversion_value"] = {str(c): int(v) for c, v in sorted((values or {}).items()) if v}
    return row


def expected_rows(workload: Path) -> dict[RowKey, dict[str, Any]] | None:
    """The ground truth of a workload directory, one entry per non-zero funnel row."""
    path = workload / "expected_funnel.json"
    if not path.exists():
        return None
    truth = codec.loads(path.read_bytes())
    rows: dict[RowKey, dict[str, Any]] = {}
    for r in truth["rows"]:
        key = tuple(str(r[f]) for f in KEY_FIELDS)
        rows[key] = _row(r, r.get("conversion_value"))
    return rows


def workload_owner_registry(workload: Path) -> Path | None:
    """The workload's content owner registry file (``owners.json``), if it has one."""
    from producers.generator import OWNERS_FILE

    path = workload / OWNERS_FILE
    return path if path.is_file() else None


def stored_rows(client: Client) -> dict[RowKey, dict[str, Any]]:
    """``funnel_hourly`` summed per full row key (SummingMergeTree may not have merged yet)."""
    sums = ", ".join(f"sum({m})" for m in MEASURES)
    dims = ", ".join(KEY_FIELDS)
    sql = (
        f"SELECT formatDateTime(hour, '%Y-%m-%dT%H:00:00Z', 'UTC'), {', '.join(KEY_FIELDS[1:])}, {sums}, "
        f"sumMap(conversion_value) FROM {FUNNEL_HOURLY.name} GROUP BY {dims}"
    )
    rows: dict[RowKey, dict[str, Any]] = {}
    n_key = len(KEY_FIELDS)
    for r in client.query(sql).result_rows:
        measures = dict(zip(MEASURES, r[n_key : n_key + len(MEASURES)], strict=True))
        row = _row(measures, r[-1])
        if any(row[m] for m in MEASURES) or row["conversion_value"]:
            rows[tuple(str(v) for v in r[:n_key])] = row
    return rows


def log_files(workload: Path) -> list[tuple[str, Path]]:
    """(format, path) of every CDN/origin log file of a workload, from its manifest."""
    manifest = codec.loads((workload / "manifest.json").read_bytes())
    return [
        (f["format"], workload / f["path"])
        for f in manifest.get("files", [])
        if f.get("format") in LOG_FORMATS
    ]


def publish_workload(settings: Settings, workload: Path, raw_topic: str) -> tuple[int, int]:
    """Publish a workload's documents and ingest its logs once; (documents, log events)."""
    from ctpipe.ingest_logs import ingest

    documents = replay_documents(make_producer(settings.bootstrap), raw_topic, workload)
    log_events = 0
    for fmt, path in log_files(workload):
        stats = ingest(
            [str(path)],
            settings=settings,
            fmt=fmt,
            site_host=path.stem if fmt == "nginx" else None,
            from_start=True,
        )
        log_events += stats.published
    return documents, log_events


async def _wait_caught_up(
    checks: list[Callable[[], bool]], *, what: str, deadline: float, still_ok: Callable[[], None]
) -> None:
    """Until every check holds twice in a row (one commit interval apart)."""
    streak = 0
    while streak < 2:
        still_ok()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        ok = all(await asyncio.gather(*(asyncio.to_thread(c) for c in checks)))
        streak = streak + 1 if ok else 0
        await asyncio.sleep(1.2)


async def run_pipeline_async(
    settings: Settings,
    client: Client,
    workload: Path,
    *,
    namespace: str,
    deliveries: int = 1,
    worker_config: WorkerConfig | None = None,
    timeout: float = 900.0,
    progress: Progress | None = None,
    keep_topics: bool = False,
) -> PipelineResult:
    """Run the whole pipeline over ``workload`` (see the module docstring)."""
    started = time.monotonic()
    deadline = started + timeout
    run_settings = settings.model_copy(update={"topic_namespace": namespace})
    topics = [t.namespaced(namespace) for t in ALL]
    await asyncio.to_thread(ensure_topics, settings.bootstrap, topics)
    raw = next(t.name for t in topics if t.name.endswith(".ctpipe.raw"))
    config = worker_config or WorkerConfig(
        inactivity_timeout=5.0, end_grace=0.5, lateness=600.0, correlation_window=5.0, tick=0.5
    )
    if config.owner_registry is None:
        # the ground truth attributes content_id-only events with the workload's registry
        config = with_owner_registry(config, workload_owner_registry(workload))
    sink_config = SinkConfig(
        bootstrap=settings.bootstrap,
        group_id=f"{settings.app_id}-{namespace}-sink",
        namespace=namespace,
        batch_rows=10_000,
        batch_seconds=0.5,
    )
    sink = ClickHouseSink(sink_config, client, producer=make_producer(settings.bootstrap))
    stop_sink = threading.Event()
    sink_error: list[BaseException] = []

    def sink_main() -> None:
        try:
            sink.run(stop=stop_sink.is_set)
        except BaseException as exc:  # surfaced to the caller below
            sink_error.append(exc)

    sink_thread = threading.Thread(target=sink_main, name="ctpipe-sink", daemon=True)
    sink_thread.start()
    documents = log_events = 0
    try:
        async with running_worker(
            bootstrap=settings.bootstrap,
            datadir=settings.data_dir / "worker" / namespace,
            namespace=namespace,
            config=config,
            app_id=settings.app_id,
        ) as worker:

            def healthy() -> None:
                worker.check()
                if sink_error:
                    raise RuntimeError(f"the sink failed: {sink_error[0]!r}") from sink_error[0]

            for _ in range(deliveries):
                d, e = await asyncio.to_thread(publish_workload, run_settings, workload, raw)
                documents += d
                log_events += e
                if progress:
                    progress("published", {"documents": documents, "log_events": log_events})
            groups = input_groups(
                worker_app_id(settings.app_id, namespace), WorkerTopics.for_namespace(namespace)
            )
            names = {t.name.rsplit(".", 1)[-1]: t.name for t in topics}

            def worker_done() -> bool:
                stats = worker.stats()
                if progress:
                    progress("processing", stats)
                # Everything is published (RAW holds it all), so committed inputs = consumed and
                # their outputs delivered (the worker flushes before it commits).
                return stats["normalize"]["messages"] > 0 and all(
                    group_lag(settings.bootstrap, group, inputs) == 0 for group, inputs in groups
                )

            await _wait_caught_up(
                [worker_done], what="the worker to consume its input", deadline=deadline, still_ok=healthy
            )
            if progress:
                progress("draining", worker.stats())
            await worker.drain(timeout=max(1.0, deadline - time.monotonic()))
            outputs = [names["funnel"], names["sessions"], names["correlated"], names["events"]]

            def sink_done() -> bool:
                if progress:
                    progress("sinking", {"rows": sink.stats.rows_inserted})
                return group_lag(settings.bootstrap, sink_config.group_id, outputs) == 0

            await _wait_caught_up(
                [worker_done, sink_done], what="the sink to catch up", deadline=deadline, still_ok=healthy
            )
            worker_stats = worker.stats()
            dead_letters = await asyncio.to_thread(message_count, settings.bootstrap, names["dlq"])
    finally:
        stop_sink.set()
        await asyncio.to_thread(sink_thread.join, 60)
        if not keep_topics:
            await asyncio.to_thread(delete_topics, settings.bootstrap, [t.name for t in topics])
    if sink_error:
        raise RuntimeError(f"the sink failed: {sink_error[0]!r}") from sink_error[0]
    return PipelineResult(
        namespace=namespace,
        documents=documents,
        log_events=log_events,
        seconds=time.monotonic() - started,
        report=funnel_report(client),
        stored_rows=stored_rows(client),
        expected_rows=expected_rows(workload),
        worker_stats=worker_stats,
        sink_stats={"rows_inserted": sink.stats.rows_inserted, "batches": sink.stats.batches},
        dead_letters=dead_letters,
    )


def run_pipeline(settings: Settings, client: Client, workload: Path, **kwargs: Any) -> PipelineResult:
    return asyncio.run(run_pipeline_async(settings, client, workload, **kwargs))


# ---------------------------------------------------------------------------------------------
# `ctpipe demo`

DEMO_DATABASE = "ctpipe_demo"
SUMMARY_MEASURES = (
    ("retrieved", "retrieved"),
    ("corroborated", "retrieved_corroborated"),
    ("grounded", "grounded"),
    ("cited", "cited"),
    ("displayed", "displayed"),
    ("engaged", "engaged"),
    ("dest. engaged", "engaged_destination"),
    ("turns infl.", "turns_influenced"),
    ("checkouts", "checkouts"),
)


def demo_workload(settings: Settings, seed: int, sessions: int, console: Any) -> Path:
    """The simulated workload for ``seed``/``sessions`` (generated once, then reused)."""
    from producers.generator import OWNERS_FILE, GeneratorConfig, generate

    path = settings.data_dir / "workloads" / f"seed{seed}-sessions{sessions}"
    config = GeneratorConfig(seed=seed, sessions=sessions)
    # a workload cached by an older simulator (before owners.json, or without a setting it has
    # now, e.g. destination reports) is generated again: the demo shows what the code does
    current = all((path / name).exists() for name in ("manifest.json", "expected_funnel.json", OWNERS_FILE))
    if current:
        args = codec.loads((path / "manifest.json").read_bytes()).get("args") or {}
        current = {f.name for f in fields(config)} <= set(args)
    if not current:
        shutil.rmtree(path, ignore_errors=True)
        console.print(f"generating workload: seed {seed}, {sessions} sessions -> {path}", highlight=False)
        generate(config, out=path)
    return path


def run_demo(
    settings: Settings,
    *,
    seed: int,
    sessions: int,
    workload: Path | None,
    report_json: Path | None,
    keep_broker: bool,
    console: Any,
    err: Any,
) -> int:
    """CLI body of ``ctpipe demo``; returns the exit code (0 exact or no truth, 1 mismatch/error)."""
    import uuid

    from rich.table import Table

    from ctpipe.broker import local_broker
    from deploy.kafka.local import BrokerError, LocalBroker
    from deploy.kafka.topics import TopicError
    from producers.kafka import DeliveryError
    from schemas.owners import OwnerRegistryError, load as load_owner_registry
    from sinks.clickhouse import ClickHouseError, connect, migrate

    broker: LocalBroker | None = None
    started_here = False
    try:
        if settings.local_kafka:
            broker = local_broker(settings, lambda m: err.print(f"[dim]{m}[/]", highlight=False))
            started_here = not broker.status().running
            status = broker.start()
            console.print(f"Kafka: Apache Kafka {status.version} at {status.bootstrap}", highlight=False)
        else:
            console.print(f"Kafka: external broker at {settings.bootstrap}", highlight=False)
        path = workload if workload is not None else demo_workload(settings, seed, sessions, console)
        if not (path / "manifest.json").exists():
            err.print(f"error: {path} is not a workload directory (no manifest.json)")
            return 2
        registry_path = workload_owner_registry(path)
        if registry_path is not None:
            try:
                registry = load_owner_registry(registry_path)
            except OwnerRegistryError as exc:
                err.print(f"[bold red]error:[/] bad owner registry: {exc}", highlight=False)
                return 2
            console.print(
                f"owner registry: {registry_path.name} ({len(registry)} content_id prefixes, CT 0.1 7.3)",
                highlight=False,
            )
        client = connect(settings.clickhouse_url, database=DEMO_DATABASE)
        client.command(f"DROP DATABASE IF EXISTS {DEMO_DATABASE}")  # each demo run starts empty
        client = connect(settings.clickhouse_url, database=DEMO_DATABASE)
        migrate(client, retention_days=settings.clickhouse_retention_days)
        console.print(f"ClickHouse {client.server_version}, database {DEMO_DATABASE}", highlight=False)
        namespace = f"demo-{uuid.uuid4().hex[:8]}"
        with console.status("starting the worker and the sink") as status_line:

            def progress(phase: str, figures: dict[str, Any]) -> None:
                if phase == "published":
                    text = (
                        f"published {figures['documents']} documents + {figures['log_events']} log retrievals"
                    )
                elif phase == "processing":
                    n = figures["normalize"]
                    text = f"processing: {n['messages']} raw messages -> {n['events']} canonical events"
                elif phase == "draining":
                    text = "input consumed: closing open sessions and correlation windows"
                else:
                    text = f"sinking: {figures.get('rows', 0)} rows written to ClickHouse"
                status_line.update(text)

            result = run_pipeline(settings, client, path, namespace=namespace, progress=progress)
    except (BrokerError, TopicError, ClickHouseError, DeliveryError, TimeoutError, RuntimeError) as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    finally:
        if broker is not None and started_here and not keep_broker:
            broker.stop()

    report = result.report
    table = Table(title="stage funnel per owner domain")
    table.add_column("owner domain", no_wrap=True)
    for label, _ in SUMMARY_MEASURES:
        table.add_column(label, justify="right", no_wrap=True)
    for owner in report["owners"]:
        t = owner["totals"]
        table.add_row(owner["owner_domain"] or "(unknown)", *(f"{t[m]:,}" for _, m in SUMMARY_MEASURES))
    totals = report["totals"]
    table.add_row("total", *(f"{totals[m]:,}" for _, m in SUMMARY_MEASURES), style="bold")
    console.print(table)
    events = result.worker_stats.get("normalize", {}).get("events", 0)
    rate = events / result.seconds if result.seconds else 0.0
    console.print(
        f"{result.documents} documents + {result.log_events} log retrievals -> {events} canonical events "
        f"in {result.seconds:.1f} s ({rate:,.0f} events/s end to end, one process)",
        highlight=False,
    )
    if report_json is not None:
        report_json.write_bytes(codec.dumps(report))
        console.print(f"report written to {report_json}", highlight=False)
    if result.expected_rows is None:
        console.print("no expected_funnel.json in the workload: nothing to compare")
        return 0
    if result.exact:
        console.print(
            f"[bold green]exact[/]: all {len(result.stored_rows)} funnel rows in ClickHouse equal the "
            "simulator's ground truth",
            highlight=False,
        )
        return 0
    mismatches = result.mismatches
    console.print(f"[bold red]MISMATCH[/]: {len(mismatches)} funnel rows differ from the ground truth:")
    for line in mismatches[:20]:
        console.print(f"  {line}", highlight=False)
    return 1
