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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from searchspace.atomic import write_text
from searchspace.errors import UsageError
from searchspace.recipes import Recipe, parse_recipe
from searchspace.tables import PaperRow, get_table

TABLE_COLUMNS = (
    "table",
    "row",
    "setting",
    "spec_string",
    "spec_id",
    "recipe_changes",
    "recipe_id",
    "params",
    "params_m",
    "macs",
    "gmacs_paper",
    "gmacs",
    "gmacs_delta_pct",
    "latency_ms",
    "latency_contended",
    "miou_pct",
    "miou_std_pct",
    "n_seeds",
    "n_failed",
    "miou_paper_pct",
    "miou_delta_pts",
    "status",
    "confidence",
    "note",
)


def as_recipe(recipe: Recipe | str) -> Recipe:
    """A Recipe, or a recipe text as the command line takes it (``smoke``, ``smoke:budget=400``)."""
    return recipe if isinstance(recipe, Recipe) else parse_recipe(recipe)


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
    sel = records if recipe_ids is None else records[records["recipe_id"].isin(recipe_ids)]
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
) -> pd.DataFrame:
    """Paper table ``table`` beside the measured records (the frame of ``load_records``).

    One row per paper row, in the paper's order, with the columns of ``TABLE_COLUMNS``;
    mIoU in percent (the paper's unit), params and MACs as integers, GMACs at 512x1024.
    ``dataset_id=None`` takes the only dataset the records have for these recipes.
    ``frame.attrs`` holds the table title, recipe, dataset label and ``is_builtin``.
    """
    paper = get_table(table)
    base = as_recipe(recipe)
    recipe_ids = row_recipe_ids(paper.rows, base)
    if dataset_id is None:
        dataset_id = pick_dataset(records, recipe_ids)
    label, builtin, comparable = _dataset_meta(records, dataset_id)
    sel = records[(records["dataset_id"] == dataset_id) & records["recipe_id"].isin(recipe_ids)]
    num_classes = dataset_classes(records, dataset_id)

    rows, matched = [], []
    seed_values: dict[str, dict[str, list[float]]] = {}
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
        mine = sel[(sel["spec_id"] == spec.spec_id) & (sel["recipe_id"] == rrecipe.recipe_id)]
        matched.append(mine)
        ok = mine[mine["status"] == "ok"]
        failed = mine[mine["status"] == "failed"]
        miou = ok["miou"].dropna() * 100.0
        ordered = ok.dropna(subset=["miou"]).sort_values("seed")
        seed_values[row.row] = {
            "seeds": [int(v) for v in ordered["seed"]],
            "final": [100.0 * float(v) for v in ordered["miou"]],
            "precision": [
                str(v) if isinstance(v, str) else "?" for v in ordered["train_precision"]
            ],
            # at half the budget: only when every seed has the point, else none
            "half": [100.0 * float(v) for v in ordered["miou_half"]]
            if ordered["miou_half"].notna().all()
            else [],
            # per-image counts of every seed, only when every seed has them
            "per_image": list(ordered["per_image"])
            if ordered["per_image"].map(lambda v: isinstance(v, dict)).all()
            else [],
        }
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

    frame = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    for name in ("params", "macs", "n_seeds", "n_failed"):
        frame[name] = frame[name].astype("Int64")
    for name in ("params_m", "gmacs_paper", "gmacs", "gmacs_delta_pct", "latency_ms", "miou_pct"):
        frame[name] = frame[name].astype("float64")
    for name in ("miou_std_pct", "miou_paper_pct", "miou_delta_pts"):
        frame[name] = frame[name].astype("float64")
    frame.attrs.update(
        table=table,
        title=paper.title,
        recipe_name=base.name,
        recipe_id=base.recipe_id,
        dataset_id=dataset_id,
        dataset_label=label,
        is_builtin=builtin,
        input_hw=paper.rows[0].input_hw,
        comparable=comparable,
        latency_setups=_latency_setups(pd.concat(matched)) if matched else [],
        # training precision -> ok runs: a table can mix them (amp is bf16 only on CPUs
        # with native bf16 kernels)
        precisions=_precision_counts(pd.concat(matched)) if matched else {},
        # the device kind each ok run trained on: runs of one table may come from several
        # nodes of a cluster (--launcher slurm)
        train_devices=_device_counts(pd.concat(matched)) if matched else {},
        # per row, per-seed mIoU (%) at the end and at half the budget (for the claims)
        seed_values=seed_values,
        n_records=int(sum(len(m) for m in matched)),
    )
    return frame


def _device_counts(runs: pd.DataFrame) -> dict[str, int]:
    ok = runs[runs["status"] == "ok"]
    return {str(k): int(v) for k, v in ok["env_device_name"].fillna("?").value_counts().items()}


def _precision_counts(runs: pd.DataFrame) -> dict[str, int]:
    ok = runs[runs["status"] == "ok"]
    return {str(k): int(v) for k, v in ok["train_precision"].fillna("?").value_counts().items()}


def mixed_precision_rows(frame: pd.DataFrame) -> list[str]:
    """Rows whose seeds trained in more than one precision."""
    values = frame.attrs.get("seed_values", {})
    return [r for r, v in values.items() if len(set(v.get("precision", []))) > 1]


def table_notes(frame: pd.DataFrame) -> list[str]:
    """What a reader must know before comparing the columns (data, recipe, units, device)."""
    a = frame.attrs
    notes = []
    if not a.get("n_records"):
        notes.append("No measured records match this table: only the paper's numbers are shown.")
    if a.get("dataset_id") is not None and a.get("is_builtin"):
        notes.append(
            f"DATA: {a['dataset_label']} [{a['dataset_id']}] is the toolkit's built-in "
            "synthetic dataset, NOT Cityscapes. Measured mIoU is NOT comparable with the "
            "paper's; compare rows with each other only (the delta column is left blank)."
        )
    elif a.get("dataset_id") is not None and not a.get("comparable"):
        notes.append(
            f"Data: {a['dataset_label']} ({a['dataset_id']}) is not Cityscapes: measured mIoU "
            "is not comparable with the paper's (the delta column is left blank)."
        )
    elif a.get("dataset_id") is not None:
        notes.append(f"Data: {a['dataset_label']} ({a['dataset_id']}).")
    if a.get("recipe_name") != "paper":
        notes.append(
            f"Recipe {a.get('recipe_name')} ({a.get('recipe_id')}) is not the paper's "
            "training protocol: absolute mIoU is far from converged."
        )
    h, w = a.get("input_hw") or (512, 1024)
    notes.append(
        f"GMACs: multiply-adds at a {h}x{w} (HxW) input, the paper's 'GFLOPs' "
        "(GFLOPs = 2 x GMACs). mIoU in %: mean over seeds, std = sample std (blank for one seed)."
    )
    if "latency_contended" in frame:
        contended = frame.loc[frame["latency_contended"].fillna(False).astype(bool), "row"]
        if len(contended):
            notes.append(
                f"LATENCY UNRELIABLE for {', '.join(contended)} (marked !): other processes"
                " kept CPUs busy while they were timed. Re-time on a quiet machine:"
                " python -m runners.ablate --remeasure-latency."
            )
    precisions = a.get("precisions") or {}
    if len(precisions) > 1:
        counts = ", ".join(f"{k} in {v}" for k, v in sorted(precisions.items()))
        mixed = mixed_precision_rows(frame)
        within = f" Rows with seeds in both: {', '.join(mixed)}." if mixed else ""
        notes.append(
            f"Training precision differs between runs: {counts} (the recipe's amp runs "
            "bf16 only on CPUs with native bf16 kernels, else fp32). Comparisons across "
            f"precisions include any effect of the precision itself.{within}"
        )
    devices = a.get("train_devices") or {}
    if len(devices) > 1:
        counts = ", ".join(f"{k} in {v}" for k, v in sorted(devices.items()))
        notes.append(
            f"Runs were trained on different devices: {counts}. Accuracy may differ between "
            "device kinds (kernels, precision); compare rows trained on the same kind where "
            "it matters."
        )
    setups = a.get("latency_setups") or []
    if setups:
        notes.append(
            "Latency: median of each run's median, measured on "
            + "; ".join(setups)
            + ". The paper's speed was on a GTX 1080 Ti: compare latency ratios only."
        )
    return notes


# --- rendering ---------------------------------------------------------------------------

# (column, header, format) of the rendered tables
DISPLAY: tuple[tuple[str, str, str], ...] = (
    ("row", "Row", "s"),
    ("setting", "Setting", "s"),
    ("spec_string", "Spec", "code"),
    ("params_m", "Params (M)", ".2f"),
    ("gmacs_paper", "GMACs paper", ".2f"),
    ("gmacs", "GMACs measured", ".2f"),
    ("gmacs_delta_pct", "Δ GMACs %", "+.1f"),
    ("latency_ms", "Latency ms", ".1f"),
    ("miou_pct", "mIoU measured", ".2f"),
    ("miou_std_pct", "std", ".2f"),
    ("n_seeds", "n", "n"),
    ("miou_paper_pct", "mIoU paper", ".2f"),
    ("miou_delta_pts", "Δ mIoU", "+.2f"),
    ("status", "Status", "s"),
)


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
    headers = [h for _, h, _ in DISPLAY]
    aligns = ["l" if f in ("s", "code") else "r" for _, _, f in DISPLAY]
    body = []
    for rec in frame.to_dict("records"):
        cells = [format_cell(rec[c], f) for c, _, f in DISPLAY]
        if not _blank(
            rec.get("recipe_changes")
        ):  # e.g. OHEM: same spec as the row above, other loss
            i = [c for c, _, _ in DISPLAY].index("spec_string")
            cells[i] = f"{cells[i]} + recipe {rec['recipe_changes']}"
        if rec.get("latency_contended") is True and rec.get("latency_ms") is not None:
            i = [c for c, _, _ in DISPLAY].index("latency_ms")
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


def _title(frame: pd.DataFrame) -> str:
    return f"Table {frame.attrs.get('table')}: {frame.attrs.get('title')}"


def to_markdown(frame: pd.DataFrame, heading_level: int = 3) -> str:
    """The table with its title and notes (data label first), as Markdown."""
    headers, body, aligns = _cells(frame)
    code_cols = [i for i, (_, _, f) in enumerate(DISPLAY) if f == "code"]
    for row in body:
        for i in code_cols:
            row[i] = f"`{row[i]}`" if row[i] else ""
            row[i] = row[i].replace(" + recipe ", "` + recipe `") if row[i] else ""
    notes = "\n".join(f"> {n}" for n in table_notes(frame))
    return f"{'#' * heading_level} {_title(frame)}\n\n{notes}\n\n{markdown_grid(headers, body, aligns)}\n"


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


def to_latex(frame: pd.DataFrame) -> str:
    """A booktabs ``table`` environment; the notes become the caption."""
    headers, body, aligns = _cells(frame)
    caption = latex_escape(_title(frame) + ". " + " ".join(table_notes(frame)))
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


def to_csv(frame: pd.DataFrame, path: Path | str | None = None) -> str:
    """Every column unrounded, plus the dataset and recipe, so the file describes itself."""
    a = frame.attrs
    out = frame.assign(
        dataset_id=a.get("dataset_id"),
        dataset_label=a.get("dataset_label"),
        is_builtin=a.get("is_builtin"),
        recipe_name=a.get("recipe_name"),
    )
    text = out.to_csv(index=False, lineterminator="\n")
    if path is not None:
        write_text(path, text)
    return text
