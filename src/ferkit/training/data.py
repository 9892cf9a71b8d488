"""The FERPlus DataModule: every split held as one uint8 tensor; a batch is one indexing op."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ferkit.data import LabeledSplit, label_split, load_ferplus
from ferkit.errors import DataError

log = logging.getLogger("ferkit.training")


class InMemoryBatches(Dataset):
    """Indexed by a list of indices: returns the whole batch (images uint8, targets float)."""

    def __init__(self, images: np.ndarray, targets: np.ndarray):
        self.images = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)  # (N,1,48,48)
        self.targets = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        return self.images[idx], self.targets[idx]


class ViewBatches(Dataset):
    """Function-matching distillation (training/distill.py): for each face of a batch one of its K
    stored augmented views, drawn with torch's generator (seeded per epoch by the module, so a resumed
    run draws the same), and the target mixed from the votes and the teacher's answer for that view.
    For views stored as a mix of two faces (`augment.view_mixup`), the votes are mixed alike:
    partners (K, N) the other face, lambdas (K, N) the view's own share."""

    def __init__(self, views: np.ndarray, votes: np.ndarray, teacher: np.ndarray, weight: float,
                 partners: np.ndarray | None = None, lambdas: np.ndarray | None = None):
        self.views = torch.from_numpy(np.ascontiguousarray(views))  # (K, N, 48, 48) uint8
        self.votes = torch.from_numpy(np.ascontiguousarray(votes, dtype=np.float32))  # (N, 8)
        self.teacher = torch.from_numpy(np.ascontiguousarray(teacher, dtype=np.float32))  # (K, N, 8)
        self.weight = weight
        self.partners = None if partners is None else torch.from_numpy(partners.astype(np.int64))  # (K, N)
        self.lambdas = None if lambdas is None else torch.from_numpy(lambdas.astype(np.float32))  # (K, N)

    def __len__(self) -> int:
        return self.views.shape[1]

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        k = torch.randint(self.views.shape[0], (len(idx),))
        votes = self.votes[idx]
        if self.partners is not None:
            lam = self.lambdas[k, idx].unsqueeze(1)
            votes = lam * votes + (1 - lam) * self.votes[self.partners[k, idx]]
        targets = (1 - self.weight) * votes + self.weight * self.teacher[k, idx]
        return self.views[k, idx].unsqueeze(1), targets


def class_balanced_weights(labels: np.ndarray, power: float) -> torch.Tensor:
    """(N,) sampling weights: face i weighs count(its class) ** -power. Power 0 draws faces alike,
    1 draws every class alike, 0.5 is square-root sampling (Mahajan et al. 2018; Kang et al., ICLR
    2020), where a class's share of an epoch goes as sqrt(count)."""
    counts = np.bincount(labels).astype(np.float64)
    return torch.from_numpy(counts[labels] ** -power)


def sqrt_balanced_weights(labels: np.ndarray) -> torch.Tensor:
    """Square-root sampling, what `class_balance=sampling` trains with. Full balance would show each
    of FERPlus's ~100 contempt faces ~30 times an epoch."""
    return class_balanced_weights(labels, 0.5)


def _rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of indices; the shuffle depends only on (seed, epoch), so a resumed run sees the
    same batches as an uninterrupted one. Lightning calls `set_epoch` each epoch.

    Under DDP (`--devices N --strategy ddp`) each process takes every N-th index of the shuffled
    order, the same count for all (the remainder is dropped), so the processes split an epoch
    between them; validation (no shuffle) is not split: every process scores the whole set.

    With `weights` (class-balanced sampling), a shuffled epoch is n faces drawn with replacement,
    face i with probability proportional to weights[i], instead of a permutation."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False,
                 weights: torch.Tensor | None = None):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.drop_last = drop_last
        self.weights = weights
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=g).tolist()
        else:
            order = torch.randperm(self.n, generator=g).tolist()
        rank, world = _rank_and_world()
        return order[rank:self.n - self.n % world:world] if world > 1 else order

    def __iter__(self):
        order = self._order()
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            if self.drop_last and len(batch) < self.batch_size:
                return
            yield batch

    def __len__(self) -> int:
        _, world = _rank_and_world()
        n = self.n // world if self.shuffle else self.n
        full, rest = divmod(n, self.batch_size)
        return full if self.drop_last or not rest else full + 1


@dataclass
class SplitData:
    train: LabeledSplit
    valid: LabeledSplit


class FerplusDataModule(L.LightningDataModule):
    def __init__(self, root: str, protocol: str, batch_size: int, seed: int = 0,
                 eval_batch_size: int = 512, skip_bad: bool = False):
        super().__init__()
        self.root, self.protocol, self.skip_bad = root, protocol, skip_bad
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.train_split: LabeledSplit | None = None
        self.valid_split: LabeledSplit | None = None
        self.train_views: ViewBatches | None = None  # set for function-matching distillation
        self.balanced_sampling = False  # draw each epoch by square-root class-balanced sampling

    def setup(self, stage: str | None = None) -> None:
        if self.train_split is not None:
            return
        data = load_ferplus(self.root, splits=("train", "valid"), skip_bad=self.skip_bad)
        for item in data.report.skipped:
            log.warning("skipped (--skip-bad): %s", item)
        self.train_split = label_split(data["train"], self.protocol)
        self.valid_split = label_split(data["valid"], self.protocol)
        for split in (self.train_split, self.valid_split):
            if len(split) == 0:  # Lightning would fail later with "val_loss not found"
                raise DataError(f"{self.root}: the {split.name} split has no images under protocol "
                                f"{self.protocol!r} (read: {len(data[split.name].images):,} images; dropped: "
                                f"{split.dropped}); training needs both train and valid")

    def class_frequencies(self) -> np.ndarray:
        assert self.train_split is not None
        return self.train_split.targets.sum(axis=0) / len(self.train_split)

    def _loader(self, split: LabeledSplit, batch_size: int, shuffle: bool,
                dataset: Dataset | None = None, weights: torch.Tensor | None = None) -> DataLoader:
        dataset = dataset if dataset is not None else InMemoryBatches(split.images, split.targets)
        # drop a ragged last training batch of 1, which BatchNorm cannot normalise
        sampler = EpochBatchSampler(len(dataset), batch_size, shuffle, self.seed,
                                    drop_last=shuffle and len(dataset) % batch_size == 1, weights=weights)
        return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        assert self.train_split is not None
        weights = sqrt_balanced_weights(self.train_split.labels) if self.balanced_sampling else None
        return self._loader(self.train_split, self.batch_size, shuffle=True, dataset=self.train_views,
                            weights=weights)

    def val_dataloader(self) -> DataLoader:
        assert self.valid_split is not None
        return self._loader(self.valid_split, self.eval_batch_size, shuffle=False)
