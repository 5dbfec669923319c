"""The SLURM launcher's argument building, splitting, ledger, status and bad input, against
stub ``sbatch``/``squeue``/``scancel``/``scontrol``/``sinfo`` that record their calls.

The real daemons are exercised end to end in tests/test_slurm.py (marker ``slurm``);
these are the fast checks of what is sent to them and what comes back to the user.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from pathlib import Path

import pytest

from runners.launch import slurm
from runners.launch.ledger import read_launches
from searchspace.cli import run_cli
from searchspace.errors import UsageError

TINY = "smoke:budget=3,crop_hw=64+64,batch_size=2,warmup_iters=0"
ROWS = "lambda_1_4,lambda_1_8,lambda_1_16"

STUB = r"""#!/usr/bin/env python3
import json, os, sys
from pathlib import Path
d = Path(os.environ["STUB_DIR"])
name = Path(sys.argv[0]).name
with open(d / "calls.jsonl", "a") as f:
    f.write(json.dumps([name, *sys.argv[1:]]) + "\n")
if name == "sbatch":
    if os.environ.get("STUB_SBATCH_FAIL"):
        sys.stderr.write("sbatch: error: " + os.environ["STUB_SBATCH_FAIL"] + "\n")
        sys.exit(1)
    counter = d / "next_job"
    n = int(counter.read_text()) if counter.exists() else 100
    counter.write_text(str(n + 1))
    (d / f"sbatch_{n}.sh").write_text(Path(sys.argv[-1]).read_text())
    print(f"Submitted batch job {n}")
elif name == "scontrol":
    print("MaxArraySize            = " + os.environ.get("STUB_MAX_ARRAY", "1001"))
elif name == "sinfo":
    args = sys.argv[1:]
    part = args[args.index("-p") + 1] if "-p" in args else None
    if "%P" in args and "%P|%G" not in args:
        print("debug*")
    elif part in (None, "debug"):
        print("debug*|" + os.environ.get("STUB_GRES", "(null)"))
elif name == "squeue":
    q = d / "squeue.txt"
    if q.exists():
        print(q.read_text(), end="")
"""


@pytest.fixture
def stubs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bin folder of stub SLURM commands first on PATH; returns the folder."""
    folder = tmp_path / "stubbin"
    folder.mkdir()
    for name in ("sbatch", "squeue", "scancel", "scontrol", "sinfo"):
        path = folder / name
        path.write_text(STUB.replace("/usr/bin/env python3", sys.executable, 1))
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("STUB_DIR", str(folder))
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    slurm.cluster_config.cache_clear()
    yield folder
    slurm.cluster_config.cache_clear()


def calls(folder: Path, name: str | None = None) -> list[list[str]]:
    path = folder / "calls.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    out = [json.loads(line) for line in lines]
    return [c for c in out if name is None or c[0] == name]


def ablate(capsys, *argv: str) -> tuple[int, str, str]:
    from runners.ablate.__main__ import main

    with pytest.raises(SystemExit) as done:
        run_cli(main, list(argv))
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out, out.err


def base(data: str, res: Path, seeds: int = 1) -> list[str]:
    return ["--table", "3a", "--rows", ROWS, "--recipe", TINY, "--data", data,
            "--results-dir", str(res), "--seeds", str(seeds), "--launcher", "slurm"]  # fmt: skip


# --- parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("90", 90), ("1:30", 2), ("8:00:00", 480), ("1-0", 1440), ("2-3:04", 3064),
     ("0-0:0:59", 1), ("00:10:00", 10)],
)  # fmt: skip
def test_time_in_slurm_formats(text: str, minutes: int) -> None:
    assert slurm.parse_time(text) == minutes
    assert slurm.parse_time(slurm.format_minutes(minutes)) == minutes


@pytest.mark.parametrize("text", ["8h", "1:2:3:4", "", "0", "-5", "1-", "abc"])
def test_time_slurm_cannot_parse_is_one_line(text: str) -> None:
    with pytest.raises(UsageError, match=r"not a SLURM time|longer than zero"):
        slurm.parse_time(text)


def test_slurm_args_as_given_and_malformed_ones_refused() -> None:
    got = slurm.parse_slurm_args(["qos=high", "--mem-per-cpu=4G", "exclusive", "mail_type=END"])
    assert got == {"qos": "high", "mem-per-cpu": "4G", "exclusive": True, "mail-type": "END"}
    for bad in ["=high", "qos=", "two words=1", "9lives=1"]:
        with pytest.raises(UsageError, match="expected KEY=VALUE"):
            slurm.parse_slurm_args([bad])
    with pytest.raises(UsageError, match="sets --array itself"):
        slurm.parse_slurm_args(["array=0-3"])


def test_array_chunks_keep_to_max_array_size_and_share_max_running() -> None:
    assert slurm.array_chunks(5, None, 1001) == [(0, 5, 5)]
    chunks = slurm.array_chunks(7, 4, 3)
    assert [(a, b) for a, b, _ in chunks] == [(0, 3), (3, 6), (6, 7)]
    assert sum(p for *_, p in chunks) <= 4 and all(p >= 1 for *_, p in chunks)
    assert slurm.array_chunks(200, 32, 1001) == [(0, 200, 32)]


# --- submitting -------------------------------------------------------------------------


def test_submit_splits_at_max_array_size_with_one_sbatch_per_array(
    stubs: Path, tiny_data: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("STUB_MAX_ARRAY", "2")
    res = tmp_path / "res"
    code, out, err = ablate(
        capsys, *base(tiny_data, res), "--partition", "debug", "--cpus-per-run", "3",
        "--time", "8:00:00", "--max-running", "2", "--slurm-arg", "qos=high",
        "--slurm-setup", "source /opt/venv/bin/activate",
    )  # fmt: skip
    assert code == 0, err
    sbatch = calls(stubs, "sbatch")
    assert len(sbatch) == 3  # 3 runs at MaxArraySize 2: two arrays, then the report job
    first = (stubs / "sbatch_100.sh").read_text()
    for line in ["--array=0-1%1", "--partition=debug", "--cpus-per-task=3", "--time=480",
                 "--qos=high", "--requeue", "--signal=USR2@120"]:  # fmt: skip
        assert f"#SBATCH {line}" in first, (line, first)
    assert "source /opt/venv/bin/activate" in first
    assert "--array" not in (stubs / "sbatch_101.sh").read_text()  # one run: a plain job
    report = (stubs / "sbatch_102.sh").read_text()
    assert "#SBATCH --dependency=afterany:100:101" in report and "--array" not in report
    (launch,) = read_launches(res)
    assert [t.job_id for t in launch.tasks] == ["100_0", "100_1", "101"]
    assert launch.report is not None and launch.report.job_id == "102"
    assert len(launch.keys) == 3 and launch.launcher == "slurm"
    assert "array job(s) 100, 101" in out and "report job 102" in out

    # while squeue lists the tasks, the same command submits nothing
    (stubs / "squeue.txt").write_text(
        "100_0|RUNNING|None|vm\n100_1|PENDING|Priority|\n101|PENDING|Priority|\n"
    )
    code, out, _ = ablate(capsys, *base(tiny_data, res))
    assert code == 0 and "nothing to launch" in out and len(calls(stubs, "sbatch")) == 3

    # status: queued runs name their array task and why it waits
    code, out, _ = ablate(capsys, *base(tiny_data, res)[:-2], "--status", "--json")
    states = {r["key"]: r for r in json.loads(out)["runs"]}
    assert {r["state"] for r in states.values()} == {"queued"}
    assert states[launch.keys[1]]["job"] == "slurm 100_1 pending (Priority)"

    # once squeue no longer lists a task (it ended without a record), its run is missing
    # and is submitted again
    (stubs / "squeue.txt").write_text("100_0|RUNNING|None|vm\n100_1|PENDING|Priority|\n")
    code, out, _ = ablate(capsys, *base(tiny_data, res))
    assert code == 0 and "1 to submit" in out and len(calls(stubs, "sbatch")) == 5


def test_dry_run_prints_sbatch_parameters_and_tasks_and_submits_nothing(
    stubs: Path, tiny_data: str, tmp_path: Path, capsys
) -> None:
    res = tmp_path / "res"
    code, out, err = ablate(
        capsys, *base(tiny_data, res, seeds=2), "--dry-run", "--cpus-per-run", "2",
        "--time", "30", "--slurm-arg", "account=lab",
    )  # fmt: skip
    assert code == 0, err
    assert "#SBATCH --array=0-5%6" in out and "#SBATCH --account=lab" in out
    assert "#SBATCH --time=30" in out and out.count("  task ") == 6
    assert "--remeasure-latency" in out and "analysis.report" in out
    assert not calls(stubs, "sbatch") and not (res / "launches").exists()


def test_cancel_scancels_the_arrays_and_the_report_job(
    stubs: Path, tiny_data: str, tmp_path: Path, capsys
) -> None:
    res = tmp_path / "res"
    assert ablate(capsys, *base(tiny_data, res))[0] == 0
    (stubs / "squeue.txt").write_text("100_0|PENDING|Priority|\n")
    scancel_before = len(calls(stubs, "scancel"))
    # the stub squeue keeps listing the job: cancel must not wait forever for it
    import runners.ablate.launch as launch_mod

    launch_mod.CANCEL_WAIT_S, saved = 0.5, launch_mod.CANCEL_WAIT_S
    try:
        code, out, _ = ablate(capsys, *base(tiny_data, res)[:-2], "--cancel")
    finally:
        launch_mod.CANCEL_WAIT_S = saved
    assert code == 0 and "scancel 100 101" in out, out
    assert calls(stubs, "scancel")[scancel_before:] == [["scancel", "100", "101"]]
    assert read_launches(res)[0].cancelled is not None


# --- bad input: one line, exit 2, nothing submitted, nothing stored lost -----------------


def _refused(capsys, stubs: Path, argv: list[str], needle: str, res: Path) -> None:
    code, _, err = ablate(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not calls(stubs, "sbatch")
    assert not (res / "launches").exists() and not (res / "records").exists()


@pytest.mark.parametrize(
    ("extra", "env", "needle"),
    [
        (["--partition", "gpu-big"], {}, "--partition 'gpu-big': SLURM has no such partition"),
        (["--gpus-per-run", "1"], {}, "--gpus-per-run 1: this cluster has no GPUs"),
        (["--slurm-arg", "mem per cpu=4G"], {}, "expected KEY=VALUE"),
        (["--time", "8h"], {}, "--time '8h': not a SLURM time"),
        (["--device", "cuda"], {}, "--device cuda with --launcher slurm"),
        ([], {"STUB_SBATCH_FAIL": "Batch job submission failed: Invalid account"},
         "sbatch refused the job: Batch job submission failed: Invalid account"),
    ],
)  # fmt: skip
def test_bad_slurm_input_is_one_line_exit_2_and_submits_nothing(
    stubs: Path, tiny_data: str, tmp_path: Path, capsys, monkeypatch, extra, env, needle
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    res = tmp_path / "res"
    code, _, err = ablate(capsys, *base(tiny_data, res), *extra)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    if env:  # SLURM said no: the ledger says nothing is queued, no record was made
        assert len(calls(stubs, "sbatch")) == 1
        assert all(launch.cancelled for launch in read_launches(res))
        assert not list(res.glob("records/**/*.json"))
    else:
        assert not calls(stubs, "sbatch") and not res.exists()


def test_sbatch_not_on_path_or_no_submitit_says_what_to_install(
    stubs: Path, tiny_data: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    res = tmp_path / "res"
    (stubs / "sbatch").unlink()
    monkeypatch.setenv("PATH", str(stubs))  # no real SLURM client behind the stubs either
    _refused(capsys, stubs, base(tiny_data, res), "sbatch not on PATH", res)
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if the extra were not installed
    _refused(capsys, stubs, base(tiny_data, res), "pip install 'bisenet-lab[cluster]'", res)


def test_slurm_flags_need_the_slurm_launcher(tiny_data: str, tmp_path: Path, capsys) -> None:
    res = tmp_path / "res"
    code, _, err = ablate(capsys, "--table", "3a", "--results-dir", str(res), "--time", "10")
    assert code == 2 and "--time: needs --launcher slurm" in err and not res.exists()


def test_time_warning_names_runs_likely_to_outlast_time(
    stubs: Path, tiny_data: str, tmp_path: Path
) -> None:
    """Estimated from the plan's stored runs per training multiply-add: a run of the same
    network at four times the iterations needs four times the stored run's time."""
    from runners.ablate.launch import time_warnings
    from runners.ablate.plan import plan_runs, resolve_tables
    from runners.data.source import parse_data_arg
    from runners.store import Store
    from searchspace.recipes import parse_recipe

    source = parse_data_arg(tiny_data, check=())
    short, _ = plan_runs(resolve_tables(["3a"]), ["lambda_1_8"], parse_recipe(TINY), source, 1)
    long_recipe = parse_recipe(TINY.replace("budget=3", "budget=12"))
    long, _ = plan_runs(resolve_tables(["3a"]), ["lambda_1_8"], long_recipe, source, 1)
    store = Store(tmp_path)
    record = {
        "schema": 1, "key": short[0].key.to_dict(), "status": "ok", "reason": None,
        "metrics": {"miou": 0.2}, "train": {"seconds": 600.0}, "env": {"device_name": "Xeon"},
    }  # fmt: skip
    store.put(record)

    lines = time_warnings(long, [*short, *long], store, slurm.SlurmOptions(time_min=30))
    assert "from 1 stored runs (trained on Xeon)" in lines[0]
    assert "1 run(s) will likely outlast --time 00:30:00" in lines[0]
    assert "about 00:40:00" in lines[1]


# --- search workers ----------------------------------------------------------------------


def search(capsys, *argv: str) -> tuple[int, str, str]:
    from runners.search.__main__ import main

    with pytest.raises(SystemExit) as done:
        run_cli(main, list(argv))
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out, out.err


def test_search_sqlite_with_slurm_is_refused_in_one_line(
    stubs: Path, tmp_path: Path, capsys
) -> None:
    res = tmp_path / "res"
    for storage in ([], ["--storage", f"sqlite:///{tmp_path / 's.db'}"]):
        code, _, err = search(capsys, "--study", "s", "--results-dir", str(res), *storage,
                              "--launcher", "slurm", "--workers", "2")  # fmt: skip
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "--launcher slurm cannot use" in err and "SQLite" in err
    assert not calls(stubs) and not res.exists() and not (tmp_path / "s.db").exists()


def test_search_workers_are_one_array_and_not_submitted_twice(
    stubs: Path, tiny_data: str, tmp_path: Path, capsys
) -> None:
    res, journal = tmp_path / "res", tmp_path / "s.journal"
    argv = ["--study", "s", "--storage", f"journal:{journal}", "--trials", "6",
            "--recipe", TINY, "--data", tiny_data, "--results-dir", str(res),
            "--launcher", "slurm", "--workers", "3", "--cpus-per-run", "2"]  # fmt: skip
    code, out, err = search(capsys, *argv)
    assert code == 0, err
    assert len(calls(stubs, "sbatch")) == 1
    script = (stubs / "sbatch_100.sh").read_text()
    assert "#SBATCH --array=0-2%3" in script and "#SBATCH --cpus-per-task=2" in script
    name = re.search(r"#SBATCH --job-name=(\S+)", script).group(1)
    assert name.startswith("search-s-") and "3 workers of study s" in out
    assert journal.exists()  # the study was made here, once, before any worker starts
    (stubs / "squeue.txt").write_text("100_0|RUNNING|None|vm\n100_1|PENDING|Priority|\n")
    code, out, _ = search(capsys, *argv)
    assert code == 0 and "nothing submitted" in out and len(calls(stubs, "sbatch")) == 1
    squeue = calls(stubs, "squeue")[-1]
    assert squeue[squeue.index("-n") + 1] == name


def test_settle_with_the_slurm_launcher_submits_one_round_and_returns(
    stubs: Path, tiny_data: str, tmp_path: Path, capsys
) -> None:
    """Each call judges, plans and submits one round; the next call judges it."""
    res = tmp_path / "res"
    code, out, err = ablate(capsys, *base(tiny_data, res)[:-2], "--launcher", "slurm",
                            "--settle", "t3a_too_narrow_hurts")  # fmt: skip
    assert code == 0, err
    assert "round 1: 8 runs" in out and "submitted one round" in out
    assert "#SBATCH --array=0-7%8" in (stubs / "sbatch_100.sh").read_text()
    (launch,) = read_launches(res)
    assert len(launch.keys) == 8
