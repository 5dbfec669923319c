"""Profile one spec or a paper table: parameters, MACs (four counters), latency.

    python -m runners.profile                                 # bisenetv2 at 512x1024
    python -m runners.profile --spec v2:agg=sum --no-latency
    python -m runners.profile --table 3a --csv 3a.csv --json 3a.json
    python -m runners.profile --table my_table.toml --no-latency   # a user's table file
    python -m runners.profile --spec bisenetv2 --fold-bn --channels-last --threads 2
    python -m runners.profile --checkpoint converted.pt      # a (converted) checkpoint

Every check runs before any work, so a bad flag costs nothing and writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from runners.cli import ArgumentParser, check_output_path, parse_input_hw, run_cli
from runners.env import environment, format_environment
from runners.export.onnx import require_onnxruntime
from runners.profile.core import (
    DEFAULT_INPUT_HW,
    check_counters,
    profile_spec,
    profile_table,
)
from runners.profile.counters import COUNTERS
from runners.profile.latency import DTYPES, SCOPES, LatencyConfig
from runners.profile.report import csv_text, format_profile, format_table, json_text
from searchspace.cli import work_begins
from searchspace.errors import UsageError
from searchspace.outputs import write_output
from searchspace.presets import parse_spec
from searchspace.table_files import table_from_arg

# (warm-up, repeats) when not given: a table times every row, so it uses few repeats
SPEC_REPEATS = (5, 30)
TABLE_REPEATS = (2, 5)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m runners.profile", description=__doc__.split("\n")[0])
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--spec", help="preset, 'v2:key=value,...' or a JSON file (default bisenetv2)"
    )
    what.add_argument(
        "--checkpoint", help="a toolkit checkpoint (or run folder): its spec and weights"
    )
    what.add_argument(
        "--table",
        help="a paper table: 2, 3a, 3b, 3c, 4, 5a, 5b, 6 (V2), v1-3, v1-4 (V1); presets; "
        "or a .toml table file (a results folder keeps those it ran in tables/)",
    )
    p.add_argument(
        "--input-hw",
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="network input size (default: the table's paper input, else 512 1024)",
    )
    p.add_argument(
        "--counters",
        default=",".join(COUNTERS),
        help=f"comma-separated MAC counters (default all: {','.join(COUNTERS)}); "
        "flop_counter is always the primary one",
    )
    p.add_argument(
        "--latency",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure latency (default on; --table uses few repeats unless told)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (latency only)")
    p.add_argument("--batch", type=int, default=1, help="latency batch size (MACs are per image)")
    p.add_argument("--dtype", default="fp32", help=f"{'|'.join(DTYPES)}; fp16/bf16 use autocast")
    p.add_argument(
        "--scope",
        default="forward",
        help=f"{'|'.join(SCOPES)} (end2end: the "
        "paper's 2048x1024 image -> resize -> forward -> upsample -> argmax)",
    )
    p.add_argument("--warmup", type=int, help="untimed calls first (default 5; table 2)")
    p.add_argument("--repeats", type=int, help="timed calls (default 30; table 5)")
    p.add_argument("--threads", type=int, help="CPU threads for torch.set_num_threads")
    p.add_argument("--channels-last", action="store_true", help="channels_last model and input")
    p.add_argument("--fold-bn", action="store_true", help="fold BN into convs before timing")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--cuda-graphs", action="store_true", help="time CUDA graph replays")
    p.add_argument("--onnxruntime", action="store_true", help="add onnxruntime CPU latency")
    p.add_argument("--csv", metavar="FILE", help="write one CSV row per profiled network")
    p.add_argument("--json", metavar="FILE", help="write every number and the environment")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    table = table_from_arg(args.table) if args.table is not None else None
    if args.input_hw is not None:
        input_hw = parse_input_hw(args.input_hw)
    elif table is not None and table.rows:
        input_hw = table.rows[0].input_hw  # the paper's own input (360x640 for V1's Table 4)
    else:
        input_hw = DEFAULT_INPUT_HW
    model = None
    if args.checkpoint is not None:
        from runners.checkpoint import load_model

        model, spec, _ = load_model(args.checkpoint)
    else:
        spec = None if table is not None else parse_spec(args.spec or "bisenetv2")
    counters = check_counters([c.strip() for c in args.counters.split(",") if c.strip()])
    warmup, repeats = TABLE_REPEATS if table is not None else SPEC_REPEATS
    cfg = LatencyConfig(
        device=args.device,
        dtype=args.dtype,
        warmup=warmup if args.warmup is None else args.warmup,
        repeats=repeats if args.repeats is None else args.repeats,
        threads=args.threads,
        channels_last=args.channels_last,
        fold_bn=args.fold_bn,
        compile=args.compile,
        cuda_graphs=args.cuda_graphs,
        scope=args.scope,
    )
    cfg.check()  # --device cuda without a GPU fails here, whether or not we time
    if args.batch < 1:
        raise UsageError(f"--batch {args.batch}: must be >= 1")
    if args.onnxruntime:
        require_onnxruntime("--onnxruntime")
    csv_path = check_output_path(args.csv, "--csv") if args.csv else None
    json_path = check_output_path(args.json, "--json") if args.json else None
    latency = cfg if args.latency else None

    work_begins()  # every check is done: notes from here on are about the measuring
    env = environment(cfg.device)
    print(format_environment(env))
    if table is not None:
        progress = (
            (lambda msg: print(f"profiling {msg}", file=sys.stderr))
            if sys.stderr.isatty()
            else None
        )
        result = profile_table(
            table.table,
            input_hw,
            counters,
            latency,
            batch=args.batch,
            onnxruntime=args.onnxruntime,
            progress=progress,
        )
        results = list(result.results)
        h, w = input_hw
        paper_hw = sorted({f"{r.input_hw[0]}x{r.input_hw[1]}" for r in table.rows})
        title = (
            f"Table {table.table}: {table.title} "
            f"(measured at {h}x{w}; paper GMACs at {', '.join(paper_hw)})"
        )
        print(format_table(title, results, result.skipped))
        payload = {"environment": env, "input_hw": list(input_hw), **result.to_dict()}
    else:
        assert spec is not None
        profile = profile_spec(
            spec,
            input_hw,
            counters,
            latency,
            batch=args.batch,
            onnxruntime=args.onnxruntime,
            label=args.checkpoint or args.spec or "bisenetv2",
            model=model,
        )
        results = [profile]
        print(format_profile(profile, include_environment=False))
        payload = {"environment": env, "input_hw": list(input_hw), "results": [profile.to_dict()]}
    if csv_path is not None:
        write_output(csv_path, csv_text(results), f"--csv {csv_path}")
        print(f"wrote {csv_path}")
    if json_path is not None:
        write_output(json_path, json_text(payload), f"--json {json_path}")
        print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
