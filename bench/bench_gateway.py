"""Gateway benchmark: accepted events/s and latency, measured from outside the server process.

Setup: a real Kafka broker (``--bootstrap``, or a local one started on free ports like the test
fixtures do), the RAW topic under a fresh namespace, one API key. The gateway runs as its own
process (``python -m ctpipe.gateway``: uvicorn + uvloop + httptools, one worker, the real
idempotent Kafka publisher: a 202 means the broker acknowledged). A separate load process
(asyncio + httpx, closed loop, ``--concurrency`` requests in flight) drives it.

Phases (same run, same server):
1. baseline: ``GET /healthz`` (server + load-tool overhead floor, no ingest, no Kafka);
2. ``POST /v1/telemetry`` CT event batches of 1 event;
3. ``POST /v1/telemetry`` CT event batches of ``--batch`` (100) events — the target:
   >= 10,000 events/s accepted with p99 < 50 ms.

    .venv/bin/python bench/bench_gateway.py [--seconds 10] [--concurrency 8] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HOSTS = ["www.ft.com", "www.theguardian.com", "news.bbc.co.uk", "www.nature.com", "arstechnica.com"]


def batch_body(rng: random.Random, n: int) -> bytes:
    """A CT 0.1 event batch of ``n`` agent events of one session (CT 0.1 section 7.1)."""
    events: list[dict[str, Any]] = []
    types = ["content_retrieved", "content_grounded", "content_cited", "content_displayed"]
    for i in range(n):
        t = types[i % 4]
        ev: dict[str, Any] = {
            "type": t,
            "timestamp": f"2026-03-28T10:{i // 60 % 60:02d}:{i % 60:02d}Z",
            "source_role": "agent",
            "content_url": f"https://{rng.choice(HOSTS)}/article/{rng.randint(1, 5000)}",
        }
        if t == "content_retrieved":
            ev["content_telemetry_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if t == "content_cited":
            ev["turn_id"] = "1"
            ev["data"] = {"citation_type": "paraphrase", "position": "primary"}
        events.append(ev)
    doc = {
        "document_type": "event_batch",
        "schema_version": "0.1",
        "session_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "agent_id": "bench-agent",
        "events": events,
    }
    return orjson.dumps(doc)


# --- load process ---------------------------------------------------------------------------------


async def _load(
    url: str, token: str, route: str, batch: int, seconds: float, warmup: float, conc: int, rate: float = 0.0
) -> dict[str, Any]:
    import httpx

    rng = random.Random(7)
    bodies = [batch_body(rng, batch) for _ in range(200)] if route != "/healthz" else []
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    lat: list[float] = []
    status: dict[int, int] = {}
    events = 0
    t_start = time.perf_counter()
    t_measure = t_start + warmup
    t_end = t_measure + seconds
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)

    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:

        async def one(i: int, scheduled: float) -> None:
            nonlocal events
            if route == "/healthz":
                r = await client.get(route)
            else:
                r = await client.post(route, content=bodies[i % len(bodies)])
            t1 = time.perf_counter()
            if scheduled >= t_measure:
                # Open loop: latency from the *scheduled* send time (no coordinated omission).
                lat.append(t1 - scheduled)
                status[r.status_code] = status.get(r.status_code, 0) + 1
                if r.status_code == 202:
                    events += r.json()["accepted"]

        async def worker(w: int) -> None:
            i = w
            while True:
                t0 = time.perf_counter()
                if t0 >= t_end:
                    return
                await one(i, t0)
                i += conc

        if rate > 0:
            tasks = []
            i = 0
            while True:
                scheduled = t_start + i / rate
                if scheduled >= t_end:
                    break
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(i, scheduled)))
                i += 1
            await asyncio.gather(*tasks)
        else:
            await asyncio.gather(*(worker(w) for w in range(conc)))
    lat.sort()

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    return {
        "route": route,
        "batch": batch,
        "rate": rate,
        "requests": len(lat),
        "req_s": len(lat) / seconds,
        "events_s": events / seconds,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "status": {str(k): v for k, v in status.items()},
    }


def load_main(argv: list[str]) -> None:
    url, token, route, batch, seconds, warmup, conc, rate = argv
    res = asyncio.run(
        _load(url, token, route, int(batch), float(seconds), float(warmup), int(conc), float(rate))
    )
    print(orjson.dumps(res).decode())


def run_load(
    url: str, token: str, route: str, batch: int, seconds: float, conc: int, rate: float = 0.0
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--load",
        url,
        token,
        route,
        str(batch),
        str(seconds),
        "2",
        str(conc),
        str(rate),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise SystemExit(f"load process failed:\n{out.stderr[-3000:]}")
    return dict(orjson.loads(out.stdout.strip().splitlines()[-1]))


# --- orchestration --------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        load_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", default="", help="existing broker; default: start a local one")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--rate", type=float, default=12_000, help="open-loop phase: offered events/s")
    a = ap.parse_args()

    import httpx

    from ctpipe.settings import Settings
    from deploy.kafka.topics import delete_topics, ensure_topics
    from producers.apikeys import KeyStore
    from schemas.topics import RAW

    tmp = Path(tempfile.mkdtemp(prefix="ctpipe-bench-gw-"))
    broker = None
    bootstrap = a.bootstrap
    if not bootstrap:
        from deploy.kafka.local import LocalBroker, LocalBrokerConfig

        port, ctl = _free_port(), _free_port()
        cfg = LocalBrokerConfig(
            home=tmp / "kafka",
            cache_dir=Settings(_env_file=None).jar_cache_dir,
            port=port,
            controller_port=ctl,
        )  # type: ignore[call-arg]
        broker = LocalBroker(cfg)
        bootstrap = broker.start().bootstrap
    ns = f"bench{uuid.uuid4().hex[:8]}"
    topic = RAW.namespaced(ns)
    ensure_topics(bootstrap, [topic])
    token, _ = KeyStore(tmp / "keys.json").add("bench-agent", "agent")
    gw_port = _free_port()
    url = f"http://127.0.0.1:{gw_port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "ctpipe.gateway", "--port", str(gw_port), "--bootstrap", bootstrap,
         "--namespace", ns, "--keys-file", str(tmp / "keys.json")],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("gateway did not become ready")
            time.sleep(0.2)
        results = [
            run_load(url, token, "/healthz", 0, a.seconds, a.concurrency),
            run_load(url, token, "/v1/telemetry", 1, a.seconds, a.concurrency),
            run_load(url, token, "/v1/telemetry", a.batch, a.seconds, a.concurrency),
            run_load(url, token, "/v1/telemetry", a.batch, a.seconds, 64, a.rate / a.batch),
        ]
    finally:
        server.terminate()
        server.wait(15)
        delete_topics(bootstrap, [topic.name])
        if broker is not None:
            broker.stop()

    print(
        f"\ngateway {url} (1 uvicorn worker), broker {bootstrap}, "
        f"concurrency {a.concurrency}, {a.seconds:g} s"
    )
    print("| phase | requests/s | events/s | p50 ms | p95 ms | p99 ms | statuses |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in results:
        if r["route"] == "/healthz":
            phase = "GET /healthz (baseline floor), closed loop"
        elif r["rate"]:
            phase = f"POST /v1/telemetry batch={r['batch']}, open loop {r['rate'] * r['batch']:,.0f} events/s"
        else:
            phase = f"POST /v1/telemetry batch={r['batch']}, closed loop"
        print(
            f"| {phase} | {r['req_s']:,.0f} | {r['events_s']:,.0f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} "
            f"| {r['p99_ms']:.1f} | {r['status']} |"
        )
    base, single, peak, paced = results
    print(
        f"\nbatch={a.batch}: peak {peak['events_s']:,.0f} events/s accepted (target >= 10,000); "
        f"at {paced['events_s']:,.0f} events/s accepted (paced) p99 "
        f"{paced['p99_ms']:.1f} ms (target < 50). "
        f"Ratios: peak request rate {peak['req_s'] / base['req_s']:.2f}x the /healthz floor; "
        f"events/s {peak['events_s'] / max(single['events_s'], 1):.1f}x batch=1"
    )


if __name__ == "__main__":
    main()
