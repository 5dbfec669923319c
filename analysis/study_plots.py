"""Plots of an Optuna study: Pareto front, hypervolume over trials, parameter importances.

Uses Optuna's matplotlib backend (no plotly needed); Optuna itself needs no torch, so this
stays within analysis/'s rule.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from analysis.plots import pareto_front, save_png_svg
from searchspace.outputs import make_output_dir


def _save(fig: Any, stem: Path) -> list[Path]:
    paths = save_png_svg(fig, stem, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return paths


def plot_front(
    frame: pd.DataFrame, objectives: list[str], stem: Path, reference: dict[str, dict[str, float]]
) -> list[Path]:
    """Measured trials (grey), the non-dominated ones joined; reference specs as stars or lines."""
    x, y = objectives[1], objectives[0]
    done = frame[frame["state"] == "COMPLETE"].dropna(subset=[x, y])
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.scatter(done[x], done[y] * (100 if y == "miou" else 1), c="0.6", s=22, label="trials")
    front = pareto_front(done, x, y)
    ax.step(
        front[x],
        front[y] * (100 if y == "miou" else 1),
        where="post",
        c="C3",
        lw=1.5,
        label="Pareto front",
    )
    ax.scatter(front[x], front[y] * (100 if y == "miou" else 1), c="C3", s=30, zorder=3)
    for i, (name, vals) in enumerate(reference.items()):
        if x not in vals:
            continue
        if y in vals:  # trained like the trials: a point
            yv = vals[y] * (100 if y == "miou" else 1)
            ax.scatter([vals[x]], [yv], marker="*", s=120, c=f"C{i}", zorder=4, label=name)
        else:  # only its cost is known here: a line
            ax.axvline(vals[x], ls="--", lw=0.8, c=f"C{i}")
            ax.text(
                vals[x], ax.get_ylim()[0], f" {name}", rotation=90, va="bottom", fontsize=7,
                c=f"C{i}",
            )  # fmt: skip
    ax.set_xlabel(x)
    ax.set_ylabel("mIoU (%)" if y == "miou" else y)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, stem)


def plot_study(
    study: Any, frame: pd.DataFrame, out_dir: Path, reference: dict[str, dict[str, float]]
) -> list[Path]:
    import optuna.visualization.matplotlib as ovm

    make_output_dir(out_dir)
    objectives = list(study.user_attrs.get("objectives", []))
    paths: list[Path] = []
    name = study.study_name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks these plots experimental
        if len(objectives) == 2 and "miou" in objectives and not frame.empty:
            other = next(o for o in objectives if o != "miou")
            paths += plot_front(frame, ["miou", other], out_dir / f"{name}_pareto", reference)
            directions = study.directions
            done = frame[frame["state"] == "COMPLETE"]
            ref = [_nadir(done, o, d.name == "MAXIMIZE") for d, o in zip(directions, objectives)]
            if all(r is not None for r in ref):
                ax = ovm.plot_hypervolume_history(study, reference_point=ref)
                paths += _save(ax.figure, out_dir / f"{name}_hypervolume")
        complete = frame[frame["state"] == "COMPLETE"] if not frame.empty else frame
        if len(complete) >= 3:
            target = None
            if len(objectives) > 1:
                idx = objectives.index("miou") if "miou" in objectives else 0

                def target(t: Any, i: int = idx) -> float:
                    return t.values[i]

            try:
                ax = ovm.plot_param_importances(
                    study, target=target, target_name=objectives[0] if target is None else "miou"
                )
                paths += _save(ax.figure, out_dir / f"{name}_importances")
            except (RuntimeError, ValueError) as exc:  # too few distinct values
                warnings.warn(f"no parameter importances: {exc}", stacklevel=2)
    return paths


def nadir(values: Sequence[float], maximize: bool) -> float:
    """A hypervolume reference: the worst value seen, pushed 10% of the range further out.

    A reference at mIoU 0 would let any single trial score most of the hypervolume and
    flatten the curve; the trials' nadir keeps it informative (the search benchmark and
    the hypervolume plot both use this rule).
    """
    lo, hi = float(min(values)), float(max(values))
    span = (hi - lo) or abs(hi) or 1.0
    return lo - 0.1 * span if maximize else hi + 0.1 * span


def _nadir(frame: pd.DataFrame, column: str, maximize: bool) -> float | None:
    if column not in frame or frame[column].dropna().empty:
        return None
    return nadir(frame[column].dropna().tolist(), maximize)
