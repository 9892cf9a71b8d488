"""`load_ferplus`: the one entry point from files to in-memory splits (cached)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ferkit.data import cache
from ferkit.data.ferplus import (
    MICROSOFT_FOLDERS,
    FerplusSplit,
    LoadReport,
    detect_layout,
    read_kaggle,
    read_microsoft_split,
)
from ferkit.data.protocols import apply_protocol, drop_reasons
from ferkit.emotions import EMOTIONS, SPLITS
from ferkit.errors import ArgumentError

log = logging.getLogger(__name__)


@dataclass
class FerplusData:
    """All requested splits of one FERPlus root, plus what loading left out."""

    root: Path
    layout: str
    splits: dict[str, FerplusSplit]
    report: LoadReport = field(default_factory=LoadReport)
    from_cache: bool = False

    def __getitem__(self, split: str) -> FerplusSplit:
        return self.splits[split]


@dataclass
class LabeledSplit:
    """A split under one label protocol: only the kept images, with their targets."""

    name: str
    protocol: str
    images: np.ndarray  # (M, 48, 48) uint8
    targets: np.ndarray  # (M, 8) float32, rows sum to 1
    image_names: np.ndarray  # (M,)
    votes: np.ndarray  # (M, 10)
    dropped: dict[str, int]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labels(self) -> np.ndarray:
        """Hard labels: argmax of the targets (ties to the lower index)."""
        return self.targets.argmax(axis=1)

    def sample(self, n: int | None, seed: int = 0) -> LabeledSplit:
        """`n` images drawn at random without replacement (in their original order), or the split
        itself when n is None or not smaller than it: a quick look at a large split."""
        if n is None or n >= len(self):
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False))
        return replace(self, images=self.images[keep], targets=self.targets[keep],
                       image_names=self.image_names[keep], votes=self.votes[keep])


def label_split(split: FerplusSplit, protocol: str) -> LabeledSplit:
    """Apply a label protocol to a split, dropping unknown/NF/no-agreement images."""
    targets, keep = apply_protocol(split.votes, protocol)
    return LabeledSplit(
        name=split.name,
        protocol=protocol,
        images=split.images[keep],
        targets=targets[keep],
        image_names=split.image_names[keep],
        votes=split.votes[keep],
        dropped=drop_reasons(split.votes, keep),
    )


def _sources(root: Path, layout: str, splits: tuple[str, ...]) -> list[Path]:
    if layout == "kaggle":
        return [root / "fer2013.csv", root / "fer2013new.csv"]
    out = []
    for s in splits:
        folder = root / MICROSOFT_FOLDERS[s]
        out += [folder / "label.csv", folder]
    return out


def load_ferplus(
    root: str | Path,
    splits: tuple[str, ...] | list[str] = SPLITS,
    skip_bad: bool = False,
    use_cache: bool = True,
) -> FerplusData:
    """Load FERPlus splits from ROOT (either layout). The first load writes a cache in the
    user's cache directory; later loads of unchanged files read only that cache."""
    root = Path(root).expanduser()
    splits = tuple(splits)
    for s in splits:
        if s not in SPLITS:
            raise ArgumentError(f"unknown split {s!r}; expected one of {', '.join(SPLITS)}")
    layout = detect_layout(root)
    key = cache.cache_key(root, _sources(root, layout, splits),
                          {"splits": splits, "skip_bad": skip_bad, "layout": layout})
    path = cache.cache_path(key)
    if use_cache and (hit := cache.load(path)) is not None:
        arrays, meta = hit
        return FerplusData(
            root=root, layout=layout, from_cache=True,
            splits={s: FerplusSplit(s, arrays[f"{s}_images"], arrays[f"{s}_votes"],
                                    arrays[f"{s}_names"]) for s in splits},
            report=LoadReport.from_dict(meta["report"]),
        )

    report = LoadReport()
    if layout == "kaggle":
        everything = read_kaggle(root, skip_bad=skip_bad, report=report)
        loaded = {s: everything[s] for s in splits}
    else:
        loaded = {s: read_microsoft_split(root, s, skip_bad=skip_bad, report=report)
                  for s in splits}
    for item in report.converted[:5]:
        log.warning("%s", item)
    if len(report.converted) > 5:
        log.warning("... and %d more images converted", len(report.converted) - 5)
    if use_cache:
        arrays = {}
        for s, data in loaded.items():
            arrays |= {f"{s}_images": data.images, f"{s}_votes": data.votes,
                       f"{s}_names": data.image_names}
        try:
            cache.save(path, arrays, {"report": report.to_dict()})
        except OSError as exc:  # a read-only cache dir must not stop the load
            log.warning("could not write cache %s: %s", path, exc)
    return FerplusData(root=root, layout=layout, splits=loaded, report=report)


def summarize(data: FerplusData, protocol: str = "majority") -> dict:
    """Images per class per split under a protocol, and what was dropped and why."""
    out: dict = {"root": str(data.root), "layout": data.layout, "protocol": protocol,
                 "splits": {}}
    for name, split in data.splits.items():
        labeled = label_split(split, protocol)
        per_class = np.bincount(labeled.labels, minlength=len(EMOTIONS))
        out["splits"][name] = {
            "images": len(split),
            "labeled": len(labeled),
            "per_class": {e: int(n) for e, n in zip(EMOTIONS, per_class, strict=True)},
            "dropped": labeled.dropped,
            "unlabeled_rows": data.report.unlabeled.get(name, 0),
        }
    out["skipped"] = [str(s) for s in data.report.skipped]
    out["converted"] = len(data.report.converted)
    return out
