"""Load on inference's HTTP API with the plugin: N clients × M requests over loopback.

    python benchmarks/http_load.py --clients 8 --requests 25

Starts `python -m sam_block.serve` on 127.0.0.1 (random-weight hiera_tiny unless
--checkpoint-dir is given), warms it up with one request, then each client sends its
requests one after another, each with its own image and boxes. Reports requests/s,
p50/p95/max latency, and any non-200 or mismatched response.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from common import LocalServer, checkpoint_dir, distinct_request, post


def percentile(values, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=25, help="requests per client")
    parser.add_argument("--checkpoint-dir", type=Path, default=None)
    args = parser.parse_args()

    with LocalServer(checkpoint_dir(args.checkpoint_dir)) as server:
        with requests.Session() as session:
            status, warmup_s, _ = post(session, server.url, distinct_request(10**6))
            assert status == 200, f"warm-up failed with {status}:\n{server.log_tail()}"
        total = args.clients * args.requests
        payloads = {i: distinct_request(i) for i in range(total)}

        def client(c: int):
            with requests.Session() as session:
                return [post(session, server.url, payloads[c * args.requests + r]) for r in range(args.requests)]

        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results = [item for chunk in pool.map(client, range(args.clients)) for item in chunk]
        wall = time.perf_counter() - started

    latencies = [seconds for _, seconds, _ in results]
    errors = [status for status, _, _ in results if status != 200]
    mismatched = sum(1 for status, _, ok in results if status == 200 and not ok)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; device: cpu")
    print(f"warm-up request: {warmup_s:.2f} s")
    print(f"{args.clients} clients x {args.requests} requests = {total} requests in {wall:.1f} s")
    print(f"throughput: {total / wall:.3f} requests/s")
    print(
        f"latency: p50 {statistics.median(latencies):.2f} s, p95 {percentile(latencies, 95):.2f} s, "
        f"max {max(latencies):.2f} s"
    )
    print(f"non-200 responses: {len(errors)} {sorted(set(errors))}; mismatched responses: {mismatched}")
    return 1 if errors or mismatched else 0


if __name__ == "__main__":
    raise SystemExit(main())
