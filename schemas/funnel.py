"""The stage funnel: the one definition of what a funnel row is and how events count into it.

The aggregator (``processors.aggregate``), the ClickHouse sink and report (``sinks``), and the fleet
simulator's ground truth (``producers.generator``) all use this module, so "what counts" exists
once. The simulator computes its truth from its own state and only borrows the vocabulary here
(key, measure names, buckets).

Row key (``FunnelKey``): hour (UTC, of the event timestamp) x owner domain x content key x agent_id
x content_scope x source_role. Empty string where a dimension is unknown.

* content key = ``content_id`` if the event has one, else its canonical URL, else ``product_id``
  (OA 0.4 commerce events), else "" (CT 4.5: either identifier is sufficient; content_id is the
  stable one).
* agent_id / content_scope = the event's session (or envelope) values.
* source_role = the event's ``source_role``; events without one count as ``agent`` (CT 4.4:
  grounded/cited/displayed are agent-reported only).

Counting rules, one canonical event at a time (after sessionize and correlate):

* ``retrieved``: +1 per ``retrieved`` observation, in its observer's source_role row; and exactly
  one of ``retrieved_corroborated`` (its correlated retrieval has >= 2 observers, CT 4.4/7.2),
  ``retrieved_uncorroborated`` (it carries a content_telemetry_id but no other observer reported
  the same retrieval within the correlation window) or ``retrieved_standalone`` (no
  content_telemetry_id: CT 7.2 rule 3).
* ``grounded``: +1 per ``grounded``; ``grounded_cached`` when ``data.cached`` is true, else
  ``grounded_live`` (CT 6.4 Caching); ``tokens_ingested`` summed.
* ``turns_influenced`` (CT 6.4 Grounding scope, 10.1 per-turn-influenced): per ``grounded``
  event, ``scope: session`` -> the number of the session's ``turn_started`` events at or after the
  grounding timestamp; any other scope -> 1.
* ``cited``: +1 per ``cited``, plus one citation-type bucket and one position bucket (CT 6.5; an
  absent value counts as ``unclassified``; a value outside the core set as ``other``).
* ``displayed``: +1 per ``displayed`` plus one display-type bucket (CT 6.6; absent or custom ->
  ``other``).
* ``engaged``: +1 per ``engaged``, plus ``engaged_link_click``, ``engaged_agent_navigate`` or
  ``engaged_other`` (CT 6.7; consumers measuring traffic count agent_navigate beside link_click).
* ``engaged_destination`` instead of those: +1 per ``engaged`` reported by a destination after a
  click-out, i.e. an event of an envelope keyed by ``ctx_token`` with no ``session_id`` (CT 0.1
  section 7.1). Such a report *corroborates* a click the agent usually reports itself (CT 0.1
  section 4 stage 5, 6.7), and CT 0.1 gives no way to join the two (the agent does not record
  the token), so counting it in ``engaged`` would count one click-out twice.
* Departures (CT 4.3), judged within one session once it is closed; "the same content" = equal
  content key, or equal canonical URL, or equal content_id:
  ``cited_without_grounded`` per cited event with no grounded event for the same content in the
  session (lower confidence, CT 4.3); ``displayed_without_cited`` and
  ``displayed_without_grounded`` per displayed event likewise. The two "without grounded"
  departures are judged only for sessions in a format that has a grounding stage: OA 0.4 has no
  grounding event (OA 0.4 section 3.3), so its citations and displays never count them.
* Commerce (OA 0.4 3.3): ``checkouts`` +1 per ``commerce.checkout_completed``;
  ``conversion_value`` adds its ``data.order_value_amount`` (minor units, OA 3.7) under
  ``data.currency``.
* Every other event type (turns, other commerce events) adds nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

#: Core citation types (CT 0.1 section 6.5); anything else is ``other``.
CITATION_TYPES = ("direct_quote", "paraphrase", "reference", "contradiction", "unclassified")
#: Core citation positions (CT 0.1 section 6.5).
CITATION_POSITIONS = ("primary", "supporting", "mentioned", "unclassified")
#: Core display types (CT 0.1 section 6.6).
DISPLAY_TYPES = ("link", "snippet", "inline_quote", "card", "detail_view", "embed")
#: Source roles (CT 0.1 section 4.4).
SOURCE_ROLES = ("agent", "edge", "origin", "index")

#: Every additive measure of a funnel row, in column order (``conversion_value`` is a map).
MEASURES: tuple[str, ...] = (
    "retrieved",
    "retrieved_corroborated",
    "retrieved_uncorroborated",
    "retrieved_standalone",
    "grounded",
    "grounded_cached",
    "grounded_live",
    "tokens_ingested",
    "turns_influenced",
    "cited",
    *(f"cited_{t}" for t in CITATION_TYPES),
    "cited_other",
    *(f"cited_position_{p}" for p in CITATION_POSITIONS),
    "cited_position_other",
    "displayed",
    *(f"displayed_{t}" for t in DISPLAY_TYPES),
    "displayed_other",
    "engaged",
    "engaged_link_click",
    "engaged_agent_navigate",
    "engaged_other",
    "engaged_destination",
    "cited_without_grounded",
    "displayed_without_cited",
    "displayed_without_grounded",
    "checkouts",
)
MEASURE_SET = frozenset(MEASURES)
#: The headline measure of each stage, in funnel order (summary tables).
STAGE_MEASURES = (
    "retrieved",
    "grounded",
    "cited",
    "displayed",
    "engaged",
    "engaged_destination",
    "checkouts",
)
KEY_FIELDS = ("hour", "owner_domain", "content_key", "agent_id", "content_scope", "source_role")


@dataclass(frozen=True, slots=True, order=True)
class FunnelKey:
    hour: datetime  # UTC, truncated to the hour
    owner_domain: str
    content_key: str
    agent_id: str
    content_scope: str
    source_role: str


@dataclass(slots=True)
class FunnelCounts:
    """Additive measures of one row (or of a delta to add to one)."""

    measures: dict[str, int] = field(default_factory=dict)
    conversion_value: dict[str, int] = field(default_factory=dict)  # currency -> minor units

    def add(self, measure: str, n: int = 1) -> None:
        if measure not in MEASURE_SET:
            raise KeyError(measure)
        if n:
            self.measures[measure] = self.measures.get(measure, 0) + n

    def add_value(self, currency: str, minor_units: int) -> None:
        self.conversion_value[currency] = self.conversion_value.get(currency, 0) + minor_units

    def merge(self, other: FunnelCounts) -> None:
        for k, v in other.measures.items():
            self.add(k, v)
        for c, v in other.conversion_value.items():
            self.add_value(c, v)

    def as_dict(self) -> dict[str, object]:
        """All measures (zeros included) plus the value map, for comparison and JSON."""
        out: dict[str, object] = {m: self.measures.get(m, 0) for m in MEASURES}
        out["conversion_value"] = dict(sorted((c, v) for c, v in self.conversion_value.items() if v))
        return out

    def is_zero(self) -> bool:
        return not any(self.measures.values()) and not any(self.conversion_value.values())


def hour_of(ts: datetime) -> datetime:
    """The UTC hour bucket of a timestamp (naive timestamps are taken as UTC)."""
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    return ts.replace(minute=0, second=0, microsecond=0)


def content_key(content_id: str | None, canonical_url: str | None, product_id: str | None = None) -> str:
    return content_id or canonical_url or product_id or ""


def citation_type_bucket(value: object) -> str:
    if value is None:
        return "cited_unclassified"
    return f"cited_{value}" if value in CITATION_TYPES else "cited_other"


def citation_position_bucket(value: object) -> str:
    if value is None:
        return "cited_position_unclassified"
    return f"cited_position_{value}" if value in CITATION_POSITIONS else "cited_position_other"


def display_bucket(value: object) -> str:
    return f"displayed_{value}" if value in DISPLAY_TYPES else "displayed_other"


def engagement_bucket(value: object) -> str:
    if value in ("link_click", "agent_navigate"):
        return f"engaged_{value}"
    return "engaged_other"


def role_of(source_role: str | None) -> str:
    return source_role or "agent"


def merge_rows(
    rows: Iterable[tuple[FunnelKey, FunnelCounts]],
) -> dict[FunnelKey, FunnelCounts]:
    """Sum deltas per key (what SummingMergeTree does on read)."""
    out: dict[FunnelKey, FunnelCounts] = {}
    for key, counts in rows:
        out.setdefault(key, FunnelCounts()).merge(counts)
    return out


Totals = dict[tuple[object, ...], dict[str, object]]


def totals(
    rows: Mapping[FunnelKey, FunnelCounts], by: tuple[str, ...] = ("owner_domain", "content_key")
) -> Totals:
    """Roll rows up to the ``by`` dimensions (the report's shape), zero rows dropped."""
    acc: dict[tuple[object, ...], FunnelCounts] = {}
    for key, counts in rows.items():
        group = tuple(getattr(key, f) for f in by)
        acc.setdefault(group, FunnelCounts()).merge(counts)
    ordered = sorted(acc.items(), key=lambda kv: tuple(map(str, kv[0])))
    return {k: v.as_dict() for k, v in ordered if not v.is_zero()}
