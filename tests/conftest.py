"""Shared fixtures: real Kafka + ClickHouse (tests/infra.py), unique names per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctpipe.settings import Settings
from tests.infra import Infra, docker_infra, infra_mode, local_infra

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parents[1]
_USED: list[Infra] = []


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Settings as a developer's machine has them (only the jar cache is shared with tests)."""
    return Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> Iterator[Infra]:
    """The real broker and ClickHouse for this test session (never a mock, never skipped)."""
    if infra_mode() == "docker":
        cm = docker_infra()
    else:
        cm = local_infra(tmp_path_factory.mktemp("infra"), settings.jar_cache_dir)
    with cm as started:
        _USED.append(started)
        yield started


@pytest.fixture
def unique() -> str:
    """A fresh name fragment: topics, consumer groups and databases never collide across tests."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def ch(infra: Infra, unique: str):  # type: ignore[no-untyped-def]
    """A ClickHouse client on a database of this test's own, dropped afterwards."""
    from sinks.clickhouse import connect, migrate

    client = connect(infra.clickhouse_url, database=unique)
    migrate(client)
    yield client
    client.command(f"DROP DATABASE IF EXISTS {unique}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for used in _USED:
        terminalreporter.write_line(used.describe())
