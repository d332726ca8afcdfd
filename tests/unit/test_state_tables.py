"""Worker state tables: Faust tables whose store is ``processors.output.ChangelogStore`` (rocksdb
without WAL) and whose stages access a partition straight through ``PartitionState``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from faust.types import TP

from processors import app as app_module, sessionize
from processors.app import PartitionState, PipelineApp, ScopedState, assigned_partitions, create_app
from processors.correlate import CorrelateConfig, Correlator
from processors.output import ChangelogStore
from processors.sessionize import SessionizeConfig, Sessionizer


def _stage(tmp_path: Path, store: str, app: PipelineApp | None = None) -> Sessionizer:
    if app is None:
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


def _correlator(app: PipelineApp, config: CorrelateConfig | None = None) -> Correlator:
    return Correlator(
        app,
        retrievals_topic="t-retrievals",
        funnel_topic="t-funnel",
        correlated_topic="t-correlated",
        dlq_topic="t-dlq",
        config=config or CorrelateConfig(),
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


def test_rescan_rebuilds_the_deadline_index_from_the_active_partitions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a rebalance runs: only keys of partitions this worker owns, tombstones and chunks
    never (no deadline), each due once and in deadline order."""
    stage = _stage(tmp_path, "rocksdb://")
    try:
        changelog = stage.table.changelog_topic_name
        timeout = stage.config.inactivity_timeout
        for partition, key, last in ((0, "s1", 100.0), (1, "s2", 50.0), (0, "s4", 70.0)):
            state = sessionize.new_state(key, partition)
            state["la"] = last
            stage.partition_state(partition).set(key.encode(), orjson.dumps(state))
        tomb = {"k": "s3", "p": 0, "rev": 1, "tomb": True}
        stage.partition_state(0).set(b"s3", orjson.dumps(tomb))
        stage.partition_state(1).set(
            sessionize.chunk_key("s2", 0),
            orjson.dumps({"k": "s2", "p": 1, "chunk": True, "ev": [], "ids": []}),
        )

        actives = {TP(changelog, 0), TP(changelog, 1)}
        monkeypatch.setattr(stage.app.assignor, "assigned_actives", lambda: actives)
        stage._rescan()
        assert stage.index == {b"s1": (100 + timeout, 0), b"s2": (50 + timeout, 1), b"s4": (70 + timeout, 0)}
        assert stage._due(50 + timeout, drain=False) == [(b"s2", 1)]
        assert stage._due(1e12, drain=False) == [(b"s4", 0), (b"s1", 0)]
        assert stage._due(1e12, drain=False) == []  # each key popped once

        actives = {TP(changelog, 1)}  # partition 0 went to another worker
        stage._rescan()
        assert stage.index == {b"s2": (50 + timeout, 1)}
    finally:
        stage.app.output.close(timeout=0.1)


def test_a_drain_closes_what_the_table_holds_open_also_keys_the_index_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline index is a cache of the table: a drain rescans the table, so a key the index
    lost is still closed, and the loss is counted (``index_misses``) instead of silent."""
    stage = _stage(tmp_path, "rocksdb://")
    try:
        changelog = stage.table.changelog_topic_name
        for partition, key in ((0, "s1"), (1, "s2")):
            state = sessionize.new_state(key, partition)
            state["la"] = 100.0
            stage.partition_state(partition).set(key.encode(), orjson.dumps(state))
        actives = {TP(changelog, 0), TP(changelog, 1)}
        monkeypatch.setattr(stage.app.assignor, "assigned_actives", lambda: actives)
        stage._rescan()
        stage._assigned = assigned_partitions(stage.app)  # no partition moved since
        del stage.index[b"s2"]  # what a bug in the index upkeep would do
        closed: list[tuple[bytes, int]] = []

        async def close(due: list[tuple[bytes, int]], now: float, drain: bool) -> int:
            assert drain
            closed.extend(due)
            for key, partition in due:  # as ``_close`` does: every key it read is scheduled again
                stage._schedule(key, 100.0 + stage.config.inactivity_timeout, partition)
            return len(due)

        monkeypatch.setattr(stage, "_close", close)
        monkeypatch.setattr(app_module, "AUDIT_KEYS", 0)  # the drain alone (the audit: below)
        monkeypatch.setattr(app_module, "AUDIT_ROUND", float("inf"))
        assert asyncio.run(stage.close_due(200.0)) == 0  # not due, not draining: nothing
        assert closed == [] and stage.index_misses == 0
        decoded: list[str] = []  # the states the drain read: only the one the index lost
        deadline = stage.deadline
        monkeypatch.setattr(stage, "deadline", lambda state: decoded.append(state["k"]) or deadline(state))
        stage.request_drain()
        assert asyncio.run(stage.close_due(200.0)) == 2
        assert sorted(closed) == [(b"s1", 0), (b"s2", 1)]
        assert stage.index_misses == 1 and stage.cpu_stats()["index_misses"] == 1
        assert decoded == ["s2"]
        stage.request_drain()  # the index is whole again: a second drain misses nothing
        closed.clear()
        assert asyncio.run(stage.close_due(200.0)) == 2 and stage.index_misses == 1
    finally:
        stage.app.output.close(timeout=0.1)


def test_correlate_reads_observation_records_and_whole_events_and_dead_letters_the_rest(
    tmp_path: Path,
) -> None:
    """One packed RETRIEVALS message: observation records (what normalize writes), whole
    canonical events (the format before them) and junk; junk goes to the DLQ record by record."""
    from processors.normalize import normalize_message
    from schemas import dlq
    from schemas.records import decode_events_envelope

    doc = {
        "document_type": "event",
        "schema_version": "0.1",
        "event": {
            "type": "content_retrieved",
            "timestamp": "2026-01-15T10:30:01Z",
            "source_role": "edge",
            "content_url": "https://www.wirecutter.com/reviews/best",
            "content_telemetry_id": "770e8400-e29b-41d4-a716-446655440300",
        },
    }
    out = normalize_message(orjson.dumps(doc))
    ((_k, record),) = out.retrievals
    ((_k, envelope),) = out.events
    (event,) = decode_events_envelope(envelope)[1]
    app = create_app("t-cor", "127.0.0.1:9", tmp_path, store="memory://")
    stage = _correlator(app)
    try:

        class Msg:
            topic, partition, offset, key = "t-retrievals", 1, 42, None
            value = (
                b"["
                + b",".join([record, orjson.dumps(event), b'["r1", 5]', b'{"event_type": "cited"}'])
                + b"]"
            )

        sends: list[tuple[str, bytes | None, bytes]] = []
        items = stage.items(Msg(), sends)
        cti = event["content_telemetry_id"].encode()
        assert [key for key, _ in items] == [cti, cti]
        (_r1, ob1), (_r2, ob2) = (rec for _key, rec in items)
        assert ob1 == ob2 and ob1.id == event["event_id"] and ob1.source_role == "edge"
        letters = [dlq.decode(v) for topic, _k, v in sends if topic == "t-dlq"]
        assert len(sends) == len(letters) == 2
        assert [(x.source_topic, x.source_partition, x.source_offset) for x in letters] == [
            ("t-retrievals", 1, 42)
        ] * 2
        assert [orjson.loads(x.original) for x in letters] == [
            ["r1", 5],
            {"event_type": "cited"},
        ]  # the record alone
        assert "not an observation record" in letters[0].reason
        assert "not a canonical retrieved event" in letters[1].reason
    finally:
        app.output.close(timeout=0.1)


def test_state_databases_share_one_memory_budget(tmp_path: Path) -> None:
    """With ``app.state_memory`` every partition database of every table opens on ONE block cache
    whose usage also counts their memtables (write buffer manager): writes to two partitions
    of two tables all show up in that cache, and no memtable may outgrow a quarter of the
    memtable budget. Without it, Faust's own per-database caches (each 2 GiB)."""
    from processors.output import StateMemory

    app = create_app("t-mem", "127.0.0.1:9", tmp_path, store="rocksdb://")
    app.state_memory = memory = StateMemory(64 * 2**20)
    sessions, groups = _stage(tmp_path, "rocksdb://", app), _correlator(app)
    try:
        assert memory.usage()["cache"] == 0 and memory.usage()["memtables"] == 0
        value = b"x" * 1000
        for stage in (sessions, groups):
            for partition in (0, 1):
                state = stage.partition_state(partition)
                for i in range(2000):
                    state.set(f"{stage.name}-{partition}-{i}".encode(), value)
        usage = memory.usage()
        # 8 MB of values in 4 memtables, all charged to the one shared cache
        assert usage["memtables"] >= 4 * 2000 * 1000
        assert usage["cache"] >= usage["memtables"]
        dbs = [db for stage in (sessions, groups) for db in stage.table.data._dbs.values()]
        assert len(dbs) == 4
        for db in dbs:  # each database's own figure is the shared cache's
            assert db.property_int_value("rocksdb.block-cache-capacity") == 64 * 2**20
        memtable_limit = memory.memtables // 4
        assert all(
            db.property_int_value("rocksdb.cur-size-active-mem-table") <= memtable_limit * 1.1 for db in dbs
        )
        assert sessions.partition_state(1).get(b"sessionize-1-7") == value
    finally:
        app.output.close(timeout=0.1)


def test_state_memory_rejects_a_budget_it_cannot_split() -> None:
    from processors.output import StateMemory

    with pytest.raises(ValueError):
        StateMemory(0)
    with pytest.raises(ValueError):
        StateMemory(2**20, memtable_share=1.0)


def test_the_audit_puts_back_open_keys_the_index_lost_a_few_per_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a drain or a rebalance, a key the deadline index lost would stay open; each tick
    re-reads a few stored states (``AUDIT_KEYS``, more with many open keys), resuming where the last tick stopped, and schedules an
    open state the index lacks (counted). Tombstones, chunks and Faust's offset key are not."""
    stage = _stage(tmp_path, "rocksdb://")
    try:
        changelog = stage.table.changelog_topic_name
        timeout = stage.config.inactivity_timeout
        for partition, key in ((0, "s1"), (0, "s2"), (1, "s3"), (1, "s4")):
            state = sessionize.new_state(key, partition)
            state["la"] = 100.0
            stage.partition_state(partition).set(key.encode(), orjson.dumps(state))
        stage.partition_state(0).set(b"s0", orjson.dumps({"k": "s0", "p": 0, "rev": 1, "tomb": True}))
        stage.partition_state(1).set(
            sessionize.chunk_key("s3", 0),
            orjson.dumps({"k": "s3", "p": 1, "chunk": True, "ev": [], "ids": []}),
        )
        stage.table.data.set_persisted_offset(TP(changelog, 0), 41)  # Faust's offset key in the db
        actives = frozenset({TP(changelog, 0), TP(changelog, 1), TP("t-events", 0), TP("t-events", 1)})
        monkeypatch.setattr(stage.app.assignor, "assigned_actives", lambda: actives)
        stage._rescan()
        assert set(stage.index) == {b"s1", b"s2", b"s3", b"s4"}
        del stage.index[b"s2"], stage.index[b"s4"]  # what a bug in the index upkeep would do

        found = [stage._audit(actives, 2) for _ in range(4)]  # 8 stored keys, 2 per tick
        assert sum(found) == 2 and stage.index_misses == 2
        assert stage.index == {
            k: (100 + timeout, p) for k, p in ((b"s1", 0), (b"s2", 0), (b"s3", 1), (b"s4", 1))
        }
        assert sum(stage._audit(actives, 100) for _ in range(3)) == 0  # whole again: rounds find nothing
        assert stage._due(100 + timeout, drain=False) == [(b"s1", 0), (b"s2", 0), (b"s3", 1), (b"s4", 1)]
    finally:
        stage.app.output.close(timeout=0.1)
