"""Threads, the device and the numeric precision chosen for the machine at hand.

bf16 autocast was ~3x faster than fp32 on an AVX-512-BF16 EPYC and 5x *slower* on an AVX2 one (emulated
bf16), so `precision=auto` picks bf16-mixed only where the CPU has native bf16. On CUDA (what
`trainer.accelerator=auto` takes whenever a GPU is visible, as Lightning does) it picks bf16-mixed where the GPU
has bf16 (Ampere and later) and 16-mixed (fp16 with Lightning's loss scaling) on older GPUs.
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


def cuda_in_use(accelerator: str) -> bool:
    """Whether Lightning's `trainer.accelerator` puts the run on CUDA: "auto" takes a visible GPU, as "gpu" does."""
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def resolve_precision(precision: str | int, accelerator: str = "auto") -> str:
    """`auto` -> "bf16-mixed" on a GPU with bf16 (else "16-mixed" on a GPU) or a CPU with native bf16, else
    "32-true"; others pass through."""
    if str(precision) != "auto":
        return str(precision)
    if cuda_in_use(accelerator):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def configure_cuda(accelerator: str, deterministic: bool) -> None:
    """On CUDA: cuDNN's autotuner (every training batch has one shape: it picks the fastest convolution algorithm
    once per shape, a few seconds at start), unless the run must be deterministic; and TF32 for fp32 matrix
    products, which PyTorch already allows for cuDNN convolutions (10-bit mantissa products, fp32 sums; the
    bf16/fp16 autocast of `precision=auto` is coarser still). Nothing changes on a CPU run."""
    if not cuda_in_use(accelerator):
        return
    torch.backends.cudnn.benchmark = not deterministic
    torch.set_float32_matmul_precision("high")


def device_name(device: torch.device) -> str:
    """'NVIDIA H200' for a CUDA device, the CPU's description otherwise: what a run records beside its device."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_description()


def cpu_description() -> str:
    """'AMD EPYC (AVX512, native bf16)': what every benchmark figure is reported beside."""
    try:
        lines = open("/proc/cpuinfo").read().splitlines()  # noqa: SIM115 — tiny file, read once
    except OSError:
        lines = []
    name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "unknown CPU")
    bf16 = ", native bf16" if cpu_has_native_bf16() else ""
    return f"{name} ({torch.backends.cpu.get_cpu_capability()}{bf16})"
