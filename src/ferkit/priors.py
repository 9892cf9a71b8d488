"""Class-prior control: re-weight a model's probabilities for material whose emotions are
distributed differently from FERPlus's (torch-free, like tta.py).

A model trained on FERPlus outputs the crowd's posterior with FERPlus's class prior built in: 34% of
its training faces are neutral and under 1% contempt. That prior suits web photos like FER2013's and
under-calls the rarer emotions on posed or acted material (lab stimuli, actors), where every emotion
is about equally frequent. By Bayes' rule a model's posterior moves to another prior by

    p'(y | x)  ∝  p(y | x) * (target(y) / train(y)) ** strength

(a logit adjustment, Menon et al., ICLR 2021). `strength` 1 is the exact shift for a calibrated
model; the shipped value was chosen on FERPlus Valid and the two dev sets (docs/results/README.md,
"Class priors").

Modes (`resolve_prior`):
- "ferplus": the probabilities as trained (no change);
- "uniform": every emotion equally likely a priori;
- "neutral:S": FERPlus's prior with neutral S times as frequent, applied in full, i.e. neutral's
  probability times S, renormalised. Material where fewer faces are neutral than among FERPlus's
  crowd-labelled web photos; the crowd calls a subtle expression "neutral";
- 8 numbers (or "a,b,c,...") in EMOTIONS order: the user's own expected class frequencies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ferkit.emotions import EMOTIONS
from ferkit.errors import ArgumentError

# Mean of the crossentropy-protocol vote distributions over FERPlus Train (27,947 faces), EMOTIONS
# order: the prior every bundled model was trained under (tests/test_priors.py checks it on the data).
FERPLUS_TRAIN_PRIOR: tuple[float, ...] = (0.3373, 0.26906, 0.12427, 0.13684, 0.08682, 0.00851, 0.02832,
                                          0.00887)
# How far a non-FERPlus prior is applied (1 = the full Bayes shift). Chosen on FERPlus Valid and the
# dev sets by bench/experiments/prior_strength.py (docs/results/README.md, "Class priors").
PRIOR_STRENGTH = 0.75

PriorSpec = str | Sequence[float] | np.ndarray | None


@dataclass(frozen=True)
class ClassPrior:
    """A target class prior and how strongly it replaces FERPlus's."""

    name: str  # "ferplus", "uniform", "neutral:S" or "custom"
    target: tuple[float, ...]  # 8 frequencies in EMOTIONS order, summing to 1
    strength: float = PRIOR_STRENGTH

    @property
    def weights(self) -> np.ndarray:
        """Per-class multipliers (8,) applied to the model's probabilities."""
        if self.name == "ferplus":
            return np.ones(len(EMOTIONS), dtype=np.float64)
        ratio = np.asarray(self.target, dtype=np.float64) / np.asarray(FERPLUS_TRAIN_PRIOR)
        return ratio ** self.strength

    def apply(self, proba: np.ndarray) -> np.ndarray:
        """(N, 8) probabilities under FERPlus's prior -> (N, 8) under this one (rows renormalised)."""
        proba = np.asarray(proba)
        if self.name == "ferplus" or len(proba) == 0:
            return proba
        # in log space: weights or probabilities near the float limits never make 0/0 or inf/inf
        with np.errstate(divide="ignore"):
            logits = np.log(proba.astype(np.float64)) + np.log(self.weights)
        logits -= logits.max(axis=1, keepdims=True)
        adjusted = np.exp(logits)
        return (adjusted / adjusted.sum(axis=1, keepdims=True)).astype(proba.dtype)

    def to_dict(self) -> dict[str, Any]:
        """What metrics.json and the faces JSON record about the prior used."""
        out: dict[str, Any] = {"name": self.name}
        if self.name != "ferplus":
            out["target"] = [round(float(t), 6) for t in self.target]
            out["strength"] = self.strength
        return out

    def __str__(self) -> str:
        return self.name if self.name != "custom" else ",".join(f"{t:.3g}" for t in self.target)


def neutral_prior(scale: float) -> ClassPrior:
    """FERPlus's training prior with neutral's frequency times `scale`, renormalised, at full
    strength: the model's neutral probability times `scale`, the others unchanged, renormalised."""
    if not np.isfinite(scale) or scale <= 0:
        raise ArgumentError(f"--prior neutral:{scale:g}: the scale must be a positive number "
                            "(0.7: neutral 0.7 times as likely as the model says)")
    target = np.asarray(FERPLUS_TRAIN_PRIOR, dtype=np.float64)
    target[EMOTIONS.index("neutral")] *= scale
    return ClassPrior(f"neutral:{scale:g}", tuple(float(t) for t in target / target.sum()), strength=1.0)


def resolve_prior(spec: PriorSpec | ClassPrior) -> ClassPrior:
    """None/"ferplus" -> as trained; "uniform"; "neutral:S" (neutral_prior); or 8 non-negative
    numbers (a list, an array or a comma-separated string) in EMOTIONS order, normalised to sum to 1.
    Anything else is an ArgumentError naming --prior."""
    if isinstance(spec, ClassPrior):
        return spec
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "ferplus"):
        return ClassPrior("ferplus", FERPLUS_TRAIN_PRIOR)
    if isinstance(spec, str) and spec.strip().lower() == "uniform":
        return ClassPrior("uniform", tuple([1 / len(EMOTIONS)] * len(EMOTIONS)))
    if isinstance(spec, str) and spec.strip().lower().startswith("neutral:"):
        try:
            scale = float(spec.strip().split(":", 1)[1])
        except ValueError:
            raise ArgumentError(f"--prior {spec.strip()}: expected neutral:S with S a number, e.g. "
                                "neutral:0.7") from None
        return neutral_prior(scale)
    if isinstance(spec, str):
        if "," not in spec:
            raise ArgumentError(f"--prior {spec!r}: expected ferplus, uniform, neutral:S, or "
                                f"{len(EMOTIONS)} comma-separated frequencies in the order "
                                f"{','.join(EMOTIONS)}")
        try:
            spec = [float(part) for part in spec.split(",")]
        except ValueError:
            raise ArgumentError(f"--prior {spec!r}: the frequencies must be numbers") from None
    values = np.asarray(spec, dtype=np.float64).ravel()
    if values.shape != (len(EMOTIONS),):
        raise ArgumentError(f"--prior: expected {len(EMOTIONS)} frequencies ({', '.join(EMOTIONS)}), "
                            f"got {values.size}")
    if not np.all(np.isfinite(values)) or (values <= 0).any():
        raise ArgumentError("--prior: every frequency must be a positive finite number (an emotion "
                            "with frequency 0 could never be predicted)")
    values = values / values.max()  # first, so that a sum of huge frequencies cannot overflow
    if (values < 1e-12).any():
        raise ArgumentError("--prior: the frequencies span more than 12 orders of magnitude; an emotion "
                            "that rare could never be predicted")
    return ClassPrior("custom", tuple(float(v) for v in values / values.sum()))
