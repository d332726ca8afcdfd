"""ClickHouse through the project's client code: migrations, and the embedded process model."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sinks.clickhouse import MIGRATIONS_TABLE, migrate
from tests.infra import Infra

pytestmark = pytest.mark.integration


def test_migrate_is_idempotent_and_versioned(ch) -> None:  # type: ignore[no-untyped-def]
    assert migrate(ch) == []  # the fixture already migrated this database
    versions = [
        r[0] for r in ch.query(f"SELECT version FROM {MIGRATIONS_TABLE} ORDER BY version").result_rows
    ]
    assert versions == sorted(set(versions)) and versions
    engine = ch.query(
        "SELECT engine FROM system.tables WHERE database = currentDatabase() AND name = 'smoke_key_counts'"
    ).result_rows
    assert engine == [("SummingMergeTree",)]


def test_second_process_on_an_embedded_path_gets_a_clear_error(infra: Infra, ch) -> None:  # type: ignore[no-untyped-def]
    """In embedded mode one process owns the data: another one is refused in plain words."""
    if not infra.clickhouse_url.startswith("chdb:"):
        pytest.skip("the single-owner rule is specific to embedded ClickHouse (server mode is multi-process)")
    code = (
        "import sys\n"
        "from sinks.clickhouse import ClickHouseError, connect\n"
        "try:\n"
        f"    connect({infra.clickhouse_url!r})\n"
        "except ClickHouseError as exc:\n"
        "    print(exc); sys.exit(3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "in use by another process" in proc.stdout
