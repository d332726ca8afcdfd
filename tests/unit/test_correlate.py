"""processors.correlate: grouping by Content-Telemetry-ID, corroboration, late moves, standalone."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings, strategies as st

from processors import aggregate, correlate, normalize
from processors.aggregate import Obs
from processors.correlate import CorrelateConfig, add_observations, deadline, new_state, step
from schemas.codec import dumps, loads
from schemas.funnel import FunnelCounts, FunnelKey, merge_rows
from schemas.records import (
    FunnelDelta,
    contribution_id,
    decode_delta,
    decode_events_envelope,
    decode_retrieval,
    encode,
    encode_observation,
)

CTI = "770e8400-e29b-41d4-a716-446655440300"
SID = "550e8400-e29b-41d4-a716-446655440000"
URL = "https://www.wirecutter.com/reviews/best"
CFG = CorrelateConfig(window=10.0, lateness=100.0)


def retrieval(
    role: str,
    url: str | None = URL,
    cid: str | None = None,
    cti: str | None = CTI,
    session: bool = False,
    ts: str = "30:01",
) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "type": "content_retrieved",
        "timestamp": f"2026-01-15T10:{ts}Z",
        "source_role": role,
    }
    if url:
        ev["content_url"] = url
    if cid:
        ev["content_id"] = cid
    if cti:
        ev["content_telemetry_id"] = cti
    doc: dict[str, Any] = {"document_type": "event", "schema_version": "0.1", "event": ev}
    if session:
        doc.update(session_id=SID, agent_id="bot", content_scope="news", started_at="2026-01-15T10:30:00Z")
    out = normalize.normalize_message(dumps(doc), headers=[("ctpipe-emitter", f"{role}-emitter".encode())])
    assert out.dead_letter is None, out.reason
    ((_k, envelope),) = out.events
    (result,) = decode_events_envelope(envelope)[1]  # the canonical event
    ((key, value),) = out.retrievals  # and what correlate gets of it
    assert key == (cti or result["event_id"]).encode()
    record = loads(value)
    assert correlate.Correlator._check_record(record) == (aggregate.compact_observation(result, 0.0), cti)
    assert correlate.Correlator._check(result) == aggregate.compact_observation(result, 0.0)
    return result  # type: ignore[no-any-return]


def rows(deltas: list[FunnelDelta]) -> dict[FunnelKey, dict[str, int]]:
    merged = merge_rows((d.key, d.counts) for d in deltas)
    return {k: {m: n for m, n in v.measures.items() if n} for k, v in merged.items() if not v.is_zero()}


def test_agent_and_edge_of_one_retrieval_are_corroborated() -> None:
    state = new_state(CTI, 1)
    agent, edge = retrieval("agent", session=True), retrieval("edge")
    assert add_observations(state, [agent, edge, edge], now=100.0) == (2, 1)
    assert deadline(state, CFG) == 110.0
    assert step(state, 109.0, CFG, drain=False) == (None, None)
    new, out = step(state, 110.0, CFG, drain=False)
    assert new is state and out is not None
    (rec,) = out.records
    assert rec.status == "corroborated" and rec.observer_roles == ("agent", "edge")
    assert rec.agent_session_id == SID and rec.agent_id == "bot" and rec.content_telemetry_id == CTI
    assert {o.emitter for o in rec.observations} == {"agent-emitter", "edge-emitter"}
    got = rows(out.deltas)
    assert {k.source_role: (k.agent_id, k.content_scope) for k in got} == {
        "agent": ("bot", "news"),
        "edge": ("", ""),  # the edge event's own (empty) agent dimensions
    }
    assert all(v == {"retrieved": 1, "retrieved_corroborated": 1} for v in got.values())
    assert all(d.origin == f"retrieval:{CTI}:r0" for d in out.deltas)


def test_an_edge_retrieval_alone_is_uncorroborated() -> None:
    state = new_state(CTI, 0)
    add_observations(state, [retrieval("edge")], now=0.0)
    _, out = step(state, 10.0, CFG, drain=False)
    assert out is not None and [r.status for r in out.records] == ["uncorroborated"]
    assert list(rows(out.deltas).values()) == [{"retrieved": 1, "retrieved_uncorroborated": 1}]


def test_redirect_urls_correlate_through_content_id() -> None:
    state = new_state(CTI, 0)
    agent = retrieval("agent", "https://wc.example/s/abc", cid="wc:best")
    origin = retrieval("origin", URL, cid="wc:best")
    other = retrieval("edge", "https://www.wirecutter.com/other")  # a different URL, no id: its own
    add_observations(state, [agent, origin, other], now=0.0)
    _, out = step(state, 10.0, CFG, drain=False)
    assert out is not None
    assert sorted((r.status, r.observer_roles) for r in out.records) == [
        ("corroborated", ("agent", "origin")),
        ("uncorroborated", ("edge",)),
    ]
    assert len({r.retrieval_id for r in out.records}) == 2


def test_late_observer_moves_uncorroborated_to_corroborated() -> None:
    state = new_state(CTI, 0)
    add_observations(state, [retrieval("edge")], now=0.0)
    _, first = step(state, 10.0, CFG, drain=False)
    assert first is not None
    assert add_observations(state, [retrieval("agent", session=True)], now=50.0) == (1, 0)
    assert not state["closed"] and deadline(state, CFG) == 60.0  # a new window for the late group
    _, second = step(state, 60.0, CFG, drain=False)
    assert second is not None and [r.status for r in second.records] == ["corroborated"]
    assert all(d.origin == f"retrieval:{CTI}:r1" for d in second.deltas)
    total = merge_rows((d.key, d.counts) for d in first.deltas + second.deltas)
    edge_key = next(k for k in total if k.source_role == "edge")
    agent_key = next(k for k in total if k.source_role == "agent")
    assert {m: n for m, n in total[edge_key].measures.items() if n} == {
        "retrieved": 1,
        "retrieved_corroborated": 1,
    }
    assert total[agent_key].measures == {"retrieved": 1, "retrieved_corroborated": 1}


def test_expired_group_becomes_a_tombstone() -> None:
    state = new_state(CTI, 2)
    add_observations(state, [retrieval("edge")], now=0.0)
    step(state, 10.0, CFG, drain=False)
    tomb, out = step(state, 110.0, CFG, drain=False)
    newest = 1_768_473_001_000_000  # 2026-01-15T10:30:01Z: the tombstone keeps it (retention)
    assert out is None and tomb == {"k": CTI, "p": 2, "rev": 0, "tomb": True, "mt": newest}
    assert deadline(tomb, CFG) is None


def test_drain_closes_an_open_group_early() -> None:
    state = new_state(CTI, 0)
    add_observations(state, [retrieval("edge")], now=0.0)
    _, out = step(state, 1.0, CFG, drain=True)
    assert out is not None and state["closed"]


def test_retrieval_without_id_is_standalone_at_once() -> None:
    ev = retrieval("edge", cti=None)
    out = correlate.standalone(ev, now=0.0)
    (rec,) = out.records
    assert rec.status == "standalone" and rec.content_telemetry_id is None
    assert list(rows(out.deltas).values()) == [{"retrieved": 1, "retrieved_standalone": 1}]
    again = correlate.standalone(ev, now=5.0)  # a redelivery: same contribution ids
    assert [d.contribution_id for d in again.deltas] == [d.contribution_id for d in out.deltas]
    assert again.records[0].retrieval_id == rec.retrieval_id


def test_counts_per_observation_are_never_lost_or_doubled() -> None:
    state = new_state(CTI, 0)
    evs = [
        retrieval("agent", session=True),
        retrieval("edge"),
        retrieval("origin"),
        retrieval("index", cid="x"),
    ]
    add_observations(state, evs + evs, now=0.0)
    _, out = step(state, 10.0, CFG, drain=False)
    assert out is not None
    summed = FunnelCounts()
    for d in out.deltas:
        summed.merge(d.counts)
    assert summed.measures["retrieved"] == 4
    # same canonical URL: one retrieval seen by four observers (the content_id changes nothing)
    assert summed.measures == {"retrieved": 4, "retrieved_corroborated": 4}


# --- the wire close: the models' bytes, the rule's rows -------------------------------------------

_text = st.sampled_from(["", "a", "b"]) | st.none()
_obs = st.tuples(
    st.uuids().map(str),
    st.sampled_from(["agent", "edge", "origin", "index"]),
    st.sampled_from(["cdn", "origin-srv", "agent-emitter"]),
    st.integers(-(2**40), 2**52),  # epoch microseconds, before 1970 too
    st.sampled_from(["https://a.example/x", "https://a.example/y", ""]) | st.none(),
    _text,  # content_id
    _text,  # session_id
    _text,  # agent_id
    _text,  # content_scope
    st.sampled_from(["a.example", ""]) | st.none(),
    st.sampled_from(["https://a.example/x?utm=1"]) | st.none(),
    st.floats(0, 1e9),
)


def _reference_deltas(groups: list[tuple[str, list[Obs]]], emitted: Any, scope: str) -> list[bytes]:
    """What the rule (``aggregate``) and the model (``FunnelDelta.build`` + ``encode``) give."""
    rows = aggregate.retrieval_contributions(groups)
    changes = aggregate.diff(rows, aggregate.rows_from_json(emitted))
    return [encode(FunnelDelta.build(k, c, scope=scope)) for k, c in sorted(changes.items())]


@settings(max_examples=300, deadline=None)
@given(observations=st.lists(_obs, min_size=1, max_size=7, unique_by=lambda o: o[0]), first=st.integers(1, 7))
def test_wire_close_is_the_models_encoding_of_the_rule(
    observations: list[tuple[Any, ...]], first: int
) -> None:
    state = new_state(CTI, 3)
    for upto, rev in ((first, 0), (len(observations), 1)):  # a close, then a late re-close
        state["obs"] = [list(o) for o in observations[:upto]]
        state["closed"] = False
        emitted = state["emitted"]
        obs = [Obs(*o) for o in state["obs"]]
        groups = [(aggregate.retrieval_status(g, True), g) for g in aggregate.split_retrievals(obs)]
        out = correlate.close(state, now=1.0)
        scope = f"retrieval:{CTI}:r{rev}"
        assert [v for _k, v in out.delta_wire] == _reference_deltas(groups, emitted, scope)
        for k, v in out.delta_wire:
            d = decode_delta(v)
            assert k == d.contribution_id.encode() == contribution_id(scope, d.key).encode()
        for k, v in out.record_wire:
            assert encode(decode_retrieval(v)) == v and k == CTI.encode()
        assert [r.status for r in out.records] == [s for s, _g in groups]
        assert out.corroborated == sum(1 for s, _g in groups if s == "corroborated")
        assert state["emitted"] == aggregate.rows_to_json(aggregate.retrieval_contributions(groups))


@settings(max_examples=100, deadline=None)
@given(ob=_obs)
def test_wire_standalone_is_the_models_encoding_of_the_rule(ob: tuple[Any, ...]) -> None:
    ev = {
        "event_id": ob[0], "event_type": "retrieved", "source_role": ob[1], "emitter": ob[2],
        "timestamp": aggregate.from_us(ob[3]).isoformat(), "canonical_url": ob[4], "content_id": ob[5],
    }  # fmt: skip
    out = correlate.standalone(ev, now=0.0)
    o = aggregate.compact_observation(ev, 0.0)
    assert [v for _k, v in out.delta_wire] == _reference_deltas(
        [("standalone", [o])], [], f"retrieval:{o.id}:r0"
    )
    ((key, value),) = out.record_wire
    assert key == o.id.encode() and encode(decode_retrieval(value)) == value


def test_a_retrieval_the_timer_could_not_handle_is_refused_at_once_with_its_reason() -> None:
    """RETRIEVALS is written by normalize only, but a record of another writer (or a bug) must
    be dead-lettered by the batch, never reach a close it would make fail on every tick."""
    good = retrieval("agent", session=True)
    ob = correlate.Correlator._check(good)
    assert isinstance(ob, Obs) and ob == aggregate.compact_observation(good, 0.0)
    assert ob.ts == aggregate.ts_us(good["timestamp"]) and ob.source_role == "agent"
    refused = {
        "not an object": [good],
        "another event type": {**good, "event_type": "cited"},
        "numeric event id": {**good, "event_id": 7},
        "numeric timestamp": {**good, "timestamp": 1768471801},
        "bad timestamp": {**good, "timestamp": "yesterday"},
        "no timestamp": {k: v for k, v in good.items() if k != "timestamp"},
        "numeric canonical url": {**good, "canonical_url": 5},
        "list content id": {**good, "content_id": ["a"]},
        "object session": {**good, "session_id": {"x": 1}},
    }
    for case, ev in refused.items():
        why = correlate.Correlator._check(ev)
        assert type(why) is str and why, case
    assert "canonical_url is not a string" in str(
        correlate.Correlator._check(refused["numeric canonical url"])
    )


def test_observation_records_are_checked_like_events() -> None:
    """RETRIEVALS observation records (schemas.records.encode_observation): a well-formed one is
    the event's observation; a malformed one is refused with its reason, never reaches a close."""
    ev = retrieval("edge")
    rec = loads(encode_observation({**ev, "timestamp": aggregate.from_us(aggregate.ts_us(ev["timestamp"]))}))
    assert rec[0] == "r1" and len(rec) == 13
    ob, cti = correlate.Correlator._check_record(rec)  # type: ignore[misc]
    assert ob == aggregate.compact_observation(ev, 0.0) and cti == CTI
    bad = {
        "another tag": ["r0", *rec[1:]],
        "short": rec[:-1],
        "numeric event id": [*rec[:1], 5, *rec[2:]],
        "text timestamp": [*rec[:4], ev["timestamp"], *rec[5:]],
        "boolean timestamp": [*rec[:4], True, *rec[5:]],
        "timestamp past year 9999": [*rec[:4], 10**18, *rec[5:]],
        "numeric url": [*rec[:5], 7, *rec[6:]],
        "numeric id": [*rec[:12], 3],
    }
    for case, value in bad.items():
        assert type(correlate.Correlator._check_record(value)) is str, case
    assert correlate.Correlator._check_record(bad["numeric url"]) == "canonical_url is not a string"
