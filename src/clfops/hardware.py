"""Threads and numeric precision chosen for the machine at hand.

bf16 autocast was ~3x faster than fp32 on an AVX-512-BF16 EPYC and 5x *slower* on an AVX2 one (emulated
bf16), so `precision=auto` picks bf16-mixed only where the CPU has native bf16 (or on a GPU).
"""

from __future__ import annotations

import os

import torch


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def configure_threads(requested: int | None, processes: int = 1) -> int:
    """Intra-op threads = the cores this process may use, shared out between `processes` (DDP ranks)."""
    threads = requested or max(1, available_cores() // max(1, processes))
    torch.set_num_threads(threads)
    return threads


def cpu_has_native_bf16() -> bool:
    capability = torch.backends.cpu.get_cpu_capability()  # "AVX2", "AVX512", "AMX", ...
    if capability not in ("AVX512", "AMX") and "AMX" not in capability:
        return False
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str | int, accelerator: str = "auto") -> str:
    """`auto` -> "bf16-mixed" on a GPU or a CPU with native bf16, else "32-true"; others pass through."""
    if str(precision) != "auto":
        return str(precision)
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def cpu_description() -> str:
    """'AMD EPYC (AVX512, native bf16)': what every benchmark figure is reported beside."""
    try:
        lines = open("/proc/cpuinfo").read().splitlines()  # noqa: SIM115 — tiny file, read once
    except OSError:
        lines = []
    name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "unknown CPU")
    bf16 = ", native bf16" if cpu_has_native_bf16() else ""
    return f"{name} ({torch.backends.cpu.get_cpu_capability()}{bf16})"
