"""ctpipe settings: environment variables with the ``CTPIPE_`` prefix (pydantic-settings).

Built once at the entry point (``ctpipe.cli``) and passed down; library code never reads the
environment itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SECRET_MASK = "****"


class Settings(BaseSettings):
    """Effective configuration of one ctpipe process."""

    model_config = SettingsConfigDict(env_prefix="CTPIPE_", extra="ignore", validate_default=True)

    data_dir: Path = Field(
        default=Path(".ctpipe"),
        description="Local state: broker data, jar cache, embedded ClickHouse (git-ignored).",
    )

    # --- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        default="",
        description="Bootstrap servers of an existing broker. Empty = the local broker of `ctpipe kafka`.",
    )
    kafka_host: str = Field(default="127.0.0.1", description="Listen address of the local broker.")
    kafka_port: int = Field(default=9092, ge=1, le=65535, description="Client port of the local broker.")
    kafka_controller_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="KRaft controller port of the local broker (0 = kafka_port + 1).",
    )
    kafka_version: str = Field(
        default="",
        description="Exact Apache Kafka version for the local broker; empty = newest resolvable 4.x.",
    )
    kafka_home: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("CTPIPE_KAFKA_HOME", "KAFKA_HOME"),
        description="An unpacked Apache Kafka distribution to run instead of resolving jars with Maven.",
    )
    kafka_heap: str = Field(default="512m", description="Max JVM heap of the local broker.")
    kafka_start_timeout: float = Field(default=60.0, gt=0, description="Seconds to wait for the broker.")
    topic_namespace: str = Field(default="", description="Prefix for every topic name (tenants, tests).")

    # --- ClickHouse --------------------------------------------------------------------------
    clickhouse_url: str = Field(
        default="",
        description=(
            "chdb:///abs/path[?database=db] for embedded ClickHouse (default: <data_dir>/clickhouse), "
            "or http(s)://user:pass@host:8123/db for a server."
        ),
    )

    clickhouse_retention_days: int = Field(
        default=2557,
        ge=1,
        description="TTL of every ClickHouse table in days (applied when tables are created).",
    )

    # --- gateway -------------------------------------------------------------------------------
    gateway_host: str = Field(default="127.0.0.1", description="Listen address of `ctpipe gateway`.")
    gateway_port: int = Field(default=8080, ge=1, le=65535, description="Listen port of `ctpipe gateway`.")
    gateway_keys_file: Path | None = Field(
        default=None, description="API keys file (hashed keys); default <data_dir>/gateway-keys.json."
    )
    gateway_max_body: int = Field(default=5 * 1024 * 1024, gt=0, description="Request body limit (bytes).")
    gateway_ack_timeout: float = Field(default=5.0, gt=0, description="Seconds to wait for the broker's ack.")

    # --- worker (processors) ---------------------------------------------------------------------
    worker_inactivity_timeout: float = Field(
        default=1800.0, gt=0, description="s before an idle session closes."
    )
    worker_end_grace: float = Field(default=2.0, gt=0, description="s after an ended session's last event.")
    worker_lateness: float = Field(
        default=3600.0, gt=0, description="s after a close that late events amend."
    )
    worker_state_retention: float = Field(
        default=30 * 86_400.0,
        ge=0,
        description=(
            "s of event time a closed session's or retrieval's tombstone is kept past its newest "
            "event's hour, then deleted (bounded state); events of a key without state that are "
            "older than the partition's newest event by more are dead-lettered "
            "(late:beyond-retention). 0 = keep tombstones for ever (no such refusal)."
        ),
    )
    worker_correlation_window: float = Field(
        default=600.0,
        gt=0,
        description="s after a Content-Telemetry-ID's first observation before it closes.",
    )
    worker_batch_size: int = Field(
        default=2000, ge=1, description="Messages a stage takes from Kafka per batch (take_events)."
    )
    worker_state_memory_mb: int = Field(
        default=256,
        ge=16,
        description="MiB of RocksDB memory (block cache + memtables) all state tables share.",
    )
    worker_max_invalid_ratio: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Circuit breaker: invalid share of recent input that stops the worker.",
    )
    owner_registry: Path | None = Field(
        default=None,
        description=(
            'Content owner registry JSON ({"owners": [{"domain", "content_id_prefixes"}]}): '
            "owners of content_id-only events by prefix (CT 0.1 7.3). Empty = URL domains only."
        ),
    )

    # --- processing ----------------------------------------------------------------------------
    log_level: str = Field(
        default="WARNING", description="Python log level (DEBUG also shows librdkafka's own lines)."
    )
    app_id: str = Field(default="ctpipe", description="Faust application id (consumer group prefix).")

    @field_validator("owner_registry", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        if not self.kafka_controller_port:
            self.kafka_controller_port = self.kafka_port + 1
        if not self.clickhouse_url:
            self.clickhouse_url = f"chdb://{self.data_dir / 'clickhouse'}?database=ctpipe"
        return self

    @property
    def local_kafka(self) -> bool:
        """True when ctpipe runs its own broker (no external bootstrap configured)."""
        return not self.kafka_bootstrap

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap or f"{self.kafka_host}:{self.kafka_port}"

    @property
    def kafka_dir(self) -> Path:
        return self.data_dir / "kafka"

    @property
    def jar_cache_dir(self) -> Path:
        return self.data_dir / "cache" / "kafka"

    def masked(self) -> dict[str, Any]:
        """Effective settings as plain values, secrets masked (for `ctpipe config`)."""
        out = self.model_dump(mode="json")
        out["clickhouse_url"] = mask_url(self.clickhouse_url)
        out["kafka_bootstrap"] = self.bootstrap
        return out


def mask_url(url: str) -> str:
    """Hide the password (and any password/token/secret query value) of a URL."""
    parts = urlsplit(url)
    masked = url
    if "@" in parts.netloc:
        userinfo, host = parts.netloc.rsplit("@", 1)
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            masked = masked.replace(f"{parts.netloc}", f"{user}:{SECRET_MASK}@{host}", 1)
    for key, _, value in (p.partition("=") for p in parts.query.split("&") if p):
        if key.lower() in {"password", "token", "secret"} and value:
            masked = masked.replace(f"{key}={value}", f"{key}={SECRET_MASK}", 1)
    return masked
