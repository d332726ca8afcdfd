"""Real infrastructure for tests: Kafka and ClickHouse, started by the tests themselves.

* A reachable Docker engine (users' machines): testcontainers runs ``apache/kafka`` (KRaft) and
  ``clickhouse/clickhouse-server``.
* Otherwise (these CI machines: Java + Maven, no Docker engine): the project's own local broker
  (``deploy.kafka.local``) on free loopback ports, and embedded ClickHouse (chdb) on disk.

``CTPIPE_TEST_INFRA=auto|docker|local`` forces a choice. Nothing here ever skips: when the real
broker cannot be had, the fixture errors and the tests that need it fail.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

KAFKA_IMAGE = os.environ.get("CTPIPE_TEST_KAFKA_IMAGE", "apache/kafka:4.3.1")
CLICKHOUSE_IMAGE = os.environ.get("CTPIPE_TEST_CLICKHOUSE_IMAGE", "clickhouse/clickhouse-server:26.9")


@dataclass(frozen=True)
class Infra:
    kind: str  # "local" or "docker"
    bootstrap: str
    kafka_version: str
    clickhouse_url: str

    def describe(self) -> str:
        engine = "embedded chdb" if self.clickhouse_url.startswith("chdb:") else "ClickHouse server"
        return (
            f"real Kafka: Apache Kafka {self.kafka_version} at {self.bootstrap} ({self.kind}); "
            f"ClickHouse: {engine}"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def infra_mode() -> str:
    mode = os.environ.get("CTPIPE_TEST_INFRA", "auto")
    if mode not in ("auto", "docker", "local"):
        raise RuntimeError(f"CTPIPE_TEST_INFRA must be auto, docker or local, not {mode!r}")
    if mode != "auto":
        return mode
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return "local"
    return "docker"


def local_broker(home: Path, cache_dir: Path, *, start_timeout: float = 90.0):  # type: ignore[no-untyped-def]
    from deploy.kafka.local import LocalBroker, LocalBrokerConfig

    port = free_port()
    controller = free_port()
    while controller == port:
        controller = free_port()
    cfg = LocalBrokerConfig(
        home=home, cache_dir=cache_dir, port=port, controller_port=controller, start_timeout=start_timeout
    )
    return LocalBroker(cfg)


@contextmanager
def local_infra(tmp: Path, cache_dir: Path) -> Iterator[Infra]:
    broker = local_broker(tmp / "kafka", cache_dir)
    status = broker.start()
    try:
        yield Infra(
            kind="local",
            bootstrap=status.bootstrap,
            kafka_version=status.version or "?",
            clickhouse_url=f"chdb://{tmp / 'clickhouse'}",
        )
    finally:
        broker.stop()


@contextmanager
def docker_infra() -> Iterator[Infra]:  # pragma: no cover - needs a Docker engine
    from testcontainers.community.clickhouse import ClickHouseContainer
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    port = free_port()
    kafka = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(9092, port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{port}")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT")
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
    )
    clickhouse = ClickHouseContainer(CLICKHOUSE_IMAGE)
    with kafka, clickhouse:
        wait_for_logs(kafka, "Kafka Server started", timeout=120)
        ch_port = clickhouse.get_exposed_port(8123)
        ch_host = clickhouse.get_container_host_ip()
        yield Infra(
            kind="docker",
            bootstrap=f"127.0.0.1:{port}",
            kafka_version=KAFKA_IMAGE.rsplit(":", 1)[-1],
            clickhouse_url=f"http://{clickhouse.username}:{clickhouse.password}@{ch_host}:{ch_port}/default",
        )
