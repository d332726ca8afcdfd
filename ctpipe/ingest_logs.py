"""``ctpipe ingest-logs``: CDN/origin access logs -> CT 0.1 retrieval events on the RAW topic.

Input: log files (plain or ``.gz``) or ``-`` (stdin) in one format (``cloudflare``, ``fastly``,
``nginx``) or ``auto`` (detected per line); see ``producers.cdn_logs`` for the formats and the
pure line -> document pipeline. Output: one CT 0.1 ``content_retrieved`` event per AI-bot request
that delivered content, published to ``schemas.topics.RAW`` (namespaced by
``settings.topic_namespace``) in CT 0.1 ``event_batch`` documents of up to ``--batch-events``
events (default 500; CT 7.1 names edge platforms batching detections as what batches are for),
key None; with ``--batch-events 1`` one standalone ``event`` document per request, key =
content_telemetry_id, else content_url (``producers.cdn_logs.batch_documents``). Value = orjson
bytes of the document; header ``ctpipe-emitter`` = the emitter identity. Batching matters
downstream: a Kafka message costs the worker far more than an event in it. ``--dry-run`` prints
the documents as JSON lines on stdout instead (and neither reads nor writes checkpoints).

Checkpoints: ``<data_dir>/checkpoints/ingest-logs.json`` maps a file's absolute path to
``{"inode", "offset"}``: the byte offset after the last line whose documents the broker
acknowledged (offsets of ``.gz`` files count decompressed bytes). A run resumes there unless
``--from-start`` (which still updates it); a different inode (the file was rotated) or a file
shorter than the offset (truncated) starts from 0. Publishing happens in chunks and the
checkpoint advances only after a chunk's flush, so a crash re-publishes at most one chunk,
with the same event ids (downstream dedupes by id).

``--follow`` tails the files: polls for appended data, publishes complete lines only, and on an
inode change (rotation) drains the old file, then continues with the new one from offset 0.
``--idle-exit S`` ends a follow after S seconds without new data (tests, batch jobs).

Exit codes: 0 success (skipped lines are not failures), 1 publish failure, 2 usage error.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO, cast

from ctpipe.settings import Settings
from producers.cdn_logs import (
    BATCH_EVENTS,
    SKIP_REASONS,
    Retrieval,
    Skip,
    batch_documents,
    process_line,
    valid_host,
)
from producers.kafka import Headers
from schemas import codec

FORMAT_CHOICES = ("cloudflare", "fastly", "nginx", "auto")
ROLE_CHOICES = ("edge", "origin")
CHECKPOINT_FILE = "ingest-logs.json"
CHUNK_BYTES = 1 << 20
EMITTER_HEADER = "ctpipe-emitter"
MAX_REPORTED_SKIPS = 20
_REPORTED = frozenset({"wrong_format", "malformed", "no_site_host"})


class UsageError(ValueError):
    """Bad arguments (exit 2)."""


@dataclass(slots=True)
class IngestStats:
    """What one run did."""

    lines: int = 0
    published: int = 0
    skips: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    ctid_dropped: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    reported: list[str] = field(default_factory=list)  # first bad lines, "path@offset: reason"

    @property
    def rate(self) -> float:
        return self.lines / self.seconds if self.seconds > 0 else 0.0


# --- checkpoints -----------------------------------------------------------------------------
class Checkpoints:
    """``{abs path: {"inode": int, "offset": int}}`` in one JSON file, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, int]] = {}
        try:
            loaded = json.loads(path.read_text())
            if isinstance(loaded, dict):
                self.entries = {
                    k: v for k, v in loaded.items() if isinstance(v, dict) and {"inode", "offset"} <= v.keys()
                }
        except (OSError, ValueError):
            pass

    def resume_offset(self, key: str, inode: int, size: int) -> int:
        entry = self.entries.get(key)
        if entry is None or entry["inode"] != inode or entry["offset"] > size:
            return 0  # never seen, rotated, or truncated
        return int(entry["offset"])

    def set(self, key: str, inode: int, offset: int) -> None:
        self.entries[key] = {"inode": inode, "offset": offset}
        # merge with what other runs wrote meanwhile (other files), then replace atomically
        self.path.parent.mkdir(parents=True, exist_ok=True)
        merged: dict[str, Any] = {}
        try:
            on_disk = json.loads(self.path.read_text())
            if isinstance(on_disk, dict):
                merged.update(on_disk)
        except (OSError, ValueError):
            pass
        merged.update(self.entries)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(merged, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


# --- publishing ------------------------------------------------------------------------------
class Sink:
    """Where documents go: Kafka (acknowledged per flush) or stdout (dry run)."""

    def __init__(
        self,
        settings: Settings,
        emitter: str,
        dry_run: bool,
        stdout: TextIO,
        batch_events: int = BATCH_EVENTS,
    ) -> None:
        self.dry_run = dry_run
        self.stdout = stdout
        self.batch_events = batch_events
        self.pending: list[Retrieval] = []
        self.header: Headers = [(EMITTER_HEADER, emitter.encode())]
        self.topic = ""
        if not dry_run:
            from deploy.kafka.topics import ensure_topics
            from producers.kafka import AckedSender, make_producer
            from schemas.topics import RAW

            topic = RAW.namespaced(settings.topic_namespace)
            ensure_topics(settings.bootstrap, [topic])
            self.topic = topic.name
            self.sender = AckedSender(make_producer(settings.bootstrap), self.topic)

    def send(self, r: Retrieval) -> None:
        """Queue one retrieval; ``flush`` publishes (batched) and waits for the broker."""
        self.pending.append(r)

    def flush(self, timeout: float = 60.0) -> None:
        """Publish what is queued and wait until the broker acknowledged everything sent;
        raise DeliveryError if not."""
        docs = batch_documents(self.pending, self.batch_events)
        self.pending = []
        for key, doc in docs:
            value = codec.dumps(doc)
            if self.dry_run:
                self.stdout.write(value.decode())
                self.stdout.write("\n")
            else:
                self.sender.send(key.encode() if key is not None else None, value, self.header)
        if self.dry_run:
            self.stdout.flush()
            return
        self.sender.flush(timeout)


# --- reading ---------------------------------------------------------------------------------
@dataclass(slots=True)
class Source:
    """One input being read: its handle, identity and the offset of the next unread line."""

    label: str
    key: str | None  # checkpoint key (absolute path); None for stdin
    fh: IO[bytes]
    inode: int
    offset: int
    gz: bool = False


def _open(path: Path) -> tuple[IO[bytes], bool]:
    if path.suffix == ".gz":
        return cast(IO[bytes], gzip.open(path, "rb")), True
    return path.open("rb"), False


def _complete_lines(src: Source, *, final: bool) -> Iterator[tuple[list[bytes], int]]:
    """Chunks of complete lines from ``src.offset`` on, each with the offset after it.

    ``final``: the trailing line without a newline counts too (the file is complete).
    """
    buf = b""
    offset = src.offset
    while True:
        data = src.fh.read(CHUNK_BYTES)
        if not data:
            break
        buf = buf + data if buf else data
        cut = buf.rfind(b"\n")
        if cut < 0:
            continue
        complete, buf = buf[: cut + 1], buf[cut + 1 :]
        offset += len(complete)
        yield complete.split(b"\n")[:-1], offset
    if buf and final:
        yield [buf], offset + len(buf)


class Ingestor:
    """The thin I/O shell around ``process_line``: read, process, publish, checkpoint."""

    def __init__(
        self,
        *,
        fmt: str,
        emitter: str,
        role: str | None,
        site_host: str,
        scheme: str,
        sink: Sink,
        checkpoints: Checkpoints | None,
        on_progress: Callable[[IngestStats], None] | None = None,
    ) -> None:
        self.fmt, self.emitter, self.role = fmt, emitter, role
        self.site_host, self.scheme = site_host, scheme
        self.sink = sink
        self.checkpoints = checkpoints
        self.on_progress = on_progress
        self.stats = IngestStats()

    def drain(self, src: Source, *, final: bool) -> int:
        """Process every complete line available in ``src``; return how many were read."""
        if not src.gz and src.key is not None:
            src.fh.seek(src.offset)
        stats = self.stats
        skips = stats.skips
        fmt, emitter, role, site_host, scheme = self.fmt, self.emitter, self.role, self.site_host, self.scheme
        n = 0
        for lines, end in _complete_lines(src, final=final):
            pos = src.offset
            for line in lines:
                r = process_line(fmt, line, emitter=emitter, role=role, site_host=site_host, scheme=scheme)
                if type(r) is Skip:
                    skips[r.reason] += 1
                    if r.reason in _REPORTED and len(stats.reported) < MAX_REPORTED_SKIPS:
                        stats.reported.append(f"{src.label}@{pos}: {r.reason} ({r.detail})")
                else:
                    assert isinstance(r, Retrieval)
                    self.sink.send(r)
                    stats.published += 1
                    stats.categories[r.document["event"]["data"]["bot_category"]] += 1
                    stats.ctid_dropped += r.ctid_dropped
                pos += len(line) + 1
            self.sink.flush()  # the broker acknowledged the chunk: now the checkpoint may move
            n += len(lines)
            stats.lines += len(lines)
            stats.bytes_read += end - src.offset
            src.offset = end
            if self.checkpoints is not None and src.key is not None:
                self.checkpoints.set(src.key, src.inode, end)
            if self.on_progress is not None:
                self.on_progress(stats)
        return n


def _open_source(path: str, checkpoints: Checkpoints | None, from_start: bool) -> Source:
    if path == "-":
        return Source(label="-", key=None, fh=sys.stdin.buffer, inode=0, offset=0, gz=False)
    p = Path(path).resolve()
    fh, gz = _open(p)
    st = os.fstat(fh.fileno()) if not gz else p.stat()
    key = str(p)
    offset = 0
    if checkpoints is not None and not from_start:
        offset = checkpoints.resume_offset(key, st.st_ino, st.st_size if not gz else 1 << 62)
    if gz and offset:
        fh.seek(offset)  # gzip seeks forward by decompressing
    return Source(label=path, key=key, fh=fh, inode=st.st_ino, offset=offset, gz=gz)


def _check_rotation(src: Source, ing: Ingestor) -> bool:
    """Follow mode: switch to a rotated-in file (inode change) or rewind a truncated one."""
    if src.key is None or src.gz:
        return False
    try:
        st = os.stat(src.key)
    except FileNotFoundError:
        return False  # rotated away, the new file is not there yet
    if st.st_ino != src.inode:
        ing.drain(src, final=True)  # the old file is complete: take its last line too
        src.fh.close()
        fh, _ = _open(Path(src.key))
        src.fh, src.inode, src.offset = fh, os.fstat(fh.fileno()).st_ino, 0
        return True
    if st.st_size < src.offset:
        src.offset = 0
        return True
    return False


def ingest(
    paths: list[str],
    *,
    settings: Settings,
    fmt: str = "auto",
    site_host: str | None = None,
    scheme: str = "https",
    emitter: str | None = None,
    role: str | None = None,
    follow: bool = False,
    idle_exit: float | None = None,
    from_start: bool = False,
    dry_run: bool = False,
    poll_interval: float = 0.25,
    stdout: TextIO | None = None,
    on_progress: Callable[[IngestStats], None] | None = None,
    batch_events: int = BATCH_EVENTS,
) -> IngestStats:
    """Ingest ``paths``; return the statistics. Raises UsageError, DeliveryError, TopicError."""
    stdout = stdout if stdout is not None else sys.stdout
    if fmt not in FORMAT_CHOICES:
        raise UsageError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMAT_CHOICES)}")
    if role is not None and role not in ROLE_CHOICES:
        raise UsageError(f"unknown --role {role!r}; choose edge or origin")
    if scheme not in ("http", "https"):
        raise UsageError("--scheme must be http or https")
    if not paths:
        raise UsageError("no input: give log files or - for stdin")
    if batch_events < 1:
        raise UsageError("--batch-events must be >= 1")
    if fmt == "nginx" and not site_host:
        raise UsageError("--format nginx needs --site-host (the combined log format has no host)")
    if site_host and not valid_host(site_host):
        raise UsageError(f"--site-host {site_host!r} is not a host name")
    missing = [p for p in paths if p != "-" and not Path(p).is_file()]
    if missing:
        raise UsageError(f"no such file: {', '.join(missing)}")
    if paths.count("-") > 1:
        raise UsageError("- (stdin) given more than once")
    emitter = emitter or (f"cdn:{fmt}:{site_host}" if site_host else f"cdn:{fmt}")
    checkpoints = None if dry_run else Checkpoints(settings.data_dir / "checkpoints" / CHECKPOINT_FILE)
    sink = Sink(settings, emitter, dry_run, stdout, batch_events)
    ing = Ingestor(
        fmt=fmt,
        emitter=emitter,
        role=role,
        site_host=site_host or "",
        scheme=scheme,
        sink=sink,
        checkpoints=checkpoints,
        on_progress=on_progress,
    )
    started = time.perf_counter()

    def tick(stats: IngestStats) -> None:
        stats.seconds = time.perf_counter() - started
        if on_progress is not None:
            on_progress(stats)

    ing.on_progress = tick
    sources = [_open_source(p, checkpoints, from_start) for p in paths]
    try:
        for src in sources:
            ing.drain(src, final=not follow or src.key is None or src.gz)
        if follow:
            tailed = [s for s in sources if s.key is not None and not s.gz]
            idle_since = time.monotonic()
            while tailed:
                progressed = False
                for src in tailed:
                    progressed |= ing.drain(src, final=False) > 0
                    progressed |= _check_rotation(src, ing)
                if progressed:
                    idle_since = time.monotonic()
                elif idle_exit is not None and time.monotonic() - idle_since >= idle_exit:
                    break
                else:
                    time.sleep(poll_interval)
    finally:
        for src in sources:
            if src.key is not None:
                src.fh.close()
        ing.stats.seconds = time.perf_counter() - started
    return ing.stats


# --- the command -----------------------------------------------------------------------------
def _summary(stats: IngestStats, dry_run: bool) -> Any:
    from rich.table import Table

    table = Table("", "count", title=f"ingest-logs ({stats.seconds:.1f} s, {stats.rate:,.0f} lines/s)")
    table.add_row("lines read", f"{stats.lines:,}")
    table.add_row(
        "documents printed" if dry_run else "events published", f"{stats.published:,}", style="bold"
    )
    for category in ("inference", "search", "training"):
        if stats.categories[category]:
            table.add_row(f"  bot_category {category}", f"{stats.categories[category]:,}")
    for reason in SKIP_REASONS:
        if stats.skips[reason]:
            table.add_row(f"skipped: {reason}", f"{stats.skips[reason]:,}")
    if stats.ctid_dropped:
        table.add_row("invalid Content-Telemetry-ID dropped", f"{stats.ctid_dropped:,}")
    return table


def run(
    paths: list[str],
    *,
    settings: Settings,
    fmt: str = "auto",
    site_host: str | None = None,
    scheme: str = "https",
    emitter: str | None = None,
    role: str | None = None,
    follow: bool = False,
    idle_exit: float | None = None,
    from_start: bool = False,
    dry_run: bool = False,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    batch_events: int = BATCH_EVENTS,
) -> int:
    """``ctpipe ingest-logs``: exit 0 on success, 1 on a publish failure, 2 on a usage error."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from deploy.kafka.topics import TopicError
    from producers.kafka import DeliveryError

    stdout = stdout if stdout is not None else sys.stdout
    err = Console(file=stderr if stderr is not None else sys.stderr, highlight=False, soft_wrap=True)
    out = err if dry_run else Console(file=stdout, highlight=False)
    interactive = not dry_run and stdout.isatty()
    total = None
    if not follow and "-" not in paths and all(Path(p).is_file() for p in paths):
        total = sum(Path(p).stat().st_size for p in paths) or None
    progress = Progress(
        TextColumn("ingest-logs"),
        BarColumn(),
        TextColumn("{task.fields[lines]:>12,} lines  {task.fields[rate]:>10,.0f} lines/s"),
        TextColumn("{task.fields[published]:>10,} published"),
        TimeElapsedColumn(),
        console=out,
        disable=not interactive,
        transient=False,
    )
    task = progress.add_task("ingest", total=total, lines=0, rate=0.0, published=0)

    def on_progress(stats: IngestStats) -> None:
        progress.update(
            task, completed=stats.bytes_read, lines=stats.lines, rate=stats.rate, published=stats.published
        )

    code = 0
    stats: IngestStats | None = None
    try:
        with progress:
            stats = ingest(
                paths,
                settings=settings,
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
                stdout=stdout,
                on_progress=on_progress,
            )
    except UsageError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        return 2
    except (DeliveryError, TopicError) as exc:
        err.print(f"[bold red]error:[/] publishing failed: {exc}")
        return 1
    except OSError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        return 1
    except KeyboardInterrupt:
        err.print("interrupted (the checkpoint holds the last acknowledged line)")
        return 0 if follow else 130
    for line in stats.reported:
        err.print(f"skipped {line}")
    shown = len(stats.reported)
    bad = sum(stats.skips[r] for r in _REPORTED)
    if bad > shown:
        err.print(f"... {bad - shown:,} more wrong-format/malformed lines not shown")
    out.print(_summary(stats, dry_run))
    return code
