"""`ctpipe worker`: run the processors (normalize, sessionize, correlate, aggregate) until stopped.

``run`` is the CLI body: it creates the namespaced topics, starts the Faust app built by
``processors.worker.build_worker`` against ``settings.bootstrap`` and serves until SIGINT/SIGTERM
(clean stop: the app commits and flushes) or until a stage crashes (exit 1, e.g. the normalize
circuit breaker). ``running_worker`` is the same worker in-process for the demo and tests, with
``drain()`` to close every open session and correlation group now.

``CTPIPE_OWNER_REGISTRY`` (``settings.owner_registry``) names the content owner registry
(``schemas.owners``, CT 0.1 section 7.3); ``run`` loads and validates it before anything starts,
so a bad file stops the worker with one line (exit 2), never per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import faust

from ctpipe.settings import Settings
from deploy.kafka.topics import ensure_topics
from processors import worker as pw
from processors.worker import WorkerConfig, WorkerTopics
from schemas.owners import OwnerRegistryError, load as load_owner_registry

STOP_TIMEOUT = 30.0

__all__ = ["WorkerConfig", "WorkerHandle", "run", "running_worker", "with_owner_registry"]


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
    app = pw.build_worker(worker_app_id(app_id, namespace), bootstrap, datadir, namespace, config)
    pw.tune_gc()
    await app.start()
    try:
        yield WorkerHandle(app, topics)
    finally:
        # Faust can wait forever for a crashed stream to stop: bound it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(app.stop(), STOP_TIMEOUT)


def worker_app_id(app_id: str, namespace: str) -> str:
    """The Faust app id (and consumer group) of a worker on ``namespace``."""
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
        owners = config.owner_registry
        registry = (
            f"; owner registry: {len(owners)} content_id prefixes of {len(owners.domains())} domains"
            if owners is not None
            else ""
        )
        print(
            f"ctpipe worker: consuming {handle.topics.raw.name} on {settings.bootstrap}{registry} "
            f"(Ctrl-C or SIGTERM to stop)",
            file=sys.stderr,
        )
        while not stop.is_set():
            reason = pw.failure(handle.app)
            if reason is not None:
                print(f"ctpipe worker: stopped: {reason}", file=sys.stderr)
                sys.stderr.flush()
                # No graceful Faust stop: it would acknowledge and commit the batch that could
                # not be processed (processors.app.park_unacknowledged). Exit now; a restart
                # reprocesses from the last commit (at-least-once, idempotent effects).
                os._exit(1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        print(f"ctpipe worker: stopping; {handle.stats()}", file=sys.stderr)
    return 0


def with_owner_registry(config: WorkerConfig, path: Path | None) -> WorkerConfig:
    """``config`` with the owner registry at ``path`` (None: unchanged); ``OwnerRegistryError``."""
    if path is None:
        return config
    return replace(config, owner_registry=load_owner_registry(path))


def run(settings: Settings, config: WorkerConfig) -> int:
    """CLI body of `ctpipe worker`: serve until SIGINT/SIGTERM; 0 on a clean stop, 1 on a crash,
    2 on a bad owner registry (``CTPIPE_OWNER_REGISTRY``, checked before anything starts)."""
    if config.owner_registry is None:
        try:
            config = with_owner_registry(config, settings.owner_registry)
        except OwnerRegistryError as exc:
            print(f"ctpipe worker: bad owner registry (CTPIPE_OWNER_REGISTRY): {exc}", file=sys.stderr)
            return 2
    try:
        return asyncio.run(_serve(settings, config))
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # one line for the user, not a traceback
        print(f"ctpipe worker: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
