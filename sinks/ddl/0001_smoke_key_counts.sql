-- Per-key message counts of the smoke workload (`ctpipe demo`, foundation integration test).
-- SummingMergeTree: each insert adds partial counts; read with sum(n) ... GROUP BY.
-- A non-zero deduplication window makes a retried insert with the same
-- insert_deduplication_token (topic:partition:first-last offset) a no-op.
CREATE TABLE IF NOT EXISTS smoke_key_counts
(
    run_id  String,
    topic   LowCardinality(String),
    key     String,
    n       UInt64
)
ENGINE = SummingMergeTree(n)
ORDER BY (run_id, topic, key)
SETTINGS non_replicated_deduplication_window = 10000;
