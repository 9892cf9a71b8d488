"""FERPlus data: files -> in-memory splits -> labels under a protocol.

Names are imported on first use (PEP 562): the command line reads the protocol names without loading
the dataset code."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

_WHERE = {
    "FerplusData": "dataset", "LabeledSplit": "dataset", "label_split": "dataset", "load_ferplus": "dataset",
    "summarize": "dataset", "FerplusSplit": "ferplus", "LoadReport": "ferplus", "Skipped": "ferplus",
    "PROTOCOLS": "protocols", "SOFT_PROTOCOLS": "protocols", "apply_protocol": "protocols",
}
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

if TYPE_CHECKING:
    from ferkit.data.dataset import FerplusData, LabeledSplit, label_split, load_ferplus, summarize
    from ferkit.data.ferplus import FerplusSplit, LoadReport, Skipped
    from ferkit.data.protocols import PROTOCOLS, SOFT_PROTOCOLS, apply_protocol


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'ferkit.data' has no attribute {name!r}")
    return getattr(import_module(f"ferkit.data.{_WHERE[name]}"), name)
