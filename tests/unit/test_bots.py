"""producers.bots: the AI user-agent table, its one-regex matcher and CDN category mapping."""

from __future__ import annotations

import pytest

from producers.bots import BOTS, CATEGORIES, ROBOTS_ONLY_TOKENS, cdn_category, match_user_agent

# Real-world User-Agent strings (as the operators document them) -> (bot_name, category).
KNOWN = [
    ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
     "GPTBot", "training"),
    ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; ChatGPT-User/1.0; +https://openai.com/bot",
     "ChatGPT-User", "inference"),
    ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; OAI-SearchBot/1.0; +https://openai.com/searchbot)",
     "OAI-SearchBot", "search"),
    ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)",
     "ClaudeBot", "training"),
    ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Claude-User/1.0; +Claude-User@anthropic.com)",
     "Claude-User", "inference"),
    ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Claude-SearchBot/1.0; +https://www.anthropic.com)",
     "Claude-SearchBot", "search"),
    ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; PerplexityBot/1.0; +https://perplexity.ai/perplexitybot)",
     "PerplexityBot", "search"),
    ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Perplexity-User/1.0; +https://perplexity.ai/perplexity-user)",
     "Perplexity-User", "inference"),
    ("Mozilla/5.0 (compatible; Applebot-Extended/0.1)", "Applebot-Extended", "training"),
    ("Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 "
     "(compatible; Bytespider; spider-feedback@bytedance.com)", "Bytespider", "training"),
    ("CCBot/2.0 (https://commoncrawl.org/faq/)", "CCBot", "training"),
    ("meta-externalagent/1.1 (+https://developers.facebook.com/docs/sharing/webmasters/crawler)",
     "meta-externalagent", "training"),
    ("meta-externalfetcher/1.1 (+https://developers.facebook.com/docs/sharing/webmasters/crawler)",
     "meta-externalfetcher", "inference"),
    ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Amazonbot/0.1; "
     "+https://developer.amazon.com/support/amazonbot) Chrome/119.0.6045.214 Safari/537.36", "Amazonbot", "training"),
    ("DuckAssistBot/1.2; (+http://duckduckgo.com/duckassistbot.html)", "DuckAssistBot", "inference"),
    ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; MistralAI-User/1.0; +https://docs.mistral.ai/robots)",
     "MistralAI-User", "inference"),
    ("Mozilla/5.0 (compatible; Diffbot/0.1; +http://www.diffbot.com)", "Diffbot", "training"),
    ("Mozilla/5.0 (compatible; YouBot (+http://www.you.com))", "YouBot", "search"),
    ("Mozilla/5.0 (compatible) Ai2Bot-Dolma (+https://www.allenai.org/crawler)", "Ai2Bot-Dolma", "training"),
    ("Mozilla/5.0 (compatible; GoogleOther)", "GoogleOther", "training"),
    ("Mozilla/5.0 (compatible; Google-CloudVertexBot; +https://cloud.google.com/)", "Google-CloudVertexBot", "search"),
]  # fmt: skip

NOT_AI = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/13.1.1 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
    "Mozilla/5.0 (compatible; PetalBot;+https://webmaster.petalsearch.com/site/petalbot)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "curl/8.5.0",
    "",
]


@pytest.mark.parametrize(("ua", "name", "category"), KNOWN)
def test_known_ai_user_agents_are_recognised(ua: str, name: str, category: str) -> None:
    spec = match_user_agent(ua)
    assert spec is not None
    assert (spec.name, spec.category) == (name, category)


@pytest.mark.parametrize("ua", NOT_AI)
def test_search_engines_browsers_and_previews_are_not_ai(ua: str) -> None:
    assert match_user_agent(ua) is None


def test_matching_is_case_insensitive() -> None:
    spec = match_user_agent("mozilla/5.0 (compatible; GPTBOT/1.2)")
    assert spec is not None and spec.name == "GPTBot"
    spec = match_user_agent("Meta-ExternalAgent/1.1")
    assert spec is not None and spec.name == "meta-externalagent"


def test_the_longest_token_wins_wherever_it_appears() -> None:
    # both tokens present: the more specific one wins regardless of position
    spec = match_user_agent("ClaudeBot-compatible Claude-SearchBot/1.0")
    assert spec is not None and spec.name == "Claude-SearchBot"
    spec = match_user_agent("Mozilla/5.0 (compatible; AI2Bot; Ai2Bot-Dolma)")
    assert spec is not None and spec.name == "Ai2Bot-Dolma"
    spec = match_user_agent("Omgilibot/0.4")
    assert spec is not None and spec.name == "Omgilibot"
    spec = match_user_agent("cohere-training-data-crawler/1.0")
    assert spec is not None and spec.category == "training"


def test_the_table_covers_the_issue_and_is_consistent() -> None:
    names = {b.name for b in BOTS}
    issue = {
        "GPTBot", "ChatGPT-User", "OAI-SearchBot", "ClaudeBot", "Claude-User", "Claude-SearchBot",
        "PerplexityBot", "Perplexity-User", "Applebot-Extended", "Bytespider", "CCBot",
        "meta-externalagent", "meta-externalfetcher", "Amazonbot", "DuckAssistBot", "MistralAI-User",
    }  # fmt: skip
    assert issue <= names
    tokens = [b.token.lower() for b in BOTS]
    assert len(tokens) == len(set(tokens))
    assert {b.category for b in BOTS} <= set(CATEGORIES)
    assert all(b.operator for b in BOTS)


def test_robots_only_tokens_are_never_matched() -> None:
    for token in ROBOTS_ONLY_TOKENS:
        assert match_user_agent(f"Mozilla/5.0 (compatible; {token})") is None


@pytest.mark.parametrize(
    ("native", "expected"),
    [
        ("AI Crawler", "training"),
        ("AI Assistant", "inference"),
        ("AI Search", "search"),
        ("ai crawler", "training"),
        ("AI-CRAWLER", "training"),
        ("AI-FETCHER", "inference"),
        ("inference", "inference"),
        ("Search Engine Crawler", None),
        ("Page Preview", None),
        ("Monitoring & Analytics", None),
        ("", None),
        (None, None),
    ],
)
def test_cdn_categories_map_to_ct_categories(native: str | None, expected: str | None) -> None:
    assert cdn_category(native) == expected
