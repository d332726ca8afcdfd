"""Broker prerequisites and jar resolution, with stand-in `java`/`mvn` executables on PATH."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deploy.kafka.local import (
    BrokerError,
    LocalBroker,
    LocalBrokerConfig,
    cached_distribution,
    fetch_with_maven,
    home_distribution,
    require_java,
    resolve_distribution,
)


def _exe(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


@pytest.fixture
def only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH holding only the stand-ins written into the returned directory (plus sh basics)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def test_java_missing(only: Path) -> None:
    with pytest.raises(BrokerError, match="Java not found on PATH"):
        require_java()


def test_java_too_old(only: Path) -> None:
    _exe(only, "java", "echo 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    with pytest.raises(BrokerError, match="Java 11 found .* needs Java 17"):
        require_java()
    _exe(only, "java", "echo 'java version \"1.8.0_292\"' >&2\n")
    with pytest.raises(BrokerError, match="Java 8 found"):
        require_java()


def test_java_17_accepted(only: Path) -> None:
    _exe(only, "java", "echo 'openjdk version \"17.0.15\" 2025-04-15' >&2\n")
    assert require_java() == str(only / "java")


def test_maven_missing_names_the_alternative(only: Path, tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="Maven .* not found.*KAFKA_HOME"):
        fetch_with_maven(tmp_path / "cache")


# A stand-in Maven: 4.4.0 is "incomplete on Maven Central", 4.3.1 resolves.
FAKE_MVN = r"""
range=""; out=""
for a in "$@"; do
  case "$a" in
    -Dkafka.version.range=*) range="${a#-Dkafka.version.range=}";;
    -DoutputDirectory=*) out="${a#-DoutputDirectory=}";;
  esac
done
echo "$range" >> "$(/usr/bin/dirname "$0")/ranges.log"
case "$range" in
  "[4.0.0,5.0.0)") echo "[ERROR] Failed to execute goal: Could not find artifact org.apache.kafka:kafka-tools-api:jar:4.4.0 in central"; exit 1;;
  "[4.0.0,4.4.0)"|"[4.3.1]") /bin/mkdir -p "$out"; : > "$out/kafka_2.13-4.3.1.jar"; : > "$out/kafka-clients-4.3.1.jar"; exit 0;;
  *) echo "[ERROR] unexpected range $range"; exit 1;;
esac
"""


def test_newest_complete_4x_wins_and_is_cached(only: Path, tmp_path: Path) -> None:
    _exe(only, "mvn", FAKE_MVN)
    cache = tmp_path / "cache"
    dist = fetch_with_maven(cache)
    assert dist.version == "4.3.1"
    assert (dist.libs / "kafka_2.13-4.3.1.jar").exists()
    assert (only / "ranges.log").read_text().split() == ["[4.0.0,5.0.0)", "[4.0.0,4.4.0)"]
    assert cached_distribution(cache) == dist
    assert cached_distribution(cache, "4.3.1") == dist
    assert cached_distribution(cache, "4.2.0") is None
    # A cached distribution needs no Maven at all.
    (only / "mvn").unlink()
    cfg = LocalBrokerConfig(home=tmp_path / "home", cache_dir=cache)
    assert resolve_distribution(cfg) == dist


def test_pinned_version_is_resolved_exactly(only: Path, tmp_path: Path) -> None:
    _exe(only, "mvn", FAKE_MVN)
    assert fetch_with_maven(tmp_path / "cache", "4.3.1").version == "4.3.1"
    assert (only / "ranges.log").read_text().split() == ["[4.3.1]"]


def test_maven_offline_is_one_clear_line(only: Path, tmp_path: Path) -> None:
    _exe(
        only,
        "mvn",
        "echo '[ERROR] Failed to execute goal on project x: Could not transfer artifact "
        "org.apache.kafka:kafka_2.13:pom:4.3.1 from/to central: Unknown host: Temporary failure in name resolution'\n"
        "exit 1\n",
    )
    with pytest.raises(BrokerError, match="could not reach Maven Central") as info:
        fetch_with_maven(tmp_path / "cache")
    assert "\n" not in str(info.value)


def test_offline_with_a_cache_falls_back_to_it(only: Path, tmp_path: Path) -> None:
    _exe(only, "mvn", FAKE_MVN)
    cached = fetch_with_maven(tmp_path / "cache")
    _exe(only, "mvn", "echo '[ERROR] Could not transfer artifact x: Unknown host'\nexit 1\n")
    cfg = LocalBrokerConfig(home=tmp_path / "home", cache_dir=tmp_path / "cache")
    assert resolve_distribution(cfg, refresh=True) == cached


def test_kafka_home_distribution(tmp_path: Path) -> None:
    home = tmp_path / "kafka_2.13-4.1.0"
    (home / "libs").mkdir(parents=True)
    with pytest.raises(BrokerError, match="not an unpacked Apache Kafka distribution"):
        home_distribution(tmp_path)
    (home / "libs" / "kafka_2.13-4.1.0.jar").touch()
    dist = home_distribution(home)
    assert dist.version == "4.1.0" and dist.classpath == f"{home / 'libs'}{os.sep}*"
    old = tmp_path / "kafka_2.13-3.9.1"
    (old / "libs").mkdir(parents=True)
    (old / "libs" / "kafka_2.13-3.9.1.jar").touch()
    with pytest.raises(BrokerError, match="needs 4.x"):
        home_distribution(old)
    cfg = LocalBrokerConfig(home=tmp_path / "h", cache_dir=tmp_path / "c", kafka_home=home)
    assert resolve_distribution(cfg) == dist


def test_properties_render_ports_and_paths(tmp_path: Path) -> None:
    cfg = LocalBrokerConfig(home=tmp_path / "k", cache_dir=tmp_path / "c", port=29092, controller_port=29093)
    text = LocalBroker(cfg).render_properties()
    props = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:29093"
    assert props["process.roles"] == "broker,controller"
    assert props["log.dirs"] == str((tmp_path / "k").resolve() / "data")
    assert props["auto.create.topics.enable"] == "false"


def test_status_of_a_never_started_broker(tmp_path: Path) -> None:
    status = LocalBroker(LocalBrokerConfig(home=tmp_path / "k", cache_dir=tmp_path / "c")).status()
    assert not status.running and not status.answering and status.pid is None
    assert "stopped" in status.describe()
