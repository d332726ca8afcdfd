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

import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson

from schemas.codec import dumps
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


#: the epoch-microsecond range of datetime (years 1 to 9999): what can turn back into one
MIN_US = ts_us(datetime.min.replace(tzinfo=UTC))
MAX_US = ts_us(datetime.max.replace(tzinfo=UTC))
_minute_text: dict[int, str] = {}
_TWO_DIGITS: tuple[str, ...] = tuple(f"{i:02d}" for i in range(60))


def us_text(us: int) -> str:
    """``from_us(us)`` as ``schemas.codec.dumps`` writes it ("YYYY-MM-DDTHH:MM:SS[.ffffff]Z"),
    without building a datetime per timestamp (a close's largest cost): the minute's text is
    memoised (bounded), seconds and microseconds are formatted. Tests hold it equal to dumps."""
    minute, rest = divmod(us, 60_000_000)
    prefix = _minute_text.get(minute)
    if prefix is None:
        if len(_minute_text) >= 65_536:
            _minute_text.clear()
        prefix = _minute_text[minute] = (_EPOCH + timedelta(minutes=minute)).isoformat()[:17]
    sec, micro = divmod(rest, 1_000_000)
    # concatenation, not an f-string: format specs cost a PyObject_Format call each when compiled
    if micro:
        return prefix + _TWO_DIGITS[sec] + "." + str(micro + 1_000_000)[1:] + "Z"
    return prefix + _TWO_DIGITS[sec] + "Z"


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


class _Contents:
    """The content a set of session events refers to. ``e in contents``: one of them is "the same
    content" as ``e`` (CT 4.3 departures: equal content key, canonical URL or content_id), in
    O(1) instead of a scan per event (sessions run to thousands of events)."""

    __slots__ = ("cids", "keys", "urls")

    def __init__(self, events: Iterable[SEvent]) -> None:
        self.keys: set[str] = set()
        self.urls: set[str] = set()
        self.cids: set[str] = set()
        for e in events:
            if e.content_key:
                self.keys.add(e.content_key)
            if e.canonical_url:
                self.urls.add(e.canonical_url)
            if e.content_id:
                self.cids.add(e.content_id)

    def __contains__(self, e: SEvent) -> bool:
        return bool(
            (e.content_key and e.content_key in self.keys)
            or (e.canonical_url and e.canonical_url in self.urls)
            or (e.content_id and e.content_id in self.cids)
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
    events: Iterable[SEvent],
    *,
    agent_id: str = "",
    content_scope: str = "",
    grounding_stage: bool = True,
    destination: bool = False,
) -> Rows:
    """Every non-``retrieved`` measure of one (closed) session, per funnel row.

    ``agent_id`` / ``content_scope`` are the session's values, used where an event's envelope
    did not carry its own. ``retrieved`` events are ignored here (``retrieval_contributions``).
    ``grounding_stage`` is False for a session whose format has no grounding event (OA 0.4
    section 3.3): its citations and displays are not judged "without grounded" (schemas.funnel).
    ``destination`` is True for a click-token fragment (envelopes keyed by ``ctx_token``, no
    ``session_id``: CT 0.1 section 7.1): its engagements count ``engaged_destination`` only.
    """
    evs = list(events)
    turn_starts = sorted(e.ts for e in evs if e.type == "turn_started")
    grounded = _Contents(e for e in evs if e.type == "grounded")
    cited = _Contents(e for e in evs if e.type == "cited")
    rows: Rows = {}
    for e in evs:
        t = e.type
        if t == "grounded":
            row = _row(rows, e, agent_id, content_scope)
            row.add("grounded")
            row.add("grounded_cached" if e.cached else "grounded_live")  # CT 6.4 Caching
            row.add("tokens_ingested", e.tokens or 0)
            if e.scope == "session":  # CT 6.4 Grounding scope, 10.1 per-turn-influenced
                row.add("turns_influenced", len(turn_starts) - bisect_left(turn_starts, e.ts))
            else:
                row.add("turns_influenced", 1)
        elif t == "cited":
            row = _row(rows, e, agent_id, content_scope)
            row.add("cited")
            row.add(citation_type_bucket(e.citation_type))  # CT 6.5
            row.add(citation_position_bucket(e.position))
            if grounding_stage and e not in grounded:  # CT 4.3: lower confidence
                row.add("cited_without_grounded")
        elif t == "displayed":
            row = _row(rows, e, agent_id, content_scope)
            row.add("displayed")
            row.add(display_bucket(e.display_type))  # CT 6.6
            if e not in cited:
                row.add("displayed_without_cited")
            if grounding_stage and e not in grounded:
                row.add("displayed_without_grounded")
        elif t == "engaged":
            row = _row(rows, e, agent_id, content_scope)
            if destination:  # CT 0.1 4 stage 5, 7.1: corroborates a click the agent reports
                row.add("engaged_destination")
            else:
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


_tuple_new = tuple.__new__


def obs_of(values: Iterable[Any]) -> Obs:
    """An ``Obs`` of its field values in order (a stored state's list, a record's fields):
    ``tuple.__new__``, not the named tuple's generated ``__new__`` / ``_make`` (Python functions
    even in the native build). The caller supplies all fields."""
    ob: Obs = _tuple_new(Obs, values)
    return ob


def compact_observation(ev: Mapping[str, Any], arrival: float) -> Obs:
    """Canonical ``retrieved`` event JSON -> ``Obs``."""
    get = ev.get
    return Obs(
        ev["event_id"],
        role_of(get("source_role")),
        get("emitter") or "",
        ts_us(ev["timestamp"]),
        get("canonical_url"),
        get("content_id"),
        get("session_id"),
        get("agent_id"),
        get("content_scope"),
        get("owner_domain"),
        get("content_url"),
        arrival,
    )


def split_retrievals(observations: Sequence[Obs]) -> list[list[Obs]]:
    """One Content-Telemetry-ID's observations -> retrievals (CT 7.2, 4.5).

    Sub-grouped by canonical URL (an absent URL is a sub-group of its own), sub-groups merged
    when they share a content_id (redirects change the URL, not the content_id). Groups come
    back in first-observation order, observations in arrival order.
    """
    if len(observations) == 1:
        return [list(observations)]
    if len(observations) == 2:  # most groups (an agent and one edge/origin): the same answer
        a, b = observations
        if a.canonical_url == b.canonical_url or (a.content_id and a.content_id == b.content_id):
            return [[a, b]]
        return [[a], [b]]
    return _split(observations)


def _split(observations: Sequence[Obs]) -> list[list[Obs]]:
    """``split_retrievals`` of any number of observations (union-find over URL sub-groups)."""
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
    return plain_rows_json(plain_rows(rows))


def rows_from_json(data: Iterable[Sequence[Any]]) -> Rows:
    out: Rows = {}
    for h, od, ck, ag, cs, role, measures, values in data:
        key = FunnelKey(_EPOCH + timedelta(seconds=h), od, ck, ag, cs, role)
        out[key] = FunnelCounts(dict(measures), dict(values))
    return out


# --- wire deltas ----------------------------------------------------------------------------------
# Closes emit their rows as FunnelDelta JSON built from plain dicts: the same bytes as
# ``schemas.records.encode(FunnelDelta.build(key, counts, scope=scope))`` (tests hold them equal)
# without building pydantic models, ~2/3 of a correlation group's close.

HOUR_US = _HOUR_US
#: a row key on plain values: (hour index since the epoch, owner domain, content key, agent_id,
#: content_scope, source_role) - ordered as ``FunnelKey``
RowKey = tuple[int, str, str, str, str, str]
#: rows on plain values: key -> (measures, conversion values)
PlainRows = dict[RowKey, tuple[dict[str, int], dict[str, int]]]
_hour_text: dict[int, tuple[str, str]] = {}


def _hour_strings(h: int) -> tuple[str, str]:
    """Hour index -> (its JSON text, its ``isoformat`` as ``contribution_id`` hashes it)."""
    got = _hour_text.get(h)
    if got is None:
        dt = hour_from_us(h * _HOUR_US)
        got = _hour_text[h] = (dumps(dt)[1:-1].decode(), dt.isoformat())
    return got


def plain_rows(rows: Mapping[FunnelKey, FunnelCounts]) -> PlainRows:
    return {
        (
            ts_us(k.hour) // _HOUR_US,
            k.owner_domain,
            k.content_key,
            k.agent_id,
            k.content_scope,
            k.source_role,
        ): (
            c.measures,
            c.conversion_value,
        )
        for k, c in rows.items()
    }


def plain_rows_json(rows: PlainRows) -> list[list[Any]]:
    """``rows_to_json`` of plain rows (what a state stores as emitted)."""
    return [[k[0] * 3600, k[1], k[2], k[3], k[4], k[5], m, v] for k, (m, v) in rows.items()]


def _wire_delta(
    key: RowKey, measures: dict[str, int], values: dict[str, int], scope: str
) -> tuple[bytes, bytes]:
    hour_json, hour_iso = _hour_strings(key[0])
    # schemas.records.contribution_id(scope, key)
    cid = hashlib.sha256("\x1f".join((scope, hour_iso, *key[1:])).encode()).hexdigest()[:32]
    delta = {  # FunnelDelta's fields, in order
        "contribution_id": cid,
        "hour": hour_json,
        "owner_domain": key[1],
        "content_key": key[2],
        "agent_id": key[3],
        "content_scope": key[4],
        "source_role": key[5],
        "measures": measures,
        "conversion_value": values,
        "origin": scope,
    }
    return cid.encode(), dumps(delta)


def wire_deltas(new: PlainRows, emitted: Iterable[Sequence[Any]], scope: str) -> list[tuple[bytes, bytes]]:
    """``diff(new, rows_from_json(emitted))`` sorted by row key, each as (contribution id, JSON)
    of ``FunnelDelta.build(key, counts, scope=scope)``: the correction a revision emits."""
    if not emitted:  # a first revision: nothing to take back (most closes)
        first: list[tuple[bytes, bytes]] = []
        for key in sorted(new):  # (explicit loops: generator expressions are slow when compiled)
            row = new[key]
            measures = {m: n for m, n in row[0].items() if n}
            values = {c: n for c, n in row[1].items() if n}
            if measures or values:
                first.append(_wire_delta(key, measures, values, scope))
        return first
    old: PlainRows = {(e[0] // 3600, e[1], e[2], e[3], e[4], e[5]): (e[6], e[7]) for e in emitted}
    out: list[tuple[bytes, bytes]] = []
    for key in sorted(new.keys() | old.keys()):
        got = new.get(key)
        measures = dict(got[0]) if got is not None else {}
        values = dict(got[1]) if got is not None else {}
        before = old.get(key)
        if before is not None:
            for m, n in before[0].items():
                if n:
                    measures[m] = measures.get(m, 0) - n
            for c, n in before[1].items():
                values[c] = values.get(c, 0) - n
        measures = {m: n for m, n in measures.items() if n}
        values = {c: n for c, n in values.items() if n}
        if measures or values:
            out.append(_wire_delta(key, measures, values, scope))
    return out
