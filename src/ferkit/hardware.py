"""What this CPU computes natively, as Linux reports its flags: the choices that depend on it (bf16
training, int8 inference) read it here."""

from __future__ import annotations

import platform
import re
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str] | None:
    """The CPU's feature flags, or None where they cannot be read (no /proc: macOS, Windows)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    found = re.search(r"^(flags|Features)\s*:(.*)$", text, re.MULTILINE)
    return set(found.group(2).split()) if found else None


def has_native_bf16(cpuinfo: Path = CPUINFO) -> bool:
    """AVX512-BF16 or AMX: bf16 autocast trains 1.7-2.4x faster than fp32 there; elsewhere it is
    emulated, ~10x slower. False where it cannot tell."""
    return bool((cpu_flags(cpuinfo) or set()) & {"avx512_bf16", "amx_bf16"})


def int8_is_exact(cpuinfo: Path = CPUINFO) -> bool:
    """Whether ONNX Runtime's int8 kernels compute exactly with full 8-bit weights on this CPU. An x86
    CPU without VNNI adds pairs of uint8 x int8 products in 16 bits, which saturate (ONNX Runtime's
    documented u8s8 overflow): an 8-bit export changes answers there (the `default` of the time measured
    0.969 agreement with fp32 on FERPlus Valid on an AVX2-only EPYC). ferkit's exports have 7-bit
    weights, exact everywhere; this decides only for older ones. True off x86 and where the flags
    cannot be read."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    flags = cpu_flags(cpuinfo)
    return flags is None or bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def set_torch_threads(threads: int) -> None:
    """PyTorch's process-wide intra-op threads, where PyTorch is installed (the ONNX Runtime path
    runs without it, and takes its threads from each Predictor)."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(threads)
