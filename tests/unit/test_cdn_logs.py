"""producers.cdn_logs: parsing, classification, skip reasons, documents, render/parse round trips."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ctpipe.ingest_logs import Checkpoints, run
from ctpipe.settings import Settings
from producers.cdn_logs import (
    FORMATS,
    BotMatch,
    EdgeObservation,
    Retrieval,
    Skip,
    batch_documents,
    cache_status,
    classify,
    detect_format,
    event_id,
    parse_line,
    process_line,
    render_line,
    to_event_document,
)
from schemas.normalize import ingest

CTID = "770e8400-e29b-41d4-a716-446655440300"
GPTBOT = (
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)"
)
CLAUDE_USER = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Claude-User/1.0; +Claude-User@anthropic.com)"
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"

# A Logpush http_requests line as Cloudflare writes it (field names from the dataset reference).
CF_LINE = orjson.dumps(
    {
        "CacheCacheStatus": "miss",
        "ClientASN": 14618,
        "ClientCountry": "us",
        "ClientIP": "203.0.113.9",
        "ClientRequestHost": "www.wirecutter.com",
        "ClientRequestMethod": "GET",
        "ClientRequestReferer": "",
        "ClientRequestScheme": "https",
        "ClientRequestURI": "/reviews/best-wireless-headphones?ref=x",
        "ClientRequestUserAgent": CLAUDE_USER,
        "EdgeResponseBytes": 48230,
        "EdgeResponseStatus": 200,
        "EdgeStartTimestamp": "2026-01-15T10:30:01Z",
        "VerifiedBotCategory": "AI Assistant",
        "RequestHeaders": {"content-telemetry-id": CTID.upper()},
        "BotScore": 1,
        "RayID": "8f1c2a3b4c5d6e7f",
    }
)
NGINX_LINE = (
    '198.51.100.7 - - [15/Jan/2026:11:30:01 +0100] "GET /news/a%20b?x=1 HTTP/1.1" 200 5120 '
    f'"-" "{GPTBOT}" "{CTID}"'
)
FASTLY_LINE = orjson.dumps(
    {
        "timestamp": "2026-01-15T10:30:01+0000",
        "client_ip": "192.0.2.1",
        "host": "www.example.com",
        "url": "/article/1",
        "method": "GET",
        "status": "200",
        "response_bytes": "777",
        "user_agent": "Mozilla/5.0 (compatible; meta-externalfetcher/1.1)",
        "referer": "(null)",
        "cache_status": "HIT-STALE",
        "asn": 32934,
        "country_code": "IE",
        "bot_category": "AI-FETCHER",
        "content_telemetry_id": "(null)",
        "some_custom_field": {"nested": True},
    }
)
T0 = datetime(2026, 1, 15, 10, 30, 1, tzinfo=UTC)


def obs(**kw: object) -> EdgeObservation:
    base: dict[str, object] = {
        "timestamp": T0,
        "host": "www.example.com",
        "path": "/news/a",
        "method": "GET",
        "status": 200,
        "response_bytes": 1000,
        "user_agent": GPTBOT,
        "client_ip": "203.0.113.9",
    }
    base.update(kw)
    return EdgeObservation(**base)  # type: ignore[arg-type]


def accepted(doc: dict[str, object]) -> None:
    result = ingest(orjson.dumps(doc), emitter="cdn:test")
    assert result.accepted, result.reason
    assert len(result.events) == 1


# --- parsing the three formats ---------------------------------------------------------------
def test_cloudflare_logpush_line() -> None:
    o = parse_line("cloudflare", CF_LINE)
    assert isinstance(o, EdgeObservation)
    assert o.timestamp == T0
    assert (o.host, o.path, o.method, o.status, o.response_bytes) == (
        "www.wirecutter.com", "/reviews/best-wireless-headphones?ref=x", "GET", 200, 48230,
    )  # fmt: skip
    assert (o.asn, o.country, o.cache_status, o.verified_bot_category) == (
        14618,
        "US",
        "miss",
        "AI Assistant",
    )
    assert o.content_telemetry_id == CTID.upper() and o.referer is None


@pytest.mark.parametrize(
    "ts",
    [1768473001, 1768473001000, 1768473001000000, 1768473001000000000, "1768473001", "2026-01-15T10:30:01Z",
     "2026-01-15T11:30:01+01:00"],
)  # fmt: skip
def test_every_logpush_timestamp_format(ts: object) -> None:
    rec = orjson.loads(CF_LINE)
    rec["EdgeStartTimestamp"] = ts
    o = parse_line("cloudflare", orjson.dumps(rec))
    assert isinstance(o, EdgeObservation) and o.timestamp == T0


def test_fastly_line_is_read_leniently() -> None:
    o = parse_line("fastly", FASTLY_LINE)
    assert isinstance(o, EdgeObservation)
    assert o.timestamp == T0 and o.status == 200 and o.response_bytes == 777
    assert o.referer is None and o.content_telemetry_id is None  # "(null)" = unset header
    r = process_line("fastly", FASTLY_LINE, emitter="cdn:test")
    assert isinstance(r, Retrieval)
    data = r.document["event"]["data"]
    assert data["bot_category"] == "inference" and data["verified"] is True
    assert data["bot_name"] == "meta-externalfetcher" and data["cache_status"] == "hit"
    assert r.document["event"]["source_role"] == "edge"
    accepted(r.document)


def test_nginx_combined_line_with_trailing_ctid() -> None:
    o = parse_line("nginx", NGINX_LINE, site_host="www.example.com")
    assert isinstance(o, EdgeObservation)
    assert o.timestamp == T0  # 11:30:01 +0100
    assert (o.host, o.path, o.status, o.response_bytes, o.user_agent) == (
        "www.example.com", "/news/a%20b?x=1", 200, 5120, GPTBOT,
    )  # fmt: skip
    assert o.content_telemetry_id == CTID and o.referer is None and o.client_ip == "198.51.100.7"


def test_nginx_without_ctid_field_and_apache_escapes() -> None:
    line = r'::1 - bob [15/Jan/2026:10:30:01 +0000] "GET /q?s=\"x\" HTTP/1.0" 304 - "https://r.example/" "A \"quoted\" GPTBot"'
    o = parse_line("nginx", line, site_host="www.example.com", scheme="http")
    assert isinstance(o, EdgeObservation)
    assert o.path == '/q?s="x"' and o.user_agent == 'A "quoted" GPTBot'
    assert o.response_bytes == 0 and o.content_telemetry_id is None and o.scheme == "http"
    r = process_line("nginx", line, emitter="e", site_host="www.example.com", scheme="http")
    assert isinstance(r, Retrieval)
    assert r.document["event"]["content_url"] == "http://www.example.com/q?s=%22x%22"
    assert r.document["event"]["source_role"] == "origin"
    accepted(r.document)


def test_detect_format() -> None:
    assert detect_format(CF_LINE) == "cloudflare"
    assert detect_format(FASTLY_LINE) == "fastly"
    assert detect_format(NGINX_LINE) == "nginx"
    assert detect_format(b'{"foo": 1}') is None
    assert detect_format("hello world") is None


# --- the document ----------------------------------------------------------------------------
def test_cloudflare_document_has_the_ct_6_2_enrichment_and_no_ip() -> None:
    r = process_line("cloudflare", CF_LINE, emitter="cdn:cloudflare:www.wirecutter.com")
    assert isinstance(r, Retrieval)
    doc = r.document
    assert doc["document_type"] == "event" and doc["schema_version"] == "0.1" and "session_id" not in doc
    ev = doc["event"]
    assert ev["type"] == "content_retrieved" and ev["source_role"] == "edge"
    assert ev["timestamp"] == "2026-01-15T10:30:01Z"
    assert ev["content_telemetry_id"] == CTID  # lower-cased UUID from the request header
    assert ev["content_url"] == "https://www.wirecutter.com/reviews/best-wireless-headphones?ref=x"
    assert ev["data"] == {
        "user_agent": CLAUDE_USER,
        "bot_category": "inference",
        "bot_name": "Claude-User",
        "verified": True,
        "cache_status": "miss",
        "response_status": 200,
        "response_bytes": 48230,
        "asn": 14618,
        "country": "US",
    }
    raw = orjson.dumps(doc)
    assert b"203.0.113.9" not in raw and b"ip_hash" not in raw
    assert r.key == CTID and not r.ctid_dropped
    assert str(uuid.UUID(ev["id"])) == ev["id"] and uuid.UUID(ev["id"]).version == 5
    accepted(doc)


def test_batch_documents_are_valid_ct_event_batches_of_the_same_events() -> None:
    rs = []
    for i in range(7):
        line = CF_LINE.replace(b"best-wireless-headphones", f"page-{i}".encode())
        r = process_line("cloudflare", line, emitter="cdn:cloudflare:www.wirecutter.com")
        assert isinstance(r, Retrieval)
        rs.append(r)
    assert batch_documents(rs, 1) == [(r.key, r.document) for r in rs]
    batches = batch_documents(rs, 3)
    assert [len(d["events"]) for _, d in batches] == [3, 3, 1]
    assert [e for _, d in batches for e in d["events"]] == [r.document["event"] for r in rs]
    for key, doc in batches:
        assert key is None and doc["document_type"] == "event_batch" and doc["schema_version"] == "0.1"
        result = ingest(orjson.dumps(doc), emitter="cdn:cloudflare:www.wirecutter.com")
        assert result.accepted, result.errors
        assert [e.event_id for e in result.events] == [e["id"] for e in doc["events"]]
        assert all(e.session_id is None and e.content_telemetry_id == CTID for e in result.events)
    with pytest.raises(ValueError):
        batch_documents(rs, 0)


def test_event_ids_are_stable_per_line_and_distinct_otherwise() -> None:
    a = process_line("cloudflare", CF_LINE, emitter="e1")
    b = process_line("cloudflare", CF_LINE + b"\r\n", emitter="e1")
    c = process_line("cloudflare", CF_LINE, emitter="e2")
    d = process_line("cloudflare", CF_LINE, emitter="e1", role="origin")
    assert isinstance(a, Retrieval) and isinstance(b, Retrieval)
    assert isinstance(c, Retrieval) and isinstance(d, Retrieval)
    ids = [x.document["event"]["id"] for x in (a, b, c, d)]
    assert ids[0] == ids[1]
    assert len({ids[0], ids[2], ids[3]}) == 3
    assert d.document["event"]["source_role"] == "origin"
    assert event_id("e1", "edge", CF_LINE) == ids[0]
    assert event_id("e1", "edge", CF_LINE.decode()) == ids[0]


def test_invalid_ctid_is_dropped_and_flagged() -> None:
    o = obs(content_telemetry_id="not-a-uuid")
    r = process_line("cloudflare", render_line("cloudflare", o), emitter="e")
    assert isinstance(r, Retrieval)
    assert "content_telemetry_id" not in r.document["event"]
    assert r.ctid_dropped and r.key == "https://www.example.com/news/a"
    accepted(r.document)


@pytest.mark.parametrize(
    ("native", "ct"),
    [("hit", "hit"), ("stale", "hit"), ("revalidated", "hit"), ("updating", "hit"), ("miss", "miss"),
     ("expired", "miss"), ("bypass", "bypass"), ("ignored", "bypass"), ("dynamic", "dynamic"), ("none", "dynamic"),
     ("HIT", "hit"), ("HIT-STALE", "hit"), ("MISS-CLUSTER", "miss"), ("PASS", "bypass"), ("PASS-WAIT", "bypass"),
     ("ERROR", "dynamic"), ("weird", None), (None, None)],
)  # fmt: skip
def test_cache_status_mapping(native: str | None, ct: str | None) -> None:
    assert cache_status(native) == ct


def test_media_paths_are_content_with_a_media_type() -> None:
    r = process_line("cloudflare", render_line("cloudflare", obs(path="/video/clip.mp4")), emitter="e")
    assert isinstance(r, Retrieval) and r.document["event"]["data"]["media_type"] == "video"
    accepted(r.document)


# --- classification --------------------------------------------------------------------------
def test_classification_rules() -> None:
    # the CDN's AI category wins over the UA table and makes it verified
    assert classify(obs(user_agent=GPTBOT, verified_bot_category="AI Assistant")) == BotMatch(
        "GPTBot", "inference", True
    )
    # a verified non-AI category: the UA table decides, identity still verified
    assert classify(obs(user_agent=GPTBOT, verified_bot_category="Search Engine Crawler")) == BotMatch(
        "GPTBot", "training", True
    )
    assert classify(obs(user_agent=GOOGLEBOT, verified_bot_category="Search Engine Crawler")) is None
    # CDN says AI but the UA is unknown: no bot_name
    assert classify(obs(user_agent="SomeNewAgent/1.0", verified_bot_category="AI Crawler")) == BotMatch(
        None, "training", True
    )
    assert classify(obs(user_agent=CLAUDE_USER)) == BotMatch("Claude-User", "inference", False)
    assert classify(obs(user_agent=CHROME)) is None


# --- skips -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("o", "reason"),
    [
        (obs(path="/static/app.3f2a.js"), "static_asset"),
        (obs(path="/img/hero.WEBP?v=2"), "static_asset"),
        (obs(path="/fonts/a.woff2"), "static_asset"),
        (obs(user_agent=CHROME), "not_ai_bot"),
        (obs(user_agent=GOOGLEBOT), "not_ai_bot"),
        (obs(status=404), "no_content"),
        (obs(status=301), "no_content"),
        (obs(status=503), "no_content"),
        (obs(method="HEAD"), "no_content"),
        (obs(user_agent=CHROME, path="/a.css"), "static_asset"),
    ],
)
@pytest.mark.parametrize("fmt", FORMATS)
def test_skip_reasons(fmt: str, o: EdgeObservation, reason: str) -> None:
    r = process_line(fmt, render_line(fmt, o), emitter="e", site_host="www.example.com")
    assert isinstance(r, Skip) and r.reason == reason


@pytest.mark.parametrize("fmt", FORMATS)
def test_content_statuses_are_kept(fmt: str) -> None:
    for status in (200, 203, 206, 304):
        r = process_line(fmt, render_line(fmt, obs(status=status)), emitter="e", site_host="www.example.com")
        assert isinstance(r, Retrieval)


@pytest.mark.parametrize(
    ("fmt", "line", "reason"),
    [
        ("cloudflare", b"", "blank"),
        ("cloudflare", b"   ", "blank"),
        ("cloudflare", b"not json at all", "wrong_format"),
        ("cloudflare", b'{"ClientRequestHost": "x.com"', "malformed"),
        ("cloudflare", b"[1, 2]", "wrong_format"),
        ("cloudflare", b'{"foo": 1}', "wrong_format"),
        ("cloudflare", b'{"ClientRequestHost": "x.com", "ClientRequestURI": "/a"}', "malformed"),
        ("cloudflare", b'{"ClientRequestHost": "bad host!", "ClientRequestURI": "/a"}', "malformed"),
        ("fastly", b'{"host": "x.com", "url": "/a", "timestamp": "yesterday", "status": 200}', "malformed"),
        (
            "nginx",
            b'1.2.3.4 - - [99/Foo/2026:10:30:01 +0000] "GET / HTTP/1.1" 200 1 "-" "GPTBot"',
            "malformed",
        ),
        ("nginx", b'1.2.3.4 - - [15/Jan/2026:10:30:01 +0000] "\\x16\\x03\\x01" 400 1 "-" "-"', "malformed"),
        ("nginx", CF_LINE, "wrong_format"),
        ("auto", b"garbage", "wrong_format"),
        ("auto", b'{"foo": 1}', "wrong_format"),
        ("auto", b"", "blank"),
        ("auto", NGINX_LINE.encode(), "no_site_host"),
        ("nginx", NGINX_LINE.encode(), "no_site_host"),
        ("syslog", NGINX_LINE.encode(), "wrong_format"),
    ],
)
def test_bad_lines_are_skipped_with_a_reason(fmt: str, line: bytes, reason: str) -> None:
    r = process_line(fmt, line, emitter="e")
    assert isinstance(r, Skip) and r.reason == reason


def test_auto_detects_per_line_and_picks_the_role() -> None:
    a = process_line("auto", CF_LINE, emitter="e", site_host="www.example.com")
    b = process_line("auto", NGINX_LINE, emitter="e", site_host="www.example.com")
    c = process_line("auto", FASTLY_LINE, emitter="e", site_host="www.example.com")
    assert isinstance(a, Retrieval) and isinstance(b, Retrieval) and isinstance(c, Retrieval)
    roles = [x.document["event"]["source_role"] for x in (a, b, c)]
    assert roles == ["edge", "origin", "edge"]


def test_country_codes() -> None:
    for native, expected in (
        ("us", "US"),
        ("GB", "GB"),
        ("xx", None),
        ("t1", None),
        ("usa", None),
        ("", None),
    ):
        rec = orjson.loads(CF_LINE)
        rec["ClientCountry"] = native
        o = parse_line("cloudflare", orjson.dumps(rec))
        assert isinstance(o, EdgeObservation) and o.country == expected


def test_render_line_rejects_unknown_formats() -> None:
    with pytest.raises(ValueError, match="unknown log format"):
        render_line("auto", obs())


# --- properties ------------------------------------------------------------------------------
AI_UAS = [
    GPTBOT,
    CLAUDE_USER,
    "DuckAssistBot/1.2",
    "Mozilla/5.0 (compatible; PerplexityBot/1.0)",
    "CCBot/2.0",
]
NATIVE_CACHE = [
    "hit",
    "miss",
    "expired",
    "stale",
    "bypass",
    "dynamic",
    "revalidated",
    "HIT",
    "MISS",
    "PASS",
    "ERROR",
]
SAFE_TEXT = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40).filter(
    lambda s: s not in ("-", "(null)") and s.strip() == s and s
)
HOSTS = st.from_regex(
    r"[a-z0-9]([a-z0-9-]{0,12}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?){0,3}", fullmatch=True
)
PATHS = st.builds(lambda s: "/" + s, st.text(st.characters(exclude_categories=["Cs"]), max_size=40))
OBSERVATIONS = st.builds(
    EdgeObservation,
    timestamp=st.datetimes(datetime(2000, 1, 1), datetime(2099, 1, 1), timezones=st.just(UTC)),
    host=HOSTS,
    path=PATHS,
    method=st.sampled_from(["GET", "HEAD", "POST"]),
    status=st.sampled_from([200, 200, 200, 204, 206, 304, 301, 404, 500]) | st.integers(100, 599),
    response_bytes=st.integers(0, 2**40),
    user_agent=st.sampled_from([*AI_UAS, CHROME, GOOGLEBOT, ""]) | SAFE_TEXT,
    client_ip=st.sampled_from(["203.0.113.9", "2001:db8::1", "10.0.0.1", ""]),
    scheme=st.sampled_from(["https", "http"]),
    content_telemetry_id=st.none() | st.uuids().map(str) | SAFE_TEXT,
    cache_status=st.none() | st.sampled_from(NATIVE_CACHE),
    verified_bot_category=st.none() | st.sampled_from(["AI Crawler", "AI Assistant", "AI Search", "Search Engine Crawler"]),
    asn=st.none() | st.integers(1, 2**32 - 1),
    country=st.none() | st.sampled_from(["US", "GB", "DE", "JP"]),
    referer=st.none() | SAFE_TEXT,
)  # fmt: skip


def _representable(fmt: str, o: EdgeObservation) -> EdgeObservation:
    """What a format can carry of ``o`` (nginx: no host, scheme, sub-second time, CDN fields)."""
    if fmt != "nginx":
        return o
    return dataclasses.replace(
        o,
        host="site.example",
        scheme="https",
        timestamp=o.timestamp.replace(microsecond=0),
        cache_status=None,
        verified_bot_category=None,
        asn=None,
        country=None,
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(o=OBSERVATIONS, fmt=st.sampled_from(FORMATS))
def test_render_then_parse_round_trips(o: EdgeObservation, fmt: str) -> None:
    line = render_line(fmt, o)
    assert "\n" not in line
    parsed = parse_line(fmt, line, site_host="site.example", scheme="https")
    assert parsed == _representable(fmt, o)
    assert detect_format(line) == fmt
    assert parse_line("auto", line.encode(), site_host="site.example") == parsed


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(o=OBSERVATIONS, fmt=st.sampled_from(FORMATS), ua=st.sampled_from(AI_UAS))
def test_every_document_is_accepted_by_ingest(o: EdgeObservation, fmt: str, ua: str) -> None:
    o = dataclasses.replace(o, user_agent=ua)
    line = render_line(fmt, o).encode()
    r = process_line(fmt, line, emitter="cdn:prop", site_host="site.example")
    if isinstance(r, Skip):
        assert r.reason in ("static_asset", "no_content")
        return
    result = ingest(orjson.dumps(r.document), emitter="cdn:prop")
    assert result.accepted, result.reason
    (event,) = result.events
    assert event.event_id == r.document["event"]["id"]
    assert event.source_role == ("origin" if fmt == "nginx" else "edge")
    assert event.content_telemetry_id == r.document["event"].get("content_telemetry_id")
    assert event.bot_category in ("training", "inference", "search")
    assert o.client_ip.encode() not in orjson.dumps(r.document) or not o.client_ip


@settings(max_examples=400, deadline=None)
@given(line=st.binary(max_size=300) | st.text(max_size=300), fmt=st.sampled_from([*FORMATS, "auto"]))
def test_arbitrary_input_never_raises(line: bytes | str, fmt: str) -> None:
    r = process_line(fmt, line, emitter="e", site_host="site.example")
    assert isinstance(r, Retrieval | Skip)
    if isinstance(r, Retrieval):
        assert ingest(orjson.dumps(r.document), emitter="e").accepted


@settings(max_examples=300, deadline=None)
@given(o=OBSERVATIONS, fmt=st.sampled_from(FORMATS), data=st.data())
def test_damaged_lines_never_raise(o: EdgeObservation, fmt: str, data: st.DataObject) -> None:
    line = render_line(fmt, o).encode()
    cut = data.draw(st.integers(0, len(line)))
    junk = data.draw(st.binary(max_size=8))
    damaged = line[:cut] + junk + line[cut + len(junk) :]
    r = process_line(fmt, damaged, emitter="e", site_host="site.example")
    assert isinstance(r, Retrieval | Skip)
    if isinstance(r, Retrieval):
        assert ingest(orjson.dumps(r.document), emitter="e").accepted


def test_json_edge_values_never_break_the_document() -> None:
    rec = orjson.loads(CF_LINE)
    for field, value in (
        ("EdgeStartTimestamp", 10**30),
        ("EdgeStartTimestamp", 1e300),
        ("EdgeStartTimestamp", -5),
        ("EdgeResponseBytes", 2**64 - 1),
        ("ClientASN", 2**63 - 1),
        ("ClientASN", "AS13335"),
        ("EdgeResponseStatus", True),
    ):
        bad = json.dumps(dict(rec, **{field: value}))  # stdlib: writes ints beyond 64 bits too
        r = process_line("cloudflare", bad, emitter="e")
        assert isinstance(r, Retrieval | Skip)
        if isinstance(r, Retrieval):
            accepted(r.document)


def test_to_event_document_directly() -> None:
    o = obs(content_telemetry_id=CTID, cache_status="HIT", asn=1, country="FR")
    doc = to_event_document(
        o, BotMatch("GPTBot", "training", False), emitter="e", role="origin", raw_line="x"
    )
    assert doc["event"]["source_role"] == "origin" and doc["event"]["id"] == event_id("e", "origin", b"x")
    accepted(doc)


# --- the CLI body in dry-run mode (no broker) ------------------------------------------------
def _cli_settings(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data")  # type: ignore[call-arg]


def test_dry_run_prints_documents_and_counts_skips(tmp_path: Path) -> None:
    lines = [
        render_line("cloudflare", obs()),
        render_line("nginx", obs(path="/b")),
        render_line("cloudflare", obs(user_agent=CHROME)),
        render_line("nginx", obs(path="/x.css")),
        "garbage",
    ]
    plain = tmp_path / "a.log"
    plain.write_text("\n".join(lines))  # no trailing newline: the last line still counts
    packed = tmp_path / "b.log.gz"
    packed.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    out, err = io.StringIO(), io.StringIO()
    code = run(
        [str(plain), str(packed)], settings=_cli_settings(tmp_path), site_host="www.example.com",
        dry_run=True, stdout=out, stderr=err,
    )  # fmt: skip
    assert code == 0
    docs = [orjson.loads(line) for line in out.getvalue().splitlines()]
    # one CT event_batch per file (each file is one chunk), 2 retrievals each
    assert [d["document_type"] for d in docs] == ["event_batch", "event_batch"]
    assert all(ingest(orjson.dumps(d), emitter="x").accepted for d in docs)
    events = [e for d in docs for e in d["events"]]
    assert len(events) == 4 and len({e["id"] for e in events}) == 2  # same lines in both files: same ids
    report = err.getvalue()
    assert "wrong_format" in report and "not_ai_bot" in report and "static_asset" in report
    assert not (tmp_path / "data" / "checkpoints").exists()  # dry runs leave checkpoints alone


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text(NGINX_LINE + "\n")
    s = _cli_settings(tmp_path)
    quiet = {"stdout": io.StringIO(), "stderr": io.StringIO(), "dry_run": True}
    assert run([str(log)], settings=s, fmt="nginx", **quiet) == 2  # type: ignore[arg-type]
    assert run([str(log)], settings=s, fmt="syslog", **quiet) == 2  # type: ignore[arg-type]
    assert run([str(tmp_path / "missing.log")], settings=s, **quiet) == 2  # type: ignore[arg-type]
    assert run([], settings=s, **quiet) == 2  # type: ignore[arg-type]
    assert run([str(log)], settings=s, fmt="nginx", site_host="bad host", **quiet) == 2  # type: ignore[arg-type]
    assert run([str(log)], settings=s, fmt="nginx", site_host="www.example.com", **quiet) == 0  # type: ignore[arg-type]


def test_checkpoints_resume_rotate_and_truncate(tmp_path: Path) -> None:
    cp = Checkpoints(tmp_path / "cp.json")
    assert cp.resume_offset("/a", inode=1, size=100) == 0
    cp.set("/a", 1, 40)
    again = Checkpoints(tmp_path / "cp.json")
    assert again.resume_offset("/a", inode=1, size=100) == 40
    assert again.resume_offset("/a", inode=2, size=100) == 0  # rotated
    assert again.resume_offset("/a", inode=1, size=10) == 0  # truncated
    (tmp_path / "cp.json").write_text("{not json")
    assert Checkpoints(tmp_path / "cp.json").resume_offset("/a", 1, 100) == 0
