"""`ferkit serve`: the Predictor behind an HTTP API (FastAPI on uvicorn; the serve extra).

    ferkit serve --model default --port 8000        # then: curl -F file=@photo.jpg localhost:8000/v1/predict

Endpoints (OpenAPI docs at /docs):
- POST /v1/predict: one image (multipart field `file`, or the raw body) -> its faces, as
  `ferkit predict --json` writes them, with the model and prior used. Query: prior, min_face, detector.
- POST /v1/predict-faces: already-cropped faces (multipart fields `files`) -> 8 probabilities each.
- GET /v1/model: the model card facts of metrics.json.  GET /healthz: liveness.

The server assumes hostile clients: the limits are in `ferkit.server.guard`, in front of the
endpoints of `ferkit.server.api`. The model loads once per worker process; the Predictor is
thread-safe, so a worker serves its requests from FastAPI's thread pool.
"""

from ferkit.server.api import app_from_env, create_app, model_facts, serve
from ferkit.server.guard import ServeSettings

__all__ = ["ServeSettings", "app_from_env", "create_app", "model_facts", "serve"]
