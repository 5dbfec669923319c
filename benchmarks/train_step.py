"""Timed BiSeNetV2 training steps at the smoke recipe's batch (8 x 128x256): the job the
CPU benchmarks (layout_bench, sharing_bench) measure. Imports torch but not ``runners``,
so the caller decides the OpenMP settings before torch loads."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from blocks.builder import build_model
from searchspace.presets import parse_spec


def train_seconds(
    spec: str,
    steps: int,
    memory_format: torch.memory_format = torch.channels_last,
    dtype: torch.dtype | None = None,
) -> float:
    """Seconds for ``steps`` steps (forward, backward, SGD) of a freshly built model, after
    two warm-up steps; ``dtype``: the autocast type (None: fp32)."""
    torch.manual_seed(0)
    model = build_model(parse_spec(spec)).train().to(memory_format=memory_format)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(8, 3, 128, 256).contiguous(memory_format=memory_format)
    y = torch.randint(0, 19, (8, 128, 256))

    def step() -> None:
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            out = model(x)
            outs = out if isinstance(out, (list, tuple)) else [out]
            loss = sum(F.cross_entropy(o.float(), y) for o in outs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - t0
