#!/usr/bin/env bash
# The committed V2 results on the built-in data (results/v2-synth): every V2 table
# (2, 3a, 3b, 3c, 4, 5a, 5b and 6, its backbone rows from scratch), 5 seeds per row for Tables 2
# and 3a, 3 for the others, and 6 seeds of the default spec for the report's calibration.
#
#   bash scripts/v2_results.sh            # train what is missing (hours on 2 CPU cores)
#   JOBS=2 bash scripts/v2_results.sh     # the same with two one-thread copies (faster)
#   bash scripts/v2_results.sh latency    # then, on a quiet machine: time every row
#   bash scripts/v2_results.sh report     # regenerate results/v2-synth/report.md (and
#                                         # precision_check.txt: bf16 against fp32 runs)
#
# Resumable: run it again after an interruption and every finished run is reused (the
# result store); a run killed half-way resumes from its last checkpoint. Training runs
# without latency (other jobs on the machine would distort it); `latency` times the
# stored runs afterwards in one quiet pass, without retraining.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RECIPE=${RECIPE:-synth}
OUT=${OUT:-results/v2-synth}
TABLES_5=2,3a
TABLES_3=3b,3c,4,5a,5b,6
common=(--recipe "$RECIPE" --results-dir "$OUT" --no-progress --wait "${WAIT:-3600}")

case "${1:-train}" in
  train)
    # JOBS=2: two copies with one torch thread each share the plan (the store's locks give
    # each run to one copy; --wait 0 lets a copy move on instead of waiting for the other).
    # Measured on a quiet 2-core AVX2 EPYC (benchmarks/sharing_bench.py, fp32, 8 steps;
    # results/benchmarks/sharing_bench_cpu_avx2.txt): one two-thread copy is fastest under
    # OMP_WAIT_POLICY=ACTIVE (8.1 s against 9.3 PASSIVE and 10.7 OpenMP's default), and the
    # pair of one-thread copies still does 1.15x that copy's work (1.32x a PASSIVE copy's).
    # So JOBS=2 is the faster way to use a 2-core machine given over to this plan.
    if [ "${JOBS:-1}" -gt 1 ]; then
      for _ in $(seq "$JOBS"); do
        JOBS=1 WAIT=0 OMP_NUM_THREADS=1 bash "$0" train &
        sleep 20  # the copies take different first runs
      done
      wait
      exit
    fi
    "$PY" -m runners.ablate --table "$TABLES_5" --seeds 5 --no-latency "${common[@]}"
    # the default spec (Table 2's bga_booster is the bisenetv2 preset): a sixth seed
    "$PY" -m runners.ablate --table 2 --rows bga_booster --seeds 6 --no-latency "${common[@]}"
    # the precision check: Table 2's bga row (seeds 0-4 also stored in bf16) again in
    # fp32, so that comparisons between bf16 and fp32 runs can be judged (see README)
    "$PY" -m runners.ablate --table 2 --rows bga --seeds 5 --no-latency \
      --recipe "$RECIPE:amp=false" --results-dir "$OUT" --no-progress --wait "${WAIT:-3600}"
    "$PY" -m runners.ablate --table "$TABLES_3" --seeds 3 --no-latency "${common[@]}"
    ;;
  latency)
    # one pass over every table: each deployed network (26 here) is timed once, in turns
    # with the others, so drift of the machine falls on all of them alike; --seeds 8
    # reaches the seeds a --settle run added (Table 2's bga and bga_booster: 6 and 7)
    "$PY" -m runners.ablate --table "$TABLES_5,$TABLES_3" --seeds 8 --remeasure-latency \
      --latency-repeats 30 "${common[@]}"
    ;;
  report)
    "$PY" -m analysis.report --results-dir "$OUT" --recipe "$RECIPE" \
      --tables 2,3a,3b,3c,4,5a,5b,6 --out "$OUT/report.md"
    # what bf16 training changes (the same spec and seeds in both precisions): is there a
    # difference, and are the two within 1 point of each other (two one-sided tests)?
    precision=(--results-dir "$OUT" --a v2:bst=none --a-recipe "$RECIPE"
               --b-recipe "$RECIPE:amp=false" --seeds 0,1,2,3,4)
    { "$PY" -m analysis.compare "${precision[@]}"
      echo
      "$PY" -m analysis.compare "${precision[@]}" --equivalent 1
    } | tee "$OUT/precision_check.txt"
    ;;
  *)
    echo "usage: bash scripts/v2_results.sh [train|latency|report]" >&2
    exit 2
    ;;
esac
