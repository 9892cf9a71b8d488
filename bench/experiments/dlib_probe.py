"""Linear probe: dlib's face-recognition ResNet's intermediate features against the `default`'s own.

    .venv/bin/python -m bench.experiments.dlib_probe \
        [--weights runs/dlib-resnet/dlib_face_resnet_v1.safetensors]
        [--out runs/dlib-probe] [--threads 1]

Issue 59; the protocol and the decision rule are in docs/experiments.md ("A face-pretrained
backbone"), written before any figure. In short: frozen backbones; features of FERPlus Train and Valid
(majority protocol) and of both dev sets' photos (the photo pipeline's largest face, 48x48, as
`ferkit evaluate --photos` crops it; a photo with no face found counts as an error); a standardised,
class-balanced multinomial logistic regression fitted on Train only, the same for every row. FERPlus
Test is never read; no dev-set photo is fitted on.

- baseline: the `default` ensemble's 4 members, `forward_features` globally averaged, concatenated;
- dlib: the 48x48 face resized (bicubic) to S x S, S in --sides (150, 112), grey replicated to RGB;
  level2 and level1 outputs (`ferkit.models.dlib_resnet`), globally averaged (`L2`, `L1`, `L1+L2`) or
  averaged over a 2x2 grid of the face (`L1+L2 grid`).

Resumable: the crops, every feature block (in chunks) and every fitted probe's scores are cached under
--out; a second run only prints the table. Prints a Markdown table (also written to OUT/table.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ferkit.emotions import EMOTIONS
from ferkit.evaluation import compute_metrics, load_eval_split
from ferkit.evaluation.photos import read_photo_labels
from ferkit.models import load, normalize
from ferkit.models.bundled import resolve_model
from ferkit.models.dlib_resnet import load_dlib_resnet
from ferkit.settings import data_root

DEV_SETS = {"wild": "../shared/datasets/expressions-in-the-wild",
            "posed": "../shared/datasets/posed-expressions"}
FIVE = [EMOTIONS.index(e) for e in ("neutral", "happiness", "surprise", "sadness", "anger")]
DEFAULT_WEIGHTS = Path("runs/dlib-resnet/dlib_face_resnet_v1.safetensors")
CHUNK = 1024  # faces per cached feature chunk (a stopped run loses at most one)
BATCH = 64


# ---- inputs ---------------------------------------------------------------------------------

def photo_crops(name: str, folder: str, out: Path) -> dict:
    """The photo pipeline's 48x48 crop of each labelled photo's largest face (ferkit's Predictor with
    the bundled default, as `ferkit evaluate --photos` runs it), and the shipped default's own
    probabilities for a reference row. Cached in OUT/photos-NAME.npz."""
    cache = out / f"photos-{name}.npz"
    if cache.is_file():
        return dict(np.load(cache))
    from ferkit.inference import Predictor

    photos = read_photo_labels(folder)
    predictor = Predictor("default", threads=1)
    crops = np.zeros((len(photos), 48, 48), dtype=np.uint8)
    found = np.zeros(len(photos), dtype=bool)
    shipped = np.zeros((len(photos), len(EMOTIONS)), dtype=np.float32)
    for i, result in enumerate(predictor.iter_predict_many(photos.paths, progress=True)):
        if not result.ok:
            raise SystemExit(f"{photos.paths[i]}: {result.error}")
        if result.faces:
            crops[i], found[i], shipped[i] = result.faces[0].crop, True, result.faces[0].probabilities
    data = {"crops": crops, "labels": photos.labels.astype(np.int64), "found": found, "shipped": shipped}
    np.savez(cache, **data)
    return data


def upsample_rgb(faces: np.ndarray, side: int) -> torch.Tensor:
    """uint8 grey faces (N, 48, 48) -> (N, 3, side, side) float 0..255, bicubic, grey in all channels."""
    big = np.stack([cv2.resize(f, (side, side), interpolation=cv2.INTER_CUBIC) for f in faces])
    return torch.from_numpy(big).float()[:, None].expand(-1, 3, -1, -1).contiguous()


# ---- feature extractors -------------------------------------------------------------------------

class DefaultMembers:
    """The bundled default's members' pooled features (the probe baseline), 4 x 256 = 1,024-d."""

    name = "default"

    def __init__(self):
        self.model = load(resolve_model("default").path)

    @torch.no_grad()
    def __call__(self, faces: np.ndarray) -> dict[str, np.ndarray]:
        x = normalize(faces)
        pooled = [m.forward_features(x).mean(dim=(2, 3)) for m in self.model.members]
        return {"members": torch.cat(pooled, dim=1).numpy()}


class DlibLevels:
    """dlib ResNet level2 and level1 outputs at input side `side`: global and 2x2-grid averages."""

    def __init__(self, weights: Path, side: int):
        self.net = load_dlib_resnet(weights)
        self.side = side
        self.name = f"dlib{side}"

    @torch.no_grad()
    def __call__(self, faces: np.ndarray) -> dict[str, np.ndarray]:
        levels = self.net.forward_levels(upsample_rgb(faces, self.side))
        out = {}
        for key in ("level2", "level1"):
            fmap = levels[key]
            out[key] = fmap.mean(dim=(2, 3)).numpy()
            # 2x2 grid: top/bottom x left/right halves (overlapping when the side is odd)
            out[f"{key}_grid"] = F.adaptive_avg_pool2d(fmap, 2).flatten(1).numpy()
        return out


def extract(extractor, split: str, faces: np.ndarray, out: Path) -> dict[str, np.ndarray]:
    """Features of `faces`, computed in cached chunks (OUT/feats/EXTRACTOR-SPLIT-K.npz)."""
    folder = out / "feats"
    folder.mkdir(parents=True, exist_ok=True)
    parts: list[dict[str, np.ndarray]] = []
    started, done = time.perf_counter(), 0
    for k, start in enumerate(range(0, len(faces), CHUNK)):
        path = folder / f"{extractor.name}-{split}-{k:03d}.npz"
        if not path.is_file():
            chunk = faces[start:start + CHUNK]
            blocks = [extractor(chunk[i:i + BATCH]) for i in range(0, len(chunk), BATCH)]
            np.savez(path, **{key: np.concatenate([b[key] for b in blocks]) for key in blocks[0]})
            done += len(chunk)
        parts.append(dict(np.load(path)))
    if done:
        ms = 1000 * (time.perf_counter() - started) / done
        print(f"  {extractor.name} {split}: {done:,} faces, {ms:.1f} ms/face", flush=True)
        timing = out / "timing.json"
        times = json.loads(timing.read_text()) if timing.is_file() else {}
        times[f"{extractor.name}-{split}"] = ms
        timing.write_text(json.dumps(times, indent=1))
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


# ---- cost of a fine-tune ----------------------------------------------------------------------------

def time_finetune(weights: Path, side: int, train_faces: int, steps: int = 6, batch: int = 64) -> dict:
    """Seconds per FERPlus Train epoch of a fine-tune of the dlib net at `side` (SGD step on a new
    8-class head over level1+level2 grid features, batch 64, this process's threads): every level
    trained, or only level2 and up (level4/level3 frozen, run without gradients). The first step
    is a warm-up and not counted."""
    net = load_dlib_resnet(weights).train()
    head = torch.nn.Linear(1536, len(EMOTIONS))
    faces = np.random.default_rng(0).integers(0, 256, (batch, 48, 48), dtype=np.uint8)
    target = torch.randint(0, len(EMOTIONS), (batch,))
    out = {}
    for label, frozen in (("all levels", ()), ("level2 and up", ("level4", "level3"))):
        skip = (("stem",) + tuple(f"levels.{f}." for f in frozen)) if frozen else ()
        params = [p for n, p in net.named_parameters() if not n.startswith(skip)] + list(head.parameters())
        optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
        times = []
        for _ in range(steps + 1):
            started = time.perf_counter()
            x = net.normalize(upsample_rgb(faces, side))
            with torch.set_grad_enabled(not frozen):
                x = F.max_pool2d(F.relu(net.stem_affine(net.stem_conv(x))), 3, 2)
                for name in frozen:
                    x = net.levels[name](x)
            levels = {}
            for name, level in net.levels.items():
                if name not in frozen:
                    x = level(x)
                    levels[name] = x
            feats = torch.cat([F.adaptive_avg_pool2d(levels[k], 2).flatten(1)
                               for k in ("level1", "level2")], dim=1)
            loss = F.cross_entropy(head(feats), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - started)
        out[label] = float(np.mean(times[1:]) / batch * train_faces)
    return out


# ---- probe ----------------------------------------------------------------------------------------

def scores(y: np.ndarray, proba: np.ndarray, missed: np.ndarray) -> dict[str, float]:
    m = compute_metrics(y, proba, missed=missed)
    recall = [m["per_class"][e]["recall"] for e in EMOTIONS]
    return {"acc": m["accuracy"], "bal": m["balanced_accuracy"],
            "bal5": float(np.mean([recall[k] for k in FIVE]))}


def probe(train: tuple[np.ndarray, np.ndarray], evals: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
          ) -> dict[str, dict[str, float]]:
    """Fit the one protocol on Train, score every evaluation set (features, labels, missed labels)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = train
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
    clf.fit(scaler.transform(x), y)
    assert list(clf.classes_) == list(range(len(EMOTIONS)))
    return {name: scores(labels, clf.predict_proba(scaler.transform(feats)), missed)
            for name, (feats, labels, missed) in evals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--out", type=Path, default=Path("runs/dlib-probe"))
    parser.add_argument("--sides", type=int, nargs="+", default=[150, 112])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--time-finetune", action="store_true",
                        help="also measure the seconds per Train epoch of a fine-tune at each side")
    parser.add_argument("--exploratory", action="store_true",
                        help="also the baseline and dlib's best block together (not a candidate of the rule)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    root = data_root()
    faces = {split: load_eval_split(root, split, "majority") for split in ("train", "valid")}  # never test
    photos = {name: photo_crops(name, folder, args.out) for name, folder in DEV_SETS.items()}
    labels = {"train": faces["train"].labels, "valid": faces["valid"].labels}
    inputs = {"train": faces["train"].images, "valid": faces["valid"].images}
    missed = {"valid": np.zeros(0, dtype=int)}
    for name, p in photos.items():
        inputs[name], labels[name], missed[name] = p["crops"][p["found"]], p["labels"][p["found"]], \
            p["labels"][~p["found"]]
        print(f"{name}: {p['found'].sum():,} of {len(p['found']):,} photos with a face", flush=True)

    extractors = [DefaultMembers()] + [DlibLevels(args.weights, side) for side in args.sides]
    feats = {ex.name: {split: extract(ex, split, images, args.out) for split, images in inputs.items()}
             for ex in extractors}

    # label -> the (extractor, feature) blocks it concatenates
    candidates: dict[str, list[tuple[str, str]]] = {"baseline: default's 4 members": [("default", "members")]}
    for side in args.sides:
        for label, keys in (("L2", ["level2"]), ("L1", ["level1"]), ("L1+L2", ["level1", "level2"]),
                            ("L1+L2 grid", ["level1_grid", "level2_grid"])):
            candidates[f"dlib {side} px {label}"] = [(f"dlib{side}", k) for k in keys]
    if args.exploratory and args.sides:
        # not a candidate of the rule (added after its table was read): does dlib add anything the
        # default's members lack? The baseline's features and the best dlib block side by side.
        side = args.sides[0]
        candidates[f"(exploratory) baseline + dlib {side} px L1+L2 grid"] = [
            ("default", "members"), (f"dlib{side}", "level1_grid"), (f"dlib{side}", "level2_grid")]

    cache = args.out / "scores.json"
    results = json.loads(cache.read_text()) if cache.is_file() else {}
    for label, blocks in candidates.items():
        if label in results:
            continue
        block = {split: np.concatenate([feats[source][split][k] for source, k in blocks], axis=1)
                 for split in inputs}
        started = time.perf_counter()
        results[label] = probe((block["train"], labels["train"]),
                               {s: (block[s], labels[s], missed[s]) for s in ("valid", "wild", "posed")})
        results[label]["dim"] = int(block["train"].shape[1])
        print(f"  fitted {label} ({block['train'].shape[1]}-d) in {time.perf_counter() - started:.0f} s",
              flush=True)
        cache.write_text(json.dumps(results, indent=1))

    # reference, not a candidate: the shipped default's own head on the same dev-set crops
    shipped = {name: scores(labels[name], p["shipped"][p["found"]], missed[name])
               for name, p in photos.items()}
    lines = ["| features | dim | Valid acc | Valid bal | wild acc | wild bal (8) | wild bal (5) | posed acc "
             "| posed bal (7) |", "|---" * 9 + "|"]
    for label, r in results.items():
        v, w, p = r["valid"], r["wild"], r["posed"]
        lines.append(f"| {label} | {r['dim']:,} | {v['acc']:.3f} | {v['bal']:.3f} | {w['acc']:.3f} | "
                     f"{w['bal']:.3f} | {w['bal5']:.3f} | {p['acc']:.3f} | {p['bal']:.3f} |")
    w, p = shipped["wild"], shipped["posed"]
    lines.append(f"| (reference) default as shipped, own head | - | - | - | {w['acc']:.3f} | "
                 f"{w['bal']:.3f} | {w['bal5']:.3f} | {p['acc']:.3f} | {p['bal']:.3f} |")
    if args.time_finetune:
        for side in args.sides:
            cost = time_finetune(args.weights, side, len(labels["train"]))
            lines.append(f"\nfine-tune cost at {side} px, {args.threads} thread(s): " + ", ".join(
                f"{label} {seconds / 60:.0f} min/epoch" for label, seconds in cost.items()))
    table = "\n".join(lines)
    (args.out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
