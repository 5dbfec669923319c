"""The GPU benchmark: every CUDA path the toolkit has, timed on one GPU in under 8 minutes.

    .venv/bin/python benchmarks/gpu_bench.py                   # on a machine with a GPU
    .venv/bin/python benchmarks/gpu_bench.py --cpu-dry-run     # the same logic, tiny, on CPU

Sections, each printed as it finishes (the output goes to
``results/benchmarks/gpu_<device>.txt``, or ``gpu_cpu-dry-run.txt``):

1. the device and software (``runners.env``);
2. every CUDA-marked test (``pytest -m cuda``): CUDA-event timing, fp16 with GradScaler,
   CUDA graphs, torch.compile, DDP with SyncBatchNorm;
3. latency of every preset at 512x1024, batch 1: fp32, fp16 and bf16 eager, fp16 with
   channels_last + BN folding, fp16 CUDA graphs (channels_last + folded), and
   torch.compile for ``bisenetv2`` (compiling all presets would not fit the budget);
   median and IQR of CUDA-event timings;
4. the paper's end-to-end scope (2048x1024 uint8 image -> resize -> network -> upsample
   -> argmax) for ``bisenetv2``, fp16 + CUDA graphs;
5. training images/s and peak memory at the paper recipe (batch 16, 1024x1024 crops,
   fp16 AMP with GradScaler, channels_last): fed by the real training loader (built-in
   data at 2048x1024, crop-first pipeline, the default workers for this machine), and
   from tensors already on the GPU; the ratio says whether the loader is the limit, and
   if it is, how many cores would feed the GPU (from the per-worker rate).

``--cpu-dry-run`` runs sections 1-5 with tiny inputs on the CPU (bf16 instead of fp16,
no graphs or compile) to prove the script works; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import runners  # noqa: E402,F401  (OpenMP policy before torch)
from blocks.builder import build_model  # noqa: E402
from runners.cpus import default_workers, usable_cpus  # noqa: E402
from runners.device import resolve_device  # noqa: E402
from runners.env import environment, format_environment  # noqa: E402
from runners.profile.latency import LatencyConfig, measure_latency  # noqa: E402
from searchspace.atomic import write_text  # noqa: E402
from searchspace.errors import UsageError  # noqa: E402
from searchspace.presets import PRESETS, get_preset  # noqa: E402
from searchspace.recipes import get_recipe  # noqa: E402


class Report:
    """Lines printed as they come and kept for the output file."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.start = time.perf_counter()

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def cuda_tests(say: Report, dry: bool) -> None:
    say("## 2. CUDA-marked tests (pytest -m cuda)")
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    tail = [x for x in out.stdout.strip().splitlines() if x.strip()][-1:] or ["(no output)"]
    say(f"{tail[0]}  ({time.perf_counter() - t0:.0f} s, exit {out.returncode})")
    if out.returncode not in (0, 5) and not dry:
        fails = [x for x in out.stdout.splitlines() if x.startswith("FAILED")]
        for line in fails[:20]:
            say(f"  {line}")
    say()


def latency_configs(device: str, dry: bool) -> list[tuple[str, LatencyConfig]]:
    warm, reps = (1, 3) if dry else (10, 50)
    if dry:
        return [
            ("fp32 eager", LatencyConfig(device=device, warmup=warm, repeats=reps)),
            ("bf16 eager", LatencyConfig(device=device, dtype="bf16", warmup=warm, repeats=reps)),
            ("bf16 cl+fold", LatencyConfig(device=device, dtype="bf16", warmup=warm, repeats=reps,
                                           channels_last=True, fold_bn=True)),
        ]  # fmt: skip
    return [
        ("fp32 eager", LatencyConfig(device=device, warmup=warm, repeats=reps)),
        ("fp16 eager", LatencyConfig(device=device, dtype="fp16", warmup=warm, repeats=reps)),
        ("bf16 eager", LatencyConfig(device=device, dtype="bf16", warmup=warm, repeats=reps)),
        ("fp16 cl+fold", LatencyConfig(device=device, dtype="fp16", warmup=warm, repeats=reps,
                                       channels_last=True, fold_bn=True)),
        ("fp16 graphs", LatencyConfig(device=device, dtype="fp16", warmup=warm, repeats=reps,
                                      channels_last=True, fold_bn=True, cuda_graphs=True)),
    ]  # fmt: skip


def latency_section(say: Report, device: str, dry: bool, hw: tuple[int, int]) -> None:
    say(f"## 3. Latency at {hw[0]}x{hw[1]}, batch 1 (median ms, IQR in brackets; images/s)")
    configs = latency_configs(device, dry)
    say(f"{'preset':<26s}" + "".join(f"{name:>24s}" for name, _ in configs))
    for name in PRESETS:
        cells = []
        for _, cfg in configs:
            torch.manual_seed(0)
            model = build_model(get_preset(name)).eval()
            try:
                lat = measure_latency(model, (1, 3, *hw), cfg)
                mark = "!" if lat.contended else " "
                cells.append(
                    f"{lat.median_ms:8.2f} [{lat.iqr_ms:5.2f}] {lat.images_per_s:6.0f}/s{mark}"
                )
            except Exception as exc:  # a path that fails is a finding, not a crash
                cells.append(f"{'failed: ' + type(exc).__name__:>22s}")
        say(f"{name:<26s}" + "".join(f"{c:>24s}" for c in cells))
    if not dry:
        cfg = LatencyConfig(device=device, dtype="fp16", warmup=10, repeats=50, compile=True)
        t0 = time.perf_counter()
        try:
            lat = measure_latency(build_model(get_preset("bisenetv2")).eval(), (1, 3, *hw), cfg)
            say(f"bisenetv2 fp16 torch.compile: {lat.median_ms:.2f} ms [{lat.iqr_ms:.2f}]"
                f" ({time.perf_counter() - t0:.0f} s with compilation)")  # fmt: skip
        except Exception as exc:
            say(f"bisenetv2 fp16 torch.compile: failed ({type(exc).__name__}: {exc})")
    say()


def end2end_section(say: Report, device: str, dry: bool) -> None:
    raw = (128, 256) if dry else (1024, 2048)
    net = (64, 128) if dry else (512, 1024)
    say(f"## 4. End to end: uint8 {raw[0]}x{raw[1]} -> {net[0]}x{net[1]} -> argmax at full size")
    cfg = LatencyConfig(
        device=device,
        dtype="bf16" if dry else "fp16",
        warmup=1 if dry else 10,
        repeats=3 if dry else 50,
        scope="end2end",
        raw_hw=raw,
        channels_last=True,
        fold_bn=True,
        cuda_graphs=not dry,
    )
    lat = measure_latency(build_model(get_preset("bisenetv2")).eval(), (1, 3, *net), cfg)
    say(f"bisenetv2: median {lat.median_ms:.2f} ms, IQR {lat.iqr_ms:.2f}, {lat.images_per_s:.1f} images/s"
        " (paper: 156 FPS on a GTX 1080 Ti with TensorRT)")  # fmt: skip
    say()


def _train_steps(model, batches: Callable[[], tuple], steps: int, device: torch.device, dry: bool):
    """Images/s and peak memory of ``steps`` paper-recipe steps after 3 warm-up steps."""
    from runners.train.losses import segmentation_loss
    from runners.train.optim import make_optimizer

    recipe = get_recipe("paper")
    opt = make_optimizer(model, recipe)
    cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    dtype = torch.float16 if cuda else torch.bfloat16

    def step() -> int:
        images, labels = batches()
        images = images.to(device, non_blocking=True).to(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype):
            loss = segmentation_loss(model(images), labels)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return images.shape[0]

    for _ in range(1 if dry else 3):
        step()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0, n = time.perf_counter(), 0
    for _ in range(steps):
        n += step()
    if cuda:
        torch.cuda.synchronize(device)
    rate = n / (time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")
    return rate, peak


def training_section(say: Report, device_name: str, dry: bool) -> None:
    from runners.data.cache import cache_root
    from runners.data.source import parse_data_arg
    from runners.data.synth import SynthConfig
    from runners.train.data import make_train_loader

    device = torch.device(device_name)
    batch, crop = (2, (128, 128)) if dry else (16, (1024, 1024))
    steps = 2 if dry else 30
    h, w = (256, 512) if dry else (1024, 2048)
    workers = 2 if dry else default_workers(device_name)
    say(f"## 5. Training at the paper recipe: batch {batch}, {crop[0]}x{crop[1]} crops,"
        f" {'bf16' if dry else 'fp16'} AMP, channels_last; {steps} timed steps")  # fmt: skip
    config = SynthConfig(train_count=8 if dry else 64, val_count=2, height=h, width=w)
    source = parse_data_arg(
        f"synth:{cache_root() / f'bench-synth-{w}x{h}-{config.train_count}'}", config
    )
    source.prepare()
    recipe = get_recipe("paper").replace(batch_size=batch, crop_hw=crop)
    dataset = source.dataset("train")

    torch.manual_seed(0)
    model = (
        build_model(get_preset("bisenetv2"))
        .to(device)
        .to(memory_format=torch.channels_last)
        .train()
    )
    loader = make_train_loader(dataset, recipe, seed=0, start=0, stop=None, workers=workers,
                               pin_memory=device.type == "cuda")  # fmt: skip
    it = iter(loader)
    fed, peak = _train_steps(model, lambda: next(it), steps, device, dry)

    images = torch.randn(batch, 3, *crop, device=device)
    labels = torch.randint(0, 19, (batch, *crop), device=device)
    resident, _ = _train_steps(model, lambda: (images, labels), steps, device, dry)

    # the loader alone, per worker: what it can supply
    t0, n = time.perf_counter(), 0
    solo = iter(make_train_loader(dataset, recipe, seed=1, start=0, stop=None, workers=0))
    for _ in range(2 if dry else 4):
        n += next(solo)[0].shape[0]
    per_worker = n / (time.perf_counter() - t0)
    say(f"fed by the loader ({workers} workers): {fed:8.1f} images/s, peak memory {peak:.2f} GiB")
    say(f"from tensors on the device:        {resident:8.1f} images/s")
    say(f"one loader worker supplies:        {per_worker:8.1f} images/s")
    if fed >= 0.9 * resident:
        say(f"not loader-bound: the loader keeps up ({fed / resident:.0%} of the resident rate)")
    elif per_worker * max(workers, 1) < resident:
        need = math.ceil(resident / per_worker)
        say(f"LOADER-BOUND: {fed / resident:.0%} of the resident rate; {workers} workers supply at"
            f" most {per_worker * max(workers, 1):.0f} images/s, about {need} cores of workers (or"
            " the pre-decoded cache, python -m runners.data cache) would feed this device")  # fmt: skip
    else:
        say(f"{fed / resident:.0%} of the resident rate although the workers could supply"
            f" {per_worker * workers:.0f} images/s: the limit is in the main process (batch"
            " collation, pinning, host-to-device copies)")  # fmt: skip
    say()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--device", default="cuda", help="cuda or cuda:N")
    p.add_argument("--cpu-dry-run", action="store_true", help="tiny sizes on the CPU")
    p.add_argument("--skip", default="", help="sections to skip, e.g. 2,5")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    dry = args.cpu_dry_run
    device = "cpu" if dry else args.device
    if not dry:
        if not device.startswith("cuda"):
            raise SystemExit(f"gpu_bench: --device {device}: expected cuda or cuda:N")
        try:
            resolve_device(device)
        except UsageError as exc:
            raise SystemExit(f"gpu_bench: {exc} (use --cpu-dry-run to test the script)") from None
        torch.backends.cudnn.benchmark = True
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    say = Report()
    env = environment(device)
    slug = (
        "cpu-dry-run" if dry else re.sub(r"[^a-z0-9]+", "-", env["device_name"].lower()).strip("-")
    )
    out = args.out or ROOT / "results" / "benchmarks" / f"gpu_{slug}.txt"
    say(
        "# GPU benchmark" + (" -- CPU DRY RUN: tiny sizes, the numbers mean nothing" if dry else "")
    )
    say("## 1. Device")
    say(format_environment(env))
    say(f"usable CPUs: {usable_cpus()}; torch {torch.__version__}")
    say()
    sections = [
        ("2", lambda: cuda_tests(say, dry)),
        ("3", lambda: latency_section(say, device, dry, (64, 128) if dry else (512, 1024))),
        ("4", lambda: end2end_section(say, device, dry)),
        ("5", lambda: training_section(say, device, dry)),
    ]
    for key, run in sections:
        if key not in skip:
            try:
                run()
            except (UsageError, RuntimeError, subprocess.TimeoutExpired) as exc:
                say(f"section {key} failed: {type(exc).__name__}: {str(exc).splitlines()[0]}\n")
    say("! = timed while other processes kept CPUs busy (unreliable)" if dry else "")
    say(f"total {say.elapsed():.0f} s")
    write_text(out, "\n".join(say.lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
