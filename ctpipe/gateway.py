"""``ctpipe gateway``: run the HTTP ingest gateway; ``ctpipe gateway keys add|list|revoke``.

The server is one uvicorn process (uvloop event loop, httptools parser) around
``producers.gateway.create_app`` with a ``producers.publisher.KafkaPublisher`` on the RAW topic.
One process is the design point: the hot path is ``ingest`` (~65k events/s per core) plus one
Kafka produce per document, and librdkafka batches across requests. For more cores run several
gateway processes behind a load balancer (each has its own idempotent producer) — uvicorn's
``--workers`` would work too, but every worker then opens its own producer, which is the same.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ctpipe.settings import Settings
from producers.apikeys import KeyFileError, KeyStore
from producers.gateway import DEFAULT_MAX_BODY, create_app
from producers.publisher import KafkaPublisher
from schemas.topics import RAW

DEFAULT_PORT = 8080
DEFAULT_ACK_TIMEOUT = 5.0


def keys_path(settings: Settings, keys_file: Path | None = None) -> Path:
    return keys_file or settings.data_dir / "gateway-keys.json"


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    keys_file: Path | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    ack_timeout: float = DEFAULT_ACK_TIMEOUT,
    log_level: str = "warning",
    access_log: bool = False,
) -> int:
    """Run the gateway until interrupted; returns the exit code."""
    import uvicorn

    path = keys_path(settings, keys_file)
    try:
        keys = KeyStore(path)
    except KeyFileError as exc:
        print(f"ctpipe gateway: {exc}", file=sys.stderr)
        return 2
    if not keys.list():
        print(
            f"ctpipe gateway: warning: no API keys in {path}; add one with `ctpipe gateway keys add`",
            file=sys.stderr,
        )
    topic = RAW.namespaced(settings.topic_namespace).name
    publisher = KafkaPublisher(settings.bootstrap, topic, ack_timeout=ack_timeout)
    app = create_app(publisher, keys, max_body=max_body)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_level=log_level,
        access_log=access_log,
        timeout_keep_alive=30,
    )
    try:
        uvicorn.Server(config).run()
    except OSError as exc:  # port taken
        print(f"ctpipe gateway: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    finally:
        publisher.close()
    return 0


def keys_add(settings: Settings, emitter: str, roles: str, *, keys_file: Path | None = None) -> int:
    """Create a key and print it once (it is stored only as a SHA-256 digest)."""
    store = KeyStore(keys_path(settings, keys_file))
    try:
        token, key = store.add(emitter, roles)
    except (ValueError, KeyFileError) as exc:
        print(f"ctpipe gateway keys add: {exc}", file=sys.stderr)
        return 2
    print(token)
    print(
        f"key {key.id} for emitter {key.emitter!r}, roles {','.join(sorted(key.roles))} "
        f"(shown once; stored hashed in {store.path})",
        file=sys.stderr,
    )
    return 0


def keys_list(settings: Settings, *, keys_file: Path | None = None, as_json: bool = False) -> int:
    """List keys (id, emitter, roles, created_at); never prints a key."""
    import orjson

    path = keys_path(settings, keys_file)
    try:
        keys = KeyStore(path).list()
    except KeyFileError as exc:
        print(f"ctpipe gateway keys list: {exc}", file=sys.stderr)
        return 1
    if as_json:
        rows = [{k: v for k, v in key.as_dict().items() if k != "sha256"} for key in keys]
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return 0
    if not keys:
        print(f"no keys in {path}")
        return 0
    for key in keys:
        print(f"{key.id}  {key.emitter}  {','.join(sorted(key.roles))}  {key.created_at}")
    return 0


def keys_revoke(settings: Settings, key_id: str, *, keys_file: Path | None = None) -> int:
    store = KeyStore(keys_path(settings, keys_file))
    if store.revoke(key_id):
        print(f"revoked {key_id}")
        return 0
    print(f"ctpipe gateway keys revoke: no single key matches {key_id!r}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    """``python -m ctpipe.gateway`` (used by bench/bench_gateway.py to start a server process)."""
    p = argparse.ArgumentParser(prog="python -m ctpipe.gateway")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--bootstrap", default="")
    p.add_argument("--namespace", default="")
    p.add_argument("--keys-file", type=Path, default=None)
    p.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY)
    p.add_argument("--ack-timeout", type=float, default=DEFAULT_ACK_TIMEOUT)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    overrides = {"_env_file": None}
    if a.bootstrap:
        overrides["kafka_bootstrap"] = a.bootstrap
    if a.namespace:
        overrides["topic_namespace"] = a.namespace
    settings = Settings(**overrides)  # type: ignore[arg-type]
    return serve(
        settings, a.host, a.port, keys_file=a.keys_file, max_body=a.max_body, ack_timeout=a.ack_timeout
    )


if __name__ == "__main__":
    raise SystemExit(main())
