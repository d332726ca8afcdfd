"""The project's own broker lifecycle (deploy.kafka.local) against the real Apache Kafka jars."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from deploy.kafka.local import BrokerError, LocalBroker
from deploy.kafka.topics import describe_partitions, ensure_topics
from schemas.topics import ALL
from tests.infra import local_broker

pytestmark = pytest.mark.integration


def _java_processes_with(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                pids.append(int(entry.name))
    return pids


@pytest.fixture
def broker(tmp_path: Path, settings) -> LocalBroker:  # type: ignore[no-untyped-def]
    b = local_broker(tmp_path / "kafka", settings.jar_cache_dir)
    yield b
    b.stop()


def test_start_is_idempotent_answers_and_stop_leaves_no_java(broker: LocalBroker) -> None:
    first = broker.start()
    assert first.running and first.answering
    assert first.version and first.version.startswith("4.")
    again = broker.start()
    assert again.pid == first.pid  # idempotent: no second broker
    metadata = AdminClient({"bootstrap.servers": first.bootstrap}).list_topics(timeout=10)
    assert metadata.brokers  # a real broker answered the metadata request
    assert _java_processes_with(broker.marker) == [first.pid]

    assert broker.stop() is True
    assert not broker.status().running
    assert _java_processes_with(broker.marker) == []
    assert broker.stop() is False


def test_restart_keeps_data(broker: LocalBroker) -> None:
    status = broker.start()
    topics = [t.namespaced("restart") for t in ALL]
    assert ensure_topics(status.bootstrap, topics) == sorted(t.name for t in topics)
    assert ensure_topics(status.bootstrap, topics) == []  # idempotent
    broker.stop()
    status = broker.start()
    for topic in topics:
        assert describe_partitions(status.bootstrap, topic.name) == topic.partitions


def test_port_taken_is_a_clear_fast_error(broker: LocalBroker) -> None:
    with socket.socket() as s:
        s.bind((broker.cfg.host, broker.cfg.port))
        s.listen()
        t0 = time.monotonic()
        with pytest.raises(BrokerError, match=rf"port {broker.cfg.port} .* already in use"):
            broker.start()
        assert time.monotonic() - t0 < 5
    assert not broker.status().running


def test_broker_that_never_answers_is_stopped_after_the_timeout(
    tmp_path: Path,
    settings,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    """A JVM that starts but never listens: bounded wait, one-line error, process killed."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    pid_file = tmp_path / "fake-java.pid"
    java = fake_bin / "java"
    java.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        "  *-version*) echo 'openjdk version \"17.0.9\" 2023-10-17' >&2; exit 0;;\n"
        "  *StorageTool*) exit 0;;\n"
        "esac\n"
        f"echo $$ > {pid_file}\n"
        "exec sleep 600\n"
    )
    java.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")
    b = local_broker(tmp_path / "kafka", settings.jar_cache_dir, start_timeout=2)
    t0 = time.monotonic()
    with pytest.raises(BrokerError, match="did not answer .* within 2 s"):
        b.start()
    assert time.monotonic() - t0 < 30
    fake_pid = int(pid_file.read_text())
    assert not Path(f"/proc/{fake_pid}").exists() or "sleep" not in _cmdline(fake_pid)
    assert not b.status().running


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""
