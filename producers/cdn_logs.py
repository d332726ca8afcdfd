"""CDN and origin access logs -> CT 0.1 ``content_retrieved`` events (edge/origin observers).

Input: one log line (``bytes`` or ``str``) in one of three formats:

- ``cloudflare``: Cloudflare Logpush ``http_requests`` JSON lines with Cloudflare's field names
  (``ClientRequestHost``, ``ClientRequestURI``, ``ClientRequestMethod``, ``ClientRequestScheme``,
  ``ClientRequestUserAgent``, ``ClientRequestReferer``, ``ClientIP``, ``ClientASN``,
  ``ClientCountry`` (lower-case ISO code), ``EdgeStartTimestamp`` (RFC 3339 string or Unix
  s/ms/us/ns integer: every Logpush ``timestamp_format``), ``EdgeResponseStatus``,
  ``EdgeResponseBytes``, ``CacheCacheStatus``, ``VerifiedBotCategory``) and custom request-header
  fields as Logpush writes them: ``"RequestHeaders": {"content-telemetry-id": "..."}``.
  ``render_line`` writes ``EdgeStartTimestamp`` as Unix nanoseconds (Logpush's default).
- ``fastly``: Fastly JSON logging has no fixed schema, so ctpipe defines one. Recommended
  logging-endpoint format string (VCL, one line)::

    {"timestamp":"%{strftime(\\{"%Y-%m-%dT%H:%M:%S%z"\\}, time.start)}V",
     "client_ip":"%{req.http.Fastly-Client-IP}V",
     "scheme":"%{if(req.is_ssl, "https", "http")}V",
     "host":"%{json.escape(req.http.host)}V",
     "url":"%{json.escape(req.url)}V",
     "method":"%{json.escape(req.method)}V",
     "status":%{resp.status}V,
     "response_bytes":%{resp.body_bytes_written}V,
     "user_agent":"%{json.escape(req.http.User-Agent)}V",
     "referer":"%{json.escape(req.http.Referer)}V",
     "cache_status":"%{fastly_info.state}V",
     "asn":%{client.as.number}V,
     "country_code":"%{client.geo.country_code}V",
     "bot_category":"%{if(fastly.bot.category.is_verified,
        if(fastly.bot.category.is_ai_crawler, "AI-CRAWLER",
           if(fastly.bot.category.is_ai_fetcher, "AI-FETCHER", "")), "")}V",
     "content_telemetry_id":"%{json.escape(req.http.Content-Telemetry-ID)}V"}

  ``bot_category`` is logged for *verified* bots only (that is what makes ``verified`` true).
  The parser is lenient: unknown fields are ignored, numbers may arrive as strings, ``""`` and
  Fastly's ``(null)`` mean absent, ``timestamp`` may be RFC 3339 or a Unix epoch number.
- ``nginx``: nginx/Apache combined log ``$remote_addr - $remote_user [$time_local] "$request"
  $status $body_bytes_sent "$http_referer" "$http_user_agent"`` plus an optional trailing
  ``"$http_content_telemetry_id"`` (``"-"`` = absent; further trailing fields are ignored). The
  line carries no host: the caller supplies ``site_host`` (and ``scheme``, default https).
  Both nginx (``\\xHH``) and Apache (``\\"``) escaping is decoded.

Output: ``process_line`` -> a ``Retrieval`` (a CT 0.1 standalone event document, CT 7.1, with no
``session_id``: allowed for retrieval-only origin-side emitters) or a ``Skip`` with a reason code.
The document's ``event``: ``id`` = UUIDv5 over (emitter, role, raw line bytes) so re-ingesting a
line yields the same id (downstream dedupes by id); ``type`` ``content_retrieved``; ``timestamp``
UTC RFC 3339; ``source_role`` ``edge`` (cloudflare, fastly) or ``origin`` (nginx);
``content_telemetry_id`` from the request header when it is a valid UUID (else dropped and
flagged); ``content_url`` = scheme://host + path/query as requested (characters RFC 3986 forbids
are percent-encoded); ``data`` = the CT 0.1 section 6.2/6.3 enrichment: ``user_agent``,
``bot_category``, ``bot_name``, ``verified``, ``cache_status`` (hit|miss|bypass|dynamic),
``response_status``, ``response_bytes``, ``asn``, ``country`` (+ ``media_type`` for video/audio).

Privacy: raw client IPs are parsed (``EdgeObservation.client_ip``) but never leave this module.
``ip_hash`` (CT 6.2/6.3) is deliberately NOT emitted: an unsalted SHA-256 over the 2^32 IPv4
addresses is reversed by brute force in minutes, so it would be a raw IP in disguise.

Which lines become events (``process_line``), in this order of skip reasons:
``blank``; ``wrong_format`` (not this log format at all); ``malformed`` (this format, but a field
is missing or unusable); ``static_asset`` (path extension in ``STATIC_EXTENSIONS``: page
furniture, not content; documents, video and audio are kept as content); ``not_ai_bot`` (neither
the CDN's verified-bot category nor the UA table names an AI agent); ``no_content`` (the response
delivered no content: not GET, or a status other than 2xx/304); ``no_site_host`` (an nginx line
when no site host was given).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Final, Literal
from uuid import UUID

import orjson

from producers.bots import BotSpec, cdn_category, match_user_agent


@dataclass(frozen=True, slots=True)
class EdgeObservation:
    """One HTTP request as a CDN edge or an origin server saw it (a log line's content).

    The fleet simulator renders these into log lines; the parsers read log lines back into
    them. ``client_ip`` exists only between a log line and the event built from it: events never
    carry raw client IPs.
    """

    timestamp: datetime  # UTC
    host: str  # request Host, e.g. "www.example.com"
    path: str  # path + query as requested, e.g. "/news/a?utm_source=x"
    method: str
    status: int
    response_bytes: int
    user_agent: str
    client_ip: str
    scheme: str = "https"
    content_telemetry_id: str | None = None  # the request's Content-Telemetry-ID header
    cache_status: str | None = None  # CDN-native value (e.g. Cloudflare "hit", Fastly "MISS")
    verified_bot_category: str | None = None  # CDN-native verified-bot category, if any
    asn: int | None = None
    country: str | None = None  # ISO 3166-1 alpha-2
    referer: str | None = None


Format = Literal["cloudflare", "fastly", "nginx"]
FORMATS: Final[tuple[Format, ...]] = ("cloudflare", "fastly", "nginx")
#: The observer role each format reports as (CT 0.1 section 4.4).
DEFAULT_ROLE: Final[dict[str, str]] = {"cloudflare": "edge", "fastly": "edge", "nginx": "origin"}

SkipReason = Literal[
    "blank", "wrong_format", "malformed", "static_asset", "not_ai_bot", "no_content", "no_site_host"
]
SKIP_REASONS: Final[tuple[str, ...]] = (
    "blank",
    "wrong_format",
    "malformed",
    "static_asset",
    "not_ai_bot",
    "no_content",
    "no_site_host",
)


@dataclass(frozen=True, slots=True)
class Skip:
    """A line that yields no event, and why (``reason`` is a code, ``detail`` for humans)."""

    reason: SkipReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class BotMatch:
    """Who the request came from: CT 0.1 section 6.2 ``bot_name``/``bot_category``/``verified``."""

    bot_name: str | None  # None when only the CDN's category identified it
    bot_category: str  # training | inference | search
    verified: bool  # True only when the CDN said so (a verified-bot category was logged)


@dataclass(frozen=True, slots=True)
class Retrieval:
    """An accepted line: the document to publish, its Kafka key, and whether a CTID was dropped."""

    document: dict[str, Any]
    key: str  # content_telemetry_id when present, else content_url
    ctid_dropped: bool  # the line carried a Content-Telemetry-ID that is not a UUID


#: Path extensions of page furniture (skipped as ``static_asset``). Images are furniture here:
#: a crawler fetching a page's images is not retrieving the page's content. Documents (pdf),
#: feeds (xml, rss) and media (mp4, mp3, ...) are kept: they are content in their own right.
STATIC_EXTENSIONS: Final = frozenset(
    "css js mjs cjs map png jpg jpeg gif svg ico webp avif bmp tif tiff apng cur "  # noqa: SIM905
    "woff woff2 ttf eot otf wasm".split()
)
_MEDIA_TYPES: Final = {
    **dict.fromkeys("mp4 webm mov m4v mkv avi m3u8 mpd".split(), "video"),  # noqa: SIM905
    **dict.fromkeys("mp3 m4a aac ogg oga opus wav flac".split(), "audio"),  # noqa: SIM905
}

#: Native cache results -> CT 0.1 section 6.2 ``cache_status`` (keys lower-cased).
#: Cloudflare ``CacheCacheStatus``: hit/stale/updating/revalidated/stream_hit served from cache;
#: miss/expired/deferred fetched from origin; bypass/ignored skipped the cache on purpose;
#: dynamic/none/unknown were never cacheable. Fastly ``fastly_info.state``: HIT*, MISS*, PASS*
#: (prefixes, e.g. HIT-STALE, MISS-CLUSTER, PASS-WAIT), ERROR/SYNTH = generated at the edge.
CACHE_STATUS: Final[dict[str, str]] = {
    "hit": "hit",
    "stale": "hit",
    "updating": "hit",
    "revalidated": "hit",
    "stream_hit": "hit",
    "miss": "miss",
    "expired": "miss",
    "deferred": "miss",
    "bypass": "bypass",
    "ignored": "bypass",
    "pass": "bypass",
    "dynamic": "dynamic",
    "none": "dynamic",
    "unknown": "dynamic",
    "error": "dynamic",
    "synth": "dynamic",
}

#: Namespace of CDN/origin log event ids (UUIDv5, RFC 9562 section 5.5).
LOG_EVENT_NAMESPACE: Final = UUID("3c1f7a52-9e4d-5b08-a6c2-7d5e0f4b9a21")
_NS: Final = LOG_EVENT_NAMESPACE.bytes

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_UUID_RE: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HOST_RE: Final = re.compile(
    r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252}[A-Za-z0-9_])?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?"
)
_COUNTRY_RE: Final = re.compile(r"[A-Za-z]{2}")
#: Characters outside RFC 3986 path/query, and "%" not starting a valid percent-encoding.
_URI_UNSAFE: Final = re.compile(r"[^A-Za-z0-9\-._~!$&'()*+,;=:@/?%]|%(?![0-9A-Fa-f]{2})")
_INT64_MAX: Final = 2**63 - 1
_ASN_MAX: Final = 2**32 - 1
_NOT_A_COUNTRY: Final = frozenset({"XX", "T1"})  # Cloudflare: unknown, Tor


# --- helpers ---------------------------------------------------------------------------------
def valid_ctid(value: str | None) -> str | None:
    """A Content-Telemetry-ID as a lower-case UUID (CT 0.1 section 7.2), or None if not one."""
    if value and len(value) == 36 and _UUID_RE.fullmatch(value):
        return value.lower()
    return None


def valid_host(host: str) -> bool:
    """An RFC 3986 host[:port] (reg-name of letters, digits, ``-._``, or a bracketed IPv6)."""
    return bool(host) and _HOST_RE.fullmatch(host) is not None


def _epoch(value: int | float) -> datetime:
    """A Unix timestamp in s, ms, us or ns (told apart by magnitude) as a UTC datetime."""
    if isinstance(value, float):
        return _EPOCH + timedelta(microseconds=round(value * 1_000_000))
    if value >= 100_000_000_000_000_000:  # ns (>= 1973 in ns; 5138 AD in s)
        return _EPOCH + timedelta(microseconds=value // 1000)
    if value >= 100_000_000_000_000:
        return _EPOCH + timedelta(microseconds=value)
    if value >= 100_000_000_000:
        return _EPOCH + timedelta(milliseconds=value)
    return _EPOCH + timedelta(seconds=value)


def _iso(value: str) -> datetime | None:
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return dt.astimezone(UTC)


def _timestamp(value: Any) -> datetime | None:
    """RFC 3339 string, or a Unix epoch number (also as a numeric string)."""
    try:
        if type(value) is int or type(value) is float:
            return _epoch(value) if value >= 0 else None
        if type(value) is str:
            if value.isdigit():
                return _epoch(int(value))
            return _iso(value)
    except (OverflowError, ValueError):
        return None
    return None


def _int(value: Any) -> int | None:
    """A non-negative int64, also from a decimal string (Fastly format strings quote at will)."""
    if type(value) is int:
        return value if 0 <= value <= _INT64_MAX else None
    if type(value) is str and value.isdigit() and len(value) < 19:
        return int(value)
    if type(value) is float and value.is_integer() and 0 <= value <= _INT64_MAX:
        return int(value)
    return None


def _asn(value: Any) -> int | None:
    asn = _int(value)
    return asn if asn and asn <= _ASN_MAX else None  # 0 = unknown in Cloudflare logs


def _text(value: Any) -> str | None:
    """A non-empty string; "" and Fastly's "(null)" (unset header) mean absent."""
    if type(value) is str and value and value != "(null)" and value != "-":
        return value
    return None


def _path_of(target: str) -> str | None:
    """Origin-form path of a request target ("/a?b"), also from absolute-form; None if neither."""
    if target.startswith("/"):
        return target
    lower = target[:8].lower()
    if lower.startswith("http://") or lower.startswith("https://"):
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        return rest[slash:] if slash >= 0 else "/"
    return None


def _extension(path: str) -> str:
    """The lower-cased extension of the path's last segment ("" when it has none)."""
    end = len(path)
    for sep in "?#;":
        i = path.find(sep)
        if 0 <= i < end:
            end = i
    dot = path.rfind(".", 0, end)
    if dot < 0 or path.rfind("/", 0, end) > dot:
        return ""
    return path[dot + 1 : end].lower()


def _country(value: Any) -> str | None:
    if type(value) is str and len(value) == 2 and _COUNTRY_RE.fullmatch(value):
        upper = value.upper()
        return None if upper in _NOT_A_COUNTRY else upper
    return None


# --- cloudflare ------------------------------------------------------------------------------
def _decode_json(line: bytes | str) -> dict[str, Any] | Skip:
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError:
        first = line.lstrip()[:1]
        if first in (b"{", "{"):
            return Skip("malformed", "invalid JSON")
        return Skip("wrong_format", "not a JSON line")
    if type(rec) is not dict:
        return Skip("wrong_format", "not a JSON object")
    return rec


def _parse_cloudflare(line: bytes | str) -> EdgeObservation | Skip:
    rec = _decode_json(line)
    return rec if isinstance(rec, Skip) else _cloudflare(rec)


def _cloudflare(rec: dict[str, Any]) -> EdgeObservation | Skip:
    host = rec.get("ClientRequestHost")
    uri = rec.get("ClientRequestURI")
    if host is None and uri is None:
        return Skip("wrong_format", "no Cloudflare http_requests fields")
    if type(host) is not str or not valid_host(host):
        return Skip("malformed", "ClientRequestHost missing or not a host")
    path = _path_of(uri) if type(uri) is str else None
    if path is None:
        return Skip("malformed", "ClientRequestURI missing or not a path")
    ts = _timestamp(rec.get("EdgeStartTimestamp"))
    if ts is None:
        return Skip("malformed", "EdgeStartTimestamp missing or not a timestamp")
    status = rec.get("EdgeResponseStatus")
    if type(status) is not int or not 0 <= status <= 999:
        return Skip("malformed", "EdgeResponseStatus missing or not an HTTP status")
    nbytes = _int(rec.get("EdgeResponseBytes", 0))
    scheme = rec.get("ClientRequestScheme") or "https"
    if type(scheme) is not str or scheme.lower() not in ("http", "https"):
        return Skip("malformed", "ClientRequestScheme not http or https")
    method = rec.get("ClientRequestMethod") or "GET"
    ua = rec.get("ClientRequestUserAgent") or ""
    if type(method) is not str or type(ua) is not str:
        return Skip("malformed", "ClientRequestMethod or ClientRequestUserAgent not a string")
    headers = rec.get("RequestHeaders")
    ctid = None
    if type(headers) is dict and headers:
        ctid = headers.get("content-telemetry-id")
        if ctid is None:  # Logpush lower-cases header names; tolerate other spellings
            for k, v in headers.items():
                if type(k) is str and k.lower() == "content-telemetry-id":
                    ctid = v
                    break
    return EdgeObservation(
        timestamp=ts,
        host=host,
        path=path,
        method=method,
        status=status,
        response_bytes=nbytes if nbytes is not None and nbytes >= 0 else 0,
        user_agent=ua,
        client_ip=ip if type(ip := rec.get("ClientIP")) is str else "",
        scheme=scheme.lower(),
        content_telemetry_id=_text(ctid),
        cache_status=_text(rec.get("CacheCacheStatus")),
        verified_bot_category=_text(rec.get("VerifiedBotCategory")),
        asn=_asn(rec.get("ClientASN")),
        country=_country(rec.get("ClientCountry")),
        referer=_text(rec.get("ClientRequestReferer")),
    )


def _epoch_ns(ts: datetime) -> int:
    return ((ts - _EPOCH) // timedelta(microseconds=1)) * 1000


def _render_cloudflare(obs: EdgeObservation) -> str:
    rec: dict[str, Any] = {
        "ClientIP": obs.client_ip,
        "ClientRequestHost": obs.host,
        "ClientRequestMethod": obs.method,
        "ClientRequestURI": obs.path,
        "ClientRequestScheme": obs.scheme,
        "ClientRequestUserAgent": obs.user_agent,
        "ClientRequestReferer": obs.referer or "",
        "ClientASN": obs.asn or 0,
        "ClientCountry": (obs.country or "").lower(),
        "EdgeStartTimestamp": _epoch_ns(obs.timestamp),
        "EdgeResponseStatus": obs.status,
        "EdgeResponseBytes": obs.response_bytes,
        "CacheCacheStatus": obs.cache_status or "",
        "VerifiedBotCategory": obs.verified_bot_category or "",
    }
    if obs.content_telemetry_id is not None:
        rec["RequestHeaders"] = {"content-telemetry-id": obs.content_telemetry_id}
    return orjson.dumps(rec).decode()


# --- fastly ----------------------------------------------------------------------------------
def _parse_fastly(line: bytes | str) -> EdgeObservation | Skip:
    rec = _decode_json(line)
    return rec if isinstance(rec, Skip) else _fastly(rec)


def _fastly(rec: dict[str, Any]) -> EdgeObservation | Skip:
    host = rec.get("host")
    url = rec.get("url")
    if host is None and url is None:
        return Skip("wrong_format", "no Fastly host/url fields")
    if type(host) is not str or not valid_host(host):
        return Skip("malformed", "host missing or not a host")
    path = _path_of(url) if type(url) is str else None
    if path is None:
        return Skip("malformed", "url missing or not a path")
    ts = _timestamp(rec.get("timestamp"))
    if ts is None:
        return Skip("malformed", "timestamp missing or not a timestamp")
    status = _int(rec.get("status"))
    if status is None or not 0 <= status <= 999:
        return Skip("malformed", "status missing or not an HTTP status")
    nbytes = _int(rec.get("response_bytes"))
    scheme = _text(rec.get("scheme")) or "https"
    if scheme.lower() not in ("http", "https"):
        return Skip("malformed", "scheme not http or https")
    ua = rec.get("user_agent")
    method = _text(rec.get("method")) or "GET"
    ip = rec.get("client_ip")
    return EdgeObservation(
        timestamp=ts,
        host=host,
        path=path,
        method=method,
        status=status,
        response_bytes=nbytes if nbytes is not None and nbytes >= 0 else 0,
        user_agent=ua if type(ua) is str and ua != "(null)" else "",
        client_ip=ip if type(ip) is str else "",
        scheme=scheme.lower(),
        content_telemetry_id=_text(rec.get("content_telemetry_id")),
        cache_status=_text(rec.get("cache_status")),
        verified_bot_category=_text(rec.get("bot_category")),
        asn=_asn(rec.get("asn")),
        country=_country(rec.get("country_code")),
        referer=_text(rec.get("referer")),
    )


def _iso_z(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _render_fastly(obs: EdgeObservation) -> str:
    rec: dict[str, Any] = {
        "timestamp": _iso_z(obs.timestamp),
        "client_ip": obs.client_ip,
        "scheme": obs.scheme,
        "host": obs.host,
        "url": obs.path,
        "method": obs.method,
        "status": obs.status,
        "response_bytes": obs.response_bytes,
        "user_agent": obs.user_agent,
        "referer": obs.referer or "",
        "cache_status": obs.cache_status or "",
        "asn": obs.asn or 0,
        "country_code": obs.country or "",
        "bot_category": obs.verified_bot_category or "",
        "content_telemetry_id": obs.content_telemetry_id or "",
    }
    return orjson.dumps(rec).decode()


# --- nginx / apache combined -----------------------------------------------------------------
_Q = r'"([^"\\]*(?:\\.[^"\\]*)*)"'
_COMBINED: Final = re.compile(
    r"(\S+) \S+ \S+ \[([^\]]+)\] " + _Q + r" (\d{3}) (\d+|-) " + _Q + " " + _Q + r"(?: " + _Q + ")?"
)
_ESCAPE_B: Final = re.compile(rb"\\x([0-9A-Fa-f]{2})|\\(.)", re.DOTALL)
_NEEDS_ESCAPE: Final = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")
_MONTHS: Final = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}  # noqa: SIM905
_MONTH_NAMES: Final = {i: m for m, i in _MONTHS.items()}


def _unescape_repl(m: re.Match[bytes]) -> bytes:
    hexpair = m.group(1)
    return bytes((int(hexpair, 16),)) if hexpair is not None else m.group(2)


def _unescape(s: str) -> str:
    """Decode nginx ``\\xHH`` and Apache ``\\"``/``\\\\`` escapes of a quoted log field."""
    if "\\" not in s:
        return s
    return _ESCAPE_B.sub(_unescape_repl, s.encode()).decode("utf-8", "replace")


def _escape(s: str) -> str:
    """nginx ``escape=default``: ``"``, ``\\``, control and non-ASCII bytes as ``\\xHH``."""
    if _NEEDS_ESCAPE.search(s) is None:
        return s
    out = []
    for ch in s:
        if " " <= ch <= "~" and ch != '"' and ch != "\\":
            out.append(ch)
        else:
            out.extend(f"\\x{b:02X}" for b in ch.encode())
    return "".join(out)


@lru_cache(maxsize=4096)
def _time_local(s: str) -> datetime | None:
    """``10/Oct/2000:13:55:36 -0700`` (nginx $time_local, Apache %t) as UTC."""
    try:
        if len(s) != 26 or s[2] != "/" or s[6] != "/" or s[11] != ":" or s[20] != " ":
            return None
        off = int(s[22:24]) * 60 + int(s[24:26])
        if s[21] == "-":
            off = -off
        elif s[21] != "+":
            return None
        local = datetime(
            int(s[7:11]), _MONTHS[s[3:6]], int(s[0:2]), int(s[12:14]), int(s[15:17]), int(s[18:20])
        )
        return (local - timedelta(minutes=off)).replace(tzinfo=UTC)
    except (KeyError, ValueError, OverflowError):
        return None


def _parse_nginx(line: bytes | str, site_host: str, scheme: str) -> EdgeObservation | Skip:
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    m = _COMBINED.match(text)
    if m is None:
        return Skip("wrong_format", "not a combined log line")
    ip, tl, request, status, nbytes, referer, ua, ctid = m.groups()
    ts = _time_local(tl)
    if ts is None:
        return Skip("malformed", "bad [time_local]")
    request = _unescape(request)
    parts = request.split(" ")
    if len(parts) >= 3 and parts[-1].startswith("HTTP/"):
        target = " ".join(parts[1:-1])
    elif len(parts) == 2:
        target = parts[1]
    else:
        return Skip("malformed", "bad request line")
    path = _path_of(target)
    if path is None or not parts[0]:
        return Skip("malformed", "bad request target")
    ua = _unescape(ua)
    referer = _unescape(referer)
    ctid = _unescape(ctid) if ctid else None
    return EdgeObservation(
        timestamp=ts,
        host=site_host,
        path=path,
        method=parts[0],
        status=int(status),
        response_bytes=0 if nbytes == "-" else int(nbytes),
        user_agent="" if ua == "-" else ua,
        client_ip="" if ip == "-" else ip,
        scheme=scheme,
        content_telemetry_id=_text(ctid),
        referer=_text(referer),
    )


def _render_nginx(obs: EdgeObservation) -> str:
    t = obs.timestamp.astimezone(UTC)
    tl = f"{t.day:02d}/{_MONTH_NAMES[t.month]}/{t.year:04d}:{t.hour:02d}:{t.minute:02d}:{t.second:02d} +0000"
    ctid = obs.content_telemetry_id
    return (
        f"{obs.client_ip or '-'} - - [{tl}] "
        f'"{_escape(obs.method)} {_escape(obs.path)} HTTP/1.1" {obs.status} {obs.response_bytes} '
        f'"{_escape(obs.referer) if obs.referer else "-"}" "{_escape(obs.user_agent) or "-"}" '
        f'"{_escape(ctid) if ctid else "-"}"'
    )


# --- the public pure API ---------------------------------------------------------------------
def _json_format(rec: dict[str, Any]) -> str | None:
    if "ClientRequestHost" in rec or "ClientRequestURI" in rec or "EdgeStartTimestamp" in rec:
        return "cloudflare"
    if "url" in rec or "host" in rec:
        return "fastly"
    return None


def _parse_auto(line: bytes | str, site_host: str, scheme: str) -> tuple[str, EdgeObservation | Skip]:
    """Detect and parse in one pass: (format, result); format "" when none fits."""
    if line[:1] in (b"{", "{") or line.lstrip()[:1] in (b"{", "{"):
        rec = _decode_json(line)
        if isinstance(rec, Skip):
            return "", rec
        fmt = _json_format(rec)
        if fmt == "cloudflare":
            return fmt, _cloudflare(rec)
        if fmt == "fastly":
            return fmt, _fastly(rec)
        return "", Skip("wrong_format", "JSON without Cloudflare or Fastly fields")
    if not line.strip():
        return "", Skip("blank")
    parsed = _parse_nginx(line, site_host, scheme)
    if isinstance(parsed, Skip) and parsed.reason == "wrong_format":
        return "", Skip("wrong_format", "no known log format")
    return "nginx", parsed


def detect_format(line: bytes | str) -> str | None:
    """The format of one line: cloudflare | fastly | nginx, or None when none fits."""
    if line.lstrip()[:1] in (b"{", "{"):
        rec = _decode_json(line)
        return None if isinstance(rec, Skip) else _json_format(rec)
    text = line if isinstance(line, str) else line.decode("utf-8", "replace")
    return "nginx" if _COMBINED.match(text) else None


def parse_line(
    fmt: str, line: bytes | str, *, site_host: str = "", scheme: str = "https"
) -> EdgeObservation | Skip:
    """Parse one log line (structure only: ``blank``, ``wrong_format``, ``malformed`` skips).

    ``fmt``: cloudflare | fastly | nginx | auto. ``site_host``/``scheme``: the host and scheme of
    nginx lines (the combined format has none). Never raises.
    """
    if not line.strip():
        return Skip("blank")
    if fmt == "auto":
        return _parse_auto(line, site_host, scheme)[1]
    if fmt == "cloudflare":
        return _parse_cloudflare(line)
    if fmt == "fastly":
        return _parse_fastly(line)
    if fmt == "nginx":
        return _parse_nginx(line, site_host, scheme)
    return Skip("wrong_format", f"unknown format {fmt!r}")


def render_line(fmt: str, obs: EdgeObservation) -> str:
    """The log line (no newline) a CDN/origin of format ``fmt`` writes for ``obs``.

    The inverse of ``parse_line`` up to what a format can carry (nginx: no host, scheme,
    sub-second time, cache status, bot category, ASN or country).
    """
    if fmt == "cloudflare":
        return _render_cloudflare(obs)
    if fmt == "fastly":
        return _render_fastly(obs)
    if fmt == "nginx":
        return _render_nginx(obs)
    raise ValueError(f"unknown log format {fmt!r}; expected one of {', '.join(FORMATS)}")


@lru_cache(maxsize=65536)
def _match_ua(user_agent: str) -> BotSpec | None:
    # User agents repeat heavily in real logs: the regex runs once per distinct UA.
    return match_user_agent(user_agent)


def classify(obs: EdgeObservation) -> BotMatch | None:
    """The AI agent behind a request, or None for non-AI traffic.

    The CDN's verified-bot category decides the category when it is an AI one (CT 0.1 section
    6.2 table); otherwise the UA table (``producers.bots``) does. ``verified`` is true only when
    the CDN logged a verified-bot category (it verified the bot's identity).
    """
    spec = _match_ua(obs.user_agent) if obs.user_agent else None
    native = obs.verified_bot_category
    category = cdn_category(native)
    if category is not None:
        return BotMatch(spec.name if spec else None, category, True)
    if spec is not None:
        return BotMatch(spec.name, spec.category, bool(native))
    return None


def event_id(emitter: str, role: str, raw_line: bytes | str) -> str:
    """UUIDv5 (same bytes as ``uuid.uuid5``) over emitter, role and the line without its EOL."""
    raw = raw_line.encode() if isinstance(raw_line, str) else raw_line
    raw = raw.rstrip(b"\r\n")
    name = b"%s\x1f%s\x1f%s" % (emitter.encode(), role.encode(), raw)
    digest = bytearray(hashlib.sha1(_NS + name, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def content_url(obs: EdgeObservation) -> str:
    """scheme://host + path/query as requested, percent-encoding what RFC 3986 forbids."""
    path = obs.path
    if _URI_UNSAFE.search(path) is not None:
        path = _URI_UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), path)
    return f"{obs.scheme}://{obs.host}{path}"


def cache_status(native: str | None) -> str | None:
    """A CDN's native cache result as CT ``hit|miss|bypass|dynamic`` (None when unknown)."""
    if not native:
        return None
    key = native.lower()
    mapped = CACHE_STATUS.get(key)
    if mapped is None:  # Fastly states carry suffixes: HIT-STALE, MISS-CLUSTER, PASS-WAIT ...
        mapped = CACHE_STATUS.get(key.split("-", 1)[0])
    return mapped


def to_event_document(
    obs: EdgeObservation, match: BotMatch, *, emitter: str, role: str, raw_line: bytes | str
) -> dict[str, Any]:
    """The CT 0.1 standalone event document (section 7.1) for one AI-bot request.

    ``obs`` must come from ``parse_line`` (valid host and path). Never carries the client IP.
    """
    data: dict[str, Any] = {
        "user_agent": obs.user_agent,
        "bot_category": match.bot_category,
        "verified": match.verified,
        "response_status": obs.status,
        "response_bytes": obs.response_bytes,
    }
    if match.bot_name is not None:
        data["bot_name"] = match.bot_name
    cache = cache_status(obs.cache_status)
    if cache is not None:
        data["cache_status"] = cache
    if obs.asn is not None:
        data["asn"] = obs.asn
    if obs.country is not None:
        data["country"] = obs.country
    media = _MEDIA_TYPES.get(_extension(obs.path))
    if media is not None:
        data["media_type"] = media  # CT 0.1 section 6.1 (defaults to text when absent)
    event: dict[str, Any] = {
        "id": event_id(emitter, role, raw_line),
        "type": "content_retrieved",
        "timestamp": _iso_z(obs.timestamp),
        "source_role": role,
        "content_url": content_url(obs),
        "data": data,
    }
    ctid = valid_ctid(obs.content_telemetry_id)
    if ctid is not None:
        event["content_telemetry_id"] = ctid
    return {"document_type": "event", "schema_version": "0.1", "event": event}


#: Events per CT 0.1 event batch document (``batch_documents``); ~600 bytes each -> ~300 KB.
BATCH_EVENTS: Final = 500


def batch_documents(
    retrievals: Sequence[Retrieval], max_events: int = BATCH_EVENTS
) -> list[tuple[str | None, dict[str, Any]]]:
    """Retrievals -> (Kafka key, document) to publish.

    ``max_events`` > 1: CT 0.1 ``event_batch`` documents of up to that many events (section 7.1:
    "edge platforms aggregating detections across requests"; no session fields, so each event
    stands alone, as in its standalone document), key None (the events have different
    Content-Telemetry-IDs). ``max_events`` == 1: one standalone ``event`` document each, keyed by
    its content_telemetry_id, else content_url."""
    if max_events < 1:
        raise ValueError("max_events must be >= 1")
    if max_events == 1:
        return [(r.key, r.document) for r in retrievals]
    out: list[tuple[str | None, dict[str, Any]]] = []
    for i in range(0, len(retrievals), max_events):
        events = [r.document["event"] for r in retrievals[i : i + max_events]]
        out.append((None, {"document_type": "event_batch", "schema_version": "0.1", "events": events}))
    return out


def _delivered_content(obs: EdgeObservation) -> bool:
    status = obs.status
    return (200 <= status < 300 or status == 304) and obs.method == "GET"


def process_line(
    fmt: str,
    raw_line: bytes | str,
    *,
    emitter: str,
    role: str | None = None,
    site_host: str = "",
    scheme: str = "https",
) -> Retrieval | Skip:
    """One log line -> the document to publish, or why not (the whole pure pipeline).

    ``fmt``: cloudflare | fastly | nginx | auto. ``role``: override of the format's default
    source role. Never raises.
    """
    if fmt == "auto":
        fmt, obs = _parse_auto(raw_line, site_host or "-", scheme)
    else:
        obs = parse_line(fmt, raw_line, site_host=site_host or "-", scheme=scheme)
    if isinstance(obs, Skip):
        return obs
    if fmt == "nginx" and not site_host:
        return Skip("no_site_host", "nginx line without --site-host")
    if _extension(obs.path) in STATIC_EXTENSIONS:
        return Skip("static_asset")
    match = classify(obs)
    if match is None:
        return Skip("not_ai_bot")
    if not _delivered_content(obs):
        return Skip("no_content", f"{obs.method} {obs.status}")
    doc = to_event_document(obs, match, emitter=emitter, role=role or DEFAULT_ROLE[fmt], raw_line=raw_line)
    event = doc["event"]
    ctid = event.get("content_telemetry_id")
    return Retrieval(
        document=doc,
        key=ctid or event["content_url"],
        ctid_dropped=ctid is None and obs.content_telemetry_id is not None,
    )
