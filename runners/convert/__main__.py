"""Convert a CoinCheung/BiSeNet or mmsegmentation checkpoint into a toolkit checkpoint.

    python -m runners.convert --from coincheung --spec bisenetv2_coincheung model_final_v2_city.pth v2.pt
    python -m runners.convert --from mmseg --spec bisenetv1_r18_mmseg bisenetv1_r18.pth v1.pt
    python -m runners.evaluate --checkpoint v2.pt --data cityscapes:/data/cityscapes

The output loads in ``runners.evaluate --checkpoint``, ``runners.profile --checkpoint``
and ``runners.export --checkpoint``. Its recipe carries the peer's input normalisation
(CoinCheung: its Cityscapes statistics; mmseg: ImageNet's); give ``--mean``/``--std``
for a checkpoint trained with others (CoinCheung's COCO models, say).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from runners.cli import ArgumentParser, check_output_path, run_cli
from runners.convert.core import convert_file, peer_form
from runners.convert.keymaps import PEER_PRESETS, PEERS
from searchspace.errors import UsageError
from searchspace.presets import parse_spec


def _triple(text: str | None, option: str) -> tuple[float, float, float] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(
            f"{option} {text!r}: expected three numbers, e.g. 0.485,0.456,0.406"
        ) from None
    if len(values) != 3:
        raise UsageError(f"{option} {text!r}: expected three numbers (R,G,B in [0, 1])")
    return values  # type: ignore[return-value]


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m runners.convert", description=__doc__.split("\n")[0])
    p.add_argument("--from", dest="peer", required=True, help=f"{' or '.join(PEERS)}")
    presets = sorted(set(PEER_PRESETS.values()))
    p.add_argument("--spec", required=True, help=f"the peer's form: {', '.join(presets)} [:nc=N]")
    p.add_argument("--mean", help="input mean R,G,B in [0, 1] (default: the peer's Cityscapes one)")
    p.add_argument("--std", help="input std R,G,B (default: the peer's)")
    p.add_argument("input", type=Path, help="the peer's .pth (raw, {meta, state_dict}, DDP)")
    p.add_argument("output", type=Path, help="the toolkit checkpoint to write")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.peer not in PEERS:
        raise UsageError(f"--from {args.peer!r}: expected one of {', '.join(PEERS)}")
    spec = parse_spec(args.spec)
    peer_form(args.peer, spec)
    mean, std = _triple(args.mean, "--mean"), _triple(args.std, "--std")
    out = check_output_path(args.output, "output")
    if out.resolve() == args.input.resolve():
        raise UsageError(f"output {out}: is the input file; choose another name")
    conv = convert_file(args.input, out, args.peer, spec, mean, std)
    n = sum(t.numel() for k, t in conv.state.items() if not k.endswith("num_batches_tracked"))
    print(
        f"converted {args.input} ({args.peer}) to {out}: spec {spec.to_string()} "
        f"(id {spec.spec_id}), {len(conv.state)} tensors, {n:,} values"
    )
    for note in conv.notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    run_cli(main)
