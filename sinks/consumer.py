"""The ClickHouse sink: a plain confluent-kafka consumer around ``sinks.rows`` and ``sinks.writer``.

Input: the topics FUNNEL, SESSIONS, CORRELATED and EVENTS (namespaced), read with
``isolation.level=read_committed`` and no auto-commit. Output: rows in ``funnel_contributions``
(+ ``funnel_hourly`` through its materialized view), ``sessions``, ``correlated_retrievals`` and
``events``; dead letters (``schemas.dlq``, stage ``sink``) on each topic's DLQ for records that
can never become rows.

Wire contract (exactly-once counts):

* Per (topic, partition) the sink accumulates rows and closes a batch at ``batch_rows`` rows
  or ``batch_seconds`` after it opened. One batch = one contiguous offset range ``first..last`` =
  one INSERT with token ``topic:partition:first-last`` (``sinks.writer``), written ahead in
  ``sink_offsets``. The Kafka offset ``last + 1`` is committed synchronously only after
  ClickHouse acknowledged the insert (and the batch's dead letters were delivered).
* On partition assignment the highest batch recorded in ClickHouse is the truth: when Kafka's
  committed offset is not past it (a crash between record and commit), the sink seeks to its
  first offset and rebuilds exactly that range, whatever ``batch_rows``/``batch_seconds`` say,
  and writes it again - ClickHouse drops the repeated insert, and contributions already stored
  are filtered - so a crash at any point loses nothing and counts nothing twice.
* Transient ClickHouse errors pause every assigned partition (backpressure), retry the same batch
  with exponential backoff and resume after it went through; they never reach the DLQ. Any other
  ClickHouse error stops the sink (offsets stay uncommitted).

Revoked partitions drop their unwritten buffers: the next owner re-reads them from the committed
offset (or the recorded batch).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client
from confluent_kafka import (
    OFFSET_INVALID,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from schemas import dlq
from sinks.clickhouse import TransientClickHouseError
from sinks.rows import Destination, PoisonRecord, build_message, destinations
from sinks.writer import Batch, BatchWriter, CrashHook, RecordedBatch

log = logging.getLogger("ctpipe.sink")
CLIENT_LOGGER = logging.getLogger("ctpipe.librdkafka")
STAGE = "sink"


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """How the sink reads Kafka and batches; built by the entry point from settings."""

    bootstrap: str
    group_id: str
    namespace: str = ""
    batch_rows: int = 10_000
    batch_seconds: float = 1.0
    backoff_initial: float = 0.1
    backoff_max: float = 5.0
    shutdown_timeout: float = 30.0
    consumer_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class SinkStats:
    messages: int = 0
    rows_inserted: int = 0
    batches: int = 0
    duplicates: int = 0  # contributions already stored or repeated
    dead_letters: int = 0
    transient_errors: int = 0
    rebuilt_batches: int = 0
    commit_failures: int = 0


@dataclass(slots=True)
class _Partition:
    topic: str
    partition: int
    dest: Destination
    open: Batch | None = None
    opened_at: float = 0.0
    closed: deque[Batch] = field(default_factory=deque)
    rebuild: RecordedBatch | None = None  # recorded batch to rebuild exactly
    next_offset: int | None = None  # next offset to read (None: unknown yet)

    @property
    def idle(self) -> bool:
        return self.open is None and not self.closed


def consumer_config(config: SinkConfig) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "bootstrap.servers": config.bootstrap,
        "group.id": config.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        # eager assignment: on_assign sets every partition's start offset (see module docstring)
        "partition.assignment.strategy": "range",
        "logger": CLIENT_LOGGER,
    }
    cfg.update(config.consumer_overrides)
    return cfg


def _kafka_time(msg: Message) -> datetime:
    kind, ms = msg.timestamp()
    if kind == TIMESTAMP_NOT_AVAILABLE or ms is None or ms < 0:
        return datetime.now(UTC)
    return datetime.fromtimestamp(ms / 1000, UTC)


class ClickHouseSink:
    """One sink process (or in-process instance): consume, batch, write, commit."""

    def __init__(
        self,
        config: SinkConfig,
        client: Client,
        *,
        producer: Producer | None = None,
        crash_hook: CrashHook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if config.batch_rows < 1 or config.batch_seconds <= 0:
            raise ValueError("batch_rows must be >= 1 and batch_seconds > 0")
        self.config = config
        self.writer = BatchWriter(client, crash_hook=crash_hook)
        self.crash_hook = crash_hook
        self.clock = clock
        self.destinations = destinations(config.namespace)
        self.dlq_topics = {
            name: d.topic.namespaced(config.namespace).dlq for name, d in self.destinations.items()
        }
        self.producer = producer or Producer(
            {
                "bootstrap.servers": config.bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "logger": CLIENT_LOGGER,
            }
        )
        self.stats = SinkStats()
        self._parts: dict[tuple[str, int], _Partition] = {}
        self._consumer: Consumer | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._paused = False
        self._dlq_errors: list[KafkaError] = []

    # -----------------------------------------------------------------------------------------
    # lifecycle

    @property
    def topics(self) -> list[str]:
        return sorted(self.destinations)

    def start(self) -> None:
        consumer = Consumer(consumer_config(self.config))
        consumer.subscribe(
            self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        self._consumer = consumer

    def run(
        self,
        *,
        stop: Callable[[], bool] | None = None,
        until_caught_up: bool = False,
        timeout: float | None = None,
    ) -> SinkStats:
        """Consume until ``stop()`` is true, or (``until_caught_up``) every partition is written up
        to its end; raise ``TimeoutError`` after ``timeout`` seconds. Flushes what it holds on exit."""
        if self._consumer is None:
            self.start()
        started = self.clock()
        last_check = 0.0
        try:
            while not (stop is not None and stop()):
                if timeout is not None and self.clock() - started > timeout:
                    raise TimeoutError(f"sink not caught up within {timeout:.0f} s ({self.stats})")
                self.step()
                now = self.clock()
                if until_caught_up and now - last_check >= 0.2:
                    last_check = now
                    if self.caught_up():
                        break
        finally:
            self.shutdown()
        return self.stats

    def step(self, poll_timeout: float = 0.05) -> int:
        """One poll + close due batches + write ready ones; returns the messages polled."""
        consumer = self._require()
        msgs = consumer.consume(num_messages=min(self.config.batch_rows, 5000), timeout=poll_timeout)
        for msg in msgs:
            self._handle(msg)
        self._close_due()
        if self.clock() >= self._retry_at:
            self._flush_ready()
        return len(msgs)

    def shutdown(self) -> None:
        """Write what is buffered (retrying transient errors up to the shutdown timeout), close."""
        consumer = self._consumer
        if consumer is None:
            return
        deadline = self.clock() + self.config.shutdown_timeout
        try:
            for part in self._parts.values():
                self._close(part)
            while any(p.closed for p in self._parts.values()) and self.clock() < deadline:
                if self.clock() >= self._retry_at:
                    self._flush_ready()
                else:
                    time.sleep(min(0.05, max(0.0, self._retry_at - self.clock())))
        finally:
            self._consumer = None
            consumer.close()
            self.producer.flush(10)

    def _require(self) -> Consumer:
        if self._consumer is None:
            raise RuntimeError("sink not started")
        return self._consumer

    # -----------------------------------------------------------------------------------------
    # assignment: ClickHouse-recorded batches decide where to start

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        recorded = self._retrying(lambda: self.writer.recorded_batches(tp.topic for tp in partitions))
        committed = consumer.committed(partitions, timeout=30) if partitions else []
        for tp, done in zip(partitions, committed, strict=True):
            dest = self.destinations[tp.topic]
            part = _Partition(tp.topic, tp.partition, dest)
            rec = recorded.get((tp.topic, tp.partition))
            if rec is not None and (done.offset < 0 or done.offset <= rec.last_offset):
                # crash between the batch record and its commit: rebuild exactly that batch
                tp.offset = rec.first_offset
                part.rebuild = rec
                log.info("rebuilding %s[%d] %d-%d", tp.topic, tp.partition, rec.first_offset, rec.last_offset)
            elif done.offset >= 0:
                tp.offset = done.offset
            else:
                tp.offset = OFFSET_INVALID  # auto.offset.reset = earliest
            part.next_offset = tp.offset if tp.offset >= 0 else None
            self._parts[(tp.topic, tp.partition)] = part
        consumer.assign(partitions)
        if self._paused:
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._parts.pop((tp.topic, tp.partition), None)

    def _retrying(self, call: Callable[[], Any]) -> Any:
        delay = self.config.backoff_initial
        while True:
            try:
                return call()
            except TransientClickHouseError as exc:
                self.stats.transient_errors += 1
                log.warning("ClickHouse unavailable (%s); retrying in %.1f s", exc, delay)
                time.sleep(delay)
                delay = min(self.config.backoff_max, delay * 2)

    # -----------------------------------------------------------------------------------------
    # records -> batches

    def _handle(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.fatal():
                raise KafkaException(err)
            log.debug("consumer: %s", err)
            return
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        part = self._parts.get((topic, partition))
        if part is None:  # revoked meanwhile
            return
        self.stats.messages += 1
        if part.rebuild is not None and offset > part.rebuild.last_offset:
            self._close(part)  # the rebuilt range ended (its tail is gone)
        batch = part.open
        if batch is None:
            rebuild = part.rebuild
            first = rebuild.first_offset if rebuild is not None else offset
            batch = part.open = Batch(
                topic, partition, first, offset, part.dest.table, id_column=part.dest.id_column,
                rebuild=rebuild is not None,
            )  # fmt: skip
            part.opened_at = self.clock()
        batch.last_offset = offset
        batch.messages += 1
        part.next_offset = offset + 1
        built = build_message(part.dest, msg.value(), _kafka_time(msg))
        batch.rows.extend(built.rows)
        for value, exc in built.poison:  # each bad record on its own; its good neighbours stay
            self._dead_letter(msg, exc, value)
        if part.rebuild is not None:
            if offset >= part.rebuild.last_offset:
                batch.last_offset = part.rebuild.last_offset
                self._close(part)
        elif len(batch.rows) >= self.config.batch_rows:
            self._close(part)

    def _close(self, part: _Partition) -> None:
        if part.open is not None:
            if part.rebuild is not None:
                part.open.last_offset = max(part.open.last_offset, part.rebuild.last_offset)
            part.closed.append(part.open)
            part.open = None
        part.rebuild = None

    def _close_due(self) -> None:
        now = self.clock()
        for part in self._parts.values():
            if (
                part.open is not None
                and part.rebuild is None
                and now - part.opened_at >= self.config.batch_seconds
            ):
                self._close(part)

    def _dead_letter(self, msg: Message, exc: PoisonRecord, value: bytes | None = None) -> None:
        topic = msg.topic() or ""
        target = self.dlq_topics.get(topic)
        self.stats.dead_letters += 1
        log.info("dead letter %s[%s]@%s: %s", topic, msg.partition(), msg.offset(), exc)
        if target is None:
            return
        letter = dlq.make(
            value if value is not None else (msg.value() or b""),
            reason=f"{exc.reason}: {exc.detail}" if exc.detail else exc.reason,
            stage=STAGE,
            key=msg.key(),
            topic=topic,
            partition=msg.partition(),
            offset=msg.offset(),
        )

        def delivered(err: KafkaError | None, _m: Message) -> None:
            if err is not None:
                self._dlq_errors.append(err)

        while True:
            try:
                self.producer.produce(target, value=dlq.encode(letter), key=msg.key(), on_delivery=delivered)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.producer.poll(0)

    # -----------------------------------------------------------------------------------------
    # batches -> ClickHouse -> commit

    def _flush_ready(self) -> None:
        consumer = self._require()
        for part in list(self._parts.values()):
            while part.closed:
                batch = part.closed[0]
                try:
                    self._deliver_dead_letters()
                    result = self.writer.write(batch)
                except TransientClickHouseError as exc:
                    self._back_off(consumer, exc)
                    return
                part.closed.popleft()
                self.stats.batches += 1
                self.stats.rows_inserted += result.inserted
                self.stats.duplicates += result.duplicates
                self.stats.rebuilt_batches += int(batch.rebuild)
                try:
                    consumer.commit(
                        offsets=[TopicPartition(batch.topic, batch.partition, batch.last_offset + 1)],
                        asynchronous=False,
                    )
                except KafkaException as exc:
                    # Written and recorded: the next owner (or restart) rebuilds it as a no-op.
                    self.stats.commit_failures += 1
                    log.warning("commit of %s failed: %s", batch.token, exc)
                if self.crash_hook is not None:
                    self.crash_hook("after_commit", batch.token)
        if self._paused:
            consumer.resume(consumer.assignment())
            self._paused = False
            log.info("ClickHouse is back; consumption resumed")
        self._failures = 0

    def _deliver_dead_letters(self) -> None:
        if len(self.producer) or self._dlq_errors:
            remaining = self.producer.flush(10)
            if remaining or self._dlq_errors:
                errors, self._dlq_errors = self._dlq_errors, []
                raise TransientClickHouseError(
                    f"dead letters not delivered: {remaining} pending, {errors[:1]}"
                )

    def _back_off(self, consumer: Consumer, exc: Exception) -> None:
        self.stats.transient_errors += 1
        delay = min(self.config.backoff_max, self.config.backoff_initial * 2**self._failures)
        self._failures += 1
        self._retry_at = self.clock() + delay
        if not self._paused:
            consumer.pause(consumer.assignment())
            self._paused = True
        log.warning("transient failure (%s); partitions paused, retry in %.2f s", exc, delay)

    # -----------------------------------------------------------------------------------------
    # progress

    def caught_up(self) -> bool:
        """True when partitions are assigned, nothing is buffered and every partition was read to
        its end. The end is the watermark of the latest fetch response (no broker round trip;
        under read_committed librdkafka reports the last stable offset there)."""
        consumer = self._require()
        if not self._parts or any(not p.idle for p in self._parts.values()):
            return False
        for part in self._parts.values():
            tp = TopicPartition(part.topic, part.partition)
            low, high = consumer.get_watermark_offsets(tp, cached=True)
            if high < 0:
                return False  # no fetch response yet
            position = part.next_offset
            pos = consumer.position([tp])[0].offset
            if pos >= 0:
                position = max(position or 0, pos)
            if position is None:
                position = low
            if position < high:
                return False
        return True
