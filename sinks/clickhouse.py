"""ClickHouse access for every ctpipe process: one code path (clickhouse-connect ``Client``).

``CTPIPE_CLICKHOUSE_URL`` selects the engine:

* ``chdb:///abs/path[?database=db]`` - embedded ClickHouse (chdb) with data on disk. chdb lets
  exactly one process open a data path, so ctpipe takes an exclusive lock on it: **in embedded
  mode the process that writes is also the one that answers queries** (``ctpipe demo`` runs the
  sink and the report in one process; a second process gets a clear error, not chdb's).
* ``http(s)://user:pass@host:8123/db`` - a ClickHouse server; any number of processes.

Schema changes are versioned ``.sql`` files in ``sinks/ddl`` applied by ``migrate``; the files
may use ``{retention_days}`` (the TTL of every table), which ``migrate`` substitutes.

Errors: ``is_transient`` tells a ClickHouse error worth retrying (network, timeouts, "too many
parts", server unavailable) from a permanent one; the sink retries the former with backoff and
never sends them to the dead-letter topic.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client

DDL_DIR = Path(__file__).resolve().parent / "ddl"
DEFAULT_DATABASE = "ctpipe"
MIGRATIONS_TABLE = "schema_migrations"
# Royalty and audit data: seven years unless configured otherwise (CTPIPE_CLICKHOUSE_RETENTION_DAYS).
DEFAULT_RETENTION_DAYS = 2557
RETENTION_PLACEHOLDER = "{retention_days}"
_DDL_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Open locks on embedded data paths, per process (path -> fd).
_LOCKS: dict[str, int] = {}


class ClickHouseError(RuntimeError):
    """ClickHouse cannot be used as configured (one line, for the user)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed CTPIPE_CLICKHOUSE_URL."""

    embedded: bool
    database: str
    path: Path | None = None  # embedded data directory (None = in memory)
    server_dsn: str = ""  # server URL without the database path


def parse_url(url: str, database: str | None = None) -> Target:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    if parts.scheme == "chdb":
        db = database or (query.get("database") or [DEFAULT_DATABASE])[0]
        if parts.netloc in ("memory", ":memory:"):
            return Target(embedded=True, database=_ident(db))
        if parts.netloc or not parts.path.startswith("/"):
            raise ClickHouseError(f"embedded ClickHouse URL must be chdb:///absolute/path, got {url!r}")
        return Target(embedded=True, database=_ident(db), path=Path(parts.path))
    if parts.scheme in ("http", "https"):
        db = database or parts.path.strip("/") or DEFAULT_DATABASE
        dsn = urlunsplit((parts.scheme, parts.netloc, "", parts.query, ""))
        return Target(embedded=False, database=_ident(db), server_dsn=dsn)
    raise ClickHouseError(f"unsupported ClickHouse URL scheme {parts.scheme!r}: use chdb:// or http(s)://")


def _ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ClickHouseError(f"invalid ClickHouse database name {name!r}")
    return name


def _lock_embedded(path: Path) -> None:
    """Hold an exclusive lock on an embedded data path for the life of this process."""
    key = str(path.resolve())
    if key in _LOCKS:
        return
    path.mkdir(parents=True, exist_ok=True)
    lock_file = path / ".ctpipe.lock"
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ClickHouseError(
            f"embedded ClickHouse at {path} is in use by another process (pid {holder}); in embedded mode "
            "one process writes and answers queries: stop it, or set CTPIPE_CLICKHOUSE_URL to a server"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _LOCKS[key] = fd


def connect(url: str, *, database: str | None = None, create_database: bool = True) -> Client:
    """A clickhouse-connect client on the configured engine, using (and creating) the database."""
    target = parse_url(url, database)
    try:
        if target.embedded:
            if target.path is not None:
                _lock_embedded(target.path)
            dsn = f"chdb://{target.path}" if target.path is not None else "chdb://memory"
            client = clickhouse_connect.get_client(dsn=dsn)
        else:
            client = clickhouse_connect.get_client(dsn=target.server_dsn, database="default")
    except ClickHouseError:
        raise
    except Exception as exc:
        raise ClickHouseError(f"cannot open ClickHouse at {_safe(url)}: {exc}") from exc
    if create_database:
        client.command(f"CREATE DATABASE IF NOT EXISTS {target.database}")
    client.database = target.database
    return client


def _safe(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


# ---------------------------------------------------------------------------------------------
# migrations


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def statements(self) -> list[str]:
        """Statements of the file: separated by ``;`` at the end of a line, comments dropped."""
        body = "\n".join(line for line in self.sql.splitlines() if not line.lstrip().startswith("--"))
        return [s.strip() for s in re.split(r";\s*(?:\n|$)", body) if s.strip()]


def load_migrations(ddl_dir: Path = DDL_DIR) -> list[Migration]:
    migrations = []
    for f in sorted(ddl_dir.glob("*.sql")):
        match = _DDL_NAME.match(f.name)
        if not match:
            raise ClickHouseError(f"DDL file {f.name} is not named NNNN_name.sql")
        migrations.append(Migration(int(match.group(1)), match.group(2), f.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ClickHouseError("two DDL files share a version number")
    return migrations


def migrate(
    client: Client, ddl_dir: Path = DDL_DIR, *, retention_days: int = DEFAULT_RETENTION_DAYS
) -> list[str]:
    """Apply the DDL files not yet recorded in ``schema_migrations``; return their names.

    ``retention_days`` replaces ``{retention_days}`` in the files (the tables' TTL); it applies to
    tables created by this call, not to tables that exist already.
    """
    if retention_days < 1:
        raise ClickHouseError(f"retention must be at least 1 day, got {retention_days}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} "
        "(version UInt32, name String, applied_at DateTime64(3, 'UTC')) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {row[0] for row in client.query(f"SELECT version FROM {MIGRATIONS_TABLE}").result_rows}
    applied = []
    for m in load_migrations(ddl_dir):
        if m.version in done:
            continue
        for statement in m.statements:
            client.command(statement.replace(RETENTION_PLACEHOLDER, str(int(retention_days))))
        client.insert(
            MIGRATIONS_TABLE,
            [[m.version, m.name, datetime.now(UTC)]],
            column_names=["version", "name", "applied_at"],
        )
        applied.append(f"{m.version:04d}_{m.name}")
    return applied


# ---------------------------------------------------------------------------------------------
# writes


def insert_rows(
    client: Client,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    dedup_token: str | None = None,
) -> None:
    """One insert (one block); with a token, a repeat of the same insert is deduplicated."""
    if not rows:
        return
    settings: dict[str, Any] = {}
    if dedup_token:
        settings = {
            "insert_deduplicate": 1,
            "insert_deduplication_token": dedup_token,
            # A deduplicated block is skipped for materialized views too (funnel_hourly_mv).
            "deduplicate_blocks_in_dependent_materialized_views": 1,
        }
    client.insert(table, list(rows), column_names=list(columns), settings=settings)


# ---------------------------------------------------------------------------------------------
# errors

#: ClickHouse error codes that go away by themselves (retry with backoff, never dead-letter).
TRANSIENT_CODES = frozenset(
    {
        3,  # UNEXPECTED_END_OF_FILE (connection cut)
        159,  # TIMEOUT_EXCEEDED
        164,  # READONLY (server in read-only mode, e.g. while restarting)
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        203,  # NO_FREE_CONNECTION
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        236,  # ABORTED
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        252,  # TOO_MANY_PARTS
        279,  # ALL_CONNECTION_TRIES_FAILED
        285,  # TOO_FEW_LIVE_REPLICAS
        319,  # UNKNOWN_STATUS_OF_INSERT
        394,  # QUERY_WAS_CANCELLED
        425,  # SYSTEM_ERROR
        999,  # KEEPER_EXCEPTION
    }
)
_CODE = re.compile(r"Code:\s*(\d+)")
_TRANSIENT_TEXT = ("service unavailable", "connection refused", "connection reset", "timed out", "503")


class TransientClickHouseError(RuntimeError):
    """A ClickHouse failure worth retrying (raised by callers that classify with ``is_transient``)."""


def error_code(exc: BaseException) -> int | None:
    """The ClickHouse error code in an exception's message, if any."""
    match = _CODE.search(str(exc))
    return int(match.group(1)) if match else None


def is_transient(exc: BaseException) -> bool:
    """True for errors that retrying can cure: network, timeouts, too many parts, unavailable."""
    from clickhouse_connect.driver.exceptions import OperationalError

    if isinstance(exc, TransientClickHouseError | OperationalError | ConnectionError | TimeoutError):
        return True
    code = error_code(exc)
    if code is not None:
        return code in TRANSIENT_CODES
    text = str(exc).lower()
    return isinstance(exc, OSError) or any(t in text for t in _TRANSIENT_TEXT)
