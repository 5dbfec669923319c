"""``--pretrained [BACKBONE=]PATH``: which weights file initialises which runs.

One place for train, ablate and search. A file is read once here (its layout told from
its keys, its SHA-256 taken); each run whose backbone it fits gets the file's recipe
changes (the SHA-256, which makes a pretrained run another key than a scratch one, and
the input normalisation the weights were trained with) and its path. Runs whose backbone
no file names train from scratch, as the paper's own rows did.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from searchspace.backbones import SEMANTIC_BACKBONES
from searchspace.errors import UsageError
from searchspace.presets import backbone_of
from searchspace.recipes import Recipe
from searchspace.v1 import BACKBONES as V1_BACKBONES

KNOWN_BACKBONES = tuple(dict.fromkeys((*SEMANTIC_BACKBONES, *V1_BACKBONES)))
HELP = (
    "initialise the backbone from a weights file (torchvision, timm, the BiSeNet authors'"
    " Xception39, CoinCheung's V2 backbone; told from its keys). BACKBONE=PATH (repeatable:"
    f" {', '.join(KNOWN_BACKBONES)}) when runs have different backbones; runs whose"
    " backbone no file names train from scratch"
)


@dataclass(frozen=True)
class PretrainedFile:
    path: Path
    sha256: str
    layout: str
    source: str
    backbone: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def recipe_changes(self, backbone_lr_mult: float | None) -> dict[str, Any]:
        changes: dict[str, Any] = {
            "pretrained": self.sha256,
            "input_mean": self.mean,
            "input_std": self.std,
        }
        if backbone_lr_mult is not None:
            changes["backbone_lr_mult"] = backbone_lr_mult
        return changes


@dataclass(frozen=True)
class Pretraining:
    """The files of one invocation, by the backbone each fits."""

    files: Mapping[str, PretrainedFile]
    backbone_lr_mult: float | None = None

    def apply(self, spec: Any, recipe: Recipe) -> tuple[Recipe, Path | None]:
        """The recipe and weights file a run of ``spec`` gets (unchanged, None: scratch)."""
        found = self.files.get(backbone_of(spec) or "")
        if found is None:
            return recipe, None
        return recipe.replace(**found.recipe_changes(self.backbone_lr_mult)), found.path


NONE = Pretraining({})


def _read(path: Path, named: str | None) -> PretrainedFile:
    from blocks.weights import file_sha256, read_layout  # torch: only when a file is given

    layout, _ = read_layout(path)  # a missing or unreadable file: one line from here
    if named is not None and layout.backbone != named:
        raise UsageError(
            f"--pretrained {named}={path}: the file is {layout.source} ({layout.name}),"
            f" for {layout.backbone}, not {named}"
        )
    # absolute: a launcher's task may start in another folder (a SLURM node's)
    return PretrainedFile(
        path.resolve(),
        file_sha256(path),
        layout.name,
        layout.source,
        layout.backbone,
        layout.mean,
        layout.std,
    )


def resolve_pretrained(
    values: Sequence[str] | None,
    backbones: Iterable[str | None],
    backbone_lr_mult: float | None = None,
) -> Pretraining:
    """Read ``--pretrained`` values for runs with these backbones, or a one-line
    UsageError: an unknown or unused backbone, two files for one, a file that fits none."""
    if not values:
        if backbone_lr_mult is not None:
            raise UsageError("--backbone-lr-mult: applies only with --pretrained")
        return NONE
    used = sorted({b for b in backbones if b})
    files: dict[str, PretrainedFile] = {}
    for value in values:
        named, sep, text = value.partition("=")
        if not sep:
            named, text = None, value
        elif named not in KNOWN_BACKBONES:
            raise UsageError(
                f"--pretrained {value}: unknown backbone {named!r} (known: "
                f"{', '.join(KNOWN_BACKBONES)})"
            )
        if not text:
            raise UsageError(f"--pretrained {value}: expected [BACKBONE=]PATH")
        if named is not None and named not in used:
            raise UsageError(
                f"--pretrained {value}: no run here has the backbone {named}"
                f" (they have {', '.join(used) or 'none'})"
            )
        found = _read(Path(text), named)
        if found.backbone not in used:
            raise UsageError(
                f"--pretrained {value}: no run here has the backbone {found.backbone}"
                f" (they have {', '.join(used) or 'none'})"
            )
        if found.backbone in files:
            raise UsageError(
                f"--pretrained {value}: a second file for {found.backbone}"
                f" ({files[found.backbone].path} is the first)"
            )
        files[found.backbone] = found
    if len(values) == 1 and named is None and len(used) > 1:
        raise UsageError(
            f"--pretrained {values[0]}: the runs have backbones {', '.join(used)}; name the"
            f" one it is for (--pretrained {next(iter(files))}=PATH)"
        )
    return Pretraining(files, backbone_lr_mult)


def add_pretrained_arguments(parser: Any) -> None:
    parser.add_argument("--pretrained", action="append", metavar="[BACKBONE=]PATH", help=HELP)
    parser.add_argument(
        "--backbone-lr-mult",
        type=float,
        default=None,
        metavar="X",
        help="with --pretrained: the backbone's learning rate is X times the rest's "
        "(recipe field backbone_lr_mult; default 1)",
    )
