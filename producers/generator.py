"""Fleet simulator: deep-research agents and the CDN/origin observers of their fetches, with truth.

Input: a ``GeneratorConfig`` (seed, session count, header-loss and redirect rates, delivery-format
mix, ...). Output: a workload (documents and log lines, in delivery order) and its exact expected
funnel, computed from the simulation's own state (``producers.generator_truth``), never by
re-reading what was emitted. Everything derives from ``random.Random(seed)``: the same seed and
arguments give a byte-identical workload directory.

What is simulated (times from 2026-01-15T08:00:00Z, sessions spread over ``hours``):

* CT 0.1 agents (``producers.generator_world.AGENTS``): multi-turn sessions, deep-research turns
  with 10-150 retrievals and 5-30 groundings, live and cached groundings (content retrieved in an
  earlier session, grounded with ``cached: true`` and no retrieval in this session), citations
  (some without type/position), hallucinated citations (content never grounded in the session),
  displays (incl. ``embed`` displays of content never grounded, custom and absent types),
  engagements (link_click, agent_navigate, expand, copy, share, custom, absent); about half of the
  link_clicks are reported again by their landing page, keyed by a ``ctx_token`` instead of the
  session_id (CT 0.1 7.1; ``destination_rate``; counted ``engaged_destination``). Agents that take
  part in the protocol send a ``Content-Telemetry-ID`` per fetch (CT 7.2) and report it as
  ``content_telemetry_id``; one agent does not. Identifiers: ``content_url`` (tracking parameters,
  fragments, upper-case hosts, trailing slashes: canonicalisation matters) and usually
  ``content_id``; events may carry an emitter ``id`` or not.
* OA 0.4 shopping sessions: content retrieved/cited/displayed/engaged (URLs only, no grounding,
  no Content-Telemetry-ID), commerce events, ``checkout_completed`` with order value + currency.
* Observers of every agent fetch: the publisher's CDN edge (Cloudflare or Fastly log line) and,
  on a cache miss or without CDN, its origin (nginx combined log line, or for "instrumented"
  publishers a CT standalone ``source_role: origin`` event with the canonical URL and
  ``content_id``). Header loss (``header_loss``): the observer's record lacks the id. Redirects
  (``redirect_rate``): the agent fetched a same-domain short or ``m.`` URL; edge/origin log a 301
  then the 200 of the canonical URL, both with the header (agents re-attach it, CT 7.2).
* Background traffic: AI scrapers without the header, training crawls (GPTBot, CCBot, ...), human
  browsers, search engines, static assets, 404/503s. Only AI-bot 2xx/304 non-asset requests count.

Workload directory (``--out``; files exist only when they have content):

====================================  ==========================================================
``ct/sessions.jsonl``                  CT 0.1 session documents (``document_type: session``)
``ct/events.jsonl``                    CT 0.1 standalone events of agent sessions (one per line)
``ct/batches.jsonl``                   CT 0.1 event batches (several per session)
``oa/sessions.jsonl``                  OA 0.4 session documents
``origin/ct-events.jsonl``             CT 0.1 standalone ``source_role: origin`` events of
                                       instrumented publishers (no session_id)
``destination/ct-events.jsonl``        CT 0.1 standalone ``content_engaged`` events of landing
                                       pages after a click-out, keyed by ``ctx_token`` (CT 7.1)
``cdn/cloudflare/<host>.jsonl``        Cloudflare Logpush ``http_requests`` lines, one file per host
``cdn/fastly/<host>.jsonl``            Fastly JSON log lines, one file per host
``origin/nginx/<host>.log``            nginx combined log (+ Content-Telemetry-ID), file name = host
``expected_funnel.json``               ground truth: ``{"seed", "rows", "totals", "grand_total"}``
``owners.json``                        content owner registry of the publishers (``schemas.owners``:
                                       ``{"owners": [{"domain", "content_id_prefixes"}]}``); the
                                       truth attributes content_id-only events with it (CT 0.1
                                       7.3), so the worker must run with it
                                       (``CTPIPE_OWNER_REGISTRY``) for the funnel to match
``manifest.json``                      seed, arguments, files (format, observer, counts), time
                                       range, agents/publishers (with the emitter identity and
                                       content_id prefixes of each), ``owner_registry`` file name
====================================  ==========================================================

Every JSONL file is in delivery order (documents) or timestamp order (log lines). A document's
emitter identity (the RAW topic's ``ctpipe-emitter`` header) is ``agent:<operator>`` for agent
documents (``manifest.json`` maps agent_id -> emitter), ``origin:<owner domain>`` for origin
events and ``destination:<landing page domain>`` for destination reports. With ``--to-kafka``
the documents go to the RAW topic instead of the files (key = session_id, else ctx_token, else
content_telemetry_id); logs, truth and manifest are still written.
"""

from __future__ import annotations

import heapq
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from producers.cdn_logs import EdgeObservation, render_line
from producers.generator_truth import Observation, SimEvent, Truth, hour_bucket, owner_of
from producers.generator_world import (
    BASE_ISO,
    HUMAN_UAS,
    SCRAPERS,
    SEARCH_ENGINE_UAS,
    STATIC_PATHS,
    TRAINING_CRAWLERS,
    Agent,
    Article,
    Bot,
    Product,
    Publisher,
    World,
    build_world,
    rng_uuid,
)
from producers.kafka import AckedSender
from producers.publisher import headers_for
from schemas.funnel import FunnelKey, content_key
from schemas.owners import OwnerRegistry
from schemas.urls import canonical_url, owner_domain

#: Delivery formats and their default shares of sessions.
FORMATS = ("ct_session", "ct_events", "ct_batches", "oa_session")
DEFAULT_MIX: dict[str, float] = {"ct_session": 0.4, "ct_events": 0.2, "ct_batches": 0.2, "oa_session": 0.2}

#: Output file of each document format (relative to the workload directory).
DOC_FILES = {
    "ct_session": "ct/sessions.jsonl",
    "ct_events": "ct/events.jsonl",
    "ct_batches": "ct/batches.jsonl",
    "oa_session": "oa/sessions.jsonl",
    "origin_event": "origin/ct-events.jsonl",
    "destination_event": "destination/ct-events.jsonl",
}
#: The content owner registry of the simulated publishers (``schemas.owners`` format).
OWNERS_FILE = "owners.json"
_WIRE = {
    "retrieved": "content_retrieved",
    "grounded": "content_grounded",
    "cited": "content_cited",
    "displayed": "content_displayed",
    "engaged": "content_engaged",
    "turn_started": "turn_started",
    "turn_completed": "turn_completed",
}
_OA_COMMERCE = {
    "commerce.product_viewed": "product_viewed",
    "commerce.product_compared": "product_compared",
    "commerce.cart_add": "cart_add",
    "commerce.cart_remove": "cart_remove",
    "commerce.checkout_started": "checkout_started",
    "commerce.checkout_completed": "checkout_completed",
    "commerce.checkout_abandoned": "checkout_abandoned",
}
_BASE_MS = int(datetime.fromisoformat(BASE_ISO.replace("Z", "+00:00")).timestamp() * 1000)
_CT_INTENTS = ("question", "explanation", "comparison", "how_to", "analysis", "fact_check", "troubleshooting")
_OA_INTENTS = ("product_research", "comparison", "price_check", "review_seeking", "purchase_intent")
_CITATION_TYPES = ("direct_quote", "paraphrase", "reference", "contradiction", "unclassified", None)
_CITATION_W = (20, 35, 25, 4, 6, 10)
_POSITIONS = ("primary", "supporting", "mentioned", "unclassified", None)
_POSITION_W = (25, 35, 25, 5, 10)
_DISPLAYS = ("link", "snippet", "inline_quote", "card", "detail_view", "carousel", None)
_DISPLAY_W = (35, 20, 10, 15, 8, 6, 6)
_ENGAGEMENTS = ("link_click", "agent_navigate", "expand", "copy", "share", "bookmark", None)
_ENGAGEMENT_W = (40, 15, 15, 10, 6, 8, 6)
_TRACKING = ("utm_source=chat&utm_medium=ai", "utm_campaign=research", "gclid=Xy12", "fbclid=abc9")


@dataclass(slots=True)
class GeneratorConfig:
    """Everything a workload depends on (with the seed, the whole of it)."""

    seed: int = 1
    sessions: int = 100
    hours: int = 6
    header_loss: float = 0.1  # share of observer records without the Content-Telemetry-ID
    redirect_rate: float = 0.08  # share of agent fetches through a same-domain 301
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    hallucination_rate: float = 0.15  # per turn: one citation of never-grounded content
    embed_rate: float = 0.2  # per turn: one embed display of never-grounded content
    cached_rate: float = 0.35  # per turn (and at session start): cached groundings
    deep_retrievals: tuple[int, int] = (10, 150)  # per deep-research turn
    deep_groundings: tuple[int, int] = (5, 30)
    background_per_session: float = 6.0  # scraper/training/human/static requests per session
    # per CT link_click engagement: the landing page reports it too, keyed by ctx_token (CT 7.1)
    destination_rate: float = 0.5

    def __post_init__(self) -> None:
        if self.sessions < 0:
            raise ValueError("sessions must be >= 0")
        for name in (
            "header_loss",
            "redirect_rate",
            "hallucination_rate",
            "embed_rate",
            "cached_rate",
            "destination_rate",
        ):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {v}")
        unknown = set(self.mix) - set(FORMATS)
        if unknown or not any(self.mix.get(f, 0) > 0 for f in FORMATS) or min(self.mix.values()) < 0:
            raise ValueError(f"mix needs non-negative shares of {', '.join(FORMATS)}")
        if self.hours < 1:
            raise ValueError("hours must be >= 1")


class DocumentSink(Protocol):
    """Where documents go instead of files (e.g. Kafka): (format, key, emitter, bytes)."""

    def __call__(self, fmt: str, key: bytes | None, emitter: str, value: bytes) -> None: ...


@dataclass(slots=True)
class Stats:
    """What the simulator did (its intent), for the summary and the tests' invariants."""

    sessions: Counter[str] = field(default_factory=Counter)  # per format
    documents: Counter[str] = field(default_factory=Counter)  # per format (+ origin_event)
    events: Counter[str] = field(default_factory=Counter)  # per format
    log_lines: Counter[str] = field(default_factory=Counter)  # per log format
    cases: Counter[str] = field(default_factory=Counter)  # special cases, by name
    counted_observations: Counter[str] = field(default_factory=Counter)  # per source role
    first_ms: int | None = None
    last_ms: int | None = None

    def seen(self, ms: int) -> None:
        if self.first_ms is None or ms < self.first_ms:
            self.first_ms = ms
        if self.last_ms is None or ms > self.last_ms:
            self.last_ms = ms


@dataclass(slots=True)
class GenerateResult:
    config: GeneratorConfig
    truth: Truth
    stats: Stats
    manifest: dict[str, Any]


def destination_emitter(url: str) -> str:
    """The emitter identity of a destination's click-out report: its landing page's domain."""
    return f"destination:{owner_domain(url) or 'unknown'}"


def iso(ms: int) -> str:
    """RFC 3339 UTC with milliseconds (``2026-01-15T08:00:00.123Z``)."""
    s, m = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{m:03d}Z"


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


# --- the simulation ------------------------------------------------------------------------------
@dataclass(slots=True)
class Planned:
    """One agent event: its truth record plus what only the wire form needs."""

    ev: SimEvent
    target: str | None = None  # semantic identity of the content (article id / fabricated URL)
    id: str | None = None
    turn_id: str | None = None
    turn: dict[str, Any] | None = None
    license_ref: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    fetch: tuple[Article, str, str, str | None] | None = None  # article, host, path, redirect kind


@dataclass(slots=True)
class _Request:
    """One HTTP request as the publisher's infrastructure receives it."""

    pub: Publisher
    host: str
    path: str
    status: int
    ua: str
    ip: str
    asn: int
    cf_category: str | None
    fastly_category: str | None
    ts: int  # ms, whole seconds
    ai: bool  # an AI bot (the log ingester recognises it)
    cti: str | None = None
    article: Article | None = None
    redirect_to: tuple[str, str] | None = None  # (host, path) of the final hop after a 301
    referer: str | None = None


def owner_registry(world: World) -> OwnerRegistry:
    """The content owner registry of the simulated publishers (``owners.json``, CT 0.1 7.3)."""
    return OwnerRegistry.from_owners((p.domain, [p.content_id_prefix]) for p in world.publishers)


class Simulator:
    """Runs one workload; documents and log lines go to ``Output`` in delivery order."""

    def __init__(self, config: GeneratorConfig, output: Output) -> None:
        self.cfg = config
        self.rng = random.Random(config.seed)
        self.world: World = build_world(self.rng)
        self.out = output
        # CT 0.1 7.3: the publishers' content_id schemes (owners.json); the truth attributes
        # content_id-only events with it, as a worker given the same registry does
        self.owners = owner_registry(self.world)
        self.truth = Truth(self.owners)
        self.stats = Stats()
        # rendered log lines: the log ingester derives event ids from the raw line, so two
        # identical lines would be one event downstream; every line is made unique.
        self._lines_seen: dict[int, set[str]] = {}  # second -> lines (purged behind the watermark)
        self._line_seconds: list[int] = []
        # agent_id -> [(retrieval ms, article)] of earlier fetches (the agent-side cache)
        self.cache: dict[str, list[tuple[int, Article]]] = {}
        # destinations' click-out reports draw from their own stream: the rest of the workload
        # stays what it was for a seed whichever their rate
        self.dest_rng = random.Random(f"destination:{config.seed}")

    # -- helpers -----------------------------------------------------------------------------------
    def _maybe_id(self) -> str | None:
        return rng_uuid(self.rng) if self.rng.random() < 0.7 else None

    def _variant(self, art: Article) -> str:
        """A URL of ``art`` that canonicalises to its canonical URL."""
        r = self.rng.random()
        host = art.host
        if r < 0.55:
            return art.url
        if r < 0.7:
            return f"https://{host}{art.path}?{self.rng.choice(_TRACKING)}"
        if r < 0.8:
            return f"https://{host}{art.path}#section-{self.rng.randint(1, 9)}"
        if r < 0.9:
            return f"https://{host.upper()}{art.path}"
        return f"https://{host}{art.path}/"

    def _ip(self, prefix: str) -> str:
        return f"{prefix}{self.rng.randint(1, 254)}.{self.rng.randint(1, 254)}"

    # -- observers ---------------------------------------------------------------------------------
    def _observe(self, req: _Request) -> tuple[list[Observation], list[Observation]]:
        """Edge/origin records of one request; returns counted observations (with id, without)."""
        rng = self.rng
        pub = req.pub
        hops: list[tuple[int, str, str]] = []
        if req.redirect_to is not None:
            hops.append((301, req.host, req.path))
            hops.append((req.status, *req.redirect_to))
        else:
            hops.append((req.status, req.host, req.path))
        with_id: list[Observation] = []
        without_id: list[Observation] = []
        counted_status = req.status < 300 or req.status == 304

        def header() -> str | None:
            if req.cti is None:
                return None
            if rng.random() < self.cfg.header_loss:
                self.stats.cases["header_lost"] += 1
                return None
            return req.cti

        def record(role: str, status: int, host: str, path: str, cti: str | None) -> None:
            if not (req.ai and (status < 300 or status == 304) and not _is_static(path)):
                return
            url = f"https://{host}{path}"
            canon = canonical_url(url)
            key = FunnelKey(
                hour_bucket(req.ts), owner_domain(url) or "", content_key(None, canon), "", "", role
            )
            (with_id if cti else without_id).append(Observation(key, canon, None))
            self.stats.counted_observations[role] += 1

        cache_hit = False
        if pub.cdn is not None:
            cache_hit = counted_status and rng.random() < 0.55
            for status, host, path in hops:
                cti = header()
                if pub.cdn == "cloudflare":
                    cache = "hit" if cache_hit else ("dynamic" if status == 301 else "miss")
                    category = req.cf_category
                else:
                    cache = "HIT" if cache_hit else ("PASS" if status == 301 else "MISS")
                    category = req.fastly_category
                self._line(
                    pub.cdn, f"cdn/{pub.cdn}/{host}.jsonl", req, status, host, path, cti, cache, category
                )
                record("edge", status, host, path, cti)
        if pub.origin is not None and not cache_hit:
            if pub.origin == "nginx":
                for status, host, path in hops:
                    cti = header()
                    self._line("nginx", f"origin/nginx/{host}.log", req, status, host, path, cti, None, None)
                    record("origin", status, host, path, cti)
            elif req.ai and counted_status:
                status, host, path = hops[-1]
                if not _is_static(path):
                    art = req.article
                    url = art.url if art is not None else canonical_url(f"https://{host}{path}") or ""
                    cid = art.content_id if art is not None else None
                    cti = header()
                    self._origin_event(req, url, cid, cti, status)
                    canon = canonical_url(url)
                    key = FunnelKey(
                        hour_bucket(req.ts),
                        owner_of(url, cid, self.owners),
                        content_key(cid, canon),
                        "",
                        "",
                        "origin",
                    )
                    (with_id if cti else without_id).append(Observation(key, canon, cid))
                    self.stats.counted_observations["origin"] += 1
        return with_id, without_id

    def _line(
        self,
        fmt: str,
        rel: str,
        req: _Request,
        status: int,
        host: str,
        path: str,
        cti: str | None,
        cache: str | None,
        category: str | None,
    ) -> None:
        size = 0 if status in (301, 304) else self.rng.randint(2_000, 300_000) if status == 200 else 512
        obs = EdgeObservation(
            timestamp=_dt(req.ts),
            host=host,
            path=path,
            method="GET",
            status=status,
            response_bytes=size,
            user_agent=req.ua,
            client_ip=req.ip,
            scheme="https",
            content_telemetry_id=cti,
            cache_status=cache,
            verified_bot_category=category,
            asn=req.asn,
            country=self.rng.choice(("US", "US", "GB", "DE", "FR", "AU")),
            referer=req.referer,
        )
        line = render_line(fmt, obs)
        second = req.ts // 1000
        seen = self._lines_seen.get(second)
        if seen is None:
            seen = self._lines_seen[second] = set()
            heapq.heappush(self._line_seconds, second)
        while line in seen:
            obs = replace(obs, client_ip=self._ip(req.ip.rsplit(".", 2)[0] + "."))
            line = render_line(fmt, obs)
            self.stats.cases["duplicate_line_redrawn"] += 1
        seen.add(line)
        self.out.line(req.ts, rel, line)
        self.stats.log_lines[fmt] += 1
        self.stats.seen(req.ts)

    def _origin_event(self, req: _Request, url: str, cid: str | None, cti: str | None, status: int) -> None:
        ev: dict[str, Any] = {"id": rng_uuid(self.rng), "type": "content_retrieved", "timestamp": iso(req.ts)}
        ev["source_role"] = "origin"
        if cti:
            ev["content_telemetry_id"] = cti
        ev["content_url"] = url
        if cid:
            ev["content_id"] = cid
        ev["data"] = {"user_agent": req.ua, "response_status": status}
        doc = {"document_type": "event", "schema_version": "0.1", "event": ev}
        delivery = req.ts + self.rng.randint(100, 1500)
        key = cti.encode() if cti else None
        self.out.document(delivery, "origin_event", key, req.pub.origin_emitter, orjson.dumps(doc))
        self.stats.documents["origin_event"] += 1
        self.stats.seen(req.ts)

    # -- background traffic ------------------------------------------------------------------------
    def background(self, start: int, end: int) -> None:
        """Scrapers, training crawls, humans, search engines, static assets (no agent session)."""
        rng = self.rng
        n = int(self.cfg.sessions * self.cfg.background_per_session)
        for _ in range(n):
            ts = (rng.randrange(start, end) // 1000) * 1000
            art = self.world.article(rng)
            pub = self.world.publishers[art.publisher]
            kind = rng.choices(
                ("scraper", "training", "human", "search", "ai_static", "ai_error"), (16, 20, 40, 8, 8, 8)
            )[0]
            host, path = art.host, art.path
            if rng.random() < 0.15 and len(pub.hosts) > 1:
                host = rng.choice(pub.hosts[1:])  # amp./m./archive. variant of the page
            if rng.random() < 0.1:
                path = f"{path}?{rng.choice(_TRACKING)}"
            status = 200 if rng.random() < 0.9 else 304
            bot: Bot | None = None
            if kind in ("scraper", "ai_static", "ai_error"):
                bot = rng.choice(SCRAPERS + TRAINING_CRAWLERS) if kind != "scraper" else rng.choice(SCRAPERS)
            elif kind == "training":
                bot = rng.choice(TRAINING_CRAWLERS)
            if kind in ("human", "search") and rng.random() < 0.35:
                path = rng.choice(STATIC_PATHS) if kind == "human" else "/"
            if kind == "ai_static":
                path = rng.choice(STATIC_PATHS)
            if kind == "ai_error":
                status = rng.choice((404, 403, 503))
                if status == 404:
                    path = f"/{rng.getrandbits(40):010x}"
            if bot is not None:
                req = _Request(
                    pub,
                    host,
                    path,
                    status,
                    bot.user_agent,
                    self._ip(bot.ip_prefix),
                    bot.asn,
                    bot.cf_category,
                    bot.fastly_category,
                    ts,
                    True,
                )
                self.stats.cases["training_crawl" if bot.training else "scraper"] += 1
            else:
                ua = rng.choice(HUMAN_UAS) if kind == "human" else rng.choice(SEARCH_ENGINE_UAS)
                category = None if kind == "human" else "Search Engine Crawler"
                req = _Request(
                    pub,
                    host,
                    path,
                    status,
                    ua,
                    f"81.2.{rng.randint(1, 254)}.{rng.randint(1, 254)}",
                    2856,
                    category,
                    None,
                    ts,
                    False,
                    referer="https://www.google.com/" if kind == "human" else None,
                )
                self.stats.cases["non_ai"] += 1
            if path in STATIC_PATHS:
                self.stats.cases["static_asset"] += 1
            if req.ai and path == art.path:
                req.article = art
            with_id, without_id = self._observe(req)
            self.truth.retrieval([], without_id)
            assert not with_id

    # -- agent fetches -----------------------------------------------------------------------------
    def _fetch_target(self, art: Article) -> tuple[str, str, str | None]:
        """(host, path as requested, redirect kind) of one agent fetch of ``art``."""
        pub = self.world.publishers[art.publisher]
        if self.rng.random() < self.cfg.redirect_rate:
            options: list[str] = []
            if art.short_path:
                options.append("short")
            if pub.mobile_host:
                options.append("mobile")
            if options:
                kind = self.rng.choice(options)
                if kind == "short":
                    return art.host, art.short_path or art.path, "short"
                return pub.mobile_host or art.host, art.path, "mobile"
        path = art.path
        if self.rng.random() < 0.15:
            path = f"{path}?{self.rng.choice(_TRACKING)}"
        return art.host, path, None

    def _agent_fetch_observed(self, agent: Agent, p: Planned, agent_id: str, scope: str) -> None:
        """Observers of one agent retrieval, correlated with the agent's own event in the truth."""
        assert p.fetch is not None
        art, host, path, redirect = p.fetch
        pub = self.world.publishers[art.publisher]
        ev = p.ev
        req = _Request(
            pub,
            host,
            path,
            304 if self.rng.random() < 0.08 else 200,
            agent.user_agent,
            self._ip(agent.ip_prefix),
            agent.asn,
            agent.cf_category,
            agent.fastly_category,
            (ev.ts // 1000) * 1000,
            True,
            cti=ev.cti,
            article=art,
            redirect_to=(art.host, art.path) if redirect else None,
        )
        with_id, without_id = self._observe(req)
        mine = Observation(ev.key(agent_id, scope, self.owners), ev.canonical, ev.content_id)
        self.stats.counted_observations["agent"] += 1
        if ev.cti:
            self.truth.retrieval([mine, *with_id], [])
        else:
            self.truth.retrieval([], [mine])
        self.truth.retrieval([], without_id)
        if redirect:
            self.stats.cases[f"redirect_{redirect}"] += 1

    # -- CT sessions -------------------------------------------------------------------------------
    def ct_session(self, fmt: str, start: int) -> None:
        rng = self.rng
        agent = rng.choice(self.world.agents)
        scope = rng.choice(agent.scopes)
        deep = rng.random() < agent.deep_research
        n_turns = rng.randint(1, 4) if deep else rng.choices((1, 2, 3, 4, 5), (35, 25, 20, 12, 8))[0]
        session_id = rng_uuid(rng)
        cache = [(ts, a) for ts, a in self.cache.get(agent.agent_id, ()) if ts < start]
        plan: list[Planned] = []
        mode: dict[str, str] = {}  # article content_id -> "both" | "url" (identifiers this session)
        grounded: dict[str, Article] = {}  # semantic: grounded somewhere in the session
        cached_here: set[str] = set()
        retrieved_here: set[str] = set()
        never_ground: set[str] = set()
        cited_targets: list[str] = []
        license_of = {a.content_id: f"lic:{agent.operator}:{a.publisher:02d}" for _, a in cache}

        def ident(art: Article, *, cached: bool = False) -> tuple[str | None, str | None]:
            m = mode.setdefault(art.content_id, "both" if rng.random() < 0.88 else "url")
            if m == "url":
                return self._variant(art), None
            if cached and rng.random() < 0.3:
                return None, art.content_id  # cached: URL not preserved (CT 4.5)
            return self._variant(art), art.content_id

        def cached_groundings(t0: int, t1: int, turn_id: str | None) -> None:
            choices = [
                a for _, a in cache if a.content_id not in retrieved_here and a.content_id not in never_ground
            ]
            if not choices:
                return
            for _ in range(rng.randint(1, 3)):
                art = rng.choice(choices)
                url, cid = ident(art, cached=True)
                scope_ = "session" if turn_id is None or rng.random() < 0.5 else "turn"
                ev = SimEvent(
                    "grounded",
                    rng.randint(t0, t1),
                    url=url,
                    content_id=cid,
                    scope=scope_,
                    cached=True,
                    tokens=rng.randint(300, 5000),
                )
                plan.append(
                    Planned(
                        ev,
                        art.content_id,
                        self._maybe_id(),
                        turn_id if scope_ == "turn" else None,
                        license_ref=license_of.get(art.content_id),
                        data={"media_type": art.media_type},
                    )
                )
                grounded[art.content_id] = art
                cached_here.add(art.content_id)
                self.stats.cases["cached_grounding"] += 1

        t = start
        if cache and rng.random() < self.cfg.cached_rate:
            cached_groundings(t, t + 400, None)
            t += 500
        all_urls_retrieved: list[str] = []
        for turn_no in range(1, n_turns + 1):
            turn_id = str(turn_no)
            dur = rng.randint(20_000, 75_000) if deep else rng.randint(4_000, 20_000)
            t0 = t
            level = rng.choice(("full", "summary", "intent", "minimal"))
            plan.append(
                Planned(
                    SimEvent("turn_started", t0),
                    None,
                    self._maybe_id(),
                    turn_id,
                    turn=self._ct_turn_start(level, deep),
                )
            )
            # retrievals
            lo, hi = self.cfg.deep_retrievals if deep else (2, 10)
            turn_arts: list[tuple[int, Article]] = []
            for _ in range(rng.randint(lo, hi)):
                art = self.world.article(rng)
                if art.content_id in cached_here:
                    continue  # grounded from cache in this session: no live fetch
                host, path, redirect = self._fetch_target(art)
                url, cid = ident(art)
                if redirect == "short" or redirect == "mobile":
                    url = f"https://{host}{path}"
                elif url is not None:
                    url = self._requested_url(url, host, path)
                ts = rng.randint(t0 + 300, t0 + int(dur * 0.6))
                ev = SimEvent(
                    "retrieved",
                    ts,
                    url=url or art.url,
                    content_id=cid,
                    cti=rng_uuid(rng) if agent.participates else None,
                )
                plan.append(
                    Planned(
                        ev,
                        art.content_id,
                        self._maybe_id(),
                        None,
                        data={"media_type": art.media_type},
                        fetch=(art, host, path, redirect),
                    )
                )
                retrieved_here.add(art.content_id)
                turn_arts.append((ts, art))
                all_urls_retrieved.append(art.url)
                self.cache.setdefault(agent.agent_id, []).append((ts, art))
            # live groundings
            glo, ghi = self.cfg.deep_groundings if deep else (1, 4)
            unique: dict[str, tuple[int, Article]] = {}
            for ts, art in turn_arts:
                if art.content_id not in never_ground:
                    unique.setdefault(art.content_id, (ts, art))
            pool = list(unique.values())
            for ts, art in rng.sample(pool, min(len(pool), rng.randint(glo, ghi))):
                url, cid = ident(art)
                scope_ = "turn" if rng.random() < 0.7 else "session"
                ev = SimEvent(
                    "grounded",
                    max(ts + 50, t0 + int(dur * 0.6) + rng.randint(0, int(dur * 0.2))),
                    url=url,
                    content_id=cid,
                    scope=scope_,
                    cached=False,
                    tokens=rng.randint(200, 6000),
                )
                plan.append(
                    Planned(
                        ev,
                        art.content_id,
                        self._maybe_id(),
                        turn_id if scope_ == "turn" else None,
                        data={"media_type": art.media_type},
                    )
                )
                grounded[art.content_id] = art
            if cache and rng.random() < self.cfg.cached_rate:
                cached_groundings(t0 + int(dur * 0.6), t0 + int(dur * 0.8), turn_id)
            # citations of grounded content
            cite_lo, cite_hi = (t0 + int(dur * 0.8), t0 + int(dur * 0.95))
            g_arts = list(grounded.values())
            cites: list[tuple[str, str | None, str | None]] = []  # (target, url, cid)
            if g_arts:
                for art in rng.sample(g_arts, min(len(g_arts), rng.randint(1, 8 if deep else 3))):
                    url, cid = ident(art)
                    if url is None:
                        url = self._variant(art)
                    cites.append((art.content_id, url, cid))
            if rng.random() < self.cfg.hallucination_rate:
                cites.append(self._hallucinate(grounded, never_ground, ident))
                self.stats.cases["hallucinated_citation"] += 1
            for target, url, cid in cites:
                ev = SimEvent(
                    "cited",
                    rng.randint(cite_lo, cite_hi),
                    url=url,
                    content_id=cid,
                    citation_type=rng.choices(_CITATION_TYPES, _CITATION_W)[0],
                    position=rng.choices(_POSITIONS, _POSITION_W)[0],
                )
                data: dict[str, Any] = {"excerpt_tokens": rng.randint(10, 200)}
                plan.append(Planned(ev, target, self._maybe_id(), turn_id, data=data))
                cited_targets.append(target)
            # displays: cited sources, a "sources" list of uncited grounded content, embeds
            shown: list[tuple[str, str | None, str | None, str | None]] = []
            for target, url, cid in cites:
                if rng.random() < 0.7:
                    shown.append((target, url, cid, rng.choices(_DISPLAYS, _DISPLAY_W)[0]))
            uncited = [a for a in grounded.values() if a.content_id not in cited_targets]
            for art in rng.sample(uncited, min(len(uncited), rng.randint(0, 3))):
                url, cid = ident(art)
                shown.append((art.content_id, url or self._variant(art), cid, "link"))
            if rng.random() < self.cfg.embed_rate:
                embed = self._fresh_article(grounded, never_ground)
                if embed is not None:
                    never_ground.add(embed.content_id)
                    url, cid = ident(embed)
                    shown.append((embed.content_id, url or self._variant(embed), cid, "embed"))
                    self.stats.cases["embed_display"] += 1
            disp_lo, disp_hi = t0 + int(dur * 0.85), t0 + int(dur * 0.98)
            for target, url, cid, dtype in shown:
                ev = SimEvent(
                    "displayed", rng.randint(disp_lo, disp_hi), url=url, content_id=cid, display_type=dtype
                )
                data = {}
                if dtype == "embed":
                    data["media_type"] = rng.choice(("video", "text"))
                plan.append(Planned(ev, target, self._maybe_id(), turn_id, data=data))
            t_done = t0 + dur
            plan.append(
                Planned(
                    SimEvent("turn_completed", t_done),
                    None,
                    self._maybe_id(),
                    turn_id,
                    turn=self._ct_turn_done(
                        level, deep, all_urls_retrieved[-20:], [u for _, u, _ in cites if u][:10]
                    ),
                )
            )
            gap = rng.randint(5_000, 30_000)
            for target, url, cid, _ in shown:
                if rng.random() < 0.3:
                    ev = SimEvent(
                        "engaged",
                        rng.randint(t_done + 200, t_done + gap - 200),
                        url=url,
                        content_id=cid,
                        engagement_type=rng.choices(_ENGAGEMENTS, _ENGAGEMENT_W)[0],
                    )
                    plan.append(Planned(ev, target, self._maybe_id(), turn_id))
            t = t_done + gap
        if n_turns > 1:
            self.stats.cases["multi_turn_session"] += 1
        if deep:
            self.stats.cases["deep_research_session"] += 1
        self._finish_ct(fmt, agent, scope, session_id, start, plan, grounded, cited_targets)
        # keep the cache bounded (most recent fetches)
        entries = self.cache.get(agent.agent_id)
        if entries and len(entries) > 2000:
            del entries[:-1000]

    def _requested_url(self, url: str, host: str, path: str) -> str:
        """The agent's reported URL: its variant, but with the query it actually requested."""
        if "?" in path:
            return f"https://{host}{path}"
        return url

    def _fresh_article(self, grounded: dict[str, Article], never_ground: set[str]) -> Article | None:
        for _ in range(20):
            art = self.world.article(self.rng)
            if art.content_id not in grounded:
                return art
        return None

    def _hallucinate(
        self,
        grounded: dict[str, Article],
        never_ground: set[str],
        ident: Callable[..., tuple[str | None, str | None]],
    ) -> tuple[str, str | None, str | None]:
        """A citation of content never grounded in the session: a real article or a made-up URL."""
        rng = self.rng
        if rng.random() < 0.5:
            art = self._fresh_article(grounded, never_ground)
            if art is not None:
                never_ground.add(art.content_id)
                url, cid = ident(art)
                return art.content_id, url or self._variant(art), cid
        pub = rng.choice(self.world.publishers)
        url = f"https://{pub.hosts[0]}/news/2026/01/{rng.getrandbits(48):012x}"
        return url, url, None

    def _ct_turn_start(self, level: str, deep: bool) -> dict[str, Any]:
        rng = self.rng
        turn: dict[str, Any] = {"privacy_level": level}
        if level in ("full", "summary"):
            turn["query_text"] = rng.choice(
                (
                    "What changed in battery chemistry this year?",
                    "Summarise the housing budget debate",
                    "Compare the latest laptop reviews",
                    "Is the drought affecting river levels?",
                )
            )
        if level != "minimal":  # CT 5.5: intent and topics from the intent level up
            turn["query_intent"] = rng.choice(_CT_INTENTS)
            turn["topics"] = rng.sample(("energy", "politics", "tech", "climate", "finance", "health"), 2)
        turn["query_tokens"] = rng.randint(5, 80)
        return turn

    def _ct_turn_done(self, level: str, deep: bool, retrieved: list[str], cited: list[str]) -> dict[str, Any]:
        rng = self.rng
        turn: dict[str, Any] = {"privacy_level": level}
        if level in ("full", "summary"):
            turn["response_text"] = (
                "A synthesised answer with sources." if level == "full" else "Answer summary."
            )
        if level != "minimal":  # CT 5.5: response classification and platform metadata
            turn["response_type"] = rng.choice(("explanation", "comparison", "recommendation"))
            turn["response_mode"] = "deep_research" if deep else rng.choice(("standard", "search", "canvas"))
            turn["model_id"] = rng.choice(("model-large-2026-01", "model-reasoning-3"))
            turn["ad_rendered"] = False
        turn["content_urls_retrieved"] = retrieved  # allowed at every level (CT 5.5)
        turn["content_urls_cited"] = cited
        turn["response_tokens"] = rng.randint(100, 4000)
        return turn

    def _finalise(self, plan: list[Planned]) -> None:
        """Order by timestamp, strictly increasing (unique ms): stable event ids, clear turns."""
        plan.sort(key=lambda p: p.ev.ts)
        prev = -1
        for p in plan:
            if p.ev.ts <= prev:
                p.ev.ts = prev + 1
            prev = p.ev.ts

    def _finish_ct(
        self,
        fmt: str,
        agent: Agent,
        scope: str | None,
        session_id: str,
        start: int,
        plan: list[Planned],
        grounded: dict[str, Article],
        cited_targets: list[str],
    ) -> None:
        rng = self.rng
        self._finalise(plan)
        agent_id, scope_s = agent.agent_id, scope or ""
        for p in plan:
            if p.fetch is not None:
                self._agent_fetch_observed(agent, p, agent_id, scope_s)
            self.stats.seen(p.ev.ts)
        self._judge(agent_id, scope_s, plan, set(grounded), set(cited_targets))
        events = [self._ct_wire(p) for p in plan]
        ended = plan[-1].ev.ts + rng.randint(500, 3000) if plan else start + 1000
        envelope: dict[str, Any] = {"schema_version": "0.1", "session_id": session_id, "agent_id": agent_id}
        if scope is not None:
            envelope["content_scope"] = scope
        key = session_id.encode()
        self.stats.sessions[fmt] += 1
        self.stats.events[fmt] += len(events)
        if fmt == "ct_session":
            doc = {
                "document_type": "session",
                **envelope,
                "conformance_level": "citation",
                "started_at": iso(start),
                "ended_at": iso(ended),
                "events": events,
            }
            self._doc(ended + rng.randint(200, 5000), fmt, key, agent.emitter, doc)
        elif fmt == "ct_events":
            env = {"document_type": "event", **envelope, "started_at": iso(start)}
            for p, ev in zip(plan, events, strict=True):
                self._doc(p.ev.ts + rng.randint(100, 2000), fmt, key, agent.emitter, {**env, "event": ev})
        else:
            env = {"document_type": "event_batch", **envelope, "started_at": iso(start)}
            n = min(len(events), rng.randint(2, 6))
            cuts = sorted(rng.sample(range(1, len(events)), n - 1)) if n > 1 else []
            bounds = [0, *cuts, len(events)]
            for a, b in itertools.pairwise(bounds):
                self._doc(
                    plan[b - 1].ev.ts + rng.randint(200, 3000),
                    fmt,
                    key,
                    agent.emitter,
                    {**env, "events": events[a:b]},
                )
        for p in plan:
            if p.ev.type == "engaged" and p.ev.engagement_type == "link_click" and p.ev.url:
                self._destination_report(agent_id, p.ev)

    def _destination_report(self, agent_id: str, clicked: SimEvent) -> None:
        """The landing page of a click-out reports the click too (CT 0.1 section 7.1): a
        standalone ``content_engaged`` event keyed by the agent's ``ctx_token`` instead of the
        session_id, corroborating the agent's own report (``engaged_destination`` in the truth)."""
        rng = self.dest_rng
        if rng.random() >= self.cfg.destination_rate:
            return
        ts = clicked.ts + rng.randint(300, 4_000)
        url = clicked.url
        assert url is not None
        ev: dict[str, Any] = {"id": rng_uuid(rng), "type": "content_engaged", "timestamp": iso(ts)}
        ev["content_url"] = url
        if clicked.content_id:
            ev["content_id"] = clicked.content_id
        ev["data"] = {"engagement_type": "link_click"}
        token = f"ct_{rng.getrandbits(128):032x}"  # CT 1.0 7.4's token syntax (0.1 leaves it opaque)
        doc = {
            "document_type": "event",
            "schema_version": "0.1",
            "ctx_token": token,
            "agent_id": agent_id,  # CT 0.1 7.1 / 5.7.5: agent_id and started_at at Grounding level
            "started_at": iso(ts),
            "event": ev,
        }
        self.truth.destination_engagement(
            agent_id,
            SimEvent("engaged", ts, url=url, content_id=clicked.content_id, engagement_type="link_click"),
        )
        self.out.document(
            ts + rng.randint(100, 2_000),
            "destination_event",
            token.encode(),
            destination_emitter(url),
            orjson.dumps(doc),
        )
        self.stats.documents["destination_event"] += 1
        self.stats.cases["destination_engagement"] += 1
        self.stats.seen(ts)

    def _doc(self, delivery: int, fmt: str, key: bytes | None, emitter: str, doc: dict[str, Any]) -> None:
        self.out.document(delivery, fmt, key, emitter, orjson.dumps(doc))
        self.stats.documents[fmt] += 1

    def _judge(
        self,
        agent_id: str,
        scope: str,
        plan: list[Planned],
        grounded: set[str],
        cited: set[str],
        *,
        grounding_stage: bool = True,
    ) -> None:
        """Truth for the session's events (rule-based), next to the simulator's intended departures."""
        events = [p.ev for p in plan if p.ev.type != "retrieved"]
        cwg, dwc, dwg = self.truth.session(agent_id, scope, events, grounding_stage=grounding_stage)
        self.stats.cases["rule_cited_without_grounded"] += cwg
        self.stats.cases["rule_displayed_without_cited"] += dwc
        self.stats.cases["rule_displayed_without_grounded"] += dwg
        for p in plan:
            if p.ev.type == "cited" and grounding_stage and p.target not in grounded:
                self.stats.cases["intent_cited_without_grounded"] += 1
            elif p.ev.type == "displayed":
                if p.target not in cited:
                    self.stats.cases["intent_displayed_without_cited"] += 1
                if grounding_stage and p.target not in grounded:
                    self.stats.cases["intent_displayed_without_grounded"] += 1

    def _ct_wire(self, p: Planned) -> dict[str, Any]:
        e = p.ev
        ev: dict[str, Any] = {}
        if p.id:
            ev["id"] = p.id
        ev["type"] = _WIRE[e.type]
        ev["timestamp"] = iso(e.ts)
        if p.turn_id:
            ev["turn_id"] = p.turn_id
        if e.type == "retrieved" or (e.type in ("grounded", "cited", "displayed", "engaged") and e.ts % 2):
            ev["source_role"] = "agent"
        if e.cti:
            ev["content_telemetry_id"] = e.cti
        if e.url:
            ev["content_url"] = e.url
        if e.content_id:
            ev["content_id"] = e.content_id
        if p.license_ref:
            ev["license_ref"] = p.license_ref
        if p.turn is not None:
            ev["turn"] = p.turn
        data: dict[str, Any] = {}
        if e.type == "grounded":
            data = {"scope": e.scope, "cached": e.cached, "tokens_ingested": e.tokens}
        elif e.type == "cited":
            if e.citation_type is not None:
                data["citation_type"] = e.citation_type
            if e.position is not None:
                data["position"] = e.position
        elif e.type == "displayed" and e.display_type is not None:
            data["display_type"] = e.display_type
        elif e.type == "engaged" and e.engagement_type is not None:
            data["engagement_type"] = e.engagement_type
        data.update(p.data)
        if data:
            ev["data"] = data
        return ev

    # -- OA sessions -------------------------------------------------------------------------------
    def oa_session(self, start: int) -> None:
        rng = self.rng
        agent = self.world.shopping_agent
        scope = rng.choice(agent.scopes)
        session_id = rng_uuid(rng)
        plan: list[Planned] = []
        t = start
        review_pubs = [
            i for i, p in enumerate(self.world.publishers) if p.domain in ("reviewhub.com", "techpulse.io")
        ]
        cited: list[str] = []
        for _ in range(rng.randint(1, 3)):
            dur = rng.randint(5_000, 25_000)
            t0 = t
            level = rng.choice(("full", "summary", "intent", "minimal"))
            plan.append(
                Planned(SimEvent("turn_started", t0), None, self._maybe_id(), turn=self._oa_turn(level, True))
            )
            arts = [
                self.world.article(rng, rng.choice(review_pubs) if rng.random() < 0.8 else None)
                for _ in range(rng.randint(2, 6))
            ]
            for art in arts:
                host, path, redirect = self._fetch_target(art)
                url = f"https://{host}{path}"
                ev = SimEvent("retrieved", rng.randint(t0 + 200, t0 + dur // 2), url=url)
                plan.append(Planned(ev, art.content_id, self._maybe_id(), fetch=(art, host, path, redirect)))
            shown_arts = rng.sample(arts, min(len(arts), rng.randint(1, 2)))
            for art in shown_arts:
                ev = SimEvent(
                    "cited",
                    rng.randint(t0 + dur // 2, t0 + dur - 500),
                    url=self._variant(art),
                    citation_type=rng.choice(("paraphrase", "reference", "comparison_table", None)),
                    position=rng.choice(("primary", "supporting", "sidebar", None)),
                )
                data: dict[str, Any] = {}
                if ev.citation_type:
                    data["citation_type"] = ev.citation_type
                if ev.position:
                    data["position"] = ev.position
                plan.append(Planned(ev, art.content_id, self._maybe_id(), data=data))
                cited.append(art.content_id)
            for art in arts:
                if art in shown_arts or rng.random() < 0.3:
                    dtype = rng.choice(("card", "link", "product_tile"))
                    ev = SimEvent(
                        "displayed",
                        rng.randint(t0 + dur // 2, t0 + dur - 200),
                        url=self._variant(art),
                        display_type=dtype,
                    )
                    plan.append(Planned(ev, art.content_id, self._maybe_id(), data={"display_type": dtype}))
                    if rng.random() < 0.3:
                        etype = rng.choice(("link_click", "expand", "agent_navigate"))
                        ev2 = SimEvent(
                            "engaged", t0 + dur + rng.randint(300, 3000), url=ev.url, engagement_type=etype
                        )
                        plan.append(
                            Planned(ev2, art.content_id, self._maybe_id(), data={"engagement_type": etype})
                        )
            plan.append(
                Planned(
                    SimEvent("turn_completed", t0 + dur),
                    None,
                    self._maybe_id(),
                    turn=self._oa_turn(level, False),
                )
            )
            t = t0 + dur + rng.randint(4_000, 20_000)
        # commerce (OA 0.4 3.3)
        products: list[Product] = rng.sample(self.world.products, rng.randint(1, 3))
        main = products[0]
        for prod in products:
            plan.append(
                Planned(
                    SimEvent("commerce.product_viewed", t, product_id=prod.product_id), None, self._maybe_id()
                )
            )
            t += rng.randint(2_000, 15_000)
        if len(products) > 1:
            plan.append(
                Planned(
                    SimEvent("commerce.product_compared", t),
                    None,
                    self._maybe_id(),
                    data={"product_ids": [p.product_id for p in products]},
                )
            )
            t += rng.randint(2_000, 10_000)
        outcome: dict[str, Any] = {"type": "browse"}
        r = rng.random()
        if r < 0.75:
            qty = rng.randint(1, 2)
            plan.append(
                Planned(
                    SimEvent("commerce.cart_add", t, product_id=main.product_id),
                    None,
                    self._maybe_id(),
                    data={"quantity": qty},
                )
            )
            t += rng.randint(2_000, 20_000)
            value = qty * main.price_minor
            plan.append(
                Planned(
                    SimEvent("commerce.checkout_started", t),
                    None,
                    self._maybe_id(),
                    data={"cart_value_amount": value, "currency": main.currency},
                )
            )
            t += rng.randint(5_000, 60_000)
            if r < 0.55:
                ev = SimEvent(
                    "commerce.checkout_completed",
                    t,
                    order_value=value,
                    currency=main.currency,
                    product_id=main.product_id if rng.random() < 0.5 else None,
                )
                plan.append(
                    Planned(
                        ev,
                        None,
                        self._maybe_id(),
                        data={"order_value_amount": value, "currency": main.currency},
                    )
                )
                outcome = {
                    "type": "conversion",
                    "value_amount": value,
                    "currency": main.currency,
                    "products": [main.product_id],
                }
                self.stats.cases["checkout_completed"] += 1
            else:
                plan.append(Planned(SimEvent("commerce.checkout_abandoned", t), None, self._maybe_id()))
                outcome = {"type": "abandonment"}
        self._finalise(plan)
        for p in plan:
            if p.fetch is not None:
                self._agent_fetch_observed(agent, p, agent.agent_id, scope or "")
            self.stats.seen(p.ev.ts)
        self._judge(agent.agent_id, scope or "", plan, set(), set(cited), grounding_stage=False)
        events = [self._oa_wire(p) for p in plan]
        ended = plan[-1].ev.ts + rng.randint(500, 3000)
        doc: dict[str, Any] = {
            "schema_version": "0.4",
            "session_id": session_id,
            "initiator_type": "user",
            "agent_id": agent.agent_id,
        }
        if scope is not None:
            doc["content_scope"] = scope
        doc.update(
            {
                "started_at": iso(start),
                "ended_at": iso(ended),
                "user_context": {"external_id": f"u_{rng.getrandbits(40):010x}", "segments": ["returning"]},
                "events": events,
                "outcome": outcome,
            }
        )
        self.stats.sessions["oa_session"] += 1
        self.stats.events["oa_session"] += len(events)
        self._doc(ended + rng.randint(200, 5000), "oa_session", session_id.encode(), agent.emitter, doc)

    def _oa_turn(self, level: str, started: bool) -> dict[str, Any]:
        rng = self.rng
        turn: dict[str, Any] = {"privacy_level": level}
        if level in ("full", "summary"):
            turn["query_text" if started else "response_text"] = (
                "Which noise-cancelling headphones should I buy?"
            )
        if level != "minimal":  # OA 3.5
            turn["query_intent"] = rng.choice(_OA_INTENTS)
            turn["topics"] = ["headphones"]
        turn["query_tokens" if started else "response_tokens"] = rng.randint(5, 400)
        return turn

    def _oa_wire(self, p: Planned) -> dict[str, Any]:
        e = p.ev
        ev: dict[str, Any] = {}
        if p.id:
            ev["id"] = p.id
        ev["type"] = _WIRE.get(e.type) or _OA_COMMERCE[e.type]
        ev["timestamp"] = iso(e.ts)
        if e.url:
            ev["content_url"] = e.url
        if e.product_id:
            ev["product_id"] = e.product_id
        if p.turn is not None:
            ev["turn"] = p.turn
        if p.data:
            ev["data"] = p.data
        return ev

    # -- the run -----------------------------------------------------------------------------------
    def run(self, progress: Callable[[int, int], None] | None = None) -> None:
        rng = self.rng
        cfg = self.cfg
        span = cfg.hours * 3_600_000
        end = _BASE_MS + span
        starts = sorted(_BASE_MS + rng.randrange(0, max(1, span - 600_000)) for _ in range(cfg.sessions))
        shares = [cfg.mix.get(f, 0.0) for f in FORMATS]
        formats = [rng.choices(FORMATS, shares)[0] for _ in starts]
        self.background(_BASE_MS, end)
        for i, (start, fmt) in enumerate(zip(starts, formats, strict=True)):
            self.out.flush(start - 5_000)
            while self._line_seconds and self._line_seconds[0] < (start - 5_000) // 1000:
                del self._lines_seen[heapq.heappop(self._line_seconds)]
            if fmt == "oa_session":
                self.oa_session(start)
            else:
                self.ct_session(fmt, start)
            if progress is not None:
                progress(i + 1, cfg.sessions)
        self.out.flush(None)


def _is_static(path: str) -> bool:
    return path.split("?", 1)[0] in STATIC_PATHS


# --- output --------------------------------------------------------------------------------------
class Output:
    """Buffers documents and log lines and releases them in delivery / timestamp order.

    Sessions are simulated in start order and nothing a session emits is older than its start,
    so everything before the next session's start (minus a margin) can be released.
    """

    def __init__(self, out: Path | None, documents: DocumentSink | None) -> None:
        self.dir = out
        self.sink = documents
        self._docs: list[tuple[int, int, str, bytes | None, str, bytes]] = []
        self._lines: list[tuple[int, int, str, str]] = []
        self._seq = 0
        self._files: dict[str, IO[bytes]] = {}
        self.counts: Counter[str] = Counter()  # relative path -> documents / lines
        self.emitters: dict[str, set[str]] = {}

    def document(self, delivery: int, fmt: str, key: bytes | None, emitter: str, value: bytes) -> None:
        self._seq += 1
        heapq.heappush(self._docs, (delivery, self._seq, fmt, key, emitter, value))

    def line(self, ts: int, rel: str, text: str) -> None:
        self._seq += 1
        heapq.heappush(self._lines, (ts, self._seq, rel, text))

    def _file(self, rel: str) -> IO[bytes]:
        f = self._files.get(rel)
        if f is None:
            assert self.dir is not None
            path = self.dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            f = self._files[rel] = path.open("wb")
        return f

    def flush(self, watermark: int | None) -> None:
        docs, lines = self._docs, self._lines
        while docs and (watermark is None or docs[0][0] < watermark):
            _, _, fmt, key, emitter, value = heapq.heappop(docs)
            rel = DOC_FILES[fmt]
            self.counts[rel] += 1
            self.emitters.setdefault(rel, set()).add(emitter)
            if self.sink is not None:
                self.sink(fmt, key, emitter, value)
            elif self.dir is not None:
                f = self._file(rel)
                f.write(value)
                f.write(b"\n")
        while lines and (watermark is None or lines[0][0] < watermark):
            _, _, rel, text = heapq.heappop(lines)
            self.counts[rel] += 1
            if self.dir is not None:
                f = self._file(rel)
                f.write(text.encode())
                f.write(b"\n")

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


def _file_meta(rel: str) -> tuple[str, str]:
    """(format, observer) of a workload file."""
    if rel.startswith("cdn/"):
        return rel.split("/")[1], "edge"
    if rel.startswith("origin/nginx/"):
        return "nginx", "origin"
    return {
        "ct/sessions.jsonl": ("ct-0.1-session", "agent"),
        "ct/events.jsonl": ("ct-0.1-event", "agent"),
        "ct/batches.jsonl": ("ct-0.1-event-batch", "agent"),
        "oa/sessions.jsonl": ("oa-0.4-session", "agent"),
        "origin/ct-events.jsonl": ("ct-0.1-event", "origin"),
        "destination/ct-events.jsonl": ("ct-0.1-event", "destination"),
    }[rel]


def generate(
    config: GeneratorConfig,
    *,
    out: Path | None,
    documents: DocumentSink | None = None,
    progress: Callable[[int, int], None] | None = None,
    kafka_topic: str | None = None,
) -> GenerateResult:
    """Simulate the workload; write files under ``out`` (documents to ``documents`` if given).

    Writes ``expected_funnel.json``, ``owners.json`` and ``manifest.json`` when ``out`` is set.
    """
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    output = Output(out, documents)
    sim = Simulator(config, output)
    try:
        sim.run(progress)
    finally:
        output.close()
    stats = sim.stats
    files = []
    for rel in sorted(output.counts):
        fmt, observer = _file_meta(rel)
        entry: dict[str, Any] = {"path": rel, "format": fmt, "observer": observer}
        is_doc = rel in DOC_FILES.values()
        entry["documents" if is_doc else "lines"] = output.counts[rel]
        if is_doc:
            entry["emitters"] = sorted(output.emitters.get(rel, ()))
            if documents is not None:
                entry["path"] = None
                entry["kafka_topic"] = kafka_topic
        files.append(entry)
    world = sim.world
    manifest: dict[str, Any] = {
        "generator": "ctpipe generate",
        "seed": config.seed,
        "args": {
            **asdict(config),
            "deep_retrievals": list(config.deep_retrievals),
            "deep_groundings": list(config.deep_groundings),
        },
        "files": files,
        "owner_registry": OWNERS_FILE,
        "time_range": {
            "base": BASE_ISO,
            "first": iso(stats.first_ms) if stats.first_ms is not None else None,
            "last": iso(stats.last_ms) if stats.last_ms is not None else None,
        },
        "agents": [
            {
                "agent_id": a.agent_id,
                "emitter": a.emitter,
                "participates": a.participates,
                "user_agent": a.user_agent,
                "format": "oa-0.4" if a.shopping else "ct-0.1",
            }
            for a in (*world.agents, world.shopping_agent)
        ],
        "publishers": [
            {
                "owner_domain": p.domain,
                "hosts": list(p.hosts),
                "cdn": p.cdn,
                "origin": p.origin,
                "origin_emitter": p.origin_emitter if p.origin == "instrumented" else None,
                "content_id_prefixes": [p.content_id_prefix],
            }
            for p in world.publishers
        ],
        "sessions": dict(sorted(stats.sessions.items())),
        "documents": dict(sorted(stats.documents.items())),
        "events": dict(sorted(stats.events.items())),
        "log_lines": dict(sorted(stats.log_lines.items())),
        "cases": dict(sorted(stats.cases.items())),
    }
    if out is not None:
        (out / "expected_funnel.json").write_bytes(
            orjson.dumps(sim.truth.document(config.seed), option=orjson.OPT_INDENT_2) + b"\n"
        )
        (out / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
        (out / OWNERS_FILE).write_bytes(
            orjson.dumps(sim.owners.to_document(), option=orjson.OPT_INDENT_2) + b"\n"
        )
    return GenerateResult(config, sim.truth, stats, manifest)


# --- Kafka delivery --------------------------------------------------------------------------------
class TokenBucket:
    """``rate`` tokens per second, bursts up to ``burst``; rate 0 = unlimited."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self.tokens = self.burst
        self.clock = clock
        self.sleep = sleep
        self.last = clock()

    def take(self) -> None:
        if self.rate <= 0:
            return
        while True:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= 1.0 - 1e-9:  # tolerance: float sums of tiny waits never reach 1.0
                self.tokens = max(0.0, self.tokens - 1.0)
                return
            self.sleep((1.0 - self.tokens) / self.rate)


#: The ``ctpipe-source`` header of each document format: the DocKind value ``ingest`` accepts as
#: its ``source`` hint (same headers as the HTTP gateway, ``producers.publisher``).
SOURCE_OF = {
    "ct_session": "session",
    "ct_events": "event",
    "ct_batches": "event_batch",
    "oa_session": "oa_session",
    "origin_event": "event",
    "destination_event": "event",
}


class KafkaDocuments:
    """A ``DocumentSink`` publishing to one topic at a target rate, with the gateway's headers
    (``ctpipe-emitter``, ``ctpipe-source``: ``producers.publisher.headers_for``)."""

    def __init__(self, producer: Any, topic: str, rate: float = 0.0) -> None:
        self.topic = topic
        self.bucket = TokenBucket(rate)
        self.sender = AckedSender(producer, topic)

    @property
    def sent(self) -> int:
        return self.sender.sent

    def __call__(self, fmt: str, key: bytes | None, emitter: str, value: bytes) -> None:
        self.bucket.take()
        self.sender.send(key, value, headers_for(emitter, SOURCE_OF[fmt]))

    def close(self, timeout: float = 60.0) -> int:
        """Wait for every acknowledgement; raises ``DeliveryError`` on loss. Returns acked count."""
        return self.sender.flush(timeout)


def iter_kafka_key(doc: dict[str, Any]) -> bytes | None:
    """RAW topic key of a document: session_id, else ctx_token, else content_telemetry_id."""
    for name in ("session_id", "ctx_token"):
        if isinstance(doc.get(name), str):
            return str(doc[name]).encode()
    ev = doc.get("event")
    if isinstance(ev, dict) and isinstance(ev.get("content_telemetry_id"), str):
        return str(ev["content_telemetry_id"]).encode()
    return None


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Documents of a workload JSONL file (for tests and replays)."""
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                yield orjson.loads(line)
