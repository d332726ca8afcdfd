from __future__ import annotations

from pathlib import Path

import pytest

from sinks.clickhouse import ClickHouseError, Migration, load_migrations, parse_url
from sinks.rows import SMOKE_KEY_COUNTS


def test_embedded_url_forms() -> None:
    t = parse_url("chdb:///var/lib/ctpipe/clickhouse?database=funnel")
    assert t.embedded and t.path == Path("/var/lib/ctpipe/clickhouse") and t.database == "funnel"
    assert parse_url("chdb:///x").database == "ctpipe"
    assert parse_url("chdb://memory").path is None
    assert parse_url("chdb:///x", database="t123").database == "t123"


def test_relative_embedded_path_is_rejected() -> None:
    with pytest.raises(ClickHouseError, match="chdb:///absolute/path"):
        parse_url("chdb://relative/dir")


def test_server_url_keeps_credentials_apart_from_database() -> None:
    t = parse_url("https://default:pw@ch.example:8443/ctpipe_prod")
    assert not t.embedded and t.database == "ctpipe_prod"
    assert t.server_dsn == "https://default:pw@ch.example:8443"
    assert parse_url("http://ch:8123").database == "ctpipe"


@pytest.mark.parametrize("url", ["mysql://x/db", "chdb:///x?database=bad-name;DROP", "ftp://h"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ClickHouseError):
        parse_url(url)


def test_migration_files_are_versioned_and_split_into_statements(tmp_path: Path) -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == sorted({m.version for m in migrations})
    assert any(SMOKE_KEY_COUNTS.name in m.sql for m in migrations)
    m = Migration(1, "x", "-- comment; not a statement\nCREATE TABLE a (x UInt8) ENGINE=Memory;\n\nSELECT 1;")
    assert m.statements == ["CREATE TABLE a (x UInt8) ENGINE=Memory", "SELECT 1"]
    (tmp_path / "1_bad.sql").write_text("SELECT 1")
    with pytest.raises(ClickHouseError, match="NNNN_name.sql"):
        load_migrations(tmp_path)
