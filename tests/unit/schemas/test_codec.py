"""schemas.codec.dumps: plain orjson first, the non-str-key mode only as a fallback - the bytes
must be exactly what the non-str-key mode writes, whatever the keys."""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, strategies as st

from schemas.codec import dumps

REFERENCE = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


class Colour(enum.Enum):
    RED = "red"


class Key(str):
    """A str subclass: plain orjson refuses it as a dict key."""


def reference(obj: Any) -> bytes | type[BaseException]:
    try:
        return orjson.dumps(obj, option=REFERENCE)
    except TypeError as exc:
        return type(exc)


def ours(obj: Any) -> bytes | type[BaseException]:
    try:
        return dumps(obj)
    except TypeError as exc:
        return type(exc)


_when = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, None, timezone(timedelta(hours=5, minutes=30))]),
)
_keys = st.one_of(
    st.text(max_size=8),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.booleans(),
    st.none(),
    _when,
    st.just(Colour.RED),
    st.text(max_size=4).map(Key),
)
_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),  # beyond 64 bits: both must refuse
    st.floats(allow_nan=False),
    st.text(max_size=12),
    _when,
)
_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=20,
)


@given(_values)
def test_dumps_writes_what_the_non_str_key_mode_writes(obj: Any) -> None:
    assert ours(obj) == reference(obj)


def test_non_str_keys_fall_back_and_str_keys_do_not_change() -> None:
    when = datetime(2026, 1, 15, 10, 30, tzinfo=UTC)
    assert dumps({1: when, Key("k"): [Colour.RED]}) == b'{"1":"2026-01-15T10:30:00Z","k":["red"]}'
    assert dumps({"a": {"b": when}}) == b'{"a":{"b":"2026-01-15T10:30:00Z"}}'
    with pytest.raises(TypeError):
        dumps({"a": object()})
