"""Hostile clients against `ferkit serve`, on loopback: the server's memory and liveness under each attack.

    .venv/bin/python -m bench.speed.serve_abuse [--model fast] [--slow 100] [--half 900]

Starts `ferkit serve` with its default limits (20 MB bodies, 4 requests admitted at once, 256
connections, 10 s for headers, 60 s for a body, 50 megapixels a request) on 127.0.0.1 and a free
port, then runs four attacks one after the other:

1. `--slow` raw uploads declaring 19 MB each, sent slowly (about 2 MB/s per connection);
2. `--half` connections that send half a request line and wait;
3. one `Transfer-Encoding: chunked` body of up to 200 MB (with a Content-Length beside it);
4. one /v1/predict-faces request carrying 20 PNGs of 7000x7000 (49 megapixels each, 47 KB each).

Throughout, a prober asks GET /healthz every 0.2 s. For each attack it prints the answers the attackers
got, the server's peak RSS against its RSS before, the slowest /healthz answer and any /healthz
failure. Every attack is bounded in count and time (at most about 70 s each).
"""

from __future__ import annotations

import argparse
import io
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench.common import rss_mb, running_server

SLOW_BYTES = 19_000_000


class Watch:
    """Peak RSS of the server and /healthz latency, sampled in a thread while an attack runs."""

    def __init__(self, url: str, pid: int):
        self.url, self.pid = url, pid
        self.peak_rss, self.worst_s, self.failures = 0.0, 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak_rss = max(self.peak_rss, rss_mb(self.pid))
        started = time.perf_counter()
        try:  # a new connection each time, as a load balancer's probe does
            answer = httpx.get(f"{self.url}/healthz", headers={"Connection": "close"}, timeout=5)
            ok = answer.status_code == 200
        except httpx.HTTPError:
            ok = False
        self.worst_s = max(self.worst_s, time.perf_counter() - started)
        self.failures += not ok

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def __enter__(self) -> Watch:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def status_of(answer: bytes) -> str:
    if not answer:
        return "closed without an answer"
    try:
        return answer.split(b"\r\n", 1)[0].split()[1].decode()
    except IndexError:
        return "unreadable answer"


def read_answer(sock: socket.socket, timeout_s: float) -> bytes:
    sock.settimeout(timeout_s)
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except (TimeoutError, ConnectionResetError, BrokenPipeError):
        pass
    return answer


def slow_upload(host: str, port: int) -> str:
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {SLOW_BYTES}\r\n\r\n").encode()
    chunk = b"\xff" * 200_000
    with socket.create_connection((host, port), timeout=90) as sock:
        try:
            sock.sendall(head)
            sent = 0
            while sent < SLOW_BYTES:
                piece = chunk[: SLOW_BYTES - sent]
                sock.sendall(piece)
                sent += len(piece)
                time.sleep(0.1)  # about 2 MB/s
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # refused part-way: the answer says why
        return status_of(read_answer(sock, 70))


def attack_slow_uploads(host: str, port: int, count: int) -> Counter:
    with ThreadPoolExecutor(count) as pool:
        return Counter(pool.map(lambda _: slow_upload(host, port), range(count)))


def attack_half_headers(host: str, port: int, count: int) -> Counter:
    socks = []
    for _ in range(count):
        try:
            sock = socket.create_connection((host, port), timeout=5)
            sock.sendall(b"POST /v1/predict HTT")
            socks.append(sock)
        except OSError:
            pass
    outcomes: Counter = Counter()
    deadline = time.monotonic() + 20
    for sock in socks:
        answer = read_answer(sock, max(0.05, deadline - time.monotonic()))
        outcomes["closed by the server" if not answer else status_of(answer)] += 1
        sock.close()
    outcomes["could not connect"] += count - len(socks)
    return +outcomes


def attack_chunked(host: str, port: int) -> Counter:
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\nContent-Length: 10\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    chunk = b"100000\r\n" + b"\xff" * 0x100000 + b"\r\n"
    sent = 0
    with socket.create_connection((host, port), timeout=30) as sock:
        try:
            sock.sendall(head)
            while sent < 200 * 1024 * 1024:
                sock.sendall(chunk)
                sent += 0x100000
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        answer = read_answer(sock, 10)
    return Counter({f"{status_of(answer)} after {sent / 1e6:.0f} MB sent": 1})


def attack_megapixels(url: str) -> Counter:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (7000, 7000), 128).save(buf, "PNG", optimize=True)
    files = [("files", (f"big{i}.png", buf.getvalue(), "image/png")) for i in range(20)]
    started = time.perf_counter()
    answer = httpx.post(f"{url}/v1/predict-faces", files=files, timeout=600)
    return Counter({f"{answer.status_code} in {time.perf_counter() - started:.2f} s "
                    f"({len(buf.getvalue()) // 1000} KB each)": 1})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fast")
    parser.add_argument("--slow", type=int, default=100, help="slow 19 MB uploads at once")
    parser.add_argument("--half", type=int, default=900, help="connections with half-sent headers")
    args = parser.parse_args()
    with running_server(["--model", args.model]) as (url, pid):
        port = int(url.rsplit(":", 1)[1])
        attacks = [
            (f"{args.slow} slow raw uploads of 19 MB",
             lambda: attack_slow_uploads("127.0.0.1", port, args.slow)),
            (f"{args.half} half-sent headers", lambda: attack_half_headers("127.0.0.1", port, args.half)),
            ("a chunked body of up to 200 MB", lambda: attack_chunked("127.0.0.1", port)),
            ("20 PNGs of 49 MP in one request", lambda: attack_megapixels(url)),
        ]
        print(f"# ferkit serve --model {args.model} (default limits), 1 worker, on 127.0.0.1")
        print("| attack | answers | server RSS before -> peak | slowest /healthz | /healthz failures "
              "| seconds |")
        print("|---|---|---|---|---|---|")
        for name, attack in attacks:
            before = rss_mb(pid)
            started = time.perf_counter()
            with Watch(url, pid) as watch:
                outcomes = attack()
            answers = ", ".join(f"{n} x {what}" for what, n in outcomes.most_common())
            print(f"| {name} | {answers} | {before:.0f} -> {watch.peak_rss:.0f} MB | "
                  f"{watch.worst_s * 1000:.0f} ms | {watch.failures} | {time.perf_counter() - started:.0f} |",
                  flush=True)
        alive = httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        print(f"server alive at the end: {alive}; RSS {rss_mb(pid):.0f} MB")


if __name__ == "__main__":
    main()
