"""Ground truth of a simulated workload: ``schemas.funnel`` rows built from the simulator's state.

Input: what the simulator knows it did, as it does it: each agent session's events (``SimEvent``,
with the identifiers the simulator chose to emit), each retrieval's observers (``Observation``:
what an edge/origin observer recorded and whether the log ingester will count it). Output: the
expected funnel: ``FunnelKey -> FunnelCounts`` plus per (owner_domain, content_key) totals, and the
``expected_funnel.json`` document. Nothing here reads emitted files.

The rules are ``schemas.funnel``'s docstring, applied to the simulator's records:

* retrieved per observation in its observer's role row; corroboration per Content-Telemetry-ID:
  observations sub-grouped by canonical URL, sub-groups merged when they share a content_id
  (CT 4.5/7.2), a group of >= 2 is corroborated, a single one uncorroborated, no id standalone;
* grounded / cached / live / tokens, turns_influenced (session scope: the session's turn_started
  at or after the grounding), citation / position / display / engagement buckets;
* departures per session, "same content" = equal content key, canonical URL or content_id;
* checkouts and conversion value per currency;
* owner domain: the ``content_url``'s registrable domain, else (CT 0.1 section 7.3, the secondary
  path) the owner of the event's registered ``content_id`` prefix in the workload's owner registry
  (``owners.json``, ``schemas.owners``), else "", exactly as ``processors.normalize`` does with
  the same registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from schemas.funnel import (
    FunnelCounts,
    FunnelKey,
    citation_position_bucket,
    citation_type_bucket,
    content_key,
    display_bucket,
    engagement_bucket,
    hour_of,
    totals,
)
from schemas.owners import OwnerRegistry
from schemas.urls import canonical_url, owner_domain

_HOUR_MS = 3_600_000
_hours: dict[int, datetime] = {}


def hour_bucket(ms: int) -> datetime:
    """``schemas.funnel.hour_of`` of an epoch-millisecond timestamp (memoised per hour)."""
    h = ms // _HOUR_MS
    got = _hours.get(h)
    if got is None:
        got = _hours[h] = hour_of(datetime.fromtimestamp(h * 3600, UTC))
    return got


def owner_of(url: str | None, content_id: str | None, owners: OwnerRegistry | None) -> str:
    """The funnel row owner of an event: its URL's registrable domain, else the owner registered
    for its content_id prefix (CT 0.1 section 7.3, as ``processors.normalize``), else ""."""
    found = owner_domain(url) if url else None
    if not found and content_id and owners:
        found = owners.resolve(content_id)
    return found or ""


@dataclass(slots=True)
class SimEvent:
    """One event an agent emitted, with the identifiers exactly as emitted."""

    type: str  # canonical event type (schemas.canonical.EventType value)
    ts: int  # epoch ms
    url: str | None = None
    content_id: str | None = None
    product_id: str | None = None
    cti: str | None = None  # content_telemetry_id
    scope: str | None = None
    cached: bool | None = None
    tokens: int | None = None
    citation_type: str | None = None
    position: str | None = None
    display_type: str | None = None
    engagement_type: str | None = None
    order_value: int | None = None
    currency: str | None = None
    role: str = "agent"

    @property
    def canonical(self) -> str | None:
        return canonical_url(self.url) if self.url else None

    def owner(self, owners: OwnerRegistry | None = None) -> str:
        return owner_of(self.url, self.content_id, owners)

    def key(self, agent_id: str, scope: str, owners: OwnerRegistry | None = None) -> FunnelKey:
        canon = self.canonical
        return FunnelKey(
            hour=hour_bucket(self.ts),
            owner_domain=self.owner(owners),
            content_key=content_key(self.content_id, canon, self.product_id),
            agent_id=agent_id,
            content_scope=scope,
            source_role=self.role,
        )


@dataclass(frozen=True, slots=True)
class Observation:
    """One counted ``content_retrieved`` observation of a retrieval (any observer)."""

    key: FunnelKey
    canonical: str | None
    content_id: str | None


def corroborated(observations: Sequence[Observation]) -> list[bool]:
    """Per observation of ONE Content-Telemetry-ID: is its correlated group >= 2 observers?

    Sub-groups by canonical URL, merged (union-find) when they share a content_id.
    """
    groups: dict[str | None, int] = {}
    parent: list[int] = []
    members: list[int] = []
    for ob in observations:
        g = groups.get(ob.canonical)
        if g is None:
            g = groups[ob.canonical] = len(parent)
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
                parent[rb] = ra
    size: dict[int, int] = {}
    roots = [find(g) for g in members]
    for r in roots:
        size[r] = size.get(r, 0) + 1
    return [size[r] >= 2 for r in roots]


def _same_content(a: tuple[str, str | None, str | None], b: tuple[str, str | None, str | None]) -> bool:
    return bool((a[0] and a[0] == b[0]) or (a[1] and a[1] == b[1]) or (a[2] and a[2] == b[2]))


class Truth:
    """Accumulates expected funnel rows from the simulator's own records."""

    def __init__(self, owners: OwnerRegistry | None = None) -> None:
        self.rows: dict[FunnelKey, FunnelCounts] = {}
        self.owners = owners  # the workload's owner registry (content_id prefix -> owner)

    def _row(self, key: FunnelKey) -> FunnelCounts:
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = FunnelCounts()
        return row

    def retrieval(self, with_id: Sequence[Observation], without_id: Sequence[Observation]) -> None:
        """Count the observations of one retrieval: those sharing its Content-Telemetry-ID are
        correlated (``with_id``); those without one are standalone (CT 7.2 rule 3)."""
        for ob in without_id:
            row = self._row(ob.key)
            row.add("retrieved")
            row.add("retrieved_standalone")
        for ob, corr in zip(with_id, corroborated(with_id), strict=True):
            row = self._row(ob.key)
            row.add("retrieved")
            row.add("retrieved_corroborated" if corr else "retrieved_uncorroborated")

    def session(
        self, agent_id: str, scope: str, events: Sequence[SimEvent], *, grounding_stage: bool = True
    ) -> tuple[int, int, int]:
        """Count one closed session's non-retrieval events (retrievals go through ``retrieval``).

        ``grounding_stage`` is False for OA 0.4 sessions: that format has no grounding events
        (OA 0.4 section 3.3), so "without grounded" departures are not judged for them.

        Returns the departures counted (cited_without_grounded, displayed_without_cited,
        displayed_without_grounded) so the simulator can check them against its intent.
        """
        turn_starts = sorted(e.ts for e in events if e.type == "turn_started")
        keys = [e.key(agent_id, scope, self.owners) for e in events]
        ident = [(k.content_key, e.canonical, e.content_id) for k, e in zip(keys, events, strict=True)]
        grounded = [ident[i] for i, e in enumerate(events) if e.type == "grounded"]
        cited = [ident[i] for i, e in enumerate(events) if e.type == "cited"]
        dep = [0, 0, 0]
        for e, key, me in zip(events, keys, ident, strict=True):
            t = e.type
            if t == "grounded":
                row = self._row(key)
                row.add("grounded")
                row.add("grounded_cached" if e.cached else "grounded_live")
                row.add("tokens_ingested", e.tokens or 0)
                if e.scope == "session":
                    row.add("turns_influenced", sum(1 for ts in turn_starts if ts >= e.ts))
                else:
                    row.add("turns_influenced", 1)
            elif t == "cited":
                row = self._row(key)
                row.add("cited")
                row.add(citation_type_bucket(e.citation_type))
                row.add(citation_position_bucket(e.position))
                if grounding_stage and not any(_same_content(me, g) for g in grounded):
                    row.add("cited_without_grounded")
                    dep[0] += 1
            elif t == "displayed":
                row = self._row(key)
                row.add("displayed")
                row.add(display_bucket(e.display_type))
                if not any(_same_content(me, c) for c in cited):
                    row.add("displayed_without_cited")
                    dep[1] += 1
                if grounding_stage and not any(_same_content(me, g) for g in grounded):
                    row.add("displayed_without_grounded")
                    dep[2] += 1
            elif t == "engaged":
                row = self._row(key)
                row.add("engaged")
                row.add(engagement_bucket(e.engagement_type))
            elif t == "commerce.checkout_completed":
                row = self._row(key)
                row.add("checkouts")
                if e.currency is not None and e.order_value is not None:
                    row.add_value(e.currency, e.order_value)
        return dep[0], dep[1], dep[2]

    def destination_engagement(self, agent_id: str, event: SimEvent) -> None:
        """A destination's report of a click-out, keyed by ctx_token (CT 0.1 section 7.1): it
        corroborates the agent's own engagement and counts apart, as ``engaged_destination``
        (no content_scope on its envelope; source role ``agent`` as for every non-retrieval)."""
        self._row(event.key(agent_id, "", self.owners)).add("engaged_destination")

    # --- output ---------------------------------------------------------------------------------
    def nonzero(self) -> dict[FunnelKey, FunnelCounts]:
        return {k: v for k, v in sorted(self.rows.items()) if not v.is_zero()}

    def document(self, seed: int) -> dict[str, Any]:
        """``expected_funnel.json``: rows (non-zero measures only) and per-content totals."""
        rows = self.nonzero()
        out_rows: list[dict[str, Any]] = []
        for key, counts in rows.items():
            row: dict[str, Any] = {
                "hour": key.hour.strftime("%Y-%m-%dT%H:00:00Z"),
                "owner_domain": key.owner_domain,
                "content_key": key.content_key,
                "agent_id": key.agent_id,
                "content_scope": key.content_scope,
                "source_role": key.source_role,
            }
            full = counts.as_dict()
            value = full.pop("conversion_value")
            row.update((m, v) for m, v in full.items() if v)
            row["conversion_value"] = value
            out_rows.append(row)
        out_totals = [
            {"owner_domain": owner, "content_key": ck, **measures}
            for (owner, ck), measures in totals(rows).items()
        ]
        grand = FunnelCounts()
        for counts in rows.values():
            grand.merge(counts)
        return {
            "seed": seed,
            "note": "rows list non-zero measures only (absent = 0); totals list every measure",
            "rows": out_rows,
            "totals": out_totals,
            "grand_total": grand.as_dict(),
        }


def sum_measure(rows: Iterable[FunnelCounts], measure: str) -> int:
    return sum(r.measures.get(measure, 0) for r in rows)
