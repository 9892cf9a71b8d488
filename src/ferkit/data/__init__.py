"""FERPlus data: files -> in-memory splits -> labels under a protocol."""

from ferkit.data.dataset import FerplusData, LabeledSplit, label_split, load_ferplus, summarize
from ferkit.data.ferplus import FerplusSplit, LoadReport, Skipped
from ferkit.data.protocols import PROTOCOLS, SOFT_PROTOCOLS, apply_protocol

__all__ = [
    "PROTOCOLS",
    "SOFT_PROTOCOLS",
    "FerplusData",
    "FerplusSplit",
    "LabeledSplit",
    "LoadReport",
    "Skipped",
    "apply_protocol",
    "label_split",
    "load_ferplus",
    "summarize",
]
