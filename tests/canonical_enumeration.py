"""One spec, one network: enumerate specs, build each (structure only), fingerprint it.

Used by tests/test_canonical.py, and runnable to print the counts for any checkout:
``python -m tests.canonical_enumeration`` (run it with PYTHONPATH pointing at an older
checkout to see how many spec_ids that code gave one network).

The enumeration: every combination of the fields that switch others on or off (V2: block
kind, aggregation, booster positions, context embedding, exp_ratio=1; V1: fusion, aux
positions, backbone), and under each, every other field moved off its value one at a
time; then random points of the ``v2-full`` and ``v1-full`` search spaces, the presets
and the paper-table rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from torch import nn

import blocks.builder as builder
from searchspace.errors import SpecError
from searchspace.presets import PRESETS
from searchspace.v1 import BiSeNetV1Spec
from searchspace.v2 import BiSeNetV2Spec

V2_SWITCHES: dict[str, tuple[Any, ...]] = {
    "semantic.block": ("ge", "ib"),
    "aggregation": ("bga", "sum", "concat", "ffm", "detail_only", "semantic_only"),
    "booster_positions": ((), ("s4",), ("stem", "s3", "s4", "s5_4"), ("s3", "s5_4", "s5_5")),
    "semantic.context_embedding": (True, False),
    "semantic.exp_ratio": (6, 1),
}
# one other value for every V2 leaf field that is not a switch (exp_ratio is one: 6 or 1)
V2_MOVES: dict[str, Any] = {
    "detail.widths": (32, 64, 128),
    "detail.depths": (2, 3, 2),
    "semantic.ratio": 0.5,
    "semantic.s4_s5_widths": (64, 96),
    "semantic.depths": (1, 1, 2),
    "semantic.ge_expand": "depthwise",
    "semantic.ge_gather_kernel": 1,
    "semantic.ge_down_dw": "5x5",
    "head_width": 128,
    "booster_width": 64,
    "width_mult": 1.5,
    "depth_mult": 2.0,
    "num_classes": 5,
}
# A second, smaller enumeration for the fields of the reimplementations' forms (head
# forms, dropout, BGA and GE details): their switches crossed with the main switches they
# interact with, and only their own fields (plus booster_width, which the double head
# form switches off) moved under each.
V2_PEER_SWITCHES: dict[str, tuple[Any, ...]] = {
    "booster_form": ("single", "double", "up2"),
    "head_dropout": (0.0, 0.1),
    "aggregation": ("bga", "detail_only"),
    "booster_positions": ((), ("s4",)),
    "semantic.block": ("ge", "ib"),
}
V2_PEER_MOVES: dict[str, Any] = {
    "semantic.ge_dw_act": True,
    "bga_upsample": "nearest",
    "bga_out_act": True,
    "bga_bias": True,
    "booster_dropout": 0.1,
    "dropout_kind": "channel",
    "booster_width": 64,
}
# the V2 base is shallower than the paper's model only to build faster
V2_BASE_CHANGES = {"semantic.depths": (1, 1, 1)}
# A third one for the ImageNet backbones of the semantic branch: each backbone crossed
# with the switches that change what it feeds (aggregation, booster taps, the context
# embedding), every V2 main field moved under each (the paper branch's own fields must be
# refused), plus the backbone's width multiplier.
V2_BACKBONE_SWITCHES: dict[str, tuple[Any, ...]] = {
    "semantic.backbone": ("mobilenetv2", "shufflenetv2", "resnet18"),
    "aggregation": ("bga", "semantic_only"),
    "booster_positions": ((), ("stem", "s4", "s5_4"), ("s3", "s5_5")),
    "semantic.context_embedding": (True, False),
}
V2_BACKBONE_MOVES: dict[str, Any] = {
    **{k: v for k, v in V2_MOVES.items() if k not in V2_BACKBONE_SWITCHES},
    "semantic.block": "ib",
    "semantic.exp_ratio": 1,
    "semantic.ge_expand": "depthwise",
    "semantic.backbone_width": 0.5,
}
# the enumerations: (kind, part) -> (switches, moves)
PARTS = ("main", "peer", "backbone")

V1_SWITCHES: dict[str, tuple[Any, ...]] = {
    "fusion": ("ffm", "sum", "concat", "bga", "cp_only"),
    "aux_positions": ((), ("cp16",), ("cp32", "cp16")),
    "context.backbone": ("xception39", "resnet18"),
}
V1_MOVES: dict[str, Any] = {
    "spatial.form": "paper",
    "spatial.widths": (32, 64),
    "spatial.out_width": 96,
    "context.arm": False,
    "context.lateral_kernel": 1,
    "context.global_context": False,
    "context.refine": False,
    "context.out_width": 96,
    "fusion_width": 128,
    "ffm_reduction": 4,
    "head_width": 32,
    "aux_width": 64,
    "width_mult": 0.5,
    "depth_mult": 2.0,
    "num_classes": 5,
}
V1_PEER_SWITCHES: dict[str, tuple[Any, ...]] = {
    "ffm_attention": ("mlp", "conv_bn_relu"),
    "head_dropout": (0.0, 0.1),
    "aux_positions": ((), ("cp16",), ("cp32", "cp16")),
    "fusion": ("ffm", "sum"),
}
V1_PEER_MOVES: dict[str, Any] = {
    "context.upsample": "nearest",
    "align_corners": True,
    "aux_dropout": 0.1,
    "dropout_kind": "channel",
    "aux_order": "cp16_first",
    "ffm_reduction": 4,
}


# the torch.nn.init functions that module constructors and kaiming_init call
_INIT_FUNCTIONS = ("kaiming_uniform_", "kaiming_normal_", "uniform_", "normal_", "ones_", "zeros_")


@contextmanager
def _structure_only() -> Iterator[None]:
    """Build without initialising weights: values change no structure, and filling them
    was most of a build's time. Built on the CPU, not the meta device: ``torch.empty``
    costs nothing, while the meta device's function mode intercepts every call (a build
    took 2.5x as long there). Only for this enumeration: it patches torch.nn.init."""
    saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS}
    saved_kaiming = builder.kaiming_init
    for name in _INIT_FUNCTIONS:
        setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
    builder.kaiming_init = lambda model: None
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)
        builder.kaiming_init = saved_kaiming


def _plain_attrs(module: nn.Module) -> list[tuple[str, Any]]:
    simple = (int, float, bool, str, tuple, type(None))
    return sorted(
        (k, v)
        for k, v in vars(module).items()
        if not k.startswith("_") and k != "training" and isinstance(v, simple)
    )


def fingerprint(model: nn.Module) -> str:
    """Module types, their hyper-parameters and plain attributes, parameter and buffer
    shapes, in order: two networks with one fingerprint compute the same kind of function."""
    h = hashlib.sha256()
    for name, module in model.named_modules():
        h.update(f"{name}|{type(module).__name__}|{module.extra_repr()}|".encode())
        h.update(repr(_plain_attrs(module)).encode())
        for pname, p in module.named_parameters(recurse=False):
            h.update(f"|p:{pname}{tuple(p.shape)}".encode())
        for bname, b in module.named_buffers(recurse=False):
            h.update(f"|b:{bname}{tuple(b.shape) if b is not None else None}".encode())
    return h.hexdigest()[:16]


class Census:
    """spec_id <-> fingerprint over everything enumerated, built once per spec_id."""

    def __init__(self) -> None:
        self.fp_of_id: dict[str, str] = {}
        self.ids_of_fp: dict[str, set[str]] = {}
        self.example: dict[str, str] = {}  # spec_id -> its compact string

    def add(self, spec: Any) -> str:
        sid = spec.spec_id
        if sid not in self.fp_of_id:
            with _structure_only():
                fp = fingerprint(builder.build_model(spec))
            self.fp_of_id[sid] = fp
            self.ids_of_fp.setdefault(fp, set()).add(sid)
            self.example[sid] = spec.to_string()
        return self.fp_of_id[sid]

    @property
    def n_ids(self) -> int:
        return len(self.fp_of_id)

    @property
    def n_networks(self) -> int:
        return len(self.ids_of_fp)

    def aliases(self) -> list[list[str]]:
        """Groups of spec strings that build one network."""
        return [
            sorted(self.example[i] for i in ids) for ids in self.ids_of_fp.values() if len(ids) > 1
        ]


@dataclasses.dataclass
class Reach:
    """One field moved under one switch combination, and what happened."""

    kind: str
    switches: Mapping[str, Any]
    field: str
    outcome: str  # "changes" | "same network" | "rejected: does not apply" | "rejected: ..."
    declared_off: bool  # the spec's own rules say the field does not apply here


def _inapplicable(spec: Any) -> set[str]:
    rules = getattr(type(spec), "inapplicable", None)
    if rules is None:  # older code had no rules
        return set()
    from searchspace.serialize import to_dict

    return {path for path, _, _ in rules(to_dict(spec))}


def _combos(switches: Mapping[str, tuple[Any, ...]]) -> Iterator[dict[str, Any]]:
    keys = list(switches)
    for values in itertools.product(*switches.values()):
        yield dict(zip(keys, values))


def enumerations() -> dict[tuple[str, str], tuple[dict[str, tuple], dict[str, Any]]]:
    """(kind, part) -> (switches, moves) of every enumeration (V1 has no backbone part)."""
    return {
        ("v2", "main"): (V2_SWITCHES, V2_MOVES),
        ("v2", "peer"): (V2_PEER_SWITCHES, V2_PEER_MOVES),
        ("v2", "backbone"): (V2_BACKBONE_SWITCHES, V2_BACKBONE_MOVES),
        ("v1", "main"): (V1_SWITCHES, V1_MOVES),
        ("v1", "peer"): (V1_PEER_SWITCHES, V1_PEER_MOVES),
    }


def enumerate_reach(census: Census, kind: str, part: str = "main") -> tuple[list[Reach], int]:
    """Every switch combination x every other field moved; (results, invalid combos).
    ``part``: "main", "peer" (the reimplementations' switches) or "backbone" (V2's
    ImageNet backbones)."""
    base = BiSeNetV2Spec().replace(**V2_BASE_CHANGES) if kind == "v2" else BiSeNetV1Spec()
    switches, moves = enumerations()[(kind, part)]
    results: list[Reach] = []
    invalid = 0
    for combo in _combos(switches):
        try:
            spec = base.replace(**combo)
        except SpecError:
            invalid += 1
            continue
        fp = census.add(spec)
        off = _inapplicable(spec)
        for path, value in moves.items():
            if path in combo:
                continue
            try:
                moved = spec.replace(**{path: value})
            except SpecError as exc:
                why = "does not apply" if "does not apply" in str(exc) else str(exc)
                results.append(Reach(kind, combo, path, f"rejected: {why}", path in off))
                continue
            same = census.add(moved) == fp
            outcome = "same network" if same else "changes"
            results.append(Reach(kind, combo, path, outcome, path in off))
    return results, invalid


def _space_params(space: Any, rng: random.Random) -> dict[str, Any]:
    if hasattr(space, "random_params"):
        return space.random_params(rng)
    return {k: rng.choice(v) for k, v in space.choices.items()}  # older, flat spaces


def add_space_points(census: Census, name: str, n: int, seed: int = 0) -> dict[str, set]:
    """``n`` random points of a space; returns spec_id -> the distinct params giving it."""
    from searchspace.optuna_spaces import SPACES

    space = SPACES[name]
    rng = random.Random(seed)
    params_of_id: dict[str, set] = {}
    for _ in range(n):
        params = _space_params(space, rng)
        try:
            spec = space.to_spec(params)
        except SpecError:
            continue
        census.add(spec)
        params_of_id.setdefault(spec.spec_id, set()).add(tuple(sorted(params.items())))
    return params_of_id


def add_presets_and_tables(census: Census) -> None:
    from searchspace.tables import get_table, table_names

    for spec in PRESETS.values():
        census.add(spec)
    for table in table_names("all"):
        for row in get_table(table).rows:
            if row.spec is not None:
                census.add(row.spec)


def full_census(n_random: int = 200) -> tuple[Census, list[Reach]]:
    census = Census()
    reach: list[Reach] = []
    for kind, part in enumerations():
        reach += enumerate_reach(census, kind, part)[0]
    from searchspace.optuna_spaces import SPACES

    for name in ("v2-full", "v1-full"):
        if name in SPACES:
            add_space_points(census, name, n_random)
    add_presets_and_tables(census)
    return census, reach


if __name__ == "__main__":
    census, reach = full_census()
    print(f"distinct spec_ids: {census.n_ids}, distinct networks: {census.n_networks}")
    moved = [r for r in reach if not r.outcome.startswith("rejected")]
    same = [r for r in moved if r.outcome == "same network"]
    print(f"field moves that built: {len(moved)}, of which built the same network: {len(same)}")
    print(f"field moves rejected: {len(reach) - len(moved)}")
    by_field: dict[str, int] = {}
    for r in same:
        by_field[f"{r.kind} {r.field}"] = by_field.get(f"{r.kind} {r.field}", 0) + 1
    for key, count in sorted(by_field.items()):
        print(f"  {key}: {count} switch combinations where it changes nothing")
