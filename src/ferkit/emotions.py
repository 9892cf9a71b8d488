"""The label vocabulary shared by every part of ferkit."""

from ferkit.errors import ArgumentError

# The 8 FERPlus emotions in FERPlus order: every probability vector in ferkit uses this order.
EMOTIONS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
)

# The 10 vote columns of FERPlus label files: the emotions, then "unknown" and "NF" (not a face).
VOTE_COLUMNS: tuple[str, ...] = (*EMOTIONS, "unknown", "NF")
UNKNOWN_INDEX = 8
NOT_A_FACE_INDEX = 9

SPLITS: tuple[str, ...] = ("train", "valid", "test")


def emotion_index(name: str) -> int:
    """Index of an emotion name in EMOTIONS; a clear error for an unknown name."""
    try:
        return EMOTIONS.index(name.strip().lower())
    except ValueError:
        raise ArgumentError(f"unknown emotion {name!r}; expected one of {', '.join(EMOTIONS)}") from None
