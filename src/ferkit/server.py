"""`ferkit serve`: the Predictor behind an HTTP API (FastAPI on uvicorn).

    ferkit serve --model default --port 8000        # then: curl -F file=@photo.jpg localhost:8000/v1/predict

Endpoints (OpenAPI docs at /docs):
- POST /v1/predict: one image (multipart field `file`, or the raw body) -> its faces, as
  `ferkit predict --json` writes them, with the model and prior used. Query: prior, min_face, detector.
- POST /v1/predict-faces: already-cropped faces (multipart fields `files`) -> 8 probabilities each.
- GET /v1/model: the model card facts of metrics.json.  GET /healthz: liveness.

Limits, each a 4xx with a JSON body {"error": ...} naming the problem: the upload size (413), the
pixel count (413), an unreadable image or a bad option (422), and the number of requests being
worked on at once (429 with Retry-After: the server answers at once instead of queueing without
bound). The model loads once per worker process; the Predictor is thread-safe, so a worker serves
its requests from FastAPI's thread pool.
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass
from typing import Annotated, Any

from fastapi import FastAPI, File, Request, UploadFile  # the serve extra: pip install 'ferkit[serve]'
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ferkit import settings
from ferkit.errors import ArgumentError, FerkitError, ImageError

MAX_UPLOAD_MB = float(settings.MAX_UPLOAD_MB)
MAX_PIXELS = settings.SERVER_MAX_PIXELS
MAX_CONCURRENT = 4  # requests worked on at once per worker; more get 429
SETTINGS_ENV = "FERKIT_SERVE_SETTINGS"  # how `ferkit serve --workers N` hands its settings to each worker


@dataclass(frozen=True)
class ServeSettings:
    model: str | None = None
    detector: str | None = None
    max_upload_mb: float = MAX_UPLOAD_MB
    max_pixels: int = MAX_PIXELS
    max_concurrent: int = MAX_CONCURRENT


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def create_app(settings: ServeSettings | None = None):
    """The FastAPI application, with its model loaded (once, here)."""
    import numpy as np

    from ferkit.images import load_image
    from ferkit.inference import Predictor, prepare_faces
    from ferkit.inference.scores import Scores

    settings = settings or ServeSettings()
    predictor = Predictor(model=settings.model, detector=settings.detector)
    slots = threading.BoundedSemaphore(settings.max_concurrent)
    limit_bytes = int(settings.max_upload_mb * 1024 * 1024)
    app = FastAPI(title="ferkit", version=_version(),
                  description="Facial expressions (the 8 FERPlus emotions) of the faces in images.")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_option(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own checks (e.g. min_face=abc) answer in the API's one error shape too
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                             for e in exc.errors())
        return JSONResponse({"error": problems}, status_code=422)

    @app.middleware("http")
    async def refuse_large_bodies(request: Request, call_next):
        declared = request.headers.get("content-length")
        if request.method == "POST" and declared is None:
            # a chunked upload declares no size; it would be spooled to disk whole before any check
            return JSONResponse({"error": "send the upload with a Content-Length header (chunked uploads "
                                          "are not taken)"}, status_code=411)
        if declared and declared.isdigit() and int(declared) > limit_bytes + 64 * 1024:  # + multipart framing
            return JSONResponse({"error": f"upload of {int(declared) / 1e6:.1f} MB is above the limit of "
                                          f"{settings.max_upload_mb:g} MB"}, status_code=413)
        return await call_next(request)

    def busy() -> ApiError:
        return ApiError(429, f"the server is working on {settings.max_concurrent} requests already; retry "
                             "shortly", {"Retry-After": "1"})

    def checked(data: bytes, name: str) -> bytes:
        if not data:
            raise ApiError(422, f"{name}: no image in the request (send multipart field 'file' or the raw "
                                "image as the body)")
        if len(data) > limit_bytes:
            raise ApiError(413, f"{name}: upload of {len(data) / 1e6:.1f} MB is above the limit of "
                                f"{settings.max_upload_mb:g} MB")
        return data

    def run(work):
        if not slots.acquire(blocking=False):
            raise busy()
        try:
            return work()
        except ImageError as exc:
            status = 413 if "megapixels" in str(exc) else 422
            raise ApiError(status, str(exc)) from None
        except FerkitError as exc:
            raise ApiError(422, str(exc)) from None
        finally:
            slots.release()

    def predictor_for(prior: str | None, min_face: int | None, detector: str | None) -> Predictor:
        try:
            chosen = predictor.with_prior(prior) if prior is not None else predictor
            if min_face is not None or detector is not None:
                chosen = chosen.with_detection(detector=detector, min_face=min_face)
        except (ArgumentError, FerkitError, ValueError) as exc:
            raise ApiError(422, str(exc)) from None
        return chosen

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model")
    def model() -> dict[str, Any]:
        return model_facts(predictor)

    @app.post("/v1/predict")
    async def predict(request: Request, file: Annotated[UploadFile | None, File()] = None,
                      prior: str | None = None, min_face: int | None = None,
                      detector: str | None = None) -> dict[str, Any]:
        """One image -> {"file", "faces": [...], "error", "model", "prior"} (faces largest first)."""
        if file is not None:
            name, data = file.filename or "upload", await file.read(limit_bytes + 1)
        else:
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind in FORM_TYPES:  # FastAPI has parsed (and used up) the body as a form
                raise ApiError(422, f"the body came as form data ({kind}) with no field 'file': send "
                                    "multipart field 'file' (curl -F file=@photo.jpg) or the raw image with "
                                    "another Content-Type (curl --data-binary @photo.jpg -H 'Content-Type: "
                                    "image/jpeg')")
            name, data = "body", await _read_body(request, limit_bytes)
        data = checked(data, name)
        chosen = predictor_for(prior, min_face, detector)

        def work() -> dict[str, Any]:
            image = load_image(data, max_pixels=settings.max_pixels, name=name)
            faces = chosen.predict(image)
            return {"file": name, "faces": [f.to_dict() for f in faces], "error": None,
                    "model": chosen.source.name, "prior": chosen.prior.to_dict()}

        return await _in_thread(lambda: run(work))

    @app.post("/v1/predict-faces")
    async def predict_faces(files: Annotated[list[UploadFile], File()],
                            prior: str | None = None) -> dict[str, Any]:
        """Already-cropped faces (any size; turned gray and resized to 48x48) -> probabilities."""
        blobs = []
        for i, upload in enumerate(files):
            name = upload.filename or f"face {i}"
            blobs.append((name, checked(await upload.read(limit_bytes + 1), name)))
        chosen = predictor_for(prior, None, None)

        def work() -> dict[str, Any]:
            # each crop shrunk to 48x48 as soon as it is decoded: many large crops never sit in memory at once
            crops = np.concatenate([prepare_faces([load_image(data, max_pixels=settings.max_pixels,
                                                              name=name)]) for name, data in blobs])
            probabilities = chosen.predict_faces(crops)
            scored = [(name, Scores(p)) for (name, _), p in zip(blobs, probabilities, strict=True)]
            return {"faces": [{"file": name, "emotion": s.emotion, "confidence": s.confidence,
                               "probabilities": s.scores} for name, s in scored],
                    "model": chosen.source.name, "prior": chosen.prior.to_dict()}

        return await _in_thread(lambda: run(work))

    app.state.settings = settings
    app.state.predictor = predictor
    return app


async def _in_thread(fn):
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn)


# Content types FastAPI reads as a form before the endpoint runs (curl --data-binary sends the first)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


async def _read_body(request, limit_bytes: int) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit_bytes:
            break  # checked() names the limit
    return bytes(body)


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


def app_from_env():
    """The uvicorn factory each worker calls (`ferkit serve --workers N`): settings from the environment."""
    import json

    return create_app(ServeSettings(**json.loads(os.environ.get(SETTINGS_ENV, "{}"))))


def serve(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Run the API with uvicorn; each worker process loads the model once."""
    import json

    import uvicorn

    os.environ[SETTINGS_ENV] = json.dumps(asdict(settings))
    uvicorn.run("ferkit.server:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="info")


def _version() -> str:
    import ferkit

    return ferkit.__version__
