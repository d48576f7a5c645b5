"""COCO identifiers for val.py --save-json: category ids, image ids, and the record the COCO converter leaves.

COCO's 80 detection categories carry ids 1..90 with gaps (the 2014 paper listed 91, 11 were never annotated);
our class indices are 0..79 in increasing id order (what ``yolov3.convert coco`` produces). An official annotation
file such as ``instances_val2017.json`` scores our results only when they use its ids: category ids through
:data:`COCO80_TO_91`, image ids from the file names (``000000397133.jpg`` is image 397133).

For another dataset converted from COCO JSON, ``yolov3.convert coco`` writes ``coco_ids.json`` into its label
folder: the category id of each class and the image id of each file, which val.py uses when it finds one.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from yolov3.files import atomic_write_text
from yolov3.paths import ROOT

IDS_RECORD = "coco_ids.json"  # written by yolov3.convert coco into the label folder it fills

COCO80_TO_91 = ([*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83),
                 *range(84, 91)])  # category id of class 0..79


def _spelling(name: str) -> str:
    return "".join(str(name).lower().split())


# Darknet's own coco.names spells six classes its way; models trained with it are COCO models too
DARKNET_SPELLINGS = {"motorcycle": "motorbike", "airplane": "aeroplane", "couch": "sofa",
                     "potted plant": "pottedplant", "dining table": "diningtable", "tv": "tvmonitor"}


def coco_class_names() -> List[set]:
    """For each of the 80 COCO classes, its accepted spellings: the COCO JSON's (data/coco.names, data/coco.yaml)
    and Darknet's coco.names' ("motorbike" for "motorcycle", "tvmonitor" for "tv", ...)."""
    names_file = ROOT / "data" / "coco.names"
    text = names_file.read_text(encoding="utf-8") if names_file.is_file() else ""
    names = [n for n in text.splitlines() if n.strip()]
    if len(names) != len(COCO80_TO_91):
        return [set() for _ in COCO80_TO_91]
    return [{_spelling(name), _spelling(DARKNET_SPELLINGS.get(name, name))} for name in names]


def is_coco_classes(names: Sequence[str]) -> bool:
    """True for the 80 COCO classes in COCO's order (either spelling of each)."""
    spellings = coco_class_names()
    return (len(names) == len(COCO80_TO_91) and all(spellings)
            and all(_spelling(name) in accepted for name, accepted in zip(names, spellings)))


def numeric_image_ids(paths: Sequence[Union[str, Path]]) -> Optional[List[int]]:
    """The image ids the file stems spell (``000000397133.jpg`` -> 397133), when every stem is a number and no
    two are equal; else None (the caller numbers the images instead, so no id is guessed for one file only)."""
    stems = [Path(p).stem for p in paths]
    if not stems or not all(stem.isdigit() for stem in stems):
        return None
    ids = [int(stem) for stem in stems]
    return ids if len(set(ids)) == len(ids) else None


def write_ids_record(folder: Union[str, Path], source: str, category_ids: Sequence[int],
                     image_ids: Dict[str, int]) -> Path:
    """Write ``coco_ids.json`` (category id per class index; image id per label file, relative to ``folder``
    without suffix) for :func:`read_ids_record`."""

    path = Path(folder) / IDS_RECORD
    atomic_write_text(path, json.dumps({"source": source, "category_ids": [int(i) for i in category_ids],
                                        "image_ids": image_ids}, indent=1))
    return path


def find_ids_record(label_file: Union[str, Path], levels: int = 4) -> Optional[Path]:
    """The ``coco_ids.json`` in the folder of ``label_file`` or one of its ``levels`` parents, if any."""
    folder = Path(label_file).parent
    for _ in range(levels):
        if (folder / IDS_RECORD).is_file():
            return folder / IDS_RECORD
        if folder.parent == folder:
            break
        folder = folder.parent
    return None


def read_ids_record(path: Union[str, Path]) -> dict:
    """``{"category_ids": [...], "image_ids": {relative label path without suffix: id}}``; ValueError naming the
    file when it is not one."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot be read as a COCO id record ({exc})") from None
    if (not isinstance(record, dict) or not isinstance(record.get("category_ids"), list)
            or not isinstance(record.get("image_ids"), dict)):
        raise ValueError(f"{path}: not a COCO id record (expected 'category_ids' and 'image_ids', as "
                         "'python -m yolov3.convert coco' writes)")
    return record
