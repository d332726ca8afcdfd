"""docker-compose.yml cannot run here (no Docker engine): check what it promises instead."""

from __future__ import annotations

import shlex
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from typer.main import get_command

from ctpipe.cli import app

REPO = Path(__file__).resolve().parents[2]


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _env_file(path: str) -> dict[str, str]:
    lines = (REPO / path).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def _cli_paths() -> set[tuple[str, ...]]:
    root = get_command(app)
    paths: set[tuple[str, ...]] = set()
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        paths.add((name,))
        for sub in getattr(cmd, "commands", {}):
            paths.add((name, sub))
    return paths


def test_services_and_images() -> None:
    services = _compose()["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    env = services["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # topics come from schemas/topics.py
    assert any(name.startswith("ctpipe-") for name in services)


def test_ctpipe_services_point_at_the_compose_servers() -> None:
    compose = _compose()
    services = compose["services"]
    clickhouse_env = services["clickhouse"]["environment"]
    for name, svc in services.items():
        if not name.startswith("ctpipe-"):
            continue
        env = _env_file(svc["env_file"])
        host, port = env["CTPIPE_KAFKA_BOOTSTRAP"].split(":")
        assert host in services and port == "9092"
        url = urlsplit(env["CTPIPE_CLICKHOUSE_URL"])
        assert url.hostname in services and url.port == 8123
        assert (url.username, url.password) == (
            clickhouse_env["CLICKHOUSE_USER"],
            clickhouse_env["CLICKHOUSE_PASSWORD"],
        )
        for dep in svc.get("depends_on", {}):
            assert dep in services


def test_every_ctpipe_command_in_compose_exists_in_the_cli() -> None:
    known = _cli_paths()
    for name, svc in _compose()["services"].items():
        if not name.startswith("ctpipe-"):
            continue
        entry = svc.get("entrypoint")
        if entry and entry[:2] == ["sh", "-c"]:
            calls = [shlex.split(part) for part in entry[2].split("&&")]
        else:
            calls = [svc["command"]]
        for argv in calls:
            if argv and argv[0] == "ctpipe":
                argv = argv[1:]
            assert tuple(argv[:2]) in known or tuple(argv[:1]) in known, (name, argv)


def test_the_image_build_context_exists() -> None:
    for svc in _compose()["services"].values():
        build = svc.get("build")
        if build:
            assert (REPO / build["context"] / build["dockerfile"]).is_file()
