"""Where a run computes and in what precision: the one home for device decisions.

Every command that takes ``--device`` resolves it here (``resolve_device``), so a missing
GPU or a GPU index past the last one fails with the same one-line error everywhere; what
a recipe's ``amp`` means on a device (``amp_dtype``, ``precision_name``) and the autocast
region that applies it (``autocast``) live beside it, as does the torch thread pool's
size. The CPUs this process may use are counted in ``runners.cpus`` (torch-free: it runs
before torch loads); this module applies that count to torch.
"""

from __future__ import annotations

import contextlib
import re
from functools import cache

import torch

from runners.cpus import cpu_shares, usable_cpus
from searchspace.errors import UsageError

_DEVICE = re.compile(r"(cpu|cuda)(?::(\d+))?")


def size_torch_threads() -> int:
    """Cap torch's intra-op pool at the CPUs this process may use (``runners.cpus``): torch
    counts the machine's CPUs, not a container's quota. Returns the pool size."""
    usable = usable_cpus()
    if torch.get_num_threads() > usable:
        torch.set_num_threads(usable)
    return torch.get_num_threads()


# every command imports this module (directly or through runners.env) before it computes
size_torch_threads()


def cuda_available() -> bool:
    """A usable CUDA device is present: the one test behind every ``--device cuda`` check."""
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


def resolve_device(device: str | torch.device, *, local_rank: int = 0) -> torch.device:
    """``--device`` (cpu, cuda or cuda:N) as a usable ``torch.device``, or a one-line
    ``UsageError`` saying why not. A bare ``cuda`` means ``cuda:<local_rank>``: device 0,
    or a distributed process's own GPU."""
    text = str(device)
    match = _DEVICE.fullmatch(text)
    if match is None:
        raise UsageError(f"--device {text}: expected cpu, cuda or cuda:N")
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        if index not in (None, "0"):
            raise UsageError(f"--device {text}: expected cpu, cuda or cuda:N")
        return torch.device("cpu")
    if not cuda_available():
        raise UsageError(f"--device {text}: no CUDA device is available here")
    n = torch.cuda.device_count()
    i = local_rank if index is None else int(index)
    if i >= n:
        have = "1 CUDA device here (0)" if n == 1 else f"{n} CUDA devices here (0-{n - 1})"
        raise UsageError(f"--device {text}: only {have}")
    return torch.device("cuda", i)


@cache
def cpu_has_native_bf16() -> bool:
    """oneDNN has bf16 kernels for this CPU (AVX-512 or newer). Without them a bf16
    convolution runs reference code: a V2 training step under bf16 autocast took 11x as
    long as in fp32 on an AVX2-only EPYC (8.6 s against 0.8 s, batch 8 at 128x256)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # the probe is private: be conservative
        return bool(torch.cpu._is_avx512_bf16_supported())


def amp_dtype(device: torch.device | str) -> torch.dtype | None:
    """What a recipe's ``amp`` runs in on ``device``: fp16 on CUDA (with a grad scaler),
    bf16 on a CPU with native bf16 kernels, None (plain fp32) on a CPU without them,
    where bf16 would be an order of magnitude slower rather than faster."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else None


def precision_name(device: torch.device | str, amp: bool) -> str:
    """ "fp16", "bf16" or "fp32": the precision a run with ``amp`` actually used (records
    keep it, since the same recipe means bf16 on one CPU and fp32 on another)."""
    dtype = amp_dtype(device) if amp else None
    return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32")


def autocast(
    device: torch.device | str,
    enabled: bool,
    dtype: torch.dtype | None = None,
    *,
    cuda_graph: bool = False,
) -> contextlib.AbstractContextManager:
    """Mixed precision on ``device``: ``dtype`` when given (a profile's ``--dtype``), else
    what a recipe's ``amp`` means there (``amp_dtype``); a no-op when not ``enabled`` or
    when that is fp32. ``cuda_graph``: for a region captured in a CUDA graph, where the
    autocast weight cache must be off (cached casts would escape the capture)."""
    if not enabled:
        return contextlib.nullcontext()
    dtype = dtype if dtype is not None else amp_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(
        device_type=torch.device(device).type, dtype=dtype, cache_enabled=not cuda_graph
    )


def task_devices(tasks: int, device: str) -> list[tuple[str, list[int]]]:
    """(device, CPUs) for each of ``tasks`` processes a launcher starts side by side on
    this machine: one GPU each, round robin, with an even share of the CPUs to feed it,
    when ``device`` is CUDA; otherwise an even share of the usable CPUs each
    (``runners.cpus.cpu_shares``)."""
    shares = cpu_shares(tasks)
    if torch.device(device).type != "cuda":
        return [("cpu", share) for share in shares]
    resolve_device(device)
    return [(f"cuda:{i % gpu_count()}", share) for i, share in enumerate(shares)]


def gpu_count() -> int:
    """CUDA devices this process sees (0 without CUDA)."""
    return torch.cuda.device_count() if cuda_available() else 0
