"""Test-time augmentation modes, shared by evaluation and inference (torch-free, like emotions.py)."""

from __future__ import annotations

from ferkit.errors import ArgumentError

TTA_MODES = ("flip",)


def check_tta(tta: str | None) -> str | None:
    """None/"none" -> None; "flip" -> "flip"; anything else is an ArgumentError naming --tta."""
    if tta is None or tta == "none":
        return None
    if tta not in TTA_MODES:
        raise ArgumentError(f"--tta {tta!r} is not supported; expected one of none, {', '.join(TTA_MODES)}")
    return tta
