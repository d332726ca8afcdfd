"""The dead-letter envelope: why a message was refused, with the message itself.

Written by any stage on a permanent failure (undecodable, invalid), never on a transient one.
Carries the reason, every located error, the original bytes (base64, so any bytes survive JSON),
where the message came from (topic/partition/offset/key), the stage and the time.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from schemas.codec import dumps, loads
from schemas.validate import Violation


class DeadLetterError(BaseModel):
    """One located reason (mirrors ``schemas.validate.Violation``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pointer: str
    rule: str
    message: str


class DeadLetter(BaseModel):
    """A refused message and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str
    errors: tuple[DeadLetterError, ...] = ()
    original_b64: str
    key_b64: str | None = None
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    stage: str
    emitter: str | None = None
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def original(self) -> bytes:
        return base64.b64decode(self.original_b64)

    @property
    def key(self) -> bytes | None:
        return base64.b64decode(self.key_b64) if self.key_b64 is not None else None


def make(
    original: bytes,
    *,
    reason: str,
    stage: str,
    errors: list[Violation] | tuple[Violation, ...] = (),
    key: bytes | None = None,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    emitter: str | None = None,
) -> DeadLetter:
    """Build an envelope from the original bytes and the violations that refused them."""
    return DeadLetter(
        reason=reason,
        errors=tuple(DeadLetterError(pointer=e.pointer, rule=e.rule, message=e.message) for e in errors),
        original_b64=base64.b64encode(bytes(original)).decode("ascii"),
        key_b64=base64.b64encode(key).decode("ascii") if key is not None else None,
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        stage=stage,
        emitter=emitter,
    )


def encode(letter: DeadLetter) -> bytes:
    """Envelope -> JSON bytes for the DLQ topic."""
    return dumps(letter.model_dump(mode="json"))


def decode(data: bytes) -> DeadLetter:
    """JSON bytes from the DLQ topic -> envelope (raises on a malformed envelope)."""
    return DeadLetter.model_validate(loads(data))
