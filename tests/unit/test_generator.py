"""Fleet simulator: determinism, valid documents, and a ground truth that holds up.

The strongest check re-derives the funnel independently from what was emitted: every CT/OA
document through ``schemas.normalize.ingest``, every log line through the real log ingester
(``producers.cdn_logs.process_line``) and then ``ingest``, and a small reference aggregator
written from the ``schemas.funnel`` docstring. It must equal the simulator's truth, which was
computed from the simulation's own state.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from producers.bots import match_user_agent
from producers.cdn_logs import Retrieval, Skip, process_line
from producers.generator import (
    DOC_FILES,
    SOURCE_OF,
    GenerateResult,
    GeneratorConfig,
    TokenBucket,
    generate,
    iter_kafka_key,
)
from producers.generator_truth import Observation, corroborated
from producers.generator_world import (
    AGENTS,
    HUMAN_UAS,
    SCRAPERS,
    SEARCH_ENGINE_UAS,
    TRAINING_CRAWLERS,
    build_world,
)
from schemas.canonical import CanonicalEvent, EventType, SourceFormat
from schemas.funnel import (
    MEASURES,
    FunnelCounts,
    FunnelKey,
    citation_position_bucket,
    citation_type_bucket,
    content_key,
    display_bucket,
    engagement_bucket,
    hour_of,
    role_of,
)
from schemas.normalize import ingest
from schemas.owners import load
from schemas.urls import canonical_url, owner_domain

SEED = 7
SESSIONS = 90


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerateResult]:
    out = tmp_path_factory.mktemp("workload")
    return out, generate(GeneratorConfig(seed=SEED, sessions=SESSIONS), out=out)


def _emitters(manifest: dict[str, Any]) -> dict[str, str]:
    return {a["agent_id"]: a["emitter"] for a in manifest["agents"]}


def _docs(out: Path, rel: str) -> list[bytes]:
    path = out / rel
    return [line for line in path.read_bytes().splitlines() if line] if path.exists() else []


def _emitter_of(doc: dict[str, Any], agents: dict[str, str]) -> str:
    if "ctx_token" in doc:
        return f"destination:{owner_domain(doc['event']['content_url'])}"
    if "agent_id" in doc:
        return agents[doc["agent_id"]]
    return f"origin:{owner_domain(doc['event']['content_url'])}"


def _ingest_documents(out: Path, manifest: dict[str, Any]) -> tuple[list[CanonicalEvent], Counter[str]]:
    agents = _emitters(manifest)
    events: list[CanonicalEvent] = []
    per_format: Counter[str] = Counter()
    for fmt, rel in DOC_FILES.items():
        for raw in _docs(out, rel):
            doc = orjson.loads(raw)
            result = ingest(raw, emitter=_emitter_of(doc, agents), source=SOURCE_OF[fmt])
            assert result.accepted, (rel, result.reason)
            assert not result.stripped, (rel, result.stripped)  # turns respect their privacy level
            expected = 1 if "event" in doc else len(doc["events"])
            assert len(result.events) == expected
            per_format[fmt] += expected
            events.extend(result.events)
    return events, per_format


def _log_files(out: Path) -> Iterable[tuple[str, str, Path]]:
    for fmt in ("cloudflare", "fastly"):
        for path in sorted((out / "cdn" / fmt).glob("*.jsonl")):
            yield fmt, path.name.removesuffix(".jsonl"), path
    for path in sorted((out / "origin" / "nginx").glob("*.log")):
        yield "nginx", path.name.removesuffix(".log"), path


def _ingest_logs(out: Path) -> tuple[list[CanonicalEvent], Counter[str]]:
    events: list[CanonicalEvent] = []
    skips: Counter[str] = Counter()
    for fmt, host, path in _log_files(out):
        emitter = f"{fmt}:{host}"
        for line in path.read_bytes().splitlines():
            got = process_line(fmt, line, emitter=emitter, site_host=host)
            if isinstance(got, Skip):
                skips[got.reason] += 1
                continue
            assert isinstance(got, Retrieval)
            result = ingest(orjson.dumps(got.document), emitter=emitter)
            assert result.accepted, result.reason
            events.extend(result.events)
    return events, skips


def _owner_prefixes(out: Path) -> dict[str, str]:
    """content_id prefix -> owner domain, read straight from the emitted ``owners.json``."""
    doc = orjson.loads((out / "owners.json").read_bytes())
    return {p: o["domain"] for o in doc["owners"] for p in o["content_id_prefixes"]}


def reference_funnel(
    events: list[CanonicalEvent], owner_prefixes: dict[str, str] | None = None
) -> dict[FunnelKey, FunnelCounts]:
    """The schemas.funnel rules applied to canonical events (independent of the simulator).

    Owner: the URL's (``ingest``), else the longest registered content_id prefix's (CT 0.1 7.3).
    """
    rows: dict[FunnelKey, FunnelCounts] = defaultdict(FunnelCounts)
    prefixes = owner_prefixes or {}

    def owner(e: CanonicalEvent) -> str:
        if e.owner_domain or not e.content_id:
            return e.owner_domain or ""
        cid = e.content_id
        hits = [p for p in prefixes if cid.startswith(p)]
        return prefixes[max(hits, key=len)] if hits else ""

    def key(e: CanonicalEvent) -> FunnelKey:
        return FunnelKey(
            hour_of(e.timestamp),
            owner(e),
            content_key(e.content_id, e.canonical_url, e.product_id),
            e.agent_id or "",
            e.content_scope or "",
            role_of(e.source_role),
        )

    by_id: dict[str, list[CanonicalEvent]] = defaultdict(list)
    for e in events:
        if e.event_type is EventType.RETRIEVED:
            rows[key(e)].add("retrieved")
            if e.content_telemetry_id:
                by_id[e.content_telemetry_id].append(e)
            else:
                rows[key(e)].add("retrieved_standalone")
    for group in by_id.values():
        # sub-groups by canonical URL; merge sub-groups sharing a content_id until nothing changes
        subs: list[list[CanonicalEvent]] = []
        for url in dict.fromkeys(e.canonical_url for e in group):
            subs.append([e for e in group if e.canonical_url == url])
        merged = True
        while merged:
            merged = False
            for i in range(len(subs)):
                for j in range(i + 1, len(subs)):
                    ids_i = {e.content_id for e in subs[i]} - {None}
                    if ids_i & {e.content_id for e in subs[j]}:
                        subs[i] += subs.pop(j)
                        merged = True
                        break
                if merged:
                    break
        for sub in subs:
            for e in sub:
                rows[key(e)].add("retrieved_corroborated" if len(sub) >= 2 else "retrieved_uncorroborated")

    sessions: dict[str, list[CanonicalEvent]] = defaultdict(list)
    for e in events:
        if e.session_id or e.ctx_token:
            sessions[e.session_id or e.ctx_token or ""].append(e)

    def same(a: CanonicalEvent, b: CanonicalEvent) -> bool:
        ka = content_key(a.content_id, a.canonical_url, a.product_id)
        kb = content_key(b.content_id, b.canonical_url, b.product_id)
        return bool(
            (ka and ka == kb)
            or (a.canonical_url and a.canonical_url == b.canonical_url)
            or (a.content_id and a.content_id == b.content_id)
        )

    for evs in sessions.values():
        starts = [e.timestamp for e in evs if e.event_type is EventType.TURN_STARTED]
        grounded = [e for e in evs if e.event_type is EventType.GROUNDED]
        cited = [e for e in evs if e.event_type is EventType.CITED]
        # OA 0.4 has no grounding stage: "without grounded" departures are CT-only (schemas.funnel)
        grounding_stage = evs[0].source_format is not SourceFormat.OPENATTRIBUTION
        for e in evs:
            row = rows[key(e)]
            t = e.event_type
            if t is EventType.GROUNDED:
                row.add("grounded")
                row.add("grounded_cached" if e.cached else "grounded_live")
                row.add("tokens_ingested", e.tokens_ingested or 0)
                n = sum(1 for s in starts if s >= e.timestamp) if e.scope == "session" else 1
                row.add("turns_influenced", n)
            elif t is EventType.CITED:
                row.add("cited")
                row.add(citation_type_bucket(e.citation_type))
                row.add(citation_position_bucket(e.position))
                if grounding_stage and not any(same(e, g) for g in grounded):
                    row.add("cited_without_grounded")
            elif t is EventType.DISPLAYED:
                row.add("displayed")
                row.add(display_bucket(e.display_type))
                if not any(same(e, c) for c in cited):
                    row.add("displayed_without_cited")
                if grounding_stage and not any(same(e, g) for g in grounded):
                    row.add("displayed_without_grounded")
            elif t is EventType.ENGAGED and e.ctx_token and not e.session_id:
                row.add("engaged_destination")  # a landing page's report (CT 0.1 7.1)
            elif t is EventType.ENGAGED:
                row.add("engaged")
                row.add(engagement_bucket(e.engagement_type))
            elif t is EventType.CHECKOUT_COMPLETED:
                row.add("checkouts")
                data = orjson.loads(e.data_json)
                row.add_value(data["currency"], data["order_value_amount"])
    return {k: v for k, v in sorted(rows.items()) if not v.is_zero()}


# --- tests -----------------------------------------------------------------------------------------
def test_same_seed_gives_a_byte_identical_directory(tmp_path: Path) -> None:
    cfg = GeneratorConfig(seed=11, sessions=25)
    generate(cfg, out=tmp_path / "a")
    generate(GeneratorConfig(seed=11, sessions=25), out=tmp_path / "b")
    generate(GeneratorConfig(seed=12, sessions=25), out=tmp_path / "c")
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) > 10
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert (tmp_path / "a" / "ct" / "sessions.jsonl").read_bytes() != (
        tmp_path / "c" / "ct" / "sessions.jsonl"
    ).read_bytes()


def test_every_document_is_accepted_by_ingest_with_its_event_count(
    workload: tuple[Path, GenerateResult],
) -> None:
    out, result = workload
    events, per_format = _ingest_documents(out, result.manifest)
    agent_formats = {f: n for f, n in per_format.items() if f not in ("origin_event", "destination_event")}
    assert per_format["destination_event"] == result.stats.cases["destination_engagement"] > 0
    assert agent_formats == dict(result.stats.events)
    documents = {f: len(_docs(out, rel)) for f, rel in DOC_FILES.items()}
    assert documents == dict(result.stats.documents)
    files = {f["path"]: f for f in result.manifest["files"]}
    for fmt, rel in DOC_FILES.items():
        assert files[rel]["documents"] == documents[fmt]
    # Emitter ids and derived ids never collide (downstream dedupes by event_id).
    ids = [e.event_id for e in events]
    assert len(ids) == len(set(ids))
    assert any(e.emitter_event_id for e in events) and any(e.emitter_event_id is None for e in events)


def test_truth_equals_an_independent_recomputation_from_the_emitted_workload(
    workload: tuple[Path, GenerateResult],
) -> None:
    out, result = workload
    doc_events, _ = _ingest_documents(out, result.manifest)
    log_events, skips = _ingest_logs(out)
    reference = reference_funnel(doc_events + log_events, _owner_prefixes(out))
    truth = result.truth.nonzero()
    assert set(reference) == set(truth)
    for k, counts in truth.items():
        assert reference[k].as_dict() == counts.as_dict(), k
    # the log ingester skipped every kind of non-retrieval the simulator wrote
    assert {"static_asset", "not_ai_bot", "no_content"} <= set(skips)
    # log-derived events are exactly the observations the simulator counted
    roles = Counter(e.source_role for e in log_events)
    origin_events = len(_docs(out, "origin/ct-events.jsonl"))
    assert roles["edge"] == result.stats.counted_observations["edge"]
    assert roles["origin"] + origin_events == result.stats.counted_observations["origin"]


def test_expected_funnel_json_matches_the_truth_and_its_invariants(
    workload: tuple[Path, GenerateResult],
) -> None:
    out, result = workload
    doc = orjson.loads((out / "expected_funnel.json").read_bytes())
    assert doc["seed"] == SEED
    rows = result.truth.nonzero()
    assert len(doc["rows"]) == len(rows)
    keys = [
        (r["hour"], r["owner_domain"], r["content_key"], r["agent_id"], r["content_scope"], r["source_role"])
        for r in doc["rows"]
    ]
    assert keys == sorted(keys)
    grand: Counter[str] = Counter()
    values: Counter[str] = Counter()
    for r in doc["rows"]:
        measures = {m: r.get(m, 0) for m in MEASURES}
        assert any(measures.values()) or r["conversion_value"]
        assert measures["retrieved"] == (
            measures["retrieved_corroborated"]
            + measures["retrieved_uncorroborated"]
            + measures["retrieved_standalone"]
        )
        assert measures["grounded"] == measures["grounded_cached"] + measures["grounded_live"]
        assert measures["cited"] == sum(
            v
            for m, v in measures.items()
            if m.startswith("cited_") and not m.startswith(("cited_position_", "cited_without"))
        )
        assert measures["cited"] == sum(v for m, v in measures.items() if m.startswith("cited_position_"))
        assert measures["engaged"] == (
            measures["engaged_link_click"] + measures["engaged_agent_navigate"] + measures["engaged_other"]
        )
        if r["source_role"] != "agent":
            assert r["agent_id"] == "" and r["content_scope"] == ""
            assert sum(measures.values()) == 2 * measures["retrieved"]  # only retrieval measures
        grand.update(measures)
        values.update(r["conversion_value"])
    # totals per (owner, content key) sum to the same grand total as the rows
    total: Counter[str] = Counter()
    for t in doc["totals"]:
        total.update({m: t[m] for m in MEASURES})
    assert +total == +grand
    assert doc["grand_total"] == {
        **{m: grand[m] for m in MEASURES},
        "conversion_value": dict(sorted(values.items())),
    }
    stats = result.stats
    # retrieved = every agent retrieval + every observer record the ingester counts
    assert grand["retrieved"] == sum(stats.counted_observations.values())
    # departures: the rule-based truth equals what the simulator meant to do
    for dep in ("cited_without_grounded", "displayed_without_cited", "displayed_without_grounded"):
        assert grand[dep] == stats.cases[f"rule_{dep}"] == stats.cases[f"intent_{dep}"] > 0
    # OA sessions have no grounding stage, so only CT citations can depart from it
    assert grand["cited_without_grounded"] >= stats.cases["hallucinated_citation"]
    assert grand["checkouts"] == stats.cases["checkout_completed"] > 0
    assert values and all(v > 0 for v in values.values())


def test_the_mix_contains_every_delivery_format_and_special_case(
    workload: tuple[Path, GenerateResult],
) -> None:
    out, result = workload
    stats = result.stats
    assert set(stats.sessions) == {"ct_session", "ct_events", "ct_batches", "oa_session"}
    for case in (
        "header_lost",
        "redirect_short",
        "redirect_mobile",
        "scraper",
        "training_crawl",
        "cached_grounding",
        "embed_display",
        "hallucinated_citation",
        "multi_turn_session",
        "deep_research_session",
        "static_asset",
        "non_ai",
        "checkout_completed",
        "destination_engagement",
    ):
        assert stats.cases[case] > 0, case
    assert set(stats.log_lines) == {"cloudflare", "fastly", "nginx"}
    ct = [
        orjson.loads(x)
        for rel in ("ct/sessions.jsonl", "ct/events.jsonl", "ct/batches.jsonl")
        for x in _docs(out, rel)
    ]
    events = [e for d in ct for e in (d["events"] if "events" in d else [d["event"]])]
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_type[e["type"]].append(e)
    grounded = by_type["content_grounded"]
    assert any(g["data"]["cached"] and "content_url" not in g for g in grounded)  # cached, URL not kept
    assert {g["data"]["scope"] for g in grounded} == {"session", "turn"}
    cited = by_type["content_cited"]
    assert any("citation_type" not in c.get("data", {}) for c in cited)
    assert any("position" not in c.get("data", {}) for c in cited)
    displays = Counter(d.get("data", {}).get("display_type") for d in by_type["content_displayed"])
    assert displays["embed"] and displays["carousel"] and displays[None]
    engaged = Counter(e.get("data", {}).get("engagement_type") for e in by_type["content_engaged"])
    assert engaged["link_click"] and engaged["agent_navigate"] and engaged["copy"] and engaged[None]
    urls = [e["content_url"] for e in events if "content_url" in e]
    assert any("utm_" in u for u in urls) and any("#" in u for u in urls)
    assert any(u != u.lower() for u in urls) and any("/s/" in u for u in urls)
    assert any("content_id" not in e for e in by_type["content_cited"])
    retrieved = by_type["content_retrieved"]
    assert any("content_telemetry_id" in r for r in retrieved) and any(
        "content_telemetry_id" not in r for r in retrieved
    )
    assert {d["document_type"] for d in ct} == {"session", "event", "event_batch"}
    assert all("ended_at" in d for d in ct if d["document_type"] == "session")
    batches = Counter(d["session_id"] for d in ct if d["document_type"] == "event_batch")
    assert max(batches.values()) >= 2  # several batches per session
    per_session_turns = Counter(
        d["session_id"]
        for d in ct
        for e in (d.get("events") or [d.get("event")])
        if e["type"] == "turn_started"
    )
    assert max(per_session_turns.values()) >= 3
    deep = [
        n
        for n in Counter(
            d["session_id"]
            for d in ct
            for e in (d.get("events") or [d.get("event")])
            if e["type"] == "content_retrieved"
        ).values()
    ]
    assert max(deep) >= 50
    levels = {e["turn"]["privacy_level"] for e in by_type["turn_started"]}
    assert levels == {"full", "summary", "intent", "minimal"}
    oa = [orjson.loads(x) for x in _docs(out, "oa/sessions.jsonl")]
    assert all(d["schema_version"] == "0.4" for d in oa)
    oa_events = [e for d in oa for e in d["events"]]
    assert not any(e["type"] == "content_grounded" or "content_telemetry_id" in e for e in oa_events)
    completed = [e for e in oa_events if e["type"] == "checkout_completed"]
    assert completed and all({"order_value_amount", "currency"} <= set(e["data"]) for e in completed)
    origin = [orjson.loads(x)["event"] for x in _docs(out, "origin/ct-events.jsonl")]
    assert all(e["source_role"] == "origin" for e in origin)
    assert any("content_telemetry_id" in e for e in origin) and any(
        "content_telemetry_id" not in e for e in origin
    )


def test_observations_of_one_retrieval_fall_within_the_correlation_window(
    workload: tuple[Path, GenerateResult],
) -> None:
    out, result = workload
    doc_events, _ = _ingest_documents(out, result.manifest)
    log_events, _ = _ingest_logs(out)
    by_id: dict[str, list[CanonicalEvent]] = defaultdict(list)
    for e in doc_events + log_events:
        if e.event_type is EventType.RETRIEVED and e.content_telemetry_id:
            by_id[e.content_telemetry_id].append(e)
    assert any(len(g) >= 3 for g in by_id.values())
    for group in by_id.values():
        times = [e.timestamp for e in group]
        assert max(times) - min(times) < timedelta(minutes=10)
    # a session document arrives (ended_at) within the window of its first retrieval
    for raw in _docs(out, "ct/sessions.jsonl"):
        doc = orjson.loads(raw)
        firsts = [e["timestamp"] for e in doc["events"] if e["type"] == "content_retrieved"]
        if firsts:
            first = ingest(raw, emitter="x").events[0].timestamp
            ended = ingest(raw, emitter="x").session
            assert ended is not None and ended.ended_at is not None
            assert ended.ended_at - first < timedelta(minutes=10)


def test_log_lines_are_in_time_order_and_unique(workload: tuple[Path, GenerateResult]) -> None:
    out, _ = workload
    from producers.cdn_logs import parse_line

    for fmt, host, path in _log_files(out):
        lines = path.read_bytes().splitlines()
        assert len(lines) == len(set(lines))
        times = []
        for line in lines:
            obs = parse_line(fmt, line, site_host=host)
            assert not isinstance(obs, Skip)
            assert obs.host == host
            times.append(obs.timestamp)
        assert times == sorted(times)


def test_world_urls_owners_and_user_agents() -> None:
    world = build_world(random.Random(3))
    owners = set()
    for pub in world.publishers:
        for art in pub.articles:
            assert canonical_url(art.url) == art.url
            assert owner_domain(art.url) == pub.domain
        owners.add(pub.domain)
    assert "herald-tribune.co.uk" in owners and "datasci.github.io" in owners
    assert {(p.cdn, p.origin) for p in world.publishers} >= {
        ("cloudflare", "nginx"),
        ("fastly", "instrumented"),
        (None, "nginx"),
        (None, "instrumented"),
        ("fastly", None),
    }
    for agent in (*AGENTS, world.shopping_agent):
        assert match_user_agent(agent.user_agent) is not None, agent.user_agent
    for bot in (*SCRAPERS, *TRAINING_CRAWLERS):
        spec = match_user_agent(bot.user_agent)
        assert spec is not None and spec.name == bot.name
        if bot.training:
            assert spec.category == "training"
    for ua in (*HUMAN_UAS, *SEARCH_ENGINE_UAS):
        assert match_user_agent(ua) is None


def test_corroboration_groups_by_canonical_url_and_merges_on_content_id() -> None:
    k = FunnelKey(hour_of(__import__("datetime").datetime(2026, 1, 15, 8)), "", "", "", "", "edge")
    a = "https://www.x.com/a"
    # agent (short URL + content_id), edge (canonical, no id): two single groups
    assert corroborated([Observation(k, "https://www.x.com/s/1", "x:1"), Observation(k, a, None)]) == [
        False,
        False,
    ]
    # + an instrumented origin reporting canonical URL + content_id: one group of three
    assert corroborated(
        [Observation(k, "https://www.x.com/s/1", "x:1"), Observation(k, a, None), Observation(k, a, "x:1")]
    ) == [True, True, True]
    assert corroborated([Observation(k, a, None)]) == [False]
    assert corroborated([Observation(k, a, None), Observation(k, a, None)]) == [True, True]


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        GeneratorConfig(header_loss=1.5)
    with pytest.raises(ValueError):
        GeneratorConfig(mix={"ct_session": 0.0})
    with pytest.raises(ValueError):
        GeneratorConfig(mix={"nope": 1.0})
    with pytest.raises(ValueError):
        GeneratorConfig(sessions=-1)


def test_mix_and_rates_are_honoured(tmp_path: Path) -> None:
    result = generate(
        GeneratorConfig(seed=5, sessions=30, mix={"ct_session": 1.0}, header_loss=0.0, redirect_rate=0.0),
        out=tmp_path,
    )
    assert set(result.stats.sessions) == {"ct_session"}
    assert not (tmp_path / "oa").exists()
    assert result.stats.cases["header_lost"] == 0
    assert not any(k.startswith("redirect_") for k in result.stats.cases)


def test_token_bucket_paces_without_real_sleeping() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    bucket = TokenBucket(100.0, burst=1.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(201):
        bucket.take()
    assert now[0] == pytest.approx(2.0, rel=1e-6)  # 200 tokens beyond the burst at 100/s
    unlimited = TokenBucket(0.0, clock=lambda: 0.0, sleep=sleep)
    before = len(slept)
    unlimited.take()
    assert len(slept) == before


def test_kafka_keys() -> None:
    assert iter_kafka_key({"session_id": "s"}) == b"s"
    assert iter_kafka_key({"event": {"content_telemetry_id": "c"}}) == b"c"
    assert iter_kafka_key({"event": {}}) is None


def test_owners_json_registers_every_publisher_and_the_truth_attributes_content_id_only_events(
    workload: tuple[Path, GenerateResult],
) -> None:
    out, result = workload
    registry = load(out / "owners.json")
    world = build_world(random.Random(SEED))
    assert registry.domains() == sorted(p.domain for p in world.publishers)
    for pub in world.publishers:
        for art in pub.articles:  # every content_id resolves to the publisher serving its URL
            assert registry.resolve(art.content_id) == pub.domain == owner_domain(art.url)
    assert result.manifest["owner_registry"] == "owners.json"
    assert {p["owner_domain"]: p["content_id_prefixes"] for p in result.manifest["publishers"]} == {
        o["domain"]: o["content_id_prefixes"] for o in registry.to_document()["owners"]
    }
    # content_id-only events (cached groundings whose URL was not preserved) exist and are
    # attributed: every owner "" row left is OA commerce (product ids) or keyless
    doc_events, _ = _ingest_documents(out, result.manifest)
    url_less = [e for e in doc_events if e.content_id and not e.owner_domain]
    assert url_less and all(registry.resolve(e.content_id or "") for e in url_less)
    content_ids = {a.content_id for p in world.publishers for a in p.articles}
    unowned = [k for k in result.truth.nonzero() if k.owner_domain == ""]
    assert all(k.content_key not in content_ids for k in unowned)
    owned_by_prefix = {k for k in result.truth.nonzero() if k.content_key in {e.content_id for e in url_less}}
    assert owned_by_prefix and all(k.owner_domain for k in owned_by_prefix)
