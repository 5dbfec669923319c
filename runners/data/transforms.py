"""Joint image/label augmentation without torchvision.

A transform is a callable ``(image, label) -> (image, label)``. Until ``ToTensor`` the
image is a numpy HxWx3 uint8 array and the label a HxW uint8 array of trainIds; resizing
uses PIL (bilinear for images, nearest for labels, so no new label values appear).

Randomness comes from torch's RNG: the global one by default, or the ``generator`` given to
a transform. PyTorch's DataLoader seeds torch differently in every worker (from its base
seed), so ``torch.manual_seed(seed)`` before building the loader -- or a seeded
``DataLoader(generator=...)`` -- makes the augmentation reproducible, which numpy's global
RNG (copied unchanged into each forked worker) would not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from runners.data.labels import IGNORE_INDEX
from searchspace.recipes import IMAGENET_MEAN, IMAGENET_STD

Transform = Callable[[object, object], tuple[object, object]]


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


def _randint(high: int, generator: torch.Generator | None) -> int:
    """An integer in [0, high)."""
    return int(torch.randint(high, (), generator=generator)) if high > 1 else 0


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image, label):
        for t in self.transforms:
            image, label = t(image, label)
        return image, label

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class RandomScale:
    """Resize by a random factor: uniform in [lo, hi], or one of ``scales`` if ``discrete``."""

    def __init__(
        self,
        scales: Sequence[float] = (0.25, 2.0),
        discrete: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        scales = tuple(float(s) for s in scales)
        if not scales or min(scales) <= 0 or (not discrete and len(scales) != 2):
            raise ValueError(f"RandomScale needs positive scales (lo, hi), got {scales}")
        self.scales, self.discrete, self.generator = scales, discrete, generator

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.discrete:
            scale = self.scales[_randint(len(self.scales), self.generator)]
        else:
            scale = _uniform(self.scales[0], self.scales[1], self.generator)
        return resize(image, label, scale)

    def __repr__(self) -> str:
        return f"RandomScale({self.scales}, discrete={self.discrete})"


def resize(image: np.ndarray, label: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale both by ``scale``: bilinear for the image, nearest for the label."""
    h, w = label.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return image, label
    img = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    lab = np.asarray(Image.fromarray(label).resize(size, Image.NEAREST))
    return img, lab


class RandomCrop:
    """Crop to ``size`` (h, w) at a random place, padding bottom/right first when smaller.

    Padding uses ``ignore_index`` in the label, so padded pixels never count in the loss,
    and the mean colour in the image, which is ~0 after normalisation.
    """

    def __init__(
        self,
        size: tuple[int, int],
        ignore_index: int = IGNORE_INDEX,
        fill: Sequence[int] = tuple(round(255 * m) for m in IMAGENET_MEAN),
        generator: torch.Generator | None = None,
    ) -> None:
        self.size = (int(size[0]), int(size[1]))
        if min(self.size) < 1:
            raise ValueError(f"RandomCrop size must be positive, got {size}")
        self.ignore_index, self.fill, self.generator = ignore_index, tuple(fill), generator

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ch, cw = self.size
        h, w = label.shape
        if h < ch or w < cw:
            ph, pw = max(ch, h), max(cw, w)
            padded_img = np.empty((ph, pw, image.shape[2]), dtype=image.dtype)
            padded_img[...] = np.asarray(self.fill, dtype=image.dtype)
            padded_img[:h, :w] = image
            padded_lab = np.full((ph, pw), self.ignore_index, dtype=label.dtype)
            padded_lab[:h, :w] = label
            image, label, h, w = padded_img, padded_lab, ph, pw
        y = _randint(h - ch + 1, self.generator)
        x = _randint(w - cw + 1, self.generator)
        return image[y : y + ch, x : x + cw], label[y : y + ch, x : x + cw]

    def __repr__(self) -> str:
        return f"RandomCrop({self.size}, ignore_index={self.ignore_index})"


class RandomHorizontalFlip:
    """Mirror image and label together with probability ``p``."""

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        self.p, self.generator = p, generator

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if _uniform(0.0, 1.0, self.generator) < self.p:
            return image[:, ::-1], label[:, ::-1]
        return image, label

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class ColorJitter:
    """Random brightness, contrast and saturation factors in [1 - x, 1 + x]; the label is untouched."""

    def __init__(
        self,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        generator: torch.Generator | None = None,
    ) -> None:
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation
        self.generator = generator

    def _factor(self, amount: float) -> float:
        return _uniform(max(0.0, 1.0 - amount), 1.0 + amount, self.generator)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not (self.brightness or self.contrast or self.saturation):
            return image, label
        img = image.astype(np.float32)
        if self.brightness:
            img *= self._factor(self.brightness)
        if self.contrast:
            mean = float((img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).mean())
            img = (img - mean) * self._factor(self.contrast) + mean
        if self.saturation:
            grey = (img @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
            img = (img - grey) * self._factor(self.saturation) + grey
        return np.clip(img + 0.5, 0, 255).astype(np.uint8), label

    def __repr__(self) -> str:
        return f"ColorJitter({self.brightness}, {self.contrast}, {self.saturation})"


class ToTensor:
    """numpy HxWx3 uint8 -> float CHW in [0, 1]; HxW label -> int64 (what the loss expects)."""

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        # The transposed copy is writable (PIL-decoded arrays are not) and already CHW.
        img = torch.from_numpy(np.array(image.transpose(2, 0, 1), order="C"))
        lab = torch.from_numpy(label.astype(np.int64))
        return img.float().div_(255.0), lab

    def __repr__(self) -> str:
        return "ToTensor()"


class Normalize:
    """Per-channel (x - mean) / std on a float CHW tensor in [0, 1]."""

    def __init__(
        self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
    ) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(
        self, image: torch.Tensor, label: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return image.sub(self.mean).div_(self.std), label

    def __repr__(self) -> str:
        return f"Normalize({self.mean.flatten().tolist()}, {self.std.flatten().tolist()})"


def train_transform(
    crop_hw: tuple[int, int],
    scales: Sequence[float] = (0.25, 2.0),
    discrete_scales: bool = False,
    flip_p: float = 0.5,
    jitter: tuple[float, float, float] = (0.4, 0.4, 0.4),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    generator: torch.Generator | None = None,
) -> Compose:
    """The BiSeNet training augmentation: random scale, crop (padded with ignore), flip, jitter.

    Randomness is drawn from ``generator`` or, when None, from torch's global RNG (seeded per
    DataLoader worker). Jitter runs after the crop, on fewer pixels.
    """
    fill = tuple(round(255 * m) for m in mean)
    return Compose(
        [
            RandomScale(scales, discrete=discrete_scales, generator=generator),
            RandomCrop(crop_hw, IGNORE_INDEX, fill=fill, generator=generator),
            RandomHorizontalFlip(flip_p, generator=generator),
            ColorJitter(*jitter, generator=generator),
            ToTensor(),
            Normalize(mean, std),
        ]
    )


def eval_transform(
    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Compose:
    """Full image, no randomness: tensor conversion and normalisation only."""
    return Compose([ToTensor(), Normalize(mean, std)])
