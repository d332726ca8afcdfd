"""The optional native (mypyc) build: same outputs as the sources, never stale, loaded in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from producers.generator import GeneratorConfig, generate
from schemas import _native
from tests.conftest import IN_CI, REPO
from tests.unit.schemas._spec import SPEC


def _probe(workload: Path, native: bool) -> dict[str, object]:
    env = {**os.environ, _native.ENV: "1" if native else "0", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.native_probe", str(workload), str(SPEC)],
        cwd=REPO,
        env=env,
        capture_output=True,
        check=True,
    )
    return orjson.loads(proc.stdout)  # type: ignore[no-any-return]


@pytest.mark.skipif(not _native.available() and not IN_CI, reason="no native build (`ctpipe native build`)")
def test_native_build_gives_the_same_bytes_as_the_sources(tmp_path: Path) -> None:
    """Every document of a workload (all formats, CDN and origin logs) and every conformance
    fixture through normalize, sessionize and correlate: identical outputs compiled and not.
    Under CI=true the build must exist (``make test`` builds it): CI measures what runs."""
    assert _native.available(), "CI: the native build is missing (`ctpipe native build --verbose`)"
    generate(GeneratorConfig(seed=7, sessions=40), out=tmp_path)
    native, pure = _probe(tmp_path, True), _probe(tmp_path, False)
    assert set(native["compiled"]) == {  # type: ignore[arg-type]
        m.removesuffix(".py").replace("/", ".") for m in _native.MODULES
    }
    assert pure["compiled"] == []
    counts = pure["counts"]
    assert isinstance(counts, dict)
    assert counts["documents"] > 500 and counts["dead_letters"] > 10  # fixtures/invalid included
    assert counts["sessions"] >= 40 and counts["groups"] > 100
    assert native["counts"] == counts
    assert native["digest"] == pure["digest"]


def test_the_build_is_keyed_by_the_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An edited source has another tag, hence no build: a stale extension is never loaded."""
    root = tmp_path / "tree"
    for pkg in _native.PACKAGES:
        (root / pkg).mkdir(parents=True)
        for src in (REPO / pkg).glob("*.py"):
            (root / pkg / src.name).write_bytes(src.read_bytes())
    monkeypatch.setattr(_native, "ROOT", root)
    before = _native.compute_tag()
    assert _native.compute_tag() == before  # deterministic
    with (root / "processors" / "correlate.py").open("a") as f:
        f.write("\n# edited\n")
    assert _native.compute_tag() != before
    (root / "processors" / "correlate.py").write_bytes((REPO / "processors" / "correlate.py").read_bytes())
    assert _native.compute_tag() == before
    (root / "schemas" / "new_module.py").write_text("X = 1\n")  # a new module counts too
    assert _native.compute_tag() != before


def test_activate_puts_only_a_complete_matching_build_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_native, "active", {})
    monkeypatch.setattr(_native, "base_dir", lambda: tmp_path)
    monkeypatch.setattr(_native, "_tag", "t1")
    path = ["/src/schemas"]
    assert not _native.activate("schemas", path) and path == ["/src/schemas"]  # no build
    (tmp_path / "t1" / "schemas").mkdir(parents=True)
    assert not _native.activate("schemas", path) and path == ["/src/schemas"]  # not COMPLETE
    (tmp_path / "t1" / _native.COMPLETE).write_text("")
    monkeypatch.setenv(_native.ENV, "0")
    assert not _native.activate("schemas", path) and path == ["/src/schemas"]  # switched off
    monkeypatch.setenv(_native.ENV, "1")
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert _native.activate("schemas", path)
    assert path == [str(tmp_path / "t1" / "schemas"), "/src/schemas"]
    assert str(tmp_path / "t1" / "lib") in sys.path
