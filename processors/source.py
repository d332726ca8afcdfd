"""A stateless stage's input: batches straight from librdkafka, no Faust event per message.

Faust turns every consumed message into a ``ConsumerRecord`` (aiokafka's Python fetcher), a
``Message``, an ``Event`` and a pass through its stream and acknowledgement machinery: ~35 us of
the worker's CPU per message, ~1/10 of it on RAW (one raw document per message). A stateless
stage needs none of it (no tables, no co-partitioning): ``BatchSource`` consumes its topic with
confluent-kafka's ``Consumer.consume`` (librdkafka fetches, decompresses and queues in C) in
batches, in its own consumer group (``group``; a Faust app's group speaks Faust's assignor
protocol, a second kind of member would be refused), and runs inside the Faust app's event loop.

Delivery contract (at-least-once, as the Faust agents): offsets are committed only after
``Output.flush`` acknowledged everything the handler enqueued for them: after ``commit_every``
seconds or ``commit_messages`` messages (Faust's ``broker_commit_interval`` / ``_every``), and
when the app stops. A handler that raises or never returns (a parked
batch, ``processors.app.park_unacknowledged``) leaves its offsets uncommitted: the worker exits
and a restart (or the partition's next owner after a rebalance) reprocesses them; every effect
downstream is idempotent (event ids).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import confluent_kafka
from confluent_kafka import TopicPartition

from processors.output import Output

#: librdkafka consumer settings (https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md)
CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,  # committed after the outputs are acknowledged (above)
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "session.timeout.ms": 20_000,  # as the Faust group (processors.app.create_app)
    "partition.assignment.strategy": "cooperative-sticky",
    "fetch.wait.max.ms": 100,
}


class BatchSource:
    """Consume ``topic`` in batches of at most ``batch`` messages and await ``handler`` on each
    (confluent-kafka ``Message`` objects, none with an error); commit what was handled."""

    def __init__(
        self,
        *,
        bootstrap: str,
        group: str,
        topic: str,
        output: Output,
        handler: Callable[[list[Any]], Awaitable[None]],
        batch: int = 2000,
        commit_every: float = 1.0,
        commit_messages: int = 1000,
        client_id: str = "ctpipe-worker",
        log: Any = None,
        **overrides: Any,
    ) -> None:
        self.group, self.topic, self.batch = group, topic, batch
        self.output, self.handler, self.commit_every = output, handler, commit_every
        self.commit_messages = commit_messages
        self.log = log
        self._conf = {
            **CONSUMER_DEFAULTS,
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": f"{client_id}-{topic}",
            **overrides,
        }
        self._consumer: confluent_kafka.Consumer | None = None
        self._pending: dict[int, int] = {}  # partition -> next offset to commit (handled, unflushed)
        self._stopping = False
        self._done = asyncio.Event()
        self.assigned: frozenset[int] = frozenset()
        self.consumed = 0
        self.commits = 0
        #: why ``run`` ended early (a lost output, a handler error): the worker must stop
        self.failed: BaseException | None = None
        #: set by a handler that parks its batch for ever (the worker must exit): ``stop`` then
        #: cancels it at once instead of waiting for it
        self.parked = False
        self._task: asyncio.Task[None] | None = None

    # -- rebalance callbacks (run inside ``consume``, on the event loop's thread) ----------------
    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self.assigned = self.assigned | {tp.partition for tp in partitions}

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # Handled but not yet acknowledged: the next owner reprocesses them from the last commit.
        for tp in partitions:
            self._pending.pop(tp.partition, None)
        self.assigned = self.assigned - {tp.partition for tp in partitions}

    def _on_error(self, err: Any) -> None:
        if self.log is not None:
            self.log.warning("%s: consumer error: %s", self.topic, err)

    async def run(self) -> None:
        """Consume until ``stop``; final commit and close on the way out."""
        self._task = asyncio.current_task()
        conf = {**self._conf, "error_cb": self._on_error, "on_commit": self._on_commit}
        consumer = self._consumer = confluent_kafka.Consumer(conf)
        consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        idle = 0.005
        last_commit = time.monotonic()
        handled = 0  # since the last commit
        try:
            while not self._stopping:
                msgs = consumer.consume(self.batch, 0)  # what librdkafka has queued: never blocks
                if msgs:
                    idle = 0.005
                    good = [m for m in msgs if m.error() is None]
                    for m in msgs:
                        if m.error() is not None:
                            self._on_error(m.error())
                    if good:
                        await self.handler(good)
                        self.consumed += len(good)
                        handled += len(good)
                        pending = self._pending
                        for m in good:
                            pending[m.partition()] = m.offset() + 1  # type: ignore[operator,index]
                    await asyncio.sleep(0)  # the app's other agents and timers run between batches
                else:
                    await asyncio.sleep(idle)  # idle: poll at most ~20 times a second
                    idle = min(idle * 2, 0.05)
                if self._pending and (
                    handled >= self.commit_messages or time.monotonic() - last_commit >= self.commit_every
                ):
                    await self.commit()
                    last_commit, handled = time.monotonic(), 0
            await self.commit(final=True)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # nothing more is committed; ``processors.worker.failure``
            self.failed = exc
            if self.log is not None:
                self.log.critical("%s: source stopped, its last batches NOT committed: %r", self.topic, exc)
            raise
        finally:
            self._consumer = None
            await asyncio.to_thread(consumer.close)  # leaves the group (partitions move at once)
            self._done.set()

    async def commit(self, final: bool = False) -> None:
        """Commit what was handled, once the broker acknowledged every output enqueued so far
        (``DeliveryFailed`` propagates: nothing is committed, the worker stops). Asynchronous
        (a failed commit - e.g. during a rebalance - only means those messages are handled
        again); the ``final`` one before leaving the group waits for the broker."""
        if not self._pending or self._consumer is None:
            return
        pending, self._pending = self._pending, {}
        try:
            await self.output.flush()
        except BaseException:
            for p, o in pending.items():  # never committed past a lost output
                self._pending.setdefault(p, o)
            raise
        offsets = [TopicPartition(self.topic, p, o) for p, o in pending.items() if p in self.assigned]
        consumer = self._consumer
        if not offsets or consumer is None:
            return
        self.commits += 1
        if not final:
            consumer.commit(offsets=offsets, asynchronous=True)
            return
        try:
            await asyncio.to_thread(consumer.commit, offsets=offsets, asynchronous=False)
        except confluent_kafka.KafkaException as exc:
            self._on_error(exc)

    def _on_commit(self, err: Any, partitions: list[TopicPartition]) -> None:
        # Served inside ``consume``. A failed commit (e.g. ILLEGAL_GENERATION while the group
        # rebalances) is retried with the next one: its offsets go back to pending unless a later
        # offset is there already or the partition moved (its new owner starts from the last commit).
        failed = [tp for tp in partitions if err is not None or tp.error is not None]
        if not failed:
            return
        self._on_error(f"commit failed, retried with the next commit: {err or failed[0].error}")
        pending = self._pending
        for tp in failed:
            if tp.partition in self.assigned and tp.offset >= 0 and pending.get(tp.partition, -1) < tp.offset:
                pending[tp.partition] = tp.offset

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop consuming, commit what was handled, leave the group. A batch still in its handler
        after ``timeout`` (or parked) is cancelled, uncommitted (handled again after a restart)."""
        self._stopping = True
        task = self._task
        if task is None or self._done.is_set():
            return  # never started, or over
        if not self.parked:
            try:
                await asyncio.wait_for(asyncio.shield(self._done.wait()), timeout)
                return
            except TimeoutError:
                if self.log is not None:
                    self.log.warning(
                        "%s: batch still in its handler after %.0f s: cancelled", self.topic, timeout
                    )
        task.cancel()
        await asyncio.wait_for(self._done.wait(), timeout)  # the consumer is closed on the way out
