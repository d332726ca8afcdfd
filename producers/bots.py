"""AI crawler and fetcher user agents: the maintained table and the one fast matcher.

Input: a request's User-Agent string, or a CDN's native verified-bot category. Output: the
recognised bot (``BotSpec``: name, category, operator) or the CT 0.1 section 6.2 ``bot_category``
a CDN category maps to. Pure data + pure functions; no I/O.

Categories (CT 0.1 section 6.2, "Bot categories"):
- ``training``: crawls for model training (no user, no session behind the request);
- ``inference``: user-initiated fetches at query time (RAG, assistants, agents);
- ``search``: AI search indexing (builds the index an assistant later answers from).

Matching: ONE precompiled regex alternation over the lower-cased tokens, run on the lower-cased
User-Agent (cheaper than ``re.IGNORECASE``); every match in the string is collected and the
longest token wins, so ``Claude-SearchBot`` is never taken for a shorter sibling and
``Ai2Bot-Dolma`` beats ``AI2Bot``.

Deliberately NOT in the matcher (documented so nobody adds them by mistake):
- robots.txt-only product tokens that never appear in a User-Agent (``ROBOTS_ONLY_TOKENS``):
  ``Google-Extended`` (Gemini training opt-out; Google crawls as Googlebot), ``webzio-extended``,
  ``YandexAdditional``. ``Applebot-Extended`` is one too (real Apple traffic says ``Applebot``),
  but the issue names it, so it stays in the table: a UA carrying it is unambiguous.
- general search engines and non-AI crawlers: Googlebot, Bingbot, Applebot, PetalBot (Huawei's
  Petal Search), YandexBot, Baiduspider, DuckDuckBot. They are counted as non-AI traffic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

BotCategory = Literal["training", "inference", "search"]
CATEGORIES: Final = ("training", "inference", "search")


@dataclass(frozen=True, slots=True)
class BotSpec:
    """One AI agent: the name reported as ``bot_name``, the UA token that identifies it."""

    name: str  # canonical bot family, e.g. "Claude-User" (CT 0.1 section 6.2 ``bot_name``)
    token: str  # substring of the User-Agent identifying it (matched case-insensitively)
    category: BotCategory
    operator: str


def _b(name: str, category: BotCategory, operator: str, token: str | None = None) -> BotSpec:
    return BotSpec(name=name, token=token or name, category=category, operator=operator)


#: The maintained table. Order does not matter (longest matching token wins).
BOTS: Final[tuple[BotSpec, ...]] = (
    # OpenAI
    _b("GPTBot", "training", "OpenAI"),
    _b("ChatGPT-User", "inference", "OpenAI"),
    _b("ChatGPT-Agent", "inference", "OpenAI"),  # agent mode; also signs with Web Bot Auth
    _b("OAI-SearchBot", "search", "OpenAI"),
    # Anthropic
    _b("ClaudeBot", "training", "Anthropic"),
    _b("Claude-User", "inference", "Anthropic"),
    _b("Claude-SearchBot", "search", "Anthropic"),
    _b("Claude-Web", "inference", "Anthropic"),  # retired fetcher UA, still seen in old logs
    _b("anthropic-ai", "training", "Anthropic"),  # retired crawler UA
    # Perplexity
    _b("PerplexityBot", "search", "Perplexity"),
    _b("Perplexity-User", "inference", "Perplexity"),
    # Google (Google-Extended is robots-only, see module docstring)
    _b("GoogleOther", "training", "Google"),  # generic R&D crawler, in Cloudflare's AI list
    _b("Google-CloudVertexBot", "search", "Google"),  # crawls for Vertex AI Search agents
    _b("Gemini-Deep-Research", "inference", "Google"),
    _b("Google-NotebookLM", "inference", "Google"),
    # Apple, Meta, Amazon, ByteDance
    _b("Applebot-Extended", "training", "Apple"),
    _b("meta-externalagent", "training", "Meta"),
    _b("meta-externalfetcher", "inference", "Meta"),
    _b("FacebookBot", "training", "Meta"),  # speech/LLM training crawler (not the link previewer)
    _b("Amazonbot", "training", "Amazon"),
    _b("Amzn-SearchBot", "search", "Amazon"),
    _b("Amzn-User", "inference", "Amazon"),
    _b("Bytespider", "training", "ByteDance"),
    _b("TikTokSpider", "training", "ByteDance"),
    # assistants and AI search engines
    _b("DuckAssistBot", "inference", "DuckDuckGo"),
    _b("MistralAI-User", "inference", "Mistral AI"),
    _b("cohere-ai", "inference", "Cohere"),
    _b("cohere-training-data-crawler", "training", "Cohere"),
    _b("YouBot", "search", "You.com"),
    _b("PhindBot", "search", "Phind"),
    _b("LinerBot", "search", "Liner"),
    _b("iaskspider", "search", "iAsk.ai"),
    _b("Andibot", "search", "Andi"),
    # training crawlers and dataset builders
    _b("CCBot", "training", "Common Crawl"),
    _b("Diffbot", "training", "Diffbot"),
    _b("Timpibot", "training", "Timpi"),
    _b("ImagesiftBot", "training", "ImageSift"),
    _b("Omgilibot", "training", "Webz.io"),
    _b("Omgili", "training", "Webz.io"),
    _b("ICC-Crawler", "training", "NICT"),
    _b("Kangaroo Bot", "training", "Kangaroo LLM"),
    _b("PanguBot", "training", "Huawei"),  # PanGu LLM training, not Petal Search
    _b("AI2Bot", "training", "Allen Institute for AI"),
    _b("Ai2Bot-Dolma", "training", "Allen Institute for AI"),
    _b("Cotoyogi", "training", "ROIS-DS"),
    _b("VelenPublicWebCrawler", "training", "Velen"),
    _b("img2dataset", "training", "img2dataset"),
)

#: robots.txt product tokens that are not User-Agents (never matched; see module docstring).
ROBOTS_ONLY_TOKENS: Final = frozenset({"Google-Extended", "webzio-extended", "YandexAdditional"})

BY_TOKEN: Final[dict[str, BotSpec]] = {b.token.lower(): b for b in BOTS}

_PATTERN: Final = re.compile("|".join(re.escape(t) for t in sorted(BY_TOKEN, key=lambda t: (-len(t), t))))

#: CDN-native verified-bot categories -> CT 0.1 section 6.2 categories (keys lower-cased).
#: Cloudflare ``VerifiedBotCategory`` ("AI Crawler", ...) and Fastly Bot Management signals
#: ("AI-CRAWLER", "AI-FETCHER"); CT's own values are accepted as-is. Every other CDN category
#: ("Search Engine Crawler", "Page Preview", ...) is not an AI category: None.
CDN_CATEGORIES: Final[dict[str, BotCategory]] = {
    "ai crawler": "training",
    "ai assistant": "inference",
    "ai search": "search",
    "ai-crawler": "training",
    "ai-fetcher": "inference",
    "training": "training",
    "inference": "inference",
    "search": "search",
}


def match_user_agent(user_agent: str) -> BotSpec | None:
    """The AI agent a User-Agent names (longest matching token), or None."""
    found = _PATTERN.findall(user_agent.lower())
    if not found:
        return None
    if len(found) == 1:
        return BY_TOKEN[found[0]]
    return BY_TOKEN[max(found, key=len)]


def cdn_category(native: str | None) -> BotCategory | None:
    """The CT category of a CDN's native verified-bot category, or None when not an AI one."""
    if not native:
        return None
    return CDN_CATEGORIES.get(native.strip().lower())
