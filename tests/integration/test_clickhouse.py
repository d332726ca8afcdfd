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


def test_engaged_destination_migration_keeps_rows_and_the_view_feeds_the_new_column(  # type: ignore[no-untyped-def]
    infra: Infra, unique: str, tmp_path
) -> None:
    """0007 on a database migrated to 0006 with rows in it: old rows read 0, and the hourly view
    (its query modified in place) sums the new measure of rows inserted afterwards."""
    from sinks.clickhouse import DDL_DIR, connect

    old = tmp_path / "ddl"
    old.mkdir()
    for f in sorted(DDL_DIR.glob("*.sql")):
        if int(f.name[:4]) <= 6:
            (old / f.name).write_text(f.read_text())
    client = connect(infra.clickhouse_url, database=f"{unique}_m7")
    try:
        assert [a[:4] for a in migrate(client, old)] == ["0001", "0002", "0003", "0004", "0005", "0006"]

        def insert(cid: str, columns: str, values: str) -> None:
            client.command(
                "INSERT INTO funnel_contributions (contribution_id, hour, owner_domain, content_key, "
                f"agent_id, content_scope, source_role, {columns}) VALUES ('{cid}', "
                f"'2026-01-15 10:00:00', 'example.com', 'c1', 'bot', '', 'agent', {values})"
            )

        insert("before", "engaged, engaged_link_click", "1, 1")
        assert migrate(client) == ["0007_engaged_destination"]
        assert migrate(client) == []
        insert("after", "engaged_destination", "2")
        hourly = client.query(
            "SELECT sum(engaged), sum(engaged_link_click), sum(engaged_destination) FROM funnel_hourly"
        ).result_rows
        assert hourly == [(1, 1, 2)]
        daily = client.query("SELECT engaged, engaged_destination FROM funnel_daily").result_rows
        assert daily == [(1, 2)]
    finally:
        client.command(f"DROP DATABASE IF EXISTS {unique}_m7")
