"""The one JSON codec of ctpipe (orjson): bytes in, bytes out."""

from __future__ import annotations

from typing import Any

import orjson

DecodeError = orjson.JSONDecodeError

_OPTS = orjson.OPT_UTC_Z
_NON_STR_KEYS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


def dumps(obj: Any) -> bytes:
    """``obj`` as JSON (UTC datetimes as "...Z"); dict keys that are not ``str`` are written as
    ``OPT_NON_STR_KEYS`` writes them. orjson's non-str-key mode costs ~2x on every dict, and
    what is encoded here almost always has ``str`` keys only: the plain mode is tried first,
    and only a ``TypeError`` (a non-str key, or a value orjson cannot encode, which then
    raises again) falls back. Both modes write the same bytes for ``str`` keys."""
    try:
        return orjson.dumps(obj, option=_OPTS)
    except TypeError:
        return orjson.dumps(obj, option=_NON_STR_KEYS)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    return orjson.loads(data)
