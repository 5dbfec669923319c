"""Presenting profiles: a printed report, a table, flat CSV rows and JSON.

Rounding happens only here. Units are in every column name; GFLOPs is always labelled as
2 x GMACs so that nobody mistakes one for the other (the V2 paper's "GFLOPs" are GMACs).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

from runners.env import format_environment
from runners.profile.core import ProfileResult
from runners.profile.counters import COUNTERS, PRIMARY
from runners.profile.latency import LatencyResult
from searchspace.atomic import json_text as atomic_json_text


def _g(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}%"


def _latency_line(lat: LatencyResult) -> str:
    opts = ", ".join(k for k, v in lat.options.items() if v is True) or "plain"
    scope = lat.scope
    if lat.scope == "end2end" and lat.options.get("raw_hw"):
        raw_h, raw_w = lat.options["raw_hw"]
        net_h, net_w = lat.input_shape[2], lat.input_shape[3]
        scope = f"end2end (uint8 image {raw_h}x{raw_w} -> network {net_h}x{net_w} -> argmax)"
    return (
        f"{lat.backend} {scope} {lat.device} {lat.dtype} batch {lat.batch} "
        f"({opts}; {lat.threads} threads, {lat.warmup} warm-up + {lat.repeats} timed, "
        f"{lat.timer}): median {lat.median_ms:.2f} ms, p95 {lat.p95_ms:.2f} ms, "
        f"IQR {lat.iqr_ms:.2f} ms, {lat.images_per_s:.2f} images/s"
    ) + (contention_note(lat.others_busy_cpus) if lat.contended else "")


CONTENDED_MARK = "!"


def contention_note(others_busy_cpus: float | None) -> str:
    """The flag a contended CPU timing carries wherever it is printed."""
    return (
        f" {CONTENDED_MARK} CONTENDED: other processes kept {others_busy_cpus:.1f} CPUs busy"
        " while this was timed; the number is unreliable"
    )


def format_profile(r: ProfileResult, include_environment: bool = True) -> str:
    """A full report of one spec."""
    h, w = r.input_hw
    name = r.label if r.label == r.spec_string else f"{r.label} = {r.spec_string}"
    lines = [f"spec {name} (id {r.spec_id}) at {h}x{w}"]
    if include_environment:
        lines.append(format_environment(r.environment))
    lines += [
        "",
        f"parameters: {r.params_total:,} total, {r.params_inference:,} at inference "
        "(booster heads excluded)",
    ]
    for part, n in r.params_by_part.items():
        lines.append(f"  {part:12s} {n:>12,}")
    lines += [
        "",
        f"MACs (primary: {PRIMARY}, FLOPs / 2): {r.gmacs:.3f} GMACs = {r.gflops:.3f} GFLOPs "
        "(GFLOPs = 2 x GMACs)",
        f"  conv only {r.conv_macs / 1e9:.3f} GMACs; conv activations {r.activations:,}",
    ]
    for part, n in r.macs_by_part.items():
        share = 100 * n / r.macs if r.macs else 0.0
        lines.append(f"  {part:12s} {n / 1e9:>10.3f} GMACs {share:5.1f}%")
    lines.append("counters (GMACs, delta vs primary):")
    for name, n in r.counter_macs.items():
        delta = 100 * (n / r.macs - 1) if r.macs and name != PRIMARY else None
        text = f"  {name:12s} {n / 1e9:>10.3f}  {_pct(delta) if delta is not None else ''}"
        lines.append(text.rstrip())
    for name, why in r.counter_errors.items():
        lines.append(f"  {name:12s} failed: {why}")
    lines.append(f"  largest disagreement: {_pct(r.macs_disagreement_pct)}")
    if r.paper_gmacs is not None:
        ph, pw = r.paper_input_hw or (0, 0)
        delta = _pct(r.paper_delta_pct) if r.paper_delta_pct is not None else "not comparable"
        lines.append(f"paper: {r.paper_gmacs} GMACs at {ph}x{pw} ({delta})")
    if r.fold is not None:
        lines.append(
            f"BN folding: {r.fold['folded']} folded, {len(r.fold['left'])} left "
            f"({', '.join(r.fold['left']) or 'none'}), max abs diff {r.fold['max_abs_diff']:.2e}"
        )
    if r.latency is not None:
        lines += ["", "latency: " + _latency_line(r.latency)]
    if r.onnxruntime_latency is not None:
        lines.append("latency: " + _latency_line(r.onnxruntime_latency))
    return "\n".join(lines)


def format_table(
    title: str,
    results: Sequence[ProfileResult],
    skipped: Iterable[tuple[str, str]] = (),
) -> str:
    """One line per row: counts, the paper's GMACs beside ours, the counters, latency."""
    if not results:
        return f"{title}\n(no runnable rows)"
    counters = [c for c in COUNTERS if any(c in r.counter_macs for r in results)]
    has_lat = any(r.latency for r in results)
    has_ort = any(r.onnxruntime_latency for r in results)
    header = ["row", "params_M", "infer_params_M", "GMACs", "GFLOPs(2xMAC)", "paper_GMACs", "delta"]
    header += [f"{c}_GMACs" for c in counters if c != PRIMARY] + ["max_disagree"]
    if has_lat:
        header += ["median_ms", "p95_ms", "iqr_ms", "images_per_s"]
    if has_ort:
        header += ["ort_median_ms"]
    rows = []
    for r in results:
        delta = r.paper_delta_pct
        if r.paper_gmacs is not None and delta is None:
            delta_text = f"n/a@{r.paper_input_hw[0]}x{r.paper_input_hw[1]}"  # type: ignore[index]
        else:
            delta_text = _pct(delta)
        cells = [
            r.label,
            f"{r.params_total / 1e6:.3f}",
            f"{r.params_inference / 1e6:.3f}",
            f"{r.gmacs:.3f}",
            f"{r.gflops:.3f}",
            _g(r.paper_gmacs, 2),
            delta_text,
        ]
        for c in counters:
            if c == PRIMARY:
                continue
            cells.append(f"{r.counter_macs[c] / 1e9:.3f}" if c in r.counter_macs else "failed")
        cells.append(_pct(r.macs_disagreement_pct))
        if has_lat:
            lat = r.latency
            mark = CONTENDED_MARK if lat and lat.contended else ""
            cells += (
                [
                    f"{lat.median_ms:.2f}{mark}",
                    f"{lat.p95_ms:.2f}",
                    f"{lat.iqr_ms:.2f}",
                    f"{lat.images_per_s:.2f}",
                ]
                if lat
                else ["-"] * 4
            )
        if has_ort:
            ort = r.onnxruntime_latency
            cells.append(f"{ort.median_ms:.2f}" if ort else "-")
        rows.append(cells)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    out = [title, ""]
    out.append(
        "  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths)))
    )
    for cells in rows:
        out.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
            )
        )
    for row, why in skipped:
        out.append(f"{row}: not run ({why})")
    busy = [r.latency.others_busy_cpus for r in results if r.latency and r.latency.contended]
    if busy:
        out.append(
            f"{CONTENDED_MARK} timed while other processes kept up to {max(busy):.1f} CPUs busy:"
            " unreliable; re-time on a quiet machine"
        )
    return "\n".join(out)


def flat_row(r: ProfileResult) -> dict[str, Any]:
    """One CSV row: raw numbers, units in the column names."""
    row: dict[str, Any] = {
        "label": r.label,
        "table": r.table,
        "row": r.row,
        "spec": r.spec_string,
        "spec_id": r.spec_id,
        "input_h": r.input_hw[0],
        "input_w": r.input_hw[1],
        "params_total": r.params_total,
        "params_inference": r.params_inference,
    }
    row.update({f"params_{part}": n for part, n in r.params_by_part.items()})
    row.update(
        {
            "macs": r.macs,
            "gmacs": r.gmacs,
            "gflops_2x_macs": r.gflops,
            "conv_macs": r.conv_macs,
            "activations": r.activations,
        }
    )
    row.update({f"macs_{part}": n for part, n in r.macs_by_part.items()})
    row.update({f"macs_{name}": n for name, n in r.counter_macs.items()})
    row["macs_disagreement_pct"] = r.macs_disagreement_pct
    row["paper_gmacs"] = r.paper_gmacs
    row["paper_delta_pct"] = r.paper_delta_pct
    for prefix, lat in (("latency", r.latency), ("ort_latency", r.onnxruntime_latency)):
        if lat is None:
            continue
        row.update(
            {
                f"{prefix}_median_ms": lat.median_ms,
                f"{prefix}_p95_ms": lat.p95_ms,
                f"{prefix}_iqr_ms": lat.iqr_ms,
                f"{prefix}_min_ms": lat.min_ms,
                f"{prefix}_max_ms": lat.max_ms,
                f"{prefix}_images_per_s": lat.images_per_s,
                f"{prefix}_repeats": lat.repeats,
                f"{prefix}_threads": lat.threads,
                f"{prefix}_device": lat.device,
                f"{prefix}_dtype": lat.dtype,
                f"{prefix}_scope": lat.scope,
                f"{prefix}_batch": lat.batch,
            }
        )
    env = r.environment
    row.update(
        {
            "device_name": env.get("device_name"),
            "torch": env.get("torch"),
            "cuda": env.get("cuda"),
            "cudnn": env.get("cudnn"),
        }
    )
    return row


def csv_text(results: Sequence[ProfileResult]) -> str:
    rows = [flat_row(r) for r in results]
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def json_text(payload: Any) -> str:
    """Every number of a profile as strict JSON (NaN/inf as null: ``searchspace.atomic``)."""
    return atomic_json_text(payload, sort_keys=False)
