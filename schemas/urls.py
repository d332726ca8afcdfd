"""Canonical content URLs and owner domains.

Input: a ``content_url`` exactly as an emitter sent it. Output: a canonical URL (lower-cased
scheme and host, default port, userinfo and fragment dropped, tracking parameters removed,
trailing slash normalised) and the owner domain: the registrable domain from the Public Suffix
List. CT 0.1 section 7.3 resolves content owners "from ``content_url`` domains"; section 4.5
asks emitters for canonical URLs but consumers cannot rely on it, so ctpipe canonicalises too.

The PSL comes from ``tldextract``'s bundled snapshot: ``suffix_list_urls=()`` and no cache
directory, so nothing is fetched or written at run time.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from urllib.parse import unquote, urlsplit, urlunsplit

import tldextract

# Private PSL entries count (github.io, blogspot.com, ...): each user site there is its own
# owner, which is what the private section of the list exists to say.
_EXTRACT = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, include_psl_private_domains=True)

_DEFAULT_PORTS = {"http": "80", "https": "443"}

#: Query parameters that only track a click and never select content (exact names).
TRACKING_PARAMS: frozenset[str] = frozenset(
    {
        "gclid",
        "gclsrc",
        "dclid",
        "gbraid",
        "wbraid",
        "fbclid",
        "msclkid",
        "yclid",
        "twclid",
        "ttclid",
        "igshid",
        "li_fat_id",
        "mc_cid",
        "mc_eid",
        "_ga",
        "_gl",
        "_hsenc",
        "_hsmi",
        "mkt_tok",
        "oly_anon_id",
        "oly_enc_id",
        "vero_id",
        "vero_conv",
        "ref_src",
        "srsltid",
    }
)
#: Query parameter prefixes that only track (``utm_source``, ``utm_medium``, ...).
TRACKING_PREFIXES: tuple[str, ...] = ("utm_", "pk_", "mtm_", "hsa_")


def _is_tracking(name: str) -> bool:
    key = unquote(name).lower()
    return key in TRACKING_PARAMS or key.startswith(TRACKING_PREFIXES)


@lru_cache(maxsize=65536)
def canonical_url(url: str) -> str | None:
    """The canonical form of ``url``, or None when it is not a usable absolute URL.

    Hierarchical URLs (``scheme://host/...``) are canonicalised; other absolute URIs
    (``urn:``, ``doi:``) come back with only the scheme lower-cased.
    """
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if not scheme:
            return None
        if not parts.netloc:
            return f"{scheme}:{url.strip()[len(parts.scheme) + 1 :]}"
        host = (parts.hostname or "").rstrip(".")
        if not host:
            return None
        port = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError:
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and str(port) != _DEFAULT_PORTS.get(scheme):
        netloc = f"{netloc}:{port}"
    path = parts.path or "/"
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    query = "&".join(p for p in parts.query.split("&") if p and not _is_tracking(p.split("=", 1)[0]))
    return urlunsplit((scheme, netloc, path, query, ""))


@lru_cache(maxsize=65536)
def owner_domain(url: str) -> str | None:
    """The registrable domain (eTLD+1) that owns ``url``; an IP literal owns itself; else None."""
    try:
        host = (urlsplit(url.strip()).hostname or "").rstrip(".")
    except ValueError:
        return None
    if not host:
        return None
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    result = _EXTRACT(host)
    return result.top_domain_under_public_suffix or None


def host_of(url: str) -> str | None:
    """The lower-cased host of ``url`` (None when it has none)."""
    try:
        return (urlsplit(url.strip()).hostname or "").rstrip(".") or None
    except ValueError:
        return None
