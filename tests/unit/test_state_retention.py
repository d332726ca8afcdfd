"""Bounded state (``processors.app``: stream time, ``expired``, ``refuse_old``): a tombstone is
deleted once its partition's stream time passed its newest event's hour by the retention, and
from then on a key without state refuses events older than stream time - retention, so nothing
is counted twice and no contribution id of the forgotten state can come back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from faust.types import TP
from hypothesis import given, strategies as st

from processors.aggregate import ts_us
from processors.app import (
    STREAM_TIME_KEY,
    STREAM_TIME_SKEW_US,
    advance_stream_time,
    create_app,
    expired,
    stream_time_of,
)
from processors.correlate import CorrelateConfig, Correlator
from processors.normalize import decode_envelope, normalize_message
from processors.sessionize import SessionizeConfig, Sessionizer
from schemas import dlq
from tests.unit.test_state_tables import _correlator as state_tables_correlator

HOUR = 3_600_000_000
DAY = 24 * HOUR
CTI_A = "770e8400-e29b-41d4-a716-446655440301"
CTI_B = "770e8400-e29b-41d4-a716-446655440302"
T0 = "2026-01-15T10:30:01Z"


# --- the rule ----------------------------------------------------------------------------------


def test_a_tombstone_expires_when_the_stream_time_passed_its_newest_hour_by_the_retention() -> None:
    mt = ts_us(T0)
    hour_end = (mt // HOUR + 1) * HOUR
    tomb = {"k": "s", "p": 0, "rev": 2, "tomb": True, "mt": mt}
    assert not expired(tomb, hour_end + DAY - 1, DAY)
    assert expired(tomb, hour_end + DAY, DAY)
    assert not expired({**tomb, "tomb": False}, hour_end + 10 * DAY, DAY)  # a live state: never
    assert not expired({"k": "s", "p": 0, "rev": 2, "tomb": True}, 10**18, DAY)  # no mt: kept


@given(
    mt=st.integers(min_value=0, max_value=2**55),
    retention=st.integers(min_value=1, max_value=2**45),
    later=st.integers(min_value=0, max_value=2**45),
    event=st.integers(min_value=0, max_value=2**56),
)
def test_what_a_stage_accepts_after_an_expiry_is_in_a_later_hour_than_the_forgotten_state(
    mt: int, retention: int, later: int, event: int
) -> None:
    """The safety of forgetting: at any stream time from the expiry on, an event the stage still
    accepts for the key (not older than stream time - retention) lies in an hour after every
    event the forgotten state held, so it was never counted and its rows' ids are new."""
    tomb = {"tomb": True, "mt": mt}
    expiry = (mt // HOUR + 1) * HOUR + retention
    assert expired(tomb, expiry, retention) and not expired(tomb, expiry - 1, retention)
    stream_time = expiry + later
    if event >= stream_time - retention:  # accepted
        assert event // HOUR > mt // HOUR


def test_the_stream_time_only_moves_forward_and_at_most_an_hour_past_the_wall_clock() -> None:
    now = 1_800_000_000.0
    assert advance_stream_time(5, 3, now) == 5
    assert advance_stream_time(5, 9, now) == 9
    wall = int(now * 1_000_000)
    assert advance_stream_time(5, wall + 10 * DAY, now) == wall + STREAM_TIME_SKEW_US


# --- the stages --------------------------------------------------------------------------------


class Msg:
    def __init__(self, value: bytes, offset: int, partition: int = 0, topic: str = "t-retrievals") -> None:
        self.value, self.offset, self.partition, self.topic, self.key = value, offset, partition, topic, None

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


def _observation(cti: str, when: str, role: str = "edge") -> bytes:
    doc = {
        "document_type": "event",
        "schema_version": "0.1",
        "event": {
            "type": "content_retrieved",
            "timestamp": when,
            "source_role": role,
            "content_url": "https://www.wirecutter.com/reviews/best",
            "content_telemetry_id": cti,
        },
    }
    ((_k, record),) = normalize_message(orjson.dumps(doc)).retrievals
    return b"[" + record + b"]"


def _correlator(tmp_path: Path, retention: float | None) -> Correlator:
    app = create_app("t-ret", "127.0.0.1:9", tmp_path, store="rocksdb://")  # never connects
    return state_tables_correlator(app, CorrelateConfig(window=10.0, lateness=100.0, retention=retention))


def _letters(sent: list[tuple[str, Any, bytes]]) -> list[dlq.DeadLetter]:
    return [dlq.decode(v) for topic, _k, v in sent if topic == "t-dlq"]


def test_correlate_forgets_an_expired_group_refuses_its_old_observations_and_counts_new_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage = _correlator(tmp_path, retention=86_400.0)
    sent: list[tuple[str, Any, bytes]] = []
    monkeypatch.setattr(stage, "_send", lambda sends: sent.extend(sends))
    store = stage.partition_state(0)
    try:
        now = 1_800_000_000.0  # the wall clock is far ahead of the events: a replayed day
        asyncio.run(stage.process([Msg(_observation(CTI_A, T0), 1)], now))
        state = orjson.loads(store.get(CTI_A.encode()))
        assert state["mt"] == ts_us(T0) and stream_time_of(store) == ts_us(T0)
        # A was closed and its lateness passed: what the timer leaves is a tombstone with its mt
        tomb, _ = stage.step({**state, "closed": True, "rev": 0, "closed_at": now - 1000.0}, now, False)
        assert tomb["tomb"] and tomb["mt"] == ts_us(T0)
        store.set(CTI_A.encode(), orjson.dumps(tomb))
        # another group, two days later in event time, moves the partition's stream time
        later = "2026-01-17T10:30:01Z"
        asyncio.run(stage.process([Msg(_observation(CTI_B, later), 2)], now))
        assert stream_time_of(store) == ts_us(later)

        changelog = stage.table.changelog_topic_name
        actives = frozenset({TP(changelog, 0), TP(changelog, 1)})
        monkeypatch.setattr(stage.app.assignor, "assigned_actives", lambda: actives)
        stage._rescan()  # the stream time key is no state: skipped
        assert set(stage.index) == {CTI_B.encode()}
        before = stage.app.output.changelog_sent
        assert stage._audit(actives, 100) == 0
        assert store.get(CTI_A.encode()) is None and stage.expired == 1
        assert stage.app.output.changelog_sent == before + 1  # the key's changelog tombstone
        assert store.get(CTI_B.encode()) is not None and stream_time_of(store) == ts_us(later)

        # a redelivery of A's observation: older than stream time - retention, no state: refused
        asyncio.run(stage.process([Msg(_observation(CTI_A, T0), 3)], now))
        assert store.get(CTI_A.encode()) is None and stage.stats.beyond_retention == 1
        (letter,) = _letters(sent)
        assert letter.reason == "late:beyond-retention" and letter.source_offset == 3
        assert orjson.loads(letter.original)[0] == "r1"  # the observation record itself

        # a new observation of A within the retention is a new group, counted
        fresh = "2026-01-16T12:00:00Z"
        asyncio.run(stage.process([Msg(_observation(CTI_A, fresh, "origin"), 4)], now))
        again = orjson.loads(store.get(CTI_A.encode()))
        assert again["rev"] == -1 and again["mt"] == ts_us(fresh) and len(again["obs"]) == 1
        assert stage.stats.beyond_retention == 1 and stage.cpu_stats()["expired"] == 1
    finally:
        stage.app.output.close(timeout=0.1)


def test_without_a_retention_tombstones_stay_and_nothing_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage = _correlator(tmp_path, retention=None)
    monkeypatch.setattr(stage, "_send", lambda sends: None)
    store = stage.partition_state(0)
    try:
        tomb = {"k": CTI_A, "p": 0, "rev": 0, "tomb": True, "mt": ts_us(T0)}
        store.set(CTI_A.encode(), orjson.dumps(tomb))
        asyncio.run(stage.process([Msg(_observation(CTI_B, "2026-09-01T00:00:00Z"), 1)], 1_800_000_000.0))
        assert store.get(STREAM_TIME_KEY) is None  # no stream time kept
        changelog = stage.table.changelog_topic_name
        actives = frozenset({TP(changelog, 0), TP(changelog, 1)})
        monkeypatch.setattr(stage.app.assignor, "assigned_actives", lambda: actives)
        stage._audit(actives, 100)
        assert store.get(CTI_A.encode()) is not None and stage.expired == 0
    finally:
        stage.app.output.close(timeout=0.1)


def test_a_content_telemetry_id_with_nul_is_dead_lettered(tmp_path: Path) -> None:
    """No state key may equal the stream time key (it starts with NUL)."""
    stage = _correlator(tmp_path, retention=86_400.0)
    try:
        sends: list[tuple[str, Any, bytes]] = []
        record = orjson.loads(_observation(CTI_A, T0))[0]
        record[-1] = STREAM_TIME_KEY.decode()
        assert stage.items(Msg(orjson.dumps([record]), 7), sends) == []
        (letter,) = _letters(sends)
        assert "NUL in content_telemetry_id" in letter.reason
    finally:
        stage.app.output.close(timeout=0.1)


def test_sessionize_refuses_only_the_old_events_of_an_envelope(tmp_path: Path) -> None:
    app = create_app("t-ret-s", "127.0.0.1:9", tmp_path, store="rocksdb://")
    stage = Sessionizer(
        app,
        events_topic="t-events",
        funnel_topic="t-funnel",
        sessions_topic="t-sessions",
        dlq_topic="t-dlq",
        config=SessionizeConfig(retention=86_400.0),
        partitions=2,
    )
    try:
        doc = {
            "document_type": "event_batch",
            "schema_version": "0.1",
            "session_id": "550e8400-e29b-41d4-a716-446655440000",
            "agent_id": "bot",
            "events": [
                {
                    "type": "content_cited",
                    "timestamp": "2026-01-10T10:00:00Z",
                    "content_url": "https://a.com/x",
                },
                {
                    "type": "content_cited",
                    "timestamp": "2026-01-15T10:00:00Z",
                    "content_url": "https://a.com/y",
                },
            ],
        }
        ((_k, value),) = normalize_message(orjson.dumps(doc)).events
        header, events = decode_envelope(value)
        env = orjson.loads(value)
        env = env[0] if type(env) is list else env
        msg = Msg(value, 5, topic="t-events")
        sends: list[tuple[str, Any, bytes]] = []
        horizon = ts_us("2026-01-12T00:00:00Z")
        ((kept_msg, kept),) = stage.refuse_old([(msg, env)], horizon, sends)
        assert kept_msg is msg and [e["timestamp"] for e in kept["e"]] == [events[1]["timestamp"]]
        assert kept["h"] == env["h"] == header
        (letter,) = [dlq.decode(v) for _t, _k, v in sends]
        refused = orjson.loads(letter.original)
        assert letter.reason == "late:beyond-retention" and refused["h"] == header
        assert [e["timestamp"] for e in refused["e"]] == [events[0]["timestamp"]]
        assert stage.stats.beyond_retention == 1
        sends.clear()
        assert stage.refuse_old([(msg, env)], ts_us("2026-02-01T00:00:00Z"), sends) == []  # all old
        assert len(sends) == 1 and stage.stats.beyond_retention == 3
        assert stage.refuse_old([(msg, env)], ts_us("2026-01-01T00:00:00Z"), sends) == [(msg, env)]
    finally:
        app.output.close(timeout=0.1)
