"""`Predictor`: images in, faces with emotion probabilities out.

    >>> from ferkit import Predictor
    >>> predictor = Predictor()                       # bundled default model + default detector
    >>> faces = predictor.predict("group.jpg")        # path, bytes, file, RGB array, PIL image
    >>> faces[0].emotion, faces[0].confidence, faces[0].box
    >>> predictor.predict_faces(crops)                # (N, 48, 48) uint8 faces -> (N, 8)

The model is loaded once, in the constructor. One Predictor can serve many threads (a web
app's workers, the HTTP API): the classifier runs without a lock (see `ferkit.inference.backends`
for why that is safe), and so do ferkit's own detectors, each of which serialises itself only if
it is not thread-safe (`FaceDetector.thread_safe`: MTCNN on ONNX Runtime runs concurrently; the
OpenCV and dlib ones take their own lock). A detector callable you pass in is called under a lock,
since ferkit cannot know.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ferkit.emotions import EMOTIONS
from ferkit.errors import ArgumentError, FerkitError
from ferkit.images import Color, ImageSource, describe, load_image, to_face
from ferkit.inference.backends import Backend, OnnxBackend, TorchBackend
from ferkit.inference.crops import prepare_faces
from ferkit.inference.face import DetectionLike, Face, ImageResult, number_faces
from ferkit.inference.tracking import DEFAULT_SMOOTH_S
from ferkit.inference.video import VideoReport, iter_video
from ferkit.models.bundled import ModelSource, resolve_model
from ferkit.models.onnx_export import cached_export
from ferkit.priors import ClassPrior, PriorSpec, resolve_prior
from ferkit.settings import FACE_SIDE, MIN_FACE
from ferkit.tta import check_tta

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch


BATCH_SIZE = 256
# `iter_predict_many` hands results out at least every this many images, so a caller that writes
# as it goes (ferkit predict) keeps its work when stopped; detection costs far more than the
# smaller classifier batches this makes.
STREAM_EVERY = 8


DetectFn = Callable[[np.ndarray], Sequence[DetectionLike]]
AlignFn = Callable[[np.ndarray, DetectionLike], np.ndarray]


# ---- the Predictor --------------------------------------------------------------------------

BACKENDS = ("auto", "onnx", "torch")


def _load_backend(source: ModelSource, threads: int | None, backend: str = "auto") -> Backend:
    """auto: ONNX Runtime for an .onnx file and for a model folder that ships its export, and for a
    bundled model (its export is built into the user cache on first use when it ships only its
    weights), PyTorch otherwise. "onnx" on a folder without an export and "torch" on a bare .onnx file
    are errors."""
    if backend not in BACKENDS:
        raise ArgumentError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if source.backend == "onnx":
        if backend == "torch":
            raise ArgumentError(f"{source.path}: an .onnx file runs only with ONNX Runtime (backend='onnx')")
        onnx = OnnxBackend(source.path, threads=threads)
        if onnx.int8_saturates_here:
            log.warning("%s: an int8 export with 8-bit weights, whose sums overflow on this CPU (no VNNI): "
                        "some answers differ from the model's; export it again with this ferkit for 7-bit "
                        "weights, exact everywhere", source.path)
        return onnx
    export = source.onnx_export
    if backend != "torch" and source.exports_on_first_use:
        export = cached_export(source.path)
    if backend == "onnx" and export is None:
        raise ArgumentError(f"{source.path}: no ONNX export in the folder (export it with "
                            f"`ferkit export -m {source.path} --bundled`)")
    if export is not None and backend != "torch":
        onnx = OnnxBackend(export, threads=threads, folder=source.path)
        if backend == "auto" and onnx.int8_saturates_here:
            log.warning("%s: its int8 export has 8-bit weights, whose sums overflow on this CPU (no VNNI); "
                        "running the model on PyTorch (`ferkit export -m FOLDER --bundled` re-exports it "
                        "with 7-bit weights, exact everywhere; backend='onnx' forces it)", source.path)
            return TorchBackend(source.path)
        return onnx
    return TorchBackend(source.path)


class Predictor:
    """Detect faces and classify their expression with one loaded model.

    model: None (the bundled default), a bundled model name (`ferkit.models.list_bundled()`),
        a run/model folder (model.json + model.safetensors) or an exported .onnx file (run with
        ONNX Runtime).
    detector: a ferkit.faces detector name (None: its default), or any callable
        image -> list of detections (objects with .box, .confidence, .landmarks).
    align: detection -> 48x48 face; default ferkit.faces.align_face.
    tta: None or "flip" (average with the mirrored face); used by every predict call.
    prior: the class prior of the material (see ferkit.priors): "ferplus" (as trained), "uniform"
        (every emotion equally likely: posed or acted faces), or 8 expected frequencies in EMOTIONS
        order. None: the model's own choice (metrics.json "default_prior"), else "ferplus". Every
        probability the Predictor returns is under this prior.
    min_face: smallest face side, in pixels, that the detector reports.
    threads: ONNX Runtime intra-op threads (None: its default). PyTorch's thread count is
        process-wide: set it with torch.set_num_threads.
    backend: "auto" (ONNX Runtime for .onnx files and for bundled models, which ship their export or
        build it into the user cache on first use; PyTorch for run folders), "onnx" or "torch" (the
        folder's PyTorch weights: with prior="ferplus", the same numbers as `ferkit evaluate` on
        FERPlus). Grad-CAM works with either: `.model`
        loads the PyTorch weights on demand.
    """

    def __init__(self, model: str | Path | None = None, detector: str | DetectFn | None = None, *,
                 align: AlignFn | None = None, tta: str | None = None, prior: PriorSpec | ClassPrior = None,
                 min_face: int = MIN_FACE, batch_size: int = BATCH_SIZE, threads: int | None = None,
                 backend: str = "auto"):
        if batch_size < 1:
            raise ArgumentError(f"batch_size must be >= 1, got {batch_size}")
        self.source = resolve_model(model)
        self.backend = _load_backend(self.source, threads, backend)
        self.tta = check_tta(tta)
        self.prior = resolve_prior(prior if prior is not None else self.backend.metrics.get("default_prior"))
        self.batch_size = batch_size
        self.min_face = min_face
        self.tight_crops = True  # search a padded copy when a photo shows no face (ferkit.faces)
        self._detector = detector
        self._align = align
        self._detect_fn: DetectFn | None = detector if callable(detector) else None
        self._detect_lock = threading.Lock()
        self._pytorch: list[Any] = []  # the PyTorch network, once loaded; shared with with_* copies
        self._pytorch_lock = threading.Lock()
        if isinstance(detector, str):
            self._check_detector_name(detector)

    def with_prior(self, prior: PriorSpec | ClassPrior) -> Predictor:
        """The same loaded model and detector, answering under another class prior (cheap: nothing
        is reloaded; the app keeps one Predictor per model and switches priors per request)."""
        other = copy.copy(self)
        other.prior = resolve_prior(prior if prior is not None else self.backend.metrics.get("default_prior"))
        return other

    def with_detection(self, detector: str | None = None, min_face: int | None = None,
                       tight_crops: bool | None = None) -> Predictor:
        """The same loaded model, finding faces with another detector and/or smallest face size;
        `tight_crops=False` skips the padded second search on an image without a face (video frames:
        an empty frame is common and should cost one search)."""
        other = copy.copy(self)
        if tight_crops is not None:
            other.tight_crops = tight_crops
        if detector is not None:
            self._check_detector_name(detector)
            other._detector = detector
        if min_face is not None:
            if min_face < 1:
                raise ArgumentError(f"min_face must be >= 1 pixel, got {min_face}")
            other.min_face = min_face
        if not callable(other._detector):
            other._detect_fn = None  # rebuilt for the new detector and settings on first use
        return other

    def for_video(self) -> Predictor:
        """The Predictor a video or the live webcam uses: the live detector (ferkit.faces.LIVE_DETECTOR,
        BlazeFace) unless a detector was chosen, and one search per frame (no padded second search)."""
        live = self._faces_module().LIVE_DETECTOR if self._detector is None else None
        return self.with_detection(detector=live, tight_crops=False)

    # -- model --

    def pytorch_model(self) -> Any:
        """The PyTorch network behind this Predictor's answers, for what needs gradients (Grad-CAM):
        the one it runs, or the weights beside the ONNX export it runs (loaded once, on first call).
        None for a bare .onnx file, which carries no PyTorch weights, or where PyTorch is not
        installed."""
        if isinstance(self.backend, TorchBackend):
            return self.backend.model
        if self.source.backend != "torch":
            return None
        with self._pytorch_lock:
            if not self._pytorch:
                try:
                    from ferkit.models import load

                    self._pytorch.append(load(self.source).eval())
                except ImportError:  # PyTorch is not installed (the torch extra): ONNX Runtime alone
                    return None
        return self._pytorch[0]

    @property
    def model_info(self) -> dict[str, Any]:
        """For an app's "about" page: model.json and metrics.json contents, and where they came from."""
        info: dict[str, Any] = {"name": self.source.name, "source": str(self.source.path),
                                "backend": self.backend.kind, "classes": list(EMOTIONS),
                                "prior": self.prior.to_dict(),
                                "model": copy.deepcopy(self.backend.config),
                                "metrics": copy.deepcopy(self.backend.metrics)}
        if isinstance(self.backend, OnnxBackend):
            info["onnx"] = dict(self.backend.onnx_meta)
        return info

    @property
    def model(self) -> torch.nn.Module | None:
        """The PyTorch model (for Grad-CAM), loaded on first use when the classifier runs on ONNX
        Runtime; None for a bare .onnx file."""
        return getattr(self.backend, "model", None)

    @property
    def detector_name(self) -> str:
        if self._detector is None:
            return self._faces_module().DEFAULT_DETECTOR
        return self._detector if isinstance(self._detector, str) else getattr(
            self._detector, "__name__", type(self._detector).__name__)

    # -- faces --

    @staticmethod
    def _faces_module():
        try:
            import ferkit.faces as faces
        except ImportError as exc:
            raise FerkitError(f"face detection is not available ({exc}); pass detector=callable or "
                              "use predict_faces on cropped faces") from None
        return faces

    def _check_detector_name(self, name: str) -> None:
        try:
            import ferkit.faces as faces
        except ImportError:
            return  # checked when a detector is first needed
        names = list(faces.list_detectors())
        if name not in names:
            raise ArgumentError(f"unknown face detector {name!r}; available: {', '.join(names)}")
        faces.check_detector(name)  # a missing extra is one line now, not a failure per photo later

    def _detector_fn(self) -> DetectFn:
        if self._detect_fn is None:
            faces = self._faces_module()
            name = self._detector if isinstance(self._detector, str) else faces.DEFAULT_DETECTOR
            self._check_detector_name(name)

            def detect(image: np.ndarray) -> list:
                return faces.detect_faces(image, detector=name, min_size=self.min_face,
                                          tight_crops=self.tight_crops)

            self._detect_fn = detect
        return self._detect_fn

    def _aligner(self) -> AlignFn:
        """ferkit.faces.align_face (the one cropper: eyes level when the detection has them), unless
        the Predictor was given its own `align`."""
        if self._align is None:
            self._align = self._faces_module().align_face
        return self._align

    def detect(self, image: np.ndarray) -> list[DetectionLike]:
        """Face detections on an RGB uint8 image (serialised: see the module docstring)."""
        detect = self._detector_fn()
        if not callable(self._detector):  # ferkit's detectors lock themselves where needed
            return list(detect(image))
        with self._detect_lock:
            return list(detect(image))

    def _faces_in(self, rgb: np.ndarray) -> tuple[list[DetectionLike], np.ndarray]:
        detections = self.detect(rgb)
        return detections, self.align(rgb, detections)

    def align(self, rgb: np.ndarray, detections: Sequence[DetectionLike]) -> np.ndarray:
        """The (N, 48, 48) uint8 classifier inputs of `detections` in an RGB image."""
        align = self._aligner()
        crops = np.zeros((len(detections), FACE_SIDE, FACE_SIDE), dtype=np.uint8)
        for i, d in enumerate(detections):
            crop = np.asarray(align(rgb, d))
            ready = crop.shape == (FACE_SIDE, FACE_SIDE) and crop.dtype == np.uint8
            crops[i] = crop if ready else to_face(crop)
        return crops

    @staticmethod
    def _make_faces(detections: Sequence[DetectionLike], crops: np.ndarray, probs: np.ndarray) -> list[Face]:
        return number_faces([Face(box=tuple(int(v) for v in d.box), probabilities=p, crop=c,
                                  landmarks=getattr(d, "landmarks", None),
                                  detection_confidence=getattr(d, "confidence", None))
                             for d, c, p in zip(detections, crops, probs, strict=True)])

    # -- public verbs --

    def predict_faces(self, faces: np.ndarray | Sequence[Any], tta: str | None = None,
                      color: Color = "rgb") -> np.ndarray:
        """Already-cropped faces -> (N, 8) float32 softmax probabilities in EMOTIONS order.

        `faces`: uint8 (N, 48, 48) grayscale (used as is; with backend="torch" and prior="ferplus",
        the same numbers `ferkit evaluate` gets on FERPlus), or crops of any size/colour (see
        `prepare_faces`).
        Batched internally (`batch_size`, default 256). `tta` overrides the Predictor's TTA for this call."""
        images = prepare_faces(faces, color)
        mode = check_tta(tta) if tta is not None else self.tta
        if len(images) == 0:
            return np.zeros((0, len(EMOTIONS)), dtype=np.float32)
        return self.prior.apply(self.backend.probabilities(images, mode, self.batch_size))

    def predict(self, image: ImageSource, color: Color = "rgb", name: str | None = None) -> list[Face]:
        """Every face in one image, largest first; [] when there is none.

        `image`: a path, encoded bytes, a binary file, a PIL image, or a numpy array
        ((H, W, 3) RGB, or BGR with color="bgr"; (H, W) gray). All faces are classified in one
        batch. Bad images raise ImageError naming `name` (or the path)."""
        rgb = load_image(image, color=color, name=name)
        return self.faces_at(rgb, self.detect(rgb))

    def faces_at(self, rgb: np.ndarray, detections: Sequence[DetectionLike]) -> list[Face]:
        """Classify the faces at known detections (boxes, landmarks) of an RGB uint8 image: what
        `predict` does after detection; a video stream calls it with tracked boxes."""
        crops = self.align(rgb, detections)
        return self._make_faces(detections, crops, self.predict_faces(crops))

    def iter_predict_many(self, sources: Iterable[ImageSource], progress: bool = False,
                          names: Sequence[str] | None = None) -> Iterator[ImageResult]:
        """`predict_many`, streamed: results come out in input order, while faces from
        consecutive images are classified together (up to `batch_size` faces, at most
        STREAM_EVERY images at a time)."""
        sources = list(sources)
        pending: list[tuple[ImageResult, list[DetectionLike], np.ndarray]] = []
        queued = 0

        def flush() -> Iterator[ImageResult]:
            nonlocal queued
            crops = [c for _, _, c in pending if len(c)]
            probs = self.predict_faces(np.concatenate(crops)) if crops else np.zeros((0, len(EMOTIONS)))
            offset = 0
            for result, detections, face_crops in pending:
                chunk = probs[offset:offset + len(face_crops)]
                result.faces = self._make_faces(detections, face_crops, chunk)
                offset += len(face_crops)
                yield result
            pending.clear()
            queued = 0

        labels = list(names) if names is not None else [describe(s) for s in sources]
        if len(labels) != len(sources):
            raise ArgumentError(f"names: {len(labels)} names for {len(sources)} sources")
        for source, label in _progress(list(zip(sources, labels, strict=True)), progress,
                                       f"predicting {len(sources):,} images"):
            result = ImageResult(label)
            try:
                detections, crops = self._faces_in(load_image(source, name=label))
            except (KeyboardInterrupt, SystemExit):  # pragma: no cover
                raise
            except FerkitError as exc:
                result.error = str(exc)
                detections, crops = [], np.zeros((0, FACE_SIDE, FACE_SIDE), dtype=np.uint8)
            except Exception as exc:  # a detector/decoder bug on one file must not stop the rest
                result.error = f"{result.source}: {type(exc).__name__}: {exc}"
                detections, crops = [], np.zeros((0, FACE_SIDE, FACE_SIDE), dtype=np.uint8)
            pending.append((result, detections, crops))
            queued += len(crops)
            if queued >= self.batch_size or len(pending) >= STREAM_EVERY:
                yield from flush()
        yield from flush()

    def predict_many(self, sources: Iterable[ImageSource], progress: bool = True,
                     names: Sequence[str] | None = None) -> list[ImageResult]:
        """Many images -> one ImageResult each (faces, or the error), in order; a bad file is
        recorded in its result and the rest still run. `names` (one per source) name them in
        results and errors (default: the path, or the kind of in-memory object)."""
        return list(self.iter_predict_many(sources, progress=progress, names=names))

    def predict_video(self, path: str | Path, every_n: int = 1, out: str | Path | None = None,
                      progress: bool = True, report: VideoReport | None = None,
                      smooth_s: float | None = None, detect_every: int = 1) -> Iterator[Face]:
        """Stream the faces (with their frame, time_s, index and track) of every `every_n`-th frame
        of a video, in constant memory. `out` also writes a copy of
        the video with boxes and labels drawn. Faces are tracked and smoothed over `smooth_s`
        seconds; `detect_every` > 1 detects on every so many analysed frames and follows the
        tracked boxes in between (see ferkit.inference.stream). Unreadable video -> ImageError."""
        smooth = DEFAULT_SMOOTH_S if smooth_s is None else smooth_s
        # for_video: the live detector unless this Predictor was given one
        return iter_video(self.for_video(), path, every_n=every_n, out=out, progress=progress, report=report,
                          smooth_s=smooth, detect_every=detect_every)

    def __repr__(self) -> str:
        detector = self._detector if isinstance(self._detector, str | None) else "<callable>"
        return (f"Predictor(model={self.source.name!r}, backend={self.backend.kind!r}, "
                f"detector={detector!r}, tta={self.tta!r}, prior={str(self.prior)!r})")


def _progress(items: Sequence, enabled: bool, description: str) -> Iterable:
    if not enabled or len(items) < 2:
        return items
    from rich.console import Console
    from rich.progress import track

    return track(items, description=description, transient=True, console=Console(stderr=True))
