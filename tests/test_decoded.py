"""The pre-decoded cache: same pixels as decoding, same training, refused when it does not fit."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from runners.data.decoded import MANIFEST, build_cache, open_cache
from runners.data.source import DataSource
from searchspace.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_cache_returns_what_decoding_returns(tiny: DataSource, tmp_path: Path) -> None:
    dataset = tiny.dataset("train")
    folder, built = build_cache(tiny, "train", dataset, tmp_path / "c")
    assert built and (folder / MANIFEST).is_file()
    assert not list(tmp_path.glob(".c.partial-*"))  # the temporary folder is gone
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
