"""Row shapes of ctpipe's ClickHouse tables: each table name and column list exists once here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[str, ...]


# sinks/ddl/0001_smoke_key_counts.sql
SMOKE_KEY_COUNTS = Table("smoke_key_counts", ("run_id", "topic", "key", "n"))
