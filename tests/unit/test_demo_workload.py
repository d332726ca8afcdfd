"""ctpipe.demo.demo_workload: a cached workload is reused only when the current simulator wrote it."""

from __future__ import annotations

from pathlib import Path

import orjson
from rich.console import Console

from ctpipe.demo import demo_workload
from ctpipe.settings import Settings


def test_a_workload_cached_by_an_older_simulator_is_generated_again(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    console = Console(file=None, quiet=True)
    path = demo_workload(settings, 3, 4, console)
    manifest = path / "manifest.json"
    first = manifest.read_bytes()
    assert demo_workload(settings, 3, 4, console) == path
    assert manifest.read_bytes() == first  # current: reused as it is
    # as an older simulator wrote it: no destination reports, no setting for them
    doc = orjson.loads(first)
    del doc["args"]["destination_rate"]
    manifest.write_bytes(orjson.dumps(doc))
    (path / "stale-file").write_text("left by the old run")
    assert demo_workload(settings, 3, 4, console) == path
    assert manifest.read_bytes() == first  # generated again (same seed: same bytes)
    assert not (path / "stale-file").exists()
