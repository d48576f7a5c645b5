"""Datasets that fetch themselves: a data YAML's ``download:`` mapping, a safe extractor and the VOC conversion.

A data YAML may say where its dataset comes from (``data/bccd.yaml``)::

    download:
      url: https://example.org/dataset.zip     # a .zip or .tar(.gz|.bz2|.xz): what a download of it delivers
      voc: BCCD                                # the VOC folder inside (below the archive's one top folder, if any)
      splits: {train: ImageSets/Main/train.txt, val: ImageSets/Main/val.txt}   # ids file per split, in `voc`
      max_bytes: 200000000                     # optional: the archive and its extracted content stay under this
      sha256: ...                              # optional: the archive's checksum, checked before extraction
      keep: [LICENSE]                          # optional: files of the archive's top folder copied beside the data

When one of the YAML's splits is missing under its ``path``, :func:`ensure_dataset` builds the dataset: it fetches
the archive (or takes a local archive or folder, from ``--source`` / ``YOLOV3_DATA_SOURCE``), extracts it, converts
the XML with :mod:`yolov3.convert` into ``images/<split>`` and ``labels/<split>`` (the YAML's class names, in its
order) and says what it did. A ``download:`` that is a string stays what it always was: text telling a person how to
get the data; it is never run.

Nothing half-done looks complete: everything is built in a hidden staging folder beside ``path`` and renamed into
place in one step at the end; an interrupted download or extraction leaves only the staging folder, removed on the
way out. The archive is extracted by :mod:`yolov3.archives` (entries that could escape, links and bombs refused).
``python -m yolov3.prepare DATA_YAML --source PATH`` builds a dataset by hand.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

from yolov3.archives import (DEFAULT_MAX_BYTES, ArchiveError, download, extract_archive, is_unsafe_relative,
                             sha256_file)
from yolov3.convert import ConversionError, read_ids, voc_to_yolo_dataset
from yolov3.files import atomic_write_text

ENV_SOURCE = "YOLOV3_DATA_SOURCE"  # a local archive, folder or URL used instead of download.url
SPEC_KEYS = ("url", "voc", "splits", "max_bytes", "sha256", "keep")
OFFLINE_HINT = (f"offline? give a local copy: python -m yolov3.prepare DATA_YAML --source /path/to/archive-or-folder, "
                f"or set {ENV_SOURCE}")


class FetchError(ValueError):
    """A dataset could not be fetched or built; the message names the YAML, source, archive or entry at fault."""


@dataclass
class DownloadSpec:
    """A data YAML's ``download:`` mapping, checked."""
    url: str
    voc: str
    splits: Dict[str, str]
    max_bytes: int = DEFAULT_MAX_BYTES
    sha256: Optional[str] = None
    keep: List[str] = field(default_factory=list)


def parse_download_spec(value, yaml_path: Union[str, Path]) -> Optional[DownloadSpec]:
    """The ``download:`` value as a :class:`DownloadSpec`; None for a string (informational text) or no value."""
    if value is None or isinstance(value, str):
        return None
    where = f"{yaml_path}: 'download'"
    if not isinstance(value, dict):
        raise FetchError(f"{where} must be a mapping (url, voc, splits) or text, got {value!r}")
    unknown = [k for k in value if k not in SPEC_KEYS]
    if unknown:
        raise FetchError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(SPEC_KEYS)})")
    for key in ("url", "voc"):
        if not isinstance(value.get(key), str) or not value[key].strip():
            raise FetchError(f"{where}.{key} must be a non-empty string, got {value.get(key)!r}")
    splits = value.get("splits")
    if not isinstance(splits, dict) or not splits or not all(isinstance(k, str) and isinstance(v, str)
                                                            for k, v in splits.items()):
        raise FetchError(f"{where}.splits must map each split to its ids file, e.g. {{train: ImageSets/Main/train.txt}}")
    unknown = [k for k in splits if k not in ("train", "val", "test")]
    if unknown:
        raise FetchError(f"{where}.splits names {unknown[0]!r}; splits are train, val, test")
    max_bytes = value.get("max_bytes", DEFAULT_MAX_BYTES)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        raise FetchError(f"{where}.max_bytes must be a positive whole number of bytes, got {max_bytes!r}")
    sha256 = value.get("sha256")
    if sha256 is not None and not (isinstance(sha256, str) and re.fullmatch(r"[0-9a-fA-F]{64}", sha256)):
        raise FetchError(f"{where}.sha256 must be 64 hex digits, got {sha256!r}")
    keep = value.get("keep", [])
    if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
        raise FetchError(f"{where}.keep must be a list of file names, got {keep!r}")
    for name, path in [("voc", value["voc"])] + [(f"splits.{k}", v) for k, v in splits.items()] + \
            [("keep", k) for k in keep]:
        if is_unsafe_relative(path):
            raise FetchError(f"{where}.{name}: {path!r} must be a relative path inside the archive")
    return DownloadSpec(url=value["url"].strip(), voc=value["voc"], splits=dict(splits), max_bytes=max_bytes,
                        sha256=sha256.lower() if sha256 else None, keep=keep)


def _is_url(source: str) -> bool:
    return re.match(r"^https?://", source, re.IGNORECASE) is not None


def _content_root(folder: Path) -> Path:
    """An archive of a repository has one top folder (``Name-master/``): the content is inside it."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else folder


def missing_splits(data: dict) -> List[str]:
    """The splits of a loaded data YAML whose folders or lists do not exist."""
    return [split for split in ("train", "val", "test") for p in data.get(split) or [] if not Path(p).exists()]


def build_dataset(spec: DownloadSpec, root: Union[str, Path], names: Sequence[str], source: Optional[str] = None,
                  yaml_path: Union[str, Path] = "<data>", log: Callable[[str], None] = print) -> Path:
    """Fetch (or take) the source, extract it, convert it and rename the result to ``root`` in one step.

    ``source``: a URL, a local archive or a folder (default ``$YOLOV3_DATA_SOURCE``, else ``spec.url``).
    ``root`` must not exist, or be an empty folder. Returns ``root``.
    """
    root = Path(root)
    source = source or os.environ.get(ENV_SOURCE) or spec.url
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        made_here = (root / "fetched.json").is_file()
        raise FetchError(f"{yaml_path}: {root} exists but lacks some of its splits; "
                         + ("remove it to fetch it again" if made_here else
                            "it was not made by a fetch (move it away, or fix the YAML's path)"))
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-fetching-", dir=root.parent))
    started = time.time()
    try:
        if _is_url(source):
            log(f"{yaml_path}: fetching {source} (needs internet)")
            try:
                archive = download(source, staging / "archive", spec.max_bytes, hint=OFFLINE_HINT)
            except ArchiveError as exc:
                raise FetchError(str(exc)) from None
        elif Path(source).expanduser().is_dir():
            archive = None
            extracted = Path(source).expanduser()
            log(f"{yaml_path}: using the folder {extracted}")
        elif Path(source).expanduser().is_file():
            archive = Path(source).expanduser()
            log(f"{yaml_path}: using the archive {archive}")
        else:
            raise FetchError(f"{yaml_path}: source {source!r} is neither a URL nor an existing archive or folder")
        if archive is not None:
            digest = sha256_file(archive) if spec.sha256 else None
            if digest != spec.sha256:
                raise FetchError(f"{archive}: sha256 {digest} is not the {spec.sha256} the YAML expects")
            extracted = staging / "extracted"
            try:
                count = extract_archive(archive, extracted, spec.max_bytes)
            except ArchiveError as exc:
                raise FetchError(str(exc)) from None
            log(f"extracted {count:,} files")
        content = _content_root(extracted)
        voc_root = content / spec.voc
        if not (voc_root / "Annotations").is_dir():
            raise FetchError(f"{yaml_path}: the source has no {spec.voc}/Annotations folder (looked in {content})")
        try:
            splits = {split: read_ids(voc_root / ids_file) for split, ids_file in spec.splits.items()}
            build = staging / "dataset"
            voc_to_yolo_dataset(voc_root / "Annotations", build, splits, classes=list(names),
                                images=voc_root / "JPEGImages", write_yaml=False,
                                log=lambda line: log(line.replace(str(build), str(root))))  # where it will be
        except ConversionError as exc:
            raise FetchError(str(exc)) from None
        for name in spec.keep:
            if (content / name).is_file():
                shutil.copyfile(content / name, build / name)
        record = {"source": source, "yaml": str(yaml_path), "fetched": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "splits": {split: len(ids) for split, ids in splits.items()}, "names": list(names)}
        atomic_write_text(build / "fetched.json", json.dumps(record, indent=2) + "\n")
        try:
            if root.is_dir():
                root.rmdir()  # empty when checked above
            os.rename(build, root)  # the one step that makes the dataset appear, complete
        except OSError:
            if root.is_dir() and any(root.iterdir()):  # another process (a DDP rank) finished first
                log(f"{root}: built by another process meanwhile; using that one")
                return root
            raise
        log(f"dataset ready in {root} ({time.time() - started:.0f} s)")
        return root
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_dataset(data: dict, download_value, source: Optional[str] = None,
                   log: Callable[[str], None] = print) -> bool:
    """Build a loaded data YAML's dataset when a split is missing and its ``download:`` is a mapping; returns
    whether it built one. A string ``download:`` is left to the person reading it."""
    spec = parse_download_spec(download_value, data["yaml"])
    if spec is None:
        return False
    missing = missing_splits(data)
    if not missing:
        return False
    root = Path(data["path"])
    log(f"{data['yaml']}: {', '.join(sorted(set(missing)))} missing under {root}; building the dataset")
    build_dataset(spec, root, data["names"], source, data["yaml"], log)
    return True
