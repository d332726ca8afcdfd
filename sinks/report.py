"""The funnel report: ``funnel_hourly`` totals per owner domain and content key, as a JSON-able dict.

Input: a ClickHouse client (embedded or server), optional owner domain and time bounds. Output:
the report below. Counting semantics are those of ``schemas.funnel.totals`` (the one definition):
rows summed per (owner_domain, content_key), all-zero rows dropped, groups sorted by owner then
content key (Python string order), ``conversion_value`` without zero currencies, sorted.

Public contract (``ctpipe report --format json``; the README copies it)::

    {
      "generated_at": "2026-01-02T03:04:05Z",          # UTC, ISO 8601
      "filters": {"owner": "example.com" | null,      # owner domain (lower-cased) or all
                  "since": "2026-01-01T00:00:00Z" | null,   # row hour >= since (inclusive)
                  "until": "2026-01-02T00:00:00Z" | null},  # row hour <  until (exclusive)
      "totals": {<measure>: int, ..., "conversion_value": {"USD": 1234}},  # over every row shown
      "owners": [
        {"owner_domain": "example.com",
         "totals": {<measure>: int, ..., "conversion_value": {...}},       # over its content
         "content": [
           {"content_key": "https://example.com/a",
            <measure>: int, ...,                       # every name of schemas.funnel.MEASURES
            "conversion_value": {"EUR": 990}}          # currency -> minor units (OA 0.4 3.7)
         ]}
      ]
    }

Every measure of ``schemas.funnel.MEASURES`` is present (0 when nothing counted) in each
``content`` entry and each ``totals``. Bounds compare with the row's UTC hour: a bare date
``until`` (``2026-01-31``) includes that whole day; ``since``/``until`` without a zone are UTC.
Owner and content key are the empty string where unknown (``schemas.funnel``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client

from schemas.funnel import MEASURES, FunnelCounts
from sinks.rows import FUNNEL_HOURLY


class ReportError(ValueError):
    """A report argument is unusable (one line, for the user)."""


def parse_bound(value: str | datetime | date | None, *, end: bool = False) -> datetime | None:
    """An ISO date or datetime -> aware UTC datetime; a bare date as ``until`` means its end."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime.combine(value + timedelta(days=1) if end else value, time(), UTC)
    else:
        text = value.strip()
        try:
            if len(text) == 10:
                day = date.fromisoformat(text)
                parsed = datetime.combine(day + timedelta(days=1) if end else day, time(), UTC)
            else:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ReportError(f"not an ISO date or datetime: {value!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z") if ts is not None else None


def query_rows(
    client: Client, *, owner: str | None, since: datetime | None, until: datetime | None
) -> list[tuple[str, str, FunnelCounts]]:
    """(owner_domain, content_key, counts) per group, summed in ClickHouse."""
    where = []
    params: dict[str, Any] = {}
    if owner is not None:
        where.append("owner_domain = {owner:String}")
        params["owner"] = owner
    # DateTime('UTC') comparisons through epoch seconds: no client/server time zone involved.
    if since is not None:
        where.append("hour >= toDateTime({since:Int64}, 'UTC')")
        params["since"] = int(since.timestamp())
    if until is not None:
        where.append("hour < toDateTime({until:Int64}, 'UTC')")
        params["until"] = int(until.timestamp())
    sums = ", ".join(f"sum({m})" for m in MEASURES)
    sql = (
        f"SELECT owner_domain, content_key, {sums}, sumMap(conversion_value) FROM {FUNNEL_HOURLY.name} "
        f"{'WHERE ' + ' AND '.join(where) if where else ''} GROUP BY owner_domain, content_key"
    )
    out = []
    for row in client.query(sql, parameters=params).result_rows:
        counts = FunnelCounts()
        for m, v in zip(MEASURES, row[2 : 2 + len(MEASURES)], strict=True):
            counts.add(m, int(v))
        for currency, v in (row[-1] or {}).items():
            if v:
                counts.add_value(str(currency), int(v))
        out.append((str(row[0]), str(row[1]), counts))
    return out


def shape(
    rows: list[tuple[str, str, FunnelCounts]],
    *,
    owner: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    generated_at: datetime | None = None,
) -> dict[str, Any]:
    """Grouped counts -> the report dict (pure; the contract in the module docstring)."""
    by_key: dict[tuple[str, str], FunnelCounts] = {}
    for o, c, counts in rows:
        by_key.setdefault((o, c), FunnelCounts()).merge(counts)
    grand = FunnelCounts()
    owners: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    owner_counts = FunnelCounts()
    for (o, c), counts in sorted(by_key.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        if counts.is_zero():
            continue
        if current is None or current["owner_domain"] != o:
            if current is not None:
                current["totals"] = owner_counts.as_dict()
            owner_counts = FunnelCounts()
            current = {"owner_domain": o, "totals": {}, "content": []}
            owners.append(current)
        current["content"].append({"content_key": c, **counts.as_dict()})
        owner_counts.merge(counts)
        grand.merge(counts)
    if current is not None:
        current["totals"] = owner_counts.as_dict()
    return {
        "generated_at": _iso(generated_at or datetime.now(UTC)),
        "filters": {"owner": owner, "since": _iso(since), "until": _iso(until)},
        "totals": grand.as_dict(),
        "owners": owners,
    }


def funnel_report(
    client: Client,
    *,
    owner: str | None = None,
    since: str | datetime | date | None = None,
    until: str | datetime | date | None = None,
) -> dict[str, Any]:
    """The funnel report (module docstring) from ``funnel_hourly`` on ``client``."""
    owner_domain = owner.strip().lower().rstrip(".") if owner else None
    lo = parse_bound(since)
    hi = parse_bound(until, end=True)
    if lo is not None and hi is not None and hi <= lo:
        raise ReportError(f"--until ({_iso(hi)}) must be after --since ({_iso(lo)})")
    rows = query_rows(client, owner=owner_domain, since=lo, until=hi)
    return shape(rows, owner=owner_domain, since=lo, until=hi)


def as_totals(report: dict[str, Any]) -> dict[tuple[object, ...], dict[str, object]]:
    """The report's content rows in ``schemas.funnel.totals`` form, for comparisons."""
    out: dict[tuple[object, ...], dict[str, object]] = {}
    for o in report["owners"]:
        for c in o["content"]:
            out[(o["owner_domain"], c["content_key"])] = {k: v for k, v in c.items() if k != "content_key"}
    return out
