"""Spec-exact validation: the specs' JSON Schemas plus their application-layer rules.

Input: raw bytes (``check_bytes``) or a decoded document (``check``). Output: a ``Verdict`` with
every ``Violation`` found, each located by a JSON pointer and naming the rule: ``jsonschema:<kw>``
for the shipped schemas (``schemas/jsonschema``), or the spec section for the rules a schema
cannot express (CT 0.1 sections 5.7.4, 5.7.5, 5.5, 8.6, 8.7).

The schema layer is jsonschema-rs (Draft 2020-12) running the shipped schema files themselves,
compiled once at import. The hot path asks ``is_valid`` only; a document that fails is validated
again with ``iter_errors`` to report every error with its pointer. Formats are asserted (the
issue demands invalid UUIDs and timestamps be rejected): ``uuid`` and ``uri`` (RFC 3986) by
jsonschema-rs, ``date-time`` by ``parse_datetime`` here, because normalisation needs every
accepted timestamp as a Python datetime (jsonschema-rs's own check lets some non-digits and
year 0000 through). ``tests/unit/schemas/test_parity.py`` checks agreement with the independent
``jsonschema`` library (``schemas/reference.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import jsonschema_rs
import orjson

from schemas import jsonschema as shipped
from schemas.canonical import DocKind, SourceFormat
from schemas.detect import CT_VERSION, OA_VERSION, detect
from schemas.urls import host_of

#: Largest document accepted (bytes). Kafka's default message limit is 1 MiB; a whole session
#: rarely reaches 100 KiB. Larger inputs are rejected with rule ``ctpipe:size`` before decoding.
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024

#: Versions an OA-shaped document may declare: the spec's "0.4", and "0.1", which the OA SDKs
#: still write on 0.4-shaped sessions (their schema module's default was never bumped).
OA_ACCEPTED_VERSIONS = frozenset({OA_VERSION, "0.1"})


@dataclass(frozen=True, slots=True)
class Violation:
    """One reason a document is not valid."""

    pointer: str  # RFC 6901 JSON pointer into the document ("" = the whole document)
    rule: str  # "jsonschema:<keyword>", or the spec section, e.g. "CT-0.1 §5.7.5"
    message: str
    layer: str = "schema"  # "decode" | "schema" | "app"
    strippable: bool = False  # CT 0.1 §5.7.5: consumers SHOULD strip, not reject

    def as_dict(self) -> dict[str, str]:
        return {"pointer": self.pointer, "rule": self.rule, "message": self.message}


@dataclass(slots=True, init=False)
class Verdict:
    """The outcome of validating one document."""

    kind: DocKind
    format: SourceFormat | None
    version: str | None
    doc: Any = None
    errors: list[Violation] = field(default_factory=list)
    # (turn object, field name, violation) for each privacy-violating turn field (CT 0.1 §5.5)
    strip: list[tuple[dict[str, Any], str, Violation]] = field(default_factory=list)

    # init=False + this __init__: the native build compiles it (a generated one stays Python)
    def __init__(
        self,
        kind: DocKind,
        format: SourceFormat | None,
        version: str | None,
        doc: Any = None,
        errors: list[Violation] | None = None,
        strip: list[tuple[dict[str, Any], str, Violation]] | None = None,
    ) -> None:
        self.kind, self.format, self.version, self.doc = kind, format, version, doc
        self.errors = errors if errors is not None else []
        self.strip = strip if strip is not None else []

    @property
    def valid(self) -> bool:
        """Valid as a document: schema and every application-layer rule hold."""
        return not self.errors

    @property
    def accepted(self) -> bool:
        """Ingestible: nothing is wrong but fields that ingestion strips (CT 0.1 §5.7.5)."""
        return all(e.strippable for e in self.errors)

    @property
    def stripped(self) -> list[Violation]:
        return [v for _, _, v in self.strip]

    @property
    def schema_valid(self) -> bool:
        """Whether the JSON Schema alone accepts it (for parity with the jsonschema library)."""
        return not any(e.layer != "app" for e in self.errors)


Errs = list[Violation]


def json_type(v: Any) -> str:
    """The JSON type name of a decoded value."""
    if v is None:
        return "null"
    t = type(v)
    if t is bool:
        return "boolean"
    if t is int:
        return "integer"
    if t is float:
        return "number"
    if t is str:
        return "string"
    if t is list:
        return "array"
    if t is dict:
        return "object"
    return t.__name__


def _short(v: Any) -> str:
    try:
        text = repr(v)
    except RecursionError:
        return f"<deeply nested {json_type(v)}>"
    return text if len(text) <= 80 else text[:77] + "..."


# --- formats -----------------------------------------------------------------------------------

# RFC 3339 section 5.6 date-time (the ABNF is case-insensitive: "t" and "z" are allowed).
_DT_RE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")
_ZERO = datetime(2000, 1, 1, tzinfo=UTC).utcoffset()


@lru_cache(maxsize=8192)
def parse_datetime(s: str) -> datetime | None:
    """An RFC 3339 date-time as an aware UTC datetime, or None if ``s`` is not one.

    Also the ``date-time`` format of the schema layer, so validation warms the cache that
    normalisation reads.
    """
    if _DT_RE.fullmatch(s) is None:
        return None
    text = s.upper()
    if text[17:19] == "60":  # leap second: RFC 3339 allows it, datetime cannot hold it
        text = text[:17] + "59" + text[19:]
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    offset = text[-6:]
    if offset[0] in "+-" and (int(offset[1:3]) > 23 or int(offset[4:6]) > 59):
        return None
    if dt.utcoffset() == _ZERO:
        return dt
    try:
        return dt.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00: valid RFC 3339, past datetime.max in UTC
        return None


def is_datetime(s: str) -> bool:
    """The ``date-time`` format: RFC 3339, and representable as a Python datetime."""
    return parse_datetime(s) is not None


_FORMAT_HINTS = {
    "uuid": "a UUID (RFC 9562, 8-4-4-4-12 hex digits)",
    "date-time": "an RFC 3339 date-time, e.g. 2026-01-15T10:30:00Z",
    "uri": "an absolute URI (RFC 3986; percent-encode spaces, non-ASCII and brackets outside hosts)",
}

# --- the schema layer: jsonschema-rs on the shipped files ----------------------------------------


def _compile() -> dict[DocKind, jsonschema_rs.Validator]:
    schemas = shipped.all_schemas()
    registry = jsonschema_rs.Registry([(s["$id"], s) for s in schemas])
    return {
        kind: jsonschema_rs.Draft202012Validator(
            shipped.schema(kind.value),
            registry=registry,
            validate_formats=True,
            formats={"date-time": is_datetime},
        )
        for kind in DocKind
        if kind is not DocKind.UNKNOWN
    }


_VALIDATORS = _compile()
_K = jsonschema_rs.ValidationErrorKind

#: CT 0.1 event types that are about content (section 4.5), read from the shipped schema.
CT_CONTENT_TYPES = frozenset(
    t for t in shipped.load("session")["$defs"]["EventType"]["enum"] if t.startswith("content_")
)


def _pointer(path: Iterable[str | int]) -> str:
    """RFC 6901: '~' -> '~0', '/' -> '~1'."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _field(path: list[str | int]) -> str:
    """How a message names a location: ``timestamp``, ``roles[0]``, ``the document``."""
    indices = ""
    for p in reversed(path):
        if type(p) is int:
            indices = f"[{p}]{indices}"
        else:
            return f"{p}{indices}"
    return f"the document{indices}" if indices else "the document"


def _types(names: Iterable[str]) -> str:
    return " or ".join(sorted(set(names), key=lambda t: (t == "null", t)))


def _violation(err: jsonschema_rs.ValidationError) -> Violation:
    kind = err.kind
    path = err.instance_path
    name = _field(path)
    ptr = _pointer(path)
    keyword = kind.name
    rule = f"jsonschema:{keyword}"
    if isinstance(kind, _K.Required):
        return Violation(
            _pointer([*path, kind.property]), rule, f"required field {kind.property!r} is missing"
        )
    if isinstance(kind, _K.Type):
        message = f"{name} must be {_types(kind.types)}, got {json_type(err.instance)}"
    elif isinstance(kind, _K.Enum):
        shown = ", ".join(map(str, kind.options))
        message = f"{name} {_short(err.instance)} is not one of: {shown}"
    elif isinstance(kind, _K.Constant):
        message = f"{name} {_short(err.instance)} is not {kind.expected_value!r}"
    elif isinstance(kind, _K.Format):
        hint = _FORMAT_HINTS.get(kind.format, f"a valid {kind.format!r}")
        message = f"{name} {_short(err.instance)} is not {hint}"
    elif isinstance(kind, _K.Pattern):
        message = f"{name} {_short(err.instance)} does not match {kind.pattern}"
    elif isinstance(kind, _K.Minimum):
        message = f"{name} {_short(err.instance)} is less than the minimum {kind.limit}"
    elif isinstance(kind, _K.Maximum):
        message = f"{name} {_short(err.instance)} is more than the maximum {kind.limit}"
    elif isinstance(kind, _K.MinItems):
        message = f"{name} needs at least {kind.limit} item(s)"
    elif isinstance(kind, _K.UniqueItems):
        message = f"{name} has an item more than once"
    else:
        message = f"{name}: {err.message}"
    return Violation(ptr, rule, message)


def _leaves(err: jsonschema_rs.ValidationError) -> Iterator[Violation]:
    """The violations an error stands for: a failed ``oneOf``/``anyOf`` between a definition and
    ``null`` (how the schemas spell "nullable") reports the definition's own errors, or one
    ``type`` error naming every allowed type, rather than "not valid under any of the schemas".
    """
    kind = err.kind
    if not isinstance(kind, _K.OneOfNotValid | _K.AnyOf):
        yield _violation(err)
        return
    here = err.instance_path
    live: list[list[jsonschema_rs.ValidationError]] = []
    types: list[str] = []
    for branch in kind.context:
        mismatches = [e for e in branch if isinstance(e.kind, _K.Type) and e.instance_path == here]
        if branch and len(mismatches) == len(branch):
            types += [t for e in mismatches for t in e.kind.types]  # type: ignore[attr-defined]
        else:
            live.append(branch)
    if len(live) == 1:
        for sub in live[0]:
            yield from _leaves(sub)
    elif not live and types:
        yield Violation(
            _pointer(here),
            "jsonschema:type",
            f"{_field(here)} must be {_types(types)}, got {json_type(err.instance)}",
        )
    else:
        yield _violation(err)


def _schema_errors(validator: jsonschema_rs.Validator, doc: Any, errs: Errs) -> None:
    """Every schema error of ``doc``; the fast ``is_valid`` first, ``iter_errors`` only on failure.

    jsonschema-rs refuses values nested deeper than its recursion limit (~255 levels) with a
    ValueError instead of overflowing the stack (so no depth guard is needed before it): that,
    and any value no JSON decoder produces, becomes a violation, never an exception.
    """
    try:
        if validator.is_valid(doc):
            return
        found = [v for err in validator.iter_errors(doc) for v in _leaves(err)]
    except RecursionError as exc:
        errs.append(Violation("", "ctpipe:depth", f"document nests too deeply to validate: {exc}"))
        return
    except ValueError as exc:  # the recursion limit, or a Python value JSON cannot hold
        deep = "recursion" in str(exc).lower()
        errs.append(
            Violation(
                "",
                "ctpipe:depth" if deep else "ctpipe:not-json",
                f"document {'nests too deeply to validate' if deep else 'is not plain JSON data'}: {exc}",
            )
        )
        return
    if not found:  # is_valid and iter_errors disagree: still never call it valid
        errs.append(Violation("", "jsonschema:invalid", "the document does not match its schema"))
    # One error per cause: a value of the wrong type also fails its enum/const, and a value
    # failing in several allOf branches fails once.
    mistyped = {v.pointer for v in found if v.rule == "jsonschema:type"}
    seen: set[tuple[str, str, str]] = set()
    for v in found:
        key = (v.pointer, v.rule, v.message)
        if key not in seen and not (v.pointer in mistyped and v.rule in _IMPLIED_BY_TYPE):
            seen.add(key)
            errs.append(v)


_IMPLIED_BY_TYPE = frozenset({"jsonschema:enum", "jsonschema:const"})


# --- application-layer rules ---------------------------------------------------------------------

#: CT 0.1 section 5.5: turn fields a privacy level does not permit.
CT_PRIVACY_FORBIDDEN: dict[str, tuple[str, ...]] = {
    "full": (),
    "summary": (),
    "intent": ("query_text", "response_text"),
    "minimal": (
        "query_text",
        "response_text",
        "query_intent",
        "topics",
        "response_type",
        "response_mode",
        "model_id",
        "ad_rendered",
    ),
}
#: OA 0.4 section 3.5: the same gating, with only the columns that table has.
OA_PRIVACY_FORBIDDEN: dict[str, tuple[str, ...]] = {
    "full": (),
    "summary": (),
    "intent": ("query_text", "response_text"),
    "minimal": ("query_text", "response_text", "query_intent", "topics"),
}


def _populated(v: Any) -> bool:
    # A null, empty string or empty list reveals nothing, so it cannot exceed a privacy level.
    return v is not None and v != "" and v != []


def _gate_turn(ev: Any, ptr: str, forbidden: dict[str, tuple[str, ...]], spec: str, verdict: Verdict) -> None:
    if type(ev) is not dict:
        return
    turn = ev.get("turn")
    if type(turn) is not dict:
        return
    level = turn.get("privacy_level")
    if type(level) is not str:
        return
    for name in forbidden.get(level, ()):
        if name in turn and _populated(turn[name]):
            v = Violation(
                f"{ptr}/turn/{name}",
                f"{spec} §5.5" if spec == "CT-0.1" else f"{spec} §3.5",
                f"{name} is not permitted at privacy_level {level!r} (stripped on ingestion)",
                layer="app",
                strippable=True,
            )
            verdict.errors.append(v)
            verdict.strip.append((turn, name, v))


def _ct_content_identifier(ev: Any, ptr: str, errs: Errs) -> None:
    if type(ev) is not dict:
        return
    etype = ev.get("type")
    if (
        type(etype) is str
        and etype in CT_CONTENT_TYPES
        and not (ev.get("content_url") or ev.get("content_id"))
    ):
        errs.append(
            Violation(
                ptr,
                "CT-0.1 §5.7.5",
                f"{ev['type']} event carries neither content_url nor content_id (required on every "
                "content event, §4.5)",
                layer="app",
            )
        )


def _ct_rules(doc: dict[str, Any], kind: DocKind, verdict: Verdict) -> None:
    if kind is DocKind.EVENT:
        events: list[tuple[str, Any]] = [("/event", doc.get("event"))]
    else:
        raw = doc.get("events")
        events = [(f"/events/{i}", e) for i, e in enumerate(raw)] if type(raw) is list else []
    for ptr, ev in events:
        _ct_content_identifier(ev, ptr, verdict.errors)
        _gate_turn(ev, ptr, CT_PRIVACY_FORBIDDEN, "CT-0.1", verdict)
    if (
        kind in (DocKind.EVENT, DocKind.EVENT_BATCH)
        and not doc.get("session_id")
        and not doc.get("ctx_token")
    ):
        # Sections 5.7.5 and 7.1: only retrieval-only envelopes (origin/edge emitters at
        # Retrieval conformance) may omit both.
        others = sorted(
            {
                str(e.get("type"))
                for _, e in events
                if type(e) is dict and e.get("type") != "content_retrieved"
            },
            key=str,
        )
        if others:
            verdict.errors.append(
                Violation(
                    "/session_id",
                    "CT-0.1 §5.7.5",
                    "envelope carries neither session_id nor ctx_token; only retrieval-only envelopes may "
                    f"omit both (§7.1), this one has {', '.join(map(str, others))}",
                    layer="app",
                )
            )


def _manifest_rules(doc: dict[str, Any], verdict: Verdict) -> None:
    keys = doc.get("keys")
    if type(keys) is list:
        seen: set[str] = set()
        for i, key in enumerate(keys):
            kid = key.get("id") if type(key) is dict else None
            if type(kid) is str:
                if kid in seen:
                    verdict.errors.append(
                        Violation(f"/keys/{i}/id", "CT-0.1 §8.7", f"duplicate key id {kid!r}", layer="app")
                    )
                seen.add(kid)
    domains = doc.get("domains")
    mid = doc.get("id")
    if type(domains) is not list or type(mid) is not str:
        return
    host = host_of(mid)
    try:
        path = urlsplit(mid).path
    except ValueError:
        path = ""
    if path != "/.well-known/content-telemetry.json":
        verdict.errors.append(
            Violation(
                "/domains",
                "CT-0.1 §8.6",
                "domains may appear only on a manifest served at the domain root "
                "(https://<domain>/.well-known/content-telemetry.json)",
                layer="app",
            )
        )
        return
    for i, entry in enumerate(domains):
        if type(entry) is not str or host is None:
            continue
        base = entry.lower().rstrip(".")
        base = base[2:] if base.startswith("*.") else base
        if base != host and not base.endswith("." + host):
            verdict.errors.append(
                Violation(
                    f"/domains/{i}",
                    "CT-0.1 §8.6",
                    f"{entry!r} is neither the manifest's host {host!r} nor a subdomain of it",
                    layer="app",
                )
            )


def _version_rule(doc: dict[str, Any], verdict: Verdict) -> bool:
    """CT 0.1 §5.7.4 / §8.7 and OA 0.4 §8: reject unaccepted versions with that reason alone."""
    version = doc.get("schema_version")
    if type(version) is not str:
        return True
    fmt = verdict.format
    if fmt is SourceFormat.OPENATTRIBUTION:
        if version in OA_ACCEPTED_VERSIONS:
            return True
        verdict.errors.append(
            Violation(
                "/schema_version",
                "OA-0.4 §8",
                f"schema_version {version!r} is not accepted: this consumer reads OpenAttribution 0.4 "
                "(and '0.1', which OA SDKs write on 0.4-shaped sessions)",
            )
        )
        return False
    if version == CT_VERSION:
        return True
    section = "§8.7" if verdict.kind is DocKind.MANIFEST else "§5.7.4"
    verdict.errors.append(
        Violation(
            "/schema_version",
            f"CT-0.1 {section}",
            f"schema_version {version!r} is not accepted: a Content Telemetry 0.1 consumer accepts exactly "
            f"'0.1' during the preview period ({section}, §12)",
        )
    )
    return False


def check(doc: Any, source: str | None = None) -> Verdict:
    """Validate one decoded document against its detected kind: schema + application rules."""
    det = detect(doc, source)
    verdict = Verdict(det.kind, det.format, det.version, doc)
    if det.kind is DocKind.UNKNOWN:
        if type(doc) is dict:
            verdict.errors.append(
                Violation(
                    "/document_type",
                    "CT-0.1 §7.1",
                    f"unknown document_type {_short(doc.get('document_type'))}: expected 'session', 'event' "
                    "or 'event_batch'",
                )
            )
        else:
            verdict.errors.append(
                Violation("", "jsonschema:type", f"a document must be a JSON object, got {json_type(doc)}")
            )
        return verdict
    if not _version_rule(doc, verdict):
        return verdict
    if det.kind is DocKind.OA_SESSION and doc.get("schema_version") == "0.1":
        # The OA SDKs' "0.1" on a 0.4-shaped session: validate it as the 0.4 it is.
        _schema_errors(_VALIDATORS[det.kind], {**doc, "schema_version": OA_VERSION}, verdict.errors)
    else:
        _schema_errors(_VALIDATORS[det.kind], doc, verdict.errors)
    if det.kind is DocKind.MANIFEST:
        _manifest_rules(doc, verdict)
    elif det.format is SourceFormat.CONTENT_TELEMETRY:
        _ct_rules(doc, det.kind, verdict)
    else:
        raw = doc.get("events")
        if type(raw) is list:
            for i, ev in enumerate(raw):
                _gate_turn(ev, f"/events/{i}", OA_PRIVACY_FORBIDDEN, "OA-0.4", verdict)
    return verdict


def decode(
    raw: bytes | bytearray | memoryview | str, max_bytes: int = MAX_DOCUMENT_BYTES
) -> tuple[Any, Violation | None]:
    """orjson-decode one document; a failure becomes a Violation (never an exception)."""
    if len(raw) > max_bytes:
        return None, Violation(
            "",
            "ctpipe:size",
            f"document is {len(raw)} bytes, over the {max_bytes}-byte limit",
            layer="decode",
        )
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError as exc:
        return None, Violation("", "json:syntax", f"not valid UTF-8 JSON (RFC 8259): {exc}", layer="decode")


def check_bytes(
    raw: bytes | bytearray | memoryview | str, source: str | None = None, max_bytes: int = MAX_DOCUMENT_BYTES
) -> Verdict:
    """Decode, detect and validate one document; never raises."""
    doc, err = decode(raw, max_bytes)
    if err is not None:
        return Verdict(DocKind.UNKNOWN, None, None, None, [err])
    return check(doc, source)
