-- engaged_destination (schemas.funnel): engagements reported by a destination after a click-out,
-- keyed by ctx_token instead of session_id (CT 0.1 section 7.1). They corroborate a click the agent
-- usually reports itself (CT 0.1 section 4 stage 5), so they are counted apart from `engaged`.
-- Every statement is idempotent: a migration interrupted half-way is applied again from the top.
-- The view's query is replaced in place (MODIFY QUERY: no moment without the view, so a sink
-- inserting meanwhile loses nothing); rows stored before it read 0 for the new column.
ALTER TABLE funnel_contributions ADD COLUMN IF NOT EXISTS engaged_destination Int64 AFTER engaged_other;

ALTER TABLE funnel_hourly ADD COLUMN IF NOT EXISTS engaged_destination Int64 AFTER engaged_other;

ALTER TABLE funnel_hourly_mv MODIFY QUERY
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
    engaged_destination,
    cited_without_grounded,
    displayed_without_cited,
    displayed_without_grounded,
    checkouts,
    CAST(conversion_value, 'Map(String, Int64)') AS conversion_value
FROM funnel_contributions;

CREATE OR REPLACE VIEW funnel_daily AS
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
    sum(engaged_destination) AS engaged_destination,
    sum(cited_without_grounded) AS cited_without_grounded,
    sum(displayed_without_cited) AS displayed_without_cited,
    sum(displayed_without_grounded) AS displayed_without_grounded,
    sum(checkouts) AS checkouts,
    sumMap(conversion_value) AS conversion_value
FROM funnel_hourly
GROUP BY day, owner_domain, content_key, agent_id, content_scope, source_role;
