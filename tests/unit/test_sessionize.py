"""processors.sessionize: session state, close rules, dedupe, late corrections, tombstones."""

from __future__ import annotations

from typing import Any

from processors import normalize, sessionize
from processors.sessionize import SessionizeConfig, apply, close, deadline, new_state, step
from schemas.codec import dumps, loads
from schemas.funnel import FunnelCounts, FunnelKey, merge_rows
from schemas.records import FunnelDelta

SID = "550e8400-e29b-41d4-a716-446655440000"
URL_A = "https://www.wirecutter.com/reviews/a"
URL_B = "https://www.ft.com/content/b"
CFG = SessionizeConfig(inactivity_timeout=100.0, end_grace=2.0, lateness=1000.0)


def envelope(
    events: list[dict[str, Any]], **envelope: Any
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    doc = {"document_type": "event_batch", "schema_version": "0.1", "session_id": SID, "events": events}
    doc.update(envelope)
    out = normalize.normalize_message(dumps(doc), headers=[("ctpipe-emitter", b"sdk")])
    assert out.dead_letter is None, out.reason
    (_, value), *_ = out.events
    return normalize.decode_envelope(value)


def e(type_: str, ts: str, url: str | None = URL_A, **data: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {"type": type_, "timestamp": f"2026-01-15T10:{ts}Z"}
    if url:
        ev["content_url"] = url
    if data:
        ev["data"] = data
    return ev


def total(deltas: list[FunnelDelta]) -> dict[FunnelKey, FunnelCounts]:
    """Deltas summed per row (zero measures and rows dropped), as the sink reads them."""
    out = {}
    for k, v in merge_rows((d.key, d.counts) for d in deltas).items():
        if not v.is_zero():
            out[k] = FunnelCounts({m: n for m, n in v.measures.items() if n}, dict(v.conversion_value))
    return out


def fresh() -> dict[str, Any]:
    return new_state(SID, 3)


def test_batches_reconstruct_one_session_and_duplicates_are_dropped() -> None:
    state = fresh()
    h1, evs1 = envelope([e("turn_started", "30:00", None), e("content_grounded", "30:01")], agent_id="bot")
    h2, evs2 = envelope([e("content_cited", "30:05"), e("content_retrieved", "30:01")])
    r1 = apply(state, h1, evs1, now=10.0)
    r2 = apply(state, h2, evs2, now=11.0)
    r3 = apply(state, h1, evs1, now=12.0)  # redelivery
    assert (r1.new, r2.new, r3.new, r3.duplicates) == (2, 2, 0, 2)
    assert len(state["ids"]) == 4 and state["dup"] == 2
    assert [x[1] for x in state["ev"]] == ["turn_started", "grounded", "cited"]  # retrieved: id only
    assert state["la"] == 11.0  # a pure redelivery is no activity
    assert state["h"]["agent_id"] == "bot" and state["em"] == ["sdk"]
    assert deadline(state, CFG) == 111.0  # not ended: inactivity timeout


def test_close_on_ended_after_grace_emits_deltas_and_record() -> None:
    state = fresh()
    h, evs = envelope(
        [e("content_grounded", "30:01", scope="session"), e("content_cited", "30:05", URL_B)],
        agent_id="bot",
        started_at="2026-01-15T10:30:00Z",
    )
    apply(state, h, evs, now=10.0)
    end = {"session_id": SID, "ended_at": "2026-01-15T10:35:00Z", "source_kind": "session"}
    apply(state, end, [], now=20.0)
    assert state["h"]["ended"] and deadline(state, CFG) == 22.0
    assert step(state, 21.9, CFG, drain=False) == (None, None)
    new, closed = step(state, 22.0, CFG, drain=False)
    assert new is state and closed is not None
    rec = closed.record
    assert (rec.revision, rec.closed_by, rec.event_count, rec.grounded, rec.cited) == (0, "ended", 2, 1, 1)
    assert rec.cited_without_grounded == 1 and rec.agent_id == "bot"
    assert rec.started_at is not None and rec.ended_at is not None
    rows = total(closed.deltas)
    cited = next(k for k in rows if rows[k].measures.get("cited"))
    assert cited.agent_id == "bot" and cited.owner_domain == "ft.com"
    assert rows[cited].measures["cited_without_grounded"] == 1
    assert all(d.origin == f"session:{SID}:r0" for d in closed.deltas)
    # ids are deterministic: closing the same state again (a replay) gives the same ids
    again = close(loads(dumps({**state, "rev": -1, "emitted": [], "closed": False})), 22.0, "ended")
    assert [d.contribution_id for d in again.deltas] == [d.contribution_id for d in closed.deltas]
    assert state["closed"] and deadline(state, CFG) == 22.0 + CFG.lateness


def test_oa_session_end_without_ended_at_ends_the_session() -> None:
    state = fresh()
    apply(
        state,
        {
            "session_id": SID,
            "source_kind": "oa_session_end",
            "outcome_type": "conversion",
            "outcome_value_minor": 4999,
            "outcome_currency": "EUR",
        },
        [],
        now=5.0,
    )
    _, closed = step(state, 7.0, CFG, drain=False)
    assert closed is not None and closed.record.outcome_value_minor == 4999
    assert closed.record.outcome_currency == "EUR" and closed.deltas == []


def test_inactivity_and_drain_close() -> None:
    state = fresh()
    h, evs = envelope([e("content_displayed", "30:01", display_type="embed")])
    apply(state, h, evs, now=0.0)
    assert step(state, 99.0, CFG, drain=False) == (None, None)
    _, closed = step(state, 100.0, CFG, drain=False)
    assert closed is not None and closed.record.closed_by == "inactivity"
    assert closed.record.displayed_without_grounded == 1 and closed.record.displayed_without_cited == 1
    other = fresh()
    apply(other, h, evs, now=0.0)
    _, drained = step(other, 1.0, CFG, drain=True)
    assert drained is not None and drained.record.closed_by == "drain"


def test_late_event_reopens_and_the_correction_sums_to_the_truth() -> None:
    late_state = fresh()
    h, evs = envelope(
        [e("content_cited", "30:05", URL_B), e("content_displayed", "30:06", URL_B, display_type="link")],
        agent_id="bot",
        ended_at="2026-01-15T10:40:00Z",
    )
    apply(late_state, h, evs, now=0.0)
    _, first = step(late_state, 5.0, CFG, drain=False)
    assert first is not None
    # the grounding arrives late (within lateness): revision 1 corrects the departures
    h2, late = envelope([e("content_grounded", "30:01", URL_B, tokens_ingested=7)])
    res = apply(late_state, h2, late, now=50.0)
    assert res.reopened and res.new == 1 and late_state["late"] == 1 and not late_state["closed"]
    _, second = step(late_state, 52.0, CFG, drain=False)
    assert second is not None and second.record.revision == 1 and second.record.late_events == 1
    assert all(d.origin == f"session:{SID}:r1" for d in second.deltas)
    assert any(v < 0 for d in second.deltas for v in d.measures.values())  # departures withdrawn
    # truth: the same events in one on-time session
    truth_state = fresh()
    apply(truth_state, h, evs + late, now=0.0)
    _, truth = step(truth_state, 5.0, CFG, drain=False)
    assert truth is not None
    assert total(first.deltas + second.deltas) == total(truth.deltas)
    ids = {d.contribution_id for d in first.deltas} & {d.contribution_id for d in second.deltas}
    assert not ids  # revisions never share an id


def test_beyond_lateness_leaves_a_tombstone_that_refuses_events() -> None:
    state = fresh()
    h, evs = envelope([e("content_cited", "30:05")], ended_at="2026-01-15T10:40:00Z")
    apply(state, h, evs, now=0.0)
    step(state, 3.0, CFG, drain=False)
    assert step(state, 3.0 + CFG.lateness - 1, CFG, drain=False) == (None, None)
    tomb, _ = step(state, 3.0 + CFG.lateness, CFG, drain=False)
    cited_at = 1_768_473_005_000_000  # 2026-01-15T10:30:05Z: its newest event, kept (retention)
    assert tomb == {"k": SID, "p": 3, "rev": 0, "tomb": True, "mt": cited_at}
    assert deadline(tomb, CFG) is None
    h2, late = envelope([e("content_engaged", "59:00", engagement_type="link_click")])
    assert apply(tomb, h2, late, now=5000.0).beyond_lateness
    assert sessionize.LATE_REASON == "late:beyond-lateness"


def test_header_merge_keeps_first_identity_widest_times_latest_outcome() -> None:
    h: dict[str, Any] = {}
    assert sessionize.merge_header(h, {"agent_id": "a", "started_at": "2026-01-15T10:30:00Z"})
    assert sessionize.merge_header(
        h, {"agent_id": "b", "started_at": "2026-01-15T10:29:00Z", "user_segments": ["x", "y"]}
    )
    assert not sessionize.merge_header(h, {"agent_id": "c", "started_at": "2026-01-15T10:31:00Z"})
    assert h["agent_id"] == "a" and h["started_at"] == "2026-01-15T10:29:00Z"
    assert sessionize.merge_header(h, {"outcome_type": "conversion", "outcome_value_minor": 5})
    assert h["outcome_value_minor"] == 5 and h["user_segments"] == ["x", "y"] and "ended" not in h


def test_a_session_sealed_into_chunks_closes_exactly_like_one_in_a_single_state() -> None:
    batches = [
        [e("turn_started", "30:00", None), e("content_grounded", "30:01", scope="session")],
        [e("content_retrieved", "30:01"), e("content_cited", "30:05"), e("content_displayed", "30:06")],
        [e("turn_started", "31:00", None), e("content_grounded", "31:01", URL_B)],
        [
            e("content_cited", "31:05", URL_B),
            e("content_engaged", "31:09", URL_B, engagement_type="link_click"),
        ],
    ]
    envelopes = [envelope(b, agent_id="bot") for b in batches]
    whole, chunked = fresh(), fresh()
    chunks: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, (h, evs) in enumerate(envelopes):
        apply(whole, h, evs, now=10.0 + i)
        apply(chunked, h, evs, now=10.0 + i, seen=seen)
        sealed = sessionize.seal(chunked, limit=2)
        if sealed is not None:
            chunks.append(loads(dumps(sealed)))  # as stored and read back
    # a redelivered envelope is still a duplicate although its ids live in a sealed chunk
    assert apply(chunked, *envelopes[0], now=20.0, seen=seen).duplicates == 2
    assert chunked["nc"] == len(chunks) == 4 and chunked["ids"] == [] and len(whole["ids"]) == 9
    assert sessionize.seal(chunked, limit=2) is None
    a = close(whole, 50.0, "drain")
    b = close(chunked, 50.0, "drain", chunks)
    assert total(a.deltas) == total(b.deltas) and a.deltas == b.deltas
    assert a.record.model_copy(update={"duplicate_events": 0}) == b.record.model_copy(
        update={"duplicate_events": 0}
    )
    assert b.record.event_count == 9
    assert deadline(chunks[0], CFG) is None  # the timer never looks at a chunk
    assert sessionize.chunk_key(SID, 3) == SID.encode() + b"\x003"


def test_a_tombstone_is_never_sealed() -> None:
    assert sessionize.seal(sessionize.tombstone(fresh()), limit=1) is None


def test_a_click_token_fragment_counts_engaged_destination_and_the_agents_click_counts_engaged() -> None:
    """CT 0.1 7.1: a landing page reports a click-out keyed by ctx_token instead of session_id.
    It corroborates the agent's own report of the same click: counted apart
    (``engaged_destination``), so ``engaged`` counts the click once."""
    token = "ct_" + "7f" * 16
    click = e("content_engaged", "31:00", URL_A, engagement_type="link_click")
    doc = {
        "document_type": "event",
        "schema_version": "0.1",
        "ctx_token": token,
        "agent_id": "bot",
        "started_at": "2026-01-15T10:31:00Z",
        "event": click,
    }
    out = normalize.normalize_message(dumps(doc), headers=[("ctpipe-emitter", b"destination:wirecutter.com")])
    assert out.dead_letter is None, out.reason
    (_, value), *_ = out.events
    h, evs = normalize.decode_envelope(value)
    fragment = new_state(token, 1)
    apply(fragment, h, evs, now=1.0)
    _, by_token = step(fragment, 2.0, CFG, drain=True)
    agent = fresh()
    h2, evs2 = envelope([click], agent_id="bot")
    apply(agent, h2, evs2, now=1.0)
    _, by_agent = step(agent, 2.0, CFG, drain=True)
    assert by_token is not None and by_agent is not None
    [(key, counts)] = total(by_token.deltas).items()
    assert counts.measures == {"engaged_destination": 1}
    assert (key.owner_domain, key.agent_id, key.source_role) == ("wirecutter.com", "bot", "agent")
    [(agent_key, agent_counts)] = total(by_agent.deltas).items()
    assert agent_counts.measures == {"engaged": 1, "engaged_link_click": 1}
    assert agent_key == key  # the same row: one click, each report in its own measure
    assert by_token.record.session_id == token and by_token.record.engaged == 0
    assert by_agent.record.engaged == 1
