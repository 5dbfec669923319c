"""The environment a measurement was taken in, recorded beside every number.

Absolute times mean nothing without the machine, the library versions and the global
switches that change kernels (TF32, cudnn.benchmark, threads), so every profile carries
this dictionary in its printed header and its JSON, and every stored record in its
``env``. One probe, one set of key names for both. (Profile JSON written before the two
were merged named two of them ``cpu_model`` and ``load_average_1min``; records always
used ``cpu`` and ``load_avg_1m``, which are the names kept.)
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import sys
from functools import cache
from typing import Any

import torch

from runners.cpus import usable_cpus
from runners.device import cpu_has_native_bf16, cuda_available  # sizes torch's threads


@cache
def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what platform reports."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: str = "cpu") -> str:
    """What a measurement ran on, by name: the GPU's, or the CPU's model name."""
    if str(device).startswith("cuda") and cuda_available():
        return torch.cuda.get_device_name(torch.device(device).index or 0)
    return cpu_model()


def load_avg_1m() -> float | None:
    """The 1-minute load average: CPU timings taken while others compete are unreliable."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def environment(device: str = "cpu") -> dict[str, Any]:
    """Everything that can change a timing or a count, as plain JSON-able values."""
    cudnn_version = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    env: dict[str, Any] = {
        "device": device,
        "device_name": cpu_model(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "hostname": socket.gethostname(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        # spinning OpenMP threads on a shared CPU can slow torch several-fold; see below
        "omp_wait_policy_env": os.environ.get("OMP_WAIT_POLICY"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": _module_version("numpy"),
        "cuda": torch.version.cuda,
        "cudnn": cudnn_version,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "load_avg_1m": load_avg_1m(),
    }
    if device.startswith("cuda") and cuda_available():
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        env["device_name"] = props.name
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["gpu_capability"] = f"{props.major}.{props.minor}"
        env["cuda_driver"] = _cuda_driver_version()
    env["onnxruntime"] = _package_version("onnxruntime")
    return env


def _module_version(name: str) -> str | None:
    module = sys.modules.get(name)
    return getattr(module, "__version__", None) if module is not None else _package_version(name)


def _package_version(name: str) -> str | None:
    """Installed version without importing the package (onnxruntime takes a while)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cuda_driver_version() -> int | None:
    try:
        return int(torch._C._cuda_getDriverVersion())  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        return None


def format_environment(env: dict[str, Any]) -> str:
    """One line for a printed report's header, plus a warning when the CPU is contended."""
    line = (
        f"device: {env['device']} ({env['device_name']}), torch {env['torch']}, "
        f"threads {env['torch_threads']}"
    )
    if env["device"].startswith("cuda"):
        line += (
            f", CUDA {env['cuda']}, cuDNN {env['cudnn']}, TF32 matmul/cudnn "
            f"{env['tf32_matmul']}/{env['tf32_cudnn']}, cudnn.benchmark {env['cudnn_benchmark']}"
        )
    else:
        line += f", CPU: {env['cpu']} ({env['cpu_count']} logical CPUs)"
    load, cpus = env.get("load_avg_1m"), env.get("usable_cpus") or env.get("cpu_count") or 1
    if load is not None:
        line += f", load average {load}"
    if env.get("omp_wait_policy_env"):
        line += f", OMP_WAIT_POLICY={env['omp_wait_policy_env']}"
    if load is not None and load > cpus and not env["device"].startswith("cuda"):
        # Measured here: bisenetv2 at 512x1024 took 2.9 s with 2 spinning threads against
        # 0.7 s with OMP_WAIT_POLICY=PASSIVE or 1 thread, while other jobs held the CPUs.
        line += (
            f"\nwarning: load average {load} on {cpus} CPUs: other processes compete for the "
            "CPU, so CPU timings are unreliable (OMP_WAIT_POLICY=PASSIVE or --threads 1 helps)"
        )
    return line
