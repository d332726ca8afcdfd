"""Replaying a workload directory sends exactly what `ctpipe generate --to-kafka` sends."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from producers.generator import SOURCE_OF, GeneratorConfig, generate
from producers.replay import workload_messages
from schemas.normalize import ingest


def test_replay_equals_direct_publishing(tmp_path: Path) -> None:
    sent: list[tuple[bytes | None, bytes, str, str]] = []

    def collect(fmt: str, key: bytes | None, emitter: str, value: bytes) -> None:
        sent.append((key, value, emitter, SOURCE_OF[fmt]))

    cfg = GeneratorConfig(seed=11, sessions=25)
    generate(cfg, out=tmp_path / "direct", documents=collect)
    generate(cfg, out=tmp_path / "files")
    replayed = [(m.key, m.value, m.emitter, m.source) for m in workload_messages(tmp_path / "files")]
    assert len(sent) > 50
    assert Counter(replayed) == Counter(sent)
    for _key, value, emitter, source in replayed[:200]:
        assert ingest(value, emitter=emitter, source=source).accepted
