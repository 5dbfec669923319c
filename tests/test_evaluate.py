"""Evaluation: mIoU arithmetic, the prediction protocol, saved predictions, folder scoring."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from blocks.builder import build_model
from runners.data.labels import IGNORE_INDEX, LABEL_ID, NUM_CLASSES
from runners.data.source import DataSource
from runners.evaluate.__main__ import main as evaluate_main
from runners.evaluate.baseline import class_pixel_counts, majority_class_baseline
from runners.evaluate.folder import score_folder
from runners.evaluate.metrics import (
    EvalResult,
    confusion_matrix,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
)
from runners.evaluate.predict import evaluate, predict
from searchspace.presets import parse_spec

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------- metrics by hand


def test_confusion_matrix_skips_ignored_pixels() -> None:
    gt = np.array([[0, 0, 1, IGNORE_INDEX], [2, 2, 2, IGNORE_INDEX]])
    pred = np.array([[0, 1, 1, 2], [2, 2, 0, 0]])
    conf = confusion_matrix(gt, pred, num_classes=3)
    assert conf.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert conf.sum() == 6  # the two ignored pixels count nowhere, whatever was predicted


def test_iou_by_hand_with_an_absent_class() -> None:
    # rows = gt, columns = prediction; class 3 is in neither gt nor prediction
    conf = np.array(
        [
            [8, 2, 0, 0],  # class 0: tp 8, fn 2
            [1, 3, 0, 0],  # class 1: tp 3, fn 1
            [0, 0, 0, 0],  # class 2: never in gt, predicted once below -> IoU 0
            [0, 0, 0, 0],
        ]
    )
    conf[1, 2] = 1
    ious = iou_per_class(conf)
    assert ious[0] == pytest.approx(8 / (10 + 9 - 8))
    assert ious[1] == pytest.approx(3 / (5 + 5 - 3))
    assert ious[2] == 0.0
    assert math.isnan(ious[3])
    assert mean_iou(conf) == pytest.approx((8 / 11 + 3 / 7 + 0.0) / 3)
    assert pixel_accuracy(conf) == pytest.approx(11 / 15)


def test_perfect_and_empty_matrices() -> None:
    assert mean_iou(np.diag([5, 0, 7])) == 1.0  # class 1 absent: excluded, not zero
    assert math.isnan(mean_iou(np.zeros((3, 3))))


def test_void_prediction_column_is_a_miss_only() -> None:
    # (C, C + 1): the last column counts non-class predictions on labelled pixels
    conf = np.array([[4, 0, 1], [0, 2, 0]])
    assert iou_per_class(conf).tolist() == pytest.approx([4 / 5, 1.0])
    assert pixel_accuracy(conf) == pytest.approx(6 / 7)


def test_eval_result_names_classes_and_serialises_nan() -> None:
    conf = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    conf[0, 0] = 10
    result = EvalResult.from_confusion(conf, n_images=1)
    assert result.per_class_iou["road"] == 1.0
    assert math.isnan(result.per_class_iou["sidewalk"])
    data = result.to_dict()
    assert data["miou"] == 1.0 and data["per_class_iou"]["sidewalk"] is None
    assert "road" in result.summary()


# ------------------------------------------------------------------------ the protocol


class ConstantModel(nn.Module):
    """Predicts one class everywhere; records the input sizes it was called with."""

    def __init__(self, cls: int, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.cls, self.num_classes = cls, num_classes
        self.dummy = nn.Parameter(torch.zeros(1))
        self.sizes: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append((int(x.shape[-2]), int(x.shape[-1])))
        out = torch.zeros(x.shape[0], self.num_classes, *x.shape[-2:])
        out[:, self.cls] = 1.0
        return out + self.dummy


def test_predict_resizes_in_and_back_out() -> None:
    model = ConstantModel(3).eval()
    image = torch.randn(1, 3, 64, 128)
    pred = predict(model, image, (64, 128), input_hw=(32, 64), scales=(1.0, 1.5), flip=True)
    assert pred.shape == (1, 64, 128) and bool((pred == 3).all())
    assert model.sizes == [(32, 64), (32, 64), (48, 96), (48, 96)]


def test_constant_model_equals_majority_baseline(tiny: DataSource) -> None:
    counts = class_pixel_counts(tiny, "train")
    majority = int(np.argmax(counts))
    assert majority == 0  # road, as in Cityscapes
    base = majority_class_baseline(tiny)
    model = ConstantModel(majority)
    result = evaluate(model, tiny, "val", input_hw=(32, 64))
    assert np.array_equal(result.confusion, base.confusion)
    assert result.miou == pytest.approx(base.miou)
    present = int(np.isfinite(list(base.per_class_iou.values())).sum())
    assert base.miou == pytest.approx(base.per_class_iou["road"] / present)
    assert base.pixel_acc == pytest.approx(base.per_class_iou["road"])
    assert result.n_images == 4 and model.training  # the training flag is restored


def test_max_images_and_multiscale_flip(tiny: DataSource) -> None:
    model = ConstantModel(2)
    result = evaluate(model, tiny, max_images=2, scales=(0.5, 1.0), flip=True)
    assert result.n_images == 2 and len(model.sizes) == 2 * 2 * 2
    assert result.scales == (0.5, 1.0) and result.flip


def _copy_gt_as_predictions(source: DataSource, out: Path) -> None:
    """Ground-truth labelIds saved under prediction names: a perfect prediction."""
    for gt in (source.path / "gtFine" / "val").rglob("*_gtFine_labelIds.png"):
        name = gt.name.replace("_gtFine_labelIds.png", "_leftImg8bit.png")
        (out / gt.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(gt, out / gt.parent.name / name)


def test_evaluate_cli_on_perfect_predictions(tiny: DataSource, tmp_path: Path, capsys) -> None:
    preds = tmp_path / "preds"
    _copy_gt_as_predictions(tiny, preds)
    gt_dir = tiny.path / "gtFine" / "val"
    with pytest.raises(SystemExit) as info:
        from runners.cli import run_cli

        run_cli(
            evaluate_main,
            ["--pred-dir", str(preds), "--gt-dir", str(gt_dir), "--json", str(tmp_path / "r.json")],
        )
    assert info.value.code == 0
    assert "mIoU 100.00  pixel acc 100.00  (4 images)" in capsys.readouterr().out
    assert score_folder(preds, gt_dir).miou == 1.0


def test_saved_predictions_score_like_the_model_and_the_official_script(
    tiny: DataSource, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    from blocks.builder import build_model
    from searchspace.presets import parse_spec

    model = build_model(parse_spec("bisenetv2:width_mult=0.25"))
    preds = tmp_path / "preds"
    direct = evaluate(model, tiny, save_predictions=preds)
    files = sorted(p.relative_to(preds).as_posix() for p in preds.rglob("*.png"))
    assert files == sorted(
        p.relative_to(tiny.path / "leftImg8bit" / "val").as_posix()
        for p in (tiny.path / "leftImg8bit" / "val").rglob("*_leftImg8bit.png")
    )
    saved = np.asarray(Image.open(preds / files[0]))
    assert set(np.unique(saved)) <= set(LABEL_ID.values())  # labelIds, not trainIds
    scored = score_folder(preds, tiny.path / "gtFine" / "val")
    assert np.array_equal(scored.confusion[:, :NUM_CLASSES], direct.confusion)
    assert scored.miou == pytest.approx(direct.miou)

    official = _official_miou(preds, tiny.path / "gtFine" / "val", tmp_path)
    assert official == pytest.approx(direct.miou, abs=1e-9)


def _official_miou(preds: Path, gt_dir: Path, tmp_path: Path) -> float:
    """cityscapesscripts' evalPixelLevelSemanticLabeling on the same files (class mIoU)."""
    code = f"""
import glob, os
os.environ["CITYSCAPES_EXPORT_DIR"] = {str(tmp_path)!r}
from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev
args = ev.args
args.evalInstLevelScore = False
args.quiet = True
args.predictionPath = {str(preds)!r}
args.exportFile = os.path.join({str(tmp_path)!r}, "official.json")
gts = sorted(glob.glob(os.path.join({str(gt_dir)!r}, "*", "*_gtFine_labelIds.png")))
preds = [ev.getPrediction(args, g) for g in gts]
print(repr(float(ev.evaluateImgLists(preds, gts, args)["averageScoreClasses"])))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    if out.returncode != 0:
        pytest.skip(f"official cityscapesscripts evaluation unavailable: {out.stderr[-300:]}")
    return float(out.stdout.strip().splitlines()[-1])


def test_folder_scoring_reports_a_missing_prediction(tiny: DataSource, tmp_path: Path) -> None:
    preds = tmp_path / "preds"
    _copy_gt_as_predictions(tiny, preds)
    victim = sorted(preds.rglob("*.png"))[0]
    victim.unlink()
    out = subprocess.run(
        [
            sys.executable, "-m", "runners.evaluate",
            "--pred-dir", str(preds), "--gt-dir", str(tiny.path / "gtFine" / "val"),
        ],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "no prediction for" in lines[0] and victim.name[:20] in lines[0]


def test_per_image_counts_add_up_to_the_split_scores(tiny: DataSource) -> None:
    """Intersections and unions per image and class are exact: any subset's mIoU follows."""
    torch.manual_seed(0)
    model = build_model(parse_spec("bisenetv2:a=0.25,nc=19")).eval()
    result = evaluate(model, tiny, "val", input_hw=(64, 128))
    per = result.per_image
    assert per is not None and len(per.ids) == result.n_images == 4
    inter, union = np.array(per.intersection), np.array(per.union)
    assert inter.dtype.kind == "i" and inter.shape == union.shape == (4, 19)
    conf = result.confusion
    assert np.array_equal(inter.sum(0), np.diag(conf))
    assert np.array_equal(union.sum(0), conf.sum(0) + conf.sum(1) - np.diag(conf))
    present = union.sum(0) > 0
    assert result.miou == pytest.approx((inter.sum(0)[present] / union.sum(0)[present]).mean())
    names = [p.name.removesuffix("_leftImg8bit.png") for p, _ in tiny.dataset("val").samples]
    assert list(per.ids) == names  # file names without the suffix, in evaluation order
    assert result.to_dict()["per_image"]["union"] == per.union


def test_per_image_counts_of_the_cityscapes_val_set_fit_in_a_record() -> None:
    """500 images x 19 classes at 2048x1024: integers on one line per image, ~200 kB."""
    from runners.evaluate.metrics import PerImage
    from searchspace.atomic import json_text

    rng = np.random.default_rng(0)
    union = rng.integers(0, 2048 * 1024 // 4, size=(500, 19))
    inter = (union * rng.uniform(0, 1, size=union.shape)).astype(np.int64)
    ids = tuple(f"frankfurt_000001_{i:06d}_leftImg8bit"[:-12] for i in range(500))
    text = json_text({"per_image": PerImage(ids, inter.tolist(), union.tolist()).to_dict()})
    assert len(text) < 250_000, len(text)
    assert text.count("\n") < 1_100  # one line per image and list, not one per number
