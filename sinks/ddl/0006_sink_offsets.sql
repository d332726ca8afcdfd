-- The batches the ClickHouse sink wrote: (topic, partition, first-last offset, rows, token).
-- Recorded BEFORE the batch's insert (write-ahead): after a crash anywhere between this record and
-- the Kafka commit, the sink rebuilds exactly this offset range and repeats the insert with the
-- same deduplication token, which ClickHouse drops if it had already acknowledged it. The highest
-- recorded batch per partition is the truth when it is ahead of Kafka's committed offset.
CREATE TABLE IF NOT EXISTS sink_offsets
(
    topic         LowCardinality(String),
    partition     UInt32,
    first_offset  UInt64,
    last_offset   UInt64,
    rows          UInt64,
    token         String,
    inserted_at   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(inserted_at)
ORDER BY (topic, partition, first_offset)
TTL toDateTime(inserted_at) + INTERVAL {retention_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;
