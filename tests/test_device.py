"""``--device`` is resolved in one place: every command refuses the same unusable devices
with the same one line, and autocast follows one rule."""

from __future__ import annotations

import pytest
import torch

from runners import device
from searchspace.errors import UsageError


def _gpus(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Pretend this machine has ``n`` CUDA devices (only the counting is faked)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)


def test_cpu_resolves_everywhere() -> None:
    assert device.resolve_device("cpu") == torch.device("cpu")
    assert device.resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "mps", "cpu:1", "cuda:-1", ""])
def test_a_malformed_device_is_a_usage_error(bad: str) -> None:
    with pytest.raises(UsageError, match=r"expected cpu, cuda or cuda:N"):
        device.resolve_device(bad)


def test_cuda_without_a_gpu_names_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    _gpus(monkeypatch, 0)
    assert not device.cuda_available()
    for asked in ("cuda", "cuda:0", torch.device("cuda", 1)):
        with pytest.raises(UsageError) as err:
            device.resolve_device(asked)
        assert str(err.value) == f"--device {asked}: no CUDA device is available here"


def test_cuda_index_past_the_last_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _gpus(monkeypatch, 2)
    assert device.resolve_device("cuda") == torch.device("cuda", 0)
    assert device.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert device.resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    with pytest.raises(UsageError) as err:
        device.resolve_device("cuda:3")
    assert str(err.value) == "--device cuda:3: only 2 CUDA devices here (0-1)"
    _gpus(monkeypatch, 1)
    with pytest.raises(UsageError, match=r"only 1 CUDA device here \(0\)$"):
        device.resolve_device("cuda", local_rank=1)


def test_autocast_takes_a_dtype_or_the_amp_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    linear = torch.nn.Linear(4, 4)
    x = torch.ones(2, 4)
    with device.autocast("cpu", True, torch.bfloat16):  # an explicit dtype wins
        assert linear(x).dtype == torch.bfloat16
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    with device.autocast("cpu", True):  # amp on a CPU without bf16 kernels: fp32
        assert linear(x).dtype == torch.float32
    with device.autocast("cpu", False, torch.bfloat16):  # disabled: no-op
        assert linear(x).dtype == torch.float32
    with device.autocast("cpu", True, torch.bfloat16, cuda_graph=True):
        assert not torch.is_autocast_cache_enabled()  # casts must not outlive a graph capture
    with device.autocast("cpu", True, torch.bfloat16):
        assert torch.is_autocast_cache_enabled()
