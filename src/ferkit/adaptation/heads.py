"""New last layers for a frozen network: fitted on the user's labelled faces, started from the shipped
layers and pulled back toward them.

The adapted model is the source's member networks with new `fc` layers and flip built in (an
`Ensemble(flip=True)`). Its output, softmax of the mean over members and views of the members'
log-softmax, equals softmax of the mean of the members' logits on the mean of each member's two views'
features, since log-softmax differs from the logits by one constant per face. So all the heads
together are ONE linear map of the concatenated, view-averaged features, fitted jointly here:

    logits(x) = (1 / M) * sum_m (W_m f_m(x) + b_m)

minimising the class-balanced cross-entropy of the user's faces plus (l2 / 2) * ||W - W_shipped||^2
(a Gaussian prior centred on the shipped heads: with few photos the fit stays near what FERPlus
taught, with many it moves as far as the photos say). The loss is convex; L-BFGS solves it.

Classes absent from the user's photos keep the shipped heads' rows and take no part in the softmax
during the fit (the photos say nothing about them, and a softmax over all eight would push them
down just for being absent).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ferkit.emotions import EMOTIONS
from ferkit.errors import ArgumentError

NUM_CLASSES = len(EMOTIONS)
ABSENT = ("shipped", "off")
# The bias that switches a class off: exp(-1e4) is 0 in float32, and 1e4 fits float16 storage.
OFF_BIAS = -1e4


@dataclass
class Heads:
    """One linear head per member network: weight (M, 8, C) and bias (M, 8), float32; the model's
    logits are the members' mean (see the module doc)."""

    weight: np.ndarray
    bias: np.ndarray

    def logits(self, features: np.ndarray) -> np.ndarray:
        """(N, M, 2, C) features (face and mirror) -> (N, 8) logits of the model with flip built in."""
        views = np.asarray(features, dtype=np.float32).mean(axis=2)  # (N, M, C)
        return np.einsum("nmc,mkc->nk", views, self.weight) / len(self.weight) + self.bias.mean(0)

    def scaled(self, temperature: float) -> Heads:
        """The same heads divided by `temperature` (the same answers, other confidences); a class
        switched off (bias OFF_BIAS) stays off at that bias, which float16 storage holds."""
        off = self.bias <= OFF_BIAS
        return Heads(self.weight / temperature, np.where(off, self.bias, self.bias / temperature))


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per-face weights ~ 1 / (count of its class), mean 1: every class present counts equally."""
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=NUM_CLASSES).astype(np.float64)
    weights = 1.0 / counts[labels]
    return (weights / weights.mean()).astype(np.float32)


def fit_heads(features: np.ndarray, labels: np.ndarray, shipped: Heads, *, l2: float,
              max_iter: int = 200) -> Heads:
    """Heads fitted to `features` (N, M, 2, C) and `labels` (N,), started from and regularised toward
    `shipped` with strength `l2` (> 0), class-balanced; rows of classes absent from `labels` stay as
    shipped."""
    if not l2 > 0:
        raise ArgumentError(f"l2 must be > 0, got {l2}")
    labels = np.asarray(labels)
    if len(labels) != len(features):
        raise ArgumentError(f"{len(features)} feature rows for {len(labels)} labels")
    present = np.unique(labels)
    x = torch.from_numpy(np.asarray(features, dtype=np.float32).mean(axis=2))  # (N, M, C)
    members = x.shape[1]
    y = torch.from_numpy(np.searchsorted(present, labels))  # index among the present classes
    w = torch.from_numpy(balanced_weights(labels))
    w0 = torch.from_numpy(np.ascontiguousarray(shipped.weight[:, present], dtype=np.float32))  # (M, K, C)
    # (K,): only the members' mean bias matters to the output
    b0 = torch.from_numpy(np.ascontiguousarray(shipped.bias[:, present].mean(0), dtype=np.float32))
    # Fit the change from the shipped heads: the penalty is then plain weight decay on it.
    delta_w = torch.zeros_like(w0, requires_grad=True)
    delta_b = torch.zeros_like(b0, requires_grad=True)
    base = torch.einsum("nmc,mkc->nk", x, w0) / members + b0  # the shipped logits, fixed
    optimizer = torch.optim.LBFGS([delta_w, delta_b], lr=1, max_iter=max_iter, tolerance_grad=1e-6,
                                  tolerance_change=1e-9, history_size=20, line_search_fn="strong_wolfe")

    def loss_fn() -> torch.Tensor:
        optimizer.zero_grad()
        logits = base + torch.einsum("nmc,mkc->nk", x, delta_w) / members + delta_b
        loss = (F.cross_entropy(logits, y, reduction="none") * w).mean()
        loss = loss + 0.5 * l2 * delta_w.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(loss_fn)
    weight = shipped.weight.astype(np.float32).copy()
    bias = shipped.bias.astype(np.float32).copy()
    weight[:, present] += delta_w.detach().numpy()
    bias[:, present] += delta_b.detach().numpy()[None, :]  # the same shift in every member's bias
    return Heads(weight, bias)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising the class-balanced NLL of softmax(logits / T) against `labels` (convex in
    log T); fitted on held-out logits, so it undoes the fit's over-confidence on its own photos."""
    z = torch.from_numpy(np.asarray(logits, dtype=np.float32))
    y = torch.from_numpy(np.asarray(labels))
    w = torch.from_numpy(balanced_weights(labels))
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (F.cross_entropy(z / log_t.exp(), y, reduction="none") * w).mean()
        loss.backward()
        return loss

    optimizer.step(nll)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def fit_remap(features: np.ndarray, labels: np.ndarray, shipped: Heads, *, strength: float = 10.0,
              max_iter: int = 200) -> Heads:
    """The shipped heads recombined: new logits = A z + c, where z are the shipped model's 8 logits
    (view-averaged) and A (present classes x 8) is fitted class-balanced, with the penalty
    (strength / 2N) * ||A - I||^2 on N faces (centred on the shipped model, as the heads' fit is, so
    that rows of absent classes, kept as shipped, stay on the same scale). As heads: W_m' = A W_m,
    b_m' = A b_m + c. A low-dimensional fit (an 8x8 recalibration of the outputs) that moves whole
    classes, where the posed material's shift is one of confusions between them."""
    labels = np.asarray(labels)
    present = np.unique(labels)
    z = torch.from_numpy(shipped.logits(features).astype(np.float32))  # (N, 8)
    y = torch.from_numpy(np.searchsorted(present, labels))
    w = torch.from_numpy(balanced_weights(labels))
    identity = torch.eye(NUM_CLASSES)[torch.from_numpy(present)]
    a = identity.clone().requires_grad_(True)
    c = torch.zeros(len(present), requires_grad=True)
    penalty = strength / len(labels)
    optimizer = torch.optim.LBFGS([a, c], lr=1, max_iter=max_iter, tolerance_grad=1e-7,
                                  tolerance_change=1e-10, history_size=20, line_search_fn="strong_wolfe")

    def loss_fn() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (F.cross_entropy(z @ a.T + c, y, reduction="none") * w).mean()
        loss = loss + 0.5 * penalty * (a - identity).pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(loss_fn)
    remap = a.detach().numpy()
    weight = shipped.weight.astype(np.float32).copy()
    bias = shipped.bias.astype(np.float32).copy()
    weight[:, present] = np.einsum("kj,mjc->mkc", remap, shipped.weight)
    bias[:, present] = np.einsum("kj,mj->mk", remap, shipped.bias) + c.detach().numpy()[None, :]
    return Heads(weight, bias)


def blend(first: Heads, second: Heads, weight: float = 0.5) -> Heads:
    """Heads whose logits are (1 - weight) * first's + weight * second's (still one linear layer per
    member: the mix of two fits is a fit of the same form)."""
    return Heads((1 - weight) * first.weight + weight * second.weight,
                 (1 - weight) * first.bias + weight * second.bias)


def fit(features: np.ndarray, labels: np.ndarray, shipped: Heads, *, l2: float, remap: float = 0.5,
        absent: str = "shipped") -> Heads:
    """`ferkit adapt`'s fit: the heads of `fit_heads`, blended with weight `remap` (0: none) with the
    shipped heads recombined by `fit_remap`. Classes absent from `labels` keep the shipped heads' rows
    (`absent="shipped"`) or are never answered (`"off"`: material that has none of them)."""
    if absent not in ABSENT:
        raise ArgumentError(f"absent must be one of {', '.join(ABSENT)}, not {absent!r}")
    if not 0 <= remap <= 1:
        raise ArgumentError(f"remap must be in [0, 1], got {remap}")
    heads = fit_heads(features, labels, shipped, l2=l2)
    if remap:
        heads = blend(heads, fit_remap(features, labels, shipped), remap)
    if absent == "off":
        missing = [k for k in range(NUM_CLASSES) if k not in set(np.asarray(labels).tolist())]
        bias = heads.bias.copy()
        bias[:, missing] = OFF_BIAS
        heads = Heads(heads.weight, bias)
    return heads
