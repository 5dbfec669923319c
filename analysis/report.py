"""A Markdown report of stored results: paper vs measured tables, plots, claims, environment.

    python -m analysis.report --results-dir DIR [--recipe smoke] [--dataset ID]
                              [--tables 2,3a] --out report.md

Figures go to ``<out stem>_figures/`` beside the report, and each table also goes to
``<out stem>_tables/table_<id>.tex`` (booktabs, for a paper) and ``.csv`` (every column
unrounded, for a spreadsheet); all are linked relatively, so the folder can be moved or
committed as a whole. Everything is read from the records; no torch, nothing is run.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis.catalogue import all_claims
from analysis.claims import COST_KINDS, PAPER_SPREAD, Verdict, evaluate_claims
from analysis.cli import ArgumentParser, run_cli
from analysis.curves import (
    calibration,
    calibration_values,
    describe_calibration,
    plot_learning_curves,
    rank_agreement,
    seed_effect,
)
from analysis.plots import (
    paper_points,
    plot_figure1,
    plot_speed_accuracy,
    points_from_table,
    table7_points,
)
from analysis.records import load_stored_records
from analysis.settle import SettleCost, format_hours, settle_costs
from analysis.stats import MAX_SEEDS
from analysis.tables import (
    INITS,
    BuiltTable,
    as_recipe,
    build_table,
    dataset_classes,
    markdown_grid,
    pick_dataset,
    row_recipe_ids,
    to_csv,
    to_latex,
    to_markdown,
)
from searchspace.errors import SpecError, UsageError
from searchspace.outputs import make_output_dir, write_output
from searchspace.presets import get_preset
from searchspace.recipes import Recipe
from searchspace.table_files import loaded_table_files, table_from_arg, use_stored_table_files
from searchspace.tables import for_dataset, get_table, table_names

PROG = "analysis.report"


def parse_tables(text: str | None) -> list[str] | None:
    """``2,3a,my.toml`` -> ["2", "3a", "<my.toml's id>"] (a table file is loaded, and wins
    over the results folder's copies of its id); None -> None (every table with results)."""
    if not text:
        return None
    names = []
    for name in (t.strip() for t in text.split(",") if t.strip()):
        try:
            names.append(table_from_arg(name).table)
        except SpecError as exc:
            raise UsageError(str(exc)) from None
    return names


def _recipe_ids(recipe: Recipe, tables: Sequence[str]) -> set[str]:
    return {rid for t in tables for rid in row_recipe_ids(get_table(t).rows, recipe)}


def _environment_section(records: pd.DataFrame) -> str:
    cols = {
        "env_torch": "torch",
        "env_python": "python",
        "env_device": "device",
        "env_cpu": "cpu",
        "env_hostname": "host",
        "train_precision": "trained in",
        "latency_threads": "latency threads",
        "latency_dtype": "latency dtype",
    }
    if records.empty:
        return "No records.\n"
    sel = records[list(cols)].copy()
    sel["latency_threads"] = pd.to_numeric(sel["latency_threads"], errors="coerce").astype("Int64")
    sel = sel.astype("string")
    # a run trained without timing has no latency settings: "-", not unknown
    sel[["latency_threads", "latency_dtype"]] = sel[["latency_threads", "latency_dtype"]].fillna(
        "-"
    )
    sel = sel.fillna("?")
    counts = sel.value_counts(dropna=False).reset_index(name="records")
    body = [[str(v) for v in row] for row in counts.itertuples(index=False)]
    headers = [*cols.values(), "records"]
    return markdown_grid(headers, body, ["l"] * len(cols) + ["r"]) + "\n"


def _seeds_cell(v: Verdict) -> str:
    if v.seeds_needed is None:
        return ""
    return f">{MAX_SEEDS}" if v.seeds_needed > MAX_SEEDS else str(v.seeds_needed)


def _half_cell(v: Verdict) -> str:
    if v.claim.kind in COST_KINDS:
        return ""  # complexity does not depend on the budget
    if v.half_outcome is None:
        return "no curve"
    if v.budget_sufficient is False:
        return f"{v.half_outcome}: **budget not sufficient**"
    return v.half_outcome


def _lacking(table: BuiltTable) -> str:
    """Which measured rows come from records older than learning curves and per-image
    counts (they still give their final mIoU; they cannot give what they lack)."""
    values = table.seed_values
    no_curve = [r for r, v in values.items() if v.final and not v.half]
    no_counts = [r for r, v in values.items() if v.final and not v.per_image]
    notes = []
    if no_curve:
        notes.append(f"no learning curve (not every seed's record has one): {', '.join(no_curve)}")
    if no_counts:
        notes.append(f"no per-image counts in every seed's record: {', '.join(no_counts)}")
    return ("Rows from older records, " + "; ".join(notes) + ".\n") if notes else ""


# the paper's test mIoU of the presets whose speed this toolkit can measure (Table 7)
_FIGURE1_MODELS = {"bisenetv2": "BiSeNetV2", "bisenetv2_l": "BiSeNetV2-L"}
GPU_POINT_COLUMNS = ("label", "fps", "miou_pct", "device")


def measured_gpu_points(records: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """This toolkit's GPU latency of the paper's two models, at their paper test mIoU (the
    columns of ``GPU_POINT_COLUMNS``)."""
    rows = []
    for preset, method in _FIGURE1_MODELS.items():
        spec_id = get_preset(preset).spec_id
        sel = records[
            (records["spec_id"] == spec_id)
            & records["latency_device"].astype(str).str.startswith("cuda")
            & records["latency_ms"].notna()
        ]
        test = paper.loc[paper["method"] == method, "test_miou"]
        for device, part in sel.groupby(sel["env_device"].fillna(sel["latency_device"])):
            latency = float(part["latency_ms"].median())
            rows.append((method, 1000.0 / latency, float(test.iloc[0]), str(device)))
    return pd.DataFrame(rows, columns=list(GPU_POINT_COLUMNS))


def _figure1_section(records: pd.DataFrame, figures: Path, out: Path) -> str:
    paper = table7_points()
    measured = measured_gpu_points(records, paper)
    png, svg = (
        os.path.relpath(p, out.parent) for p in plot_figure1(figures / "figure1", measured, paper)
    )
    note = (
        "Test mIoU against FPS for every method of the V2 paper's Table 7, as the paper "
        "reports them: other methods' FPS come from their own papers, devices and input "
        "sizes, so the horizontal axis compares reported numbers, not one measurement. "
    )
    if measured.empty:
        note += (
            "No GPU latency of `bisenetv2` or `bisenetv2_l` is stored in these records, so "
            "no point of this toolkit's own is drawn."
        )
    else:
        devices = ", ".join(sorted(set(measured["device"])))
        note += (
            f"Open green markers: this toolkit's own latency of the same models on {devices}, "
            "placed at the paper's test mIoU (only their speed is measured here)."
        )
    return f"{note}\n\n![Figure 1]({png})\n\n([SVG]({svg}))\n"


def _calibration_section(
    records: pd.DataFrame, used: pd.DataFrame, recipe: Recipe, dataset_id: str
) -> str:
    """The default spec's seeds split in halves: how often the checker sees a difference
    between two halves of one and the same experiment; and how much seed luck the rows of
    the report (``used``) share, which decides whether pairing by seed pays."""
    spec = get_preset("bisenetv2")
    num_classes = dataset_classes(records, dataset_id) or spec.num_classes
    spec = for_dataset(spec, num_classes)
    values = calibration_values(records, spec.spec_id, recipe.recipe_id, dataset_id)
    intro = (
        f"The default spec (`bisenetv2`, {spec.spec_id}) under recipe {recipe.name}, "
        f"{len(values)} seed(s) stored. "
    )
    text = intro + "\n".join(describe_calibration(calibration(values))) + "\n"
    effect = seed_effect(used, dataset_id)
    return text + ("\n" + effect.describe() + "\n" if effect else "")


def _open_claims_table(costs: Sequence[SettleCost]) -> str:
    """The claims the sequential rule leaves open, cheapest to settle first."""
    if not costs:
        return "No accuracy claim is left open by the sequential rule.\n\n"
    headers = ["Open claim", "Seeds per row", "Runs to add", "CPU hours", "GPU hours", "Note"]
    body = []
    for c in costs:
        seeds = "" if c.seeds_per_row is None else (
            f">{c.seeds_per_row - 1}" if c.capped else str(c.seeds_per_row))  # fmt: skip
        note = []
        if c.pairing:
            note.append("first gives the rows the same seeds; the rule then sizes the rest")
        if c.capped:
            note.append("not settled by seeds within the cap")
        if c.reason:
            note.append(c.reason)
        if c.bound is not None:
            note.append(f"already excludes differences beyond +-{c.bound:.2f} points")
        body.append([
            f"`{c.claim_id}`", seeds, "" if c.runs_to_add is None else str(c.runs_to_add),
            "" if c.cpu_hours is None else format_hours(c.cpu_hours),
            "not measured" if c.gpu_hours is None else format_hours(c.gpu_hours),
            "; ".join(note),
        ])  # fmt: skip
    grid = markdown_grid(headers, body, ["l", "r", "r", "r", "r", "l"])
    return (
        "Open claims, cheapest to settle first (`python -m runners.ablate --table T --settle "
        "CLAIM` runs the seeds; hours from the rows' own stored train times, per run, on the "
        "devices that trained them):\n\n" + grid + "\n\n"
    )


def _claims_section(verdicts: Sequence[Verdict], costs: Sequence[SettleCost] = ()) -> str:
    headers = ["Claim", "Table", "Measured (fixed n)", "Sequential", "Numbers", "Seeds needed",
               "At half budget", "On the paper's numbers"]  # fmt: skip
    body = [
        [
            f"{v.claim.text} (`{v.claim.id}`)",
            v.claim.table,
            f"**{v.outcome}**",
            v.sequential_outcome or "",
            v.detail,
            _seeds_cell(v),
            _half_cell(v),
            f"{v.paper_outcome}: {v.paper_detail}",
        ]
        for v in verdicts
    ]
    tally = pd.Series([v.outcome for v in verdicts]).value_counts()
    summary = ", ".join(f"{n} {k}" for k, n in tally.items())
    unsure = [v.claim.id for v in verdicts if v.budget_sufficient is False]
    budget = (
        f"**The training budget was not sufficient for {len(unsure)} verdict(s)** "
        f"({', '.join(unsure)}): their answer at half the budget differs from the answer at "
        "the end, so a longer budget may change them again.\n\n"
        if unsure
        else ""
    )
    rule = (
        "Rule (`analysis/stats.py`): a row is better only when the 95% interval of the "
        "difference of mean mIoU excludes zero (the t interval of the per-seed differences "
        "when both rows have the same seeds; otherwise Welch's t interval on all seeds of "
        "each, and a single-seed row borrows the table's pooled seed spread); otherwise the verdict "
        "is *inconclusive*, with the "
        "seeds per row that would settle a difference of the observed size (80% power). With "
        "no true difference a verdict is wrong at most 5% of the time; a claim that any of "
        "k comparisons could contradict (the best of several rows; a trend, by any step "
        "or by its last row against its first) needs that comparison at the Bonferroni "
        "level 1 - 0.05/k, which keeps the claim "
        'at 5% too. "No worse" claims '
        "are equivalence tests against a 1-point margin. Cost claims compare exact MAC "
        "counts. The last column treats the paper's single runs the same way with an "
        f"**assumed** run-to-run standard deviation of {PAPER_SPREAD.sd:g} point "
        f"({PAPER_SPREAD.source})."
    )
    sequential = (
        "Two rules, and which is which. *Measured (fixed n)* is right only when the seed "
        "count was fixed before anyone looked. *Sequential* (a confidence sequence, Lai's "
        "t-mixture on the per-seed differences of rows with the same seeds) stays within 5% "
        "false verdicts however often the results were looked at with seeds added in "
        "between, which is what adding seeds to an inconclusive claim does; expect some "
        "fixed-n *supported* verdicts to be inconclusive under it. Rows without the same "
        "seeds are inconclusive under it until `--settle` pairs them."
    )
    grid = markdown_grid(headers, body, ["l"] * len(headers))
    return f"{summary}.\n\n{_open_claims_table(costs)}{budget}{rule}\n\n{sequential}\n\n{grid}\n"


def _table_files(table: BuiltTable, stem: Path, out: Path) -> str:
    """Write the table as LaTeX and CSV beside the report (the README promises both; a
    paper wants the one, a spreadsheet the other) and link them."""
    tex, csv = stem.with_suffix(".tex"), stem.with_suffix(".csv")
    make_output_dir(stem.parent)
    write_output(tex, to_latex(table))
    write_output(csv, to_csv(table))
    tex_rel, csv_rel = (os.path.relpath(p, out.parent) for p in (tex, csv))
    return f"Also as [LaTeX]({tex_rel}) and [CSV]({csv_rel}).\n"


def render_report(
    records: pd.DataFrame,
    out: Path | str,
    *,
    recipe: Recipe | str = "smoke",
    dataset_id: str | None = None,
    tables: Sequence[str] | None = None,
    source: str = "",
    problems: Sequence[str] = (),
    init: str = "scratch",
) -> str:
    """The report's Markdown for ``records`` (``load_records``); figures are written now.

    ``tables=None`` takes every table with at least one matching record. ``problems``: the
    files ``load_records`` skipped, listed in the report. ``init="pretrained"``: rows
    with runs from pretrained weights show those (``build_table``).
    """
    out = Path(out)
    base = as_recipe(recipe)
    # with no tables named: the papers' and the user tables loaded (the folder's copies)
    names = list(tables) if tables else [*table_names(), *(t.id for t in loaded_table_files())]
    if dataset_id is not None and dataset_id not in set(records["dataset_id"]):
        present = ", ".join(sorted(set(records["dataset_id"].dropna()))) or "none"
        raise UsageError(f"no records on dataset {dataset_id!r} (datasets present: {present})")
    if dataset_id is None:
        dataset_id = pick_dataset(records, _recipe_ids(base, names))
    if dataset_id is None:
        present = ", ".join(sorted(set(records["recipe_name"].dropna().astype(str)))) or "none"
        raise UsageError(
            f"no records for recipe {base.name} ({base.recipe_id}) in these tables "
            f"(recipes present: {present}); choose one with --recipe"
        )
    built = {t: build_table(t, records, base, dataset_id, init) for t in names}
    if not tables:
        built = {
            t: f
            for t, f in built.items()
            if (f.frame["n_seeds"].fillna(0) + f.frame["n_failed"].fillna(0)).sum()
        }
    if not built:
        raise UsageError(f"no records for recipe {base.name} on dataset {dataset_id!r}")
    used_ids = _recipe_ids(base, list(built))
    used = records[(records["dataset_id"] == dataset_id) & records["recipe_id"].isin(used_ids)]
    first = next(iter(built.values()))
    label, builtin = first.dataset_label, first.is_builtin

    figures = out.parent / f"{out.stem}_figures"
    parts = [
        "# BiSeNet V2 ablations: the paper's numbers beside measured ones\n",
        f"Generated {_dt.datetime.now(_dt.UTC).isoformat(timespec='seconds')} from "
        f"`{source or 'records'}`; recipe **{base.name}** (`{base.recipe_id}`); "
        f"dataset **{label}** (`{dataset_id}`).\n",
    ]
    if builtin:
        parts.append(
            "> **WARNING: these results are on the toolkit's built-in SYNTHETIC street "
            "scenes, NOT on Cityscapes.** Measured mIoU is not comparable with the paper's "
            "numbers; only the ordering of rows measured here, and the complexity columns, "
            "can be compared.\n"
        )
    n_ok = int((used["status"] == "ok").sum())
    parts.append(
        f"## Records\n\n{len(used)} records used ({n_ok} ok, {len(used) - n_ok} failed); "
        f"{len(records) - len(used)} other records in the folder (other recipe, dataset or "
        "table) are not part of this report.\n"
    )
    if problems:
        parts.append("Skipped files:\n\n" + "\n".join(f"- {p}" for p in problems) + "\n")

    tables_dir = out.parent / f"{out.stem}_tables"
    for name, table in built.items():
        parts.append(to_markdown(table, heading_level=2))
        parts.append(_table_files(table, tables_dir / f"table_{name}", out))
        points = points_from_table(table)  # rows with both latency and mIoU
        if not points.empty:
            device = "; ".join(table.latency_setups or ["unknown device"])
            paths = plot_speed_accuracy(
                points,
                figures / f"table_{name}",
                paper=paper_points(),
                title=f"Table {name}: speed vs accuracy",
                measured_label=f"measured on {device}; data: {label}",
            )
            png, svg = (os.path.relpath(p, out.parent) for p in paths)
            parts.append(f"![Table {name}: speed vs accuracy]({png})\n\n([SVG]({svg}))\n")
        else:
            parts.append("No speed-accuracy plot: no row has both a latency and an mIoU.\n")
        curves = plot_learning_curves(
            table, used, figures / f"curves_{name}", f"Table {name}: learning curves"
        )
        if curves:
            png, svg = (os.path.relpath(p, out.parent) for p in curves)
            parts.append(f"![Table {name}: learning curves]({png})\n\n([SVG]({svg}))\n")
        parts.append(f"Rank agreement of the rows: {rank_agreement(table).describe()}.\n")
        lacking = _lacking(table)
        if lacking:
            parts.append(lacking)

    parts.append("## Claims\n")
    if builtin:
        parts.append(f"The measured verdicts are about {label}, not about Cityscapes.\n")
    if init != "scratch":
        parts.append(
            "Claims are judged on the runs the tables show: pretrained where a row has them.\n"
        )
    verdicts = evaluate_claims(records, base, dataset_id, all_claims(), init)
    costs = settle_costs(verdicts, records, base, dataset_id, init=init)
    parts.append(_claims_section(verdicts, costs))
    parts.append("## The paper's Figure 1, regenerated\n")
    parts.append(_figure1_section(records, figures, out))
    parts.append("## Calibration of the verdicts\n")
    parts.append(_calibration_section(records, used, base, dataset_id))
    parts.append("## Environment of the measurements\n")
    parts.append(_environment_section(used))
    return "\n".join(parts)


def write_report(
    results_dir: Path | str,
    out: Path | str,
    *,
    recipe: Recipe | str = "smoke",
    dataset_id: str | None = None,
    tables: Sequence[str] | None = None,
    init: str = "scratch",
) -> Path:
    """Load the records of ``results_dir`` and write the report to ``out``; returns ``out``."""
    results_dir, out = Path(results_dir), Path(out)
    recipe = as_recipe(recipe)  # a bad recipe text is the first thing reported
    problems: list[str] = []
    records = load_stored_records(results_dir, problems)
    use_stored_table_files(results_dir)  # the user tables run into this folder, and claims
    make_output_dir(out.parent, f"report {out}")  # before any figure: a bad --out fails first
    text = render_report(
        records,
        out,
        recipe=recipe,
        dataset_id=dataset_id,
        tables=tables,
        source=str(results_dir),
        problems=problems,
        init=init,
    )
    write_output(out, text, f"report {out}")
    return out


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n", 1)[0])
    parser.add_argument("--results-dir", required=True, type=Path, help="results folder")
    parser.add_argument("--recipe", default="smoke", help="base recipe (smoke, paper, smoke:k=v)")
    parser.add_argument("--dataset", default=None, help="dataset id (default: the only one)")
    parser.add_argument(
        "--init", choices=INITS, default="scratch",
        help="scratch: the runs trained from scratch (default); pretrained: for rows that"
        " have them, the runs that started from pretrained weights (ablate --pretrained)",
    )  # fmt: skip
    parser.add_argument(
        "--tables", "--table", default=None,
        help="e.g. 2,3a or a .toml table file (default: all with results, and the user tables"
        " the folder keeps in tables/)",
    )  # fmt: skip
    parser.add_argument(
        "--out", required=True, type=Path,
        help="the Markdown file to write; beside it, OUT-STEM_figures/ (PNG and SVG plots) and"
        " OUT-STEM_tables/ (each table as table_ID.tex and table_ID.csv)",
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = write_report(
        args.results_dir,
        args.out,
        recipe=args.recipe,
        dataset_id=args.dataset,
        tables=parse_tables(args.tables),
        init=args.init,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
