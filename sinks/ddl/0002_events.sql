-- Canonical events (topic EVENTS, schemas.canonical.CanonicalEvent), one row per event id.
-- ReplacingMergeTree ordered by event_id: an event delivered twice (producer retry, replay, a
-- rebuilt batch past the deduplication window) collapses on merge; read with FINAL or
-- LIMIT 1 BY event_id for exact counts. The event id fixes the timestamp, so duplicates share a
-- partition. {retention_days} is substituted by `ctpipe db migrate`.
CREATE TABLE IF NOT EXISTS events
(
    event_id              String,
    emitter_event_id      Nullable(String),
    seq                   Int64,
    session_id            Nullable(String),
    ctx_token             Nullable(String),
    parent_session_id     Nullable(String),
    agent_id              LowCardinality(Nullable(String)),
    content_scope         LowCardinality(Nullable(String)),
    event_type            LowCardinality(String),
    timestamp             DateTime64(6, 'UTC'),
    source_role           LowCardinality(Nullable(String)),
    content_telemetry_id  Nullable(String),
    content_url           Nullable(String),
    canonical_url         Nullable(String),
    owner_domain          LowCardinality(Nullable(String)),
    content_id            Nullable(String),
    product_id            Nullable(String),
    license_ref           Nullable(String),
    turn_id               Nullable(String),
    privacy_level         LowCardinality(Nullable(String)),
    scope                 LowCardinality(Nullable(String)),
    cached                Nullable(Bool),
    tokens_ingested       Nullable(Int64),
    citation_type         LowCardinality(Nullable(String)),
    position              LowCardinality(Nullable(String)),
    display_type          LowCardinality(Nullable(String)),
    engagement_type       LowCardinality(Nullable(String)),
    bot_category          LowCardinality(Nullable(String)),
    bot_name              LowCardinality(Nullable(String)),
    media_type            LowCardinality(Nullable(String)),
    provenance            LowCardinality(Nullable(String)),
    turn_json             Nullable(String),
    data_json             String,
    extra_json            String,
    source_format         LowCardinality(String),
    source_version        LowCardinality(String),
    source_kind           LowCardinality(String),
    emitter               LowCardinality(String),
    notes                 Array(String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY event_id
TTL toDateTime(timestamp) + INTERVAL {retention_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;
