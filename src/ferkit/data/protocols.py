"""FERPlus label protocols: 10 vote counts per image -> a target over the 8 emotions.

Each protocol follows Barsoum et al. 2016 and Microsoft's reference reader (FERPlus
`ferplus.py::_process_data`): votes of 1 are outliers and are zeroed first (every protocol
but `argmax` and `all_votes`), the protocol builds a distribution over all 10 columns, and an image whose
distribution peaks at "unknown" or "NF" (ties go to the lower index) is dropped. Kept
targets are renormalised over the 8 emotions.

Every protocol function maps votes (N, 10) to `(targets (N, 8) float32, keep (N,) bool)`;
rows with `keep == False` have all-zero targets.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ferkit.emotions import EMOTIONS, UNKNOWN_INDEX
from ferkit.errors import ArgumentError

N_EMOTIONS = len(EMOTIONS)

# Protocols whose target is a distribution (train with cross-entropy to it).
SOFT_PROTOCOLS = ("crossentropy", "probability", "multi_target", "all_votes")


def _without_outliers(votes: np.ndarray) -> np.ndarray:
    """Zero every count of 1: a single dissenting annotator is treated as noise."""
    cleaned = np.asarray(votes, dtype=np.float64).copy()
    cleaned[cleaned <= 1] = 0.0
    return cleaned


def _finish(dist10: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop rows peaking at unknown/NF (or empty), renormalise the rest over the 8 emotions."""
    total = dist10.sum(axis=1)
    keep = (total > 0) & (dist10.argmax(axis=1) < UNKNOWN_INDEX)
    emotions = dist10[:, :N_EMOTIONS]
    emotion_total = emotions.sum(axis=1, keepdims=True)
    keep &= emotion_total[:, 0] > 0
    targets = np.zeros_like(emotions, dtype=np.float32)
    targets[keep] = emotions[keep] / emotion_total[keep]
    return targets, keep


def majority(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-hot of the top emotion when it holds more than half of the non-outlier votes."""
    cleaned = _without_outliers(votes)
    total = cleaned.sum(axis=1)
    top = cleaned.argmax(axis=1)
    top_votes = cleaned[np.arange(len(cleaned)), top]
    dist10 = np.zeros_like(cleaned)
    has_majority = (top_votes > 0.5 * total) & (total > 0)
    dist10[np.flatnonzero(has_majority), top[has_majority]] = 1.0
    return _finish(dist10)


def _crossentropy_row(raw: np.ndarray) -> np.ndarray:
    """The reference reader's loop for one row (kept as a loop: its tie rules are sequential)."""
    raw = raw.copy()
    total = raw.sum()
    emotion = np.zeros_like(raw)
    covered, count, valid = 0.0, 0, True
    while covered < 0.75 * total and count < 3 and valid:
        peak = raw.max()
        for i in range(len(raw)):
            if raw[i] == peak:
                emotion[i] = peak
                raw[i] = 0
                covered += emotion[i]
                count += 1
                if i >= UNKNOWN_INDEX:  # unknown/NF tied with the peak: stop here
                    valid = False
                    if emotion.sum() > peak:  # emotions came before it: keep those
                        emotion[i] = 0
                        count -= 1
                    break
    if emotion.sum() <= 0.5 * total or count > 3:
        return np.zeros_like(raw)  # too spread out: discarded
    return emotion


def crossentropy(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soft labels: the top emotions covering >= 75% of votes (at most 3), as a distribution."""
    cleaned = _without_outliers(votes)
    dist10 = np.stack([_crossentropy_row(row) for row in cleaned]) if len(cleaned) else cleaned
    return _finish(dist10)


def probability(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The crossentropy distribution; training samples a one-hot label from it at each draw."""
    return crossentropy(votes)


def multi_target(votes: np.ndarray, threshold: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Every emotion with at least 30% of the votes is a correct answer; discard if <= 50%."""
    cleaned = _without_outliers(votes)
    total = cleaned.sum(axis=1, keepdims=True)
    dist10 = np.where(cleaned >= threshold * total, cleaned, 0.0)
    dist10[dist10.sum(axis=1) <= 0.5 * total[:, 0]] = 0.0
    return _finish(dist10)


def all_votes(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every emotion vote counts: the raw vote shares, no outlier removal and no top-3 cut. The
    reference rules discard about half of disgust's and contempt's votes (a quarter of fear's) as
    single dissenters, against 3-4% of neutral's (bench/experiments/minority_votes.py); this keeps that
    evidence.
    Dropped, as everywhere, when unknown or NF holds the most votes."""
    return _finish(np.asarray(votes, dtype=np.float64))


def argmax(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plain argmax of the vote counts, ties to the lower index; dropped if unknown/NF wins."""
    counts = np.asarray(votes, dtype=np.float64)
    dist10 = np.zeros_like(counts)
    has_votes = counts.sum(axis=1) > 0
    dist10[np.flatnonzero(has_votes), counts[has_votes].argmax(axis=1)] = 1.0
    return _finish(dist10)


PROTOCOLS: dict[str, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "majority": majority,
    "crossentropy": crossentropy,
    "probability": probability,
    "multi_target": multi_target,
    "all_votes": all_votes,
    "argmax": argmax,
}


def apply_protocol(votes: np.ndarray, protocol: str) -> tuple[np.ndarray, np.ndarray]:
    """Targets (N, 8) and keep mask (N,) of `votes` under the named protocol."""
    try:
        fn = PROTOCOLS[protocol]
    except KeyError:
        raise ArgumentError(
            f"unknown label protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}"
        ) from None
    return fn(np.asarray(votes).reshape(-1, 10))


def drop_reasons(votes: np.ndarray, keep: np.ndarray) -> dict[str, int]:
    """Why dropped rows were dropped: the vote peak (after outliers) was NF, unknown, or no
    emotion reached the protocol's agreement threshold."""
    cleaned = _without_outliers(votes)[~keep]
    raw = np.asarray(votes)[~keep]
    peak = np.where(cleaned.sum(axis=1) > 0, cleaned.argmax(axis=1), raw.argmax(axis=1))
    not_face = int((peak == UNKNOWN_INDEX + 1).sum())
    unknown = int((peak == UNKNOWN_INDEX).sum())
    return {
        "not a face (NF)": not_face,
        "unknown": unknown,
        "no agreement": int(len(peak) - not_face - unknown),
    }
