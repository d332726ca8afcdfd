"""The fleet simulator's world: publishers, articles, agents, bots, products (pure data).

Input: a ``random.Random`` (the simulator's one seeded generator). Output: a ``World``, built
deterministically from it. Nothing here does I/O; the simulator (``producers.generator``) walks
this world to produce sessions, observer records and the ground truth.

Publishers cover every observer combination the pipeline must handle: CDN Cloudflare / Fastly /
none x origin nginx log / instrumented (emits CT 0.1 ``source_role: origin`` events) / none, plus a
multi-label public suffix (``.co.uk``, ``.com.au``) and a private PSL suffix (``github.io``).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Literal

Cdn = Literal["cloudflare", "fastly"]
Origin = Literal["nginx", "instrumented"]

#: Base of simulated time (fixed: the workload is reproducible from the seed).
BASE_ISO = "2026-01-15T08:00:00Z"


def rng_uuid(rng: random.Random) -> str:
    """A version-4 UUID drawn from ``rng`` (never ``uuid4``: the workload must be reproducible)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass(frozen=True, slots=True)
class Article:
    publisher: int  # index into World.publishers
    content_id: str
    host: str  # the host serving the canonical URL
    path: str  # canonical path
    short_path: str | None  # same-host short link that 301s to ``path`` (CT 7.2 redirects)
    media_type: str

    @property
    def url(self) -> str:
        """The canonical URL (already in ``schemas.urls.canonical_url`` form)."""
        return f"https://{self.host}{self.path}"


@dataclass(slots=True)
class Publisher:
    domain: str  # owner (registrable) domain
    hosts: tuple[str, ...]  # every host with traffic; hosts[0] serves the articles
    cdn: Cdn | None
    origin: Origin | None
    id_prefix: str
    mobile_host: str | None  # "m." host that 301s to the article host (same-domain redirect)
    articles: list[Article] = field(default_factory=list)
    cum_weights: list[float] = field(default_factory=list)  # Zipf-ish popularity

    @property
    def origin_emitter(self) -> str:
        return f"origin:{self.domain}"

    @property
    def content_id_prefix(self) -> str:
        """What every content_id of this publisher starts with (its registered identifier scheme:
        ``<id_prefix>:<n>``, or ``<doi prefix>.<n>`` for DOIs)."""
        return self.id_prefix + ("." if self.id_prefix.startswith("doi:") else ":")


@dataclass(frozen=True, slots=True)
class Agent:
    agent_id: str
    operator: str
    user_agent: str  # the fetcher's User-Agent (a clear AI-bot token)
    participates: bool  # sends Content-Telemetry-ID and reports content_telemetry_id (CT 7.2)
    deep_research: float  # share of this agent's CT sessions in deep-research mode
    scopes: tuple[str | None, ...]  # content_scope values (None = omitted)
    cf_category: str  # Cloudflare VerifiedBotCategory of its fetcher
    fastly_category: str  # Fastly bot signal of its fetcher
    asn: int
    ip_prefix: str
    shopping: bool = False  # OA 0.4 shopping agent

    @property
    def emitter(self) -> str:
        return f"agent:{self.operator}"


@dataclass(frozen=True, slots=True)
class Bot:
    """A bot that never sends the header: a scraper or a training crawler."""

    name: str
    user_agent: str
    cf_category: str | None
    fastly_category: str | None
    training: bool
    asn: int
    ip_prefix: str


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str  # lower-case UUID (OA 0.4 3.2)
    price_minor: int
    currency: str


def _ua(token: str, site: str) -> str:
    return f"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; {token}; +{site}"


AGENTS: tuple[Agent, ...] = (
    Agent(
        "claude-research",
        "anthropic",
        _ua("Claude-User/1.0", "https://www.anthropic.com"),
        True,
        0.6,
        ("news-licensing-2026", "https://claude.example/.well-known/content-telemetry.json", None),
        "AI Assistant",
        "AI-FETCHER",
        16509,
        "34.162.",
    ),
    Agent(
        "chatgpt-deep-research",
        "openai",
        _ua("ChatGPT-User/1.0", "https://openai.com/bot"),
        True,
        0.7,
        ("agreement:oa-2026-017", "api-key:ak_3f9c"),
        "AI Assistant",
        "AI-FETCHER",
        8075,
        "20.171.",
    ),
    Agent(
        "perplexity-pro",
        "perplexity",
        _ua("Perplexity-User/1.0", "https://perplexity.ai/perplexity-user"),
        False,  # does not participate in the protocol: no header, no content_telemetry_id
        0.3,
        ("research-mix", None),
        "AI Assistant",
        "AI-FETCHER",
        14618,
        "44.221.",
    ),
    Agent(
        "mistral-le-chat",
        "mistral",
        _ua("MistralAI-User/1.0", "https://docs.mistral.ai/robots"),
        True,
        0.2,
        ("eu-news-bundle",),
        "AI Assistant",
        "AI-FETCHER",
        16276,
        "51.159.",
    ),
)

SHOPPING_AGENT = Agent(
    "shopping-assistant-v2",
    "shopco",
    _ua("Amzn-User/0.1", "https://developer.amazon.com/amazonbot"),
    False,
    0.0,
    ("electronics-reviews", "did:aims:retailer-content-2026"),
    "AI Assistant",
    "AI-FETCHER",
    16509,
    "3.224.",
    shopping=True,
)

SCRAPERS: tuple[Bot, ...] = (
    Bot(
        "PerplexityBot",
        _ua("PerplexityBot/1.0", "https://perplexity.ai/perplexitybot"),
        "AI Search",
        None,
        False,
        14618,
        "44.222.",
    ),
    Bot(
        "OAI-SearchBot",
        _ua("OAI-SearchBot/1.0", "https://openai.com/searchbot"),
        "AI Search",
        None,
        False,
        8075,
        "20.172.",
    ),
    Bot(
        "Claude-SearchBot",
        _ua("Claude-SearchBot/1.0", "https://www.anthropic.com"),
        "AI Search",
        None,
        False,
        16509,
        "34.163.",
    ),
    Bot(
        "meta-externalfetcher",
        "meta-externalfetcher/1.1 (+https://developers.facebook.com/docs/sharing/webmasters/crawler)",
        None,
        "AI-FETCHER",
        False,
        32934,
        "57.141.",
    ),
    # an unverified scraper: recognised by User-Agent only
    Bot(
        "Amzn-SearchBot",
        _ua("Amzn-SearchBot/0.1", "https://developer.amazon.com/amazonbot"),
        None,
        None,
        False,
        64512,
        "185.220.",
    ),
)

TRAINING_CRAWLERS: tuple[Bot, ...] = (
    Bot(
        "GPTBot",
        _ua("GPTBot/1.2", "https://openai.com/gptbot"),
        "AI Crawler",
        "AI-CRAWLER",
        True,
        8075,
        "20.15.",
    ),
    Bot(
        "CCBot", "CCBot/2.0 (https://commoncrawl.org/faq/)", "AI Crawler", "AI-CRAWLER", True, 16509, "18.97."
    ),
    Bot(
        "ClaudeBot",
        _ua("ClaudeBot/1.0", "claudebot@anthropic.com"),
        "AI Crawler",
        "AI-CRAWLER",
        True,
        16509,
        "34.164.",
    ),
    Bot(
        "Bytespider",
        _ua("Bytespider", "spider-feedback@bytedance.com"),
        "AI Crawler",
        None,
        True,
        396986,
        "47.128.",
    ),
)

#: Non-AI traffic: browsers and general search engines (the log ingester skips all of it).
HUMAN_UAS: tuple[str, ...] = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",  # noqa: E501
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.2 Mobile/15E148 Safari/604.1",  # noqa: E501
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:133.0) Gecko/20100101 Firefox/133.0",
)
SEARCH_ENGINE_UAS: tuple[str, ...] = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
)
#: Paths of static assets (skipped by the log ingester whoever requests them).
STATIC_PATHS: tuple[str, ...] = (
    "/static/css/site.css",
    "/static/js/app.js",
    "/static/img/logo.png",
    "/static/fonts/body.woff2",
    "/favicon.ico",
)

# (domain, subdomains, cdn, origin, id prefix, section, mobile redirect host?)
_PUBLISHERS: tuple[tuple[str, tuple[str, ...], Cdn | None, Origin | None, str, str, bool], ...] = (
    ("herald-tribune.co.uk", ("www", "m", "amp"), "cloudflare", "nginx", "htuk", "news", True),
    ("globe-science.com", ("www", "amp"), "fastly", "instrumented", "doi:10.5555/gs", "research", False),
    ("citynews.com.au", ("www", "m"), "cloudflare", "instrumented", "cna", "local", True),
    ("techpulse.io", ("www",), "fastly", None, "tp", "reviews", False),
    ("openjournal.org", ("www", "archive"), None, "nginx", "oj", "articles", False),
    ("marktblatt.de", ("www",), None, "instrumented", "mb", "wirtschaft", False),
    ("reviewhub.com", ("www", "m"), "cloudflare", None, "rh", "reviews", True),
    ("datasci.github.io", ("",), None, None, "dsgh", "posts", False),
)

_WORDS = (
    "battery",
    "climate",
    "market",
    "election",
    "vaccine",
    "chip",
    "headphones",
    "river",
    "housing",
    "budget",
    "quantum",
    "league",
    "museum",
    "solar",
    "privacy",
    "drought",
    "merger",
    "laptop",
)


@dataclass(slots=True)
class World:
    publishers: list[Publisher]
    agents: tuple[Agent, ...]
    shopping_agent: Agent
    products: list[Product]
    pub_cum_weights: list[float]

    def article(self, rng: random.Random, publisher: int | None = None) -> Article:
        """A popularity-weighted article (of ``publisher`` if given)."""
        pi = (
            publisher
            if publisher is not None
            else rng.choices(range(len(self.publishers)), cum_weights=self.pub_cum_weights)[0]
        )
        pub = self.publishers[pi]
        return rng.choices(pub.articles, cum_weights=pub.cum_weights)[0]


def build_world(rng: random.Random, articles_per_publisher: int = 40) -> World:
    """The publishers, articles, agents and products of one run (deterministic in ``rng``)."""
    publishers: list[Publisher] = []
    for pi, (domain, subs, cdn, origin, prefix, section, mobile) in enumerate(_PUBLISHERS):
        hosts = tuple(f"{s}.{domain}" if s else domain for s in subs)
        pub = Publisher(
            domain=domain,
            hosts=hosts,
            cdn=cdn,
            origin=origin,
            id_prefix=prefix,
            mobile_host=f"m.{domain}" if mobile else None,
        )
        acc = 0.0
        for ai in range(articles_per_publisher):
            slug = "-".join(rng.sample(_WORDS, 3)) + f"-{ai}"
            path = f"/{section}/2026/01/{slug}"
            media = rng.choices(("text", "video", "image"), weights=(90, 7, 3))[0]
            pub.articles.append(
                Article(
                    publisher=pi,
                    content_id=f"{pub.content_id_prefix}{1000 + ai}",
                    host=hosts[0],
                    path=path,
                    short_path=f"/s/{rng.getrandbits(32):08x}" if rng.random() < 0.7 else None,
                    media_type=media,
                )
            )
            acc += 1.0 / (ai + 1) ** 0.8
            pub.cum_weights.append(acc)
        publishers.append(pub)
    pub_weights = (14, 10, 8, 8, 6, 5, 8, 2)
    cum: list[float] = []
    total = 0.0
    for w in pub_weights:
        total += w
        cum.append(total)
    products = [
        Product(rng_uuid(rng), rng.randrange(1_999, 149_999), cur)
        for cur in ("USD", "USD", "USD", "EUR", "EUR", "GBP", "JPY", "USD", "EUR", "USD", "GBP", "USD")
    ]
    return World(publishers, AGENTS, SHOPPING_AGENT, products, cum)
