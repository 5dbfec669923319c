"""The pre-decoded cache: same pixels as decoding, same training, refused when it does not fit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from runners.data.decoded import IMAGES, MANIFEST, build_cache, open_cache
from runners.data.source import DataSource
from runners.store.files import DEAD_GRACE_S, TEMP_MAX_AGE_S, exchange, partial_dir
from searchspace.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_cache_returns_what_decoding_returns(tiny: DataSource, tmp_path: Path) -> None:
    dataset = tiny.dataset("train")
    folder, built = build_cache(tiny, "train", dataset, tmp_path / "c")
    assert built and (folder / MANIFEST).is_file()
    assert not list(tmp_path.glob(".c.partial*"))  # the partial folder is gone
    cache = open_cache(tiny, "train", dataset, folder)
    assert cache is not None and cache.count == len(dataset)
    for i in range(len(dataset)):
        image, label = dataset.read(i)
        c_image, c_label = cache.read(i)
        assert np.array_equal(image, c_image) and np.array_equal(label, c_label)
    assert build_cache(tiny, "train", dataset, folder) == (folder, False)  # up to date


def test_training_from_the_cache_is_training_from_the_files(
    tiny: DataSource, tmp_path: Path
) -> None:
    from runners.train.loop import train
    from searchspace.presets import parse_spec
    from tests.test_train import final_state, tiny_recipe

    spec, recipe = parse_spec("bisenetv2:width_mult=0.25"), tiny_recipe(budget=3)
    folder, _ = build_cache(tiny, "train", tiny.dataset("train"), tmp_path / "c")
    plain = train(spec, recipe, tiny, 0, tmp_path / "a", progress=False)
    cached = train(spec, recipe, tiny, 0, tmp_path / "b", progress=False, decoded_cache=folder)
    assert plain.status == cached.status == "ok"
    assert plain.params_sha1 == cached.params_sha1
    a, b = final_state(tmp_path / "a"), final_state(tmp_path / "b")
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_a_cache_that_does_not_fit_is_refused_in_one_line(tiny: DataSource, tmp_path: Path) -> None:
    dataset = tiny.dataset("train")
    folder, _ = build_cache(tiny, "train", dataset, tmp_path / "c")
    manifest = json.loads((folder / MANIFEST).read_text())

    def refused(expected: str) -> None:
        with pytest.raises(DataError) as err:
            open_cache(tiny, "train", dataset, folder)
        assert expected in str(err.value) and "\n" not in str(err.value)

    (folder / MANIFEST).write_text(json.dumps({**manifest, "files": "0" * 16}))
    refused("made from another dataset or from files that changed since")
    (folder / MANIFEST).write_text(json.dumps({**manifest, "split": "val"}))
    refused("made for split 'val'")
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with open(folder / "images.u8", "r+b") as fh:
        fh.truncate(100)
    refused("images.u8 is incomplete")
    (folder / MANIFEST).unlink()
    refused("incomplete (no readable manifest)")
    with pytest.raises(DataError, match="not found"):
        open_cache(tiny, "train", dataset, tmp_path / "nothing")
    # a touched file makes the cache stale
    folder2, _ = build_cache(tiny, "train", dataset, tmp_path / "d")
    image = dataset.samples[0][0]
    times = (image.stat().st_atime_ns, image.stat().st_mtime_ns)
    os.utime(image, ns=(times[0], times[1] + 10**9))
    try:
        with pytest.raises(DataError, match="files that changed since"):
            open_cache(tiny, "train", dataset, folder2)
    finally:
        os.utime(image, ns=times)  # the session's dataset is shared with other tests


def test_a_folder_that_is_not_a_cache_is_never_replaced(tiny: DataSource, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="not a decoded cache"):
        build_cache(tiny, "train", tiny.dataset("train"), mine)
    assert (mine / "thesis.tex").read_text() == "precious"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        build_cache(tiny, "train", tiny.dataset("train"), a_file)
    assert a_file.read_text() == "x"


ROOT = Path(__file__).resolve().parents[1]
# One builder of the race: it waits, once its first sample is written, until the other
# builder has written one too, so both partial folders are live at the same time.
_BUILDER = """
import json, sys, time
from pathlib import Path
from runners.data.decoded import build_cache
from runners.data.source import parse_data_arg
from runners.data.synth import SynthConfig

data, config, folder, me = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
source = parse_data_arg(data, SynthConfig.from_dict(config))
meet = folder.parent / "meet"

def both_mid_build(i, n):
    if i == 1:
        (meet / me).touch()
        deadline = time.monotonic() + 60
        while len(list(meet.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)

print(build_cache(source, "train", source.dataset("train"), folder, on_progress=both_mid_build)[1])
"""


def _race(tiny: DataSource, folder: Path) -> list[str]:
    """Two builder processes on ``folder`` at once; their outputs."""
    meet = folder.parent / "meet"
    meet.mkdir(exist_ok=True)
    for old in meet.iterdir():
        old.unlink()
    config = json.dumps(tiny.synth_config.to_dict())
    args = [sys.executable, "-c", _BUILDER, f"synth:{tiny.path}", config, str(folder)]
    procs = [
        subprocess.Popen(
            [*args, me], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for me in ("a", "b")
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    assert sorted(m.name for m in meet.iterdir()) == ["a", "b"]  # they did overlap
    return [out.strip() for out, _ in outs]


def test_two_builders_at_once_leave_one_complete_cache(tiny: DataSource, tmp_path: Path) -> None:
    """Neither removes the other's partial folder (the old builder deleted every one at
    start, and the first builder then failed); the first finished cache stays."""
    dataset = tiny.dataset("train")
    folder = tmp_path / "c"
    assert _race(tiny, folder) == ["True", "True"]
    cache = open_cache(tiny, "train", dataset, folder)
    assert cache is not None and cache.count == len(dataset)
    image, label = dataset.read(len(dataset) - 1)
    assert np.array_equal(cache.read(len(dataset) - 1)[0], image)
    assert np.array_equal(cache.read(len(dataset) - 1)[1], label)
    assert not list(tmp_path.glob(".c*"))  # the loser's partial is gone, and no other

    # a stale cache, replaced by two builders at once: a complete new one, nothing left over
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "files": "0" * 16}))
    assert _race(tiny, folder) == ["True", "True"]
    assert open_cache(tiny, "train", dataset, folder) is not None
    assert not list(tmp_path.glob(".c*"))


def test_only_dead_builders_partial_folders_are_removed(tiny: DataSource, tmp_path: Path) -> None:
    final = tmp_path / "c"
    here = partial_dir(final).name.rsplit("~", 3)[1]  # this host, as partial names spell it
    dead_pid = subprocess.Popen([sys.executable, "-c", ""])
    dead_pid.wait()

    def partial(name: str, silent_s: float) -> Path:
        path = tmp_path / name
        path.mkdir()
        (path / IMAGES).write_bytes(b"half written")
        then = time.time() - silent_s
        os.utime(path, (then, then))
        return path

    removed = [
        partial(f".c.partial~{here}~{dead_pid.pid}~00000001.tmp", DEAD_GRACE_S + 60),
        partial(".c.partial~elsewhere~1~00000002.tmp", TEMP_MAX_AGE_S + 60),  # silent 1 h
        partial(".c.partial-4242", TEMP_MAX_AGE_S + 60),  # the old builder's, long untouched
    ]
    kept = [
        partial(f".c.partial~{here}~{os.getpid()}~00000003.tmp", TEMP_MAX_AGE_S - 60),  # live
        partial(".c.partial~elsewhere~1~00000004.tmp", 60),  # another host, heartbeat fresh
        partial(f".c.partial~{here}~{dead_pid.pid}~00000005.tmp", 1),  # dead pid, fresh beat
        partial(f".d.partial~{here}~{dead_pid.pid}~00000006.tmp", TEMP_MAX_AGE_S + 60),  # not c's
    ]
    assert build_cache(tiny, "train", tiny.dataset("train"), final) == (final, True)
    assert not [p for p in removed if p.exists()]
    assert all((p / IMAGES).read_bytes() == b"half written" for p in kept)


def test_exchange_swaps_two_folders_in_one_step(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "name").write_text(folder.name)
    if not exchange(a, b):
        pytest.skip("no atomic exchange on this system or filesystem (two renames are used)")
    assert (a / "name").read_text() == "b" and (b / "name").read_text() == "a"
    assert not exchange(a, tmp_path / "missing")  # refused, nothing moved
    assert (a / "name").read_text() == "b"
