"""Records that processors write to Kafka and the sink reads: their one wire shape (JSON, orjson).

* ``FunnelDelta`` (topic FUNNEL): one additive contribution to one funnel row (``schemas.funnel``).
  ``contribution_id`` is deterministic in its inputs (e.g. session id + revision + row key), so a
  contribution re-emitted after a processor crash or an input redelivery carries the same id and
  the sink counts it once.
* ``SessionRecord`` (topic SESSIONS): a session as assembled by ``processors.sessionize`` when it
  closes (and again, with a higher ``revision``, when late events amend it).
* ``CorrelatedRetrieval`` (topic CORRELATED): one retrieval as seen by its observers
  (``processors.correlate``, CT 4.4 / 7.2).

* EVENTS envelope (topic EVENTS, written by ``processors.normalize``): one message per document
  and session key, ``{"t": "d", "s": <session key> | null, "h": <SessionHeader JSON> | null,
  "e": [<encode_event(event)>, ...]}``; events without a session key travel one per envelope and
  start with ``EVENTS_SESSIONLESS_PREFIX`` (so sessionize skips them unparsed). Read with
  ``decode_events_envelope``.

* RETRIEVALS observation (topic RETRIEVALS, written by ``processors.normalize``, read by
  ``processors.correlate`` only): what correlation keeps of one canonical ``retrieved`` event,
  as a JSON array ``["r1", <OBSERVATION_FIELDS in order>]`` (``encode_observation``), always
  packed (a message is an array of them). ~40 % of the event's bytes, decoded without building
  the event. Readers also take whole ``encode_event`` records (the format before "r1").

Canonical events and session headers travel without
the fields that hold their default (``exclude_defaults``: most are null for any one event type),
a third of the bytes; ``CanonicalEvent.model_validate`` restores them, dict readers use ``.get``.

Packing: every topic above carries either one record (a JSON object) or a JSON array of records
per message (``pack`` / ``unpack``). Stages batch their outputs this way, because a Kafka message
through a Python client costs far more than the JSON of one record; the consumers (the worker's
own agents and the sink) take both shapes.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from schemas.canonical import CanonicalEvent
from schemas.codec import dumps, loads
from schemas.framing import (  # re-exported: framing is compiled by the native build
    OBSERVATION_FIELDS as OBSERVATION_FIELDS,
    OBSERVATION_TAG as OBSERVATION_TAG,
    PACK_MAX_BYTES as PACK_MAX_BYTES,
    encode_observation as encode_observation,
    epoch_us as epoch_us,
    observation_fields as observation_fields,
    pack as pack,
    unpack as unpack,
)
from schemas.funnel import KEY_FIELDS, MEASURE_SET, FunnelCounts, FunnelKey

_M = TypeVar("_M", bound=BaseModel)
_FIELD_NAMES: dict[type[BaseModel], tuple[str, ...]] = {}


def construct(cls: type[_M], **values: Any) -> _M:
    """``cls.model_construct(**values)`` for a record whose every field is given, already typed
    (built by our own code, never from input): the same model (unit-tested), half the cost
    (no per-field default pass)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(cls.model_fields)
    if len(values) != len(names):
        return cls.model_construct(**values)
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", {name: values[name] for name in names})
    object.__setattr__(obj, "__pydantic_fields_set__", set(names))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


class FunnelDelta(BaseModel):
    """An additive contribution to one hourly funnel row."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    contribution_id: str
    hour: datetime
    owner_domain: str
    content_key: str
    agent_id: str
    content_scope: str
    source_role: str
    measures: dict[str, int]  # only non-zero measures of schemas.funnel.MEASURES
    conversion_value: dict[str, int] = {}  # currency -> minor units
    origin: str = ""  # which stage/record produced it, e.g. "session:<id>:r0" (for debugging)

    @property
    def key(self) -> FunnelKey:
        return FunnelKey(*(getattr(self, f) for f in KEY_FIELDS))

    @property
    def counts(self) -> FunnelCounts:
        return FunnelCounts(dict(self.measures), dict(self.conversion_value))

    @classmethod
    def build(cls, key: FunnelKey, counts: FunnelCounts, *, scope: str, origin: str = "") -> FunnelDelta:
        """A delta whose id is derived from ``scope`` (what produced it) and the row key."""
        unknown = set(counts.measures) - MEASURE_SET
        if unknown:
            raise ValueError(f"unknown funnel measures: {sorted(unknown)}")
        # every field is built right here from a typed key (no validation pass)
        return construct(
            cls,
            contribution_id=contribution_id(scope, key),
            hour=key.hour,
            owner_domain=key.owner_domain,
            content_key=key.content_key,
            agent_id=key.agent_id,
            content_scope=key.content_scope,
            source_role=key.source_role,
            measures={k: v for k, v in counts.measures.items() if v},
            conversion_value={k: v for k, v in counts.conversion_value.items() if v},
            origin=origin or scope,
        )


def contribution_id(scope: str, key: FunnelKey) -> str:
    """Stable id of the contribution ``scope`` makes to row ``key`` (hex SHA-256, 32 chars)."""
    material = "\x1f".join((scope, key.hour.isoformat(), *(str(getattr(key, f)) for f in KEY_FIELDS[1:])))
    return hashlib.sha256(material.encode()).hexdigest()[:32]


class SessionRecord(BaseModel):
    """A closed (or amended) session."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    session_id: str  # or the ctx_token for click-token-only fragments
    revision: int  # 0 at first close; +1 for each amendment by late events
    agent_id: str
    content_scope: str
    started_at: datetime | None
    ended_at: datetime | None
    closed_by: str  # "ended" (ended_at / OA end) | "inactivity" | "drain"
    event_count: int
    late_events: int
    duplicate_events: int
    turns: int
    grounded: int
    cited: int
    displayed: int
    engaged: int  # agent-reported only: 0 for a click-token fragment (funnel: engaged_destination)
    cited_without_grounded: int
    displayed_without_cited: int
    displayed_without_grounded: int
    outcome_type: str | None = None
    outcome_value_minor: int | None = None
    outcome_currency: str | None = None
    user_segments: tuple[str, ...] = ()
    source_formats: tuple[str, ...] = ()
    emitters: tuple[str, ...] = ()


class Observation(BaseModel):
    """One observer's report of a retrieval."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str
    source_role: str
    emitter: str
    timestamp: datetime
    content_url: str | None = None
    canonical_url: str | None = None
    content_id: str | None = None
    session_id: str | None = None
    agent_id: str | None = None


class CorrelatedRetrieval(BaseModel):
    """One retrieval and everyone who reported it (CT 7.2 deduplication)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retrieval_id: str  # stable: derived from the content_telemetry_id and the group's identity
    content_telemetry_id: str | None
    canonical_url: str | None
    content_id: str | None
    owner_domain: str | None
    status: str  # "corroborated" | "uncorroborated" | "standalone"
    observer_roles: tuple[str, ...]
    agent_session_id: str | None
    agent_id: str | None
    first_seen: datetime
    last_seen: datetime
    observations: tuple[Observation, ...]


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return {k: _plain(v) for k, v in value.__dict__.items()}
    if type(value) is tuple or type(value) is list:
        return [_plain(v) for v in value]
    return value


def encode(record: BaseModel) -> bytes:
    """A record's JSON: the same bytes as ``dumps(record.model_dump(mode="json"))`` (a unit test
    holds them equal) without pydantic's serializer, which cost the worker ~3 % of its CPU."""
    return dumps(_plain(record))


def decode_delta(raw: bytes | str) -> FunnelDelta:
    return FunnelDelta.model_validate(loads(raw))


def decode_session(raw: bytes | str) -> SessionRecord:
    return SessionRecord.model_validate(loads(raw))


def decode_retrieval(raw: bytes | str) -> CorrelatedRetrieval:
    return CorrelatedRetrieval.model_validate(loads(raw))


#: per model: (fields kept when None: required or with a non-None default, (field, non-None default))
_PLANS: dict[type[BaseModel], tuple[frozenset[str], tuple[tuple[str, Any], ...]]] = {}


def _plan(cls: type[BaseModel]) -> tuple[frozenset[str], tuple[tuple[str, Any], ...]]:
    keep_none: set[str] = set()
    others: list[tuple[str, Any]] = []
    for name, info in cls.model_fields.items():
        if info.is_required():
            keep_none.add(name)
            continue
        default = info.get_default(call_default_factory=True)
        if default is not None:
            keep_none.add(name)
            others.append((name, default))
    plan = _PLANS[cls] = (frozenset(keep_none), tuple(others))
    return plan


def _without_defaults(model: BaseModel) -> bytes:
    """A flat model's JSON without the fields equal to their default: the same bytes as
    ``model.model_dump_json(exclude_defaults=True)`` (unit-tested) without pydantic's
    serializer. Most defaults are None: those fields are dropped by an identity test, the few
    others compared after (a per-field default lookup cost the worker ~5 % of its CPU)."""
    cls = type(model)
    keep_none, others = _PLANS.get(cls) or _plan(cls)
    out = {k: v for k, v in model.__dict__.items() if v is not None or k in keep_none}
    for name, default in others:
        if name in out and out[name] == default:
            del out[name]
    return dumps(out)


def encode_event(event: CanonicalEvent) -> bytes:
    return _without_defaults(event)


def encode_header(header: BaseModel) -> bytes:
    """A ``schemas.canonical.SessionHeader`` as EVENTS envelopes carry it (defaults left out)."""
    return _without_defaults(header)


def decode_event(raw: bytes | str) -> CanonicalEvent:
    data: Any = loads(raw)
    return CanonicalEvent.model_validate(data)


#: How every EVENTS envelope of events without a session key starts (byte-exact).
EVENTS_SESSIONLESS_PREFIX = b'{"t":"d","s":null'


def decode_events_envelope(raw: bytes | str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """An EVENTS message -> (session header dict or None, canonical event dicts)."""
    doc = loads(raw)
    if not isinstance(doc, dict) or doc.get("t") != "d":
        raise ValueError("not an EVENTS envelope")
    events = doc.get("e") or []
    if not isinstance(events, list):
        raise ValueError("envelope 'e' is not a list")
    return doc.get("h"), events
