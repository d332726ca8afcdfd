"""CDN and origin access logs -> CT 0.1 ``content_retrieved`` events (edge/origin observers).

Formats: Cloudflare Logpush ``http_requests`` JSON lines, Fastly JSON logging, nginx/Apache
combined log with an optional trailing Content-Telemetry-ID field.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


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
