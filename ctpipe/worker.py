"""`ctpipe worker`: run the processors (normalize, sessionize, correlate, aggregate) until stopped.

``run`` is the CLI body: it creates the namespaced topics, starts the Faust app built by
``processors.worker.build_worker`` against ``settings.bootstrap`` and serves until SIGINT/SIGTERM
(clean stop: the app commits and flushes) or until a stage crashes (exit 1, e.g. the normalize
circuit breaker). ``running_worker`` is the same worker in-process for the demo and tests, with
``drain()`` to close every open session and correlation group now.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust

from ctpipe.settings import Settings
from deploy.kafka.topics import ensure_topics
from processors import worker as pw
from processors.worker import WorkerConfig, WorkerTopics

STOP_TIMEOUT = 30.0

__all__ = ["WorkerConfig", "WorkerHandle", "run", "running_worker"]


@dataclass
class WorkerHandle:
    """A running in-process worker."""

    app: faust.App
    topics: WorkerTopics

    async def drain(self, timeout: float = 30.0) -> None:
        """Close every open session and correlation group at the stages' next tick."""
        self.check()
        await pw.drain(self.app, timeout)

    def stats(self) -> dict[str, dict[str, Any]]:
        return pw.stats(self.app)

    def check(self) -> None:
        """Raise if the worker crashed (e.g. the normalize circuit breaker tripped)."""
        reason = pw.failure(self.app)
        if reason is not None:
            raise RuntimeError(f"the worker stopped: {reason}") from reason


@contextlib.asynccontextmanager
async def running_worker(
    *,
    bootstrap: str,
    datadir: Path,
    namespace: str,
    config: WorkerConfig,
    app_id: str = "ctpipe",
) -> AsyncIterator[WorkerHandle]:
    """Create the topics, start the worker, yield a handle, stop it cleanly on exit."""
    topics = WorkerTopics.for_namespace(namespace)
    await asyncio.to_thread(ensure_topics, bootstrap, topics.all())
    app = pw.build_worker(_app_id(app_id, namespace), bootstrap, datadir, namespace, config)
    pw.tune_gc()
    await app.start()
    try:
        yield WorkerHandle(app, topics)
    finally:
        # Faust can wait forever for a crashed stream to stop: bound it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(app.stop(), STOP_TIMEOUT)


def _app_id(app_id: str, namespace: str) -> str:
    return f"{app_id}-{namespace}-worker" if namespace else f"{app_id}-worker"


async def _serve(settings: Settings, config: WorkerConfig) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    datadir = settings.data_dir / "worker" / (settings.topic_namespace or "default")
    async with running_worker(
        bootstrap=settings.bootstrap,
        datadir=datadir,
        namespace=settings.topic_namespace,
        config=config,
        app_id=settings.app_id,
    ) as handle:
        print(
            f"ctpipe worker: consuming {handle.topics.raw.name} on {settings.bootstrap} "
            f"(Ctrl-C or SIGTERM to stop)",
            file=sys.stderr,
        )
        while not stop.is_set():
            reason = pw.failure(handle.app)
            if reason is not None:
                print(f"ctpipe worker: stopped: {reason}", file=sys.stderr)
                return 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        print(f"ctpipe worker: stopping; {handle.stats()}", file=sys.stderr)
    return 0


def run(settings: Settings, config: WorkerConfig) -> int:
    """CLI body of `ctpipe worker`: serve until SIGINT/SIGTERM; 0 on a clean stop, 1 on a crash."""
    try:
        return asyncio.run(_serve(settings, config))
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # one line for the user, not a traceback
        print(f"ctpipe worker: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
