"""processors.correlate: grouping by Content-Telemetry-ID, corroboration, late moves, standalone."""

from __future__ import annotations

from typing import Any

from processors import correlate, normalize
from processors.correlate import CorrelateConfig, add_observations, deadline, new_state, step
from schemas.codec import dumps, loads
from schemas.funnel import FunnelCounts, FunnelKey, merge_rows
from schemas.records import FunnelDelta

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
    ((key, value),) = out.retrievals
    assert key == (cti or loads(value)["event_id"]).encode()
    result: dict[str, Any] = loads(value)
    return result


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
    assert out is None and tomb == {"k": CTI, "p": 2, "rev": 0, "tomb": True}
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
