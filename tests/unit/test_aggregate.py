"""processors.aggregate: every counting rule of schemas.funnel on small hand-made sessions."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings, strategies as st

from processors import aggregate
from processors.aggregate import Obs, SEvent
from schemas.codec import dumps
from schemas.funnel import KEY_FIELDS, FunnelCounts, FunnelKey, hour_of, merge_rows
from schemas.records import FunnelDelta, decode_delta, encode
from schemas.urls import canonical_url, owner_domain

T0 = datetime(2026, 1, 15, 10, 30, tzinfo=UTC)
URL_A = "https://www.wirecutter.com/reviews/a"
URL_B = "https://www.ft.com/content/b"


def us(minutes: float) -> int:
    return aggregate.ts_us(T0) + int(minutes * 60_000_000)


def ev(
    type_: str,
    minute: float,
    url: str | None = URL_A,
    cid: str | None = None,
    *,
    role: str = "agent",
    agent: str | None = None,
    scope_: str | None = None,
    **data: object,
) -> SEvent:
    canon = canonical_url(url) if url else None
    return SEvent(
        id=f"{type_}-{minute}-{url}-{cid}",
        type=type_,
        ts=us(minute),
        owner_domain=(owner_domain(url) if url else None) or "",
        content_key=cid or canon or "",
        canonical_url=canon,
        content_id=cid,
        agent_id=agent,
        content_scope=scope_,
        source_role=role,
        **data,  # type: ignore[arg-type]
    )


def key(url: str | None = URL_A, cid: str | None = None, minute: float = 0, role: str = "agent") -> FunnelKey:
    canon = canonical_url(url) if url else None
    return FunnelKey(
        hour_of(datetime.fromtimestamp(us(minute) / 1e6, UTC)),
        (owner_domain(url) if url else None) or "",
        cid or canon or "",
        "bot",
        "news",
        role,
    )


def contrib(*events: SEvent) -> dict[FunnelKey, FunnelCounts]:
    return aggregate.session_contributions(events, agent_id="bot", content_scope="news")


def m(rows: dict[FunnelKey, FunnelCounts], k: FunnelKey) -> dict[str, int]:
    return dict(rows[k].measures)


def test_grounded_live_cached_and_tokens() -> None:
    rows = contrib(
        ev("grounded", 1, cached=False, tokens=4200),
        ev("grounded", 2, cached=True, tokens=100),
        ev("grounded", 3),  # cached absent -> live, tokens absent -> 0
    )
    assert m(rows, key()) == {
        "grounded": 3,
        "grounded_live": 2,
        "grounded_cached": 1,
        "tokens_ingested": 4300,
        "turns_influenced": 3,  # no scope -> 1 each
    }


def test_turns_influenced_session_scope_counts_turns_at_or_after() -> None:
    turns = [ev("turn_started", t, url=None) for t in (0, 1, 2, 3)]
    rows = contrib(*turns, ev("grounded", 1, scope="session"), ev("grounded", 2, URL_B, scope="turn"))
    assert rows[key()].measures["turns_influenced"] == 3  # turns at minute 1, 2, 3
    assert rows[key(URL_B)].measures["turns_influenced"] == 1
    # a session-scoped grounding before the first turn (CT 4.2) influences them all
    rows = contrib(*turns, ev("grounded", -5, scope="session"))
    assert rows[key(minute=-5)].measures["turns_influenced"] == 4
    # ... and one after the last influences none
    rows = contrib(*turns, ev("grounded", 9, scope="session"))
    assert rows[key(minute=9)].measures.get("turns_influenced", 0) == 0


def test_cited_buckets() -> None:
    rows = contrib(
        ev("grounded", 0),
        ev("cited", 1, citation_type="paraphrase", position="primary"),
        ev("cited", 2),  # absent -> unclassified
        ev("cited", 3, citation_type="x-custom", position="footnote"),  # outside core -> other
    )
    got = m(rows, key())
    assert got["cited"] == 3
    assert got["cited_paraphrase"] == 1 and got["cited_unclassified"] == 1 and got["cited_other"] == 1
    assert got["cited_position_primary"] == 1
    assert got["cited_position_unclassified"] == 1
    assert got["cited_position_other"] == 1
    assert "cited_without_grounded" not in got


def test_displayed_and_engaged_buckets() -> None:
    rows = contrib(
        ev("grounded", 0),
        ev("cited", 0),
        ev("displayed", 1, display_type="link"),
        ev("displayed", 1, display_type="x-carousel"),
        ev("displayed", 1),
        ev("engaged", 2, engagement_type="link_click"),
        ev("engaged", 2, engagement_type="agent_navigate"),
        ev("engaged", 2, engagement_type="copy"),
        ev("engaged", 2),
    )
    got = m(rows, key())
    assert got["displayed"] == 3 and got["displayed_link"] == 1 and got["displayed_other"] == 2
    assert got["engaged"] == 4
    assert got["engaged_link_click"] == 1
    assert got["engaged_agent_navigate"] == 1
    assert got["engaged_other"] == 2


def test_departures_cited_without_grounded_and_displayed_without() -> None:
    rows = contrib(
        ev("grounded", 0, URL_A),
        ev("cited", 1, URL_A),  # grounded: fine
        ev("cited", 1, URL_B),  # hallucinated: cited without grounded (CT 4.3)
        ev("displayed", 2, URL_B),  # cited but not grounded
        ev("displayed", 2, "https://www.youtube.com/watch?v=x", display_type="embed"),  # neither
    )
    assert rows[key(URL_B)].measures["cited_without_grounded"] == 1
    assert "cited_without_grounded" not in rows[key(URL_A)].measures
    b = rows[key(URL_B)].measures
    assert b.get("displayed_without_cited", 0) == 0 and b["displayed_without_grounded"] == 1
    yt = rows[key("https://www.youtube.com/watch?v=x")].measures
    assert yt["displayed_without_cited"] == 1 and yt["displayed_without_grounded"] == 1


def test_same_content_by_content_id_or_canonical_url() -> None:
    # grounded under a content_id only (cached, URL not preserved); cited under URL + same id
    rows = contrib(ev("grounded", 0, None, "ft:123"), ev("cited", 1, URL_B, "ft:123"))
    assert "cited_without_grounded" not in rows[key(URL_B, "ft:123")].measures
    # same canonical URL, different content ids: still the same content
    rows = contrib(ev("grounded", 0, URL_B + "?utm_source=x", "v1"), ev("cited", 1, URL_B, "v2"))
    assert canonical_url(URL_B + "?utm_source=x") == canonical_url(URL_B)
    assert "cited_without_grounded" not in rows[key(URL_B, "v2")].measures
    # neither matches: departure
    rows = contrib(ev("grounded", 0, URL_A, "a"), ev("cited", 1, URL_B, "b"))
    assert rows[key(URL_B, "b")].measures["cited_without_grounded"] == 1


def test_commerce_checkouts_and_value_by_currency() -> None:
    rows = aggregate.session_contributions(
        [
            SEvent(
                "c1",
                "commerce.checkout_completed",
                us(1),
                "",
                "p1",
                None,
                None,
                None,
                None,
                "agent",
                currency="USD",
                order_value=34999,
            ),
            SEvent(
                "c2",
                "commerce.checkout_completed",
                us(2),
                "",
                "p1",
                None,
                None,
                None,
                None,
                "agent",
                currency="EUR",
                order_value=100,
            ),
            SEvent("c3", "commerce.checkout_completed", us(3), "", "p1", None, None, None, None, "agent"),
            SEvent("c4", "commerce.cart_add", us(3), "", "p1", None, None, None, None, "agent"),
            SEvent("t1", "turn_completed", us(3), "", "", None, None, None, None, "agent"),
        ],
        agent_id="shop",
        content_scope="",
    )
    k = FunnelKey(hour_of(T0), "", "p1", "shop", "", "agent")
    assert set(rows) == {k}  # cart_add and turns add nothing
    assert rows[k].measures == {"checkouts": 3}
    assert rows[k].conversion_value == {"USD": 34999, "EUR": 100}


def test_retrieved_ignored_by_sessions_and_row_dimensions() -> None:
    rows = aggregate.session_contributions(
        [ev("retrieved", 0), ev("grounded", 0, agent="own-agent", scope_="own-scope"), ev("grounded", 75)],
        agent_id="session-agent",
        content_scope="session-scope",
    )
    hour0 = hour_of(T0)
    assert set(rows) == {
        FunnelKey(hour0, "wirecutter.com", canonical_url(URL_A) or "", "own-agent", "own-scope", "agent"),
        # 10:30 + 75 min = 11:45 -> the next hour; session values fill in the envelope's gaps
        FunnelKey(
            hour_of(datetime(2026, 1, 15, 11, tzinfo=UTC)),
            "wirecutter.com",
            canonical_url(URL_A) or "",
            "session-agent",
            "session-scope",
            "agent",
        ),
    }


def test_compact_event_from_canonical_json() -> None:
    from schemas.codec import loads
    from schemas.normalize import ingest
    from schemas.records import encode_event

    doc = (
        b'{"schema_version":"0.1","session_id":"550e8400-e29b-41d4-a716-446655440000","agent_id":"a",'
        b'"started_at":"2026-01-15T10:30:00Z",'
        b'"events":[{"type":"content_grounded","timestamp":"2026-01-15T10:30:01.5Z",'
        b'"content_url":"https://www.FT.com/content/b?utm_source=x","content_id":"ft:1",'
        b'"data":{"scope":"session","cached":true,"tokens_ingested":12}}]}'
    )
    res = ingest(doc, emitter="t")
    assert res.accepted, res.errors
    se = aggregate.compact_event(loads(encode_event(res.events[0])))
    assert se.type == "grounded" and se.cached is True and se.tokens == 12 and se.scope == "session"
    assert se.content_key == "ft:1" and se.owner_domain == "ft.com" and se.agent_id == "a"
    assert se.ts == aggregate.ts_us(datetime(2026, 1, 15, 10, 30, 1, 500000, tzinfo=UTC))
    # the stored list form round-trips
    assert SEvent(*loads(aggregate.orjson.dumps(list(se)))) == se


def obs(i: int, role: str, url: str | None, cid: str | None = None, minute: float = 0) -> Obs:
    return Obs(
        f"e{i}",
        role,
        role,
        us(minute),
        canonical_url(url) if url else None,
        cid,
        None,
        None,
        None,
        (owner_domain(url) if url else None),
        url,
        0.0,
    )


def test_split_retrievals_by_url_merged_by_content_id() -> None:
    a1, a2 = obs(1, "agent", URL_A), obs(2, "edge", URL_A)
    # redirect: agent saw the short URL, origin the canonical one, both with the content_id
    r1 = obs(3, "agent", "https://wc.example/s/1", "wc:1")
    r2 = obs(4, "origin", URL_B, "wc:1")
    lone = obs(5, "edge", "https://www.ft.com/other")
    groups = aggregate.split_retrievals([a1, r1, a2, r2, lone])
    assert groups == [[a1, a2], [r1, r2], [lone]]
    assert [aggregate.retrieval_status(g, True) for g in groups] == [
        "corroborated",
        "corroborated",
        "uncorroborated",
    ]
    assert aggregate.retrieval_status([lone], False) == "standalone"


def test_split_retrievals_of_two_observations_is_the_general_split() -> None:
    """The two-observation fast path answers what the union-find does, for every pairing of
    URL (equal, different, absent) and content_id (equal, different, absent, empty)."""
    urls = [URL_A, URL_B, None]
    cids = ["wc:1", "wc:2", None, ""]
    pairs = 0
    for ua in urls:
        for ub in urls:
            for ca in cids:
                for cb in cids:
                    a, b = obs(1, "agent", ua, ca), obs(2, "edge", ub, cb)
                    fast = aggregate.split_retrievals([a, b])
                    assert fast == aggregate._split([a, b]), (ua, ub, ca, cb)
                    pairs += 1
    assert pairs == 144
    same = aggregate.split_retrievals([obs(1, "agent", URL_A), obs(2, "edge", URL_A)])
    assert (
        len(same) == 1
        and len(aggregate.split_retrievals([obs(1, "agent", URL_A), obs(2, "edge", URL_B)])) == 2
    )


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=aggregate.MIN_US, max_value=aggregate.MAX_US))
def test_us_text_is_how_dumps_writes_the_datetime(value: int) -> None:
    assert aggregate.us_text(value) == dumps(aggregate.from_us(value))[1:-1].decode()


def test_us_text_edges() -> None:
    for value in (aggregate.MIN_US, aggregate.MAX_US, 0, 1, -1, 59_999_999, 60_000_000, us(0)):
        assert aggregate.us_text(value) == dumps(aggregate.from_us(value))[1:-1].decode()
    assert aggregate.us_text(us(0) + 1) == "2026-01-15T10:30:00.000001Z"


def test_obs_of_is_the_named_tuple_of_the_values() -> None:
    values = ["e1", "agent", "em", us(0), URL_A, None, "s1", "a1", None, "example.com", URL_A, 1.5]
    ob = aggregate.obs_of(values)
    assert type(ob) is Obs and ob == Obs(*values) and ob.ts == us(0) and ob.arrival == 1.5


def test_retrieval_contributions_in_each_observations_own_row() -> None:
    agent = obs(1, "agent", URL_A, minute=0)
    edge = obs(2, "edge", URL_A, "wc:1", minute=40)  # next hour, and its own content key
    rows = aggregate.retrieval_contributions([("corroborated", [agent, edge])])
    ka = aggregate.obs_key(agent)
    ke = aggregate.obs_key(edge)
    assert ka != ke and ke.content_key == "wc:1" and ke.source_role == "edge"
    assert rows[ka].measures == {"retrieved": 1, "retrieved_corroborated": 1}
    assert rows[ke].measures == {"retrieved": 1, "retrieved_corroborated": 1}


def test_diff_sums_back_to_new_totals() -> None:
    old = contrib(ev("cited", 1, URL_B), ev("displayed", 2, URL_B))
    new = contrib(ev("cited", 1, URL_B), ev("displayed", 2, URL_B), ev("grounded", 3, URL_B, tokens=5))
    d = aggregate.diff(new, old)
    kb = key(URL_B, minute=1)
    # late grounding removes both departures and adds the grounding
    assert d[kb].measures == {
        "cited_without_grounded": -1,
        "displayed_without_grounded": -1,
        "grounded": 1,
        "grounded_live": 1,
        "tokens_ingested": 5,
        "turns_influenced": 1,
    }
    total = merge_rows([*old.items(), *d.items()])
    assert {k: v.as_dict() for k, v in total.items() if not v.is_zero()} == {
        k: v.as_dict() for k, v in new.items()
    }
    assert aggregate.diff(new, new) == {}
    assert (
        aggregate.rows_from_json(aggregate.orjson.loads(aggregate.orjson.dumps(aggregate.rows_to_json(new))))
        == new
    )


# --- wire deltas and the O(1) departure index, against their definitions --------------------------

_name = st.sampled_from(["", "a.example", "b.example"])
_key = st.builds(
    FunnelKey,
    st.integers(-50_000, 500_000).map(lambda h: aggregate.hour_from_us(h * aggregate.HOUR_US)),
    _name,
    _name,
    _name,
    _name,
    st.sampled_from(["agent", "edge"]),
)
_counts = st.builds(
    FunnelCounts,
    st.dictionaries(st.sampled_from(["retrieved", "cited", "grounded", "checkouts"]), st.integers(-3, 3)),
    st.dictionaries(st.sampled_from(["EUR", "USD"]), st.integers(-500, 500)),
)


@settings(max_examples=300, deadline=None)
@given(
    new=st.dictionaries(_key, _counts, max_size=5),
    old=st.dictionaries(_key, _counts, max_size=5),
    scope=st.sampled_from(["session:s:r1", "retrieval:c:r0"]),
)
def test_wire_deltas_are_the_encoded_diff(
    new: dict[FunnelKey, FunnelCounts], old: dict[FunnelKey, FunnelCounts], scope: str
) -> None:
    emitted = aggregate.rows_to_json(old)
    expected = [
        encode(FunnelDelta.build(k, c, scope=scope))
        for k, c in sorted(aggregate.diff(new, aggregate.rows_from_json(emitted)).items())
    ]
    got = aggregate.wire_deltas(aggregate.plain_rows(new), emitted, scope)
    assert [v for _k, v in got] == expected
    assert [k for k, _v in got] == [decode_delta(v).contribution_id.encode() for _k, v in got]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert (
        aggregate.rows_to_json(new)
        == [  # the state's stored form, spelled out
            [
                int((k.hour - epoch).total_seconds()),
                *(getattr(k, f) for f in KEY_FIELDS[1:]),
                c.measures,
                c.conversion_value,
            ]
            for k, c in new.items()
        ]
    )
    assert aggregate.rows_from_json(aggregate.rows_to_json(new)) == new


def _same(a: SEvent, b: SEvent) -> bool:
    """CT 4.3 "the same content", as schemas.funnel words it (the scan ``_Contents`` replaces)."""
    return bool(
        (a.content_key and a.content_key == b.content_key)
        or (a.canonical_url and a.canonical_url == b.canonical_url)
        or (a.content_id and a.content_id == b.content_id)
    )


_ident = st.sampled_from(["", "x", "y"]) | st.none()
_sev = st.builds(
    SEvent,
    id=st.just("e"),
    type=st.just("cited"),
    ts=st.just(0),
    owner_domain=st.just(""),
    content_key=st.sampled_from(["", "x", "y", "z"]),
    canonical_url=_ident,
    content_id=_ident,
    agent_id=st.none(),
    content_scope=st.none(),
    source_role=st.just("agent"),
)


@settings(max_examples=300, deadline=None)
@given(e=_sev, others=st.lists(_sev, max_size=6))
def test_content_index_is_the_same_content_rule(e: SEvent, others: list[SEvent]) -> None:
    assert (e in aggregate._Contents(others)) == any(_same(e, o) for o in others)


def test_destination_sessions_count_engagements_apart() -> None:
    """``destination=True`` (a click-token fragment): engagements count ``engaged_destination``
    only; every other stage counts as in any session."""
    events = [
        aggregate.compact_event(
            {
                "event_id": f"e{i}",
                "event_type": t,
                "timestamp": "2026-01-15T10:30:00Z",
                "owner_domain": "example.com",
                "canonical_url": "https://example.com/a",
                **fields,
            }
        )
        for i, (t, fields) in enumerate(
            [("engaged", {"engagement_type": "agent_navigate"}), ("displayed", {"display_type": "link"})]
        )
    ]
    dest = aggregate.session_contributions(events, agent_id="bot", destination=True)
    own = aggregate.session_contributions(events, agent_id="bot")
    [d] = dest.values()
    [o] = own.values()
    assert d.measures.get("engaged_destination") == 1 and "engaged" not in d.measures
    assert "engaged_agent_navigate" not in d.measures
    assert o.measures["engaged"] == 1 and o.measures["engaged_agent_navigate"] == 1
    assert "engaged_destination" not in o.measures
    assert d.measures["displayed"] == o.measures["displayed"] == 1
