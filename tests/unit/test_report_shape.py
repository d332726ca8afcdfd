"""The report's shape (``sinks.report.shape``) against ``schemas.funnel.totals``: pure."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings, strategies as st

from schemas.funnel import MEASURES, FunnelCounts, FunnelKey, merge_rows, totals
from sinks.report import ReportError, as_totals, funnel_report, parse_bound, shape

HOUR = datetime(2026, 3, 4, 5, tzinfo=UTC)

keys = st.builds(
    FunnelKey,
    hour=st.sampled_from([HOUR, HOUR.replace(hour=6)]),
    owner_domain=st.sampled_from(["", "a.com", "b.org", "Z.net"]),
    content_key=st.sampled_from(["", "c1", "https://a.com/x", "c2"]),
    agent_id=st.sampled_from(["", "agent"]),
    content_scope=st.just(""),
    source_role=st.sampled_from(["agent", "edge"]),
)


@st.composite
def counts(draw: st.DrawFn) -> FunnelCounts:
    c = FunnelCounts()
    for m in draw(st.lists(st.sampled_from(MEASURES), max_size=4)):
        c.add(m, draw(st.integers(0, 5)))
    if draw(st.booleans()):
        c.add_value(draw(st.sampled_from(["USD", "EUR"])), draw(st.integers(-5, 5)))
    return c


def _group(rows: list[tuple[FunnelKey, FunnelCounts]]) -> list[tuple[str, str, FunnelCounts]]:
    """What the ClickHouse query returns: sums per (owner, content), any order."""
    out: dict[tuple[str, str], FunnelCounts] = {}
    for k, c in rows:
        out.setdefault((k.owner_domain, k.content_key), FunnelCounts()).merge(c)
    return [(o, ck, c) for (o, ck), c in reversed(list(out.items()))]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(keys, counts()), max_size=25))
def test_report_content_rows_equal_schemas_funnel_totals(rows: list[tuple[FunnelKey, FunnelCounts]]) -> None:
    report = shape(_group(rows))
    assert as_totals(report) == totals(merge_rows(rows))
    grand = FunnelCounts()
    for o in report["owners"]:
        owner_sum = FunnelCounts()
        for c in o["content"]:
            assert set(c) == {"content_key", *MEASURES, "conversion_value"}
            owner_sum.merge(FunnelCounts({m: c[m] for m in MEASURES}, dict(c["conversion_value"])))
        assert o["totals"] == owner_sum.as_dict() and o["content"]
        grand.merge(owner_sum)
    assert report["totals"] == grand.as_dict()
    owners = [o["owner_domain"] for o in report["owners"]]
    assert owners == sorted(set(owners))


def test_zero_rows_are_omitted_and_filters_echoed() -> None:
    zero = FunnelCounts()
    zero.add_value("USD", 0)
    one = FunnelCounts({"cited": 1})
    report = shape(
        [("a.com", "x", zero), ("a.com", "y", one), ("b.com", "z", FunnelCounts())],
        owner="a.com",
        since=HOUR,
        until=None,
        generated_at=HOUR,
    )
    assert report["generated_at"] == "2026-03-04T05:00:00Z"
    assert report["filters"] == {"owner": "a.com", "since": "2026-03-04T05:00:00Z", "until": None}
    assert [o["owner_domain"] for o in report["owners"]] == ["a.com"]
    assert [c["content_key"] for c in report["owners"][0]["content"]] == ["y"]
    assert report["totals"]["cited"] == 1 and report["totals"]["conversion_value"] == {}


def test_empty_report_has_every_measure() -> None:
    report = shape([])
    assert report["owners"] == [] and set(report["totals"]) == {*MEASURES, "conversion_value"}


def test_bounds_parse_as_utc_and_a_bare_until_date_includes_the_day() -> None:
    assert parse_bound("2026-03-04") == datetime(2026, 3, 4, tzinfo=UTC)
    assert parse_bound("2026-03-04", end=True) == datetime(2026, 3, 5, tzinfo=UTC)
    assert parse_bound("2026-03-04T05:00:00Z") == HOUR
    assert parse_bound("2026-03-04T07:00:00+02:00") == HOUR
    assert parse_bound("2026-03-04T05:00") == HOUR
    assert parse_bound(None) is None
    with pytest.raises(ReportError):
        parse_bound("yesterday")


def test_until_before_since_is_refused_before_any_query() -> None:
    with pytest.raises(ReportError):
        funnel_report(None, since="2026-03-05", until="2026-03-04T00:00Z")  # type: ignore[arg-type]
