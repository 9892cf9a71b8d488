"""Adapt a model to the user's own material from a few labelled photos: `ferkit adapt` (docs/adapt.md).

New last layers on the frozen networks' pooled features, started from the shipped ones and pulled
back toward them, class-balanced, with flip built in and a temperature fitted on held-out folds;
validated by cross-validation that keeps each person on one side when the photos say who they are.
"""

from ferkit.adaptation.defaults import DEFAULT_AUGMENT, DEFAULT_L2

__all__ = ["DEFAULT_AUGMENT", "DEFAULT_L2", "AdaptResult", "adapt"]


def __getattr__(name: str):
    # Lazy, as ferkit's own __init__: the command line imports the defaults without torch.
    if name in ("adapt", "AdaptResult"):
        from ferkit.adaptation import core

        return getattr(core, name)
    raise AttributeError(f"module 'ferkit.adaptation' has no attribute {name!r}")
