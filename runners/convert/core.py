"""Convert a peer's checkpoint (CoinCheung/BiSeNet, mmsegmentation) to a toolkit checkpoint.

The peer's keys are renamed by the data in ``runners.convert.keymaps``; the result must
fill the spec's network exactly (every key, every shape) or nothing is written. The
toolkit checkpoint carries the spec and a recipe whose input normalisation is the
peer's, so ``runners.evaluate --checkpoint`` scores it as the peer would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from blocks.builder import build_model
from blocks.weights import file_sha256, name_list, read_state_dict, rename_key
from runners import checkpoint as ckpt
from runners.convert.keymaps import KEYMAPS, PEER_NORMALISATION, PEER_PRESETS, PEERS
from searchspace.errors import CheckpointError, UsageError
from searchspace.outputs import output_file
from searchspace.presets import ArchSpec, get_preset
from searchspace.recipes import Recipe, get_recipe
from searchspace.v1 import BiSeNetV1Spec
from searchspace.v2 import BiSeNetV2Spec


@dataclass
class Conversion:
    """A converted state dict and what was done to get it."""

    state: dict[str, torch.Tensor]
    peer: str
    spec: ArchSpec
    notes: list[str] = field(default_factory=list)


def family(spec: ArchSpec) -> str:
    if isinstance(spec, BiSeNetV2Spec):
        return "v2"
    if isinstance(spec, BiSeNetV1Spec):
        return "v1"
    raise UsageError(f"spec of type {type(spec).__name__}: no peer has a form for it")


def peer_form(peer: str, spec: ArchSpec) -> ArchSpec:
    """The peer's preset this spec is a form of, or UsageError.

    A spec qualifies when it is the peer's preset up to the number of classes and which
    of its auxiliary heads exist (a checkpoint's aux weights are dropped for the others).
    """
    if peer not in PEERS:
        raise UsageError(f"--from {peer!r}: expected one of {', '.join(PEERS)}")
    fam = family(spec)
    name = PEER_PRESETS[(peer, fam)]
    preset = get_preset(name)
    heads = "booster_positions" if fam == "v2" else "aux_positions"
    wanted = getattr(spec, heads)
    if not set(wanted) <= set(getattr(preset, heads)):
        raise UsageError(
            f"--spec {spec.to_string()}: {peer} has no heads at {', '.join(wanted)}"
            f" (its form is {name})"
        )
    same = preset.replace(**{heads: wanted, "num_classes": spec.num_classes})
    if same != spec:
        raise UsageError(
            f"--spec {spec.to_string()}: {peer} has no form for this network; use {name}"
            " (optionally with :nc=N or fewer aux heads)"
        )
    return preset


def convert_state_dict(
    state: dict[str, torch.Tensor], peer: str, spec: ArchSpec, where: str = "checkpoint"
) -> Conversion:
    """Rename ``state``'s keys from ``peer``'s names to ``spec``'s network, or raise.

    Aux/booster weights for heads the spec does not have are dropped (with a note); a
    key no rule takes, a key the network lacks or has in another shape, and a network
    key the file does not fill are errors naming the first few.
    """
    peer_form(peer, spec)
    keymap = KEYMAPS[(peer, family(spec))]
    renamed: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        new = rename_key(key, keymap)
        if new is None:
            unknown.append(key)
        else:
            renamed[new] = value
    if unknown and len(unknown) == len(state):
        raise CheckpointError(
            f"{where}: none of its {len(state)} keys is a {peer} BiSeNet {family(spec).upper()}"
            f" key (first: {name_list(unknown, 3)}); is --from {peer} right?"
        )
    if unknown:
        raise CheckpointError(
            f"{where}: {len(unknown)} unexpected keys for {peer}'s form: {name_list(unknown)}"
        )
    own = build_model(spec).state_dict()
    notes = []
    heads = tuple(spec.booster_positions if family(spec) == "v2" else spec.aux_positions)
    dropped = sorted({k.split(".")[1] for k in renamed if k.startswith("boosters.")} - set(heads))
    if dropped:
        notes.append(
            f"dropped the weights of the auxiliary heads at {', '.join(dropped)}"
            " (the spec has none there; they are used in training only)"
        )
        renamed = {
            k: v
            for k, v in renamed.items()
            if not (k.startswith("boosters.") and k.split(".")[1] in dropped)
        }
    missing = [k for k in own if k not in renamed]
    mismatched = [
        f"{k} (file {tuple(renamed[k].shape)}, network {tuple(own[k].shape)})"
        for k in own
        if k in renamed and renamed[k].shape != own[k].shape
    ]
    if mismatched:
        hint = ""
        classes = [
            renamed[k].shape[0] for k in own if k.endswith("classifier.weight") and k in renamed
        ]
        if classes and classes[0] != spec.num_classes:
            hint = f"; the file predicts {classes[0]} classes: add :nc={classes[0]} to --spec"
        raise CheckpointError(f"{where}: shape mismatch: {name_list(mismatched, 3)}{hint}")
    if missing:
        hint = ""
        if all(k.startswith("boosters.") for k in missing):
            off = ":bst=none" if family(spec) == "v2" else ":aux=none"
            hint = f" (the file has no auxiliary-head weights: add {off} to --spec)"
        raise CheckpointError(
            f"{where}: {len(missing)} weights of the network are not in the file:"
            f" {name_list(missing)}{hint}"
        )
    return Conversion({k: renamed[k] for k in own}, peer, spec, notes)


def converted_recipe(
    peer: str, mean: tuple[float, ...] | None, std: tuple[float, ...] | None
) -> Recipe:
    """The paper recipe with the peer's input normalisation (or the one given)."""
    peer_mean, peer_std = PEER_NORMALISATION[peer]
    return get_recipe("paper").replace(
        input_mean=tuple(mean or peer_mean), input_std=tuple(std or peer_std)
    )


def convert_file(
    src: Path,
    out: Path,
    peer: str,
    spec: ArchSpec,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> Conversion:
    """Read ``src``, convert it, check it loads into the spec's network, write ``out``
    atomically. Nothing is written when anything fails."""
    peer_form(peer, spec)  # a wrong --from/--spec pair fails before the file is read
    state = read_state_dict(src, f"{peer} checkpoint")
    conv = convert_state_dict(state, peer, spec, where=f"{peer} checkpoint {src}")
    model = build_model(spec)
    model.load_state_dict(conv.state, strict=True)  # proven complete above; this is cheap
    recipe = converted_recipe(peer, mean, std)
    with output_file(out, f"output {out}") as tmp:  # removed again if the command fails
        torch.save(
            {
                "format": ckpt.FORMAT,
                "version": ckpt.VERSION,
                "spec_json": spec.to_json(),
                "spec_id": spec.spec_id,
                "recipe_json": recipe.to_json(),
                "recipe_id": recipe.recipe_id,
                "model": conv.state,
                "iteration": 0,
                "converted_from": {"peer": peer, "file": src.name, "sha256": file_sha256(src)},
            },
            tmp,
        )
    return conv
