"""HTTP ingest gateway: emitters POST telemetry, the gateway validates it and publishes to RAW.

Input (HTTP, FastAPI/uvicorn):
- ``POST /v1/telemetry``: a CT 0.1 session document, standalone event or event batch (by
  ``document_type``, CT 0.1 section 7.1; an OA 0.4 session document is accepted too).
- OA 0.4 section 4.1 routes: ``POST /session/start``, ``/events``, ``/session/end``,
  ``/session/bulk``. Start and bulk get a server-assigned ``session_id``; bulk keeps the caller's
  id as ``external_session_id`` (``producers.publisher.oa_start_document``/``oa_bulk_document``).
- Bodies are JSON (``application/json``), gzip (``Content-Encoding: gzip`` or
  ``Content-Type: application/gzip``); at most ``max_body`` bytes on the wire and after
  decompression (gzip bombs stop at the limit).
- API key as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (``producers.apikeys``).

Output: one Kafka message per accepted document (see ``producers.publisher`` for the wire
contract), then ``202`` with the event ids ``schemas.normalize.ingest`` assigned — the ids the
pipeline will use, because normalisation re-runs ``ingest`` on the published bytes with the same
emitter and source. Privacy-violating turn fields are stripped before publishing (so they never
reach Kafka) and listed in the response (CT 0.1 section 5.7.5).

Errors: ``{"error": code, "errors": [{"pointer", "rule", "message"}]}`` with 400 (undecodable,
truncated, broken gzip), 401 (missing/unknown key), 403 (source role not allowed for the key),
413 (too large), 415 (content type/encoding), 422 (invalid per ``schemas``), 429 (producer queue
full, ``Retry-After``), 503 (broker did not acknowledge within the bound). Nothing is published
unless the whole document is valid and authorised.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from typing import Any, Protocol

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from producers.apikeys import ApiKey
from producers.publisher import (
    NotAcknowledged,
    Publisher,
    PublishError,
    QueueFull,
    TooLarge,
    headers_for,
    message_key,
    oa_bulk_document,
    oa_start_document,
)
from schemas import codec
from schemas.canonical import DocKind
from schemas.normalize import IngestResult, ingest
from schemas.validate import MAX_DOCUMENT_BYTES

log = logging.getLogger("ctpipe.gateway")

DEFAULT_MAX_BODY = 5 * 1024 * 1024
RETRY_AFTER_SECONDS = 1
CT_ROUTE = "/v1/telemetry"
#: Kinds ``/v1/telemetry`` accepts; OA fragments (start/events/end) belong on their own routes.
CT_KINDS = frozenset({DocKind.SESSION, DocKind.EVENT, DocKind.EVENT_BATCH, DocKind.OA_SESSION})
_JSON_TYPES = ("application/json", "text/json")
_GZIP_TYPES = ("application/gzip", "application/x-gzip")
_GZIP_MAGIC = b"\x1f\x8b"
#: Source role of an event that does not say (CT 0.1 section 4.4: the agent reports by default).
DEFAULT_ROLE = "agent"


class KeyLookup(Protocol):
    def lookup(self, token: str | None) -> ApiKey | None: ...


class Reject(Exception):
    """An HTTP error answer with located reasons."""

    def __init__(
        self,
        status: int,
        code: str,
        errors: list[dict[str, str]],
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.errors = errors
        self.headers = headers

    @classmethod
    def one(cls, status: int, code: str, rule: str, message: str, pointer: str = "", **kw: Any) -> Reject:
        return cls(status, code, [{"pointer": pointer, "rule": rule, "message": message}], **kw)

    def response(self) -> Response:
        return _json(self.status, {"error": self.code, "errors": self.errors}, self.headers)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


# --- request decoding ------------------------------------------------------------------------


def _token(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key else None


def _encoding(request: Request) -> bool:
    """True when the body is gzip; 415 for a content type/encoding the gateway cannot read."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    cenc = request.headers.get("content-encoding", "").strip().lower()
    if cenc not in ("", "identity", "gzip", "x-gzip"):
        raise Reject.one(
            415,
            "unsupported_media_type",
            "http:content-encoding",
            f"Content-Encoding {cenc!r} is not supported: send identity or gzip",
        )
    gz = cenc in ("gzip", "x-gzip")
    if ctype in _GZIP_TYPES:
        return True
    if ctype in _JSON_TYPES or (ctype.startswith("application/") and ctype.endswith("+json")):
        return gz
    shown = ctype or "none"
    raise Reject.one(
        415,
        "unsupported_media_type",
        "http:content-type",
        f"Content-Type {shown!r} is not supported: send application/json (optionally gzip-encoded)",
    )


def _too_large(what: str, limit: int) -> Reject:
    return Reject.one(413, "payload_too_large", "ctpipe:size", f"{what} is over the {limit}-byte limit")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` (never buffered whole)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise Reject.one(
                400, "bad_request", "http:content-length", "Content-Length is not a number"
            ) from None
        if n > limit:
            raise _too_large(f"the body ({n} bytes)", limit)
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise _too_large("the body", limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise Reject.one(400, "bad_request", "http:truncated", "the client disconnected mid-body") from None
    if declared is not None and total != int(declared):
        raise Reject.one(
            400, "bad_request", "http:truncated", f"body is {total} bytes, Content-Length said {declared}"
        )
    return b"".join(chunks)


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress gzip (multi-member allowed) to at most ``limit`` bytes; 400 broken, 413 bomb."""
    out: list[bytes] = []
    total = 0
    rest = data
    while rest:
        d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            chunk = d.decompress(rest, limit - total + 1)
        except zlib.error as exc:
            raise Reject.one(400, "bad_request", "gzip", f"broken gzip data: {exc}") from None
        total += len(chunk)
        if total > limit or d.unconsumed_tail:
            raise _too_large("the decompressed body", limit)
        if not d.eof:
            raise Reject.one(400, "bad_request", "gzip", "truncated gzip data (no end of stream)")
        out.append(chunk)
        rest = d.unused_data
    return b"".join(out)


# --- the application -------------------------------------------------------------------------

Shape = Callable[[bytes, ApiKey], tuple[bytes, dict[str, Any]]]


def _as_is(raw: bytes, _key: ApiKey) -> tuple[bytes, dict[str, Any]]:
    return raw, {}


def _reshape(
    raw: bytes, fn: Callable[[dict[str, Any]], tuple[dict[str, Any], str]]
) -> tuple[bytes, dict[str, Any]]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw, {}  # ingest reports the decode error with its position
    if not isinstance(body, dict):
        return raw, {}
    doc, sid = fn(body)
    return orjson.dumps(doc), {"session_id": sid, "external_session_id": doc.get("external_session_id")}


def _start(raw: bytes, _key: ApiKey) -> tuple[bytes, dict[str, Any]]:
    return _reshape(raw, oa_start_document)


def _bulk(raw: bytes, key: ApiKey) -> tuple[bytes, dict[str, Any]]:
    return _reshape(raw, lambda body: oa_bulk_document(body, key.emitter))


def _status_of(result: IngestResult) -> tuple[int, str]:
    for e in result.errors:
        if e.rule == "ctpipe:size":
            return 413, "payload_too_large"
    if any(e.layer == "decode" for e in result.errors):
        return 400, "bad_request"
    return 422, "invalid_document"


def _check_roles(result: IngestResult, key: ApiKey) -> None:
    bad: list[dict[str, str]] = []
    for ev in result.events:
        role = ev.source_role or DEFAULT_ROLE
        if role not in key.roles:
            pointer = (
                "/event/source_role" if result.kind is DocKind.EVENT else f"/events/{ev.seq}/source_role"
            )
            bad.append(
                {
                    "pointer": pointer,
                    "rule": "ctpipe:source-role",
                    "message": f"source_role {role!r} is not allowed for emitter {key.emitter!r} "
                    f"(allowed: {', '.join(sorted(key.roles))})",
                }
            )
    if bad:
        raise Reject(403, "forbidden", bad)


_BODY_DOC = {
    "required": True,
    "content": {
        "application/json": {"schema": {"type": "object"}},
        "application/gzip": {"schema": {"type": "string", "format": "binary"}},
    },
}
_ERR = {"description": "error: {error, errors: [{pointer, rule, message}]}"}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _ERR,
    401: _ERR,
    403: _ERR,
    413: _ERR,
    415: _ERR,
    422: _ERR,
    429: {"description": "producer queue full; retry after Retry-After seconds"},
    503: {"description": "the broker did not acknowledge in time; retry (event ids are stable)"},
}


class Gateway:
    """Request handling, independent of the publisher behind it."""

    def __init__(self, publisher: Publisher, keys: KeyLookup, *, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.publisher = publisher
        self.keys = keys
        self.max_body = max_body

    def authenticate(self, request: Request) -> ApiKey:
        token = _token(request)
        if not token:
            raise Reject.one(
                401,
                "unauthorized",
                "http:authorization",
                "missing API key: send Authorization: Bearer <key> or X-API-Key: <key>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        key = self.keys.lookup(token)
        if key is None:
            raise Reject.one(
                401,
                "unauthorized",
                "http:authorization",
                "unknown API key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return key

    async def accept(
        self, request: Request, source: str, shape: Shape, kinds: frozenset[DocKind] | None = None
    ) -> tuple[IngestResult, dict[str, Any]]:
        """Authenticate, read, decode, validate, authorise and publish one document."""
        key = self.authenticate(request)
        gz = _encoding(request)
        raw = await read_body(request, self.max_body)
        if gz or raw[:2] == _GZIP_MAGIC:
            raw = gunzip(raw, self.max_body)
        doc, minted = shape(raw, key)
        # The pipeline's document limit (schemas.validate.MAX_DOCUMENT_BYTES) applies here too, so
        # the gateway never accepts what the normalise stage would reject.
        result = ingest(
            doc, emitter=key.emitter, source=source, max_bytes=min(self.max_body, MAX_DOCUMENT_BYTES)
        )
        if not result.accepted:
            status, code = _status_of(result)
            raise Reject(status, code, [e.as_dict() for e in result.errors])
        if kinds is not None and result.kind not in kinds:
            raise Reject.one(
                422,
                "invalid_document",
                "ctpipe:route",
                f"a {result.kind.value} document cannot be posted to {source}: "
                "send a CT session, event or event batch "
                "(OA fragments go to /session/start, /events, /session/end)",
            )
        _check_roles(result, key)
        if result.stripped and result.document is not None:
            # CT 0.1 section 5.7.5: privacy-violating turn fields are stripped, and the stripped
            # text must not reach the raw topic either (it would sit there for its retention).
            doc = codec.dumps(result.document)
        try:
            await self.publisher.publish(message_key(result), doc, headers_for(key.emitter, source))
        except QueueFull:
            raise Reject.one(
                429,
                "overloaded",
                "ctpipe:backpressure",
                "the producer queue is full; retry later",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            ) from None
        except TooLarge as exc:
            raise Reject.one(413, "payload_too_large", "kafka:message-size", str(exc)) from None
        except NotAcknowledged as exc:
            raise Reject.one(
                503, "unavailable", "kafka:ack", str(exc), headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
            ) from None
        except PublishError as exc:
            raise Reject.one(503, "unavailable", "kafka:produce", str(exc)) from None
        return result, minted

    async def handle(
        self,
        request: Request,
        source: str,
        shape: Shape,
        answer: Callable[[IngestResult, dict[str, Any]], dict[str, Any]],
        kinds: frozenset[DocKind] | None = None,
    ) -> Response:
        try:
            result, minted = await self.accept(request, source, shape, kinds)
        except Reject as r:
            return r.response()
        except Exception:  # a bug answers 500 for this request; the server keeps serving
            log.exception("gateway: internal error on %s", source)
            return _json(
                500,
                {
                    "error": "internal",
                    "errors": [{"pointer": "", "rule": "ctpipe:internal", "message": "internal error"}],
                },
            )
        return _json(202, answer(result, minted))


def _ids(result: IngestResult) -> list[str]:
    return [e.event_id for e in result.events]


def _stripped(result: IngestResult) -> list[dict[str, str]]:
    return [v.as_dict() for v in result.stripped]


def _ct_answer(result: IngestResult, _minted: dict[str, Any]) -> dict[str, Any]:
    s = result.session
    return {
        "accepted": len(result.events),
        "event_ids": _ids(result),
        "session_id": s.session_id if s else None,
        "stripped": _stripped(result),
    }


def _start_answer(result: IngestResult, minted: dict[str, Any]) -> dict[str, Any]:
    return {"session_id": minted["session_id"], "stripped": _stripped(result)}


def _events_answer(result: IngestResult, _minted: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": "ok",
        "events_created": len(result.events),
        "event_ids": _ids(result),
        "stripped": _stripped(result),
    }


def _end_answer(result: IngestResult, _minted: dict[str, Any]) -> dict[str, Any]:
    s = result.session
    return {"status": "ok", "session_id": s.session_id if s else None}


def _bulk_answer(result: IngestResult, minted: dict[str, Any]) -> dict[str, Any]:
    s = result.session
    return {
        "session_id": minted["session_id"],
        "external_session_id": minted.get("external_session_id"),
        "events_created": len(result.events),
        "outcome_recorded": bool(s and s.outcome_type),
        "event_ids": _ids(result),
        "stripped": _stripped(result),
    }


def create_app(
    publisher: Publisher,
    keys: KeyLookup,
    *,
    max_body: int = DEFAULT_MAX_BODY,
) -> FastAPI:
    """The gateway ASGI app around a publisher (Kafka in production, a test double in unit tests)."""
    gw = Gateway(publisher, keys, max_body=max_body)
    app = FastAPI(
        title="ctpipe ingest gateway",
        version="0.1",
        description="Content Telemetry 0.1 and OpenAttribution 0.4 ingestion into Kafka. "
        "Authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>`.",
    )
    app.state.gateway = gw
    extra = {"requestBody": _BODY_DOC}
    common: dict[str, Any] = {"status_code": 202, "responses": _RESPONSES, "openapi_extra": extra}

    @app.post(CT_ROUTE, summary="CT 0.1 session, event or event batch", tags=["content-telemetry"], **common)
    async def telemetry(request: Request) -> Response:
        """202 `{accepted, event_ids, session_id, stripped}` once the broker acknowledged."""
        return await gw.handle(request, CT_ROUTE, _as_is, _ct_answer, CT_KINDS)

    @app.post("/session/start", summary="OA 0.4 start session", tags=["openattribution"], **common)
    async def session_start(request: Request) -> Response:
        """202 `{session_id}`: the server-assigned session id (OA 0.4 section 4.1)."""
        return await gw.handle(request, "/session/start", _start, _start_answer)

    @app.post("/events", summary="OA 0.4 record events", tags=["openattribution"], **common)
    async def events(request: Request) -> Response:
        """202 `{status, events_created, event_ids}`."""
        return await gw.handle(request, "/events", _as_is, _events_answer)

    @app.post("/session/end", summary="OA 0.4 end session", tags=["openattribution"], **common)
    async def session_end(request: Request) -> Response:
        """202 `{status, session_id}`."""
        return await gw.handle(request, "/session/end", _as_is, _end_answer)

    @app.post("/session/bulk", summary="OA 0.4 bulk session upload", tags=["openattribution"], **common)
    async def session_bulk(request: Request) -> Response:
        """202 `{session_id, external_session_id, events_created, outcome_recorded, event_ids}`;
        the server assigns `session_id` and keeps the caller's as `external_session_id`."""
        return await gw.handle(request, "/session/bulk", _bulk, _bulk_answer)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> Response:
        """The process is alive."""
        return _json(200, {"status": "ok"})

    @app.get("/readyz", tags=["ops"], responses={503: {"description": "broker not reachable"}})
    async def readyz() -> Response:
        """The broker answers and the RAW topic exists (cached metadata check)."""
        if await gw.publisher.ready():
            return _json(200, {"status": "ready"})
        return _json(503, {"status": "unavailable", "error": "broker not reachable or topic missing"})

    return app
