"""Training curves: accuracy and loss, train vs validation (the seed's two plots)."""

from __future__ import annotations

from matplotlib.figure import Figure

from ferkit.evaluation.plots import new_figure


def plot_history(history: list[dict], title: str = "") -> Figure:
    """Accuracy and loss per epoch, train and validation side by side."""
    epochs = [h["epoch"] for h in history]
    fig = new_figure(11, 4)
    ax_acc, ax_loss = fig.subplots(1, 2)
    for ax, key, label in ((ax_acc, "acc", "accuracy"), (ax_loss, "loss", "loss")):
        ax.plot(epochs, [h.get(f"train_{key}") for h in history], "o-", label="train", ms=3)
        ax.plot(epochs, [h.get(f"val_{key}") for h in history], "o-", label="validation", ms=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{title} {label}".strip())
        ax.grid(alpha=0.3)
        ax.legend()
    return fig
