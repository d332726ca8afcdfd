"""``ctpipe`` command line: one subcommand per process or task.

Settings are built here, once, and passed down; nothing below reads the environment.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from ctpipe.settings import Settings

if TYPE_CHECKING:
    from deploy.kafka.local import LocalBroker
    from schemas.topics import Topic

app = typer.Typer(
    name="ctpipe",
    help="Kafka pipeline for AI content telemetry: ingest, sessionize, correlate, funnel to ClickHouse.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
kafka_app = typer.Typer(
    help="The local Apache Kafka broker (KRaft, single node, no Docker).", no_args_is_help=True
)
db_app = typer.Typer(help="ClickHouse schema.", no_args_is_help=True)
gateway_app = typer.Typer(help="HTTP ingest gateway (CT 0.1 + OpenAttribution 0.4 API) and its API keys.")
keys_app = typer.Typer(help="Gateway API keys (stored hashed).", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")
app.add_typer(db_app, name="db")
app.add_typer(gateway_app, name="gateway")
gateway_app.add_typer(keys_app, name="keys")
KeysFile = Annotated[
    Path | None, typer.Option("--keys-file", help="Keys file (default: CTPIPE_GATEWAY_KEYS_FILE).")
]

# Not a terminal (CI logs, pipes): rich would assume 80 columns and squeeze the funnel tables.
out = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


@dataclass
class Ctx:
    settings: Settings


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def settings_of(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    assert isinstance(obj, Ctx)
    return obj.settings


@app.callback()
def _root(ctx: typer.Context) -> None:
    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "settings"
        fail(f"invalid setting CTPIPE_{field.upper()}: {first['msg']}", 2)
    _configure_logging(settings.log_level)
    ctx.obj = Ctx(settings)


def _configure_logging(level: str) -> None:
    """Quiet, structured-enough logs: WARNING by default; librdkafka's connection chatter only at DEBUG."""
    import logging

    numeric = logging.getLevelName(level.upper())
    logging.basicConfig(
        level=numeric if isinstance(numeric, int) else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not (isinstance(numeric, int) and numeric <= logging.DEBUG):
        logging.getLogger("ctpipe.librdkafka").setLevel(logging.CRITICAL)
        # Faust reports its own producer backpressure ("producer buffer full") as a warning per
        # batch; it waits and carries on, so it is not worth a line each time.
        logging.getLogger("faust.transport.producer").setLevel(logging.ERROR)
        # A close timer that ran longer than its tick is skipped once and caught up next tick.
        logging.getLogger("mode.timers").setLevel(logging.ERROR)


# ---------------------------------------------------------------------------------------------
@app.command()
def config(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
) -> None:
    """Print the effective settings (secrets masked)."""
    values = settings_of(ctx).masked()
    if as_json:
        print(json.dumps(values, indent=2, default=str))
        return
    table = Table("setting", "value", "environment variable", title="ctpipe settings")
    for key, value in values.items():
        table.add_row(key, str(value), f"CTPIPE_{key.upper()}")
    out.print(table)


@app.command()
def native(
    action: Annotated[str, typer.Argument(help="build | status")] = "status",
    require: Annotated[bool, typer.Option(help="build: fail when the build fails.")] = False,
    verbose: Annotated[bool, typer.Option(help="build: show the compiler's output.")] = False,
) -> None:
    """The optional native (mypyc) build of the hot modules; pure Python runs when it is absent."""
    from schemas import _native

    if action == "status":
        state = "on" if _native.enabled() else f"off ({_native.ENV})"
        built = "present" if _native.available() else "absent"
        out.print(f"native: {state}; sources {_native.tag()}; build {built}", highlight=False)
        out.print(f"loaded from the build: {sorted(_native.active) or 'nothing'}", highlight=False)
        return
    if action != "build":
        fail(f"unknown action {action!r} (build | status)", 2)
    if not _native.enabled():
        out.print(f"native build skipped ({_native.ENV} is off)")
        return
    path, message = _native.build(verbose=verbose)
    if path is None:
        if require:
            fail(message)
        err.print(f"[yellow]{message}[/]", highlight=False)
        return
    out.print(message, highlight=False)


# ---------------------------------------------------------------------------------------------
def _broker(settings: Settings) -> LocalBroker:
    from ctpipe.broker import local_broker

    return local_broker(settings, lambda m: err.print(f"[dim]{m}[/]", highlight=False))


def _declared_topics(settings: Settings) -> list[Topic]:
    from schemas.topics import ALL

    return [t.namespaced(settings.topic_namespace) for t in ALL]


@kafka_app.command("fetch")
def kafka_fetch(
    ctx: typer.Context,
    refresh: Annotated[bool, typer.Option(help="Ask Maven for a newer 4.x even if one is cached.")] = False,
) -> None:
    """Resolve the broker jars (Maven Central -> git-ignored cache); no-op when cached."""
    from deploy.kafka.local import BrokerError, resolve_distribution

    broker = _broker(settings_of(ctx))
    try:
        dist = resolve_distribution(broker.cfg, refresh=refresh, log=broker.log)
    except BrokerError as exc:
        fail(str(exc))
    out.print(f"Apache Kafka {dist.version}: {dist.libs}", highlight=False)


@kafka_app.command("start")
def kafka_start(ctx: typer.Context) -> None:
    """Start the local broker (idempotent) and create the declared topics."""
    from deploy.kafka.local import BrokerError
    from deploy.kafka.topics import TopicError, ensure_topics

    settings = settings_of(ctx)
    if not settings.local_kafka:
        fail(f"CTPIPE_KAFKA_BOOTSTRAP={settings.kafka_bootstrap} is set: ctpipe does not run that broker")
    broker = _broker(settings)
    try:
        status = broker.start()
        created = ensure_topics(status.bootstrap, _declared_topics(settings))
    except (BrokerError, TopicError) as exc:
        fail(str(exc))
    out.print(status.describe(), highlight=False)
    if created:
        out.print(f"created topics: {', '.join(created)}", highlight=False)


@kafka_app.command("stop")
def kafka_stop(ctx: typer.Context) -> None:
    """Stop the local broker (no Java process is left behind)."""
    stopped = _broker(settings_of(ctx)).stop()
    out.print("stopped" if stopped else "not running")


@kafka_app.command("status")
def kafka_status(ctx: typer.Context) -> None:
    """Show whether the local broker runs; exit 0 if it answers, 3 if not."""
    status = _broker(settings_of(ctx)).status()
    out.print(status.describe(), highlight=False)
    raise typer.Exit(0 if status.answering else 3)


@kafka_app.command("topics")
def kafka_topics(ctx: typer.Context) -> None:
    """Create the declared topics (schemas/topics.py) on the configured broker."""
    from deploy.kafka.topics import TopicError, ensure_topics

    settings = settings_of(ctx)
    try:
        created = ensure_topics(settings.bootstrap, _declared_topics(settings))
    except TopicError as exc:
        fail(str(exc))
    out.print(f"created: {', '.join(created) or 'none (all exist)'}", highlight=False)


# ---------------------------------------------------------------------------------------------
@app.command()
def validate(
    paths: Annotated[
        list[str] | None,
        typer.Argument(help="Files, directories (recursively *.json/*.jsonl) or - for stdin."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdicts as JSON.")] = False,
) -> None:
    """Validate telemetry documents (CT 0.1, OA 0.4): exit 0 all valid, 1 any invalid, 2 usage error."""
    from ctpipe.validate import run

    raise typer.Exit(run(list(paths or []), as_json=as_json))


# ---------------------------------------------------------------------------------------------
@app.command()
def generate(
    ctx: typer.Context,
    seed: Annotated[int, typer.Option(help="Same seed + arguments = byte-identical workload.")] = 1,
    sessions: Annotated[int, typer.Option(min=0, help="Agent sessions to simulate.")] = 100,
    out: Annotated[Path | None, typer.Option("--out", help="Workload directory.")] = None,
    to_kafka: Annotated[
        bool, typer.Option("--to-kafka", help="Publish CT/OA documents to the raw topic.")
    ] = False,
    rate: Annotated[float, typer.Option(min=0, help="Documents/s to Kafka (0 = unlimited).")] = 0.0,
    header_loss: Annotated[
        float, typer.Option(min=0, max=1, help="Share of observers missing the header.")
    ] = 0.1,
    redirect_rate: Annotated[
        float, typer.Option(min=0, max=1, help="Share of fetches through a redirect.")
    ] = 0.08,
    hours: Annotated[int, typer.Option(min=1, help="Hours the sessions spread over.")] = 6,
    mix: Annotated[
        str | None,
        typer.Option(help="Delivery mix, e.g. ct_session=0.4,ct_events=0.2,ct_batches=0.2,oa_session=0.2"),
    ] = None,
) -> None:
    """Simulate an agent fleet and its CDN/origin observers; write the workload and its expected funnel."""
    from ctpipe.generate import run

    raise typer.Exit(
        run(
            settings_of(ctx),
            seed=seed,
            sessions=sessions,
            out=out,
            to_kafka=to_kafka,
            rate=rate,
            header_loss=header_loss,
            redirect_rate=redirect_rate,
            hours=hours,
            mix=mix,
        )
    )


# ---------------------------------------------------------------------------------------------
@app.command("ingest-logs")
def ingest_logs(
    ctx: typer.Context,
    paths: Annotated[list[str], typer.Argument(help="Log files (plain or .gz) or - for stdin.")],
    fmt: Annotated[str, typer.Option("--format", help="cloudflare|fastly|nginx|auto")] = "auto",
    site_host: Annotated[
        str | None, typer.Option(help="Host of nginx/Apache lines (required for nginx).")
    ] = None,
    scheme: Annotated[str, typer.Option(help="Scheme of nginx/Apache lines.")] = "https",
    emitter: Annotated[
        str | None, typer.Option(help="Emitter identity (default cdn:<format>[:<host>]).")
    ] = None,
    role: Annotated[str | None, typer.Option(help="Override source_role: edge|origin.")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="Tail the files (resumes from the checkpoint).")
    ] = False,
    idle_exit: Annotated[float | None, typer.Option(help="With --follow: stop after S idle seconds.")] = None,
    from_start: Annotated[bool, typer.Option("--from-start", help="Ignore the checkpoint.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print documents instead of publishing.")
    ] = False,
    batch_events: Annotated[
        int, typer.Option(help="Events per CT event_batch document (1: one event document each).")
    ] = 500,
) -> None:
    """Ingest CDN/origin access logs: AI-bot retrievals -> CT 0.1 events on the raw topic."""
    from ctpipe.ingest_logs import run

    raise typer.Exit(
        run(
            paths,
            settings=settings_of(ctx),
            fmt=fmt,
            site_host=site_host,
            scheme=scheme,
            emitter=emitter,
            role=role,
            follow=follow,
            idle_exit=idle_exit,
            from_start=from_start,
            dry_run=dry_run,
            batch_events=batch_events,
        )
    )


# ---------------------------------------------------------------------------------------------
@gateway_app.callback(invoke_without_command=True)
def gateway(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Listen address (default CTPIPE_GATEWAY_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default CTPIPE_GATEWAY_PORT).")] = None,
    keys_file: KeysFile = None,
) -> None:
    """Run the gateway: POST /v1/telemetry and the OpenAttribution /session/* and /events API."""
    if ctx.invoked_subcommand is not None:
        return
    from ctpipe.gateway import serve

    s = settings_of(ctx)
    raise typer.Exit(
        serve(
            s,
            host or s.gateway_host,
            port or s.gateway_port,
            keys_file=keys_file or s.gateway_keys_file,
            max_body=s.gateway_max_body,
            ack_timeout=s.gateway_ack_timeout,
        )
    )


@keys_app.command("add")
def gateway_keys_add(
    ctx: typer.Context,
    emitter: Annotated[str, typer.Option(help="Emitter identity the key reports as.")],
    roles: Annotated[str, typer.Option(help="Source roles it may report, comma-separated.")] = "agent",
    keys_file: KeysFile = None,
) -> None:
    """Mint a key (printed once; only its SHA-256 is stored)."""
    from ctpipe.gateway import keys_add

    s = settings_of(ctx)
    raise typer.Exit(keys_add(s, emitter, roles, keys_file=keys_file or s.gateway_keys_file))


@keys_app.command("list")
def gateway_keys_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    keys_file: KeysFile = None,
) -> None:
    """List keys (ids, emitters, roles; never the keys)."""
    from ctpipe.gateway import keys_list

    s = settings_of(ctx)
    raise typer.Exit(keys_list(s, keys_file=keys_file or s.gateway_keys_file, as_json=as_json))


@keys_app.command("revoke")
def gateway_keys_revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="Key id from `keys list`.")],
    keys_file: KeysFile = None,
) -> None:
    """Revoke a key."""
    from ctpipe.gateway import keys_revoke

    s = settings_of(ctx)
    raise typer.Exit(keys_revoke(s, key_id, keys_file=keys_file or s.gateway_keys_file))


# ---------------------------------------------------------------------------------------------
@app.command()
def worker(
    ctx: typer.Context,
    drain_after_idle: Annotated[
        float | None, typer.Option(help="Close every session and window after N s without input.")
    ] = None,
    store: Annotated[str, typer.Option(help="Faust table store (rocksdb:// = rocksdict).")] = "rocksdb://",
) -> None:
    """Run the processors: normalize, sessionize, correlate, aggregate (timeouts: CTPIPE_WORKER_*)."""
    from ctpipe.worker import WorkerConfig, run

    s = settings_of(ctx)
    config = WorkerConfig(
        inactivity_timeout=s.worker_inactivity_timeout,
        end_grace=s.worker_end_grace,
        lateness=s.worker_lateness,
        state_retention=s.worker_state_retention or None,
        correlation_window=s.worker_correlation_window,
        max_invalid_ratio=s.worker_max_invalid_ratio,
        batch_size=s.worker_batch_size,
        drain_after_idle=drain_after_idle,
        store=store,
        state_memory_mb=s.worker_state_memory_mb,
    )
    raise typer.Exit(run(s, config))


@app.command()
def sink(
    ctx: typer.Context,
    batch_rows: Annotated[
        int, typer.Option(min=1, help="Max records per insert (per topic partition).")
    ] = 10_000,
    batch_seconds: Annotated[float, typer.Option(min=0.01, help="Max seconds a batch stays open.")] = 1.0,
    group: Annotated[str | None, typer.Option(help="Consumer group (default <app_id>-sink).")] = None,
    until_caught_up: Annotated[
        bool, typer.Option(help="Exit once every partition is written to its end.")
    ] = False,
    timeout: Annotated[float | None, typer.Option(help="Fail after this many seconds.")] = None,
) -> None:
    """Run the ClickHouse sink: exactly-once funnel counts, events, sessions, retrievals."""
    from ctpipe.sink import run

    raise typer.Exit(
        run(
            settings_of(ctx),
            batch_rows=batch_rows,
            batch_seconds=batch_seconds,
            group=group,
            until_caught_up=until_caught_up,
            timeout=timeout,
        )
    )


@app.command()
def report(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option("--format", help="json (public contract) or table.")] = "json",
    owner: Annotated[str | None, typer.Option(help="Only this owner domain.")] = None,
    since: Annotated[str | None, typer.Option(help="Rows with hour >= this ISO date/datetime (UTC).")] = None,
    until: Annotated[
        str | None, typer.Option(help="Rows with hour < this; a bare date includes that day.")
    ] = None,
) -> None:
    """Funnel totals per owner domain and content key (JSON shape: see README)."""
    from ctpipe.report import run

    raise typer.Exit(run(settings_of(ctx), fmt=fmt, owner=owner, since=since, until=until))


# ---------------------------------------------------------------------------------------------
@db_app.command("migrate")
def db_migrate(ctx: typer.Context) -> None:
    """Apply the versioned DDL in sinks/ddl (idempotent)."""
    from sinks.clickhouse import ClickHouseError, connect, migrate

    try:
        s = settings_of(ctx)
        applied = migrate(connect(s.clickhouse_url), retention_days=s.clickhouse_retention_days)
    except ClickHouseError as exc:
        fail(str(exc))
    out.print(f"applied: {', '.join(applied) or 'none (up to date)'}", highlight=False)


# ---------------------------------------------------------------------------------------------
@app.command()
def demo(
    ctx: typer.Context,
    seed: Annotated[int, typer.Option(help="Seed of the simulated fleet workload.")] = 1,
    sessions: Annotated[int, typer.Option(min=1, help="Agent sessions to simulate.")] = 200,
    workload: Annotated[
        Path | None, typer.Option(help="Replay this `ctpipe generate --out` directory instead of generating.")
    ] = None,
    report_json: Annotated[Path | None, typer.Option(help="Write the report JSON (see README) here.")] = None,
    keep_broker: Annotated[bool, typer.Option(help="Leave a broker this command started running.")] = False,
) -> None:
    """Main job: a simulated fleet (agents + CDN/origin logs) through the whole pipeline into ClickHouse."""
    from ctpipe.demo import run_demo

    raise typer.Exit(
        run_demo(
            settings_of(ctx),
            seed=seed,
            sessions=sessions,
            workload=workload,
            report_json=report_json,
            keep_broker=keep_broker,
            console=out,
            err=err,
        )
    )


@app.command()
def smoke(
    ctx: typer.Context,
    messages: Annotated[int, typer.Option(min=1, help="Messages to push through the pipeline.")] = 10_000,
    keys: Annotated[int, typer.Option(min=1, help="Distinct message keys.")] = 10,
) -> None:
    """Infrastructure check: keyed messages through Kafka and a Faust agent into ClickHouse, counted."""
    from ctpipe.smoke import run_smoke
    from deploy.kafka.local import BrokerError
    from deploy.kafka.topics import TopicError
    from producers.kafka import DeliveryError
    from sinks.clickhouse import ClickHouseError, connect, migrate

    settings = settings_of(ctx)
    broker = _broker(settings) if settings.local_kafka else None
    started_here = False
    try:
        if broker is not None:
            started_here = not broker.status().running
            broker.start()
        client = connect(settings.clickhouse_url)
        migrate(client, retention_days=settings.clickhouse_retention_days)
        result = run_smoke(
            bootstrap=settings.bootstrap,
            client=client,
            datadir=settings.data_dir,
            app_id=settings.app_id,
            messages=messages,
            keys=keys,
        )
    except (BrokerError, TopicError, ClickHouseError, DeliveryError, TimeoutError) as exc:
        fail(str(exc))
    finally:
        if broker is not None and started_here:
            broker.stop()
    verdict = "exact" if result.exact else "MISMATCH"
    out.print(f"{verdict}: {result.produced} produced, {sum(result.stored.values())} counted in ClickHouse")
    if not result.exact:
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # `ctpipe ... | head`
        sys.stderr.close()


if __name__ == "__main__":
    main()
