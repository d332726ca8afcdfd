"""The one Faust app of ctpipe.

Agents are registered on it by their own modules (``processors.<verb>.register``), so a process
runs exactly the agents it was built with (the worker, the demo, a test).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust


def create_app(app_id: str, bootstrap: str, datadir: Path, **overrides: Any) -> faust.App:
    """A Faust app on the real broker. State stores default to memory; tables opt into rocksdict."""
    datadir.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "broker": f"kafka://{bootstrap}",
        "datadir": str(datadir),
        "store": "memory://",
        "web_enabled": False,
        "consumer_auto_offset_reset": "earliest",
        "topic_replication_factor": 1,
        "topic_allow_declare": True,
        "broker_commit_every": 1000,
        "broker_commit_interval": 1.0,
        "producer_acks": -1,
        "autodiscover": False,
    }
    options.update(overrides)
    return faust.App(app_id, **options)


def crash_reason(app: faust.App) -> BaseException | None:
    """Why the app (or its consumer/fetcher) crashed, if it did: lets callers fail fast."""
    for service in (app, getattr(app, "consumer", None), getattr(app, "_fetcher", None)):
        if service is not None and getattr(service, "crashed", False):
            reason = getattr(service, "crash_reason", None)
            return reason if isinstance(reason, BaseException) else RuntimeError(f"{service} crashed")
    return None
