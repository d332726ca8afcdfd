-- Correlated retrievals (topic CORRELATED, schemas.records.CorrelatedRetrieval, CT 4.4 / 7.2):
-- one retrieval and every observer that reported it. ReplacingMergeTree without a version: the
-- record inserted last wins (records of one retrieval share a Kafka key, hence arrive in order).
-- observations_json keeps each observation (schemas.records.Observation) as JSON.
CREATE TABLE IF NOT EXISTS correlated_retrievals
(
    retrieval_id          String,
    content_telemetry_id  Nullable(String),
    canonical_url         Nullable(String),
    content_id            Nullable(String),
    owner_domain          LowCardinality(Nullable(String)),
    status                LowCardinality(String),
    observer_roles        Array(LowCardinality(String)),
    observer_count        UInt32,
    agent_session_id      Nullable(String),
    agent_id              LowCardinality(Nullable(String)),
    first_seen            DateTime64(6, 'UTC'),
    last_seen             DateTime64(6, 'UTC'),
    observations_json     String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(first_seen)
ORDER BY retrieval_id
TTL toDateTime(first_seen) + INTERVAL {retention_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;
