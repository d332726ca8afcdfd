"""Reference validation with the ``jsonschema`` library against the shipped schema files.

Slow (two orders of magnitude below ``schemas.validate``, which runs jsonschema-rs) and needs
the dev extra; it is the independent implementation the parity tests compare with, and the
baseline of ``bench/bench_schemas.py``, never on the hot path. Formats are asserted, as in
``schemas.validate``: ``uuid`` by the library's own checker, ``date-time`` and ``uri`` by
independent checks here (the library skips them unless optional packages are installed). The
``uri`` check here is per character (RFC 3986's alphabet and percent-escapes), so it is looser
than jsonschema-rs's full RFC 3986 grammar (which also rejects, e.g., ``[`` outside a host).
"""

from __future__ import annotations

import re
from datetime import date
from functools import cache
from typing import Any

from schemas import jsonschema as shipped
from schemas.canonical import DocKind

_DT = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|([+-])(\d{2}):(\d{2}))\Z")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:([A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*\Z")


def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    m = _DT.match(value)
    if not m:
        return False
    y, mo, d, h, mi, s = (int(m.group(i)) for i in range(1, 7))
    try:
        date(y, mo, d)
    except ValueError:
        return False
    if h > 23 or mi > 59 or s > 60:
        return False
    return not (m.group(9) and (int(m.group(10)) > 23 or int(m.group(11)) > 59))


def _uri(value: object) -> bool:
    return not isinstance(value, str) or _URI.match(value) is not None


@cache
def _validators() -> dict[DocKind, Any]:
    import jsonschema
    from referencing import Registry, Resource

    checker = jsonschema.FormatChecker(formats=("uuid",))
    checker.checks("date-time")(_date_time)
    checker.checks("uri")(_uri)
    names = {
        DocKind.SESSION: "session",
        DocKind.EVENT: "event",
        DocKind.EVENT_BATCH: "event_batch",
        DocKind.MANIFEST: "manifest",
        DocKind.OA_SESSION: "oa_session",
    }
    resources = [(s["$id"], Resource.from_contents(s)) for s in (shipped.load(n) for n in names.values())]
    registry: Registry[Any] = Registry().with_resources(resources)
    return {
        kind: jsonschema.Draft202012Validator(shipped.load(name), registry=registry, format_checker=checker)
        for kind, name in names.items()
    }


def schema_errors(doc: Any, kind: DocKind) -> list[str]:
    """Every JSON Schema error of ``doc`` as ``kind`` (empty = schema-valid).

    OA sessions declaring "0.1" (what the OA SDKs write) are checked as "0.4", as ctpipe does.
    """
    errors = _validators()[kind].iter_errors(_oa_fix(doc, kind))
    return [f"/{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def is_schema_valid(doc: Any, kind: DocKind) -> bool:
    return next(_validators()[kind].iter_errors(_oa_fix(doc, kind)), None) is None


def _oa_fix(doc: Any, kind: DocKind) -> Any:
    if kind is DocKind.OA_SESSION and isinstance(doc, dict) and doc.get("schema_version") == "0.1":
        return {**doc, "schema_version": "0.4"}
    return doc
