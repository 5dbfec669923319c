"""Speed-accuracy plots in the manner of the V2 paper's Figure 1, from measured results.

Measured points (mean mIoU over seeds, error bar = sample std) and their Pareto front
(lower latency and higher mIoU) sit on one panel; the paper's own points sit on a second
panel because they were timed on another device (GTX 1080 Ti, TensorRT) and trained on
Cityscapes: the two are never drawn on one axis. Figures are drawn with matplotlib's
object API on the Agg canvas (no pyplot, so importing this module changes no global
backend) and saved as PNG and SVG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import matplotlib
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.tables import BuiltTable
from searchspace.outputs import make_output_dir, output_file
from searchspace.tables import PAPER_DIR

HEADLINE_CSV = PAPER_DIR / "bisenetv2_headline.csv"
XAxis = Literal["latency_ms", "fps"]


def points_from_table(table: BuiltTable) -> pd.DataFrame:
    """One point per measured row of a ``build_table`` result (rows without data dropped):
    label, latency_ms, fps, miou_pct, miou_std_pct, n_seeds."""
    sel = table.frame.dropna(subset=["latency_ms", "miou_pct"])
    latency = sel["latency_ms"].astype(float)
    out = pd.DataFrame(
        {
            "label": sel["row"].astype(str),
            "latency_ms": latency,
            "fps": 1000.0 / latency,
            "miou_pct": sel["miou_pct"].astype(float),
            "miou_std_pct": sel["miou_std_pct"].astype(float),
            "n_seeds": sel["n_seeds"],
        }
    )
    return out.reset_index(drop=True)


def paper_points(path: Path | str = HEADLINE_CSV) -> pd.DataFrame:
    """The paper's headline speed-accuracy points (val mIoU, FPS on its GPU)."""
    raw = pd.read_csv(path)
    out = pd.DataFrame(
        {
            "label": raw["model"],
            "fps": raw["fps"].astype(float),
            "miou_pct": raw["val_miou"].astype(float),
            "device": raw["gpu"],
        }
    )
    out["latency_ms"] = 1000.0 / out["fps"]
    return out


def pareto_front(points: pd.DataFrame, x: str = "latency_ms", y: str = "miou_pct") -> pd.DataFrame:
    """Points no other point beats on both cost and accuracy, sorted by ``x``.

    Higher is better for ``x`` only when it is FPS; lower for every cost (latency, GMACs,
    parameters). Higher is better for ``y`` (mIoU). Ties in cost keep the more accurate point.
    """
    if points.empty:
        return points.copy()
    faster_first = points.sort_values([x, y], ascending=[x != "fps", False])
    keep, best = [], float("-inf")
    for idx, value in faster_first[y].items():
        if value > best:
            keep.append(idx)
            best = value
    return points.loc[keep].sort_values(x)


def plot_speed_accuracy(
    points: pd.DataFrame,
    out_stem: Path | str,
    *,
    x: XAxis = "latency_ms",
    paper: pd.DataFrame | None = None,
    title: str = "Speed vs accuracy",
    measured_label: str = "measured",
) -> list[Path]:
    """Draw measured ``points`` (``points_from_*``) and save ``<out_stem>.png`` and ``.svg``.

    ``paper`` (e.g. ``paper_points()``) adds a separate panel for the paper's numbers.
    ``measured_label`` names the device and data of the measured panel. Returns the paths.
    """
    out_stem = Path(out_stem)
    x_label = "latency (ms, lower is faster)" if x == "latency_ms" else "frames per second"
    panels = 2 if paper is not None and not paper.empty else 1
    with matplotlib.rc_context({"svg.hashsalt": "bisenet-lab", "font.size": 9}):
        fig = Figure(figsize=(6.5 if panels == 1 else 11.0, 4.6), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, panels, squeeze=False)[0]
        _measured_panel(axes[0], points, x, x_label, measured_label)
        if panels == 2:
            _paper_panel(axes[1], paper, x, x_label)
        fig.suptitle(title)
        return save_png_svg(fig, out_stem)


def save_png_svg(fig: Any, stem: Path, dpi: int = 150, **savefig: Any) -> list[Path]:
    """Save ``stem.png`` and ``stem.svg``; the SVG is byte-stable (no date, fixed ids), so
    regenerated figures only show up in a diff when they changed."""
    paths = []
    make_output_dir(stem.parent)  # the first figure of a new report
    with matplotlib.rc_context({"svg.hashsalt": "bisenet-lab"}):
        for suffix in (".png", ".svg"):
            path = stem.with_suffix(suffix)
            meta = {"Date": None} if suffix == ".svg" else None
            with output_file(path) as tmp:  # a reader never sees half a figure
                fig.savefig(tmp, format=suffix[1:], dpi=dpi, metadata=meta, **savefig)
            paths.append(path)
    return paths


def _measured_panel(ax, points: pd.DataFrame, x: XAxis, x_label: str, label: str) -> None:
    ax.set_title(label, fontsize=9)
    ax.set_xlabel(x_label)
    ax.margins(0.1)
    ax.set_ylabel("mIoU (%)")
    ax.grid(True, alpha=0.3)
    if points.empty:
        ax.text(0.5, 0.5, "no measured points", ha="center", va="center", transform=ax.transAxes)
        return
    yerr = points["miou_std_pct"].fillna(0.0)
    ax.errorbar(
        points[x],
        points["miou_pct"],
        yerr=yerr,
        fmt="o",
        color="tab:blue",
        ecolor="tab:blue",
        capsize=3,
        label="measured (mean ± std over seeds)",
    )
    _label_points(ax, points, x, "miou_pct")
    front = pareto_front(points, x)
    ax.step(
        front[x],
        front["miou_pct"],
        where="post" if x == "latency_ms" else "pre",
        color="tab:orange",
        linewidth=1.2,
        label="Pareto front (measured)",
    )
    ax.legend(loc="lower right", fontsize=7)


def _label_points(
    ax,
    points: pd.DataFrame,
    x: str,
    y: str,
    offset: tuple[int, int] = (4, 4),
    fontsize: int = 7,
    suffix: str = "",
    **style: Any,
) -> None:
    """Each point's ``label`` beside it, ``offset`` points away."""
    for _, p in points.iterrows():
        ax.annotate(
            f"{p['label']}{suffix}", (p[x], p[y]), xytext=offset, textcoords="offset points",
            fontsize=fontsize, **style,
        )  # fmt: skip


def _paper_panel(ax, paper: pd.DataFrame, x: XAxis, x_label: str) -> None:
    devices = "; ".join(sorted(set(paper.get("device", pd.Series(["paper"])).astype(str))))
    ax.set_title(f"paper: Cityscapes val, timed on {devices} (another device)", fontsize=9)
    ax.set_xlabel(x_label + (" = 1000 / paper FPS" if x == "latency_ms" else ""))
    ax.margins(0.2)
    ax.set_ylabel("mIoU (%), paper")
    ax.grid(True, alpha=0.3)
    ax.scatter(paper[x], paper["miou_pct"], marker="*", s=90, color="tab:red", label="paper")
    _label_points(ax, paper, x, "miou_pct")
    ax.legend(loc="lower right", fontsize=7)


TABLE7_CSV = PAPER_DIR / "bisenetv2_table7.csv"


def table7_points(path: Any = TABLE7_CSV) -> pd.DataFrame:
    """The V2 paper's Table 7: every compared method's test mIoU and reported FPS."""
    with path.open("r", newline="", encoding="utf-8") as fh:
        raw = pd.read_csv(fh)
    raw["label"] = raw["method"] + raw["backbone"].map(
        lambda b: "" if b in ("no", "") or pd.isna(b) else f" ({b})"
    )
    return raw


def plot_figure1(
    out_stem: Path, measured: pd.DataFrame | None = None, paper: pd.DataFrame | None = None
) -> list[Path]:
    """The V2 paper's Figure 1 again: test mIoU against FPS for the methods of its Table 7.

    Methods without a reported FPS are left out (listed in the caption). ``measured``:
    this toolkit's own BiSeNet points (columns label, fps, miou_pct, device), drawn as
    open markers at the paper's mIoU of the same model, since only their speed is ours.
    """
    paper = table7_points() if paper is None else paper
    shown = paper.dropna(subset=["fps", "test_miou"])
    fig = Figure(figsize=(8.0, 5.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colours = {"large": "tab:gray", "small": "tab:blue"}
    for group, part in shown.groupby("group"):
        ours = part["ref"] == "this paper"
        ax.scatter(
            part.loc[~ours, "fps"],
            part.loc[~ours, "test_miou"],
            s=28,
            color=colours.get(str(group), "tab:blue"),
            label=f"{group} models (Table 7)",
        )
        if ours.any():
            ax.scatter(
                part.loc[ours, "fps"],
                part.loc[ours, "test_miou"],
                s=120,
                marker="*",
                color="tab:red",
                label="BiSeNetV2 (paper, GTX 1080 Ti)",
            )
    _label_points(ax, shown, "fps", "test_miou", offset=(3, 3), fontsize=6)
    if measured is not None and not measured.empty:
        for device, part in measured.groupby("device"):
            ax.scatter(
                part["fps"],
                part["miou_pct"],
                s=70,
                facecolors="none",
                edgecolors="tab:green",
                linewidths=1.5,
                label=f"BiSeNetV2 speed measured here ({device})",
            )
            _label_points(
                ax, part, "fps", "miou_pct", offset=(3, -9), fontsize=6, suffix=" (ours)",
                color="tab:green",
            )  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("FPS (log scale; as each method's own paper reports it, on its own device)")
    ax.set_ylabel("Cityscapes test mIoU (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    missing = ", ".join(sorted(paper.loc[paper["fps"].isna(), "method"].astype(str)))
    title = "BiSeNet V2 paper, Figure 1 regenerated from its Table 7"
    if missing:
        title += f"\n(no FPS reported: {missing})"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_png_svg(fig, out_stem)  # fmt: skip
