"""Worker state tables: Faust tables whose store is ``processors.output.ChangelogStore`` (rocksdb
without WAL) and whose stages access a partition straight through ``PartitionState``."""

from __future__ import annotations

from pathlib import Path

from processors.app import PartitionState, ScopedState, create_app
from processors.output import ChangelogStore
from processors.sessionize import SessionizeConfig, Sessionizer


def _stage(tmp_path: Path, store: str) -> Sessionizer:
    app = create_app(f"t-{store[:3]}", "127.0.0.1:9", tmp_path, store=store)  # never connects
    return Sessionizer(
        app,
        events_topic="t-events",
        funnel_topic="t-funnel",
        sessions_topic="t-sessions",
        dlq_topic="t-dlq",
        config=SessionizeConfig(),
        partitions=2,
    )


def test_rocksdb_tables_use_the_changelog_store_and_direct_partition_access(tmp_path: Path) -> None:
    stage = _stage(tmp_path, "rocksdb://")
    try:
        assert isinstance(stage.table.data, ChangelogStore)
        state = stage.partition_state(1)
        assert isinstance(state, PartitionState) and state.partition == 1
        state.set(b"k", b"v")
        assert state.get(b"k") == b"v" and stage.partition_state(0).get(b"k") is None
        assert stage.app.output.changelog_sent == 1  # the write went to the changelog too
        state.delete(b"k")
        assert state.get(b"k") is None and stage.app.output.changelog_sent == 2
    finally:
        stage.app.output.close(timeout=0.1)


def test_other_stores_go_through_faust_tables(tmp_path: Path) -> None:
    stage = _stage(tmp_path, "memory://")
    try:
        assert isinstance(stage.partition_state(0), ScopedState)
    finally:
        stage.app.output.close(timeout=0.1)
