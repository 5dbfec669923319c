"""The training sample computed on the crop only: scale, crop, flip and jitter in one pass.

The resize-first pipeline (``transforms.train_transform``) resizes the whole image before
cropping: at the paper recipe (Cityscapes 2048x1024, scale up to 2.0, 1024x1024 crops)
that is a 4096x2048 bilinear resize, 8 M pixels, to keep 1 M of them. This one draws the
scale and the crop window first, in the same order and from the same generator, and then
samples only the crop's pixels from the source image:

- the image with ``cv2.warpAffine`` (bilinear, half-pixel centres: the mapping of a full
  ``cv2.resize`` followed by the crop; borders replicate as ``resize`` clamps);
- the label by index arithmetic in numpy: pixel (y, x) of the scaled label is source pixel
  (floor((y + 0.5) H / H_s), floor((x + 0.5) W / W_s)), the nearest-pixel-centre rule of
  PIL's and OpenCV's NEAREST_EXACT, computed in exact integers. Where a scaled pixel's
  centre falls exactly between two source pixels, those libraries' floating-point sums
  pick either one; this picks the lower-right one, always (a tie every few columns at
  scales 1.5 and 0.75; a label changes there only on a class boundary);
- what the crop leaves outside the scaled image is the fill colour and the ignore label,
  as ``RandomCrop`` pads;
- brightness, contrast and saturation are all linear in the pixel values, so they are one
  3x4 matrix (``cv2.transform``, saturating to uint8) instead of three float passes.

Only decoding still touches the whole image (PNG has no partial decode); a pre-decoded
cache (``runners.data.decoded``) removes that too. ``tests/test_data.py`` checks the
result against resize-then-crop; ``benchmarks/loader_bench.py`` measures both.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from runners.data.labels import IGNORE_INDEX
from runners.data.transforms import Normalize, _randint, _uniform
from searchspace.recipes import IMAGENET_MEAN, IMAGENET_STD

GREY = np.array([0.299, 0.587, 0.114], dtype=np.float64)  # ITU-R 601 luma, as ColorJitter


def scaled_size(h: int, w: int, scale: float) -> tuple[int, int]:
    """(H_s, W_s): the size resize-first would give (``transforms.resize``'s rounding)."""
    return max(1, round(h * scale)), max(1, round(w * scale))


def crop_of_scaled(
    image: np.ndarray,
    label: np.ndarray,
    scale: float,
    top: int,
    left: int,
    crop_hw: tuple[int, int],
    fill: Sequence[int],
    ignore_index: int = IGNORE_INDEX,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``top..top+ch`` and columns ``left..left+cw`` of the image and label scaled by
    ``scale`` (padded with ``fill`` / ``ignore_index`` beyond their edges), computed
    without scaling the rest."""
    h, w = label.shape
    hs, ws = scaled_size(h, w, scale)
    ch, cw = crop_hw
    vh, vw = max(0, min(ch, hs - top)), max(0, min(cw, ws - left))  # inside the image
    out_img = np.empty((ch, cw, 3), dtype=np.uint8)
    out_lab = np.full((ch, cw), ignore_index, dtype=label.dtype)
    if vh < ch or vw < cw:
        out_img[...] = np.asarray(fill, dtype=np.uint8)
    if vh == 0 or vw == 0:
        return out_img, out_lab
    if (hs, ws) == (h, w):
        out_img[:vh, :vw] = image[top : top + vh, left : left + vw]
        out_lab[:vh, :vw] = label[top : top + vh, left : left + vw]
        return out_img, out_lab
    sy, sx = h / hs, w / ws  # source pixels per scaled pixel
    # destination (x, y) -> source: x_src = (x + left + 0.5) * sx - 0.5, as cv2.resize maps
    m = np.array(
        [[sx, 0.0, (left + 0.5) * sx - 0.5], [0.0, sy, (top + 0.5) * sy - 0.5]], dtype=np.float64
    )
    cv2.warpAffine(
        image,
        m,
        (vw, vh),
        dst=out_img[:vh, :vw],
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    rows = np.minimum((2 * np.arange(top, top + vh) + 1) * h // (2 * hs), h - 1)
    cols = np.minimum((2 * np.arange(left, left + vw) + 1) * w // (2 * ws), w - 1)
    out_lab[:vh, :vw] = label[rows[:, None], cols[None, :]]
    return out_img, out_lab


def jitter_matrix(
    image: np.ndarray, brightness: float, contrast: float, saturation: float
) -> np.ndarray:
    """The 3x4 matrix (RGB + offset) that applies brightness, contrast and saturation
    factors in that order, as ``transforms.ColorJitter`` does in three passes:
    out = b c s x + (1 - s) b c grey(x) + (1 - c) b mean(grey(x))."""
    mean_grey = float(np.dot(GREY, cv2.mean(image)[:3]))
    bc = brightness * contrast
    m = (1.0 - saturation) * bc * np.tile(GREY, (3, 1)) + bc * saturation * np.eye(3)
    offset = (1.0 - contrast) * brightness * mean_grey
    return np.hstack([m, np.full((3, 1), offset)]).astype(np.float32)


class CropFirstSample:
    """Random scale (from a set, or uniform in a range), crop, flip, colour jitter and
    normalisation of one (image, label) pair, drawing its random numbers in the order the
    resize-first ``train_transform`` does, so both take the same crops for the same seed."""

    def __init__(
        self,
        crop_hw: tuple[int, int],
        scales: Sequence[float],
        discrete_scales: bool = True,
        flip_p: float = 0.5,
        jitter: tuple[float, float, float] = (0.4, 0.4, 0.4),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        generator: torch.Generator | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        self.crop_hw = (int(crop_hw[0]), int(crop_hw[1]))
        self.scales = tuple(float(s) for s in scales)
        if not self.scales or min(self.scales) <= 0 or (not discrete_scales and len(scales) != 2):
            raise ValueError(f"CropFirstSample needs positive scales, got {self.scales}")
        self.discrete, self.flip_p, self.jitter = discrete_scales, flip_p, tuple(jitter)
        self.fill = tuple(round(255 * m) for m in mean)
        self.normalize = Normalize(mean, std)
        self.generator, self.ignore_index = generator, ignore_index

    def _factor(self, amount: float) -> float:
        return _uniform(max(0.0, 1.0 - amount), 1.0 + amount, self.generator)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        gen = self.generator
        if self.discrete:
            scale = self.scales[_randint(len(self.scales), gen)]
        else:
            scale = _uniform(self.scales[0], self.scales[1], gen)
        hs, ws = scaled_size(*label.shape, scale)
        ch, cw = self.crop_hw
        top = _randint(max(ch, hs) - ch + 1, gen)
        left = _randint(max(cw, ws) - cw + 1, gen)
        img, lab = crop_of_scaled(
            image, label, scale, top, left, self.crop_hw, self.fill, self.ignore_index
        )
        if _uniform(0.0, 1.0, gen) < self.flip_p:
            img, lab = img[:, ::-1], lab[:, ::-1]
        b_amt, c_amt, s_amt = self.jitter
        if b_amt or c_amt or s_amt:
            b = self._factor(b_amt) if b_amt else 1.0
            c = self._factor(c_amt) if c_amt else 1.0
            s = self._factor(s_amt) if s_amt else 1.0
            img = cv2.transform(np.ascontiguousarray(img), jitter_matrix(img, b, c, s))
        tensor = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
        return self.normalize(tensor, torch.from_numpy(lab.astype(np.int64)))

    def __repr__(self) -> str:
        return f"CropFirstSample({self.crop_hw}, scales={self.scales}, flip_p={self.flip_p})"
