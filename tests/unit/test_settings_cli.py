from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from ctpipe.cli import app
from ctpipe.settings import Settings, mask_url


def test_defaults_are_local_and_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = Settings()
    assert s.data_dir == tmp_path / ".ctpipe"
    assert s.local_kafka and s.bootstrap == "127.0.0.1:9092"
    assert s.kafka_controller_port == 9093
    # chdb:///abs/path: three slashes, or clickhouse-connect would read the first segment as a host
    assert s.clickhouse_url == f"chdb://{tmp_path}/.ctpipe/clickhouse?database=ctpipe"
    assert s.clickhouse_url.startswith("chdb:///")


def test_env_prefix_and_kafka_home_alias(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CTPIPE_KAFKA_PORT", "19092")
    monkeypatch.setenv("KAFKA_HOME", str(tmp_path))
    monkeypatch.setenv("CTPIPE_KAFKA_BOOTSTRAP", "")
    s = Settings()
    assert s.kafka_port == 19092 and s.kafka_controller_port == 19093
    assert s.kafka_home == tmp_path
    monkeypatch.setenv("CTPIPE_KAFKA_BOOTSTRAP", "kafka:9092")
    assert Settings().bootstrap == "kafka:9092" and not Settings().local_kafka


def test_invalid_port_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTPIPE_KAFKA_PORT", "70000")
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("http://default:s3cret@ch:8123/ctpipe", "http://default:****@ch:8123/ctpipe"),
        ("https://u@ch:8443/db", "https://u@ch:8443/db"),
        ("http://ch:8123/db?password=pw&x=1", "http://ch:8123/db?password=****&x=1"),
        (
            "chdb:///var/lib/ctpipe/clickhouse?database=ctpipe",
            "chdb:///var/lib/ctpipe/clickhouse?database=ctpipe",
        ),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_config_command_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTPIPE_CLICKHOUSE_URL", "http://default:hunter2@ch:8123/ctpipe")
    result = CliRunner().invoke(app, ["config", "--json"])
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    assert json.loads(result.output)["clickhouse_url"] == "http://default:****@ch:8123/ctpipe"


def test_bad_setting_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTPIPE_KAFKA_PORT", "not-a-port")
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 2
    assert "CTPIPE_KAFKA_PORT" in result.output
