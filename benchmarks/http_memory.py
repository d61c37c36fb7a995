"""Server memory under a long run: RSS of inference's HTTP server (with the plugin) before and
after N sequential requests with distinct images, after a warm-up.

    python benchmarks/http_memory.py --requests 300 --warmup 10

Fails (exit 1) when RSS grows by more than --max-growth (default 10 %) from the end of
the warm-up to the end of the run, or when any request fails.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import psutil
import requests
from common import LocalServer, checkpoint_dir, distinct_request, post


def rss_mib(pid: int) -> float:
    """Resident memory of the server process and its children, MiB."""
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--max-growth", type=float, default=0.10)
    parser.add_argument("--checkpoint-dir", type=Path, default=None)
    parser.add_argument("--every", type=int, default=25, help="print RSS every N requests")
    args = parser.parse_args()

    failures = 0
    with LocalServer(checkpoint_dir(args.checkpoint_dir)) as server, requests.Session() as session:
        print(f"RSS after start: {rss_mib(server.pid):.0f} MiB", flush=True)
        for i in range(args.warmup):
            status, _, ok = post(session, server.url, distinct_request(10**6 + i))
            failures += status != 200 or not ok
        baseline = rss_mib(server.pid)
        print(f"RSS after {args.warmup} warm-up requests: {baseline:.0f} MiB", flush=True)
        started = time.perf_counter()
        peak = baseline
        for i in range(args.requests):
            status, _, ok = post(session, server.url, distinct_request(i))
            failures += status != 200 or not ok
            current = rss_mib(server.pid)
            peak = max(peak, current)
            if (i + 1) % args.every == 0:
                print(
                    f"  after {i + 1:4d} requests: RSS {current:.0f} MiB ({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
        final = rss_mib(server.pid)
    growth = (final - baseline) / baseline
    print(f"RSS: {baseline:.0f} MiB after warm-up -> {final:.0f} MiB after {args.requests} requests "
          f"(growth {growth * 100:+.1f} %, peak {peak:.0f} MiB); failed requests: {failures}")  # fmt: skip
    return 1 if failures or growth > args.max_growth else 0


if __name__ == "__main__":
    raise SystemExit(main())
