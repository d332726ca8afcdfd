"""Correlate: ``retrieved`` events (RETRIEVALS) -> correlated retrievals (CORRELATED) + funnel rows.

Input: RETRIEVALS, packed observation records of ``retrieved`` events
(``schemas.records.encode_observation``; whole ``encode_event`` records are read too), partitioned
by content_telemetry_id, else event_id (``processors.normalize``).

State: a changelog-backed Faust table keyed by content_telemetry_id: the observations
(``processors.aggregate.Obs``: event id, role, emitter, timestamp, canonical URL, content_id,
session, agent, content_scope, owner domain, arrival time), deduplicated by event id, plus the
group's revision and what it emitted so far.

A group closes ``window`` seconds (processing time) after its first observation. It is then
split into retrievals (CT 7.2 / 4.5: sub-grouped by canonical URL, sub-groups merged when they
share a content_id, since redirects change URLs and not ids); a retrieval with >= 2
observations is ``corroborated``, a single one ``uncorroborated`` (CT 4.4: a protocol-unaware
scraper or a lost header). Each retrieval goes to CORRELATED as a ``CorrelatedRetrieval`` and
each observation contributes ``retrieved`` + its status measure to ITS OWN funnel row (its hour,
owner domain, content key, agent, role), scope ``retrieval:<id>:r<revision>``. Events without a
content_telemetry_id are ``standalone`` (CT 7.2 rule 3) and emitted at once, without state.

Late observations within ``lateness`` re-open the group (revision+1, closing again ``window``
after the late arrival) and emit corrections (an uncorroborated observation that became
corroborated moves its count); after ``lateness`` a tombstone dead-letters later ones with reason
``late:beyond-lateness``. With a ``retention`` the tombstone itself is deleted once the
partition's stream time passed its newest observation's hour by ``retention``, and observations
of a key without state older than stream time - ``retention`` are dead-lettered with reason
``late:beyond-retention`` (``processors.app.expired``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from processors import aggregate
from processors.aggregate import HOUR_US, Obs, PlainRows, obs_of, plain_rows_json, wire_deltas
from processors.app import RETENTION_REASON, Item, PipelineApp, Send, StateStage
from schemas.codec import dumps
from schemas.funnel import role_of
from schemas.records import (
    OBSERVATION_FIELDS,
    OBSERVATION_TAG,
    CorrelatedRetrieval,
    FunnelDelta,
    decode_delta,
    decode_retrieval,
    unpack,
)

STAGE = "correlate"
LATE_REASON = "late:beyond-lateness"


@dataclass(frozen=True, slots=True)
class CorrelateConfig:
    window: float = 600.0
    lateness: float = 3600.0
    drain_after_idle: float | None = None
    #: event time (s) a group's tombstone is kept past its newest observation's hour (None: for
    #: ever); processors.app.expired
    retention: float | None = None


def new_state(key: str, partition: int) -> dict[str, Any]:
    return {
        "k": key,
        "p": partition,
        "obs": [],
        "first": 0.0,  # processing time of the first observation (of this revision)
        "dup": 0,
        "closed": False,
        "rev": -1,
        "closed_at": 0.0,
        "emitted": [],
        "mt": 0,  # newest observation time (epoch us): when the tombstone may expire
    }


def add_observations(state: dict[str, Any], events: Sequence[dict[str, Any]], now: float) -> tuple[int, int]:
    """Add retrieved-event dicts to a group, deduped by event id: (new, duplicates)."""
    return add_obs(state, [aggregate.compact_observation(ev, now) for ev in events], now)


def add_obs(state: dict[str, Any], observations: Sequence[Obs], now: float) -> tuple[int, int]:
    """Add observations to a group (arriving ``now``), deduped by event id: (new, duplicates)."""
    stored = state["obs"]
    seen = {o[0] for o in stored}
    new = dup = 0
    newest: int = state.get("mt", -1)  # -1: a state from before "mt" existed, not tracked
    for ob in observations:
        eid = ob.id
        if eid in seen:
            dup += 1
            continue
        seen.add(eid)
        stored.append([*ob[:-1], now])
        new += 1
        if 0 <= newest < ob.ts:
            newest = ob.ts
    if newest >= 0:
        state["mt"] = newest
    state["dup"] += dup
    if new:
        if state["closed"] or not state["first"]:
            state["first"] = now  # a (re)opened group waits a full window for other observers
        state["closed"] = False
    return new, dup


def deadline(state: dict[str, Any], cfg: CorrelateConfig) -> float | None:
    if state.get("tomb"):
        return None
    if state["closed"]:
        return float(state["closed_at"]) + cfg.lateness
    return float(state["first"]) + cfg.window


def retrieval_id(cti: str | None, group: Sequence[Obs]) -> str:
    """Stable id of one retrieval: its Content-Telemetry-ID + the group's smallest identity."""
    first: str | None = None
    for o in group:  # the smallest identity (explicit loop: a generator is slow when compiled)
        ident = o.canonical_url or o.content_id or ""
        if first is None or ident < first:
            first = ident
    first = first or ""
    material = f"{cti}\x1f{first}" if cti else f"\x1f{group[0].id}"
    return hashlib.sha256(material.encode()).hexdigest()[:32]


# --- closing, straight to wire bytes --------------------------------------------------------------
# A close builds its FunnelDelta and CorrelatedRetrieval records as the JSON the models encode to
# (``schemas.records.encode``: the models' field order, UTC datetimes as "...Z") from plain dicts
# (``aggregate.wire_deltas``): building pydantic records and encoding them cost ~2/3 of a close.
# ``Wire.deltas`` / ``Wire.records`` decode (validate) them back into the models; tests hold the
# bytes equal to the models' own encoding and the rows equal to ``aggregate.retrieval_contributions``.


def _rows(groups: Sequence[tuple[str, Sequence[Obs]]]) -> PlainRows:
    """``aggregate.retrieval_contributions`` on plain keys: ``retrieved`` + its status measure
    per observation, in the observation's own row (its hour, owner, content key, agent, role)."""
    rows: PlainRows = {}
    for status, group in groups:
        measure = f"retrieved_{status}"
        for o in group:
            key = (
                o.ts // HOUR_US,
                o.owner_domain or "",
                o.content_id or o.canonical_url or "",  # schemas.funnel.content_key
                o.agent_id or "",
                o.content_scope or "",
                o.source_role,
            )
            row = rows.get(key)
            if row is None:
                rows[key] = ({"retrieved": 1, measure: 1}, {})
            else:
                measures = row[0]
                measures["retrieved"] += 1
                measures[measure] = measures.get(measure, 0) + 1
    return rows


def _ts_id(o: Obs) -> tuple[int, str]:
    return (o.ts, o.id)


def _record(cti: str | None, status: str, group: Sequence[Obs]) -> tuple[bytes, bytes]:
    """(key, CorrelatedRetrieval JSON) of one retrieval; keyed by its Content-Telemetry-ID,
    else by its first observation's event id. One pass over the observations (a close's
    largest cost): each "first ... seen" field is the first truthy value in time order."""
    if len(group) == 1:
        ordered = group
    elif len(group) == 2:  # most retrievals: one comparison, no key function calls
        a, b = group
        ordered = [b, a] if (b.ts, b.id) < (a.ts, a.id) else group
    else:
        ordered = sorted(group, key=_ts_id)
    canonical_url = content_id = owner_domain = None
    observations = []
    for o in ordered:
        canonical_url = canonical_url or o.canonical_url
        content_id = content_id or o.content_id
        owner_domain = owner_domain or o.owner_domain
        observations.append(
            {
                "event_id": o.id,
                "source_role": o.source_role,
                "emitter": o.emitter,
                "timestamp": aggregate.us_text(o.ts),  # a direct (native) call
                "content_url": o.content_url,
                "canonical_url": o.canonical_url,
                "content_id": o.content_id,
                "session_id": o.session_id,
                "agent_id": o.agent_id,
            }
        )
    agent_session_id = agent_id = None  # in arrival order, agents only
    for o in group:
        if o.source_role == "agent":
            agent_session_id = agent_session_id or o.session_id
            agent_id = agent_id or o.agent_id
    record = {
        "retrieval_id": retrieval_id(cti, group),
        "content_telemetry_id": cti,
        "canonical_url": canonical_url or None,
        "content_id": content_id or None,
        "owner_domain": owner_domain or None,
        "status": status,
        "observer_roles": sorted({o.source_role for o in group}),
        "agent_session_id": agent_session_id or None,
        "agent_id": agent_id or None,
        "first_seen": observations[0]["timestamp"],
        "last_seen": observations[-1]["timestamp"],
        "observations": observations,
    }
    return (cti or ordered[0].id).encode(), dumps(record)


@dataclass(slots=True, init=False)
class Wire:
    """What a close (or a standalone retrieval) emits, encoded: (Kafka key, JSON) per FunnelDelta
    (keyed by contribution id) and per CorrelatedRetrieval."""

    delta_wire: list[tuple[bytes, bytes]]
    record_wire: list[tuple[bytes, bytes]]
    corroborated: int = 0

    # init=False + this __init__: the native build compiles it (a generated one stays Python)
    def __init__(
        self,
        delta_wire: list[tuple[bytes, bytes]],
        record_wire: list[tuple[bytes, bytes]],
        corroborated: int = 0,
    ) -> None:
        self.delta_wire, self.record_wire, self.corroborated = delta_wire, record_wire, corroborated

    @property
    def deltas(self) -> list[FunnelDelta]:
        return [decode_delta(v) for _k, v in self.delta_wire]

    @property
    def records(self) -> list[CorrelatedRetrieval]:
        return [decode_retrieval(v) for _k, v in self.record_wire]


def close(state: dict[str, Any], now: float) -> Wire:
    """Close a group: split into retrievals, emit records and (new - emitted) funnel rows."""
    obs = [obs_of(o) for o in state["obs"]]
    cti = state["k"]
    groups = [(aggregate.retrieval_status(g, True), g) for g in aggregate.split_retrievals(obs)]
    rows = _rows(groups)
    rev = state["rev"] + 1
    out = Wire(
        wire_deltas(rows, state["emitted"], f"retrieval:{cti}:r{rev}"),
        [_record(cti, status, g) for status, g in groups],
        sum(1 for status, _g in groups if status == "corroborated"),
    )
    state["rev"] = rev
    state["closed"] = True
    state["closed_at"] = now
    state["emitted"] = plain_rows_json(rows)
    return out


def standalone(ev: dict[str, Any], now: float) -> Wire:
    """A retrieval without a Content-Telemetry-ID (CT 7.2 rule 3): counted at once, no state."""
    return standalone_obs(aggregate.compact_observation(ev, now))


def standalone_obs(ob: Obs) -> Wire:
    """``standalone`` of an event already compacted."""
    groups = [("standalone", [ob])]
    return Wire(wire_deltas(_rows(groups), (), f"retrieval:{ob.id}:r0"), [_record(None, "standalone", [ob])])


def step(state: dict[str, Any], now: float, cfg: CorrelateConfig, drain: bool) -> tuple[Any, Wire | None]:
    if state.get("tomb"):
        return None, None
    if state["closed"]:
        if now >= state["closed_at"] + cfg.lateness:
            tomb = {"k": state["k"], "p": state["p"], "rev": state["rev"], "tomb": True}
            if "mt" in state:
                tomb["mt"] = state["mt"]
            return tomb, None
        return None, None
    if drain or now >= state["first"] + cfg.window:
        return state, close(state, now)
    return None, None


@dataclass(slots=True)
class CorrelateStats:
    observations: int = 0
    duplicates: int = 0
    standalone: int = 0
    late: int = 0
    beyond_lateness: int = 0
    beyond_retention: int = 0
    groups_closed: int = 0
    retrievals: int = 0
    corroborated: int = 0
    deltas: int = 0


_RECORD_LEN = len(OBSERVATION_FIELDS) + 1
#: positions in an observation record of the fields that must be text (or null)
_RECORD_TEXT = tuple(i + 1 for i, f in enumerate(OBSERVATION_FIELDS) if f not in ("event_id", "ts_us"))
#: (index, name) of the Obs fields that must be text (or absent): a close orders, compares and
#: keys by them (event_id is checked before; ts and arrival are numbers)
_TEXT_FIELDS = tuple((i, f) for i, f in enumerate(Obs._fields) if f not in ("id", "ts", "arrival"))


class Correlator(StateStage):
    """The correlate agent (RETRIEVALS), its group table and its close timer."""

    name = "correlate"

    def __init__(
        self,
        app: PipelineApp,
        *,
        retrievals_topic: str,
        funnel_topic: str,
        correlated_topic: str,
        dlq_topic: str,
        config: CorrelateConfig,
        partitions: int = 4,
        batch: int = 2000,
        within: float = 0.1,
        tick: float = 1.0,
    ) -> None:
        self.config = config
        self.funnel_topic = funnel_topic
        self.correlated_topic = correlated_topic
        self.stats = CorrelateStats()
        super().__init__(
            app,
            source_topic=retrievals_topic,
            dlq_topic=dlq_topic,
            partitions=partitions,
            batch=batch,
            within=within,
            tick=tick,
            drain_after_idle=config.drain_after_idle,
            packed_topics=frozenset({funnel_topic, correlated_topic}),
            retention=config.retention,
        )

    @staticmethod
    def _check(ev: Any) -> str | Obs:
        """A canonical retrieved event compacted (its timestamp parsed here, not in the timer),
        or why it is not a usable one. The arrival time is filled in by ``add_obs``."""
        try:
            if type(ev) is not dict or ev.get("event_type") != "retrieved":
                return "not a canonical retrieved event"
            if type(ev.get("event_id")) is not str:
                return "event_id is not a string"
            cti = ev.get("content_telemetry_id")
            if cti is not None and type(cti) is not str:
                return "content_telemetry_id is not a string"
            ob = aggregate.compact_observation(ev, 0.0)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:  # e.g. a numeric timestamp
            return repr(exc)
        fields: tuple[Any, ...] = ob  # untrusted values: not (yet) the types Obs declares
        for i, field in _TEXT_FIELDS:
            value = fields[i]
            if value is not None and type(value) is not str:  # the timer compares and joins them
                return f"{field} is not a string"
        return ob

    def items(self, msg: Any, sends: list[Send]) -> list[tuple[bytes | None, Any]]:
        value = msg.value
        if not value:
            sends.append(self.dead_letter(msg, "malformed retrieval: empty message"))
            return []
        try:
            events = unpack(value)
        except orjson.JSONDecodeError as exc:
            sends.append(self.dead_letter(msg, f"malformed retrieval: {exc!r}"))
            return []
        out: list[tuple[bytes | None, Any]] = []
        for rec in events:
            if type(rec) is list:  # an observation record (schemas.records.encode_observation)
                got = self._check_record(rec)
                if isinstance(got, str):
                    sends.append(self.dead_letter(msg, f"malformed retrieval: {got}", orjson.dumps(rec)))
                    continue
                ob, cti = got
            else:  # a whole canonical event (the format before observation records)
                checked = self._check(rec)
                if isinstance(checked, str):
                    sends.append(self.dead_letter(msg, f"malformed retrieval: {checked}", orjson.dumps(rec)))
                    continue
                ob, cti = checked, rec.get("content_telemetry_id")
            if cti and "\x00" in cti:  # never a state key (processors.app.STREAM_TIME_KEY)
                sends.append(
                    self.dead_letter(
                        msg, "malformed retrieval: NUL in content_telemetry_id", orjson.dumps(rec)
                    )
                )
                continue
            out.append((cti.encode() if cti else None, (rec, ob)))  # CT 7.2 rule 3: no id, no group
        return out

    @staticmethod
    def _check_record(rec: list[Any]) -> str | tuple[Obs, str | None]:
        """An observation record -> (its observation, its content_telemetry_id), or why it is not
        one. The arrival time is filled in by ``add_obs``."""
        if len(rec) != _RECORD_LEN or rec[0] != OBSERVATION_TAG:
            return f"not an observation record ({OBSERVATION_TAG!r} + {_RECORD_LEN - 1} fields)"
        if type(rec[1]) is not str:
            return "event_id is not a string"
        ts = rec[4]
        if type(ts) is not int or not aggregate.MIN_US <= ts <= aggregate.MAX_US:
            return "ts_us is not an integer timestamp"
        for i in _RECORD_TEXT:
            value = rec[i]
            if value is not None and type(value) is not str:
                return f"{OBSERVATION_FIELDS[i - 1]} is not a string"
        return obs_of((rec[1], role_of(rec[2]), rec[3] or "", *rec[4:12], 0.0)), rec[12]

    def stateless(self, items: list[Item], now: float, sends: list[Send]) -> None:
        for _msg, (_ev, ob) in items:
            self.stats.standalone += 1
            self._emit(standalone_obs(obs_of((*ob[:-1], now))), sends)

    def new_state(self, key: bytes, partition: int) -> dict[str, Any]:
        return new_state(key.decode("utf-8", "replace"), partition)

    def apply_items(self, state: dict[str, Any], items: list[Item], now: float, sends: list[Send]) -> bool:
        if state.get("tomb"):
            for msg, (ev, _ob) in items:
                self.stats.beyond_lateness += 1
                sends.append(self.dead_letter(msg, LATE_REASON, orjson.dumps(ev)))
            return False
        was_closed = state["rev"] >= 0
        new, dup = add_obs(state, [ob for _msg, (_ev, ob) in items], now)
        self.stats.observations += new
        self.stats.duplicates += dup
        if was_closed:
            self.stats.late += new
        return new > 0

    def deadline(self, state: dict[str, Any]) -> float | None:
        return deadline(state, self.config)

    def refuse_old(self, items: list[Item], horizon: int, sends: list[Send]) -> list[Item]:
        keep: list[Item] = []
        for msg, (rec, ob) in items:
            if ob.ts < horizon:
                self.stats.beyond_retention += 1
                sends.append(self.dead_letter(msg, RETENTION_REASON, orjson.dumps(rec)))
            else:
                keep.append((msg, (rec, ob)))
        return keep

    def step(self, state: dict[str, Any], now: float, drain: bool) -> tuple[Any, list[Send]]:
        new, out = step(state, now, self.config, drain)
        sends: list[Send] = []
        if out is not None:
            self.stats.groups_closed += 1
            self._emit(out, sends)
        return new, sends

    def _emit(self, out: Wire, sends: list[Send]) -> None:
        self.stats.deltas += len(out.delta_wire)
        self.stats.retrievals += len(out.record_wire)
        self.stats.corroborated += out.corroborated
        funnel, correlated = self.funnel_topic, self.correlated_topic
        sends.extend((funnel, k, v) for k, v in out.delta_wire)
        sends.extend((correlated, k, v) for k, v in out.record_wire)
