"""The one JSON codec of ctpipe (orjson): bytes in, bytes out."""

from __future__ import annotations

from typing import Any

import orjson

DecodeError = orjson.JSONDecodeError

_OPTS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=_OPTS)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    return orjson.loads(data)
