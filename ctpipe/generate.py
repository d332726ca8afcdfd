"""``ctpipe generate``: run the fleet simulator into a workload directory and/or the RAW topic.

Input: seed, session count, simulation knobs, ``--out DIR`` and/or ``--to-kafka``. Output: the
workload directory described in ``producers.generator`` (documents, CDN/origin logs,
``expected_funnel.json``, ``manifest.json``, ``owners.json``); with ``--to-kafka`` the CT/OA
documents go to the namespaced RAW topic (key = session_id, else content_telemetry_id; header
``ctpipe-emitter``) at ``--rate`` documents/s, while logs, truth and manifest are still written to ``--out``.
Exit codes: 0 done, 1 Kafka failure, 2 usage error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ctpipe.settings import Settings
from producers.generator import FORMATS, GenerateResult, GeneratorConfig, KafkaDocuments, generate
from schemas.funnel import STAGE_MEASURES
from schemas.topics import RAW


def parse_mix(text: str) -> dict[str, float]:
    """``ct_session=0.4,ct_events=0.2,...`` -> shares (formats left out get 0)."""
    mix: dict[str, float] = dict.fromkeys(FORMATS, 0.0)
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in mix:
            raise ValueError(
                f"bad --mix entry {part!r}: expected FORMAT=SHARE with FORMAT in {', '.join(FORMATS)}"
            )
        mix[name] = float(value)
    return mix


def run(
    settings: Settings,
    *,
    seed: int,
    sessions: int,
    out: Path | None,
    to_kafka: bool = False,
    rate: float = 0.0,
    header_loss: float = 0.1,
    redirect_rate: float = 0.08,
    hours: int = 6,
    mix: str | None = None,
    console: Console | None = None,
) -> int:
    """Generate one workload; print a summary. Returns the exit code."""
    con = console or Console()
    err = Console(stderr=True)
    if out is None and not to_kafka:
        err.print("[bold red]error:[/] give --out DIR and/or --to-kafka", highlight=False)
        return 2
    if rate < 0:
        err.print("[bold red]error:[/] --rate must be >= 0", highlight=False)
        return 2
    try:
        config = GeneratorConfig(
            seed=seed, sessions=sessions, hours=hours, header_loss=header_loss, redirect_rate=redirect_rate
        )
        if mix:
            config.mix = parse_mix(mix)
            config.__post_init__()  # validate the new mix
    except ValueError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    if to_kafka and out is None:
        err.print(
            "[yellow]note:[/] no --out: CDN/origin logs and the expected funnel are not written",
            highlight=False,
        )

    sink: KafkaDocuments | None = None
    topic = RAW.namespaced(settings.topic_namespace)
    if to_kafka:
        from confluent_kafka import KafkaException

        from deploy.kafka.topics import TopicError, ensure_topics
        from producers.kafka import make_producer

        try:
            ensure_topics(settings.bootstrap, [topic])
        except (TopicError, KafkaException) as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False)
            return 1
        sink = KafkaDocuments(make_producer(settings.bootstrap), topic.name, rate)

    try:
        result = _generate(config, out, sink, topic.name if to_kafka else None, con)
        if sink is not None:
            sink.close()
    except RuntimeError as exc:  # Kafka delivery failures (KafkaDocuments.close)
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 1
    con.print(summary_table(result, out, topic.name if to_kafka else None))
    return 0


def _generate(
    config: GeneratorConfig, out: Path | None, sink: KafkaDocuments | None, topic: str | None, con: Console
) -> GenerateResult:
    if not con.is_terminal:
        return generate(config, out=out, documents=sink, kafka_topic=topic)
    columns = (TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=con, transient=True) as bar:
        task = bar.add_task("sessions", total=config.sessions)

        def tick(done: int, _total: int) -> None:
            bar.update(task, completed=done)

        return generate(config, out=out, documents=sink, progress=tick, kafka_topic=topic)


def summary_table(result: GenerateResult, out: Path | None, topic: str | None) -> Table:
    """Documents per format, events, log lines and the expected totals."""
    stats = result.stats
    title = f"workload seed={result.config.seed} sessions={result.config.sessions}"
    table = Table("what", "count", title=title)
    for fmt, n in sorted(stats.sessions.items()):
        table.add_row(f"sessions {fmt}", str(n))
    for fmt, n in sorted(stats.documents.items()):
        table.add_row(f"documents {fmt}", str(n))
    for fmt, n in sorted(stats.events.items()):
        table.add_row(f"events {fmt}", str(n))
    for fmt, n in sorted(stats.log_lines.items()):
        table.add_row(f"log lines {fmt}", str(n))
    grand: dict[str, Any] = {}
    for counts in result.truth.nonzero().values():
        for m, v in counts.measures.items():
            grand[m] = grand.get(m, 0) + v
    for m in (STAGE_MEASURES[0], "retrieved_corroborated", *STAGE_MEASURES[1:]):
        table.add_row(f"expected {m}", str(grand.get(m, 0)))
    table.add_row("destination", ", ".join(x for x in (str(out) if out else "", topic or "") if x))
    return table
