"""Export a spec's eval-mode model to ONNX, checked against onnxruntime.

    python -m runners.export --spec bisenetv2 --onnx bisenetv2.onnx
    python -m runners.export --spec v2:agg=sum --onnx sum.onnx --input-hw 512 1024 --opset 18
    python -m runners.export --checkpoint converted.pt --onnx model.onnx   # trained weights

The file appears only once the export has passed the onnxruntime check (max abs
difference on a random input within 1e-4): it is written to a temp file and renamed.
"""

from __future__ import annotations

from collections.abc import Sequence

from blocks.builder import build_real
from runners.cli import ArgumentParser, check_output_path, parse_input_hw, run_cli
from runners.export.onnx import (
    DEFAULT_OPSET,
    EXPORTERS,
    PARITY_TOLERANCE,
    export_onnx,
    require_onnxruntime,
)
from searchspace.errors import UsageError
from searchspace.presets import parse_spec

MIN_OPSET = 13  # older opsets lack the resize semantics bilinear upsampling needs


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m runners.export", description=__doc__.split("\n")[0])
    what = p.add_mutually_exclusive_group()
    what.add_argument("--spec", help="preset, 'v2:key=value,...' or JSON file (default bisenetv2)")
    what.add_argument("--checkpoint", help="a toolkit checkpoint (or run folder) to export")
    p.add_argument("--onnx", required=True, metavar="FILE", help="where to write the model")
    p.add_argument("--input-hw", nargs=2, metavar=("H", "W"), default=["512", "1024"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--exporter", default="dynamo", help=f"{' or '.join(EXPORTERS)}")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    p.add_argument("--seed", type=int, default=0, help="weight initialisation seed (--spec)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    input_hw = parse_input_hw(args.input_hw)
    what = args.checkpoint or args.spec or "bisenetv2"
    spec = parse_spec(what) if args.checkpoint is None else None
    if args.opset < MIN_OPSET:
        raise UsageError(f"--opset {args.opset}: must be at least {MIN_OPSET}")
    if args.exporter not in EXPORTERS:
        raise UsageError(f"--exporter {args.exporter}: expected one of {', '.join(EXPORTERS)}")
    if args.batch < 1:
        raise UsageError(f"--batch {args.batch}: must be >= 1")
    if not args.no_check:
        require_onnxruntime("--onnx check (or pass --no-check)")
    path = check_output_path(args.onnx, "--onnx")
    if args.checkpoint is not None:
        from runners.checkpoint import load_model

        model, spec, _ = load_model(args.checkpoint)
    else:
        model = build_real(spec, seed=args.seed)
    result = export_onnx(
        model,
        path,
        (args.batch, 3, *input_hw),
        opset=args.opset,
        exporter=args.exporter,
        check=not args.no_check,
    )
    shape = "x".join(map(str, result.input_shape))
    print(
        f"exported {what} ({spec.to_string()}, id {spec.spec_id}) to {result.path}: "
        f"{result.size_bytes / 2**20:.1f} MiB, input {shape}, {result.exporter} exporter, "
        f"opset {result.opset}"
    )
    if result.max_abs_diff is None:
        print("not checked against onnxruntime (--no-check)")
    else:
        print(
            f"onnxruntime vs PyTorch max abs diff: {result.max_abs_diff:.3g} "
            f"(tolerance {PARITY_TOLERANCE:g})"
        )
    return 0


if __name__ == "__main__":
    run_cli(main)
