"""Knowledge distillation: a trained teacher's soft predictions mixed into the training targets.

Two ways, chosen by `teacher_views` in the config:

- 0 (clean faces): the teacher predicts every training face once, on the clean face (below).
- K > 0 (function matching, Beyer et al. 2022, "Knowledge distillation: a good teacher is patient
  and consistent"): K augmented views of every training face are drawn once with the run's own
  augmentation and stored (uint8, memory-mapped), and the teacher predicts each view. Training then
  shows the student one stored view per face per epoch with the teacher's answer *for that view*, so
  student and teacher always see the same input; mixup still widens the inputs. With
  `augment.view_mixup`, that share of the stored views is a mix of two faces' views (lambda ~ U(0, 1),
  as Beyer et al. mix), answered by the teacher as mixed, so that the student matches the teacher's
  function between faces too instead of a linear mix of its two answers. The teacher runs on
  its default path (ONNX Runtime for a bundled model), once per stored view.

The teacher (usually an ensemble, `ferkit ensemble`) predicts every training face once, before
training; its tempered softmax is mixed into the label protocol's vote distribution:

    target = (1 - distill_weight) * votes + distill_weight * softmax(log p_teacher / T)

Predicting once on the clean faces, instead of running the teacher on every augmented batch,
keeps a distilled run as cheap as a plain one (an online teacher would multiply the cost of every
step); the augmentations are mild enough (shift/rotate/zoom by ~10%,
mirror) that the clean face's distribution still describes the augmented one. Validation keeps
the plain vote targets, so the best checkpoint is chosen against the crowd, not the teacher.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from ferkit.errors import ArgumentError, ConfigError, FerkitError
from ferkit.evaluation.predict import predict_proba
from ferkit.files import write_whole
from ferkit.models import NUM_CLASSES

log = logging.getLogger("ferkit.training")

TEACHER_FILE = "teacher_probs.npy"


def teacher_probabilities(teacher: torch.nn.Module, images: np.ndarray, temperature: float = 1.0,
                          batch_size: int = 512) -> np.ndarray:
    """softmax(log p_teacher / T) for uint8 faces (N, 48, 48): (N, 8) float32, i.e. p^(1/T)
    renormalised. T > 1 flattens the teacher's distribution, passing on more of its second choices."""
    return temper(predict_proba(teacher, images, batch_size=batch_size), temperature)


def temper(probs: np.ndarray, temperature: float) -> np.ndarray:
    """p^(1/T), renormalised per row: float32."""
    tempered = np.exp(np.log(np.maximum(probs.astype(np.float64), 1e-12)) / temperature)
    return (tempered / tempered.sum(axis=-1, keepdims=True)).astype(np.float32)


def mix_targets(targets: np.ndarray, teacher_probs: np.ndarray, weight: float) -> np.ndarray:
    """(1 - weight) * targets + weight * teacher_probs; rows still sum to 1."""
    if targets.shape != teacher_probs.shape:
        raise ArgumentError(f"targets {targets.shape} and teacher probabilities {teacher_probs.shape} differ")
    return ((1.0 - weight) * targets + weight * teacher_probs).astype(np.float32)


def load_setting_model(key: str, value: str) -> tuple[torch.nn.Module, Path]:
    """The trainable model a config setting names (`teacher`, `init`: a bundled name or model folder)
    and its folder; ConfigError naming the setting if it is unusable."""
    from ferkit.models import load, resolve_model

    try:
        source = resolve_model(value)
        return load(source), source.path
    except FerkitError as exc:
        raise ConfigError(f"config value {key}={value!r}: {exc}") from None


def cached_teacher_probabilities(run_dir: Path, teacher: str, images: np.ndarray,
                                 temperature: float) -> np.ndarray:
    """Teacher probabilities for the run's training faces, computed once and kept in the run folder
    (a resumed run reuses them; the cache is plain .npy, read without pickle)."""
    cache = run_dir / TEACHER_FILE
    stamp = run_dir / (TEACHER_FILE + ".json")
    key = {"teacher": teacher, "temperature": temperature, "faces": len(images)}
    if cache.is_file() and read_stamp(stamp) == key:
        probs = np.load(cache, allow_pickle=False)
        if probs.shape == (len(images), NUM_CLASSES):
            return probs
    model, folder = load_setting_model("teacher", teacher)
    log.info("distillation: teacher %s predicting %d training faces (T=%g)", folder, len(images),
             temperature)
    probs = teacher_probabilities(model, images, temperature)
    stamp.unlink(missing_ok=True)
    np.save(cache, probs, allow_pickle=False)
    write_stamp(stamp, key)
    return probs


def write_stamp(path: Path, key: dict) -> None:
    """The settings that made the files beside it, written last and whole (a temporary file renamed
    over it): a stamp present means those files are complete."""
    write_whole(path, json.dumps(key))


def read_stamp(path: Path) -> dict | None:
    """A stamp's settings, or None when there is none or it cannot be read (its files are then made
    again rather than trusted)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


VIEWS_FILE = "teacher_views.npy"  # uint8 (K, N, 48, 48): the stored augmented views
VIEW_PROBS_FILE = "teacher_view_probs.npy"  # float16 (K, N, 8): the teacher's tempered softmax of each
VIEW_STAMP_FILE = VIEW_PROBS_FILE + ".json"  # the settings the views and answers were made with
# A pass under way: the answers so far (float16 (K, N, 8), one view at a time) and a stamp with the
# settings and how many views are answered, so that a killed pass goes on from there.
PARTIAL_PROBS_FILE = "teacher_view_probs.partial.npy"
PARTIAL_STAMP_FILE = PARTIAL_PROBS_FILE + ".json"
# `augment.reframe`: every training face as the photo pipeline frames it (uint8 (N, 48, 48); the face as
# it was where the detector finds none), made before the views and kept, with a stamp of how far it got
REFRAMED_FILE = "reframed_faces.npy"
REFRAMED_STAMP_FILE = REFRAMED_FILE + ".json"
REFRAME_CHUNK = 1024  # faces re-framed between two saves
# `augment.view_mixup`: for each stored view (K, N), the face it is mixed with (itself when unmixed) and
# its own share of the mix (1 when unmixed); the vote part of a mixed view's target is mixed alike
VIEW_PARTNERS_FILE = "teacher_view_partners.npy"  # int32 (K, N)
VIEW_LAMBDAS_FILE = "teacher_view_lambdas.npy"  # float32 (K, N)
VIEW_MIX_FILES = (VIEW_PARTNERS_FILE, VIEW_LAMBDAS_FILE)
# Everything the teacher pass stores in a run folder. Each file is checked against the run's settings
# before use, so an interrupted run keeps them (ferkit.training.run) and a rerun picks them up.
TEACHER_PASS_FILES = (TEACHER_FILE, TEACHER_FILE + ".json", VIEWS_FILE, VIEW_PROBS_FILE, VIEW_STAMP_FILE,
                      *VIEW_MIX_FILES, PARTIAL_PROBS_FILE, PARTIAL_STAMP_FILE, REFRAMED_FILE,
                      REFRAMED_STAMP_FILE)


def draw_views(images: np.ndarray, augment, views: int, seed: int, out: Path,
               batch_size: int = 1024, reframed: np.ndarray | None = None) -> np.ndarray:
    """K augmented views of uint8 faces (N, 48, 48) -> memory-mapped uint8 (K, N, 48, 48) at `out`.
    View k of face i depends only on (seed, k): a rerun draws the same views. With `augment.reframe` > 0,
    that share of the views starts from `reframed` (the same faces as the photo pipeline frames them)."""
    from ferkit.training.augment import BatchAugment

    if augment.reframe and (reframed is None or reframed.shape != images.shape):
        raise ArgumentError("augment.reframe needs the re-framed faces, one per face")
    augmenter = BatchAugment(augment)
    stored = np.lib.format.open_memmap(out, mode="w+", dtype=np.uint8, shape=(views, *images.shape))
    for k in range(views):
        torch.manual_seed(seed * 7919 + k)
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start:start + batch_size]).unsqueeze(1).float() / 255.0
            if augment.reframe:  # drawn only then, so that views without it stay as they were
                chosen = (torch.rand(len(x)) < augment.reframe).view(-1, 1, 1, 1)
                alt = torch.from_numpy(reframed[start:start + batch_size]).unsqueeze(1).float() / 255.0
                x = torch.where(chosen, alt, x)
            view = (augmenter(x)[:, 0] * 255.0).round().clamp(0, 255).to(torch.uint8)
            stored[k, start:start + len(x)] = view.numpy()
    stored.flush()
    return stored


def mix_views(stored: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Mix `share` of the stored views (K, N, 48, 48), in place, each with the same view of another
    face drawn at random: lambda * own + (1 - lambda) * partner's, lambda ~ U(0, 1). Returns (partners
    int32 (K, N), lambdas float32 (K, N)); an unmixed view is its own partner with lambda 1. Depends
    only on (seed, k), as the views do."""
    views, faces = stored.shape[:2]
    partners = np.empty((views, faces), dtype=np.int32)
    lambdas = np.empty((views, faces), dtype=np.float32)
    own = torch.arange(faces)
    for k in range(views):
        g = torch.Generator().manual_seed(seed * 7919 + k + 104_729)  # apart from the views' streams
        mixed = torch.rand(faces, generator=g) < share
        partner = torch.where(mixed, torch.randperm(faces, generator=g), own)
        lam = torch.where(mixed, torch.rand(faces, generator=g), torch.ones(faces))
        view = torch.from_numpy(np.array(stored[k])).float()  # (N, 48, 48)
        weight = lam.view(-1, 1, 1)
        mixed_view = weight * view + (1 - weight) * view[partner]
        stored[k] = mixed_view.round().clamp(0, 255).to(torch.uint8).numpy()
        partners[k], lambdas[k] = partner.numpy(), lam.numpy()
    if hasattr(stored, "flush"):
        stored.flush()
    return partners, lambdas


def load_view_mix(run_dir: Path, views: int, faces: int) -> tuple[np.ndarray, np.ndarray]:
    """(partners, lambdas) of a run's stored teacher pass drawn with `augment.view_mixup`."""
    partners = np.load(run_dir / VIEW_PARTNERS_FILE, allow_pickle=False)
    lambdas = np.load(run_dir / VIEW_LAMBDAS_FILE, allow_pickle=False)
    if partners.shape != (views, faces) or lambdas.shape != (views, faces):
        raise FerkitError(f"{run_dir}: the stored views' mix ({partners.shape}) does not match the views "
                          f"({views}, {faces}); delete the run's teacher_view* files to draw them again")
    return partners, lambdas


def view_settings(augment: dict) -> dict:
    """The augmentation settings a stored view depends on: all but mixup, which mixes whole batches
    during training (ferkit.training.module), after the views are drawn. Stamps written before
    `reframe` or `view_mixup` existed were made without them."""
    return {"reframe": 0.0, "view_mixup": 0.0,
            **{name: value for name, value in augment.items() if name != "mixup"}}


def cached_reframes(run_dir: Path, images: np.ndarray, workers: int = 1) -> np.ndarray:
    """Every face as the photo pipeline frames it (ferkit.faces.reframe), kept in the run folder; a
    killed run goes on from the last face stored (MTCNN takes ~20 ms a face: ~10 min for FERPlus Train
    on one core)."""
    from ferkit.faces import DEFAULT_DETECTOR, DEFAULT_MARGIN
    from ferkit.faces.reframe import reframe_faces

    path, stamp = run_dir / REFRAMED_FILE, run_dir / REFRAMED_STAMP_FILE
    key = {"detector": DEFAULT_DETECTOR, "margin": DEFAULT_MARGIN, "faces": len(images),
           "faces_sha256": hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()}
    made = read_stamp(stamp) or {}
    done = int(made.get("done", 0)) if made.get("settings") == key and path.is_file() else 0
    if done:
        framed = np.load(path, mmap_mode="r+", allow_pickle=False)
    else:
        stamp.unlink(missing_ok=True)
        framed = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=images.shape)
    found = int(made.get("found", 0)) if done else 0
    if done < len(images):
        log.info("re-framing %d training faces with %s (from face %d)", len(images), DEFAULT_DETECTOR, done)
    for start in range(done, len(images), REFRAME_CHUNK):
        part, hit = reframe_faces(images[start:start + REFRAME_CHUNK], workers=workers)
        framed[start:start + len(part)] = part
        framed.flush()
        found += int(hit.sum())
        write_stamp(stamp, {"settings": key, "done": start + len(part), "found": found})
    log.info("re-framing: the detector found %d of %d training faces (the others keep FER2013's crop)",
             found, len(images))
    return np.asarray(framed)


def _stored_pass(folder: Path) -> dict | None:
    """The settings a folder's finished teacher pass was made with, or None if it holds none."""
    made = read_stamp(folder / VIEW_STAMP_FILE)
    if not ((folder / VIEWS_FILE).is_file() and (folder / VIEW_PROBS_FILE).is_file() and made):
        return None
    # stamps written before view_settings existed carry mixup too
    return {**made, "augment": view_settings(made.get("augment") or {})}


def reuse_teacher_pass(source: Path, run_dir: Path, key: dict) -> None:
    """Hard-link (or copy, across file systems) another run's stored teacher pass into `run_dir`: the
    pass costs 10-16 min on 2 cores and depends only on the teacher, the views' settings and the seed,
    not on the student network or its schedule. The source must have been made with the same ones."""
    made = _stored_pass(source)
    if made != key:
        why = ("it holds no finished teacher pass" if made is None else
               "its teacher pass was made with other settings: " + ", ".join(
                   f"{name} {made.get(name)!r} (this run: {value!r})" for name, value in key.items()
                   if made.get(name) != value))
        raise ConfigError(f"config value teacher_pass_from={str(source)!r}: {why}")
    for name in (VIEWS_FILE, VIEW_PROBS_FILE, VIEW_STAMP_FILE, *VIEW_MIX_FILES):
        (run_dir / name).unlink(missing_ok=True)
        if not (source / name).is_file():  # a pass without view_mixup has no mix files
            continue
        try:
            os.link(source / name, run_dir / name)
        except OSError:
            shutil.copy2(source / name, run_dir / name)
    log.info("distillation: reusing the teacher pass of %s", source)


def cached_teacher_views(run_dir: Path, teacher: str, images: np.ndarray, augment, views: int,
                         temperature: float, seed: int,
                         reuse_from: str | Path = "") -> tuple[np.ndarray, np.ndarray]:
    """(views (K, N, 48, 48) uint8, teacher probabilities (K, N, 8) float32), computed once per run and
    kept in its folder (plain .npy, no pickle); a resumed run, or the same command run again after a
    new run was interrupted before its first epoch (ferkit.training.run keeps these files), reuses
    what matches its settings. `reuse_from`: another run folder whose pass to take (`reuse_teacher_pass`)."""
    from dataclasses import asdict

    from ferkit.inference import Predictor

    views_path, probs_path = run_dir / VIEWS_FILE, run_dir / VIEW_PROBS_FILE
    stamp = run_dir / VIEW_STAMP_FILE
    key = {"teacher": teacher, "temperature": temperature, "views": views, "seed": seed,
           "faces": len(images), "augment": view_settings(asdict(augment))}
    if reuse_from and _stored_pass(run_dir) != key:
        reuse_teacher_pass(Path(reuse_from), run_dir, key)
    if _stored_pass(run_dir) == key:
        stored = np.load(views_path, mmap_mode="r", allow_pickle=False)
        probs = np.load(probs_path, allow_pickle=False)
        if stored.shape == (views, *images.shape) and probs.shape == (views, len(images), NUM_CLASSES):
            return stored, probs.astype(np.float32)
    try:
        predictor = Predictor(teacher, prior="ferplus")  # the teacher's own answer, as trained
    except FerkitError as exc:
        raise ConfigError(f"config value teacher={teacher!r}: {exc}") from None
    partial, progress = run_dir / PARTIAL_PROBS_FILE, run_dir / PARTIAL_STAMP_FILE
    stored, probs, done = _pass_under_way(run_dir, key, views, images.shape)
    if done:
        log.info("distillation: going on with the teacher pass at view %d of %d", done + 1, views)
    else:
        # new files, never written through: a stored pass may be hard-linked to another run's
        mix_paths = [run_dir / name for name in VIEW_MIX_FILES]
        for path in (stamp, views_path, probs_path, partial, progress, *mix_paths):
            path.unlink(missing_ok=True)
        reframed = (cached_reframes(run_dir, images, workers=torch.get_num_threads())
                    if augment.reframe else None)
        log.info("distillation: drawing %d views of %d training faces", views, len(images))
        stored = draw_views(images, augment, views, seed, views_path, reframed=reframed)
        if augment.view_mixup:
            partners, lambdas = mix_views(stored, augment.view_mixup, seed)
            np.save(run_dir / VIEW_PARTNERS_FILE, partners, allow_pickle=False)
            np.save(run_dir / VIEW_LAMBDAS_FILE, lambdas, allow_pickle=False)
        probs = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float16,
                                          shape=(views, len(images), NUM_CLASSES))
    log.info("distillation: teacher %s (%s) predicting %d views", teacher, predictor.backend.kind,
             (views - done) * len(images))
    for k in range(done, views):
        probs[k] = temper(predictor.predict_faces(np.ascontiguousarray(stored[k])), temperature)
        probs.flush()
        write_stamp(progress, {"settings": key, "views_answered": k + 1})
    np.save(probs_path, np.asarray(probs), allow_pickle=False)
    write_stamp(stamp, key)
    del probs
    for path in (partial, progress):
        path.unlink(missing_ok=True)
    return stored, np.load(probs_path, allow_pickle=False).astype(np.float32)


def _pass_under_way(run_dir: Path, key: dict, views: int, faces_shape: tuple[int, ...]):
    """(views, answers so far, views answered) of a teacher pass cut short with these settings, or
    (None, None, 0) when there is none to go on with."""
    made = read_stamp(run_dir / PARTIAL_STAMP_FILE)
    if not made or made.get("settings") != key or not (run_dir / VIEWS_FILE).is_file():
        return None, None, 0
    try:
        stored = np.load(run_dir / VIEWS_FILE, mmap_mode="r", allow_pickle=False)
        probs = np.load(run_dir / PARTIAL_PROBS_FILE, mmap_mode="r+", allow_pickle=False)
    except (OSError, ValueError):
        return None, None, 0
    done = int(made.get("views_answered", 0))
    if stored.shape != (views, *faces_shape) or probs.shape != (views, faces_shape[0], NUM_CLASSES):
        return None, None, 0
    return stored, probs, min(done, views)
