"""Drills reuse the test fixtures (real broker + ClickHouse): `python -m pytest bench/drills`."""

from tests.conftest import ch, infra, pytest_terminal_summary, settings, unique  # noqa: F401
