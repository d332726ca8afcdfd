"""Sessionize: canonical events (EVENTS) -> closed sessions (SESSIONS) and their funnel rows (FUNNEL).

Input: EVENTS document envelopes (``processors.normalize``), one per message or packed, each
naming its session key ``s`` (session_id, else ctx_token). Envelopes without a session key
(edge/origin retrievals) are not sessionized.

State: a changelog-backed Faust table (``rocksdb://`` with the rocksdict driver in the worker)
keyed by session key. Value = one orjson document (``SessionState``): the session's recent events
as compact lists (``processors.aggregate.SEvent``; ``retrieved`` events only by id, they count in
``processors.correlate``) and their ids (dedupe), merged header facts, last activity (processing
time), revision, what was emitted so far, and the close decision. Every ``CHUNK_EVENTS`` ids the
recent events and ids are sealed into a chunk (``seal``, key ``chunk_key(session, n)``), written
once: a long session does not rewrite all its events on every batch that touches it.

Sessions are reconstructed from session documents, standalone events and batches alike (CT
5.7.4, 7.1). A session closes when a header said it ended (``ended_at``, an OA /session/end)
and ``end_grace`` passed without activity, or after ``inactivity_timeout`` without activity, or
on drain. Closing emits the session's funnel contributions (``aggregate.session_contributions``)
as ``FunnelDelta``s (scope ``session:<key>:r<revision>``) to FUNNEL and a ``SessionRecord`` to
SESSIONS. A click-token fragment (envelopes keyed by ``ctx_token`` with no ``session_id``: a
destination's report of a click-out, CT 0.1 section 7.1) counts its engagements as
``engaged_destination``, not ``engaged`` (``schemas.funnel``). A new event (or new header
facts) within ``lateness`` after a close re-opens the session as revision+1; its next close
emits only the correction (new totals - emitted totals), so the sum over revisions is exactly
the truth. After ``lateness`` the state shrinks to a tombstone (key -> final revision); anything
arriving later is dead-lettered with reason ``late:beyond-lateness`` (never silently dropped).
With a ``retention`` the tombstone itself is deleted once the partition's stream time passed its
newest counted event's hour by ``retention``; events of a key without state older than stream
time - ``retention`` are dead-lettered with reason ``late:beyond-retention``
(``processors.app.expired``).

Exactly-once: deltas carry deterministic ids (scope + row key), so re-emitting after a crash or
an input redelivery is deduplicated by the sink; duplicate input events are dropped by id here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from processors import aggregate
from processors.aggregate import SEvent
from processors.app import RETENTION_REASON, Item, PipelineApp, Send, StateStage
from processors.normalize import sessionless
from schemas.canonical import SourceFormat
from schemas.records import FunnelDelta, SessionRecord, decode_delta, encode, unpack

STAGE = "sessionize"
LATE_REASON = "late:beyond-lateness"


@dataclass(frozen=True, slots=True)
class SessionizeConfig:
    inactivity_timeout: float = 1800.0
    end_grace: float = 2.0
    lateness: float = 3600.0
    drain_after_idle: float | None = None
    #: event time (s) a session's tombstone is kept past its newest event's hour (None: for
    #: ever); processors.app.expired
    retention: float | None = None


def new_state(key: str, partition: int) -> dict[str, Any]:
    return {
        "k": key,
        "p": partition,
        "ev": [],  # SEvent lists (non-retrieved events) not yet sealed into a chunk
        "ids": [],  # event ids not yet sealed into a chunk
        "nc": 0,  # sealed chunks (``chunk_key``): older events and ids, written once each
        "dup": 0,
        "late": 0,
        "h": {},  # merged header facts
        "fmt": [],
        "em": [],
        "la": 0.0,  # last activity (processing time, epoch s)
        "closed": False,
        "rev": -1,  # revision of the last close (-1: never closed)
        "closed_at": 0.0,
        "closed_by": "",
        "emitted": [],  # aggregate.rows_to_json of everything emitted so far
        "mt": 0,  # newest counted (non-retrieved) event time, epoch us: when the tombstone may expire
    }


def _add_unique(lst: list[Any], values: Iterable[Any]) -> None:
    for v in values:
        if v and v not in lst:
            lst.append(v)


def merge_header(h: dict[str, Any], header: Mapping[str, Any]) -> bool:
    """Merge one SessionHeader (JSON dict) into the state's facts; True if anything changed."""
    before = orjson.dumps(h)
    for f in ("agent_id", "content_scope"):
        if not h.get(f) and header.get(f):
            h[f] = header[f]
    if header.get("ctx_token") and not header.get("session_id"):
        h["token"] = True  # CT 0.1 7.1: keyed by a click token, a destination's report
    started = header.get("started_at")
    if started and (not h.get("started_at") or aggregate.ts_us(started) < aggregate.ts_us(h["started_at"])):
        h["started_at"] = started
    ended = header.get("ended_at")
    if ended and (not h.get("ended_at") or aggregate.ts_us(ended) > aggregate.ts_us(h["ended_at"])):
        h["ended_at"] = ended
    if ended or header.get("source_kind") == "oa_session_end":  # CT 5.1 ended_at, OA 0.4 4.1 end
        h["ended"] = True
    if header.get("outcome_type"):  # OA 0.4 section 3.7: the latest outcome wins
        h["outcome_type"] = header["outcome_type"]
        h["outcome_value_minor"] = header.get("outcome_value_minor")
        h["outcome_currency"] = header.get("outcome_currency")
    segments = header.get("user_segments") or []
    if segments:
        merged = list(h.get("user_segments") or [])
        _add_unique(merged, segments)
        h["user_segments"] = merged
    return orjson.dumps(h) != before


@dataclass(slots=True, init=False)
class Applied:
    new: int = 0
    duplicates: int = 0
    reopened: bool = False
    beyond_lateness: bool = False

    # init=False + this __init__: the native build compiles it (a generated one stays Python)
    def __init__(self) -> None:
        self.new = self.duplicates = 0
        self.reopened = self.beyond_lateness = False


def apply(
    state: dict[str, Any],
    header: Mapping[str, Any] | None,
    events: list[dict[str, Any]],
    now: float,
    seen: set[str] | None = None,
) -> Applied:
    """Add one envelope (header + canonical event dicts) to a session state, deduped by event id."""
    out = Applied()
    if state.get("tomb"):
        out.beyond_lateness = True
        return out
    ids: set[str] = seen if seen is not None else set(state["ids"])
    changed = False
    fresh: list[dict[str, Any]] = []
    for ev in events:
        eid = ev["event_id"]
        if eid in ids:
            out.duplicates += 1
            continue
        ids.add(eid)
        fresh.append(ev)
    if header is not None:
        changed = merge_header(state["h"], header)
        _add_unique(state["fmt"], (header.get("source_format"),))
        _add_unique(state["em"], (header.get("emitter"),))
    newest: int = state.get("mt", -1)  # -1: a state from before "mt" existed, not tracked
    for ev in fresh:
        state["ids"].append(ev["event_id"])
        if ev["event_type"] != "retrieved":
            se = aggregate.compact_event(ev)
            state["ev"].append(list(se))
            if 0 <= newest < se.ts:
                newest = se.ts
        _add_unique(state["fmt"], (ev.get("source_format"),))
        _add_unique(state["em"], (ev.get("emitter"),))
    if newest >= 0:
        state["mt"] = newest
    out.new = len(fresh)
    state["dup"] += out.duplicates
    if fresh or changed:
        state["la"] = now
        if state["rev"] >= 0:
            state["late"] += len(fresh)  # arrived after the session was first closed
        if state["closed"]:
            state["closed"] = False
            out.reopened = True
    return out


def deadline(state: Mapping[str, Any], cfg: SessionizeConfig) -> float | None:
    """When the timer must look at this state next (None: never, a tombstone or a chunk)."""
    if state.get("tomb") or state.get("chunk"):
        return None
    if state["closed"]:
        return float(state["closed_at"]) + cfg.lateness
    if state["h"].get("ended"):
        return float(state["la"]) + cfg.end_grace
    return float(state["la"]) + cfg.inactivity_timeout


@dataclass(slots=True, init=False)
class Closed:
    """Outputs of one close: deltas for FUNNEL (encoded: (contribution id, JSON),
    ``aggregate.wire_deltas``), the record for SESSIONS."""

    delta_wire: list[tuple[bytes, bytes]]
    record: SessionRecord

    # init=False + this __init__: the native build compiles it (a generated one stays Python)
    def __init__(self, delta_wire: list[tuple[bytes, bytes]], record: SessionRecord) -> None:
        self.delta_wire, self.record = delta_wire, record

    @property
    def deltas(self) -> list[FunnelDelta]:
        return [decode_delta(v) for _k, v in self.delta_wire]


def close(
    state: dict[str, Any], now: float, closed_by: str, chunks: Sequence[Mapping[str, Any]] = ()
) -> Closed:
    """Close a session: revision+1, emit (new totals - emitted totals) and the session record.
    ``chunks``: the session's sealed chunks, in order (``seal``)."""
    events = [SEvent(*e) for c in chunks for e in c["ev"]] + [SEvent(*e) for e in state["ev"]]
    h = state["h"]
    rows = aggregate.session_contributions(
        events,
        agent_id=h.get("agent_id") or "",
        content_scope=h.get("content_scope") or "",
        # OA 0.4 has no grounding stage: only sessions with CT content judge "without grounded".
        grounding_stage=any(f != SourceFormat.OPENATTRIBUTION.value for f in state["fmt"] if f)
        or not any(state["fmt"]),
        destination=bool(h.get("token")),
    )
    rev = state["rev"] + 1
    plain = aggregate.plain_rows(rows)
    deltas = aggregate.wire_deltas(plain, state["emitted"], f"session:{state['k']}:r{rev}")
    summary = aggregate.session_summary(events, rows)
    record = SessionRecord(
        session_id=state["k"],
        revision=rev,
        agent_id=h.get("agent_id") or "",
        content_scope=h.get("content_scope") or "",
        started_at=h.get("started_at"),
        ended_at=h.get("ended_at"),
        closed_by=closed_by,
        event_count=len(state["ids"]) + sum(len(c["ids"]) for c in chunks),
        late_events=state["late"],
        duplicate_events=state["dup"],
        turns=summary.turns,
        grounded=summary.grounded,
        cited=summary.cited,
        displayed=summary.displayed,
        engaged=summary.engaged,
        cited_without_grounded=summary.cited_without_grounded,
        displayed_without_cited=summary.displayed_without_cited,
        displayed_without_grounded=summary.displayed_without_grounded,
        outcome_type=h.get("outcome_type"),
        outcome_value_minor=h.get("outcome_value_minor"),
        outcome_currency=h.get("outcome_currency"),
        user_segments=tuple(h.get("user_segments") or ()),
        source_formats=tuple(state["fmt"]),
        emitters=tuple(state["em"]),
    )
    state["rev"] = rev
    state["closed"] = True
    state["closed_at"] = now
    state["closed_by"] = closed_by
    state["emitted"] = aggregate.plain_rows_json(plain)
    return Closed(deltas, record)


def tombstone(state: Mapping[str, Any]) -> dict[str, Any]:
    tomb = {"k": state["k"], "p": state["p"], "rev": state["rev"], "tomb": True}
    if "mt" in state:
        tomb["mt"] = state["mt"]
    return tomb


def step(
    state: dict[str, Any],
    now: float,
    cfg: SessionizeConfig,
    drain: bool,
    chunks: Sequence[Mapping[str, Any]] = (),
) -> tuple[Any, Closed | None]:
    """What the timer does to one state: (new state or None if unchanged, close outputs)."""
    if state.get("tomb"):
        return None, None
    if state["closed"]:
        if now >= state["closed_at"] + cfg.lateness:
            return tombstone(state), None
        return None, None
    if drain:
        return state, close(state, now, "drain", chunks)
    if state["h"].get("ended") and now >= state["la"] + cfg.end_grace:
        return state, close(state, now, "ended", chunks)
    if now >= state["la"] + cfg.inactivity_timeout:
        return state, close(state, now, "inactivity", chunks)
    return None, None


#: Events per sealed chunk of a session's state (``seal``).
CHUNK_EVENTS = 64


def chunk_key(session: str, n: int) -> bytes:
    """Table key of chunk ``n`` of a session (session keys never contain NUL: ``items``)."""
    return session.encode() + b"\x00" + str(n).encode()


def seal(state: dict[str, Any], limit: int = CHUNK_EVENTS) -> dict[str, Any] | None:
    """Move the pending events and ids of a state into a chunk once there are ``limit`` ids.

    Why: the state is written to its changelog on every batch that touches the session; without
    chunks a long session (deep research: hundreds of events over many batches) rewrites all its
    events every time - changelog bytes quadratic in the session's length. A chunk is written
    once; the state keeps only what came since. Returns the chunk (to store under
    ``chunk_key(key, state["nc"] - 1)``) or None."""
    if state.get("tomb") or len(state["ids"]) < limit:
        return None
    chunk = {"k": state["k"], "p": state["p"], "chunk": True, "ev": state["ev"], "ids": state["ids"]}
    state["ev"], state["ids"] = [], []
    state["nc"] = state.get("nc", 0) + 1
    return chunk


@dataclass(slots=True)
class SessionizeStats:
    envelopes: int = 0
    events: int = 0
    duplicates: int = 0
    late_events: int = 0
    beyond_lateness: int = 0
    beyond_retention: int = 0
    closed: int = 0
    deltas: int = 0


class Sessionizer(StateStage):
    """The sessionize agent (EVENTS), its session table and its close timer."""

    name = "sessionize"

    def __init__(
        self,
        app: PipelineApp,
        *,
        events_topic: str,
        funnel_topic: str,
        sessions_topic: str,
        dlq_topic: str,
        config: SessionizeConfig,
        partitions: int = 4,
        batch: int = 2000,
        within: float = 0.1,
        tick: float = 1.0,
    ) -> None:
        self.config = config
        self.funnel_topic = funnel_topic
        self.sessions_topic = sessions_topic
        self.stats = SessionizeStats()
        super().__init__(
            app,
            source_topic=events_topic,
            dlq_topic=dlq_topic,
            partitions=partitions,
            batch=batch,
            within=within,
            tick=tick,
            drain_after_idle=config.drain_after_idle,
            packed_topics=frozenset({funnel_topic, sessions_topic}),
            retention=config.retention,
        )

    def items(self, msg: Any, sends: list[Send]) -> list[tuple[bytes | None, Any]]:
        value = msg.value
        if not value or sessionless(value):
            return []  # edge/origin retrievals: correlate's business (and the sink's), not a session's
        try:
            envelopes = unpack(value)
        except orjson.JSONDecodeError as exc:
            sends.append(self.dead_letter(msg, f"malformed envelope: {exc!r}"))
            return []
        out: list[tuple[bytes | None, Any]] = []
        for env in envelopes:
            skey = env.get("s") if type(env) is dict else None
            if type(skey) is not str or not skey:
                if type(env) is dict and env.get("t") == "d" and "s" in env and skey is None:
                    continue  # a session-less envelope among session ones: nothing to do here
                sends.append(self.dead_letter(msg, "malformed envelope: no session key", orjson.dumps(env)))
                continue
            if "\x00" in skey:  # chunk keys use NUL (chunk_key)
                reason = "malformed envelope: NUL in session key"
                sends.append(self.dead_letter(msg, reason, orjson.dumps(env)))
                continue
            out.append((skey.encode(), env))
        return out

    def _chunks(self, state: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The sealed chunks of a state, in order (``self.state``: the state's partition)."""
        out: list[dict[str, Any]] = []
        for n in range(int(state.get("nc", 0))):
            raw = self.state.get(chunk_key(state["k"], n))
            if raw is None:  # cannot happen: a chunk is stored before the state that counts it
                raise RuntimeError(f"session {state['k']!r}: chunk {n} missing")
            out.append(orjson.loads(raw))
        return out

    def new_state(self, key: bytes, partition: int) -> dict[str, Any]:
        return new_state(key.decode("utf-8", "replace"), partition)

    def apply_items(self, state: dict[str, Any], items: list[Item], now: float, sends: list[Send]) -> bool:
        st = self.stats
        seen = set(state.get("ids") or ())
        if state.get("nc"):
            for sealed in self._chunks(state):
                seen.update(sealed["ids"])
        changed = False
        for msg, env in items:
            try:
                header = env.get("h")
                evs = env.get("e") or []
                res = apply(state, header, evs, now, seen)
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                sends.append(self.dead_letter(msg, f"malformed envelope: {exc!r}", orjson.dumps(env)))
                continue
            st.envelopes += 1
            if res.beyond_lateness:
                st.beyond_lateness += 1
                sends.append(self.dead_letter(msg, LATE_REASON, orjson.dumps(env)))
                continue
            st.events += res.new
            st.duplicates += res.duplicates
            if state["rev"] >= 0:
                st.late_events += res.new
            changed = changed or res.new > 0 or res.reopened or header is not None
        chunk = seal(state)
        if chunk is not None:  # stored before the state that counts it (the caller stores that)
            self.state.set(chunk_key(state["k"], state["nc"] - 1), orjson.dumps(chunk))
        return changed

    def deadline(self, state: dict[str, Any]) -> float | None:
        return deadline(state, self.config)

    def refuse_old(self, items: list[Item], horizon: int, sends: list[Send]) -> list[Item]:
        """Per envelope: its events older than ``horizon`` go to the DLQ (as an envelope with the
        same header and those events), the rest stays; an envelope left without events is
        refused whole. Malformed events are left for ``apply_items`` (a malformed envelope)."""
        keep: list[Item] = []
        for msg, env in items:
            try:
                evs = env.get("e") or []
                young = [aggregate.ts_us(ev["timestamp"]) >= horizon for ev in evs]
            except (AttributeError, KeyError, TypeError, ValueError):
                keep.append((msg, env))
                continue
            if all(young):
                keep.append((msg, env))
                continue
            old = [ev for ev, y in zip(evs, young, strict=True) if not y]
            self.stats.beyond_retention += len(old)
            sends.append(self.dead_letter(msg, RETENTION_REASON, orjson.dumps({**env, "e": old})))
            if len(old) < len(evs):
                keep.append((msg, {**env, "e": [ev for ev, y in zip(evs, young, strict=True) if y]}))
        return keep

    def step(self, state: dict[str, Any], now: float, drain: bool) -> tuple[Any, list[Send]]:
        nc = int(state.get("nc", 0)) if not state.get("tomb") else 0
        needs_chunks = nc and not state["closed"]
        new, closed = step(state, now, self.config, drain, self._chunks(state) if needs_chunks else ())
        if new is not None and new.get("tomb") and nc:
            for n in range(nc):  # the session is final: its chunks go with it
                self.state.delete(chunk_key(state["k"], n))
        if closed is None:
            return new, []
        self.stats.closed += 1
        self.stats.deltas += len(closed.delta_wire)
        out: list[Send] = [(self.funnel_topic, k, v) for k, v in closed.delta_wire]
        out.append((self.sessions_topic, state["k"].encode(), encode(closed.record)))
        return new, out
