"""Fleet simulator throughput, as a ratio against the ingest stage measured in the same run.

Baseline: ``schemas.normalize.ingest`` over every CT/OA document the run wrote (the first stage
the workload feeds). Ratio > 1 means the generator produces documents faster than one ingest
worker consumes them, so generation is never the bottleneck of an end-to-end run.

Usage: ``.venv/bin/python bench/bench_generator.py [--sessions N] [--seed S]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from producers.generator import DOC_FILES, SOURCE_OF, GeneratorConfig, generate
from schemas.normalize import ingest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t0 = time.perf_counter()
        result = generate(GeneratorConfig(seed=args.seed, sessions=args.sessions), out=out)
        gen_s = time.perf_counter() - t0
        docs = [
            (fmt, line)
            for fmt, rel in DOC_FILES.items()
            if (out / rel).exists()
            for line in (out / rel).read_bytes().splitlines()
        ]
        t0 = time.perf_counter()
        for fmt, line in docs:
            ingest(line, emitter="bench", source=SOURCE_OF[fmt])
        ingest_s = time.perf_counter() - t0
    events = sum(result.stats.events.values())
    lines = sum(result.stats.log_lines.values())
    print(f"sessions={args.sessions} documents={len(docs)} agent_events={events} log_lines={lines}")
    print(f"generate (incl. log lines, truth, files): {gen_s:.2f} s = {len(docs) / gen_s:,.0f} docs/s")
    print(f"baseline ingest of the same documents:     {ingest_s:.2f} s = {len(docs) / ingest_s:,.0f} docs/s")
    print(f"ratio generate/ingest (docs/s): {ingest_s / gen_s:.2f}x")


if __name__ == "__main__":
    main()
