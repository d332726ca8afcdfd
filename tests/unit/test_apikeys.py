"""Gateway API keys: hashed storage, lookup, roles, reload, and the keys CLI bodies."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import orjson
import pytest

from ctpipe.gateway import keys_add, keys_list, keys_revoke
from ctpipe.settings import Settings
from producers.apikeys import TOKEN_PREFIX, KeyFileError, KeyStore, digest, parse_roles


def test_keys_are_random_stored_hashed_and_found(tmp_path: Path) -> None:
    path = tmp_path / "k" / "keys.json"
    store = KeyStore(path)
    token, key = store.add("acme-agent", "agent")
    token2, _ = store.add("acme-cdn", ["edge", "origin"])
    assert token.startswith(TOKEN_PREFIX) and len(token) >= len(TOKEN_PREFIX) + 43 and token != token2
    text = path.read_text()
    assert token not in text and token2 not in text  # never stored
    assert digest(token) in text and key.sha256 == digest(token)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    fresh = KeyStore(path)
    found = fresh.lookup(token)
    assert found is not None and found.emitter == "acme-agent" and found.roles == frozenset({"agent"})
    cdn = fresh.lookup(token2)
    assert cdn is not None and cdn.roles == frozenset({"edge", "origin"})
    assert fresh.lookup(token + "x") is None
    assert fresh.lookup("") is None and fresh.lookup(None) is None
    assert fresh.lookup(digest(token)) is None  # the stored digest is not a key


def test_roles_are_validated() -> None:
    assert parse_roles("agent, EDGE") == frozenset({"agent", "edge"})
    with pytest.raises(ValueError, match="unknown source role"):
        parse_roles("agent,cdn")
    with pytest.raises(ValueError, match="at least one"):
        parse_roles(" , ")


def test_store_reloads_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    serving = KeyStore(path, reload_interval=0)
    token, _ = KeyStore(path).add("late", "agent")  # another process (the CLI) adds a key
    assert serving.lookup(token) is not None


def test_broken_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text('{"keys": [{"id": 1}]}')
    with pytest.raises(KeyFileError, match="not valid"):
        KeyStore(path)


def test_revoke(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    token, key = store.add("a", "agent")
    assert store.revoke(key.id)
    assert KeyStore(tmp_path / "keys.json").lookup(token) is None
    assert not store.revoke(key.id)


def test_cli_add_prints_the_key_once_and_list_never(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    assert keys_add(settings, "acme-cdn", "edge,origin") == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith(TOKEN_PREFIX)
    assert (tmp_path / "gateway-keys.json").exists()
    assert keys_list(settings) == 0
    out = capsys.readouterr().out
    assert "acme-cdn" in out and "edge,origin" in out and token not in out
    assert keys_list(settings, as_json=True) == 0
    rows = orjson.loads(capsys.readouterr().out)
    assert rows[0]["emitter"] == "acme-cdn" and "sha256" not in rows[0]
    assert keys_add(settings, "x", "nonsense") == 2
    assert keys_revoke(settings, rows[0]["id"]) == 0
    assert KeyStore(tmp_path / "gateway-keys.json").lookup(token) is None
