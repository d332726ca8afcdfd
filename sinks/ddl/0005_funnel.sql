-- The stage funnel (schemas.funnel): every contribution, the hourly sums, daily and ratio views.
--
-- funnel_contributions: one row per FunnelDelta (topic FUNNEL). ReplacingMergeTree with
-- contribution_id last in the sorting key, so a contribution stored twice collapses on merge; the
-- sink also drops ids already stored before it inserts (one lookup per batch, bloom filter index),
-- because funnel_hourly_mv adds every inserted row and cannot un-add a duplicate.
-- funnel_hourly: SummingMergeTree per row key (hour x owner x content x agent x scope x role), fed
-- by the materialized view, so one INSERT into funnel_contributions writes both per block, and a
-- repeat of a token-deduplicated insert is skipped for the view too
-- (deduplicate_blocks_in_dependent_materialized_views = 1). Read it with sum() ... GROUP BY:
-- parts may not be merged yet. conversion_value is SimpleAggregateFunction(sumMap): a plain Map
-- column would keep one value instead of summing.
-- Measures are signed (Int64): a late event or observation amends an already emitted session or
-- retrieval with a correction delta, which may move a count from one measure to another (e.g.
-- retrieved_uncorroborated -1, retrieved_corroborated +1); the sums are exact, never negative.
-- {retention_days} is substituted by `ctpipe db migrate` (CTPIPE retention setting).
CREATE TABLE IF NOT EXISTS funnel_contributions
(
    contribution_id              String,
    hour                         DateTime('UTC'),
    owner_domain                 LowCardinality(String),
    content_key                  String,
    agent_id                     LowCardinality(String),
    content_scope                LowCardinality(String),
    source_role                  LowCardinality(String),
    retrieved                    Int64,
    retrieved_corroborated       Int64,
    retrieved_uncorroborated     Int64,
    retrieved_standalone         Int64,
    grounded                     Int64,
    grounded_cached              Int64,
    grounded_live                Int64,
    tokens_ingested              Int64,
    turns_influenced             Int64,
    cited                        Int64,
    cited_direct_quote           Int64,
    cited_paraphrase             Int64,
    cited_reference              Int64,
    cited_contradiction          Int64,
    cited_unclassified           Int64,
    cited_other                  Int64,
    cited_position_primary       Int64,
    cited_position_supporting    Int64,
    cited_position_mentioned     Int64,
    cited_position_unclassified  Int64,
    cited_position_other         Int64,
    displayed                    Int64,
    displayed_link               Int64,
    displayed_snippet            Int64,
    displayed_inline_quote       Int64,
    displayed_card               Int64,
    displayed_detail_view        Int64,
    displayed_embed              Int64,
    displayed_other              Int64,
    engaged                      Int64,
    engaged_link_click           Int64,
    engaged_agent_navigate       Int64,
    engaged_other                Int64,
    cited_without_grounded       Int64,
    displayed_without_cited      Int64,
    displayed_without_grounded   Int64,
    checkouts                    Int64,
    conversion_value             Map(LowCardinality(String), Int64),
    origin                       String,
    INDEX idx_contribution_id contribution_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, owner_domain, content_key, agent_id, content_scope, source_role, contribution_id)
TTL hour + INTERVAL {retention_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS funnel_hourly
(
    hour                         DateTime('UTC'),
    owner_domain                 LowCardinality(String),
    content_key                  String,
    agent_id                     LowCardinality(String),
    content_scope                LowCardinality(String),
    source_role                  LowCardinality(String),
    retrieved                    Int64,
    retrieved_corroborated       Int64,
    retrieved_uncorroborated     Int64,
    retrieved_standalone         Int64,
    grounded                     Int64,
    grounded_cached              Int64,
    grounded_live                Int64,
    tokens_ingested              Int64,
    turns_influenced             Int64,
    cited                        Int64,
    cited_direct_quote           Int64,
    cited_paraphrase             Int64,
    cited_reference              Int64,
    cited_contradiction          Int64,
    cited_unclassified           Int64,
    cited_other                  Int64,
    cited_position_primary       Int64,
    cited_position_supporting    Int64,
    cited_position_mentioned     Int64,
    cited_position_unclassified  Int64,
    cited_position_other         Int64,
    displayed                    Int64,
    displayed_link               Int64,
    displayed_snippet            Int64,
    displayed_inline_quote       Int64,
    displayed_card               Int64,
    displayed_detail_view        Int64,
    displayed_embed              Int64,
    displayed_other              Int64,
    engaged                      Int64,
    engaged_link_click           Int64,
    engaged_agent_navigate       Int64,
    engaged_other                Int64,
    cited_without_grounded       Int64,
    displayed_without_cited      Int64,
    displayed_without_grounded   Int64,
    checkouts                    Int64,
    conversion_value             SimpleAggregateFunction(sumMap, Map(String, Int64))
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, owner_domain, content_key, agent_id, content_scope, source_role)
TTL hour + INTERVAL {retention_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS funnel_hourly_mv TO funnel_hourly AS
SELECT
    hour, owner_domain, content_key, agent_id, content_scope, source_role,
    retrieved,
    retrieved_corroborated,
    retrieved_uncorroborated,
    retrieved_standalone,
    grounded,
    grounded_cached,
    grounded_live,
    tokens_ingested,
    turns_influenced,
    cited,
    cited_direct_quote,
    cited_paraphrase,
    cited_reference,
    cited_contradiction,
    cited_unclassified,
    cited_other,
    cited_position_primary,
    cited_position_supporting,
    cited_position_mentioned,
    cited_position_unclassified,
    cited_position_other,
    displayed,
    displayed_link,
    displayed_snippet,
    displayed_inline_quote,
    displayed_card,
    displayed_detail_view,
    displayed_embed,
    displayed_other,
    engaged,
    engaged_link_click,
    engaged_agent_navigate,
    engaged_other,
    cited_without_grounded,
    displayed_without_cited,
    displayed_without_grounded,
    checkouts,
    CAST(conversion_value, 'Map(String, Int64)') AS conversion_value
FROM funnel_contributions;

-- Daily roll-up with every dimension kept (group further as needed).
CREATE VIEW IF NOT EXISTS funnel_daily AS
SELECT
    toDate(hour) AS day, owner_domain, content_key, agent_id, content_scope, source_role,
    sum(retrieved) AS retrieved,
    sum(retrieved_corroborated) AS retrieved_corroborated,
    sum(retrieved_uncorroborated) AS retrieved_uncorroborated,
    sum(retrieved_standalone) AS retrieved_standalone,
    sum(grounded) AS grounded,
    sum(grounded_cached) AS grounded_cached,
    sum(grounded_live) AS grounded_live,
    sum(tokens_ingested) AS tokens_ingested,
    sum(turns_influenced) AS turns_influenced,
    sum(cited) AS cited,
    sum(cited_direct_quote) AS cited_direct_quote,
    sum(cited_paraphrase) AS cited_paraphrase,
    sum(cited_reference) AS cited_reference,
    sum(cited_contradiction) AS cited_contradiction,
    sum(cited_unclassified) AS cited_unclassified,
    sum(cited_other) AS cited_other,
    sum(cited_position_primary) AS cited_position_primary,
    sum(cited_position_supporting) AS cited_position_supporting,
    sum(cited_position_mentioned) AS cited_position_mentioned,
    sum(cited_position_unclassified) AS cited_position_unclassified,
    sum(cited_position_other) AS cited_position_other,
    sum(displayed) AS displayed,
    sum(displayed_link) AS displayed_link,
    sum(displayed_snippet) AS displayed_snippet,
    sum(displayed_inline_quote) AS displayed_inline_quote,
    sum(displayed_card) AS displayed_card,
    sum(displayed_detail_view) AS displayed_detail_view,
    sum(displayed_embed) AS displayed_embed,
    sum(displayed_other) AS displayed_other,
    sum(engaged) AS engaged,
    sum(engaged_link_click) AS engaged_link_click,
    sum(engaged_agent_navigate) AS engaged_agent_navigate,
    sum(engaged_other) AS engaged_other,
    sum(cited_without_grounded) AS cited_without_grounded,
    sum(displayed_without_cited) AS displayed_without_cited,
    sum(displayed_without_grounded) AS displayed_without_grounded,
    sum(checkouts) AS checkouts,
    sumMap(conversion_value) AS conversion_value
FROM funnel_hourly
GROUP BY day, owner_domain, content_key, agent_id, content_scope, source_role;

-- Stage ratios per owner, content and day (CT 0.1 section 4.3): retrieval-to-grounding,
-- grounding-to-citation, citation-to-display, display-to-engagement. Grounding is agent-reported
-- only (CT 4.3/4.4) and one retrieval counts once per observer role, so the retrieval-to-grounding
-- denominator is the agent's own retrievals (retrieved_by_agent). NULL where the denominator is 0.
CREATE VIEW IF NOT EXISTS funnel_stage_ratios AS
SELECT
    day, owner_domain, content_key,
    retrieved, retrieved_by_agent, grounded, cited, displayed, engaged,
    if(retrieved_by_agent = 0, NULL, grounded / retrieved_by_agent) AS retrieval_to_grounding,
    if(grounded = 0, NULL, cited / grounded) AS grounding_to_citation,
    if(cited = 0, NULL, displayed / cited) AS citation_to_display,
    if(displayed = 0, NULL, engaged / displayed) AS display_to_engagement
FROM
(
    SELECT
        toDate(h.hour) AS day, h.owner_domain AS owner_domain, h.content_key AS content_key,
        sum(h.retrieved) AS retrieved,
        sumIf(h.retrieved, h.source_role = 'agent') AS retrieved_by_agent,
        sum(h.grounded) AS grounded,
        sum(h.cited) AS cited,
        sum(h.displayed) AS displayed,
        sum(h.engaged) AS engaged
    FROM funnel_hourly AS h
    GROUP BY day, owner_domain, content_key
);
