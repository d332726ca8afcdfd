"""The local broker as the settings describe it (one place builds its configuration)."""

from __future__ import annotations

from collections.abc import Callable

from ctpipe.settings import Settings
from deploy.kafka.local import LocalBroker, LocalBrokerConfig


def local_broker(settings: Settings, log: Callable[[str], None]) -> LocalBroker:
    return LocalBroker(
        LocalBrokerConfig(
            home=settings.kafka_dir,
            cache_dir=settings.jar_cache_dir,
            host=settings.kafka_host,
            port=settings.kafka_port,
            controller_port=settings.kafka_controller_port,
            version=settings.kafka_version,
            kafka_home=settings.kafka_home,
            heap=settings.kafka_heap,
            start_timeout=settings.kafka_start_timeout,
        ),
        log=log,
    )
