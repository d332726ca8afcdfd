"""Aggregate: the counting rules of ``schemas.funnel`` as pure functions over compact state.

Input: a session's compact events (``SEvent``, built by ``compact_event`` from canonical event
JSON) or a retrieval's compact observations (``Obs``). Output: ``dict[FunnelKey, FunnelCounts]``,
the contributions of that session / retrieval group to the hourly funnel rows; ``diff`` turns new
totals and previously emitted totals into the correction to emit (sum over revisions = truth).

Nothing here does I/O; ``processors.sessionize`` and ``processors.correlate`` call these when a
session / correlation group closes, and ``FunnelDelta.build`` makes wire records of the result.
Every rule quotes its source in ``schemas.funnel``'s docstring (CT 4.3, 4.4, 6.4-6.7, 7.2, 10.1,
OA 0.4 3.3).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson

from schemas.funnel import (
    FunnelCounts,
    FunnelKey,
    citation_position_bucket,
    citation_type_bucket,
    content_key,
    display_bucket,
    engagement_bucket,
    role_of,
)

Rows = dict[FunnelKey, FunnelCounts]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HOUR_US = 3_600_000_000
_hours: dict[int, datetime] = {}


def ts_us(value: str | datetime) -> int:
    """An RFC 3339 timestamp (as canonical JSON carries it) -> integer epoch microseconds."""
    dt = datetime.fromisoformat(value) if isinstance(value, str) else value
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def hour_from_us(us: int) -> datetime:
    """``schemas.funnel.hour_of`` of an epoch-microsecond timestamp (memoised per hour)."""
    h = us // _HOUR_US
    got = _hours.get(h)
    if got is None:
        got = _hours[h] = _EPOCH + timedelta(hours=h)
    return got


class SEvent(NamedTuple):
    """One session event, reduced to what counting needs (stored as a JSON list in state)."""

    id: str
    type: str  # schemas.canonical.EventType value
    ts: int  # epoch microseconds
    owner_domain: str
    content_key: str
    canonical_url: str | None
    content_id: str | None
    agent_id: str | None  # the envelope's value; the session's is the fallback
    content_scope: str | None
    source_role: str
    scope: str | None = None
    cached: bool | None = None
    tokens: int | None = None
    citation_type: str | None = None
    position: str | None = None
    display_type: str | None = None
    engagement_type: str | None = None
    currency: str | None = None
    order_value: int | None = None


def compact_event(ev: Mapping[str, Any]) -> SEvent:
    """Canonical event JSON (``schemas.records.encode_event``, decoded) -> ``SEvent``."""
    etype = ev["event_type"]
    currency: str | None = None
    amount: int | None = None
    if etype == "commerce.checkout_completed":
        # OA 0.4 section 3.3: data.order_value_amount (minor units, 3.7) under data.currency.
        try:
            data = orjson.loads(ev.get("data_json") or "{}")
        except orjson.JSONDecodeError:
            data = {}
        if type(data) is dict:
            cur = data.get("currency")
            amt = data.get("order_value_amount")
            currency = cur if type(cur) is str else None
            if type(amt) is int or (type(amt) is float and amt.is_integer()):
                amount = int(amt)
    url = ev.get("canonical_url")
    cid = ev.get("content_id")
    return SEvent(
        id=ev["event_id"],
        type=etype,
        ts=ts_us(ev["timestamp"]),
        owner_domain=ev.get("owner_domain") or "",
        content_key=content_key(cid, url, ev.get("product_id")),
        canonical_url=url,
        content_id=cid,
        agent_id=ev.get("agent_id"),
        content_scope=ev.get("content_scope"),
        source_role=role_of(ev.get("source_role")),
        scope=ev.get("scope"),
        cached=ev.get("cached"),
        tokens=ev.get("tokens_ingested"),
        citation_type=ev.get("citation_type"),
        position=ev.get("position"),
        display_type=ev.get("display_type"),
        engagement_type=ev.get("engagement_type"),
        currency=currency,
        order_value=amount,
    )


def _same(a: SEvent, b: SEvent) -> bool:
    """CT 4.3 departures: "the same content" = equal content key, canonical URL or content_id."""
    return bool(
        (a.content_key and a.content_key == b.content_key)
        or (a.canonical_url and a.canonical_url == b.canonical_url)
        or (a.content_id and a.content_id == b.content_id)
    )


def _row(rows: Rows, ev: SEvent, agent_id: str, content_scope: str) -> FunnelCounts:
    key = FunnelKey(
        hour_from_us(ev.ts),
        ev.owner_domain,
        ev.content_key,
        ev.agent_id or agent_id,
        ev.content_scope or content_scope,
        ev.source_role,
    )
    row = rows.get(key)
    if row is None:
        row = rows[key] = FunnelCounts()
    return row


def session_contributions(
    events: Iterable[SEvent], *, agent_id: str = "", content_scope: str = "", grounding_stage: bool = True
) -> Rows:
    """Every non-``retrieved`` measure of one (closed) session, per funnel row.

    ``agent_id`` / ``content_scope`` are the session's values, used where an event's envelope
    did not carry its own. ``retrieved`` events are ignored here (``retrieval_contributions``).
    ``grounding_stage`` is False for a session whose format has no grounding event (OA 0.4
    section 3.3): its citations and displays are not judged "without grounded" (schemas.funnel).
    """
    evs = list(events)
    turn_starts = [e.ts for e in evs if e.type == "turn_started"]
    grounded = [e for e in evs if e.type == "grounded"]
    cited = [e for e in evs if e.type == "cited"]
    rows: Rows = {}
    for e in evs:
        t = e.type
        if t == "grounded":
            row = _row(rows, e, agent_id, content_scope)
            row.add("grounded")
            row.add("grounded_cached" if e.cached else "grounded_live")  # CT 6.4 Caching
            row.add("tokens_ingested", e.tokens or 0)
            if e.scope == "session":  # CT 6.4 Grounding scope, 10.1 per-turn-influenced
                row.add("turns_influenced", sum(1 for ts in turn_starts if ts >= e.ts))
            else:
                row.add("turns_influenced", 1)
        elif t == "cited":
            row = _row(rows, e, agent_id, content_scope)
            row.add("cited")
            row.add(citation_type_bucket(e.citation_type))  # CT 6.5
            row.add(citation_position_bucket(e.position))
            if grounding_stage and not any(_same(e, g) for g in grounded):  # CT 4.3: lower confidence
                row.add("cited_without_grounded")
        elif t == "displayed":
            row = _row(rows, e, agent_id, content_scope)
            row.add("displayed")
            row.add(display_bucket(e.display_type))  # CT 6.6
            if not any(_same(e, c) for c in cited):
                row.add("displayed_without_cited")
            if grounding_stage and not any(_same(e, g) for g in grounded):
                row.add("displayed_without_grounded")
        elif t == "engaged":
            row = _row(rows, e, agent_id, content_scope)
            row.add("engaged")
            row.add(engagement_bucket(e.engagement_type))  # CT 6.7
        elif t == "commerce.checkout_completed":  # OA 0.4 section 3.3
            row = _row(rows, e, agent_id, content_scope)
            row.add("checkouts")
            if e.currency is not None and e.order_value is not None:
                row.add_value(e.currency, e.order_value)
    return {k: v for k, v in rows.items() if not v.is_zero()}


class SessionSummary(NamedTuple):
    """Per-session stage counts for ``SessionRecord``."""

    turns: int
    grounded: int
    cited: int
    displayed: int
    engaged: int
    cited_without_grounded: int
    displayed_without_cited: int
    displayed_without_grounded: int


def session_summary(events: Iterable[SEvent], rows: Mapping[FunnelKey, FunnelCounts]) -> SessionSummary:
    evs = list(events)

    def total(m: str) -> int:
        return sum(c.measures.get(m, 0) for c in rows.values())

    return SessionSummary(
        turns=sum(1 for e in evs if e.type == "turn_started"),
        grounded=total("grounded"),
        cited=total("cited"),
        displayed=total("displayed"),
        engaged=total("engaged"),
        cited_without_grounded=total("cited_without_grounded"),
        displayed_without_cited=total("displayed_without_cited"),
        displayed_without_grounded=total("displayed_without_grounded"),
    )


# --- retrievals (correlate) -------------------------------------------------------------------


class Obs(NamedTuple):
    """One observer's ``retrieved`` event, reduced (stored as a JSON list in correlate state)."""

    id: str
    source_role: str  # role_of(...) already applied
    emitter: str
    ts: int  # epoch microseconds
    canonical_url: str | None
    content_id: str | None
    session_id: str | None
    agent_id: str | None
    content_scope: str | None
    owner_domain: str | None
    content_url: str | None
    arrival: float  # processing time it reached correlate (epoch seconds)


def compact_observation(ev: Mapping[str, Any], arrival: float) -> Obs:
    """Canonical ``retrieved`` event JSON -> ``Obs``."""
    return Obs(
        id=ev["event_id"],
        source_role=role_of(ev.get("source_role")),
        emitter=ev.get("emitter") or "",
        ts=ts_us(ev["timestamp"]),
        canonical_url=ev.get("canonical_url"),
        content_id=ev.get("content_id"),
        session_id=ev.get("session_id"),
        agent_id=ev.get("agent_id"),
        content_scope=ev.get("content_scope"),
        owner_domain=ev.get("owner_domain"),
        content_url=ev.get("content_url"),
        arrival=arrival,
    )


def split_retrievals(observations: Sequence[Obs]) -> list[list[Obs]]:
    """One Content-Telemetry-ID's observations -> retrievals (CT 7.2, 4.5).

    Sub-grouped by canonical URL (an absent URL is a sub-group of its own), sub-groups merged
    when they share a content_id (redirects change the URL, not the content_id). Groups come
    back in first-observation order, observations in arrival order.
    """
    groups: dict[str | None, int] = {}
    parent: list[int] = []
    members: list[int] = []
    for ob in observations:
        g = groups.get(ob.canonical_url)
        if g is None:
            g = groups[ob.canonical_url] = len(parent)
            parent.append(g)
        members.append(g)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    by_cid: dict[str, int] = {}
    for ob, g in zip(observations, members, strict=True):
        if ob.content_id:
            other = by_cid.setdefault(ob.content_id, g)
            ra, rb = find(other), find(g)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    out: dict[int, list[Obs]] = {}
    for ob, g in zip(observations, members, strict=True):
        out.setdefault(find(g), []).append(ob)
    return [out[r] for r in sorted(out)]


def retrieval_status(group: Sequence[Obs], has_id: bool) -> str:
    """CT 4.4 / 7.2: >= 2 observations corroborated, one uncorroborated, no id standalone."""
    if not has_id:
        return "standalone"
    return "corroborated" if len(group) >= 2 else "uncorroborated"


def obs_key(ob: Obs) -> FunnelKey:
    """An observation's own row: ITS hour, owner domain, content key, agent and role."""
    return FunnelKey(
        hour_from_us(ob.ts),
        ob.owner_domain or "",
        content_key(ob.content_id, ob.canonical_url),
        ob.agent_id or "",
        ob.content_scope or "",
        ob.source_role,
    )


def retrieval_contributions(groups: Iterable[tuple[str, Sequence[Obs]]]) -> Rows:
    """(status, observations) per retrieval -> ``retrieved`` + one status measure per observation."""
    rows: Rows = {}
    for status, group in groups:
        measure = f"retrieved_{status}"
        for ob in group:
            key = obs_key(ob)
            row = rows.get(key)
            if row is None:
                row = rows[key] = FunnelCounts()
            row.add("retrieved")
            row.add(measure)
    return rows


# --- corrections --------------------------------------------------------------------------------


def diff(new: Mapping[FunnelKey, FunnelCounts], old: Mapping[FunnelKey, FunnelCounts]) -> Rows:
    """``new - old`` per row, zero rows dropped: the correction a later revision emits."""
    out: Rows = {}
    for key in set(new) | set(old):
        d = FunnelCounts()
        n = new.get(key)
        o = old.get(key)
        if n is not None:
            d.merge(n)
        if o is not None:
            for m, v in o.measures.items():
                d.add(m, -v)
            for c, v in o.conversion_value.items():
                d.add_value(c, -v)
        d.measures = {m: v for m, v in d.measures.items() if v}
        d.conversion_value = {c: v for c, v in d.conversion_value.items() if v}
        if not d.is_zero():
            out[key] = d
    return out


def rows_to_json(rows: Mapping[FunnelKey, FunnelCounts]) -> list[list[Any]]:
    """Rows -> JSON-able lists (hour as epoch seconds) for state stores."""
    return [
        [
            int((k.hour - _EPOCH).total_seconds()),
            k.owner_domain,
            k.content_key,
            k.agent_id,
            k.content_scope,
            k.source_role,
            c.measures,
            c.conversion_value,
        ]
        for k, c in rows.items()
    ]


def rows_from_json(data: Iterable[Sequence[Any]]) -> Rows:
    out: Rows = {}
    for h, od, ck, ag, cs, role, measures, values in data:
        key = FunnelKey(_EPOCH + timedelta(seconds=h), od, ck, ag, cs, role)
        out[key] = FunnelCounts(dict(measures), dict(values))
    return out
