"""Training batches as a pure function of (seed, iteration): what makes kill + resume exact.

The training set is read as an endless stream of epochs; epoch ``e`` is a permutation drawn
from a generator seeded by (seed, e). Iteration ``i`` takes stream positions
``[i * B, (i + 1) * B)`` for the global batch ``B``, and rank ``r`` of ``W`` takes its
``B / W`` consecutive slice of them (DistributedSampler-style sharding without padding).
Each sample's augmentation draws from a generator seeded by (seed, epoch, index), so
neither the data order nor the random crops depend on the process history, the number of
DataLoader workers, or where a previous run was killed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from runners.data.sample import CropFirstSample
from runners.data.transforms import train_transform
from searchspace.recipes import Recipe

Key = tuple[int, int]  # (epoch, dataset index)


def mix_seed(*parts: int) -> int:
    """A well-spread 63-bit seed from integers (SeedSequence hashing, stable across runs)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def epoch_permutation(n: int, seed: int, epoch: int) -> list[int]:
    gen = torch.Generator().manual_seed(mix_seed(seed, 0x5EED, epoch))
    return torch.randperm(n, generator=gen).tolist()


class StreamBatchSampler:
    """Yields this rank's batch of (epoch, index) keys for iterations ``start``, ``start+1``...

    Endless when ``stop`` is None (a seconds budget); the training loop decides when to stop.
    """

    def __init__(
        self,
        n: int,
        global_batch: int,
        seed: int,
        start: int = 0,
        stop: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if global_batch % world_size:
            raise ValueError(f"batch {global_batch} does not split over {world_size} processes")
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.start, self.stop = start, stop
        self.local = global_batch // world_size
        self.offset = rank * self.local
        self._perm: tuple[int, list[int]] | None = None

    def keys(self, iteration: int) -> list[Key]:
        first = iteration * self.global_batch + self.offset
        return [self._key(p) for p in range(first, first + self.local)]

    def _key(self, position: int) -> Key:
        epoch, offset = divmod(position, self.n)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, epoch_permutation(self.n, self.seed, epoch))
        return epoch, self._perm[1][offset]

    def __iter__(self) -> Iterator[list[Key]]:
        iteration = self.start
        while self.stop is None or iteration < self.stop:
            yield self.keys(iteration)
            iteration += 1

    def __len__(self) -> int:
        if self.stop is None:
            raise TypeError("an endless sampler has no length")
        return max(0, self.stop - self.start)


class KeyedAugmentedDataset(Dataset):
    """Reads sample ``index`` and augments it with a generator seeded by (seed, epoch, index)."""

    def __init__(self, base: Dataset, recipe: Recipe, seed: int) -> None:
        self.base = base
        self.seed = seed
        self.generator = torch.Generator()
        jitter = recipe.color_jitter
        # The recipe's scales are a set to draw from, as in the paper ({0.75, ..., 2.0}).
        make = CropFirstSample if recipe.pipeline == "crop_first" else train_transform
        self.transform = make(
            recipe.crop_hw,
            scales=recipe.scales,
            discrete_scales=True,
            flip_p=0.5 if recipe.flip else 0.0,
            jitter=(jitter, jitter, jitter),
            generator=self.generator,
            mean=recipe.input_mean,
            std=recipe.input_std,
        )

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key
        self.generator.manual_seed(mix_seed(self.seed, epoch, index))
        image, label = self.base.read(index)  # type: ignore[attr-defined]
        return self.transform(image, label)


def _seed_worker(worker_id: int) -> None:
    """Seed the global RNGs of a loader worker from torch's per-worker seed.

    The augmentation does not use them (it has its own generator); this only keeps any
    other library code in a worker reproducible.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    # Not cv2.setNumThreads(1) here: in a worker forked while the parent's OpenCV pool was
    # busy it deadlocks (measured: benchmarks/loader_bench.py hung in it). OpenCV resets
    # its pool in forked children by itself.


def make_train_loader(
    dataset: Dataset,
    recipe: Recipe,
    seed: int,
    start: int,
    stop: int | None,
    rank: int = 0,
    world_size: int = 1,
    workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    sampler = StreamBatchSampler(
        len(dataset),  # type: ignore[arg-type]
        recipe.batch_size,
        seed,
        start=start,
        stop=stop,
        rank=rank,
        world_size=world_size,
    )
    return DataLoader(
        KeyedAugmentedDataset(dataset, recipe, seed),
        batch_sampler=sampler,
        num_workers=workers,
        worker_init_fn=_seed_worker if workers else None,
        generator=torch.Generator().manual_seed(mix_seed(seed, rank, 0xD17A)),
        pin_memory=pin_memory,
        persistent_workers=workers > 0,  # workers outlive an epoch boundary
        prefetch_factor=2 if workers else None,
    )
