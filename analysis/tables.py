"""A paper table beside the measured one: match records to rows, aggregate seeds, render.

A row's run is identified by the spec and recipe ``PaperRow.run_for`` gives it on the
records' dataset (the classifier sized for the dataset's classes; the row's recipe
changes applied, e.g. Table 2's OHEM loss): the same function the ablation planned the
runs with, so a 5-class folder dataset's runs are found under their own spec_id.
Seeds are aggregated (mean, sample std, n); complexity is deterministic, so any record of
the row gives it. Numbers stay raw in the frame (units in the column names) and are
rounded only by the renderers. When the data is the built-in synthetic set, measured
mIoU is not comparable with the paper's Cityscapes numbers: the delta column is left
blank and every rendering says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from analysis.columns import typed_frame
from searchspace.atomic import write_text
from searchspace.errors import UsageError
from searchspace.recipes import Recipe, parse_recipe
from searchspace.tables import PaperRow, get_table

# Every column of a built table, in order, with its dtype (None: as built): counts are
# nullable Int64, measurements float64, the rest as the rows give them.
TABLE_DTYPES: Mapping[str, str | None] = {
    "table": None,
    "row": None,
    "setting": None,
    "spec_string": None,
    "spec_id": None,
    "recipe_changes": None,
    "recipe_id": None,
    "params": "Int64",
    "params_m": "float64",
    "macs": "Int64",
    "gmacs_paper": "float64",
    "gmacs": "float64",
    "gmacs_delta_pct": "float64",
    "latency_ms": "float64",
    "latency_contended": None,
    "miou_pct": "float64",
    "miou_std_pct": "float64",
    "n_seeds": "Int64",
    "n_failed": "Int64",
    "miou_paper_pct": "float64",
    "miou_delta_pts": "float64",
    "status": None,
    "confidence": None,
    "note": None,
    # where the measured runs' backbone started: "scratch" or "layout@sha256[:12]"
    "init": None,
    # the paper's: "imagenet" for rows it initialised from ImageNet weights, else None
    "paper_init": None,
}
TABLE_COLUMNS = tuple(TABLE_DTYPES)


@dataclass(frozen=True)
class RowSeeds:
    """One row's ok runs that have an mIoU, in seed order: the per-seed values the claims
    compare (pairing rows by seed) and ``--settle`` extends."""

    seeds: tuple[int, ...] = ()
    final: tuple[float, ...] = ()  # mIoU (%) at the end of training
    precision: tuple[str, ...] = ()  # what each seed trained in ("?": not recorded)
    # mIoU (%) at half the budget: only when every seed has the point, else empty
    half: tuple[float, ...] = ()
    # per-image counts ({"ids", "intersection", "union"}) of every seed, only when every
    # seed has them, else empty
    per_image: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, eq=False)  # eq=False: a frame has no single truth value to compare
class BuiltTable:
    """A paper table beside the measured records (``build_table``): the frame, one row per
    paper row, and what the renderers, claims and plots need to know about it, typed
    (a DataFrame's ``attrs`` would carry it untyped, and copy it along every operation)."""

    frame: pd.DataFrame  # the columns of TABLE_COLUMNS
    table: str
    title: str
    recipe_name: str
    recipe_id: str
    dataset_id: str | None  # None: no records for these recipes
    dataset_label: str
    is_builtin: bool
    input_hw: tuple[int, int]  # the paper's input size, at which GMACs are compared
    comparable: bool  # measured mIoU comparable with the paper's (Cityscapes)
    latency_setups: tuple[str, ...]  # how latency was measured, one line per setup
    # training precision -> ok runs: a table can mix them (amp is bf16 only on CPUs with
    # native bf16 kernels)
    precisions: Mapping[str, int]
    # the device each ok run trained on -> runs: runs of one table may come from several
    # nodes of a cluster (--launcher slurm)
    train_devices: Mapping[str, int]
    seed_values: Mapping[str, RowSeeds]  # per runnable row (unsupported rows have none)
    n_records: int  # records matched to the rows, ok and failed

    def seeds_of(self, row: str) -> RowSeeds:
        """The row's per-seed values (none for a row without runs)."""
        return self.seed_values.get(row, RowSeeds())


def as_recipe(recipe: Recipe | str) -> Recipe:
    """A Recipe, or a recipe text as the command line takes it (``smoke``, ``smoke:budget=400``)."""
    return recipe if isinstance(recipe, Recipe) else parse_recipe(recipe)


INITS = ("scratch", "pretrained")


def row_runs(records: pd.DataFrame, spec_id: str, recipe_id: str, init: str) -> pd.DataFrame:
    """The records a table row shows: its network under its row recipe (a pretrained run
    through ``base_recipe_id``); with ``init="pretrained"`` its runs from a weights file
    when it has any, else its scratch runs. Tables, claims and their costs all use this."""
    mine = records[(records["spec_id"] == spec_id) & (records["base_recipe_id"] == recipe_id)]
    pretrained = mine["pretrained"].notna()
    return mine[pretrained] if init == "pretrained" and pretrained.any() else mine[~pretrained]


def row_recipe_ids(rows: Iterable[PaperRow], recipe: Recipe) -> set[str]:
    """The recipe ids runnable ``rows`` run with (which, unlike their specs, do not depend
    on the dataset: used to find the dataset among the records)."""
    return {
        row.run_for(recipe, row.spec.num_classes)[1].recipe_id
        for row in rows
        if row.spec is not None
    }


def dataset_classes(records: pd.DataFrame, dataset_id: str | None) -> int | None:
    """The number of classes the records say ``dataset_id`` has (None if none say)."""
    if dataset_id is None:
        return None
    values = records.loc[records["dataset_id"] == dataset_id, "num_classes"].dropna()
    return int(values.iloc[0]) if len(values) else None


def is_builtin_dataset(dataset_id: str) -> bool:
    """Fallback when no record says: the built-in synthetic data ids start with ``synth``."""
    return dataset_id.startswith("synth")


def pick_dataset(records: pd.DataFrame, recipe_ids: set[str] | None = None) -> str | None:
    """The one dataset the records (of these recipes) are on; UsageError if several."""
    sel = records if recipe_ids is None else records[records["base_recipe_id"].isin(recipe_ids)]
    ids = sorted(set(sel["dataset_id"].dropna()))
    if len(ids) > 1:
        raise UsageError(
            f"records cover several datasets; choose one with --dataset ({', '.join(ids)})"
        )
    return ids[0] if ids else None


def _dataset_meta(records: pd.DataFrame, dataset_id: str | None) -> tuple[str, bool, bool]:
    """(label, built-in?, comparable with the paper's Cityscapes numbers?)."""
    if dataset_id is None:
        return "no data", False, False
    sel = records[records["dataset_id"] == dataset_id]
    labels = sel["dataset_label"].dropna()
    builtin = sel["is_builtin"].dropna()
    kinds = sel["dataset_kind"].dropna()
    label = str(labels.iloc[0]) if len(labels) else dataset_id
    is_builtin = bool(builtin.iloc[0]) if len(builtin) else is_builtin_dataset(dataset_id)
    # records written before the kind was stored: any dataset but the built-in one counted
    comparable = str(kinds.iloc[0]) == "cityscapes" if len(kinds) else not is_builtin
    return label, is_builtin, comparable


def _first(series: pd.Series) -> Any:
    values = series.dropna()
    return values.iloc[0] if len(values) else None


def _latency_setups(records: pd.DataFrame) -> list[str]:
    """How latency was measured, one line per distinct setup among the records."""
    cols = [
        "latency_device",
        "latency_threads",
        "latency_dtype",
        "latency_input_hw",
        "latency_batch",
    ]
    sel = records.dropna(subset=["latency_ms"])
    out = []
    for values, _ in sel.groupby(cols, dropna=False):
        device, threads, dtype, hw, batch = values
        out.append(f"{device}, {threads} threads, {dtype}, batch {batch}, input {hw}")
    return out


def build_table(
    table: str,
    records: pd.DataFrame,
    recipe: Recipe | str = "smoke",
    dataset_id: str | None = None,
    init: str = "scratch",
) -> BuiltTable:
    """Paper table ``table`` beside the measured records (the frame of ``load_records``).

    ``init="scratch"`` shows the runs trained from scratch; ``"pretrained"`` shows, for
    each row that has them, its runs that started from a pretrained backbone (the row's
    recipe plus a weights file: ``--pretrained``), and the scratch runs of the others.
    The ``init`` column says which a row shows.

    Its frame has one row per paper row, in the paper's order, with the columns of
    ``TABLE_COLUMNS``; mIoU in percent (the paper's unit), params and MACs as integers,
    GMACs at 512x1024. ``dataset_id=None`` takes the only dataset the records have for
    these recipes. The rest of the result says what the frame is of (title, recipe,
    dataset, devices) and holds each row's per-seed values.
    """
    if init not in INITS:
        raise UsageError(f"init {init!r}: expected one of {', '.join(INITS)}")
    paper = get_table(table)
    base = as_recipe(recipe)
    recipe_ids = row_recipe_ids(paper.rows, base)
    if dataset_id is None:
        dataset_id = pick_dataset(records, recipe_ids)
    label, builtin, comparable = _dataset_meta(records, dataset_id)
    # a pretrained run is found through the recipe its row gave it (base_recipe_id)
    sel = records[
        (records["dataset_id"] == dataset_id) & records["base_recipe_id"].isin(recipe_ids)
    ]
    num_classes = dataset_classes(records, dataset_id)

    rows, matched = [], []
    seed_values: dict[str, RowSeeds] = {}
    for row in paper.rows:
        out: dict[str, Any] = dict.fromkeys(TABLE_COLUMNS)
        out.update(
            table=table,
            row=row.row,
            setting=row.setting,
            gmacs_paper=row.paper_gmacs,
            miou_paper_pct=row.paper_miou,
            confidence=row.confidence,
            note=row.note or None,
            n_seeds=0,
            n_failed=0,
            paper_init=row.paper_init,
        )
        if row.spec is None:
            out["status"] = f"unsupported: {row.unsupported}"
            rows.append(out)
            continue
        spec, rrecipe = row.run_for(base, num_classes or row.spec.num_classes)
        out.update(
            spec_string=spec.to_string(),
            spec_id=spec.spec_id,
            recipe_changes=",".join(f"{k}={v}" for k, v in row.recipe_changes.items()) or None,
            recipe_id=rrecipe.recipe_id,
        )
        mine = row_runs(sel, spec.spec_id, rrecipe.recipe_id, init)
        if not mine.empty:
            tags = sorted(set(mine["pretrained"].dropna()))
            # one weights file per row and seed set: two files would be two experiments
            if len(tags) > 1:
                raise UsageError(
                    f"table {table} row {row.row}: runs from {len(tags)} weights files"
                    f" ({', '.join(tags)}); keep one per results folder"
                )
            out["init"] = tags[0] if tags else "scratch"
        matched.append(mine)
        ok = mine[mine["status"] == "ok"]
        failed = mine[mine["status"] == "failed"]
        miou = ok["miou"].dropna() * 100.0
        ordered = ok.dropna(subset=["miou"]).sort_values("seed")
        seed_values[row.row] = RowSeeds(
            seeds=tuple(int(v) for v in ordered["seed"]),
            final=tuple(100.0 * float(v) for v in ordered["miou"]),
            precision=tuple(
                str(v) if isinstance(v, str) else "?" for v in ordered["train_precision"]
            ),
            half=tuple(100.0 * float(v) for v in ordered["miou_half"])
            if ordered["miou_half"].notna().all()
            else (),
            per_image=tuple(ordered["per_image"])
            if ordered["per_image"].map(lambda v: isinstance(v, dict)).all()
            else (),
        )
        # MACs are compared with the paper only when counted at the paper's input size
        hw = f"{row.input_hw[0]}x{row.input_hw[1]}"
        same_hw = mine[mine["macs_input_hw"].isna() | (mine["macs_input_hw"] == hw)]
        macs, params = _first(same_hw["macs"]), _first(mine["params"])
        out.update(
            params=int(params) if params is not None else None,
            params_m=params / 1e6 if params is not None else None,
            macs=int(macs) if macs is not None else None,
            gmacs=macs / 1e9 if macs is not None else None,
            latency_ms=ok["latency_ms"].median() if ok["latency_ms"].notna().any() else None,
            # the most CPUs others used while any of its CPU timings ran: a row timed on a
            # contended CPU is flagged in the rendered table and the notes
            latency_contended=bool(ok["latency_contended"].fillna(False).astype(bool).any()),
            miou_pct=miou.mean() if len(miou) else None,
            miou_std_pct=miou.std(ddof=1) if len(miou) >= 2 else None,
            n_seeds=len(miou),
            n_failed=len(failed),
        )
        if out["gmacs"] is not None and row.paper_gmacs:
            out["gmacs_delta_pct"] = 100.0 * (out["gmacs"] - row.paper_gmacs) / row.paper_gmacs
        if out["miou_pct"] is not None and row.paper_miou is not None and comparable:
            out["miou_delta_pts"] = out["miou_pct"] - row.paper_miou
        reason = _first(failed["reason"])
        if mine.empty:
            out["status"] = "not run"
        elif failed.empty:
            out["status"] = "ok"
        elif ok.empty:
            out["status"] = f"failed: {reason}"
        else:
            out["status"] = f"{len(ok)} ok, {len(failed)} failed: {reason}"
        rows.append(out)

    runs = pd.concat(matched) if matched else None
    return BuiltTable(
        frame=typed_frame(rows, TABLE_DTYPES),
        table=table,
        title=paper.title,
        recipe_name=base.name,
        recipe_id=base.recipe_id,
        dataset_id=dataset_id,
        dataset_label=label,
        is_builtin=builtin,
        input_hw=paper.rows[0].input_hw,
        comparable=comparable,
        latency_setups=tuple(_latency_setups(runs)) if runs is not None else (),
        precisions=_precision_counts(runs) if runs is not None else {},
        train_devices=_device_counts(runs) if runs is not None else {},
        seed_values=seed_values,
        n_records=int(sum(len(m) for m in matched)),
    )


def _device_counts(runs: pd.DataFrame) -> dict[str, int]:
    ok = runs[runs["status"] == "ok"]
    return {str(k): int(v) for k, v in ok["env_device_name"].fillna("?").value_counts().items()}


def _precision_counts(runs: pd.DataFrame) -> dict[str, int]:
    ok = runs[runs["status"] == "ok"]
    return {str(k): int(v) for k, v in ok["train_precision"].fillna("?").value_counts().items()}


def mixed_precision_rows(table: BuiltTable) -> list[str]:
    """Rows whose seeds trained in more than one precision."""
    return [r for r, v in table.seed_values.items() if len(set(v.precision)) > 1]


def table_notes(table: BuiltTable) -> list[str]:
    """What a reader must know before comparing the columns (data, recipe, units, device)."""
    frame = table.frame
    notes = []
    if not table.n_records:
        notes.append("No measured records match this table: only the paper's numbers are shown.")
    if table.dataset_id is not None and table.is_builtin:
        notes.append(
            f"DATA: {table.dataset_label} [{table.dataset_id}] is the toolkit's built-in "
            "synthetic dataset, NOT Cityscapes. Measured mIoU is NOT comparable with the "
            "paper's; compare rows with each other only (the delta column is left blank)."
        )
    elif table.dataset_id is not None and not table.comparable:
        notes.append(
            f"Data: {table.dataset_label} ({table.dataset_id}) is not Cityscapes: measured "
            "mIoU is not comparable with the paper's (the delta column is left blank)."
        )
    elif table.dataset_id is not None:
        notes.append(f"Data: {table.dataset_label} ({table.dataset_id}).")
    if table.recipe_name != "paper":
        notes.append(
            f"Recipe {table.recipe_name} ({table.recipe_id}) is not the paper's "
            "training protocol: absolute mIoU is far from converged."
        )
    h, w = table.input_hw
    notes.append(
        f"GMACs: multiply-adds at a {h}x{w} (HxW) input, the paper's 'GFLOPs' "
        "(GFLOPs = 2 x GMACs). mIoU in %: mean over seeds, std = sample std (blank for one seed)."
    )
    if "paper_init" in frame and "init" in frame:
        unlike = frame.loc[
            (frame["paper_init"] == "imagenet") & (frame["init"] == "scratch"), "row"
        ]
        if len(unlike):
            notes.append(
                f"Initialisation: the paper started {', '.join(unlike)} from ImageNet weights;"
                " here they trained from scratch (no --pretrained), so their comparison with"
                " the paper's numbers is not like for like."
            )
        warm = frame.loc[frame["init"].fillna("scratch") != "scratch", ["row", "init"]]
        if len(warm):
            shown = ", ".join(f"{r} ({i})" for r, i in zip(warm["row"], warm["init"]))
            notes.append(f"Pretrained: {shown} started from these weights (layout@sha256).")
    if "latency_contended" in frame:
        contended = frame.loc[frame["latency_contended"].fillna(False).astype(bool), "row"]
        if len(contended):
            notes.append(
                f"LATENCY UNRELIABLE for {', '.join(contended)} (marked !): other processes"
                " kept CPUs busy while they were timed. Re-time on a quiet machine:"
                " python -m runners.ablate --remeasure-latency."
            )
    precisions = table.precisions
    if len(precisions) > 1:
        counts = ", ".join(f"{k} in {v}" for k, v in sorted(precisions.items()))
        mixed = mixed_precision_rows(table)
        within = f" Rows with seeds in both: {', '.join(mixed)}." if mixed else ""
        notes.append(
            f"Training precision differs between runs: {counts} (the recipe's amp runs "
            "bf16 only on CPUs with native bf16 kernels, else fp32). Comparisons across "
            f"precisions include any effect of the precision itself.{within}"
        )
    devices = table.train_devices
    if len(devices) > 1:
        counts = ", ".join(f"{k} in {v}" for k, v in sorted(devices.items()))
        notes.append(
            f"Runs were trained on different devices: {counts}. Accuracy may differ between "
            "device kinds (kernels, precision); compare rows trained on the same kind where "
            "it matters."
        )
    setups = table.latency_setups
    if setups:
        notes.append(
            "Latency: median of each run's median, measured on "
            + "; ".join(setups)
            + ". The paper's speed was on a GTX 1080 Ti: compare latency ratios only."
        )
    return notes


# --- rendering ---------------------------------------------------------------------------


class Shown(NamedTuple):
    """One column of the rendered tables: the frame column it shows, its header, and its
    cell format (``format_cell``)."""

    column: str
    header: str
    fmt: str


# the rendered tables' columns, in order (a view of TABLE_COLUMNS)
DISPLAY: tuple[Shown, ...] = (
    Shown("row", "Row", "s"),
    Shown("setting", "Setting", "s"),
    Shown("spec_string", "Spec", "code"),
    Shown("params_m", "Params (M)", ".2f"),
    Shown("gmacs_paper", "GMACs paper", ".2f"),
    Shown("gmacs", "GMACs measured", ".2f"),
    Shown("gmacs_delta_pct", "Δ GMACs %", "+.1f"),
    Shown("latency_ms", "Latency ms", ".1f"),
    Shown("miou_pct", "mIoU measured", ".2f"),
    Shown("miou_std_pct", "std", ".2f"),
    Shown("n_seeds", "n", "n"),
    Shown("miou_paper_pct", "mIoU paper", ".2f"),
    Shown("miou_delta_pts", "Δ mIoU", "+.2f"),
    Shown("status", "Status", "s"),
)
_SHOWN_AT = {d.column: i for i, d in enumerate(DISPLAY)}  # column -> position


def _blank(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def format_cell(value: Any, fmt: str) -> str:
    """One rendered cell; blank for a missing number."""
    if _blank(value):
        return ""
    if fmt in ("s", "code"):
        return str(value)
    if fmt == "d":
        return str(int(value))
    if fmt == "n":  # a count where 0 means "nothing measured": blank like the rest
        return str(int(value)) if value else ""
    return format(float(value), fmt)


def _cells(frame: pd.DataFrame) -> tuple[list[str], list[list[str]], list[str]]:
    headers = [d.header for d in DISPLAY]
    aligns = ["l" if d.fmt in ("s", "code") else "r" for d in DISPLAY]
    body = []
    for rec in frame.to_dict("records"):
        cells = [format_cell(rec[d.column], d.fmt) for d in DISPLAY]
        if not _blank(
            rec.get("recipe_changes")
        ):  # e.g. OHEM: same spec as the row above, other loss
            i = _SHOWN_AT["spec_string"]
            cells[i] = f"{cells[i]} + recipe {rec['recipe_changes']}"
        if rec.get("latency_contended") is True and rec.get("latency_ms") is not None:
            i = _SHOWN_AT["latency_ms"]
            cells[i] += " !"
        body.append(cells)
    return headers, body, aligns


def markdown_grid(
    headers: Sequence[str], body: Sequence[Sequence[str]], aligns: Sequence[str]
) -> str:
    """A GitHub Markdown table; pipes in cells are escaped. No ``tabulate`` needed."""

    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rule = ["---:" if a == "r" else "---" for a in aligns]
    lines = ["| " + " | ".join(esc(h) for h in headers) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def _title(table: BuiltTable) -> str:
    return f"Table {table.table}: {table.title}"


def to_markdown(table: BuiltTable, heading_level: int = 3) -> str:
    """The table with its title and notes (data label first), as Markdown."""
    headers, body, aligns = _cells(table.frame)
    code_cols = [i for i, d in enumerate(DISPLAY) if d.fmt == "code"]
    for row in body:
        for i in code_cols:
            row[i] = f"`{row[i]}`" if row[i] else ""
            row[i] = row[i].replace(" + recipe ", "` + recipe `") if row[i] else ""
    notes = "\n".join(f"> {n}" for n in table_notes(table))
    return f"{'#' * heading_level} {_title(table)}\n\n{notes}\n\n{markdown_grid(headers, body, aligns)}\n"


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "Δ": r"$\Delta$",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(table: BuiltTable) -> str:
    """A booktabs ``table`` environment; the notes become the caption."""
    headers, body, aligns = _cells(table.frame)
    caption = latex_escape(_title(table) + ". " + " ".join(table_notes(table)))
    lines = [
        r"\begin{table}[t]",
        r"\centering\small",
        rf"\caption{{{caption}}}",
        rf"\begin{{tabular}}{{{''.join(aligns)}}}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in headers) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_csv(table: BuiltTable, path: Path | str | None = None) -> str:
    """Every column unrounded, plus the dataset and recipe, so the file describes itself."""
    out = table.frame.assign(
        dataset_id=table.dataset_id,
        dataset_label=table.dataset_label,
        is_builtin=table.is_builtin,
        recipe_name=table.recipe_name,
    )
    text = out.to_csv(index=False, lineterminator="\n")
    if path is not None:
        write_text(path, text)
    return text
