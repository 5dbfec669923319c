"""Weights made elsewhere: read safely, renamed by data, loaded whole or not at all.

Shared by everything that loads such files (an ImageNet backbone for ``--pretrained``, a
peer's checkpoint to convert): ``torch.load(weights_only=True)`` only, so a file that would
run code when unpickled is refused, never executed. ``load_pretrained`` is the one loader
of backbone files: it tells the file's layout from its keys (``blocks/keymaps.py``),
renames them, and loads only when every weight has exactly one place and every place one
weight, because a silently half-loaded backbone is worse than none.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from torch import nn

from blocks.keymaps import LAYOUTS, KeyMap, Layout
from searchspace.errors import CheckpointError

# keys under which trainers nest the weights: mmseg/mmengine "state_dict", others "model"
WRAPPER_KEYS = ("state_dict", "model")


def name_list(keys: Sequence[str], limit: int = 5) -> str:
    """The first ``limit`` names, then how many more: error messages stay one line."""
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _flatten(obj: Mapping, prefix: str = "") -> dict[object, object]:
    """Nested name -> (name -> tensor) dicts as one dict of dotted names (CoinCheung's
    backbone file holds ``{"detail": {...}, "segment": {...}}``)."""
    out: dict[object, object] = {}
    for key, value in obj.items():
        if isinstance(key, str) and isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}" if isinstance(key, str) else key] = value
    return out


def unwrap_state_dict(obj: object, where: str) -> dict[str, torch.Tensor]:
    """The name -> tensor dict inside ``obj`` (a raw state dict, or one nested under
    ``state_dict``/``model``, or parts nested by name), with DataParallel's ``module.``
    prefix removed."""
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        if isinstance(obj, Mapping):
            obj = _flatten(obj)
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{where}: expected a state dict (parameter name -> tensor)")
    bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise CheckpointError(
            f"{where}: expected a state dict (parameter name -> tensor); {bad[0]!r} is not one"
        )
    if all(k.startswith("module.") for k in obj):
        return {k.removeprefix("module."): v for k, v in obj.items()}
    return dict(obj)


def read_state_dict(path: str | Path, what: str = "weights") -> dict[str, torch.Tensor]:
    """Load ``path`` with ``weights_only=True`` and unwrap it; CheckpointError otherwise."""
    path = Path(path)
    where = f"{what} {path}"
    if not path.is_file():
        raise CheckpointError(f"{where}: file not found")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        # "Unsupported global": the pickle names a class or function to call; anything else
        # (an unknown opcode, a truncated stream) is a file that is not a torch pickle at all
        if "unsupported global" in text.lower():
            raise CheckpointError(
                f"{where}: holds objects other than tensors and plain data; loading it would"
                " run code, so it is refused (save its state_dict alone and convert that)"
            ) from None
        raise CheckpointError(f"{where}: not a readable torch weights file (damaged)") from None
    except Exception as exc:  # zip, pickle and torch errors alike: one clear line
        raise CheckpointError(
            f"{where}: not a readable torch weights file ({type(exc).__name__})"
        ) from None
    return unwrap_state_dict(raw, where)


def file_sha256(path: str | Path) -> str:
    """The file's SHA-256: what a run's identity keeps of a weights file (not its path)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@cache
def _compiled(rules: tuple[tuple[str, str], ...]) -> list[tuple[re.Pattern[str], str]]:
    return [(re.compile(pattern), target) for pattern, target in rules]


def rename_key(key: str, keymap: KeyMap) -> str | None:
    """This toolkit's name for one key of a file, or None when no rule takes it."""
    module, _, leaf = key.rpartition(".")
    hits = [(p, t) for p, t in _compiled(tuple(keymap["rules"])) if p.fullmatch(module)]
    if not hits:
        return None
    if len(hits) > 1:  # a defect in the map itself, not in the user's file
        raise AssertionError(f"key {key}: matched by {len(hits)} rules")
    pattern, target = hits[0]
    groups = pattern.fullmatch(module).groupdict()  # type: ignore[union-attr]
    lookups = keymap["lookups"]
    values = {k: lookups[k][v] if k in lookups else v for k, v in groups.items()}
    return f"{target.format(**values)}.{leaf}"


def _unplaced(keys: Sequence[str], layout: Layout) -> list[str]:
    dropped = re.compile(layout.dropped) if layout.dropped else None
    return [
        k
        for k in keys
        if rename_key(k, layout.keymap) is None
        and not (dropped and dropped.fullmatch(k.rpartition(".")[0]))
    ]


def detect_layout(keys: Sequence[str], where: str) -> Layout:
    """The one layout whose rules place every key of the file, or a one-line refusal that
    names the candidates (and, for an unknown file, the first key each could not place)."""
    misses = {name: _unplaced(keys, layout) for name, layout in LAYOUTS.items()}
    fits = [name for name, missed in misses.items() if not missed]
    if len(fits) == 1:
        return LAYOUTS[fits[0]]
    if fits:
        raise CheckpointError(f"{where}: ambiguous layout, fits {', '.join(fits)}")
    closest = sorted(misses, key=lambda n: len(misses[n]))
    tried = "; ".join(f"{n} cannot place {misses[n][0]!r}" for n in closest)
    raise CheckpointError(f"{where}: unknown layout of weights (tried {tried})")


@dataclass(frozen=True)
class Pretrained:
    """What ``load_pretrained`` loaded: kept in the run's record."""

    layout: str
    source: str
    sha256: str
    loaded: int  # tensors loaded
    dropped: tuple[str, ...]  # the file's keys not used (its classifier)
    # parameter-name prefixes (in the model) of what was loaded: the backbone's lr group
    prefixes: tuple[str, ...]

    def to_record(self) -> dict[str, object]:
        return {
            "layout": self.layout,
            "sha256": self.sha256,
            "loaded": self.loaded,
            "dropped": list(self.dropped),
        }


# old checkpoints predate BN's ``num_batches_tracked`` buffer; it carries no weights
OPTIONAL_SUFFIXES = (".num_batches_tracked",)


def read_layout(path: str | Path) -> tuple[Layout, dict[str, torch.Tensor]]:
    """The file's layout and its tensors (CheckpointError for anything else)."""
    where = f"pretrained weights {path}"
    state = read_state_dict(path, "pretrained weights")
    return detect_layout(list(state), where), state


def load_pretrained(
    model: nn.Module, path: str | Path, backbone: str, sha256: str | None = None
) -> Pretrained:
    """Load a backbone file of any known layout into ``model`` (a whole built network),
    whose backbone is ``backbone``; CheckpointError naming what does not fit, and the
    model unchanged then. ``sha256``: the file's, when the caller has already hashed it."""
    where = f"pretrained weights {path}"
    layout, state = read_layout(path)
    if layout.backbone != backbone:
        raise CheckpointError(
            f"{where}: {layout.source} ({layout.name}), but this network's backbone is {backbone}"
        )
    try:
        target = model.get_submodule(layout.into) if layout.into else model
    except AttributeError:
        raise CheckpointError(f"{where}: this network has no {layout.into}") from None
    own = {
        k: v
        for k, v in target.state_dict().items()
        if not layout.covers or k.startswith(layout.covers)
    }
    mapped: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    twice: list[str] = []
    for key, tensor in state.items():
        name = rename_key(key, layout.keymap)
        if name is None:
            dropped.append(key)
        elif name in mapped:
            twice.append(f"{key} -> {name}")
        else:
            mapped[name] = tensor
    missing = [k for k in own if k not in mapped and not k.endswith(OPTIONAL_SUFFIXES)]
    unexpected = [k for k in mapped if k not in own]
    mismatched = [
        f"{k} (file {tuple(mapped[k].shape)}, network {tuple(own[k].shape)})"
        for k in own
        if k in mapped and mapped[k].shape != own[k].shape
    ]
    problems = []
    if twice:
        problems.append(f"keys given twice: {name_list(twice)}")
    if missing:
        problems.append(f"missing keys: {name_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {name_list(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch: {name_list(mismatched)}")
    if problems:
        raise CheckpointError(
            f"{where} ({layout.name}) do not fit this network's {backbone}: " + "; ".join(problems)
        )
    target.load_state_dict(mapped, strict=False)
    base = f"{layout.into}." if layout.into else ""
    prefixes = tuple(f"{base}{c}" for c in layout.covers) if layout.covers else (base,)
    return Pretrained(
        layout.name,
        layout.source,
        sha256 or file_sha256(path),
        len(mapped),
        tuple(dropped),
        prefixes,
    )
