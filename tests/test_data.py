"""Data: label tables, the synthetic generator and its cache, datasets, transforms, CLI,
checks before a run (and their remembered verdicts), errors out of loader workers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import labels as cs_labels
from PIL import Image

from runners.data import labels as L
from runners.data.cache import CACHE_ENV, CHECKS_DIR, cache_root
from runners.data.datasets import CityscapesDataset, FolderDataset, PairedDataset
from runners.data.scene import render_scene
from runners.data.source import parse_data_arg
from runners.data.synth import (
    DATA_ENV,
    MANIFEST_NAME,
    SynthConfig,
    default_synth_root,
    ensure_synth,
    generate_synth,
    image_rng,
    read_manifest,
)
from runners.data.transforms import (
    ColorJitter,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    eval_transform,
    train_transform,
)
from runners.data.workers import WorkerToolkitError, carry, toolkit_errors_leave_workers
from searchspace.errors import DataError, ToolkitError

REPO = Path(__file__).resolve().parents[1]
SMALL = SynthConfig(train_count=6, val_count=2, height=64, width=128, seed=3)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> Path:
    """Remembered verdicts and the default built-in dataset go to a temporary cache folder
    (also for the commands the tests start), never to the user's."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv(CACHE_ENV, str(cache))
    monkeypatch.delenv(DATA_ENV, raising=False)
    return cache


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synth(tmp_path_factory.mktemp("synth") / "small", SMALL)


@pytest.fixture
def city(tmp_path: Path, synth_root: Path) -> Path:
    """A private copy of the small dataset to break."""
    root = tmp_path / "cs"
    shutil.copytree(synth_root, root)
    return root


def first_pair(root: Path, split: str = "train") -> tuple[Path, Path]:
    image = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))[0]
    stem = image.name[: -len("_leftImg8bit.png")]
    return image, root / "gtFine" / split / image.parent.name / f"{stem}_gtFine_labelIds.png"


def all_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png")) if p.is_file()
    }


# ----------------------------------------------------------------------------- label table


def test_label_tables_match_cityscapesscripts() -> None:
    for label in cs_labels:
        if label.id < 0:
            continue
        expected = label.trainId if 0 <= label.trainId < 19 else 255
        assert L.LABEL_TO_TRAIN[label.id] == expected, label.name
        assert L.VALID_LABEL_MASK[label.id]
        if expected != 255:
            assert L.TRAIN_TO_LABEL[expected] == label.id
            assert L.CLASS_NAMES[expected] == label.name
            assert tuple(L.PALETTE[expected]) == label.color
    assert not L.VALID_LABEL_MASK[34:].any()
    assert (L.LABEL_TO_TRAIN[34:] == 255).all()
    assert L.TRAIN_TO_LABEL[255] == L.LABEL_ID["unlabeled"]
    assert len(L.CLASS_NAMES) == L.NUM_CLASSES == 19
    assert L.CLASS_NAMES[0] == "road" and L.CLASS_NAMES[18] == "bicycle"
    ids = np.arange(34, dtype=np.uint8)
    train = L.label_to_train(ids)
    back = L.train_to_label(train)
    kept = train != 255
    assert (back[kept] == ids[kept]).all()


# ------------------------------------------------------------------------------- generator


def test_generator_is_deterministic_and_index_independent(tmp_path: Path) -> None:
    cfg = SynthConfig(train_count=3, val_count=1, height=64, width=128, seed=5)
    generate_synth(tmp_path / "a", cfg)
    generate_synth(tmp_path / "b", cfg)
    a, b = all_files(tmp_path / "a"), all_files(tmp_path / "b")
    assert len(a) == 8 and a == b
    other = SynthConfig(train_count=3, val_count=1, height=64, width=128, seed=6)
    generate_synth(tmp_path / "c", other)
    c = all_files(tmp_path / "c")
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if "leftImg8bit" in k)
    fewer = SynthConfig(train_count=1, val_count=1, height=64, width=128, seed=5)
    generate_synth(tmp_path / "d", fewer)
    d = all_files(tmp_path / "d")
    assert d and all(d[k] == a[k] for k in d)


def test_generator_layout_and_manifest(synth_root: Path) -> None:
    manifest = read_manifest(synth_root)
    assert manifest is not None
    assert manifest["config"] == SMALL.to_dict()
    assert manifest["counts"] == {"train": 6, "val": 2}
    assert manifest["data_id"] == SMALL.data_id
    assert SynthConfig.from_dict(SMALL.to_dict()) == SMALL
    images = sorted((synth_root / "leftImg8bit" / "train").glob("*/*_leftImg8bit.png"))
    assert len(images) == 6
    assert images[0].name.endswith("_000019_leftImg8bit.png")
    img, lab = first_pair(synth_root)
    with Image.open(img) as im:
        assert im.mode == "RGB" and im.size == (128, 64)
    with Image.open(lab) as im:
        assert im.mode == "L" and im.size == (128, 64)
        assert L.VALID_LABEL_MASK[np.asarray(im)].all()


def test_default_size_scenes_cover_at_least_12_classes() -> None:
    present = np.zeros(256, dtype=bool)
    for index in range(20):
        image, label_ids = render_scene(image_rng(0, "train", index), 256, 512)
        assert image.shape == (256, 512, 3) and image.dtype == np.uint8
        present[np.unique(L.LABEL_TO_TRAIN[label_ids])] = True
    names = {L.CLASS_NAMES[i] for i in range(19) if present[i]}
    assert len(names) >= 12, names
    wanted = {"road", "sidewalk", "building", "vegetation", "terrain", "sky"}
    wanted |= {"pole", "traffic sign", "traffic light", "person", "car", "fence", "bicycle"}
    assert wanted <= names, wanted - names


def test_class_is_not_a_colour_lookup() -> None:
    """Road and sidewalk colours overlap: many sidewalk pixels look like some road pixels."""
    image, label_ids = render_scene(image_rng(0, "train", 1), 256, 512)
    grey = image.astype(np.float32).mean(axis=2)
    road = grey[label_ids == L.LABEL_ID["road"]]
    walk = grey[label_ids == L.LABEL_ID["sidewalk"]]
    lo, hi = np.percentile(road, [5, 95])
    assert ((walk > lo) & (walk < hi)).mean() > 0.2


def test_synth_config_rejects_bad_values() -> None:
    with pytest.raises(DataError, match="height"):
        SynthConfig(height=8)
    with pytest.raises(DataError, match="cities"):
        SynthConfig(cities=("Bad_City",))


# ------------------------------------------------------------------------------ the cache


def test_ensure_synth_caches_and_regenerates(tmp_path: Path) -> None:
    cfg = SynthConfig(train_count=2, val_count=1, height=64, width=128, seed=1)
    root = ensure_synth(tmp_path / "data", cfg)
    manifest = root / MANIFEST_NAME
    image, _ = first_pair(root)
    stamps = (manifest.stat().st_mtime_ns, image.stat().st_mtime_ns)
    assert ensure_synth(root, cfg) == root
    assert (manifest.stat().st_mtime_ns, image.stat().st_mtime_ns) == stamps
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left

    manifest.unlink()  # an incomplete dataset: regenerated
    ensure_synth(root, cfg)
    assert manifest.exists() and image.stat().st_mtime_ns != stamps[1]

    bigger = SynthConfig(train_count=3, val_count=1, height=64, width=128, seed=1)
    ensure_synth(root, bigger)  # another config: regenerated in place
    assert read_manifest(root)["counts"] == {"train": 3, "val": 1}


# One generator of the race: it waits, with its partial folder made, until the other one
# has made its own, so both generate at the same time.
_GENERATOR = """
import json, sys, time
from pathlib import Path
import runners.data.synth as synth

root, config, me = Path(sys.argv[1]), synth.SynthConfig.from_dict(json.loads(sys.argv[2])), sys.argv[3]
meet, generate = root.parent / "meet", synth.generate_synth

def both_mid_build(tmp, *args, **kwargs):
    (meet / me).touch()
    deadline = time.monotonic() + 60
    while len(list(meet.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    return generate(tmp, *args, **kwargs)

synth.generate_synth = both_mid_build
synth.ensure_synth(root, config)
"""


def _race_synth(root: Path, config: SynthConfig) -> None:
    meet = root.parent / "meet"
    meet.mkdir(exist_ok=True)
    for old in meet.iterdir():
        old.unlink()
    args = [sys.executable, "-c", _GENERATOR, str(root), json.dumps(config.to_dict())]
    procs = [
        subprocess.Popen(
            [*args, me], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for me in ("a", "b")
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert sorted(m.name for m in meet.iterdir()) == ["a", "b"]  # they did overlap


def test_two_generators_at_once_leave_one_complete_dataset(tmp_path: Path) -> None:
    """Same rule as the decoded cache (``runners.store.files.building_dir``): neither
    removes the other's partial folder, the first finished dataset stays, a dead
    generator's partial folder is removed and a live one's kept."""
    from runners.store.files import DEAD_GRACE_S, partial_dir

    root = tmp_path / "data"
    here = partial_dir(root).name.rsplit("~", 3)[1]
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    dead_partial = tmp_path / f".data.partial~{here}~{dead.pid}~00000001.tmp"
    live_partial = tmp_path / f".data.partial~{here}~{os.getpid()}~00000002.tmp"
    for path in (dead_partial, live_partial):
        path.mkdir()
        then = time.time() - DEAD_GRACE_S - 60
        os.utime(path, (then, then))

    cfg = SynthConfig(train_count=3, val_count=1, height=64, width=128, seed=2)
    _race_synth(root, cfg)
    assert all_files(root) == all_files(ensure_synth(tmp_path / "alone", cfg))
    assert not dead_partial.exists() and live_partial.is_dir()
    live_partial.rmdir()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []

    bigger = SynthConfig(train_count=4, val_count=1, height=64, width=128, seed=2)
    _race_synth(root, bigger)  # an old dataset, replaced by two generators at once
    assert read_manifest(root)["counts"] == {"train": 4, "val": 1}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_ensure_synth_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="refusing"):
        ensure_synth(tmp_path / "mine", SMALL)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# -------------------------------------------------------------------------------- datasets


def test_cityscapes_dataset_on_synth(synth_root: Path) -> None:
    ds = CityscapesDataset(synth_root, "train")
    assert len(ds) == 6 and ds.verify() == 6
    image, label = ds[0]
    assert image.shape == (3, 64, 128) and image.dtype == torch.float32
    assert label.shape == (64, 128) and label.dtype == torch.int64
    assert set(label.unique().tolist()) <= set(range(19)) | {255}
    assert -3.0 < float(image.mean()) < 3.0  # normalised
    _, label_path = ds.samples[0]
    raw = np.asarray(Image.open(label_path))
    assert (label.numpy() == L.LABEL_TO_TRAIN[raw]).all()
    assert len(CityscapesDataset(synth_root, "val")) == 2


def test_dataset_in_a_dataloader(synth_root: Path) -> None:
    ds = CityscapesDataset(synth_root, "train", train_transform((48, 96), scales=(0.5, 1.5)))
    loader = torch.utils.data.DataLoader(ds, batch_size=3, shuffle=False)
    images, labels = next(iter(loader))
    assert images.shape == (3, 3, 48, 96) and labels.shape == (3, 48, 96)


def _write_folder_dataset(root: Path, values: list[int]) -> None:
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "classes.txt").write_text("background\nthing\nstuff\n")
    rng = np.random.default_rng(0)
    for i, value in enumerate(values):
        image = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
        label = np.full((20, 30), value, dtype=np.uint8)
        label[:5] = 255
        Image.fromarray(image).save(root / "images" / "train" / f"img{i}.{'png' if i else 'jpg'}")
        Image.fromarray(label).save(root / "labels" / "train" / f"img{i}.png")


def test_folder_dataset(tmp_path: Path) -> None:
    _write_folder_dataset(tmp_path, [0, 2])
    ds = FolderDataset(tmp_path, "train")
    assert ds.num_classes == 3 and ds.class_names == ("background", "thing", "stuff")
    assert ds.verify() == 2
    image, label = ds[1]
    assert image.shape == (3, 20, 30) and label.dtype == torch.int64
    assert set(label.unique().tolist()) == {2, 255}
    source = parse_data_arg(f"folder:{tmp_path}", check=["train"])
    assert (source.kind, source.num_classes, source.is_builtin) == ("folder", 3, False)
    assert source.data_id == f"folder-{tmp_path.name}"
    assert len(source.dataset("train")) == 2
    # opening it for a run checks train and val: this one has no val split
    with pytest.raises(DataError, match=r"split folder not found: .*images/val$"):
        parse_data_arg(f"folder:{tmp_path}")


def test_folder_dataset_errors(tmp_path: Path) -> None:
    _write_folder_dataset(tmp_path, [0, 3])  # 3 is not a class of a 3-class dataset
    with pytest.raises(DataError, match=r"label values \[3\].*img1\.png"):
        FolderDataset(tmp_path, "train").verify()
    (tmp_path / "classes.txt").unlink()
    with pytest.raises(DataError, match=r"classes\.txt"):
        FolderDataset(tmp_path, "train")


def test_parse_data_arg(tmp_path: Path, synth_root: Path) -> None:
    synth = parse_data_arg("synth")
    assert synth.kind == "synth" and synth.is_builtin and synth.num_classes == 19
    assert "NOT Cityscapes" in synth.label
    assert synth.data_id == SynthConfig().data_id == parse_data_arg(None).data_id
    assert synth.data_id.startswith("synth-")
    assert parse_data_arg("synth", SMALL).data_id != synth.data_id
    existing = parse_data_arg(f"synth:{synth_root}")  # takes the config found there
    assert existing.synth_config == SMALL and existing.data_id == SMALL.data_id
    assert len(existing.dataset("val")) == 2
    cs = parse_data_arg(f"cityscapes:{synth_root}")
    assert (cs.kind, cs.label, cs.data_id, cs.is_builtin) == (
        "cityscapes",
        "Cityscapes",
        "cityscapes",
        False,
    )
    assert cs.splits() == ["train", "val"]
    for bad, message in [
        ("imagenet:/x", "unknown data source"),
        ("cityscapes", "needs a folder"),
        (f"cityscapes:{tmp_path / 'nope'}", "nope"),
        (f"folder:{tmp_path}", "classes.txt"),
    ]:
        with pytest.raises(DataError, match=message) as err:
            parse_data_arg(bad)
        assert "\n" not in str(err.value)


def _break_missing_root(city: Path) -> str:
    shutil.rmtree(city)
    return str(city)


def _break_missing_split(city: Path) -> str:
    shutil.rmtree(city / "gtFine" / "train")
    return str(city / "gtFine" / "train")


def _break_empty(city: Path) -> str:
    shutil.rmtree(city / "leftImg8bit" / "train")
    (city / "leftImg8bit" / "train" / "synthtown").mkdir(parents=True)
    return str(city / "leftImg8bit" / "train")


def _break_image_without_label(city: Path) -> str:
    image, label = first_pair(city)
    label.unlink()
    return image.name


def _break_label_without_image(city: Path) -> str:
    image, label = first_pair(city)
    image.unlink()
    return label.name


ERRORS_AT_SCAN = [
    _break_missing_root,
    _break_missing_split,
    _break_empty,
    _break_image_without_label,
    _break_label_without_image,
]


@pytest.mark.parametrize("breaker", ERRORS_AT_SCAN, ids=lambda f: f.__name__[7:])
def test_cityscapes_errors_at_scan(city: Path, breaker) -> None:
    named = breaker(city)
    with pytest.raises(DataError) as err:
        CityscapesDataset(city, "train")
    assert named in str(err.value) and "\n" not in str(err.value)


def _corrupt_image(city: Path) -> Path:
    image, _ = first_pair(city)
    data = image.read_bytes()
    image.write_bytes(data[:200] + b"\x00garbage" * 20)  # valid header, broken pixels
    return image


def _corrupt_label(city: Path) -> Path:
    _, label = first_pair(city)
    label.write_bytes(b"not a png at all")
    return label


def _unknown_label_id(city: Path) -> Path:
    _, label = first_pair(city)
    arr = np.asarray(Image.open(label)).copy()
    arr[0, :4] = 250
    Image.fromarray(arr).save(label)
    return label


def _size_mismatch(city: Path) -> Path:
    _, label = first_pair(city)
    arr = np.asarray(Image.open(label))
    Image.fromarray(arr[:-8]).save(label)
    return label


def _rgb_label(city: Path) -> Path:
    _, label = first_pair(city)
    Image.open(label).convert("RGB").save(label)
    return label


ERRORS_AT_LOAD = {
    _corrupt_image: "cannot decode image",
    _corrupt_label: "cannot decode label",
    _unknown_label_id: r"label ids \[250\]",
    _size_mismatch: "128x64 but its label is 128x56",
    _rgb_label: "single-channel",
}


@pytest.mark.parametrize("breaker", list(ERRORS_AT_LOAD), ids=lambda f: f.__name__.strip("_"))
def test_cityscapes_errors_at_load_and_verify(city: Path, breaker) -> None:
    path = breaker(city)
    ds = CityscapesDataset(city, "train")  # the scan does not decode files
    index = next(i for i, pair in enumerate(ds.samples) if path in pair)
    for call in (lambda: ds[index], ds.verify):
        with pytest.raises(DataError, match=ERRORS_AT_LOAD[breaker]) as err:
            call()
        assert str(path) in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------ transforms


def _sample(h: int = 40, w: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    label = rng.choice(np.array([0, 5, 13, 255], dtype=np.uint8), (h, w))
    return image, label


def test_random_crop_pads_label_with_ignore() -> None:
    image, label = _sample(40, 60)
    out_img, out_lab = RandomCrop((64, 80), fill=(1, 2, 3))(image, label)
    assert out_img.shape == (64, 80, 3) and out_lab.shape == (64, 80)
    assert (out_lab[40:] == 255).all() and (out_lab[:, 60:] == 255).all()
    assert (out_img[40:] == np.array([1, 2, 3], dtype=np.uint8)).all()
    assert (out_lab[:40, :60] == label).all()  # only padding, no shift, when smaller
    crop_img, crop_lab = RandomCrop((16, 16))(image, label)
    assert crop_img.shape == (16, 16, 3) and crop_lab.shape == (16, 16)


def test_flip_flips_image_and_label_together() -> None:
    image, label = _sample()
    img, lab = RandomHorizontalFlip(p=1.0)(image, label)
    assert (img == image[:, ::-1]).all() and (lab == label[:, ::-1]).all()
    img, lab = RandomHorizontalFlip(p=0.0)(image, label)
    assert (img == image).all() and (lab == label).all()


@pytest.mark.parametrize("scales", [(0.3, 0.3), (1.7, 1.7), (0.5, 2.0)])
def test_scale_keeps_labels_valid(scales: tuple[float, float]) -> None:
    image, label = _sample()
    img, lab = RandomScale(scales)(image, label)
    assert img.shape[:2] == lab.shape
    if scales[0] == scales[1]:
        assert lab.shape == (round(40 * scales[0]), round(60 * scales[0]))
    assert set(np.unique(lab).tolist()) <= {0, 5, 13, 255}


def test_color_jitter_leaves_labels() -> None:
    image, label = _sample()
    img, lab = ColorJitter(0.5, 0.5, 0.5)(image, label)
    assert img.dtype == np.uint8 and img.shape == image.shape and lab is label


def test_train_transform_is_reproducible_with_torch_seed() -> None:
    image, label = _sample(64, 128)
    t = train_transform((32, 48), scales=(0.5, 2.0))
    torch.manual_seed(7)
    a = t(image, label)
    torch.manual_seed(7)
    b = t(image, label)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (3, 32, 48) and a[1].dtype == torch.int64
    gen = torch.Generator().manual_seed(3)
    c = train_transform((32, 48), generator=gen)(image, label)
    assert c[0].shape == (3, 32, 48)
    img, lab = eval_transform()(image, label)
    assert img.shape == (3, 64, 128) and torch.equal(lab, torch.from_numpy(label).long())


# ------------------------------------------------------------------------------------ CLI


def _run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "runners.data", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_missing_folder_is_one_line_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_cityscapes"
    result = _run_cli("check", f"cityscapes:{missing}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0] and "Traceback" not in result.stderr


def test_cli_synth_and_check(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    args = ("synth", "--out", str(out), "--train", "2", "--val", "1", "--height", "64")
    result = _run_cli(*args, "--width", "128")
    assert result.returncode == 0, result.stderr
    assert "train 2, val 1" in result.stdout and "road" in result.stdout
    result = _run_cli("check", f"cityscapes:{out}")
    assert result.returncode == 0, result.stderr
    assert "train: 2 images OK" in result.stdout and "val: 1 images OK" in result.stdout


# ------------------------------------------------------------------------ the cache folder


def test_cache_folder_and_default_synth_root(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the current folder plays no part
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c" and default_synth_root() == tmp_path / "c" / "synth"
    assert parse_data_arg("synth").path == tmp_path / "c" / "synth"
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "mine"))  # the dataset's own folder
    assert default_synth_root() == tmp_path / "mine"
    monkeypatch.delenv(DATA_ENV)
    monkeypatch.delenv(CACHE_ENV)
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert default_synth_root() == tmp_path / "xdg" / "bisenet-lab" / "synth"
        monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
        assert cache_root() == Path.home() / ".cache" / "bisenet-lab"
        monkeypatch.delenv("XDG_CACHE_HOME")
        assert cache_root() == Path.home() / ".cache" / "bisenet-lab"


# ------------------------------------------------- checks when data is opened, remembered


def _unpaired_image(city: Path) -> str:
    _, label = first_pair(city, "val")
    label.unlink()
    return label.name


def _label_not_png(city: Path) -> str:
    _, label = first_pair(city)
    Image.open(label).save(label, format="JPEG")  # JPEG data under the .png name
    return label.name


def _label_id_unknown(city: Path) -> str:
    return _unknown_label_id(city).name


def _empty_cityscapes(city: Path) -> str:
    shutil.rmtree(city)
    city.mkdir()
    return str(city / "leftImg8bit" / "train")


BROKEN_AT_OPEN = {
    _unpaired_image: "image has no label",
    _label_not_png: r"label is not a PNG \(JPEG data\)",
    _label_id_unknown: r"label ids \[250\] are not Cityscapes labelIds",
    _empty_cityscapes: "Cityscapes split folder not found",
}


@pytest.mark.parametrize("breaker", list(BROKEN_AT_OPEN), ids=lambda f: f.__name__.strip("_"))
def test_broken_data_is_one_line_when_opened(city: Path, breaker) -> None:
    named = breaker(city)
    with pytest.raises(DataError, match=BROKEN_AT_OPEN[breaker]) as err:
        parse_data_arg(f"cityscapes:{city}")
    assert named in str(err.value) and "\n" not in str(err.value)


def test_ablate_on_broken_data_exits_2_before_writing(city: Path, tmp_path: Path) -> None:
    _, label = first_pair(city, "val")
    label.write_bytes(b"not a png at all")
    res = tmp_path / "res"
    out = subprocess.run(
        [sys.executable, "-m", "runners.ablate", "--table", "3a", "--rows", "lambda_1_8",
         "--no-latency", "--data", f"cityscapes:{city}", "--results-dir", str(res)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot decode label" in lines[0] and label.name in lines[0]
    assert not res.exists()


@pytest.fixture
def verify_calls(monkeypatch) -> list[str]:
    """The splits whose every file was read (``verify``), in order."""
    calls: list[str] = []
    real = PairedDataset.verify

    def counting(self, *args, **kwargs):
        calls.append(self.split)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(PairedDataset, "verify", counting)
    return calls


def test_verdict_is_remembered_until_the_files_change(
    city: Path, verify_calls: list[str], private_cache: Path
) -> None:
    data = f"cityscapes:{city}"
    parse_data_arg(data)
    assert sorted(verify_calls) == ["train", "val"]
    verdicts = [json.loads(p.read_text()) for p in (private_cache / CHECKS_DIR).glob("*.json")]
    assert sorted((v["split"], v["ok"], v["images"]) for v in verdicts) == [
        ("train", True, 6),
        ("val", True, 2),
    ]
    verify_calls.clear()
    parse_data_arg(data).dataset("train")  # remembered: nothing read again
    assert verify_calls == []

    _, label = first_pair(city)
    good = label.read_bytes()
    _unknown_label_id(city)  # a changed file: its split is checked again
    with pytest.raises(DataError, match="250") as first:
        parse_data_arg(data)
    assert verify_calls == ["train"]
    with pytest.raises(DataError) as again:  # the failure is remembered too
        parse_data_arg(data)
    assert str(again.value) == str(first.value) and verify_calls == ["train"]

    label.write_bytes(good)  # repaired: checked again, passes
    parse_data_arg(data)
    assert verify_calls == ["train", "train"]
    image, label = first_pair(city)  # a pair more or less changes the fingerprint as well
    shutil.copy(image, image.with_name("zz" + image.name))
    shutil.copy(label, label.with_name("zz" + label.name))
    assert parse_data_arg(data).check(["train"]) == {"train": 7}
    assert verify_calls == ["train", "train", "train"]
    assert parse_data_arg(data).check(["train"], force=True) == {"train": 7}
    assert verify_calls == ["train"] * 4


def test_builtin_data_passes_the_checks(verify_calls: list[str], private_cache: Path) -> None:
    source = parse_data_arg("synth", SMALL)
    assert source.path == private_cache / "synth"
    assert verify_calls == []  # not generated yet: nothing to check
    source.prepare()  # generated, then checked
    assert sorted(verify_calls) == ["train", "val"]
    assert parse_data_arg("synth", SMALL).check() == {"train": 6, "val": 2}
    assert len(parse_data_arg("synth", SMALL).dataset("val")) == 2
    assert sorted(verify_calls) == ["train", "val"]  # remembered


# ------------------------------------------------------------ errors out of loader workers


def test_error_in_a_loader_worker_reads_as_without_workers(city: Path) -> None:
    path = _corrupt_label(city)
    ds = CityscapesDataset(city, "train")
    index = next(i for i, pair in enumerate(ds.samples) if path in pair)
    caught = {}
    for workers in (0, 1):
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(ds, [index]), batch_size=1, num_workers=workers
        )
        with pytest.raises(DataError) as err:
            next(iter(loader))
        caught[workers] = err.value
    assert type(caught[1]) is type(caught[0]) is DataError
    assert str(caught[1]) == str(caught[0])
    assert str(path) in str(caught[0]) and "\n" not in str(caught[0])


def test_worker_error_carrier() -> None:
    # outside a worker: unchanged
    with pytest.raises(DataError, match=r"^plain$"), toolkit_errors_leave_workers():
        raise DataError("plain")
    # torch's report of a carried error gives back the original type and message
    report = "Caught WorkerToolkitError in DataLoader worker process 0.\nOriginal Traceback:\n"
    rebuilt = WorkerToolkitError(report + f"x.WorkerToolkitError: {carry(DataError('bad x'))}\n")
    assert type(rebuilt) is DataError and str(rebuilt) == "bad x"
    garbled = WorkerToolkitError(report + "something torch may write one day")
    assert type(garbled) is WorkerToolkitError and isinstance(garbled, ToolkitError)


# ------------------------------------------------------------------------ the paper's data


def test_paper_numbers_are_package_data() -> None:
    from importlib.resources import files

    from searchspace.tables import PAPER_DIR

    tomllib = pytest.importorskip("tomllib")
    paper = files("searchspace") / "paper"
    names = sorted(p.name for p in paper.iterdir() if p.name.endswith(".csv"))
    assert names == [
        "bisenetv1_tables.csv",
        "bisenetv2_headline.csv",
        "bisenetv2_table7.csv",
        "bisenetv2_tables.csv",
    ]
    assert str(PAPER_DIR) == str(paper)
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["searchspace"]
    shipped = {p.name for pattern in globs for p in (REPO / "searchspace").glob(pattern)}
    assert set(names) <= shipped
