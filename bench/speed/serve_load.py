"""Load on `ferkit serve`: N concurrent clients post a real photo for a fixed time, on loopback.

    .venv/bin/python -m bench.speed.serve_load [--model default] [--clients 1 2 4] [--seconds 20]

Starts `ferkit serve` on 127.0.0.1 and a free port (1 worker, --max-concurrent = the most clients),
then for each client count runs that many httpx clients in threads, each posting
2008_001009.jpg (500x375, 2 faces; ../shared/datasets/faces-dlib-examples) to /v1/predict back to
back until the time is up (and at most 10,000 requests). Prints requests/s, p50 and p99 latency,
errors (any status other than 200), and the server's RSS before and after. Bounded in count and
time; loopback only.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import httpx

from bench.common import PHOTOS, rss_mb, running_server

PHOTO = PHOTOS / "2008_001009.jpg"
MAX_REQUESTS = 10_000


def load(url: str, data: bytes, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            while time.monotonic() < stop:
                with lock:
                    if len(latencies) + errors[0] >= MAX_REQUESTS:
                        return
                start = time.perf_counter()
                response = http.post(f"{url}/v1/predict", content=data,
                                     headers={"content-type": "image/jpeg"})
                elapsed = time.perf_counter() - start
                with lock:
                    if response.status_code == 200:
                        latencies.append(elapsed)
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    latencies.sort()
    if not latencies:
        return {"requests": 0, "rps": 0.0, "p50": float("nan"), "p99": float("nan"), "errors": errors[0]}
    return {"requests": len(latencies), "rps": len(latencies) / wall,
            "p50": statistics.median(latencies) * 1000,
            "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000,
            "errors": errors[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--clients", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--threads", type=int, default=1, help="OMP/torch threads of the server")
    args = parser.parse_args()
    serve_args = ["--model", args.model, "--max-concurrent", str(max(args.clients))]
    with running_server(serve_args, args.threads) as (url, pid):
        data = PHOTO.read_bytes()
        httpx.post(f"{url}/v1/predict", content=data, timeout=60)  # warm-up
        before = rss_mb(pid)
        print(f"# ferkit serve --model {args.model}, 1 worker, OMP_NUM_THREADS={args.threads}; "
              f"{PHOTO.name}, {args.seconds:g} s per row")
        print("| clients | requests | requests/s | p50 ms | p99 ms | errors |")
        print("|---|---|---|---|---|---|")
        for clients in args.clients:
            r = load(url, data, clients, args.seconds)
            print(f"| {clients} | {r['requests']} | {r['rps']:.1f} | {r['p50']:.0f} | {r['p99']:.0f} | "
                  f"{r['errors']} |", flush=True)
        print(f"server RSS: {before:.0f} MB before, {rss_mb(pid):.0f} MB after")


if __name__ == "__main__":
    main()
