"""What a study found: its trials as a frame, the best specs (exported as files every
command accepts as ``--spec``), the paper presets as reference points, hypervolume.

Plots are drawn by ``analysis.study_plots`` from what this module returns; the command
line (``__main__``) joins the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runners.search.config import SearchConfig
from runners.search.costs import Counts, LatencyMeter
from runners.search.setup import TrialSetup
from searchspace.atomic import json_text
from searchspace.outputs import make_output_dir, write_output


def trials_frame(study):
    """A tidy DataFrame of the study's trials with values named by objective."""
    import pandas as pd

    objectives = study.user_attrs.get("objectives", [])
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {
            "number": t.number,
            "state": t.state.name,
            **t.user_attrs,
            **{f"param_{k}": v for k, v in t.params.items()},
        }
        if t.values is not None:
            row.update(dict(zip(objectives, t.values)))
        rows.append(row)
    return pd.DataFrame(rows)


def pareto_specs(study) -> list[tuple[Any, dict[str, float]]]:
    """(spec, values) of the study's best trials (the Pareto front, or the best one)."""
    from searchspace.presets import parse_spec

    objectives = study.user_attrs.get("objectives", [])
    out = []
    seen = set()
    for t in study.best_trials:
        if t.user_attrs.get("spec_id") in seen:
            continue
        seen.add(t.user_attrs.get("spec_id"))
        out.append((parse_spec(t.user_attrs["spec"]), dict(zip(objectives, t.values))))
    return out


def export_best(study, out_dir: Path) -> list[Path]:
    """Write the front's specs as JSON files that every command accepts as --spec."""
    make_output_dir(out_dir)
    paths = []
    for rank, (spec, values) in enumerate(pareto_specs(study)):
        path = out_dir / f"{study.study_name}_{rank:02d}_{spec.spec_id}.json"
        write_output(path, spec.to_json(indent=2) + "\n")
        paths.append(path)
        write_output(out_dir / f"{path.stem}.values.json", json_text(values, sort_keys=False))
    return paths


REFERENCE_PRESETS = ("bisenetv2", "bisenetv2_l")


def reference_points(
    cfg: SearchConfig, presets: Sequence[str] = REFERENCE_PRESETS
) -> dict[str, dict[str, float]]:
    """The paper presets' values on the study's objectives, for the plots.

    Cost objectives are computed here (latency measured at the study's input and device
    unless a stored run has it); mIoU only when the store holds a finished run of the
    preset under the study's recipe, data and seed, so a preset is a point when it was
    trained like the trials and a line at its cost otherwise. The paper's own mIoU is on
    Cityscapes under another recipe, so it is never mixed in.
    """
    from searchspace.presets import get_preset

    setup = TrialSetup.of(cfg)
    latency = LatencyMeter(cfg, setup)
    out: dict[str, dict[str, float]] = {}
    for name in presets:
        spec = setup.adapt(get_preset(name))
        counts = Counts.of(spec, cfg.latency_hw)
        vals = {"gmacs": counts.gmacs, "params": counts.params}
        record = setup.store.record(setup.key(spec, cfg.train_seed)) or {}
        if record.get("status") == "ok":
            vals["miou"] = float(record["metrics"]["miou"])
        if "latency_ms" in cfg.objectives:
            vals["latency_ms"] = float(latency.profile(spec)["latency_ms"]["median"])
        out[name] = vals
    return out


def hypervolume(points: Sequence[tuple[float, float]], ref: tuple[float, float]) -> float:
    """2-D hypervolume for (maximise mIoU, minimise latency) against ``ref`` (miou, latency)."""
    pts = sorted((lat, miou) for miou, lat in points if miou > ref[0] and lat < ref[1])
    hv, base = 0.0, ref[0]
    # non-dominated points, fastest first: each dominates [lat, next lat) x [ref, miou]
    front: list[tuple[float, float]] = []
    for lat, miou in pts:
        if not front or miou > front[-1][1]:
            front.append((lat, miou))
    for i, (lat, miou) in enumerate(front):
        next_lat = front[i + 1][0] if i + 1 < len(front) else ref[1]
        hv += (next_lat - lat) * (miou - base)
    return hv
