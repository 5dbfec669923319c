"""What a recipe's ``amp`` runs in: bf16 only on CPUs with native bf16 kernels (else fp32),
fp16 on CUDA; the precision a run used is recorded, and tables that mix them say so."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from analysis.records import records_to_frame, train_precision
from analysis.tables import build_table, mixed_precision_rows, table_notes
from runners import device
from runners.data.source import DataSource
from runners.train.loop import train
from searchspace.presets import parse_spec
from searchspace.recipes import parse_recipe
from tests.test_analysis import _record

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("native", [True, False])
def test_amp_means_bf16_only_where_the_cpu_has_native_kernels(monkeypatch, native: bool) -> None:
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native)
    assert device.amp_dtype("cpu") == (torch.bfloat16 if native else None)
    assert device.amp_dtype("cuda:0") == torch.float16  # a dtype rule: no GPU needed
    assert device.precision_name("cpu", True) == ("bf16" if native else "fp32")
    assert device.precision_name("cpu", False) == "fp32"
    assert device.precision_name("cuda", True) == "fp16"
    with device.autocast(torch.device("cpu"), True):
        y = torch.nn.Linear(4, 4)(torch.ones(2, 4))
    assert y.dtype == (torch.bfloat16 if native else torch.float32)
    with device.autocast(torch.device("cpu"), False):
        assert torch.nn.Linear(4, 4)(torch.ones(2, 4)).dtype == torch.float32


def test_a_run_records_its_precision_and_a_resume_elsewhere_says_both(
    tiny: DataSource, tmp_path: Path, monkeypatch
) -> None:
    spec = parse_spec("v2:a=0.25,bst=none")
    recipe = parse_recipe(
        "smoke:crop_hw=64+64,batch_size=2,warmup_iters=0,scales=1.0,eval_hw=64+128,"
        "budget_kind=iterations,budget=3,amp=true"
    )
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    plain = train(spec, recipe, tiny, 0, tmp_path / "a", progress=False)
    assert plain.status == "ok" and plain.precision == "fp32"
    # paused on a CPU with bf16 kernels, finished on one without
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    paused = train(spec, recipe, tiny, 0, tmp_path / "b", progress=False, stop_after=1)
    assert paused.status == "paused" and paused.precision == "bf16"
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    resumed = train(spec, recipe, tiny, 0, tmp_path / "b", progress=False)
    assert resumed.status == "ok" and resumed.precision == "bf16+fp32"


def test_older_records_precision_is_read_from_amp_and_device() -> None:
    def rec(amp: bool | None, device: str, train: dict | None = None) -> dict:
        fields = {} if amp is None else {"amp": amp}
        return {"recipe": {"fields": fields}, "env": {"device": device}, "train": train or {"x": 1}}

    assert train_precision(rec(True, "cpu")) == "bf16"  # before the fallback, amp was bf16
    assert train_precision(rec(True, "cuda:0")) == "fp16"
    assert train_precision(rec(False, "cpu")) == "fp32"
    assert train_precision(rec(True, "cpu", {"precision": "fp32"})) == "fp32"  # stored wins
    assert train_precision(rec(None, "cpu")) is None
    assert train_precision({"recipe": {"fields": {"amp": True}}, "env": {}, "train": {}}) is None


def test_a_table_that_mixes_precisions_says_so() -> None:
    def rec(row: str, seed: int, miou: float, precision: str) -> dict:
        r = _record("2", row, seed, miou)
        r["train"] = {"precision": precision}
        return r

    same = [rec("bga", s, 0.3, "bf16") for s in (0, 1)] + [rec("sum", 0, 0.3, "bf16")]
    table = build_table("2", records_to_frame(same), "smoke")
    assert table.precisions == {"bf16": 3}
    assert not any("precision" in n for n in table_notes(table))

    mixed = [rec("bga", 0, 0.3, "bf16"), rec("bga", 1, 0.3, "fp32"), rec("sum", 0, 0.3, "fp32")]
    table = build_table("2", records_to_frame(mixed), "smoke")
    assert table.precisions == {"bf16": 1, "fp32": 2}
    assert mixed_precision_rows(table) == ["bga"]
    note = next(n for n in table_notes(table) if "precision" in n)
    assert "bf16 in 1, fp32 in 2" in note and "Rows with seeds in both: bga." in note


def test_a_table_trained_on_several_device_kinds_says_so() -> None:
    """Runs of one table may come from several nodes of a cluster (``--launcher slurm``)."""

    def rec(row: str, seed: int, device: str) -> dict:
        r = _record("2", row, seed, 0.3)
        r["env"] = {**r.get("env", {}), "device": "cuda:0", "device_name": device}
        return r

    one = [rec("bga", 0, "NVIDIA A100"), rec("sum", 0, "NVIDIA A100")]
    table = build_table("2", records_to_frame(one), "smoke")
    assert table.train_devices == {"NVIDIA A100": 2}
    assert not any("different devices" in n for n in table_notes(table))
    two = [*one, rec("bga", 1, "NVIDIA V100")]
    table = build_table("2", records_to_frame(two), "smoke")
    note = next(n for n in table_notes(table) if "different devices" in n)
    assert "NVIDIA A100 in 2, NVIDIA V100 in 1" in note
