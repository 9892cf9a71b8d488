"""What a hostile client cannot get around. `RequestGuard` stands in front of the application and
enforces, before the application reads a byte: a Content-Length (no Transfer-Encoding), the upload
size, the number of requests being worked on (429 at once, never a queue), and a deadline for the
whole body, which it streams to a spool that keeps at most 1 MB in memory. `GuardedH11Protocol` gives
uvicorn a deadline for a request's headers and a cap on open connections. Every refusal is JSON
`{"error": ...}` with its status: 400 malformed request, 408 body too slow, 411 no Content-Length,
413 too large, 422 unusable image or option, 429 busy.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from functools import cache

from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

from ferkit import settings as limits
from ferkit.errors import ArgumentError

SETTINGS_ENV = "FERKIT_SERVE_SETTINGS"  # how `ferkit serve --workers N` hands its settings to each worker
SPOOL_MEMORY = 1_000_000  # bytes of a request body kept in memory; the rest waits on disk
FRAMING = 64 * 1024  # what multipart framing may add to an upload's size


@dataclass(frozen=True)
class ServeSettings:
    """What one server accepts. Checked when made: every figure finite and in range."""

    model: str | None = None
    detector: str | None = None
    max_upload_mb: float = float(limits.MAX_UPLOAD_MB)  # per request body
    max_pixels: int = limits.SERVER_MAX_PIXELS  # decoded pixels per request, all its images together
    max_concurrent: int = 4  # requests admitted at once per worker (body upload + work); more get 429
    max_files: int = 32  # crops per /v1/predict-faces request
    max_connections: int = 256  # open connections per worker; the oldest idle one is closed first
    header_timeout_s: float = 10.0  # a request's headers must arrive within this
    body_timeout_s: float = 60.0  # and its whole body within this

    def __post_init__(self) -> None:
        ranges = {"max_upload_mb": (0.001, 1000), "max_pixels": (1, 1_000_000_000),
                  "max_concurrent": (1, 256), "max_files": (1, 1000), "max_connections": (8, 100_000),
                  "header_timeout_s": (0.1, 600), "body_timeout_s": (0.1, 3600)}
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or not low <= value <= high:
                option = name.removesuffix("_s").replace("_", "-")
                raise ArgumentError(f"--{option} must be a number from {low:g} to {high:g}, got {value}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * limits.BYTES_PER_MB)


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None,
                   close: bool = False) -> JSONResponse:
    """The API's one error shape. `close`: end the connection after it (a body left unread is not
    read on, whatever the client goes on sending)."""
    return JSONResponse({"error": message}, status_code=status,
                        headers={**(headers or {}), **({"Connection": "close"} if close else {})})


class RequestGuard:
    """ASGI middleware: the limits a client could get around by how it sends a body, enforced before
    the application sees the request (see the module docstring)."""

    def __init__(self, app, settings: ServeSettings):
        self.app, self.settings = app, settings
        self.active = 0  # requests admitted; one event loop per worker, so a plain counter

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        refusal = self._refusal(dict(scope["headers"]))
        if refusal is not None:
            return await refusal(scope, receive, send)
        self.active += 1
        try:
            spooled = await self._spool_body(scope, receive, send)
            if spooled is None:
                return  # refused or the client left; answered (or nobody to answer)
            body, size = spooled
            with body:
                await self.app(scope, _replay(body, size, receive), send)
        except ClientDisconnect:
            pass  # the client left mid-request: nothing to answer, nothing to log
        finally:
            self.active -= 1

    def _refusal(self, headers: dict[bytes, bytes]) -> JSONResponse | None:
        limit = self.settings.max_upload_bytes
        if b"transfer-encoding" in headers:
            # chunked (or any transfer coding) would let a body run past its declared length
            return error_response(411, "send the upload with a Content-Length header and no "
                                       "Transfer-Encoding (chunked uploads are not taken)", close=True)
        declared = headers.get(b"content-length")
        if declared is None:
            return error_response(411, "send the upload with a Content-Length header (chunked uploads "
                                       "are not taken)", close=True)
        if not declared.isdigit():
            return error_response(400, f"Content-Length {declared[:40]!r} is not a number of bytes",
                                  close=True)
        if int(declared) > limit + FRAMING:
            return error_response(413, f"upload of {limits.megabytes(int(declared))} is above the limit of "
                                       f"{self.settings.max_upload_mb:g} MB", close=True)
        if self.active >= self.settings.max_concurrent:
            return error_response(429, f"the server is working on {self.settings.max_concurrent} requests "
                                       "already; retry shortly", {"Retry-After": "1"}, close=True)
        return None

    async def _spool_body(self, scope, receive, send):
        """The request body in a spool (1 MB in memory, the rest on disk), read within the body deadline
        and the size limit, with its size; None when refused (answered here) or when the client left."""
        deadline = time.monotonic() + self.settings.body_timeout_s
        limit = self.settings.max_upload_bytes + FRAMING
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115 (handed to the caller)
        size, more = 0, True
        try:
            while more:
                try:
                    message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    late = error_response(408, f"the request body did not arrive within "
                                               f"{self.settings.body_timeout_s:g} s", close=True)
                    await late(scope, receive, send)
                    spool.close()
                    return None
                if message["type"] == "http.disconnect":
                    spool.close()
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    await error_response(413, f"upload is above the limit of {self.settings.max_upload_mb:g} "
                                              "MB", close=True)(scope, receive, send)
                    spool.close()
                    return None
                spool.write(chunk)
                more = message.get("more_body", False)
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return spool, size


def _replay(spool, size: int, receive):
    """An ASGI receive that hands the spooled body (`size` bytes) over in chunks, then listens to
    the client again (for its disconnect)."""
    done = False

    async def replayed():
        nonlocal done
        if done:
            return await receive()
        chunk = spool.read(FRAMING)
        done = not chunk or spool.tell() >= size
        return {"type": "http.request", "body": chunk, "more_body": not done}

    return replayed


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with what it lacks against slow or many clients: a deadline for each
    request's headers, and a cap on open connections (over it, the oldest idle one is closed)."""

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = settings_from_env()
        self.opened_at = time.monotonic()
        self._expect_headers(guard.header_timeout_s)
        if len(self.connections) > guard.max_connections:
            idle = [c for c in self.connections if c is not self and _idle(c)]
            victim = min(idle, key=lambda c: getattr(c, "opened_at", 0.0)) if idle else self
            victim.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._expect_headers(settings_from_env().header_timeout_s)

    def _expect_headers(self, timeout_s: float) -> None:
        """Close the connection unless a new request's headers are complete within `timeout_s`."""
        waiting_since = self.cycle

        def expire() -> None:
            if self.cycle is waiting_since and not self.transport.is_closing():
                self.transport.close()

        self.loop.call_later(timeout_s, expire)


def _idle(connection) -> bool:
    cycle = getattr(connection, "cycle", None)
    return cycle is None or cycle.response_complete



@cache
def settings_from_env() -> ServeSettings:
    """The settings `serve` handed to this worker process (defaults when run another way)."""
    return ServeSettings(**json.loads(os.environ.get(SETTINGS_ENV, "{}")))

