"""The Dataset of one split (letterboxed, augmented when training) and its loader, with the samplers that make
batches reproducible.

Batches are ``(images, targets, paths, shapes)`` as in CONTRACTS.md. Workers send ``uint8`` images (4x less
inter-process traffic than float); :class:`YOLODataLoader` converts to float ``[0, 1]`` in the main process.

Reproducibility: every sample draws its augmentation from ``numpy.random.default_rng((seed, epoch, index))``, so a
batch depends on the seed, the epoch and the sampler order only — not on worker count or timing. The samplers hand
the epoch to the workers with each index, so call ``dataset.set_epoch(epoch)`` before iterating an epoch (this also
reshuffles, like ``DistributedSampler.set_epoch``); resuming at epoch ``e`` replays epoch ``e`` exactly.
"""
from __future__ import annotations

import os
import random
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

from yolov3.augment import (PAD_COLOR, augment_hsv, fliplr, letterbox, letterbox_geometry, mosaic4,
                            normalised_to_pixels, pixels_to_normalised, random_affine)
from yolov3.config import AugmentConfig
from yolov3.data_yaml import LOGGER, DataError
from yolov3.images import read_image
from yolov3.labels import SCAN_THREADS, scan_split


class YOLODataset(Dataset):
    """Images of one split, letterboxed to ``img_size`` and augmented when ``augment`` is given.

    ``dataset[i]`` (or ``dataset[(i, epoch)]``, what the samplers pass) returns
    ``(image uint8 (3, S, S) RGB, labels float32 (n, 5) [class, cx, cy, w, h] normalised to S, path, shapes)``.
    """

    def __init__(self, data: dict, split: str, img_size: int, augment: Optional[AugmentConfig] = None, seed: int = 0,
                 cache: Union[bool, str] = False, progress: bool = True):
        if img_size % 32:
            raise DataError(f"img_size must be a multiple of 32 (the largest stride), got {img_size}")
        entries = scan_split(data, split, progress)
        self.split = split
        self.paths = entries.paths
        self.labels = entries.labels
        if data.get("single_cls"):  # as_single_class: one class; the scan (and its cache) keeps the real ones
            self.labels = [np.concatenate((np.zeros_like(rows[:, :1]), rows[:, 1:]), 1) for rows in self.labels]
        self.shapes = entries.shapes
        self.img_size = int(img_size)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.names = list(data["names"])
        self._ram_cache: Optional[List[np.ndarray]] = None
        if ram_cache_wanted(cache, len(self.paths), self.img_size):
            self._fill_ram_cache(progress)

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation randomness and shuffling order of ``epoch`` (call before iterating it)."""
        self.epoch = int(epoch)

    def _fill_ram_cache(self, progress: bool) -> None:
        with ThreadPoolExecutor(max_workers=SCAN_THREADS) as pool:
            images = list(tqdm(pool.map(self._read_resized, range(len(self))), total=len(self),
                               desc=f"caching {self.split} images", disable=not progress, unit="img", leave=False))
        LOGGER.info("%s: cached %d images in RAM (%.2f GB)", self.split, len(images), sum(i.nbytes for i in images) / 1e9)
        self._ram_cache = images

    def _read_resized(self, index: int) -> np.ndarray:
        img = read_image(self.paths[index])
        if img is None:  # the scan read it; it changed on disk since
            raise DataError(f"{self.paths[index]}: cannot read the image any more (changed after the scan?)")
        height0, width0 = img.shape[:2]
        gain = self.img_size / max(height0, width0)
        if gain != 1:
            size = (max(1, round(width0 * gain)), max(1, round(height0 * gain)))
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA if gain < 1 else cv2.INTER_LINEAR)
        return img

    def load_image(self, index: int) -> np.ndarray:
        """BGR uint8 image resized so that its long side is ``img_size`` (from the RAM cache when enabled)."""
        if self._ram_cache is not None:
            return self._ram_cache[index]
        return self._read_resized(index)

    def __getitem__(self, item):
        index, epoch = item if isinstance(item, tuple) else (item, self.epoch)
        rng = np.random.default_rng([self.seed, epoch, index])
        size = self.img_size
        aug = self.augment
        img = self.load_image(index)
        height0, width0 = self.shapes[index]
        # the geometry only: mosaic (most training images) never uses the letterboxed pixels
        _, (ratio_w, ratio_h), (pad_left, pad_top, _, _) = letterbox_geometry(img.shape[:2], size, scaleup=True)
        pad_w, pad_h = float(pad_left), float(pad_top)
        # ratios relative to the *original* image: x_net = x_orig * ratio + pad
        resized_h, resized_w = img.shape[:2]
        ratio_w, ratio_h = resized_w * ratio_w / width0, resized_h * ratio_h / height0
        shapes = ((height0, width0), (ratio_w, ratio_h), (pad_w, pad_h))

        if aug is not None and rng.random() < aug.mosaic:
            others = rng.integers(0, len(self), 3)
            indices = [index, *(int(i) for i in others)]
            tiles = [img] + [self.load_image(i) for i in indices[1:]]
            tile_labels = [normalised_to_pixels(self.labels[i], t.shape[1], t.shape[0]) for i, t in zip(indices, tiles)]
            canvas, labels = mosaic4(tiles, tile_labels, size, rng)
            out, labels = random_affine(canvas, labels, rng, aug.degrees, aug.translate, aug.scale, aug.shear,
                                        border=(-size // 2, -size // 2))
        else:
            out, _, _ = letterbox(img, size, PAD_COLOR, scaleup=True, auto=False)
            labels = normalised_to_pixels(self.labels[index], width0 * ratio_w, height0 * ratio_h, pad_w, pad_h)
            if aug is not None:
                out, labels = random_affine(out, labels, rng, aug.degrees, aug.translate, aug.scale, aug.shear)
        if aug is not None:
            if out is img:
                out = out.copy()  # HSV works in place and must never touch the RAM-cached image
            augment_hsv(out, rng, aug.hsv_h, aug.hsv_s, aug.hsv_v)
            if rng.random() < aug.fliplr:
                out, labels = fliplr(out, labels)
        labels = pixels_to_normalised(labels, out.shape[1], out.shape[0])
        # (3, S, S) RGB as a view of HWC memory: no transposing copy here, and collate_batch stacks the pixels as they
        # lie into a channels_last batch, the layout the network trains fastest in
        chw_rgb = torch.from_numpy(cv2.cvtColor(out, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)
        return chw_rgb, torch.from_numpy(labels), self.paths[index], shapes


def collate_batch(batch):
    """List of samples -> ``(images uint8 (B, 3, S, S), targets (N, 6) [image_index, class, cx, cy, w, h], paths,
    shapes)``. The images are channels_last (NHWC memory) when the samples are HWC views, as the dataset's are.
    The float conversion happens in :class:`YOLODataLoader`, in the main process."""
    images, labels, paths, shapes = zip(*batch)
    image_index = [torch.full((len(l), 1), float(i)) for i, l in enumerate(labels)]
    targets = torch.cat([torch.cat([idx, l], dim=1) for idx, l in zip(image_index, labels)], dim=0)  # (N, 6)
    batch_hwc = torch.stack([image.permute(1, 2, 0) for image in images], dim=0)  # (B, S, S, 3), one copy
    return batch_hwc.permute(0, 3, 1, 2), targets.reshape(-1, 6), list(paths), list(shapes)


class YOLODataLoader(DataLoader):
    """A DataLoader whose batches carry float32 images in [0, 1]: workers ship uint8, the conversion runs here.

    With ``device`` a GPU, the uint8 batch (pinned by the loader) is copied to it first, asynchronously, and
    converted there: a quarter of float32's bytes over the bus and no float conversion on the CPU. Images then
    arrive on ``device``; targets stay on the CPU.
    """

    def __init__(self, *args, device: Optional[Union[str, torch.device]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.device = None if device is None else torch.device(device)

    def __iter__(self) -> Iterator:
        for images, targets, paths, shapes in super().__iter__():
            if self.device is not None and self.device.type != "cpu":
                images = images.to(self.device, non_blocking=True)  # uint8 from pinned memory
            yield images.float().div_(255.0), targets, paths, shapes


# --------------------------------------------------------------------------------------------------------------------
# Samplers: they run in the main process, read the dataset's epoch and pass it along with each index
# --------------------------------------------------------------------------------------------------------------------
def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([abs(seed), abs(epoch)]).generate_state(1)[0])


class EpochSampler(Sampler):
    """Yields ``(index, epoch)``; the order is a seeded permutation per epoch when ``shuffle``."""

    def __init__(self, dataset: YOLODataset, shuffle: bool, seed: int):
        self.dataset, self.shuffle, self.seed = dataset, shuffle, seed
        self.skip = 0  # leading samples of this epoch's order to leave out (resuming inside an epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        epoch = self.dataset.epoch
        if self.shuffle:
            generator = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
            order = torch.randperm(len(self.dataset), generator=generator).tolist()
        else:
            order = range(len(self.dataset))
        return ((i, epoch) for i in list(order)[self.skip:])


class DistributedEpochSampler(DistributedSampler):
    """``DistributedSampler`` (each rank its share, same permutation everywhere) yielding ``(index, epoch)``."""

    skip = 0  # leading samples of this rank's share to leave out (resuming inside an epoch)

    def __iter__(self):
        epoch = self.dataset.epoch
        self.set_epoch(epoch)
        return ((int(i), epoch) for i in list(super().__iter__())[self.skip:])


AUTO_CACHE_RAM_FRACTION = 0.1  # cache: auto keeps decoded images when they take at most this share of free memory


def available_memory_bytes() -> Optional[int]:
    """MemAvailable from /proc/meminfo (Linux), else None: then cache 'auto' does not cache."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def ram_cache_wanted(cache: Union[bool, str], num_images: int, img_size: int) -> bool:
    """Whether to keep a split's decoded images in RAM: ``ram``/True yes, ``off``/False no, ``auto`` when they fit.

    Decoding a JPEG costs ~1 ms and mosaic reads four per training image: with few loader workers that is the largest
    cost outside the network. ``auto`` caches when the images (at most ``img_size^2 x 3`` bytes each, resized so their
    long side is img_size) take at most AUTO_CACHE_RAM_FRACTION of the memory available now: the built-in dataset
    (1,750 images at 256 px, 0.34 GB) is cached, COCO at 640 px (145 GB) is not. Workers share the cache (fork).
    """
    if cache in (True, "ram"):
        return True
    if cache != "auto":
        return False
    available = available_memory_bytes()
    return available is not None and num_images * img_size * img_size * 3 <= AUTO_CACHE_RAM_FRACTION * available


def seed_worker(worker_id: int) -> None:
    """Seed numpy and random in a worker from torch's per-worker seed (derived from the loader's seeded generator).

    Workers also ignore SIGINT: a terminal's Ctrl-C reaches the whole process group, and a worker that died of it
    would break the main process, which finishes its batch and saves a checkpoint before it stops.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def create_dataloader(data: dict, split: str, img_size: int, batch_size: int, augment: Optional[AugmentConfig],
                      workers: int, seed: int, shuffle: bool, cache: bool = False, rank: int = -1,
                      world_size: int = 1, progress: bool = True,
                      device: Optional[Union[str, torch.device]] = None) -> Tuple[YOLODataLoader, YOLODataset]:
    """Build the dataset of ``split`` and its loader (see CONTRACTS.md "Data").

    ``device``: where the training/validation runs; on a GPU the images are converted there (see YOLODataLoader).

    ``batch_size`` is per process. With ``world_size > 1`` a :class:`DistributedEpochSampler` splits the data by
    ``rank``. Call ``dataset.set_epoch(epoch)`` before each epoch.
    """
    dataset = YOLODataset(data, split, img_size, augment=augment, seed=seed, cache=cache, progress=progress)
    if world_size > 1:
        sampler: Sampler = DistributedEpochSampler(dataset, num_replicas=world_size, rank=max(rank, 0),
                                                   shuffle=shuffle, seed=seed)
    else:
        sampler = EpochSampler(dataset, shuffle=shuffle, seed=seed)
    workers = max(0, min(int(workers), os.cpu_count() or 1, batch_size if batch_size > 0 else 1))
    if workers > 0:
        # before forking: OpenCV's thread pool does not survive fork() reliably, and the workers already use the cores
        cv2.setNumThreads(0)
    loader = YOLODataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_batch,
        # pinned batches copy to a GPU asynchronously; without a device, pin whenever CUDA is there (the caller may
        # move the batch itself)
        pin_memory=torch.cuda.is_available() if device is None else torch.device(device).type == "cuda",
        persistent_workers=workers > 0,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed),
        device=device,
    )
    return loader, dataset
