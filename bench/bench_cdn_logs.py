"""Benchmark of log ingestion's pure path: parse + classify + build the event document.

No Kafka, no file I/O: lines are pre-rendered in memory and fed to
``producers.cdn_logs.process_line`` (what ``ctpipe ingest-logs`` runs per line). One process,
one core.

Corpus (realistic mix, mostly not AI): half Cloudflare Logpush JSON lines, half nginx combined
lines; ~45% static assets, ~35% browser/search-engine page views, ~20% AI bots (GPTBot,
ClaudeBot, ChatGPT-User, PerplexityBot, ...), a few 3xx/4xx, a third of the Cloudflare bots with a
verified-bot category, a third of the bots sending a Content-Telemetry-ID. User agents come
from a pool of ~150 distinct strings (real logs repeat UAs heavily).

Baseline in the same run, same lines: the obvious implementation: ``json.loads`` /
``re.match`` + ``strptime``, a Python loop of per-bot ``re.search(token, ua, re.I)``, an
``uuid.uuid5`` and a dict per AI request.

    .venv/bin/python bench/bench_cdn_logs.py [--lines 200000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from producers.bots import BOTS
from producers.cdn_logs import EdgeObservation, Retrieval, process_line, render_line

HOSTS = ["www.ft.com", "www.theguardian.com", "news.example.org", "blog.example.com"]
_WEBKIT = "AppleWebKit/537.36 (KHTML, like Gecko"
BROWSERS = (
    [
        f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) {_WEBKIT}) Chrome/{v}.0.0.0 Safari/537.36"
        for v in range(100, 140)
    ]
    + [
        f"Mozilla/5.0 (iPhone; CPU iPhone OS 17_{v} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        f"Version/17.{v} Mobile/15E148 Safari/604.1"
        for v in range(0, 40)
    ]
    + [f"Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0" for v in range(100, 140)]
    + [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "curl/8.5.0",
    ]
)
AI_BOTS = [
    (f"Mozilla/5.0 {_WEBKIT}; compatible; GPTBot/1.2; +https://openai.com/gptbot)", "AI Crawler"),
    (f"Mozilla/5.0 {_WEBKIT}); compatible; ChatGPT-User/1.0; +https://openai.com/bot", "AI Assistant"),
    (f"Mozilla/5.0 {_WEBKIT}; compatible; OAI-SearchBot/1.0; +https://openai.com/searchbot)", "AI Search"),
    (f"Mozilla/5.0 {_WEBKIT}; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)", "AI Crawler"),
    (f"Mozilla/5.0 {_WEBKIT}; compatible; Claude-User/1.0; +Claude-User@anthropic.com)", "AI Assistant"),
    (
        f"Mozilla/5.0 {_WEBKIT}; compatible; PerplexityBot/1.0; +https://perplexity.ai/perplexitybot)",
        "AI Search",
    ),
    (
        f"Mozilla/5.0 {_WEBKIT}; compatible; Perplexity-User/1.0; +https://perplexity.ai/perplexity-user)",
        "AI Assistant",
    ),
    ("Mozilla/5.0 (compatible; Bytespider; spider-feedback@bytedance.com)", None),
    ("CCBot/2.0 (https://commoncrawl.org/faq/)", None),
    ("meta-externalagent/1.1 (+https://developers.facebook.com/docs/sharing/webmasters/crawler)", None),
    ("Mozilla/5.0 (compatible; Amazonbot/0.1; +https://developer.amazon.com/support/amazonbot)", None),
    ("DuckAssistBot/1.2; (+http://duckduckgo.com/duckassistbot.html)", "AI Assistant"),
]
STATIC = [
    "/static/app.{h}.js",
    "/static/site.{h}.css",
    "/img/hero-{h}.webp",
    "/fonts/inter-{h}.woff2",
    "/favicon.ico",
]


def corpus(n: int, seed: int = 7) -> tuple[list[bytes], list[bytes]]:
    """(cloudflare lines, nginx lines), n in total."""
    rng = random.Random(seed)
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    cf: list[bytes] = []
    ng: list[bytes] = []
    for i in range(n):
        fmt = "cloudflare" if i % 2 == 0 else "nginx"
        roll = rng.random()
        verified = None
        ctid = None
        if roll < 0.45:
            path = rng.choice(STATIC).format(h=rng.randint(1, 500))
            ua = rng.choice(BROWSERS)
        elif roll < 0.80:
            path = f"/news/{rng.randint(1, 50000)}" + rng.choice(["", "", "?utm_source=x"])
            ua = rng.choice(BROWSERS)
        else:
            path = f"/news/{rng.randint(1, 50000)}"
            ua, cat = rng.choice(AI_BOTS)
            if fmt == "cloudflare" and cat and rng.random() < 0.33:
                verified = cat
            if rng.random() < 0.33:
                ctid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        status = rng.choices([200, 304, 301, 404, 503], weights=[85, 5, 4, 5, 1])[0]
        obs = EdgeObservation(
            timestamp=t0 + timedelta(microseconds=i * 37_000),
            host=rng.choice(HOSTS),
            path=path,
            method="GET",
            status=status,
            response_bytes=rng.randint(200, 200_000),
            user_agent=ua,
            client_ip=f"203.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            content_telemetry_id=ctid,
            cache_status=rng.choice(["hit", "miss", "dynamic", "expired"]),
            verified_bot_category=verified,
            asn=rng.choice([13335, 16509, 8075, 14618]),
            country=rng.choice(["US", "GB", "DE", "FR"]),
            referer=rng.choice([None, "https://www.google.com/"]),
        )
        (cf if fmt == "cloudflare" else ng).append(render_line(fmt, obs).encode())
    return cf, ng


def ctpipe_path(cf: list[bytes], ng: list[bytes]) -> int:
    published = 0
    for line in cf:
        if type(process_line("cloudflare", line, emitter="cdn:bench")) is Retrieval:
            published += 1
    for line in ng:
        if type(process_line("nginx", line, emitter="cdn:bench", site_host="www.ft.com")) is Retrieval:
            published += 1
    return published


def ctpipe_auto(cf: list[bytes], ng: list[bytes]) -> int:
    published = 0
    for line in cf + ng:
        if type(process_line("auto", line, emitter="cdn:bench", site_host="www.ft.com")) is Retrieval:
            published += 1
    return published


# --- the naive baseline ----------------------------------------------------------------------
_NAIVE_BOTS = [(b.name, b.token, b.category) for b in BOTS]
_NAIVE_COMBINED = re.compile(
    r'(\S+) \S+ \S+ \[([^\]]+)\] "([^"]*)" (\d{3}) (\d+|-) "([^"]*)" "([^"]*)"(?: "([^"]*)")?'
)
_STATIC_RE = r"\.(css|js|mjs|map|png|jpe?g|gif|svg|ico|webp|avif|woff2?|ttf|eot|otf)$"


def _naive_doc(
    host: str, path: str, ts: datetime, ua: str, status: int, line: bytes
) -> dict[str, object] | None:
    if re.search(_STATIC_RE, path.split("?")[0], re.I):
        return None
    bot = None
    for name, token, category in _NAIVE_BOTS:
        if re.search(re.escape(token), ua, re.I):
            bot = (name, category)
            break
    if bot is None or not (200 <= status < 300 or status == 304):
        return None
    return {
        "document_type": "event",
        "schema_version": "0.1",
        "event": {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, line.decode())),
            "type": "content_retrieved",
            "timestamp": ts.isoformat(),
            "content_url": f"https://{host}{path}",
            "data": {"user_agent": ua, "bot_name": bot[0], "bot_category": bot[1], "response_status": status},
        },
    }


def naive_path(cf: list[bytes], ng: list[bytes]) -> int:
    published = 0
    for line in cf:
        rec = json.loads(line)
        ts = datetime.fromtimestamp(rec["EdgeStartTimestamp"] / 1e9, UTC)
        doc = _naive_doc(
            rec["ClientRequestHost"],
            rec["ClientRequestURI"],
            ts,
            rec["ClientRequestUserAgent"],
            rec["EdgeResponseStatus"],
            line,
        )
        published += doc is not None
    for line in ng:
        m = _NAIVE_COMBINED.match(line.decode())
        assert m is not None
        ts = datetime.strptime(m.group(2), "%d/%b/%Y:%H:%M:%S %z")
        path = m.group(3).split(" ")[1]
        doc = _naive_doc("www.ft.com", path, ts, m.group(7), int(m.group(4)), line)
        published += doc is not None
    return published


def _time(
    fn: Callable[[list[bytes], list[bytes]], int], cf: list[bytes], ng: list[bytes], repeat: int
) -> tuple[float, int]:
    best = float("inf")
    published = 0
    for _ in range(repeat):
        t = time.perf_counter()
        published = fn(cf, ng)
        best = min(best, time.perf_counter() - t)
    return best, published


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    cf, ng = corpus(args.lines)
    n = len(cf) + len(ng)
    size = sum(map(len, cf)) + sum(map(len, ng))
    print(f"corpus: {n:,} lines ({len(cf):,} Cloudflare, {len(ng):,} nginx), {size / n:.0f} B/line")
    ours, pub = _time(ctpipe_path, cf, ng, args.repeat)
    auto, pub_auto = _time(ctpipe_auto, cf, ng, args.repeat)
    base, pub_base = _time(naive_path, cf, ng, args.repeat)
    print(f"events: {pub:,} ({pub / n:.1%} of lines); naive baseline found {pub_base:,}")
    assert pub == pub_auto
    rows = [
        ("ctpipe process_line (format given)", ours),
        ("ctpipe process_line (--format auto)", auto),
        ("naive baseline", base),
    ]
    print("| path | lines/s | vs baseline |")
    print("|---|---:|---:|")
    for label, secs in rows:
        print(f"| {label} | {n / secs:,.0f} | {base / secs:.1f}x |")


if __name__ == "__main__":
    main()
