"""Where the shared specifications live, and small helpers to read them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson

SPEC = (Path(__file__).resolve().parents[3] / ".." / "shared" / "spec").resolve()
CT01 = SPEC / "content-telemetry-0.1"
CT10 = SPEC / "content-telemetry-1.0"
OA04 = SPEC / "openattribution-0.4"
VALID = sorted((CT01 / "tests" / "valid").glob("*.json"))
INVALID = sorted((CT01 / "tests" / "invalid").glob("*.json"))

_FENCE = re.compile(r"```json\n(.*?)```", re.DOTALL)


def json_blocks(markdown: Path) -> list[Any]:
    """Every fenced ``json`` block that decodes (leading ``//`` comment lines removed)."""
    out: list[Any] = []
    for block in _FENCE.findall(markdown.read_text(encoding="utf-8")):
        text = "\n".join(ln for ln in block.splitlines() if not ln.lstrip().startswith("//"))
        try:
            out.append(orjson.loads(text))
        except orjson.JSONDecodeError:
            continue
    return out
