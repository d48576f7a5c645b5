"""Datasets in the YOLO convention, one import away: the names of the three data modules other code uses.

* :mod:`yolov3.data_yaml`: the data YAML (and Darknet's ``.data`` file): splits, class names, ``download:``;
* :mod:`yolov3.labels`: label files, their validation and the scan of a split with its cache;
* :mod:`yolov3.dataset`: the Dataset, its samplers and the loader (``create_dataloader``).
"""
from __future__ import annotations

from yolov3.data_yaml import (SINGLE_CLASS_NAME, SPLIT_KEYS, YAML_KEYS, DataError, as_single_class,
                              load_data_yaml)
from yolov3.dataset import (DistributedEpochSampler, EpochSampler, YOLODataLoader, YOLODataset, collate_batch,
                            create_dataloader, ram_cache_wanted)
from yolov3.files import IMAGE_SUFFIXES
from yolov3.labels import (CACHE_SUFFIX, COORD_TOLERANCE, SplitEntries, label_path_for, list_images,
                           parse_label_text, read_image, scan_split)

__all__ = ["CACHE_SUFFIX", "COORD_TOLERANCE", "DataError", "DistributedEpochSampler", "EpochSampler",
           "IMAGE_SUFFIXES", "SINGLE_CLASS_NAME", "SPLIT_KEYS", "SplitEntries", "YAML_KEYS", "YOLODataLoader",
           "YOLODataset", "as_single_class", "collate_batch", "create_dataloader", "label_path_for", "list_images",
           "load_data_yaml", "parse_label_text", "ram_cache_wanted", "read_image", "scan_split"]
