"""The endpoints (see ferkit.server) and the uvicorn entry points."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Request  # the serve extra: pip install 'ferkit[serve]'
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from ferkit.errors import ArgumentError, FerkitError, ImageError, ImageTooLarge
from ferkit.server.guard import (
    SETTINGS_ENV,
    ApiError,
    RequestGuard,
    ServeSettings,
    error_response,
    settings_from_env,
)


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
    from ferkit.evaluation.recorded import recorded_metrics

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
    return create_app(settings_from_env())


def serve(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Run the API with uvicorn; each worker process loads the model once."""
    import uvicorn

    os.environ[SETTINGS_ENV] = json.dumps(asdict(settings))
    uvicorn.run("ferkit.server:app_from_env", factory=True, host=host, port=port, workers=workers,
                http="ferkit.server.guard:GuardedH11Protocol", timeout_keep_alive=5, log_level="info")


def _version() -> str:
    import ferkit

    return ferkit.__version__

