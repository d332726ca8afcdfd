"""The worker's producer: every record a stage emits and every state-table changelog write.

Faust sends through aiokafka, in Python: each message builds a ``FutureMessage``, passes Faust's
producer buffer and aiokafka's accumulator and sender, ~35 us of the worker's CPU per message.
A changelog write per state change made that the largest cost of the worker
(bench/PIPELINE_BENCH.md). ``Output`` hands the same messages to librdkafka (confluent-kafka,
already the producers' client): ``produce`` enqueues in C, librdkafka's own threads batch and
send them, one Python callback per delivery report.

Delivery contract (at-least-once, ``processors.app``):

* Faust commits source offsets only after ``app.producer.flush()``; ``processors.app.PipelineApp``
  chains ``Output.flush`` into it, so every record and changelog write produced while processing the
  committed messages is acknowledged by the broker (acks=all) first. A failed delivery raises
  ``DeliveryFailed`` there: the commit does not happen, the worker stops, a restart reprocesses.
* A close timer awaits ``flush`` before it stores a closed state, as it awaited the futures.
* Idempotent producer: librdkafka's retries neither reorder nor duplicate within a partition.
* Changelog offsets acknowledged are recorded into the table's store
  (``set_persisted_offset``, what Faust's ``_on_changelog_sent`` did per message) once per
  partition and flush, so a restart replays the changelog only past them.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import confluent_kafka
import faust
import rocksdict
from faust.stores import rocksdb as faust_rocksdb
from faust.types import TP
from mypy_extensions import mypyc_attr


@mypyc_attr(native_class=False)  # an exception class stays a Python class (schemas/_native.py)
class DeliveryFailed(RuntimeError):
    """The broker did not acknowledge a record (librdkafka gave up after its retries)."""


# librdkafka settings (https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md)
DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,  # acks=all, ordered and unduplicated retries per partition
    "linger.ms": 5,
    "batch.size": 1_000_000,  # packed records are up to 512 KiB (schemas.records.PACK_MAX_BYTES)
    "batch.num.messages": 100_000,
    "queue.buffering.max.messages": 1_000_000,
    "message.timeout.ms": 120_000,  # then a delivery fails (DeliveryFailed) instead of retrying
    # compressed in librdkafka's threads (C): the broker, the sink and the worker's own fetches
    # of EVENTS/RETRIEVALS move ~4x fewer bytes (peak wall rate +20 %, worker CPU unchanged)
    "compression.type": "lz4",
}


class Output:
    """One librdkafka producer shared by a worker's stages and its state tables."""

    def __init__(self, bootstrap: str, client_id: str = "ctpipe-worker", **overrides: Any) -> None:
        conf = {
            **DEFAULTS,
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "on_delivery": self._delivered,
            **overrides,
        }
        self._producer = confluent_kafka.Producer(conf)
        self._errors: list[Any] = []
        # changelog topic -> table; (topic, partition) -> highest acknowledged offset
        self._tables: dict[str, Any] = {}
        self._acked: dict[tuple[str, int], int] = {}
        self.sent = 0  # messages enqueued (records + changelog writes)
        self.changelog_sent = 0
        self._closed: int | None = None  # after close: how many records it dropped

    # -- producing (synchronous: enqueue only) -------------------------------------------------
    def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None) -> None:
        """Enqueue one message; waits (serving delivery reports) while librdkafka's queue is full."""
        producer = self._producer
        while True:
            try:
                if partition is None:
                    producer.produce(topic, value, key)
                else:
                    producer.produce(topic, value, key, partition)
                break
            except BufferError:
                producer.poll(0.05)
        self.sent += 1

    def changelog(self, topic: str, key: bytes, value: bytes | None, partition: int) -> None:
        """Enqueue a state table change (``value`` None: a tombstone)."""
        self.changelog_sent += 1
        self.send(topic, key, value, partition)

    @property
    def failed(self) -> DeliveryFailed | None:
        """Set once the broker refused a record (sticky; see ``flush``)."""
        if not self._errors:
            return None
        return DeliveryFailed(f"{len(self._errors)} record(s) not acknowledged, first: {self._errors[0]}")

    def poll(self) -> None:
        """Serve delivery reports that are ready (cheap; keeps the report queue short)."""
        self._producer.poll(0)

    def __len__(self) -> int:
        """Messages enqueued or in flight, not yet reported."""
        return len(self._producer)

    # -- delivery ------------------------------------------------------------------------------
    def _delivered(self, err: Any, msg: Any) -> None:
        # Runs in whichever thread serves the reports (poll: the event loop; flush: an executor
        # thread): only appends and dict stores here, applied on the event loop by ``flush``.
        if err is not None:
            self._errors.append(err)
            return
        topic = msg.topic()
        if topic in self._tables:
            key = (topic, msg.partition())
            offset = msg.offset()
            if offset > self._acked.get(key, -1):
                self._acked[key] = offset

    async def flush(self) -> None:
        """Wait until everything enqueued so far is acknowledged; raise ``DeliveryFailed`` if the
        broker ever refused a record. Sticky: after a lost record no flush succeeds again, so no
        later commit can pass over it (flushes run concurrently - commit, close timer - and any
        of them may have served the failed report); the worker stops and a restart reprocesses
        from the last commit."""
        if self._closed is not None:  # Faust's last commits come after the app's on_stop
            if self._closed:
                raise DeliveryFailed(f"{self._closed} record(s) dropped unacknowledged at close")
            return
        producer = self._producer
        if len(producer):
            loop = asyncio.get_running_loop()
            while await loop.run_in_executor(None, producer.flush, 1.0):
                pass
        else:
            producer.poll(0)
        self._record_persisted()
        failed = self.failed
        if failed is not None:
            raise failed

    def close(self, timeout: float = 10.0) -> int:
        """Flush (up to ``timeout`` s) and stop librdkafka's threads; messages left unacknowledged.
        Called when the app stops; a later ``flush`` (Faust's final commits) raises if anything
        was dropped, so those offsets stay uncommitted."""
        if self._closed is not None:
            return self._closed
        producer = self._producer
        left = int(producer.flush(timeout))
        if left:  # broker gone: drop them (their sources were never committed), or close blocks
            producer.purge()
            producer.flush(0)
        try:
            self._record_persisted()
        except Exception:  # stores already closed: a restart replays a little more changelog
            self._acked = {}
        producer.close()
        self._closed = left
        return left

    # -- changelogs ----------------------------------------------------------------------------
    def track(self, table: Any) -> None:
        """Take ``table``'s changelog writes and record their acknowledged offsets into its store.
        ``table``: a ``ChangelogTable``, or anything with its ``changelog_topic_name`` and ``data``
        (the store); typed loosely because the native build checks declared classes at run time."""
        table.output = self
        self._tables[table.changelog_topic_name] = table

    def _record_persisted(self) -> None:
        if not self._acked:
            return
        acked, self._acked = self._acked, {}
        for (topic, partition), offset in acked.items():
            store = self._tables[topic].data
            dbs = getattr(store, "_dbs", None)
            if dbs is not None and partition not in dbs:
                continue  # partition revoked meanwhile (its store closed): do not reopen it
            store.set_persisted_offset(TP(topic, partition), offset)


class PartitionState:
    """One partition of a stage's table, straight to its rocksdb database and changelog: what
    Faust's table API does per access (``table[key] = value``: changelog + store), without its
    per-call lookups of the current event, serializers and key-index cache."""

    __slots__ = ("_changelog", "_db", "_output", "partition")

    def __init__(self, db: Any, output: Output, changelog: str, partition: int) -> None:
        self._db, self._output, self._changelog, self.partition = db, output, changelog, partition

    def get(self, key: bytes) -> bytes | None:
        return self._db.get(key)  # type: ignore[no-any-return,unused-ignore]

    def set(self, key: bytes, value: bytes) -> None:
        self._db.put(key, value)
        self._output.changelog(self._changelog, key, value, self.partition)

    def delete(self, key: bytes) -> None:
        self._db.delete(key)
        self._output.changelog(self._changelog, key, None, self.partition)


class ChangelogTable(faust.Table):
    """A Faust table whose changelog writes go through the worker's ``Output``.

    Same keys, values, partitions and tombstones as Faust's own ``on_key_set``/``on_key_del``
    (raw bytes; the partition is the current stream event's, ``processors.app.partition_scope``),
    so Faust's recovery reads the changelog as always. No windowing or key expiry (not used)."""

    output: Output

    def _new_store_by_url(self, url: Any) -> Any:
        if str(url).partition(":")[0] == "rocksdb":  # a yarl URL prints as "rocksdb:"
            return ChangelogStore(
                url,
                self.app,
                self,
                table_name=self.name,
                key_type=self.key_type,
                key_serializer=self.key_serializer,
                value_serializer=self.value_serializer,
                value_type=self.value_type,
                loop=self.loop,
                options=self.options,
            )
        return super()._new_store_by_url(url)

    def on_key_set(self, key: Any, value: Any) -> None:
        self.output.changelog(self.changelog_topic_name, key, value, cast(int, self.partition_for_key(key)))

    def on_key_del(self, key: Any) -> None:
        self.output.changelog(self.changelog_topic_name, key, None, cast(int, self.partition_for_key(key)))


class StateMemory:
    """One memory budget for every state database of a worker process.

    Faust opens each table partition's RocksDB with its own 2 GiB block cache and up to
    3 x 64 MiB memtables: 8 databases (2 tables x 4 partitions) may take ~17 GiB, and under
    traffic into many open sessions the worker's RSS grew without bound in practice
    (bench/PIPELINE_BENCH.md, session 6: 910 -> 4,188 MB in 30 min). Here all databases share
    one LRU block cache of ``total`` bytes, their memtables are charged to that cache through one
    write buffer manager (flushed once they pass ``memtable_share`` of it), and index/filter
    blocks live in the cache too - the bounded-memory recipe of Kafka Streams
    (``BoundedMemoryRocksDBConfig``; RocksDB wiki "Write Buffer Manager", "Block Cache").
    What RocksDB holds beyond the budget: per-file metadata and iterators in use.
    """

    def __init__(self, total: int, memtable_share: float = 0.5) -> None:
        if total <= 0 or not 0 < memtable_share < 1:
            raise ValueError(
                f"state memory: total > 0 and 0 < memtable_share < 1, got {total}, {memtable_share}"
            )
        self.total = total
        self.memtables = int(total * memtable_share)
        self.cache = rocksdict.Cache(total)
        self.write_buffers = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
            self.memtables, False, self.cache
        )

    def options(self, base: faust_rocksdb.RocksDBOptions) -> rocksdict.Options:
        """Faust's options for one database (``base``: files, bloom filter, index type) on the
        shared cache and write buffer manager."""
        opts = rocksdict.Options(raw_mode=True)
        opts.create_if_missing(True)
        if base.max_open_files is not None:
            opts.set_max_open_files(base.max_open_files)
        # no single memtable larger than a quarter of the shared budget
        opts.set_write_buffer_size(min(base.write_buffer_size, max(self.memtables // 4, 1 << 20)))
        opts.set_max_write_buffer_number(base.max_write_buffer_number)
        opts.set_target_file_size_base(base.target_file_size_base)
        opts.set_write_buffer_manager(self.write_buffers)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(base.bloom_filter_size, True)
        table.set_block_cache(self.cache)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        opts.set_block_based_table_factory(table)
        return opts

    def usage(self) -> dict[str, int]:
        """Bytes in the shared cache (blocks and memtables charged to it) and in memtables."""
        return {
            "budget": self.total,
            "cache": int(self.cache.get_usage()),
            "pinned": int(self.cache.get_pinned_usage()),
            "memtables": int(self.write_buffers.get_usage()),
        }


class ChangelogStore(faust_rocksdb.Store):
    """Faust's rocksdb store without rocksdb's own write-ahead log (what Kafka Streams does).

    The changelog topic is the durable copy of a table; the local database is a cache of it
    that records which changelog offset it holds (``set_persisted_offset``, in the same
    database). Without the WAL a crash loses the writes since the last memtable flush - the
    data and the offset marker alike, as a prefix of the write sequence - so the store
    reopens at an older offset and Faust's recovery replays the changelog from there. A put
    costs 1.3 instead of 3.4 us (no write(2) per put)."""

    def memory(self) -> dict[str, int]:
        """RocksDB's memory for this table's open partition databases (bytes): memtables,
        table readers (index/filter blocks held outside the cache) and, unless the databases share
        the app's ``StateMemory`` cache (reported there), their block caches."""
        shared = getattr(self.app, "state_memory", None) is not None  # cache: StateMemory.usage
        out = (
            {"memtables": 0, "table_readers": 0}
            if shared
            else {"memtables": 0, "block_cache": 0, "table_readers": 0}
        )
        for db in list(self._dbs.values()):
            try:
                out["memtables"] += db.property_int_value("rocksdb.size-all-mem-tables") or 0
                if not shared:
                    out["block_cache"] += db.property_int_value("rocksdb.block-cache-usage") or 0
                out["table_readers"] += db.property_int_value("rocksdb.estimate-table-readers-mem") or 0
            except Exception:  # closed by a rebalance meanwhile
                continue
        return out

    def _open_for_partition(self, partition: int) -> Any:
        memory: StateMemory | None = getattr(self.app, "state_memory", None)
        if memory is not None and self.rocksdb_options.use_rocksdict:
            # Faust's open (``RocksDBOptions.open``) with the worker's shared memory budget
            db = rocksdict.Rdict(
                str(self.partition_path(partition)),
                options=memory.options(self.rocksdb_options),
                access_type=rocksdict.AccessType.read_write(),
            )
            db.set_read_options(rocksdict.ReadOptions())
        else:
            db = super()._open_for_partition(partition)
        if isinstance(db, rocksdict.Rdict):
            options = rocksdict.WriteOptions()
            options.disable_wal = True  # type: ignore[method-assign,assignment]
            db.set_write_options(options)
        return db
