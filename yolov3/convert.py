"""Convert COCO instances JSON and Pascal VOC / LabelImg XML annotations to YOLO label files.

YOLO rows are ``class cx cy w h`` with the box normalised by the image width and height, one ``.txt`` per image
(an image without objects gets an empty file, so "no objects" is explicit). Class names, one per line in class-index
order, go to a names file (default ``classes.txt`` beside the output folder) to paste into a data YAML.

    python -m yolov3.convert coco --json annotations/instances_val2017.json --out datasets/coco/labels/val2017
    python -m yolov3.convert voc --annotations VOCdevkit/VOC2007/Annotations --ids VOCdevkit/VOC2007/ImageSets/Main/test.txt \\
        --out datasets/VOC/labels/test2007
    python -m yolov3.convert voc --annotations my_photos --dataset datasets/mine --val-fraction 0.2   # LabelImg folder
    python -m yolov3.convert voc --annotations BCCD/Annotations --dataset datasets/bccd \\
        --split train=BCCD/ImageSets/Main/train.txt --split val=BCCD/ImageSets/Main/val.txt

VOC class names: ``--names FILE`` fixes them (one per line, line order = class index); without it, or when FILE
does not exist yet, they are collected from every XML file of ``--annotations`` (sorted, so that converting the
splits one at a time gives every split the same indices), written to the names file and printed.
``--dataset ROOT`` writes the whole YOLO layout in one command: ``ROOT/images/<split>`` (the images, copied),
``ROOT/labels/<split>``, ``ROOT/classes.txt`` and ``ROOT/data.yaml`` for train.py.

Box conventions: COCO ``bbox`` is ``[x, y, width, height]`` in continuous pixel coordinates. VOC ``bndbox`` holds
1-based inclusive pixel indices, so the continuous box is ``[xmin - 1, ymin - 1, xmax, ymax]``.
Boxes are clipped to the image (and counted); a box with no area left is skipped and counted.

XML from a stranger is parsed with no DTD at all: a file that declares one (the only way to define entities, so
billion-laughs expansion and external entities that read local files or URLs) is refused with an error, whatever
the expat version underneath.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import xml.etree.ElementTree as ET
import xml.parsers.expat as expat
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from yolov3.boxes import yolo_label_row
from yolov3.coco_ids import write_ids_record
from yolov3.files import IMAGE_SUFFIXES, atomic_write_text

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


class ConversionError(ValueError):
    """Malformed input; the message names the file and the record or element at fault."""


def _yolo_row(class_index: int, x1: float, y1: float, x2: float, y2: float, width: float, height: float) -> Optional[str]:
    """One label row for a continuous-pixel xyxy box, clipped to the image; None when nothing is left."""
    x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
    y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
    if x2 <= x1 or y2 <= y1:
        return None
    return yolo_label_row(class_index, x1, y1, x2, y2, width, height)


def _write_names(names: Sequence[str], names_path: Path) -> None:
    names_path.parent.mkdir(parents=True, exist_ok=True)
    names_path.write_text("".join(f"{n}\n" for n in names), encoding="utf-8")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------------------------------
# COCO
# --------------------------------------------------------------------------------------------------------------------
def coco_to_yolo(json_path: Union[str, Path], out_dir: Union[str, Path],
                 names_path: Union[str, Path, None] = None) -> Dict[str, object]:
    """Write one YOLO label file per image of a COCO instances JSON.

    Category ids (COCO's run 1..90 with gaps) are remapped, in increasing id order, to contiguous 0..K-1
    (0..79 for COCO). Crowd annotations (``iscrowd: 1``) are skipped: they mark regions, not single objects.
    The label file of image ``file_name`` is ``out_dir / file_name`` with suffix ``.txt``. ``out_dir`` also gets
    ``coco_ids.json`` (:mod:`yolov3.coco_ids`): each class's category id and each image's id, with which
    ``val.py --save-json`` writes results that the original JSON scores.

    Returns counts: ``images``, ``boxes``, ``crowd_skipped``, ``empty_skipped`` and the ``names`` list.
    """
    json_path, out_dir = Path(json_path), Path(out_dir)
    try:
        content = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConversionError(f"{json_path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise ConversionError(f"{json_path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(content, dict):
        raise ConversionError(f"{json_path}: expected a JSON object with 'images', 'annotations' and 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(content.get(key), list):
            raise ConversionError(f"{json_path}: missing or non-list '{key}' (a COCO instances file has images, "
                                  "annotations and categories)")

    categories: Dict[int, str] = {}
    for i, category in enumerate(content["categories"]):
        if not isinstance(category, dict) or not isinstance(category.get("id"), int) or "name" not in category:
            raise ConversionError(f"{json_path}: categories[{i}] needs an integer 'id' and a 'name', got {category!r}")
        if category["id"] in categories:
            raise ConversionError(f"{json_path}: categories[{i}]: duplicate category id {category['id']}")
        categories[category["id"]] = str(category["name"])
    class_of_category = {cat_id: index for index, cat_id in enumerate(sorted(categories))}
    names = [categories[cat_id] for cat_id in sorted(categories)]

    images: Dict[int, Tuple[str, float, float]] = {}
    for i, image in enumerate(content["images"]):
        if not isinstance(image, dict) or not all(k in image for k in ("id", "file_name", "width", "height")):
            raise ConversionError(f"{json_path}: images[{i}] needs 'id', 'file_name', 'width' and 'height'")
        width, height = image["width"], image["height"]
        if not (_is_number(width) and _is_number(height) and width > 0 and height > 0):
            raise ConversionError(f"{json_path}: images[{i}] (id {image['id']}): width and height must be positive "
                                  f"numbers, got {width!r} x {height!r}")
        images[image["id"]] = (str(image["file_name"]), float(width), float(height))

    rows: Dict[int, List[str]] = {image_id: [] for image_id in images}
    crowd_skipped = empty_skipped = boxes = 0
    for i, ann in enumerate(content["annotations"]):
        where = f"{json_path}: annotations[{i}] (id {ann.get('id', '?') if isinstance(ann, dict) else '?'})"
        if not isinstance(ann, dict):
            raise ConversionError(f"{where}: expected an object, got {ann!r}")
        if ann.get("image_id") not in images:
            raise ConversionError(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
        if ann.get("category_id") not in class_of_category:
            raise ConversionError(f"{where}: category_id {ann.get('category_id')!r} is not in 'categories'")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise ConversionError(f"{where}: 'bbox' must be [x, y, width, height] numbers, got {bbox!r}")
        if ann.get("iscrowd", 0):
            crowd_skipped += 1
            continue
        _, width, height = images[ann["image_id"]]
        x, y, w, h = (float(v) for v in bbox)
        row = _yolo_row(class_of_category[ann["category_id"]], x, y, x + w, y + h, width, height)
        if row is None:
            empty_skipped += 1
            continue
        rows[ann["image_id"]].append(row)
        boxes += 1

    written = set()
    for image_id, (file_name, _, _) in images.items():
        label_path = out_dir / Path(file_name).with_suffix(".txt")
        if label_path in written:
            raise ConversionError(f"{json_path}: two images map to the label file {label_path} (file_name {file_name})")
        written.add(label_path)
        label_path.parent.mkdir(parents=True, exist_ok=True)
        label_path.write_text("".join(f"{r}\n" for r in rows[image_id]), encoding="utf-8")
    _write_names(names, Path(names_path) if names_path else out_dir.parent / "classes.txt")
    if all(isinstance(image_id, int) and not isinstance(image_id, bool) for image_id in images):
        # val.py --save-json writes results in these ids, so the original JSON scores them
        write_ids_record(out_dir, str(json_path), sorted(categories),
                         {Path(file_name).with_suffix("").as_posix(): image_id
                          for image_id, (file_name, _, _) in images.items()})
    return {"images": len(images), "boxes": boxes, "crowd_skipped": crowd_skipped, "empty_skipped": empty_skipped,
            "names": names}


# --------------------------------------------------------------------------------------------------------------------
# Untrusted XML
# --------------------------------------------------------------------------------------------------------------------
MAX_XML_BYTES = 10 * 1024 * 1024  # a VOC annotation is a few KB; a file this large is not one


def parse_untrusted_xml(xml_path: Union[str, Path]) -> ET.Element:
    """The root element of an XML file, parsed by expat with every DTD refused.

    Entities (internal ones that expand a billion times, external ones that read a file or a URL) can only be
    declared in a DTD; a VOC / LabelImg annotation never has one, so a DOCTYPE is an error here, not a risk to
    manage. Raises :class:`ConversionError` naming the file (and line, for malformed XML).
    """
    xml_path = Path(xml_path)
    try:
        size = xml_path.stat().st_size
        if size > MAX_XML_BYTES:
            raise ConversionError(f"{xml_path}: {size:,} bytes; an annotation file is expected to be under "
                                  f"{MAX_XML_BYTES:,}")
        data = xml_path.read_bytes()
    except FileNotFoundError:
        raise ConversionError(f"{xml_path}: file not found") from None
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate()

    def refuse(*_args):
        raise ConversionError(f"{xml_path}: declares a DOCTYPE or entities; refused (an annotation file needs "
                              "none, and entities can expand without bound or read other files)")

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.buffer_text = True
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise ConversionError(f"{xml_path}: malformed XML at line {exc.lineno} column {exc.offset + 1}") from None
    return builder.close()


# --------------------------------------------------------------------------------------------------------------------
# Pascal VOC and LabelImg
# --------------------------------------------------------------------------------------------------------------------
def _xml_text(element: ET.Element, tag: str, xml_path: Path, context: str) -> str:
    child = element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise ConversionError(f"{xml_path}: {context} lacks <{tag}>")
    return child.text.strip()


def _xml_number(element: ET.Element, tag: str, xml_path: Path, context: str) -> float:
    text = _xml_text(element, tag, xml_path, context)
    try:
        return float(text)
    except ValueError:
        raise ConversionError(f"{xml_path}: {context} <{tag}> is not a number: {text!r}") from None


def default_image_folder(annotations: Path) -> Path:
    """Where the images of an annotation folder are: VOC keeps them in ``JPEGImages`` beside ``Annotations``,
    LabelImg saves each XML beside its image."""
    beside = annotations.parent / "JPEGImages"
    return beside if annotations.name == "Annotations" and beside.is_dir() else annotations


def find_image(xml_path: Path, root: ET.Element, image_folder: Path) -> Optional[Path]:
    """The image of an annotation: ``<filename>`` in ``image_folder``, else the XML's stem with an image suffix
    (LabelImg's ``<path>`` is where the labeller's machine kept it, no use here)."""
    filename = root.findtext("filename")
    candidates = [image_folder / Path(filename.strip()).name] if filename and filename.strip() else []
    candidates += [image_folder / (xml_path.stem + suffix) for suffix in IMAGE_SUFFIXES]
    candidates += [image_folder / (xml_path.stem + suffix.upper()) for suffix in IMAGE_SUFFIXES]
    return next((c for c in candidates if c.is_file()), None)


def _image_size(image_path: Optional[Path], xml_path: Path) -> Tuple[float, float]:
    import cv2  # only for annotations that lack their image's size

    if image_path is None:
        raise ConversionError(f"{xml_path}: <size> is missing or zero and no image was found to read it from "
                              "(pass --images with the folder of the images)")
    image = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ConversionError(f"{xml_path}: <size> is missing or zero and its image {image_path} cannot be decoded")
    return float(image.shape[1]), float(image.shape[0])


def voc_class_names(xml_paths: Iterable[Union[str, Path]]) -> List[str]:
    """Every ``<object><name>`` of these files, sorted (the class order when no names file is given)."""
    names = set()
    for xml_path in xml_paths:
        root = parse_untrusted_xml(xml_path)
        for number, obj in enumerate(root.iter("object"), start=1):
            names.add(_xml_text(obj, "name", Path(xml_path), f"<object> #{number}"))
    return sorted(names)


def _collected_note(names: Sequence[str]) -> str:
    return f"classes collected from the XML (sorted; index = position): {', '.join(names)}"


def _empty_counts() -> Dict[str, Any]:
    return {"boxes": 0, "difficult": 0, "clipped": 0, "empty": 0, "size_from_image": 0, "per_class": {}}


def voc_xml_to_rows(xml_path: Union[str, Path], classes: Sequence[str] = VOC_CLASSES,
                    include_difficult: bool = False, image_folder: Union[str, Path, None] = None,
                    counts: Optional[Dict[str, Any]] = None) -> Tuple[List[str], int]:
    """YOLO rows of one VOC XML file and the number of boxes skipped (difficult, or empty after clipping).

    ``counts`` (optional) is updated with what happened: ``boxes`` (and ``per_class``: name -> boxes),
    ``difficult`` and ``empty`` (skipped), ``clipped`` (kept, cut to the image), ``size_from_image`` (no usable
    ``<size>``: read from the image, looked for in ``image_folder``, default the XML's folder).
    """
    xml_path = Path(xml_path)
    counts = _empty_counts() if counts is None else counts
    before = counts["difficult"] + counts["empty"]
    rows = _rows_of(parse_untrusted_xml(xml_path), xml_path, classes, include_difficult, image_folder, counts)
    return rows, counts["difficult"] + counts["empty"] - before


def _rows_of(root: ET.Element, xml_path: Path, classes: Sequence[str], include_difficult: bool,
             image_folder: Union[str, Path, None], counts: Dict[str, Any]) -> List[str]:
    """:func:`voc_xml_to_rows` on an already parsed annotation."""
    size = root.find("size")
    width = height = 0.0
    if size is not None and size.findtext("width", "").strip() and size.findtext("height", "").strip():
        width, height = _xml_number(size, "width", xml_path, "<size>"), _xml_number(size, "height", xml_path, "<size>")
        if width < 0 or height < 0:
            raise ConversionError(f"{xml_path}: <size> must be positive, got {width:g} x {height:g}")
    elif size is not None and (size.findtext("width", "").strip() or size.findtext("height", "").strip()):
        missing = "width" if not size.findtext("width", "").strip() else "height"
        raise ConversionError(f"{xml_path}: <size> lacks <{missing}>")
    if width == 0 or height == 0:  # LabelImg writes 0 x 0 when it could not read the image's size
        folder = Path(image_folder) if image_folder is not None else xml_path.parent
        width, height = _image_size(find_image(xml_path, root, folder), xml_path)
        counts["size_from_image"] += 1
    class_index = {name: i for i, name in enumerate(classes)}
    rows = []
    for number, obj in enumerate(root.iter("object"), start=1):
        context = f"<object> #{number}"
        name = _xml_text(obj, "name", xml_path, context)
        if name not in class_index:
            raise ConversionError(f"{xml_path}: {context} has unknown class {name!r} (known: {', '.join(classes)})")
        difficult = obj.find("difficult")
        if difficult is not None and (difficult.text or "0").strip() not in ("0", "") and not include_difficult:
            counts["difficult"] += 1
            continue
        box = obj.find("bndbox")
        if box is None:
            raise ConversionError(f"{xml_path}: {context} ({name}) lacks <bndbox>")
        xmin, ymin, xmax, ymax = (_xml_number(box, tag, xml_path, f"{context} <bndbox>")
                                  for tag in ("xmin", "ymin", "xmax", "ymax"))
        if xmax < xmin or ymax < ymin:
            raise ConversionError(f"{xml_path}: {context} ({name}) has xmax < xmin or ymax < ymin: "
                                  f"{xmin:g} {ymin:g} {xmax:g} {ymax:g}")
        x1, y1, x2, y2 = xmin - 1, ymin - 1, xmax, ymax  # 1-based inclusive -> continuous
        row = _yolo_row(class_index[name], x1, y1, x2, y2, width, height)
        if row is None:
            counts["empty"] += 1
            continue
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            counts["clipped"] += 1
        counts["boxes"] += 1
        counts["per_class"][name] = counts["per_class"].get(name, 0) + 1
        rows.append(row)
    return rows


def read_ids(ids_path: Union[str, Path]) -> List[str]:
    """Image ids of a split file: the first word of each non-empty line (``ImageSets/Main/<split>.txt``; the
    per-class files add a flag after it). A trailing ``.xml`` or image suffix is dropped."""
    ids_path = Path(ids_path)
    if not ids_path.is_file():
        raise ConversionError(f"{ids_path}: split file not found")
    ids = []
    for line in ids_path.read_text(encoding="utf-8-sig").splitlines():
        if line.strip():
            first = line.split()[0]
            ids.append(Path(first).stem if Path(first).suffix.lower() in (".xml",) + IMAGE_SUFFIXES else first)
    return ids


def _xml_paths(annotations: Path, ids: Optional[Sequence[str]]) -> List[Path]:
    if not annotations.is_dir():
        raise ConversionError(f"{annotations}: not a folder of VOC XML files")
    if ids is None:
        return sorted(annotations.glob("*.xml"))
    paths = [annotations / f"{i}.xml" for i in ids]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise ConversionError(f"{missing[0]}: listed in the split ({len(missing)} of {len(paths)} ids have no XML)")
    return paths


def resolve_class_names(annotations: Path, names_path: Optional[Path],
                        classes: Optional[Sequence[str]] = None) -> Tuple[List[str], Optional[str]]:
    """(class names, a note to print or None): ``classes`` if given, else an existing ``names_path`` (one per line),
    else collected from every XML in ``annotations`` (sorted)."""
    if classes is not None:
        return list(classes), None
    if names_path is not None and names_path.is_file():
        names = [line.strip() for line in names_path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        if not names:
            raise ConversionError(f"{names_path}: names file is empty (one class name per line)")
        if len(set(names)) != len(names):
            raise ConversionError(f"{names_path}: a class name is listed twice")
        return names, None
    names = voc_class_names(_xml_paths(annotations, None))
    if not names:
        raise ConversionError(f"{annotations}: no <object> in any XML file, so no class names to collect "
                              "(pass --names)")
    return names, _collected_note(names)


def summary_line(split: str, stats: Dict[str, object]) -> str:
    """One line for a converted split: images, boxes per class, and what was skipped or changed."""
    per_class = ", ".join(f"{name} {stats['per_class'][name]:,}" for name in stats["names"]
                          if stats["per_class"].get(name))
    return (f"{split}: {stats['images']:,} images, {stats['boxes']:,} boxes ({per_class or 'none'}); "
            f"{stats['difficult']} difficult skipped, {stats['clipped']} clipped to the image, {stats['empty']} "
            f"empty skipped, {stats['size_from_image']} sizes read from the image -> {stats['out']}")


def voc_to_yolo(annotations: Union[str, Path, Iterable[Union[str, Path]]], out_dir: Union[str, Path],
                ids: Optional[Sequence[str]] = None, classes: Optional[Sequence[str]] = None,
                include_difficult: bool = False, names_path: Union[str, Path, None] = None,
                images: Union[str, Path, None] = None, copy_images_to: Union[str, Path, None] = None
                ) -> Dict[str, object]:
    """Convert VOC XML files (a folder of them, or a list of paths) to ``out_dir/<xml stem>.txt``.

    ``ids`` restricts a folder to those stems (an ``ImageSets/Main/*.txt`` list). ``classes`` fixes the class order;
    without it the names come from ``names_path`` when that file exists, else from every XML of the folder (sorted),
    and are written to ``names_path`` (default ``out_dir/../classes.txt``). Objects flagged ``difficult`` are
    skipped unless ``include_difficult`` (VOC evaluation ignores them too). ``images``: where to read an image's
    size when its XML has none (default: ``JPEGImages`` beside an ``Annotations`` folder, else the XML's folder).
    ``copy_images_to``: also copy each annotation's image there (every one must be found). Returns counts (``images``, ``boxes``, ``skipped``, ``difficult``, ``clipped``, ``empty``, ``size_from_image``,
    ``per_class``), the ``names`` list, ``out`` and ``note`` (how the names were chosen, or None).
    """
    out_dir = Path(out_dir)
    names_file = Path(names_path) if names_path else out_dir.parent / "classes.txt"
    if isinstance(annotations, (str, Path)):
        folder = Path(annotations)
        xml_paths = _xml_paths(folder, ids)
        names, note = resolve_class_names(folder, names_file, classes)
    else:
        xml_paths = [Path(p) for p in annotations]
        folder = xml_paths[0].parent if xml_paths else Path(".")
        names = list(classes) if classes is not None else voc_class_names(xml_paths)
        note = None if classes is not None else _collected_note(names)
    if not xml_paths:
        raise ConversionError(f"{annotations}: no XML files to convert")
    image_folder = Path(images) if images is not None else default_image_folder(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    if copy_images_to is not None:
        Path(copy_images_to).mkdir(parents=True, exist_ok=True)
    counts = _empty_counts()
    for xml_path in xml_paths:
        root = parse_untrusted_xml(xml_path)
        if copy_images_to is not None:
            image = find_image(xml_path, root, image_folder)
            if image is None:
                raise ConversionError(f"{xml_path}: no image for it in {image_folder} (looked for its <filename> and "
                                      f"{xml_path.stem} with {', '.join(IMAGE_SUFFIXES)}; pass --images)")
            shutil.copyfile(image, Path(copy_images_to) / (xml_path.stem + image.suffix.lower()))
        rows = _rows_of(root, xml_path, names, include_difficult, image_folder, counts)
        atomic_write_text(out_dir / f"{xml_path.stem}.txt", "".join(f"{r}\n" for r in rows))
    names_from_file = classes is None and note is None  # read from an existing names file: it stays as it is
    if not names_from_file:
        _write_names(names, names_file)
    return {"images": len(xml_paths), "skipped": counts["difficult"] + counts["empty"], **counts, "names": names,
            "out": str(out_dir), "note": note}


def split_by_fraction(stems: Sequence[str], val_fraction: float, seed: int = 0) -> Dict[str, List[str]]:
    """``train`` / ``val`` ids from one folder: a seeded shuffle, the first ``round(n * val_fraction)`` (at least one
    when the fraction is positive) to val; each list in sorted order."""
    if not 0 <= val_fraction < 1:
        raise ConversionError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    order = sorted(stems)
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * val_fraction)) if val_fraction > 0 else 0
    if n_val >= len(order):
        raise ConversionError(f"--val-fraction {val_fraction} leaves no training image of {len(order)}")
    return {"train": sorted(order[n_val:]), "val": sorted(order[:n_val])}


def voc_to_yolo_dataset(annotations: Union[str, Path], root: Union[str, Path], splits: Dict[str, Optional[Sequence[str]]],
                        classes: Optional[Sequence[str]] = None, images: Union[str, Path, None] = None,
                        include_difficult: bool = False, names_path: Union[str, Path, None] = None,
                        log=print, write_yaml: bool = True) -> Dict[str, Dict[str, object]]:
    """The whole YOLO layout under ``root`` from a VOC or LabelImg folder: ``images/<split>`` (copies),
    ``labels/<split>``, ``classes.txt`` and ``data.yaml`` (``path: .``, so the folder can move).

    ``splits`` maps a split name to its image ids (None: every XML). ``root`` must not exist or be empty, so
    nothing already there is overwritten. Class names as :func:`voc_to_yolo`. Every image of a split must be
    found (``images``, default as :func:`default_image_folder`). ``log`` gets one summary line per split.
    ``write_yaml=False`` leaves out ``data.yaml`` (a dataset built for a data YAML that already exists).
    """
    annotations, root = Path(annotations), Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ConversionError(f"{root}: exists and is not an empty folder; choose a new --dataset folder")
    if not splits:
        raise ConversionError("no split to write (give --split NAME=IDS_FILE or --val-fraction)")
    names, note = resolve_class_names(annotations, Path(names_path) if names_path else None, classes)
    if note:
        log(note)
    image_folder = Path(images) if images is not None else default_image_folder(annotations)
    results = {}
    for split, ids in splits.items():
        stats = voc_to_yolo(_xml_paths(annotations, ids), root / "labels" / split, classes=names,
                            include_difficult=include_difficult, names_path=root / "classes.txt", images=image_folder,
                            copy_images_to=root / "images" / split)
        log(summary_line(split, stats))
        results[split] = stats
    if not write_yaml:
        return results
    yaml_lines = ["# written by python -m yolov3.convert voc", "path: .  # this file's folder"]
    yaml_lines += [f"{split}: images/{split}" for split in splits]
    yaml_lines += [f"names: {json.dumps(names)}"]
    atomic_write_text(root / "data.yaml", "\n".join(yaml_lines) + "\n")
    return results


# --------------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------------
def _parse_split(value: str) -> Tuple[str, str]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path or not name.replace("_", "").replace("-", "").isalnum():
        raise argparse.ArgumentTypeError(f"expected NAME=IDS_FILE (e.g. train=ImageSets/Main/train.txt), got {value!r}")
    return name, path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yolov3.convert",
                                     description="Convert COCO JSON or Pascal VOC / LabelImg XML annotations to YOLO "
                                                 "label files.")
    sub = parser.add_subparsers(dest="format", required=True)
    coco = sub.add_parser("coco", help="COCO instances JSON -> one .txt per image (classes remapped to 0..K-1)")
    coco.add_argument("--json", required=True, help="instances_*.json")
    coco.add_argument("--out", required=True, help="output label folder, e.g. datasets/coco/labels/val2017")
    coco.add_argument("--names", default=None, help="class names file (default: <out>/../classes.txt)")
    voc = sub.add_parser("voc", help="Pascal VOC or LabelImg XML -> one .txt per image, or a whole YOLO dataset")
    voc.add_argument("--annotations", required=True,
                     help="folder of XML files (VOC's Annotations, or a LabelImg folder with the images beside them)")
    voc.add_argument("--images", default=None,
                     help="folder of the images (default: JPEGImages beside Annotations, else the XML folder)")
    target = voc.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="output label folder for one split, e.g. datasets/VOC/labels/test2007")
    target.add_argument("--dataset", help="write the whole layout here: images/<split>, labels/<split>, data.yaml")
    voc.add_argument("--ids", default=None, help="with --out: only these image ids (ImageSets/Main/<split>.txt)")
    voc.add_argument("--split", action="append", type=_parse_split, default=[], metavar="NAME=IDS_FILE",
                     help="with --dataset: a split and its ids file (repeat: --split train=... --split val=...)")
    voc.add_argument("--val-fraction", type=float, default=None,
                     help="with --dataset and no --split: this fraction of the images (seeded) to val, the rest to train")
    voc.add_argument("--seed", type=int, default=0, help="seed of --val-fraction's shuffle")
    voc.add_argument("--difficult", action="store_true", help="keep objects flagged difficult (skipped by default)")
    voc.add_argument("--names", default=None,
                     help="class names, one per line, line order = class index (default, or when the file does not "
                          "exist yet: collected from the XML, sorted, and written there or to <out>/../classes.txt)")
    args = parser.parse_args(argv)
    try:
        if args.format == "coco":
            stats = coco_to_yolo(args.json, args.out, args.names)
            print(f"{stats['images']} images, {stats['boxes']} boxes written to {args.out}; skipped "
                  f"{stats['crowd_skipped']} crowd and {stats['empty_skipped']} empty boxes; {len(stats['names'])} classes")
        elif args.out is not None:
            if args.split or args.val_fraction is not None:
                raise ConversionError("--split and --val-fraction go with --dataset; with --out, give --ids")
            ids = read_ids(args.ids) if args.ids else None
            stats = voc_to_yolo(args.annotations, args.out, ids, include_difficult=args.difficult,
                                names_path=args.names, images=args.images)
            if stats["note"]:
                print(stats["note"])
            print(summary_line(Path(args.ids).stem if args.ids else "all", stats))
        else:
            if args.ids:
                raise ConversionError("--ids goes with --out; with --dataset, give --split NAME=IDS_FILE")
            if args.split and args.val_fraction is not None:
                raise ConversionError("give either --split or --val-fraction, not both")
            if args.split:
                splits = {name: read_ids(path) for name, path in args.split}
            else:
                stems = [p.stem for p in _xml_paths(Path(args.annotations), None)]
                splits = split_by_fraction(stems, 0.2 if args.val_fraction is None else args.val_fraction, args.seed)
            voc_to_yolo_dataset(args.annotations, args.dataset, splits, images=args.images,
                                include_difficult=args.difficult, names_path=args.names)
            print(f"data YAML: {Path(args.dataset) / 'data.yaml'} (python train.py --data {Path(args.dataset) / 'data.yaml'})")
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
