"""The worker's stages with their real I/O shells, without Faust's consumption: CPU per stage.

Run: .venv/bin/python bench/bench_stages.py [--sessions 500] [--rounds 3] [--bootstrap HOST:PORT]

What it runs, in this process (no broker round trip for the input):

1. a simulated workload (``ctpipe generate``: every delivery format + CDN / origin logs) is
   published to RAW on a real broker (a local one is started unless ``--bootstrap``) and read
   back, so the documents are the worker's RAW messages byte for byte;
2. normalize: ``normalize_message`` per RAW message + ``route_outputs`` every
   ``processors.normalize.PART_EVENTS`` events of a batch (packed EVENTS and RETRIEVALS
   messages, as the worker's normalize writes them);
3. sessionize and correlate: the real ``StateStage._process_reliably`` (``process`` in parts of
   ``processors.app.PART_BYTES`` of input, as the agent runs it) over those messages in batches
   of 2,000 (RocksDB ``ChangelogStore``, changelog writes and outputs produced to the broker),
   then a drain closes every session and group (``close_due``, ``CLOSE_PART`` keys per flush),
   then the producer is flushed. ``--part-bytes`` / ``--close-part`` / ``--part-events`` set
   those three sizes for an experiment.

Reported: the thread CPU seconds of each part and canonical events per CPU second of all of them
(the worker's event-loop work; Faust's fetching and librdkafka's threads are not in it, the
end-to-end ``bench_pipeline.py`` has those). Baseline (same run): bare ``schemas.normalize.ingest``
of the same documents. Each round uses fresh stores and topics; the best and the median round
are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


@dataclass
class Msg:
    """What a stage reads of a Faust message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes

    @property
    def tp(self) -> Any:
        from faust.types import TP

        return TP(self.topic, self.partition)


def read_all(bootstrap: str, topic: str, count: int) -> list[Any]:
    import confluent_kafka

    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-stages-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.time() + 120
    while len(out) < count and time.time() < deadline:
        out.extend(m for m in consumer.consume(1000, 1.0) if m.error() is None)
    consumer.close()
    if len(out) < count:
        raise RuntimeError(f"read {len(out)} of {count} RAW messages")
    return out


def one_round(bootstrap: str, tmp: Path, raw: list[Any], owners: Any, batch: int) -> dict[str, float]:
    from confluent_kafka.admin import AdminClient, NewTopic
    from faust.types import TP

    from deploy.kafka.topics import delete_topics, ensure_topics
    from processors import normalize as normalize_mod
    from processors.normalize import normalize_message, route_outputs
    from processors.worker import WorkerConfig, WorkerTopics, build_worker, parts
    from schemas.topics import ALL

    ns = f"bstage{uuid.uuid4().hex[:6]}"
    topics = WorkerTopics.for_namespace(ns)
    ensure_topics(bootstrap, [tp.namespaced(ns) for tp in ALL])
    # the worker's own app: its stage configs, batch sizes and shared RocksDB memory budget
    # (never started: no consumer runs, the stages are driven below)
    app = build_worker(f"bench-{ns}", bootstrap, tmp / ns, ns, WorkerConfig())
    sess, corr = parts(app).sessionizer, parts(app).correlator
    assert sess is not None and corr is not None
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for name, n in (
        (sess.table.changelog_topic_name, topics.events.partitions),
        (corr.table.changelog_topic_name, topics.retrievals.partitions),
    ):
        admin.create_topics([NewTopic(name, n, 1, config={"cleanup.policy": "compact"})])[name].result()
    actives = {TP(sess.table.changelog_topic_name, p) for p in range(topics.events.partitions)} | {
        TP(corr.table.changelog_topic_name, p) for p in range(topics.retrievals.partitions)
    }
    app.assignor.assigned_actives = lambda: actives  # type: ignore[method-assign]
    res: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        t = time.thread_time()
        got = fn()
        res[name] = res.get(name, 0.0) + time.thread_time() - t
        return got

    events = 0
    wire: list[tuple[str, int, bytes]] = []

    def route(outs: list[Any]) -> None:
        wire.extend(
            timed(
                "route",
                lambda: route_outputs(
                    outs,
                    topics.events.name,
                    topics.events.partitions,
                    topics.retrievals.name,
                    topics.retrievals.partitions,
                ),
            )
        )

    for start in range(0, len(raw), batch):
        outs: list[Any] = []
        part = 0  # events in ``outs``: routed every PART_EVENTS, as the worker's normalize does
        for m in raw[start : start + batch]:
            t = time.thread_time()
            out = normalize_message(
                m.value(),
                key=m.key(),
                headers=m.headers(),
                topic=m.topic(),
                partition=m.partition(),
                offset=m.offset(),
                owners=owners,
            )
            res["normalize"] = res.get("normalize", 0.0) + time.thread_time() - t
            events += out.event_count
            part += out.event_count
            outs.append(out)
            if part >= normalize_mod.PART_EVENTS:
                route(outs)
                outs, part = [], 0
        if outs:
            route(outs)
    offsets: dict[tuple[str, int], int] = {}
    by_topic: dict[str, list[Msg]] = {topics.events.name: [], topics.retrievals.name: []}
    for topic, partition, value in wire:
        off = offsets[(topic, partition)] = offsets.get((topic, partition), -1) + 1
        by_topic[topic].append(Msg(topic, partition, off, None, value))

    async def run() -> None:
        now = time.time()
        for stage in (sess, corr):  # the first tick after the assignment (the worker's too):
            await stage.close_due(now)  # the index is built from the (empty) table
        for stage, msgs in ((sess, by_topic[topics.events.name]), (corr, by_topic[topics.retrievals.name])):
            for start in range(0, len(msgs), batch):
                t = time.thread_time()
                await stage._process_reliably(msgs[start : start + batch])  # in parts, as the agent
                res[f"{stage.name}.process"] = res.get(f"{stage.name}.process", 0.0) + time.thread_time() - t
        for stage in (sess, corr):
            stage.request_drain()
            t = time.thread_time()
            await stage.close_due(now + 1.0)
            res[f"{stage.name}.close"] = time.thread_time() - t
        await app.output.flush()  # every output acknowledged (served in an executor thread: not timed)

    asyncio.run(run())
    app.output.close()
    res["events"] = events
    res["total"] = sum(v for k, v in res.items() if k != "events")
    res["sessions_closed"] = sess.stats.closed
    res["groups_closed"] = corr.stats.groups_closed
    delete_topics(
        bootstrap,
        [tp.namespaced(ns).name for tp in ALL]
        + [sess.table.changelog_topic_name, corr.table.changelog_topic_name],
    )
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--bootstrap", default="")
    ap.add_argument("--part-bytes", type=int, default=0, help="processors.app.PART_BYTES (0: as is)")
    ap.add_argument("--close-part", type=int, default=0, help="processors.app.CLOSE_PART (0: as is)")
    ap.add_argument("--part-events", type=int, default=0, help="processors.normalize.PART_EVENTS (0: as is)")
    a = ap.parse_args()
    import processors.app
    import processors.normalize

    if a.part_bytes:
        processors.app.PART_BYTES = a.part_bytes
    if a.close_part:
        processors.app.CLOSE_PART = a.close_part
    if a.part_events:
        processors.normalize.PART_EVENTS = a.part_events

    from ctpipe.demo import publish_workload
    from ctpipe.settings import Settings
    from deploy.kafka.topics import ensure_topics, message_count
    from producers.generator import GeneratorConfig, generate
    from producers.replay import workload_messages
    from schemas import _native
    from schemas.normalize import ingest
    from schemas.owners import load as load_owners
    from schemas.topics import ALL

    tmp = Path(tempfile.mkdtemp(prefix="ctpipe-bench-stages-"))
    broker = None
    try:
        bootstrap = a.bootstrap
        if not bootstrap:
            from deploy.kafka.local import LocalBroker, LocalBrokerConfig
            from tests.infra import free_port

            jar_cache = Settings(_env_file=None).jar_cache_dir  # type: ignore[call-arg]
            broker = LocalBroker(
                LocalBrokerConfig(
                    home=tmp / "kafka", cache_dir=jar_cache, port=free_port(), controller_port=free_port()
                )
            )
            bootstrap = broker.start().bootstrap
        workload = tmp / "workload"
        generate(GeneratorConfig(seed=a.seed, sessions=a.sessions), out=workload)
        msgs = list(workload_messages(workload))
        t = time.thread_time()
        base_events = sum(len(ingest(m.value, emitter=m.emitter, source=m.source).events) for m in msgs)
        base_s = time.thread_time() - t
        ns = f"bsraw{uuid.uuid4().hex[:6]}"
        topics = [tp.namespaced(ns) for tp in ALL]
        ensure_topics(bootstrap, topics)
        raw_topic = next(tp.name for tp in topics if tp.name.endswith(".raw"))
        settings = Settings(
            _env_file=None, kafka_bootstrap=bootstrap, topic_namespace=ns, data_dir=tmp / "publish"
        )  # type: ignore[call-arg]
        publish_workload(settings, workload, raw_topic)
        raw = read_all(bootstrap, raw_topic, message_count(bootstrap, raw_topic))
        owners_path = workload / "owners.json"
        owners = load_owners(owners_path) if owners_path.exists() else None
        print(
            f"{len(raw)} RAW messages; native modules: {len(_native.loaded())}; "
            f"baseline bare ingest of the {len(msgs)} documents: {base_events / base_s:,.0f} events/s",
            flush=True,
        )
        from processors.worker import tune_gc

        tune_gc()  # as the worker does (gen-0 threshold, frozen start-up heap)
        rounds = []
        for i in range(a.rounds):
            r = one_round(bootstrap, tmp, raw, owners, a.batch)
            rounds.append(r)
            parts = " ".join(
                f"{k} {v:.3f}"
                for k, v in r.items()
                if k not in ("events", "total", "sessions_closed", "groups_closed")
            )
            print(
                f"round {i + 1}: {int(r['events'])} events, {r['total']:.3f} CPU s = "
                f"{r['events'] / r['total']:,.0f} events/CPU-s | {parts} | "
                f"closed {int(r['sessions_closed'])} sessions, {int(r['groups_closed'])} groups",
                flush=True,
            )
        rates = [r["events"] / r["total"] for r in rounds]
        keys = [k for k in rounds[0] if k not in ("events", "total", "sessions_closed", "groups_closed")]
        parts = " ".join(f"{k} {statistics.median(r[k] for r in rounds):.3f}" for k in keys)
        print(
            f"median {statistics.median(rates):,.0f} best {max(rates):,.0f} events/CPU-s | "
            f"median CPU s: {parts}",
            flush=True,
        )
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        os.environ.pop("_", None)


if __name__ == "__main__":
    main()
