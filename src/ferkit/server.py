"""`ferkit serve`: the Predictor behind an HTTP API (FastAPI on uvicorn).

    ferkit serve --model default --port 8000        # then: curl -F file=@photo.jpg localhost:8000/v1/predict

Endpoints (OpenAPI docs at /docs):
- POST /v1/predict: one image (multipart field `file`, or the raw body) -> its faces, as
  `ferkit predict --json` writes them, with the model and prior used. Query: prior, min_face, detector.
- POST /v1/predict-faces: already-cropped faces (multipart fields `files`) -> 8 probabilities each.
- GET /v1/model: the model card facts of metrics.json.  GET /healthz: liveness.

The server assumes hostile clients. `RequestGuard` stands in front of the application and enforces,
before the application reads a byte: a Content-Length (no Transfer-Encoding), the upload size, the
number of requests being worked on (429 at once, never a queue), and a deadline for the whole body,
which it streams to a spool that keeps at most 1 MB in memory. `GuardedH11Protocol` gives uvicorn a
deadline for a request's headers and a cap on open connections. The endpoints cap the files and the
decoded megapixels of a request. Every refusal is JSON `{"error": ...}` with its status: 400
malformed request, 408 body too slow, 411 no Content-Length, 413 too large, 422 unusable image or
option, 429 busy. The model loads once per worker process; the Predictor is thread-safe, so a worker
serves its requests from FastAPI's thread pool.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

from fastapi import FastAPI, Request  # the serve extra: pip install 'ferkit[serve]'
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

from ferkit import settings as limits
from ferkit.errors import ArgumentError, FerkitError, ImageError, ImageTooLarge

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
            body = await self._spool_body(scope, receive, send)
            if body is None:
                return  # refused or the client left; answered (or nobody to answer)
            with body:
                await self.app(scope, _replay(body, receive), send)
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
        and the size limit; None when refused (answered here) or when the client left."""
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
        return spool


def _replay(spool, receive):
    """An ASGI receive that hands the spooled body over in chunks, then listens to the client again
    (for its disconnect)."""
    done = False

    async def replayed():
        nonlocal done
        if done:
            return await receive()
        chunk = spool.read(FRAMING)
        done = not chunk or spool.tell() >= _size(spool)
        return {"type": "http.request", "body": chunk, "more_body": not done}

    return replayed


def _size(spool) -> int:
    here = spool.tell()
    end = spool.seek(0, os.SEEK_END)
    spool.seek(here)
    return end


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


def create_app(settings: ServeSettings | None = None):
    """The FastAPI application, with its model loaded (once, here), behind its RequestGuard."""
    import numpy as np

    from ferkit.images import image_size, load_image
    from ferkit.inference import Predictor, prepare_faces
    from ferkit.inference.scores import Scores

    settings = settings or ServeSettings()
    predictor = Predictor(model=settings.model, detector=settings.detector)
    app = FastAPI(title="ferkit", version=_version(),
                  description="Facial expressions (the 8 FERPlus emotions) of the faces in images.")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # Starlette's own refusals (a bad multipart body, 404, 405) in the API's one error shape
        return error_response(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def bad_option(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own checks (e.g. min_face=abc) answer in the API's one error shape too
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                             for e in exc.errors())
        return error_response(422, problems)

    def run(work):
        try:
            return work()
        except ImageTooLarge as exc:
            raise ApiError(413, str(exc)) from None
        except (ImageError, FerkitError) as exc:
            raise ApiError(422, str(exc)) from None

    def predictor_for(prior: str | None, min_face: int | None, detector: str | None) -> Predictor:
        try:
            chosen = predictor.with_prior(prior) if prior is not None else predictor
            if min_face is not None or detector is not None:
                chosen = chosen.with_detection(detector=detector, min_face=min_face)
        except (ArgumentError, FerkitError, ValueError) as exc:
            raise ApiError(422, str(exc)) from None
        return chosen

    async def uploads(request: Request, field: str, most: int) -> list[tuple[str, bytes]]:
        """The files of multipart field `field` (at most `most`), each (name, bytes); ApiError otherwise."""
        form = await request.form(max_files=most + 1, max_fields=most + 16)
        items = form.getlist(field)
        if not items:
            others = ", ".join(sorted(set(form.keys()))) or "none"
            raise ApiError(422, f"no field '{field}' in the form (fields sent: {others}); send the image as "
                                f"multipart field '{field}' (curl -F {field}=@photo.jpg)")
        if len(items) > most:
            raise ApiError(413 if most > 1 else 422,
                           f"field '{field}': {len(items)} files sent, at most {most} per request"
                           + ("" if most > 1 else " (/v1/predict-faces takes several face crops)"))
        found = []
        for i, item in enumerate(items):
            where = f"{field}[{i}]" if most > 1 else field
            if not isinstance(item, UploadFile):
                raise ApiError(422, f"field '{where}' holds text, not a file: send a file upload "
                                    f"(curl -F {field}=@photo.jpg)")
            data = await item.read()
            name = item.filename or where
            if not data:
                raise ApiError(422, f"field '{where}' ({name}): the file is empty (0 bytes)")
            found.append((name, data))
        return found

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model")
    def model() -> dict[str, Any]:
        return model_facts(predictor)

    @app.post("/v1/predict", openapi_extra=_upload_docs("file", many=False))
    async def predict(request: Request, prior: str | None = None, min_face: int | None = None,
                      detector: str | None = None) -> dict[str, Any]:
        """One image -> {"file", "faces": [...], "error", "model", "prior"} (faces largest first)."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            [(name, data)] = await uploads(request, "file", 1)
        elif kind == "application/x-www-form-urlencoded":
            raise ApiError(422, f"the body came as form data ({kind}) with no field 'file': send "
                                "multipart field 'file' (curl -F file=@photo.jpg) or the raw image with "
                                "another Content-Type (curl --data-binary @photo.jpg -H 'Content-Type: "
                                "image/jpeg')")
        else:
            name, data = "body", await request.body()
            if not data:
                raise ApiError(422, "no image in the request (send multipart field 'file' or the raw "
                                    "image as the body)")
        chosen = predictor_for(prior, min_face, detector)

        def work() -> dict[str, Any]:
            image = load_image(data, max_pixels=settings.max_pixels, name=name)
            faces = chosen.predict(image)
            return {"file": name, "faces": [f.to_json() for f in faces], "error": None,
                    "model": chosen.source.name, "prior": chosen.prior.to_dict()}

        return await _in_thread(lambda: run(work))

    @app.post("/v1/predict-faces", openapi_extra=_upload_docs("files", many=True))
    async def predict_faces(request: Request, prior: str | None = None) -> dict[str, Any]:
        """Already-cropped faces (any size; turned gray and resized to 48x48) -> probabilities."""
        blobs = await uploads(request, "files", settings.max_files)
        chosen = predictor_for(prior, None, None)

        def work() -> dict[str, Any]:
            # every header is read before any pixel is decoded: the request's decoded pixels are capped
            pixels = sum(math.prod(image_size(data, name)) for name, data in blobs)
            if pixels > settings.max_pixels:
                raise ImageTooLarge(f"the {len(blobs)} images add up to {pixels / 1e6:.1f} megapixels, above "
                                    f"the limit of {settings.max_pixels / 1e6:g} megapixels per request")
            # each crop shrunk to 48x48 as soon as it is decoded: many crops never sit in memory at once
            crops = np.concatenate([prepare_faces([load_image(data, max_pixels=settings.max_pixels,
                                                              name=name)]) for name, data in blobs])
            probabilities = chosen.predict_faces(crops)
            return {"faces": [{"file": name, **Scores(p).summary()}
                              for (name, _), p in zip(blobs, probabilities, strict=True)],
                    "model": chosen.source.name, "prior": chosen.prior.to_dict()}

        return await _in_thread(lambda: run(work))

    app.state.settings = settings
    app.state.predictor = predictor
    return RequestGuard(app, settings)


def _upload_docs(field: str, many: bool) -> dict[str, Any]:
    """The request body in /docs: the endpoints read their multipart form themselves (to cap it)."""
    file = {"type": "string", "format": "binary"}
    schema = {"type": "array", "items": file} if many else file
    return {"requestBody": {"content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {field: schema},
                                           "required": [field]}},
        **({} if many else {"image/*": {"schema": file}})}}}


async def _in_thread(fn):
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn)


def model_facts(predictor) -> dict[str, Any]:
    """What /v1/model answers: the model, its size and its measured accuracy (metrics.json)."""
    from ferkit.evaluation.metrics import recorded_metrics

    info = predictor.model_info
    measured = recorded_metrics(info.get("metrics") or {})
    return {
        "name": info["name"], "backend": info["backend"], "classes": info["classes"],
        "architecture": (info.get("model") or {}).get("architecture"), "prior": info["prior"],
        "evaluated_on": ({"split": measured.split, "protocol": measured.protocol, "images": measured.images,
                          "tta": measured.tta} if info.get("metrics") else None),
        "accuracy": measured.accuracy,
        "balanced_accuracy": measured.balanced_accuracy,
        "recall": measured.recall or None,
        "support": measured.support or None,
        "provisional": measured.provisional,
    }


@cache
def settings_from_env() -> ServeSettings:
    """The settings `serve` handed to this worker process (defaults when run another way)."""
    return ServeSettings(**json.loads(os.environ.get(SETTINGS_ENV, "{}")))


def app_from_env():
    """The uvicorn factory each worker calls (`ferkit serve --workers N`): settings from the environment."""
    return create_app(settings_from_env())


def serve(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Run the API with uvicorn; each worker process loads the model once."""
    import uvicorn

    os.environ[SETTINGS_ENV] = json.dumps(asdict(settings))
    uvicorn.run("ferkit.server:app_from_env", factory=True, host=host, port=port, workers=workers,
                http="ferkit.server:GuardedH11Protocol", timeout_keep_alive=5, log_level="info")


def _version() -> str:
    import ferkit

    return ferkit.__version__
