"""End-to-end pipeline benchmark: Kafka -> worker -> sink -> queryable ClickHouse funnel rows.

Everything is real and on this machine: a local KRaft broker (``deploy.kafka.local``, free ports,
or ``--bootstrap``), the worker as its own process (``ctpipe.worker.running_worker``, the body of
``ctpipe worker``, plus a stats file and a SIGUSR1 drain so the benchmark can watch it), the
ClickHouse sink (``sinks.consumer``) in a thread of this process, embedded ClickHouse (chdb)
opened by this process (chdb allows one process per data path, and this one must query it).

Phases (``--phases peak,fresh,memory``):

1. ``peak``: a simulated workload (``producers.generator``) is published in full to the RAW topic
   (documents via ``producers.replay``, CDN/origin logs via ``ctpipe.ingest_logs``) *before* the
   worker starts. Measured: wall time from worker launch (and from its first output) until the
   worker consumed everything, drained, and the sink's group has no lag on FUNNEL, SESSIONS,
   CORRELATED and EVENTS; canonical events/s, documents/s, events per worker CPU second. The
   funnel in ClickHouse is compared with the workload's ground truth. Baseline, same run:
   ``schemas.normalize.ingest`` over the same documents in this process (the pure CPU floor).
2. ``fresh``: CT 0.1 session documents (7 events, ``ended_at`` set) produced by a separate
   process at a fixed rate (default: half the peak canonical events/s) with the worker tuned for
   latency (end_grace 0.2 s, tick 0.2 s) and sink batches of 0.25 s. Each document's produce time
   is stamped; ``funnel_contributions`` is polled for the session's rows (origin
   ``session:<id>:r1``). Freshness = first poll that sees the row - produce time.
3. ``memory``: N tiny CT standalone-event sessions (no ``ended_at``, inactivity timeout 2 h) are
   opened; the worker's RSS is sampled during the load and for ``--mem-seconds`` after it, while
   ``--mem-hold-rate`` events/s go into random open sessions (the sessions grow; none closes).

    .venv/bin/python bench/bench_pipeline.py [--phases peak,fresh,memory] [--sessions 500]
        [--fresh-seconds 60] [--fresh-rate EVENTS_S] [--mem-sessions 200000] [--mem-seconds 180]
        [--mem-hold-rate 1000]
        [--profile] [--bootstrap HOST:PORT] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
FRESH_AGENT = "fresh-bench-agent"
URLS = [f"https://www.site{i % 8}.com/articles/{i}" for i in range(2000)]


# --- /proc helpers ----------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """utime + stime of a process (all threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_faults(pid: int) -> dict[str, float]:
    """User and system CPU seconds and minor page faults of a process (all threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    out = {"user_s": int(fields[11]) / CLK_TCK, "sys_s": int(fields[12]) / CLK_TCK, "minflt": int(fields[7])}
    by_thread: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip().rstrip("0123456789/-:")
            tf = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        key = f"{name}{'(main)' if task.name == str(pid) else ''}"
        by_thread[key] = by_thread.get(key, 0) + int(tf[7])
    out["minflt_by_thread"] = by_thread  # type: ignore[assignment]
    return out


def thread_cpu(pid: int) -> dict[str, float]:
    """utime + stime per thread name of a process (threads of one name summed), seconds."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        name = name.rstrip("0123456789/-:") or name  # group numbered threads (rdk:broker1, ...)
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def proc_rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes."""
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return rss, hwm


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def du(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / f).stat().st_size
    return total


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))]


# --- the worker process -----------------------------------------------------------------------


def worker_proc(cfg: dict[str, Any]) -> None:
    """``ctpipe worker`` (same ``running_worker``), writing stats to a file; SIGUSR1 = drain."""
    from ctpipe.settings import Settings
    from ctpipe.worker import WorkerConfig, running_worker, with_owner_registry
    from processors import worker as pw

    settings = Settings()
    # CTPIPE_OWNER_REGISTRY (the workload's owners.json, as the truth attributes content ids)
    config = with_owner_registry(WorkerConfig(**cfg["worker"]), settings.owner_registry)
    stats_path = Path(cfg["stats"])

    def write(payload: dict[str, Any]) -> None:
        tmp = stats_path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(payload))
        os.replace(tmp, stats_path)

    async def serve() -> int:
        loop = asyncio.get_running_loop()
        stop, drain = asyncio.Event(), asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, drain.set)
        ns = settings.topic_namespace
        drained = 0
        async with running_worker(
            bootstrap=settings.bootstrap,
            datadir=settings.data_dir / "worker" / ns,
            namespace=ns,
            config=config,
            app_id=settings.app_id,
        ) as handle:
            while not stop.is_set():
                if drain.is_set():
                    drain.clear()
                    await handle.drain(timeout=300)
                    drained += 1
                reason = pw.failure(handle.app)
                write(
                    {
                        "t": time.time(),
                        "stats": handle.stats(),
                        "drained": drained,
                        "failure": repr(reason) if reason else None,
                    }
                )
                if reason is not None:
                    return 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.2)
        return 0

    cprofile = os.environ.get("CTPIPE_BENCH_CPROFILE")
    if not cprofile:
        raise SystemExit(asyncio.run(serve()))
    import cProfile

    # the event loop thread only, timed in its own CPU time (contention on the box does not count)
    prof = cProfile.Profile(time.thread_time)
    try:
        code = prof.runcall(asyncio.run, serve())
    finally:
        prof.dump_stats(cprofile)
    raise SystemExit(code)


class Worker:
    """The worker subprocess, seen from the benchmark."""

    def __init__(
        self,
        tmp: Path,
        bootstrap: str,
        ns: str,
        worker_cfg: dict[str, Any],
        name: str,
        owners: Path | None = None,
    ) -> None:
        self.stats_path = tmp / f"worker-{name}.json"
        self.log_path = tmp / f"worker-{name}.log"
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "CTPIPE_KAFKA_BOOTSTRAP": bootstrap,
            "CTPIPE_TOPIC_NAMESPACE": ns,
            "CTPIPE_DATA_DIR": str(tmp / f"data-{name}"),
        }
        if os.environ.get("CTPIPE_BENCH_CPROFILE"):  # --cprofile: per worker
            env["CTPIPE_BENCH_CPROFILE"] = str(
                Path(os.environ["CTPIPE_BENCH_CPROFILE"]).with_suffix(f".{name}.prof")
            )
        if owners is not None and owners.exists():  # the workload's registry, as its truth uses it
            env["CTPIPE_OWNER_REGISTRY"] = str(owners)
        arg = orjson.dumps({"worker": worker_cfg, "stats": str(self.stats_path)}).decode()
        self.started = time.time()
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker-proc", arg],
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=self.log,
        )
        self.pid = self.proc.pid
        self.datadir = tmp / f"data-{name}" / "worker" / ns

    def read(self) -> dict[str, Any] | None:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{tail}")
        try:
            data = orjson.loads(self.stats_path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None
        if data.get("failure"):
            raise RuntimeError(f"worker failed: {data['failure']}")
        return dict(data)

    def cpu(self) -> float:
        return proc_cpu(self.pid)

    def rss(self) -> tuple[int, int]:
        return proc_rss(self.pid)

    def drain(self) -> None:
        os.kill(self.pid, signal.SIGUSR1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


# --- sink thread ------------------------------------------------------------------------------


class SinkThread:
    def __init__(self, bootstrap: str, ns: str, client: Any, batch_seconds: float) -> None:
        from producers.kafka import make_producer
        from sinks.consumer import ClickHouseSink, SinkConfig

        self.config = SinkConfig(
            bootstrap=bootstrap,
            group_id=f"ctpipe-{ns}-sink",
            namespace=ns,
            batch_rows=10_000,
            batch_seconds=batch_seconds,
        )
        self.sink = ClickHouseSink(self.config, client, producer=make_producer(bootstrap))
        self._stop = threading.Event()
        self.error: list[BaseException] = []
        self.thread = threading.Thread(target=self._main, name="bench-sink", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            self.sink.run(stop=self._stop.is_set)
        except BaseException as exc:  # reported by check()
            self.error.append(exc)

    def check(self) -> None:
        if self.error:
            raise RuntimeError(f"the sink failed: {self.error[0]!r}") from self.error[0]

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(60)


class Profiler:
    """py-spy record (raw collapsed stacks) on a pid, summarised by self and inclusive time."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        spy = Path(sys.executable).parent / "py-spy"
        self.proc = subprocess.Popen(
            [
                str(spy),
                "record",
                "--pid",
                str(pid),
                *(
                    ["--rate", "100", "--native"]
                    if os.environ.get("CTPIPE_BENCH_PYSPY_NATIVE")
                    else ["--rate", "50", "--nonblocking"]
                ),
                "--format",
                "raw",
                "-o",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)
        if not self.out.exists():
            return {}
        self_t: dict[str, int] = {}
        incl: dict[str, int] = {}
        total = 0
        for line in self.out.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not n.isdigit():
                continue
            count = int(n)
            total += count
            frames = [
                f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1]
                if " (" in f
                else f
                for f in stack.split(";")
            ]
            if frames:
                self_t[frames[-1]] = self_t.get(frames[-1], 0) + count
            for f in set(frames):
                incl[f] = incl.get(f, 0) + count

        def top(d: dict[str, int], k: int) -> list[tuple[str, float]]:
            return [(f, round(100 * c / total, 1)) for f, c in sorted(d.items(), key=lambda x: -x[1])[:k]]

        return {"samples": total, "self": top(self_t, 25), "inclusive": top(incl, 40), "file": str(self.out)}


# --- phase 1: peak throughput -----------------------------------------------------------------


def phase_peak(ctx: dict[str, Any], a: argparse.Namespace) -> dict[str, Any]:
    from ctpipe.demo import expected_rows, publish_workload, stored_rows
    from ctpipe.settings import Settings
    from ctpipe.worker import worker_app_id
    from deploy.kafka.topics import delete_topics, ensure_topics, group_lag, message_count
    from processors.worker import WorkerTopics, input_groups
    from producers.generator import GeneratorConfig, generate
    from producers.replay import workload_messages
    from schemas.normalize import ingest
    from schemas.topics import ALL
    from sinks.clickhouse import connect, migrate

    bootstrap, tmp = ctx["bootstrap"], ctx["tmp"]
    workload = tmp / f"workload-seed{a.seed}-s{a.sessions}"
    if not (workload / "manifest.json").exists():
        t = time.perf_counter()
        generate(GeneratorConfig(seed=a.seed, sessions=a.sessions), out=workload)
        print(f"[peak] generated {a.sessions} sessions in {time.perf_counter() - t:.1f} s", flush=True)

    # Baseline (same documents, this process): bare schemas.normalize.ingest.
    msgs = list(workload_messages(workload))
    t = time.perf_counter()
    base_events = 0
    for m in msgs:
        base_events += len(ingest(m.value, emitter=m.emitter, source=m.source).events)
    base_s = time.perf_counter() - t
    baseline = {
        "documents": len(msgs),
        "events": base_events,
        "seconds": base_s,
        "events_s": base_events / base_s,
    }
    print(
        f"[peak] baseline ingest: {base_events} events / {len(msgs)} docs in {base_s:.2f} s "
        f"= {baseline['events_s']:,.0f} events/s",
        flush=True,
    )

    ns = f"pbpeak{uuid.uuid4().hex[:6]}"
    topics = [tp.namespaced(ns) for tp in ALL]
    ensure_topics(bootstrap, topics)
    names = {tp.name.rsplit(".", 1)[-1]: tp.name for tp in topics}
    run_settings = Settings(
        _env_file=None, kafka_bootstrap=bootstrap, topic_namespace=ns, data_dir=tmp / "publish"
    )  # type: ignore[call-arg]
    t = time.perf_counter()
    documents, log_events = publish_workload(run_settings, workload, names["raw"])
    publish_s = time.perf_counter() - t
    # RAW messages: documents one each; log retrievals travel in CT event_batch documents

    total_in = message_count(bootstrap, names["raw"])
    print(
        f"[peak] pre-loaded {documents} documents + {log_events} log retrievals into RAW "
        f"in {publish_s:.1f} s",
        flush=True,
    )

    client = connect(ctx["ch_url"], database=f"bench_{ns}")
    migrate(client)
    poll_client = connect(ctx["ch_url"], database=f"bench_{ns}")
    worker_cfg: dict[str, Any] = (
        {
            "inactivity_timeout": 5.0,
            "end_grace": 0.5,
            "lateness": 600.0,
            "correlation_window": 5.0,
            "tick": 0.5,
        }
        if a.peak_config == "demo"
        else {}  # production defaults (WorkerConfig): end_grace 2 s, correlation window 600 s, tick 1 s
    )
    if a.batch_size:
        worker_cfg = {**worker_cfg, "batch_size": a.batch_size}
    load_before = uptime()
    self_cpu0 = self_cpu()
    broker_cpu0 = proc_cpu(ctx["broker_pid"]) if ctx.get("broker_pid") else None
    sink = SinkThread(bootstrap, ns, client, batch_seconds=0.5)
    worker = Worker(tmp, bootstrap, ns, worker_cfg, ns, owners=workload / "owners.json")
    t0 = worker.started
    prof = Profiler(worker.pid, a.profile) if a.profile else None
    groups = input_groups(worker_app_id("ctpipe", ns), WorkerTopics.for_namespace(ns))

    def inputs_done() -> bool:
        return all(group_lag(bootstrap, group, inputs) == 0 for group, inputs in groups)

    outputs = [names["funnel"], names["sessions"], names["correlated"], names["events"]]
    timeline: list[tuple[float, int, int]] = []
    rss_timeline: list[tuple[float, int]] = []  # (s since launch, worker RSS MB)
    t_first = t_consumed = t_drained = t_end = None
    cpu_consumed = cpu_first = cpu_drained = None
    deadline = t0 + a.timeout
    try:
        while True:
            if time.time() > deadline:
                raise TimeoutError("peak phase timed out")
            sink.check()
            st = worker.read()
            now = time.time()
            if st is not None:
                n = st["stats"]["normalize"]
                timeline.append((now, n["messages"], n["events"]))
                rss_timeline.append((round(now - t0, 2), round(worker.rss()[0] / 2**20)))
                if t_first is None and n["messages"] > 0:
                    t_first = now
                    cpu_first = worker.cpu()
                if t_consumed is None and n["messages"] >= total_in:
                    if inputs_done():
                        t_consumed = time.time()
                        cpu_consumed = worker.cpu()
                        worker.drain()
                elif t_consumed is not None and t_drained is None and st["drained"] >= 1:
                    t_drained = now
                    cpu_drained = worker.cpu()
                elif t_drained is not None and (
                    group_lag(bootstrap, sink.config.group_id, outputs) == 0 and inputs_done()
                ):
                    t_end = time.time()
                    break
            time.sleep(0.1)
        worker_cpu = worker.cpu()
        worker_threads = {k: round(v, 2) for k, v in thread_cpu(worker.pid).items() if v >= 0.01}
        worker_faults = proc_faults(worker.pid)
        _, worker_hwm = worker.rss()
        bench_cpu = self_cpu() - self_cpu0
        broker_cpu = proc_cpu(ctx["broker_pid"]) - broker_cpu0 if broker_cpu0 is not None else None
        load_after = uptime()
        profile = prof.stop() if prof else None
        final = worker.read() or {}
    finally:
        worker.stop()
        sink.stop()
    sink.check()
    wstats = final.get("stats", {})
    first_batch_cpu = wstats.get("normalize", {}).get("process_cpu_at_first_s")
    events = wstats.get("normalize", {}).get("events", 0)
    wall = t_end - t0
    wall_proc = t_end - (t_first or t0)
    # ClickHouse: what is queryable now
    q = poll_client.query
    ch_events = q("SELECT uniqExact(event_id) FROM events").result_rows[0][0]
    ch_contrib = q("SELECT count() FROM funnel_contributions").result_rows[0][0]
    ch_sessions = q("SELECT uniqExact(session_id) FROM sessions").result_rows[0][0]
    expected = expected_rows(workload)
    stored = stored_rows(poll_client)
    exact = expected is not None and stored == expected
    dead = message_count(bootstrap, names["dlq"])

    # consumption rate: normalize messages over the middle 10-90 % of the input
    def at(frac: float) -> float:
        target = frac * total_in
        return next((tt for tt, m, _ in timeline if m >= target), timeline[-1][0])

    t10, t90 = at(0.1), at(0.9)
    ev_10 = next((e for tt, _m, e in timeline if tt >= t10), 0)
    ev_90 = next((e for tt, _m, e in timeline if tt >= t90), events)
    steady = (ev_90 - ev_10) / (t90 - t10) if t90 > t10 else float("nan")
    delete_topics(bootstrap, [tp.name for tp in topics])
    res = {
        "namespace": ns,
        "worker_config": a.peak_config,
        "sessions": a.sessions,
        "seed": a.seed,
        "documents": documents,
        "log_events": log_events,
        "raw_messages": total_in,
        "publish_seconds": publish_s,
        "canonical_events": events,
        "worker_stats": wstats,
        "baseline": baseline,
        "startup_s": (t_first or t0) - t0,
        "consume_s": (t_consumed or t_end) - t0,
        "drain_s": (t_drained or t_end) - (t_consumed or t_end),
        "sink_tail_s": t_end - (t_drained or t_end),
        "wall_s": wall,
        "wall_from_first_s": wall_proc,
        "events_s": events / wall,
        "events_s_from_first": events / wall_proc,
        "raw_msgs_s_from_first": total_in / wall_proc,
        "steady_normalize_events_s": steady,
        "worker_cpu_s": worker_cpu,
        "worker_cpu_at_consumed_s": cpu_consumed,
        "worker_cpu_at_first_s": cpu_first,
        "worker_cpu_at_drained_s": cpu_drained,
        "events_per_worker_cpu_s": events / worker_cpu,
        # the worker's CPU from its first consumed message until every session and group is
        # closed and emitted: no start-up (imports, joining the group, opening stores) and no
        # idling while the sink catches up
        "events_per_worker_cpu_s_working": (
            events / (cpu_drained - cpu_first) if cpu_drained is not None and cpu_first is not None else None
        ),
        # the same from the worker's own CPU reading when its first RAW batch began (the bench
        # sees the first message only after that batch: "working" leaves its CPU out): every
        # event's work, no start-up (imports, joining groups, opening stores)
        "worker_cpu_at_first_batch_s": first_batch_cpu,
        "events_per_worker_cpu_s_sustained": (
            events / (cpu_drained - first_batch_cpu)
            if cpu_drained is not None and first_batch_cpu is not None
            else None
        ),
        "worker_cpu_util": worker_cpu / wall_proc,
        # per thread name (main = the event loop: every stage; Faust's consumer thread; librdkafka
        # rdk:*; rocksdb; executor threads of flushes), and per stage on the event loop's thread
        "worker_cpu_by_thread_s": worker_threads,
        "worker_user_sys_faults": worker_faults,
        "worker_peak_rss_mb": worker_hwm / 2**20,
        "worker_rss_timeline_mb": rss_timeline[:: max(1, len(rss_timeline) // 60)],
        "phase_marks_s": {
            "first": (t_first or t0) - t0,
            "consumed": (t_consumed or t_end) - t0,
            "drained": (t_drained or t_end) - t0,
        },
        "bench_proc_cpu_s": bench_cpu,
        "broker_cpu_s": broker_cpu,
        "sink_rows_inserted": sink.sink.stats.rows_inserted,
        "sink_batches": sink.sink.stats.batches,
        "ch_events": ch_events,
        "ch_funnel_contributions": ch_contrib,
        "ch_sessions": ch_sessions,
        "funnel_rows": len(stored),
        "exact_vs_truth": exact,
        "dead_letters": dead,
        "uptime_before": load_before,
        "uptime_after": load_after,
        "profile": profile,
    }
    res["ratio_to_ingest"] = res["events_s_from_first"] / baseline["events_s"]
    print(
        f"[peak] {events} canonical events ({total_in} raw msgs) queryable in {wall:.1f} s from launch, "
        f"{wall_proc:.1f} s from first consume: {res['events_s_from_first']:,.0f} events/s, "
        f"{events / worker_cpu:,.0f} events/worker-CPU-s "
        f"({res['events_per_worker_cpu_s_sustained'] or float('nan'):,.0f} first batch -> drained, "
        f"{res['events_per_worker_cpu_s_working'] or float('nan'):,.0f} first seen -> drained); "
        f"exact={exact}; native modules: {len(((wstats or {}).get('native') or {}).get('modules', []))}",
        flush=True,
    )
    return res


# --- phase 2: freshness -----------------------------------------------------------------------


def session_id(base: int, seq: int) -> str:
    return str(uuid.UUID(int=(base << 64) | seq))


def fresh_doc(sid: str, seq: int, now: float) -> bytes:
    """A CT 0.1 session document (section 5.1) of one turn, 7 events, ended (``ended_at``)."""
    url = URLS[seq % len(URLS)]
    ts = iso(now - 1.0)
    return orjson.dumps(
        {
            "document_type": "session",
            "schema_version": "0.1",
            "session_id": sid,
            "agent_id": FRESH_AGENT,
            "started_at": ts,
            "ended_at": iso(now),
            "events": [
                {"type": "turn_started", "timestamp": ts, "turn_id": "1"},
                {
                    "type": "content_retrieved",
                    "timestamp": ts,
                    "source_role": "agent",
                    "content_telemetry_id": str(uuid.UUID(int=random.getrandbits(128), version=4)),
                    "content_url": url,
                },
                {
                    "type": "content_grounded",
                    "timestamp": ts,
                    "content_url": url,
                    "data": {"scope": "session", "cached": False, "tokens_ingested": 900},
                },
                {
                    "type": "content_cited",
                    "timestamp": ts,
                    "content_url": url,
                    "data": {"citation_type": "paraphrase", "position": "primary"},
                },
                {
                    "type": "content_displayed",
                    "timestamp": ts,
                    "content_url": url,
                    "data": {"display_type": "link"},
                },
                {"type": "turn_completed", "timestamp": ts, "turn_id": "1"},
                {
                    "type": "content_engaged",
                    "timestamp": ts,
                    "content_url": url,
                    "data": {"engagement_type": "link_click"},
                },
            ],
        }
    )


def fresh_producer(cfg: dict[str, Any]) -> None:
    """Paced open-loop producer (own process): session documents; prints produce times as JSON."""
    from producers.kafka import make_producer
    from producers.publisher import headers_for

    producer = make_producer(cfg["bootstrap"])
    topic, base, rate, n, first = cfg["topic"], cfg["base"], cfg["rate"], cfg["n"], cfg["first"]
    headers = headers_for(f"agent:{FRESH_AGENT}", "session")
    sent: list[float] = []
    scheduled: list[float] = []
    t_start = time.time() + 0.2
    for i in range(n):
        due = t_start + i / rate
        delay = due - time.time()
        if delay > 0.001:
            time.sleep(delay)
        sid = session_id(base, first + i)
        now = time.time()
        producer.produce(topic, value=fresh_doc(sid, first + i, now), key=sid.encode(), headers=headers)
        producer.poll(0)
        sent.append(now)
        scheduled.append(due)
    left = producer.flush(60)
    Path(cfg["out"]).write_bytes(orjson.dumps({"sent": sent, "scheduled": scheduled, "unflushed": left}))


def phase_fresh(ctx: dict[str, Any], a: argparse.Namespace, peak_events_s: float | None) -> dict[str, Any]:
    from deploy.kafka.topics import delete_topics, ensure_topics
    from schemas.topics import ALL
    from sinks.clickhouse import connect, migrate

    bootstrap, tmp = ctx["bootstrap"], ctx["tmp"]
    events_per_doc = 7
    if a.fresh_rate:
        target_events_s = a.fresh_rate
    elif peak_events_s:
        target_events_s = peak_events_s / 2
    else:
        raise SystemExit("fresh: give --fresh-rate or run the peak phase first")
    doc_rate = target_events_s / events_per_doc
    n = int(doc_rate * a.fresh_seconds)
    ns = f"pbfresh{uuid.uuid4().hex[:6]}"
    topics = [tp.namespaced(ns) for tp in ALL]
    ensure_topics(bootstrap, topics)
    names = {tp.name.rsplit(".", 1)[-1]: tp.name for tp in topics}
    client = connect(ctx["ch_url"], database=f"bench_{ns}")
    migrate(client)
    poll = connect(ctx["ch_url"], database=f"bench_{ns}")
    base = random.getrandbits(32) | 1 << 31
    worker_cfg = {
        "inactivity_timeout": 60.0,
        "end_grace": 0.2,
        "lateness": 600.0,
        "correlation_window": 600.0,
        "tick": 0.2,
    }
    sink = SinkThread(bootstrap, ns, client, batch_seconds=a.fresh_sink_batch)
    worker = Worker(tmp, bootstrap, ns, worker_cfg, ns)
    seen: dict[int, float] = {}
    rows_seen: dict[int, int] = {}
    complete: dict[int, float] = {}

    def poll_once(lo: int, hi: int) -> None:
        sql = (
            "SELECT origin, count() FROM funnel_contributions "
            f"WHERE origin >= 'session:{session_id(base, lo)}' AND origin < 'session:{session_id(base, hi)}' "
            "GROUP BY origin"
        )
        rows = poll.query(sql).result_rows
        now = time.time()
        for origin, cnt in rows:
            seq = uuid.UUID(origin.split(":")[1]).int & ((1 << 64) - 1)
            seen.setdefault(seq, now)
            rows_seen[seq] = int(cnt)
            if rows_full and cnt >= rows_full and seq not in complete:
                complete[seq] = now

    def wait_visible(first: int, count: int, timeout: float) -> None:
        end = time.time() + timeout
        while time.time() < end:
            sink.check()
            worker.read()
            poll_once(first, first + count)
            if all(s in seen for s in range(first, first + count)):
                return
            time.sleep(a.poll)
        raise TimeoutError(f"warm-up sessions {first}..{first + count} not visible in {timeout} s")

    def run_producer(first: int, count: int, rate: float) -> subprocess.Popen[str]:
        arg = {
            "bootstrap": bootstrap,
            "topic": names["raw"],
            "base": base,
            "rate": rate,
            "n": count,
            "first": first,
            "out": str(tmp / f"producer-{ns}-{first}.json"),
        }
        return subprocess.Popen(
            [sys.executable, __file__, "--fresh-producer", orjson.dumps(arg).decode()],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            text=True,
        )

    rows_full = 0
    try:
        # warm-up: consumer groups joined, tables created, first inserts done
        warm = 20
        p = run_producer(0, warm, 50.0)
        p.communicate(timeout=60)
        wait_visible(0, warm, 120)
        time.sleep(1.5)
        poll_once(0, warm)
        rows_full = max(rows_seen[s] for s in range(warm))
        seen.clear()
        rows_seen.clear()
        first = 1000
        load_before = uptime()
        cpu0, bcpu0, scpu0 = (
            worker.cpu(),
            (proc_cpu(ctx["broker_pid"]) if ctx.get("broker_pid") else 0.0),
            self_cpu(),
        )
        t_run = time.time()
        p = run_producer(first, n, doc_rate)
        samples: list[tuple[float, int]] = []
        while p.poll() is None:
            sink.check()
            worker.read()
            lo = next((s for s in range(first, first + n) if s not in seen), first + n)
            poll_once(lo, first + n)
            samples.append((time.time(), worker.rss()[0]))
            time.sleep(a.poll)
        t_prod_end = time.time()
        if p.returncode != 0:
            raise RuntimeError(f"fresh producer exited with {p.returncode}")
        prod = orjson.loads((tmp / f"producer-{ns}-{first}.json").read_bytes())
        end = time.time() + 30
        while time.time() < end and len(complete) < n:
            sink.check()
            lo = next((s for s in range(first, first + n) if s not in complete), first + n)
            poll_once(lo, first + n)
            time.sleep(a.poll)
        t_all = time.time()
        run_s = t_prod_end - t_run
        wcpu = worker.cpu() - cpu0
        bcpu = (proc_cpu(ctx["broker_pid"]) - bcpu0) if ctx.get("broker_pid") else None
        scpu = self_cpu() - scpu0
        load_after = uptime()
        final = worker.read() or {}
        ch_retr = poll.query(
            "SELECT sum(retrieved) FROM funnel_contributions WHERE agent_id = {a:String}",
            parameters={"a": FRESH_AGENT},
        ).result_rows[0][0]
    finally:
        worker.stop()
        sink.stop()
        delete_topics(bootstrap, [tp.name for tp in topics])
    sent = prod["sent"]
    sched = prod["scheduled"]
    lat_first = [seen[first + i] - sent[i] for i in range(n) if first + i in seen]
    lat_all = [complete[first + i] - sent[i] for i in range(n) if first + i in complete]
    lat_sched = [complete[first + i] - sched[i] for i in range(n) if first + i in complete]
    behind = max((s - d for s, d in zip(sent, sched, strict=True)), default=0.0)
    res = {
        "namespace": ns,
        "target_events_s": target_events_s,
        "doc_rate": doc_rate,
        "documents": n,
        "achieved_docs_s": n / (sent[-1] - sent[0]) if n > 1 else float("nan"),
        "producer_max_behind_s": behind,
        "seconds": run_s,
        "poll_interval_s": a.poll,
        "funnel_rows_per_session": rows_full,
        "visible_first_row": len(lat_first),
        "visible_all_rows": len(lat_all),
        "not_visible_after_30s": n - len(lat_all),
        "first_row": {
            "p50": pct(lat_first, 0.5),
            "p95": pct(lat_first, 0.95),
            "p99": pct(lat_first, 0.99),
            "max": max(lat_first, default=float("nan")),
        },
        "all_rows": {
            "p50": pct(lat_all, 0.5),
            "p95": pct(lat_all, 0.95),
            "p99": pct(lat_all, 0.99),
            "max": max(lat_all, default=float("nan")),
        },
        "all_rows_from_scheduled": {
            "p50": pct(lat_sched, 0.5),
            "p95": pct(lat_sched, 0.95),
            "p99": pct(lat_sched, 0.99),
        },
        "retrieved_in_funnel": ch_retr,
        "worker_cpu_util": wcpu / run_s,
        "broker_cpu_util": (bcpu / run_s) if bcpu is not None else None,
        "bench_proc_cpu_util": scpu / run_s,
        "worker_rss_mb": [round(r / 2**20, 1) for _, r in samples[:: max(1, len(samples) // 10)]],
        "worker_stats": final.get("stats"),
        "tail_wait_s": t_all - t_prod_end,
        "uptime_before": load_before,
        "uptime_after": load_after,
        "worker_config": worker_cfg,
        "sink_batch_seconds": a.fresh_sink_batch,
    }
    fr, al = res["first_row"], res["all_rows"]
    print(
        f"[fresh] {n} sessions at {doc_rate:,.0f} docs/s ({target_events_s:,.0f} events/s): first row "
        f"p50/p95/p99 {fr['p50']:.2f}/{fr['p95']:.2f}/{fr['p99']:.2f} s; all rows "
        f"{al['p50']:.2f}/{al['p95']:.2f}/{al['p99']:.2f} s; missing {res['not_visible_after_30s']}",
        flush=True,
    )
    return res


# --- phase 3: memory with many open sessions --------------------------------------------------


def mem_doc(sid: str, i: int, ts: str, started_at: str | None = None) -> bytes:
    """A CT 0.1 standalone event (section 7.1) of a session that stays open: no ``ended_at``
    (``started_at``: the session's, when the event is not its first)."""
    return orjson.dumps(
        {
            "document_type": "event",
            "schema_version": "0.1",
            "session_id": sid,
            "agent_id": "mem-bench-agent",
            "started_at": started_at or ts,
            "event": {"type": "content_grounded", "timestamp": ts, "content_url": URLS[i % len(URLS)]},
        }
    )


def phase_memory(ctx: dict[str, Any], a: argparse.Namespace) -> dict[str, Any]:
    from deploy.kafka.topics import delete_topics, ensure_topics
    from producers.kafka import make_producer
    from producers.publisher import headers_for
    from schemas.topics import ALL

    bootstrap, tmp = ctx["bootstrap"], ctx["tmp"]
    ns = f"pbmem{uuid.uuid4().hex[:6]}"
    topics = [tp.namespaced(ns) for tp in ALL]
    ensure_topics(bootstrap, topics)
    names = {tp.name.rsplit(".", 1)[-1]: tp.name for tp in topics}
    worker_cfg = {
        "inactivity_timeout": 7200.0,
        "end_grace": 2.0,
        "lateness": 3600.0,
        "correlation_window": 600.0,
        "tick": 1.0,
    }
    worker = Worker(tmp, bootstrap, ns, worker_cfg, ns)
    base = random.getrandbits(32) | 1 << 31
    samples: list[dict[str, Any]] = []
    n = a.mem_sessions

    def sample(phase: str) -> dict[str, Any]:
        st = worker.read() or {"stats": {}}
        rss, hwm = worker.rss()
        s = {
            "t": time.time(),
            "phase": phase,
            "rss_mb": rss / 2**20,
            "hwm_mb": hwm / 2**20,
            "cpu_s": worker.cpu(),
            "tracked": st["stats"].get("sessionize", {}).get("tracked", 0),
            "envelopes": st["stats"].get("sessionize", {}).get("envelopes", 0),
            "memory": st["stats"].get("memory"),  # python blocks, rocksdb per table, index sizes
        }
        samples.append(s)
        return s

    try:
        # idle baseline: worker up, assigned, nothing consumed
        end = time.time() + 120
        while time.time() < end and worker.read() is None:
            time.sleep(0.5)
        time.sleep(8)
        idle = sample("idle")
        print(f"[memory] idle worker RSS {idle['rss_mb']:.0f} MB", flush=True)
        load_before = uptime()
        t_load = time.time()
        producer = make_producer(bootstrap)
        headers = headers_for("agent:mem-bench", "event")
        ts = iso(time.time())
        next_sample = time.time() + a.mem_interval
        for i in range(n):
            sid = session_id(base, i)
            while True:
                try:
                    producer.produce(
                        names["raw"], value=mem_doc(sid, i, ts), key=sid.encode(), headers=headers
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
            if i % 1000 == 0:
                producer.poll(0)
                if time.time() >= next_sample:
                    next_sample += a.mem_interval
                    sample("load")
        producer.flush(120)
        t_produced = time.time()
        print(f"[memory] produced {n} session-opening events in {t_produced - t_load:.1f} s", flush=True)
        while True:
            s = sample("load")
            if s["envelopes"] >= n:
                break
            if time.time() - t_load > a.timeout:
                raise TimeoutError("memory phase: worker did not consume the load")
            time.sleep(a.mem_interval)
        t_loaded = time.time()
        loaded = samples[-1]
        print(
            f"[memory] {loaded['tracked']} open sessions after {t_loaded - t_load:.1f} s, RSS "
            f"{loaded['rss_mb']:.0f} MB; holding {a.mem_seconds:.0f} s",
            flush=True,
        )
        # The hold: ``--mem-hold-rate`` events/s into random open sessions (they grow, none
        # closes: the inactivity timeout is 2 h), paced from this process; 0 = an idle hold.
        rng = random.Random(a.seed)
        hold_sent = 0
        t_hold = time.time()
        next_sample = t_hold + a.mem_interval
        while (now := time.time()) - t_loaded < a.mem_seconds:
            due = int((now - t_hold) * a.mem_hold_rate) - hold_sent
            if due > 0:
                ev_ts = iso(now)
                for _ in range(due):
                    j = rng.randrange(n)
                    sid = session_id(base, j)
                    doc = mem_doc(sid, j + hold_sent, ev_ts, started_at=ts)
                    while True:
                        try:
                            producer.produce(names["raw"], value=doc, key=sid.encode(), headers=headers)
                            break
                        except BufferError:
                            producer.poll(0.05)
                    hold_sent += 1
                producer.poll(0)
            if now >= next_sample:
                next_sample += a.mem_interval
                sample("hold")
            time.sleep(0.02)
        producer.flush(120)
        while sample("hold")["envelopes"] < n + hold_sent:  # everything sent was processed
            if time.time() - t_loaded > a.mem_seconds + a.timeout:
                raise TimeoutError("memory phase: worker did not consume the hold traffic")
            time.sleep(a.mem_interval)
        t_hold_end = time.time()
        load_after = uptime()
        store_bytes = du(worker.datadir)
    finally:
        worker.stop()
        delete_topics(bootstrap, [tp.name for tp in topics])
    hold = [s for s in samples if s["phase"] == "hold"]
    first_min = [s["rss_mb"] for s in hold if s["t"] - t_loaded <= 60]
    last_min = [s["rss_mb"] for s in hold if s["t"] - t_loaded >= a.mem_seconds - 60]
    hold_cpu = (hold[-1]["cpu_s"] - loaded["cpu_s"]) / (hold[-1]["t"] - loaded["t"]) if hold else float("nan")
    # least-squares slope of RSS over the hold phase, MB per minute
    if len(hold) >= 2:
        xs = [s["t"] for s in hold]
        ys = [s["rss_mb"] for s in hold]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = (
            sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
            / sum((x - mx) ** 2 for x in xs)
            * 60
        )
    else:
        slope = float("nan")
    res = {
        "namespace": ns,
        "sessions": n,
        "tracked_at_load_end": loaded["tracked"],
        "load_seconds": t_loaded - t_load,
        "produce_seconds": t_produced - t_load,
        "load_docs_s": n / (t_loaded - t_load),
        "idle_rss_mb": idle["rss_mb"],
        "loaded_rss_mb": loaded["rss_mb"],
        "hold_seconds": a.mem_seconds,
        "hold_rate": a.mem_hold_rate,
        "hold_events": hold_sent,
        "hold_events_consumed_s": t_hold_end - t_loaded,
        "tracked_at_hold_end": hold[-1]["tracked"] if hold else None,
        "hold_first_min_mean_mb": sum(first_min) / len(first_min) if first_min else None,
        "hold_last_min_mean_mb": sum(last_min) / len(last_min) if last_min else None,
        "hold_min_mb": min((s["rss_mb"] for s in hold), default=None),
        "hold_max_mb": max((s["rss_mb"] for s in hold), default=None),
        "hold_slope_mb_per_min": slope,
        "peak_hwm_mb": max(s["hwm_mb"] for s in samples),
        "rss_per_session_bytes": (loaded["rss_mb"] - idle["rss_mb"]) * 2**20 / n,
        "hold_worker_cpu_util": hold_cpu,
        "state_store_bytes": store_bytes,
        "state_store_per_session_bytes": store_bytes / n,
        "uptime_before": load_before,
        "uptime_after": load_after,
        "samples": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in s.items()} for s in samples],
    }
    print(
        f"[memory] RSS idle {res['idle_rss_mb']:.0f} MB, loaded {res['loaded_rss_mb']:.0f} MB "
        f"({res['rss_per_session_bytes']:.0f} B/session), "
        f"hold {res['hold_min_mb']:.0f}-{res['hold_max_mb']:.0f} MB, "
        f"slope {slope:+.2f} MB/min, hold CPU {hold_cpu:.1%}, {hold_sent} events into open sessions "
        f"during the hold ({a.mem_hold_rate:.0f}/s)",
        flush=True,
    )
    return res


# --- orchestration ----------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker-proc":
        worker_proc(orjson.loads(sys.argv[2]))
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--fresh-producer":
        fresh_producer(orjson.loads(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phases", default="peak,fresh,memory")
    ap.add_argument("--bootstrap", default="", help="existing broker; default: start a local one")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sessions", type=int, default=500, help="peak: simulated sessions")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--profile", type=Path, help="peak: py-spy the worker, raw stacks to this file")
    ap.add_argument(
        "--cprofile",
        type=Path,
        help="cProfile the worker's event loop thread on its own CPU clock, stats to FILE.<worker>.prof "
        "(slows the worker: read it for where, not for how fast)",
    )
    ap.add_argument(
        "--peak-config",
        choices=("default", "demo"),
        default="default",
        help="peak worker config: production defaults, or ctpipe demo's short windows",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--batch-size", type=int, default=0, help="peak: worker take_events batch (0: default)")
    ap.add_argument("--fresh-seconds", type=float, default=60.0)
    ap.add_argument("--fresh-rate", type=float, default=0.0, help="canonical events/s (default: peak / 2)")
    ap.add_argument("--fresh-sink-batch", type=float, default=0.25)
    ap.add_argument("--poll", type=float, default=0.1, help="fresh: ClickHouse poll interval")
    ap.add_argument("--mem-sessions", type=int, default=200_000)
    ap.add_argument("--mem-seconds", type=float, default=180.0)
    ap.add_argument(
        "--mem-hold-rate", type=float, default=1000.0, help="memory: events/s into open sessions, holding"
    )
    ap.add_argument("--mem-interval", type=float, default=3.0)
    ap.add_argument("--json-out", type=Path)
    a = ap.parse_args()
    if a.cprofile:
        os.environ["CTPIPE_BENCH_CPROFILE"] = str(a.cprofile.resolve())
    phases = [p.strip() for p in a.phases.split(",") if p.strip()]

    from ctpipe.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="ctpipe-bench-pipe-"))
    ctx: dict[str, Any] = {"tmp": tmp, "ch_url": f"chdb://{tmp / 'clickhouse'}"}
    broker = None
    bootstrap = a.bootstrap
    results: dict[str, Any] = {"uptime_start": uptime(), "argv": sys.argv[1:], "cpus": os.cpu_count()}
    try:
        if not bootstrap:
            from deploy.kafka.local import LocalBroker, LocalBrokerConfig
            from tests.infra import free_port

            port, ctl = free_port(), free_port()
            jar_cache = Settings(_env_file=None).jar_cache_dir  # type: ignore[call-arg]
            cfg = LocalBrokerConfig(home=tmp / "kafka", cache_dir=jar_cache, port=port, controller_port=ctl)
            broker = LocalBroker(cfg)
            status = broker.start()
            bootstrap = status.bootstrap
            ctx["broker_pid"] = status.pid
            results["kafka"] = status.version
        ctx["bootstrap"] = bootstrap
        print(f"broker {bootstrap}; work dir {tmp}; {results['uptime_start']}", flush=True)
        peak_rate = None
        if "peak" in phases:
            results["peak"] = phase_peak(ctx, a)
            peak_rate = results["peak"]["events_s_from_first"]
        if "fresh" in phases:
            results["fresh"] = phase_fresh(ctx, a, peak_rate)
        if "memory" in phases:
            results["memory"] = phase_memory(ctx, a)
    finally:
        if broker is not None:
            broker.stop()
        results["uptime_end"] = uptime()
        inexact = "peak" in results and not results["peak"].get("exact_vs_truth", True)
        if inexact:
            print(f"NOT EXACT: work dir (worker log, broker data) kept: {tmp}", flush=True)
        if not a.keep and not inexact:
            shutil.rmtree(tmp, ignore_errors=True)
        if a.json_out:
            a.json_out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2, default=str))
    print(f"done; {results['uptime_end']}", flush=True)


if __name__ == "__main__":
    main()
