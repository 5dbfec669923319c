"""Was the training budget enough? Learning curves, rank agreement, and a calibration check.

- ``plot_learning_curves``: val mIoU against training images seen, one line per table row
  (the mean over seeds) with a band from the lowest to the highest seed. The points are
  the records' ``train.curve`` (after 1/4, 1/2 and all of the budget).
- ``rank_agreement``: Kendall's tau between the rows' mean mIoU at half the budget and at
  the end (``scipy.stats.kendalltau``). Near 1: the ranking had settled by half the
  budget, so doubling it again is unlikely to reorder the rows; low: it had not.
- ``calibration``: one spec trained with 6 seeds, split into two halves of 3 in each of
  the 10 ways, every pair compared with ``stats.compare``. The halves are the same
  network under the same recipe, so a calibrated checker calls (almost) all of them
  inconclusive; the count of decided splits is the check.
- ``seed_effect``: how much of the seed-to-seed spread the rows share (``stats.seed_icc``
  over the rows that have the same seeds), which says whether pairing rows by seed pays.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats as sps

from analysis.columns import Column, frame_of
from analysis.plots import save_png_svg
from analysis.stats import Comparison, compare, seed_icc
from analysis.tables import BuiltTable

# A learning-curve point of one run: (the run's record row, the point of its curve).
_RunPoint = tuple[Mapping[str, Any], Mapping[str, Any]]
CURVE_COLUMNS: tuple[Column[_RunPoint], ...] = (
    Column("spec_id", lambda rp: rp[0]["spec_id"]),
    Column("recipe_id", lambda rp: rp[0]["recipe_id"]),
    Column("dataset_id", lambda rp: rp[0]["dataset_id"]),
    Column("seed", lambda rp: rp[0]["seed"]),
    Column("iteration", lambda rp: rp[1].get("iteration")),
    Column("images", lambda rp: rp[1].get("images")),
    Column("miou_pct", lambda rp: 100.0 * float(rp[1]["miou"])),
)


def curve_points(records: pd.DataFrame) -> pd.DataFrame:
    """Long frame of every learning-curve point, the columns of ``CURVE_COLUMNS`` (ok
    records with a curve only)."""
    points: list[_RunPoint] = []
    for rec in records[records["status"] == "ok"].to_dict("records"):
        curve = rec.get("curve")
        if not isinstance(curve, list):
            continue
        points += [(rec, point) for point in curve if point.get("miou") is not None]
    return frame_of(points, CURVE_COLUMNS)


def plot_learning_curves(
    table: BuiltTable, records: pd.DataFrame, out_stem: Path, title: str
) -> list[Path] | None:
    """One line per row of a ``build_table`` result; None when no row has a curve."""
    points = curve_points(records[records["dataset_id"] == table.dataset_id])
    fig = Figure(figsize=(7.0, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    drawn = 0
    # training images seen; records whose curve lacks them are drawn against iterations
    x = "images" if points["images"].notna().all() else "iteration"
    points = points.assign(**{x: points[x].astype(float)})
    for rec in table.frame.dropna(subset=["spec_id"]).to_dict("records"):
        mine = points[
            (points["spec_id"] == rec["spec_id"]) & (points["recipe_id"] == rec["recipe_id"])
        ]
        if mine.empty:
            continue
        by = mine.groupby(x)["miou_pct"]
        agg = pd.DataFrame({"mean": by.mean(), "lo": by.min(), "hi": by.max(), "n": by.size()})
        (line,) = ax.plot(agg.index, agg["mean"], marker="o", markersize=3, label=rec["row"])
        ax.fill_between(agg.index, agg["lo"], agg["hi"], color=line.get_color(), alpha=0.15)
        drawn += 1
    if not drawn:
        return None
    ax.set_xlabel("training images seen" if x == "images" else "training iterations")
    ax.set_ylabel("val mIoU (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"{title} (line: mean over seeds; band: lowest to highest seed)", fontsize=9)
    fig.tight_layout()
    return save_png_svg(fig, out_stem)


@dataclass(frozen=True)
class RankAgreement:
    tau: float | None  # Kendall's tau of the row means, half budget vs end
    n_rows: int
    p_value: float | None

    def describe(self) -> str:
        if self.tau is None:
            return f"not available ({self.n_rows} rows with both points; need 3)"
        return (
            f"Kendall tau {self.tau:+.2f} over {self.n_rows} rows (p = {self.p_value:.2g}) "
            "between the row means at half the budget and at the end"
        )


def rank_agreement(table: BuiltTable) -> RankAgreement:
    """How much the rows' ranking changed over the last doubling of the budget."""
    pairs = [
        (sum(v.half) / len(v.half), sum(v.final) / len(v.final))
        for v in table.seed_values.values()
        if v.half and v.final
    ]
    if len(pairs) < 3:
        return RankAgreement(None, len(pairs), None)
    half, final = zip(*pairs)
    result = sps.kendalltau(half, final)
    tau = float(result.statistic)
    return RankAgreement(tau if math.isfinite(tau) else None, len(pairs), float(result.pvalue))


@dataclass(frozen=True)
class Calibration:
    seeds: tuple[int, ...]
    splits: tuple[tuple[tuple[int, ...], tuple[int, ...], Comparison], ...]

    @property
    def decided(self) -> int:
        return sum(c.decided for _, _, c in self.splits)


def calibration(values_by_seed: dict[int, float], half: int = 3) -> Calibration | None:
    """Every split of 2 x ``half`` seeds into two halves (each split once), compared."""
    seeds = tuple(sorted(values_by_seed))[: 2 * half]
    if len(seeds) < 2 * half:
        return None
    splits = []
    for left in itertools.combinations(seeds, half):
        if seeds[0] not in left:  # (A, B) and (B, A) are one split
            continue
        right = tuple(s for s in seeds if s not in left)
        comp = compare([values_by_seed[s] for s in left], [values_by_seed[s] for s in right])
        splits.append((left, right, comp))
    return Calibration(seeds, tuple(splits))


def calibration_values(
    records: pd.DataFrame, spec_id: str, recipe_id: str, dataset_id: str
) -> dict[int, float]:
    """seed -> mIoU (%) of one spec's ok runs under one recipe on one dataset."""
    sel = records[
        (records["spec_id"] == spec_id)
        & (records["recipe_id"] == recipe_id)
        & (records["dataset_id"] == dataset_id)
        & (records["status"] == "ok")
    ].dropna(subset=["miou"])
    return {int(r["seed"]): 100.0 * float(r["miou"]) for r in sel.to_dict("records")}


@dataclass(frozen=True)
class SeedEffect:
    """``stats.seed_icc`` over ``rows`` rows that all have ``seeds``."""

    icc: float
    rows: int
    seeds: tuple[int, ...]

    def describe(self) -> str:
        return (
            f"Seed luck shared by rows: ICC {self.icc:+.2f} over {self.rows} rows with seeds "
            f"{', '.join(map(str, self.seeds))} (the share of the seed-to-seed spread that rows "
            "trained with the same seed have in common; 1: a seed lifts or sinks every row "
            "alike, 0: each row has its own luck). Pairing by seed removes that share and "
            "costs degrees of freedom: rows with the same seeds are compared paired, rows with "
            "different seeds unpaired with all their seeds (`analysis/stats.py`)."
        )


def seed_effect(records: pd.DataFrame, dataset_id: str) -> SeedEffect | None:
    """ICC of the ok runs' mIoU, rows = (spec, recipe). Uses seeds 0..k-1 and the rows that
    have all of them, for the k (>= 3) that leaves the most error degrees of freedom
    ((rows - 1)(k - 1)); None with fewer than 3 such rows."""
    ok = records[(records["status"] == "ok") & (records["dataset_id"] == dataset_id)]
    ok = ok.dropna(subset=["miou"])
    if ok.empty:
        return None
    table = ok.pivot_table(index=["spec_id", "recipe_id"], columns="seed", values="miou")
    best: tuple[int, pd.DataFrame] | None = None
    for k in range(3, int(table.columns.max()) + 2):
        seeds = list(range(k))
        if not set(seeds) <= set(table.columns):
            break
        full = table[seeds].dropna()
        df = (len(full) - 1) * (k - 1)
        if len(full) >= 3 and (best is None or df > best[0]):
            best = (df, full)
    if best is None:
        return None
    full = best[1]
    seeds = tuple(int(s) for s in full.columns)
    return SeedEffect(seed_icc(100.0 * full.to_numpy()), len(full), seeds)


def describe_calibration(cal: Calibration | None, needed: int = 6) -> Sequence[str]:
    if cal is None:
        return [f"Not available: it needs {needed} seeds of the default spec."]
    lines = [
        f"Seeds {', '.join(map(str, cal.seeds))}: {len(cal.splits)} splits into two halves; "
        f"**{cal.decided} of {len(cal.splits)}** called anything but inconclusive "
        "(a calibrated checker: 0 or 1).",
        "",
        "| half A | half B | diff (A - B) | 95% CI | verdict |",
        "|---|---|---:|---|---|",
    ]
    for left, right, c in cal.splits:
        lo, hi = c.ci
        lines.append(
            f"| {', '.join(map(str, left))} | {', '.join(map(str, right))} | {c.diff:+.2f} "
            f"| [{lo:+.2f}, {hi:+.2f}] | {c.verdict} |"
        )
    return lines
