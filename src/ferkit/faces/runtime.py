"""ONNX Runtime sessions for the detectors' networks: one place for their settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def cpu_session(path: Path, threads: int = 1, memory_arena: bool = True) -> Any:
    """An InferenceSession on the CPU with `threads` intra-op threads, one inter-op thread and only
    errors logged. `memory_arena=False` for networks fed many input sizes (the arena would keep the
    largest peak for good). onnxruntime is imported here, so that ferkit.faces imports without it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = memory_arena
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
