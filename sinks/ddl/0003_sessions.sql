-- Sessions (topic SESSIONS, schemas.records.SessionRecord): the highest revision of a session
-- wins (ReplacingMergeTree(revision)); read with FINAL or argMax(..., revision).
-- session_time (partition and TTL) = started_at, else ended_at, else the Kafka record time.
-- A late amendment that moves started_at into another month lands in another partition, where
-- FINAL does not collapse it: exact readers use LIMIT 1 BY session_id ordered by revision DESC.
CREATE TABLE IF NOT EXISTS sessions
(
    session_id                  String,
    revision                    UInt32,
    session_time                DateTime64(3, 'UTC'),
    agent_id                    LowCardinality(String),
    content_scope               LowCardinality(String),
    started_at                  Nullable(DateTime64(3, 'UTC')),
    ended_at                    Nullable(DateTime64(3, 'UTC')),
    closed_by                   LowCardinality(String),
    event_count                 Int64,
    late_events                 Int64,
    duplicate_events            Int64,
    turns                       Int64,
    grounded                    Int64,
    cited                       Int64,
    displayed                   Int64,
    engaged                     Int64,
    cited_without_grounded      Int64,
    displayed_without_cited     Int64,
    displayed_without_grounded  Int64,
    outcome_type                LowCardinality(Nullable(String)),
    outcome_value_minor         Nullable(Int64),
    outcome_currency            LowCardinality(Nullable(String)),
    user_segments               Array(String),
    source_formats              Array(LowCardinality(String)),
    emitters                    Array(LowCardinality(String))
)
ENGINE = ReplacingMergeTree(revision)
PARTITION BY toYYYYMM(session_time)
ORDER BY session_id
TTL toDateTime(session_time) + INTERVAL {retention_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;
