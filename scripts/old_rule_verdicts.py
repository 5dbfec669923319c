"""Which claim verdicts the calibrated rule changed: the old rule of thumb beside it.

    .venv/bin/python scripts/old_rule_verdicts.py [RESULTS_DIR] [RECIPE]

Until commit 94f2cff a difference counted when it exceeded the larger seed std of the two
rows (1 point for single runs); that rule still said "supported" or "contradicted" in 33%
of comparisons with no true difference at 2 seeds (benchmarks/verdicts_bench.py). This
reads the old ``analysis/claims.py`` from git history and prints, claim by claim, its
verdict beside the current one on the same records (for the closing note of issue 12).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OLD_REVISION = "94f2cff^"  # the last commit with the rule of thumb


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from analysis.claims import CLAIMS, evaluate_claims
    from analysis.records import load_records

    results = sys.argv[1] if len(sys.argv) > 1 else "results/v2-synth"
    recipe = sys.argv[2] if len(sys.argv) > 2 else "synth"
    source = subprocess.run(
        ["git", "show", f"{OLD_REVISION}:analysis/claims.py"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "old_claims.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("old_claims", path)
        old = importlib.util.module_from_spec(spec)
        sys.modules["old_claims"] = old  # dataclasses look their module up
        spec.loader.exec_module(old)
    records = load_records(results)
    new = evaluate_claims(records, recipe, None, CLAIMS)
    before = {v.claim.id: v.outcome for v in old.evaluate_claims(records, recipe, None, old.CLAIMS)}
    print(f"{'claim':45s} {'old rule':16s} {'calibrated':14s}")
    for v in new:
        was = before.get(v.claim.id, "(not in it)")
        mark = "  <- changed" if was != v.outcome and was != "(not in it)" else ""
        print(f"{v.claim.id:45s} {was:16s} {v.outcome:14s}{mark}")


if __name__ == "__main__":
    main()
