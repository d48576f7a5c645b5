"""Convert COCO instances JSON and Pascal VOC XML annotations to YOLO label files.

YOLO rows are ``class cx cy w h`` with the box normalised by the image width and height, one ``.txt`` per image
(an image without objects gets an empty file, so "no objects" is explicit). Class names, one per line in class-index
order, go to a names file (default ``classes.txt`` beside the output folder) to paste into a data YAML.

    python -m yolov3.convert coco --json annotations/instances_val2017.json --out datasets/coco/labels/val2017
    python -m yolov3.convert voc --annotations VOCdevkit/VOC2007/Annotations --ids VOCdevkit/VOC2007/ImageSets/Main/test.txt \\
        --out datasets/VOC/labels/test2007

Box conventions: COCO ``bbox`` is ``[x, y, width, height]`` in continuous pixel coordinates. VOC ``bndbox`` holds
1-based inclusive pixel indices, so the continuous box is ``[xmin - 1, ymin - 1, xmax, ymax]``.
Boxes are clipped to the image; a box with no area left is skipped and counted.
"""
from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from yolov3.boxes import yolo_label_row
from yolov3.coco_ids import write_ids_record

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
# Pascal VOC
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


def voc_xml_to_rows(xml_path: Union[str, Path], classes: Sequence[str] = VOC_CLASSES,
                    include_difficult: bool = False) -> Tuple[List[str], int]:
    """YOLO rows of one VOC XML file and the number of boxes skipped (difficult, or empty after clipping)."""
    xml_path = Path(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        line, column = exc.position
        raise ConversionError(f"{xml_path}: malformed XML at line {line} column {column + 1}") from None
    except FileNotFoundError:
        raise ConversionError(f"{xml_path}: file not found") from None
    size = root.find("size")
    if size is None:
        raise ConversionError(f"{xml_path}: <annotation> lacks <size>")
    width, height = _xml_number(size, "width", xml_path, "<size>"), _xml_number(size, "height", xml_path, "<size>")
    if width <= 0 or height <= 0:
        raise ConversionError(f"{xml_path}: <size> must be positive, got {width:g} x {height:g}")
    class_index = {name: i for i, name in enumerate(classes)}
    rows, skipped = [], 0
    for number, obj in enumerate(root.iter("object"), start=1):
        context = f"<object> #{number}"
        name = _xml_text(obj, "name", xml_path, context)
        if name not in class_index:
            raise ConversionError(f"{xml_path}: {context} has unknown class {name!r} (known: {', '.join(classes)})")
        difficult = obj.find("difficult")
        if difficult is not None and (difficult.text or "0").strip() not in ("0", "") and not include_difficult:
            skipped += 1
            continue
        box = obj.find("bndbox")
        if box is None:
            raise ConversionError(f"{xml_path}: {context} ({name}) lacks <bndbox>")
        xmin, ymin, xmax, ymax = (_xml_number(box, tag, xml_path, f"{context} <bndbox>")
                                  for tag in ("xmin", "ymin", "xmax", "ymax"))
        if xmax < xmin or ymax < ymin:
            raise ConversionError(f"{xml_path}: {context} ({name}) has xmax < xmin or ymax < ymin: "
                                  f"{xmin:g} {ymin:g} {xmax:g} {ymax:g}")
        row = _yolo_row(class_index[name], xmin - 1, ymin - 1, xmax, ymax, width, height)  # 1-based inclusive
        if row is None:
            skipped += 1
            continue
        rows.append(row)
    return rows, skipped


def voc_to_yolo(annotations: Union[str, Path, Iterable[Union[str, Path]]], out_dir: Union[str, Path],
                ids: Optional[Sequence[str]] = None, classes: Sequence[str] = VOC_CLASSES,
                include_difficult: bool = False, names_path: Union[str, Path, None] = None) -> Dict[str, object]:
    """Convert VOC XML files (a folder of them, or a list of paths) to ``out_dir/<xml stem>.txt``.

    ``ids`` restricts a folder to those stems (an ``ImageSets/Main/*.txt`` list). Objects flagged ``difficult`` are
    skipped unless ``include_difficult`` (VOC evaluation ignores them too). Returns counts and the names list.
    """
    out_dir = Path(out_dir)
    if isinstance(annotations, (str, Path)):
        folder = Path(annotations)
        if not folder.is_dir():
            raise ConversionError(f"{folder}: not a folder of VOC XML files")
        xml_paths = [folder / f"{i}.xml" for i in ids] if ids is not None else sorted(folder.glob("*.xml"))
    else:
        xml_paths = [Path(p) for p in annotations]
    if not xml_paths:
        raise ConversionError(f"{annotations}: no XML files to convert")
    out_dir.mkdir(parents=True, exist_ok=True)
    boxes = skipped = 0
    for xml_path in xml_paths:
        rows, skipped_here = voc_xml_to_rows(xml_path, classes, include_difficult)
        (out_dir / f"{xml_path.stem}.txt").write_text("".join(f"{r}\n" for r in rows), encoding="utf-8")
        boxes += len(rows)
        skipped += skipped_here
    _write_names(list(classes), Path(names_path) if names_path else out_dir.parent / "classes.txt")
    return {"images": len(xml_paths), "boxes": boxes, "skipped": skipped, "names": list(classes)}


# --------------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yolov3.convert",
                                     description="Convert COCO JSON or Pascal VOC XML annotations to YOLO label files.")
    sub = parser.add_subparsers(dest="format", required=True)
    coco = sub.add_parser("coco", help="COCO instances JSON -> one .txt per image (classes remapped to 0..K-1)")
    coco.add_argument("--json", required=True, help="instances_*.json")
    coco.add_argument("--out", required=True, help="output label folder, e.g. datasets/coco/labels/val2017")
    coco.add_argument("--names", default=None, help="class names file (default: <out>/../classes.txt)")
    voc = sub.add_parser("voc", help="Pascal VOC XML -> one .txt per image (the 20 VOC classes)")
    voc.add_argument("--annotations", required=True, help="folder of XML files (VOCdevkit/VOC2007/Annotations)")
    voc.add_argument("--out", required=True, help="output label folder, e.g. datasets/VOC/labels/test2007")
    voc.add_argument("--ids", default=None, help="only these image ids (ImageSets/Main/<split>.txt)")
    voc.add_argument("--difficult", action="store_true", help="keep objects flagged difficult (skipped by default)")
    voc.add_argument("--names", default=None, help="class names file (default: <out>/../classes.txt)")
    args = parser.parse_args(argv)
    try:
        if args.format == "coco":
            stats = coco_to_yolo(args.json, args.out, args.names)
            print(f"{stats['images']} images, {stats['boxes']} boxes written to {args.out}; skipped "
                  f"{stats['crowd_skipped']} crowd and {stats['empty_skipped']} empty boxes; {len(stats['names'])} classes")
        else:
            ids = None
            if args.ids:
                ids_path = Path(args.ids)
                if not ids_path.is_file():
                    raise ConversionError(f"{ids_path}: --ids file not found")
                ids = [line.split()[0] for line in ids_path.read_text().splitlines() if line.strip()]
            stats = voc_to_yolo(args.annotations, args.out, ids, include_difficult=args.difficult,
                                names_path=args.names)
            print(f"{stats['images']} images, {stats['boxes']} boxes written to {args.out}; "
                  f"skipped {stats['skipped']} (difficult or empty)")
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
