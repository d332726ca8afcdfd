"""A batch a stage cannot process is retried, then parked - never acknowledged unprocessed.

(Faust's ``take_events`` acknowledges a batch when the agent leaves it, also by an exception;
``processors.app`` must therefore never leave a batch it did not process.)
"""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, strategies as st

from processors import app as stage_app
from processors.app import Health, StateStage, send_reliably


class FakeApp:
    def __init__(self, assigned: set[Any]) -> None:
        self.log = logging.getLogger("fake-app")
        self.conf = SimpleNamespace(stream_wait_empty=True)
        self.rebalancing = False
        self.in_recovery = False
        self.assignor = SimpleNamespace(assigned_actives=lambda: assigned)
        self.sent: list[tuple[Any, ...]] = []
        self.failures_left = 0

        def send(*args: Any) -> None:
            if self.failures_left:
                self.failures_left -= 1
                raise RuntimeError("broker went away")
            self.sent.append(args)

        self.output = SimpleNamespace(send=send, poll=lambda: None)  # processors.output.Output


def _msg(partition: int, value: bytes = b"{}") -> Any:
    return SimpleNamespace(tp=("t", partition), partition=partition, value=value)


class FakeStage:
    """Just what ``StateStage._process_reliably`` uses."""

    name = "fake"
    cpu_process = 0.0

    def __init__(self, app: FakeApp, failures: int) -> None:
        self.app = app
        self.lock = asyncio.Lock()
        self.health = Health()
        self.calls: list[list[Any]] = []
        self.failures = failures

    async def process(self, msgs: list[Any], now: float) -> None:
        self.calls.append(list(msgs))
        if len(self.calls) <= self.failures:
            raise OSError("store closed")


async def test_a_failing_batch_is_retried_without_the_partitions_lost_meanwhile() -> None:
    app = FakeApp(assigned={("t", 0)})  # partition 1 went to another worker meanwhile
    stage = FakeStage(app, failures=2)
    msgs = [_msg(0), _msg(1), _msg(0)]
    await StateStage._process_reliably(stage, msgs)  # type: ignore[arg-type]
    assert len(stage.calls) == 3 and stage.calls[0] == msgs
    assert all(m.partition == 0 for m in stage.calls[-1]) and len(stage.calls[-1]) == 2
    assert stage.health.failed is None


async def test_a_retried_part_waits_while_the_assignment_is_unknown_instead_of_dropping_it() -> None:
    """The assignor raises mid-rebalance: the retry must not read that as "no partitions" (which
    would drop the part and let take_events acknowledge it unprocessed)."""
    app = FakeApp(assigned={("t", 0), ("t", 1)})
    unknown = {"left": 3}

    def assigned_actives() -> set[Any]:
        if unknown["left"]:
            unknown["left"] -= 1
            raise RuntimeError("assignor: not assigned")
        return {("t", 0), ("t", 1)}

    app.assignor = SimpleNamespace(assigned_actives=assigned_actives)
    stage = FakeStage(app, failures=1)
    msgs = [_msg(0), _msg(1)]
    await StateStage._process_reliably(stage, msgs)  # type: ignore[arg-type]
    assert unknown["left"] == 0  # it asked until the assignor knew
    assert stage.calls == [msgs, msgs]  # retried whole, nothing dropped
    assert stage.health.failed is None


async def test_a_batch_that_keeps_failing_is_parked_and_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stage_app, "RETRY_FOR", 0.0)
    app = FakeApp(assigned={("t", 0)})
    stage = FakeStage(app, failures=10**9)
    task = asyncio.ensure_future(StateStage._process_reliably(stage, [_msg(0)]))  # type: ignore[arg-type]
    await asyncio.sleep(0.3)
    assert not task.done()  # parked: it never returns, so take_events never acknowledges the batch
    assert isinstance(stage.health.failed, OSError) and app.conf.stream_wait_empty is False
    task.cancel()


async def test_sends_are_retried_in_order_then_parked(monkeypatch: pytest.MonkeyPatch) -> None:
    app = FakeApp(assigned=set())
    app.failures_left = 2
    health = Health()
    sends = [("a", None, b"1", 0), ("b", b"k", b"2", None)]
    await send_reliably(app, "normalize", sends, health)  # type: ignore[arg-type]
    assert [s[:3] for s in app.sent] == [("a", None, b"1"), ("b", b"k", b"2")] and health.failed is None

    monkeypatch.setattr(stage_app, "RETRY_FOR", 0.0)
    app.failures_left = 10**9
    task = asyncio.ensure_future(send_reliably(app, "normalize", sends, health))  # type: ignore[arg-type]
    await asyncio.sleep(0.3)
    assert not task.done() and isinstance(health.failed, RuntimeError)
    task.cancel()


async def test_a_batch_is_processed_in_parts_of_bounded_input_and_a_failing_part_is_retried_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stage_app, "PART_BYTES", 10)
    app = FakeApp(assigned={("t", 0)})
    stage = FakeStage(app, failures=1)  # the first part fails once
    msgs = [_msg(0, b"x" * 6), _msg(0, b"y" * 6), _msg(0, b"z" * 30), _msg(0, b"w")]
    await StateStage._process_reliably(stage, msgs)  # type: ignore[arg-type]
    assert stage.calls == [msgs[:1], msgs[:1], msgs[1:2], msgs[2:3], msgs[3:]]
    assert stage.health.failed is None


@given(st.lists(st.integers(0, 50), max_size=40), st.integers(1, 60))
def test_parts_keep_every_message_in_order_within_the_limit(sizes: list[int], limit: int) -> None:
    msgs = [_msg(0, b"v" * n) for n in sizes]
    parts = stage_app.parts(msgs, limit)
    assert [m for part in parts for m in part] == msgs
    assert all(part for part in parts)
    for part in parts:
        assert len(part) == 1 or sum(len(m.value) for m in part) <= limit
