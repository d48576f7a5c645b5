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
splits one at a time gives every split the same indices), written to the names file and printed. Names are compared
after Unicode NFC and whitespace folding; collected names that differ only in case are an error, and with a names
file such a spelling is matched to its class (with a note).
``--dataset ROOT`` writes the whole YOLO layout in one command: ``ROOT/images/<split>`` (the images, copied),
``ROOT/labels/<split>``, ``ROOT/classes.txt`` and ``ROOT/data.yaml`` for train.py. It is built beside ROOT and
renamed into place at the end, and ROOT must not exist or be empty: a rerun never mixes with or overwrites an
earlier one. ``--out`` refuses a folder holding label files the run would not write, for the same reason.

XML files are found in subfolders too (dot files and folders aside); an XML's id is its path without ``.xml``
(``day1/img3``), kept in the output, so equal names in two folders do not collide. A file that cannot be used
(malformed XML, unknown class, bad box, no image, an image that does not decode or whose size does not fit,
a photo two XML files claim) is reported on one line naming it and skipped; the run goes on.
With ``--dataset``, images are read as training reads them (``yolov3.images.read_image``: cv2, EXIF orientation
applied): a photo that EXIF turns a quarter turn while its XML was drawn on the stored pixels (``<size>`` says
which) gets its boxes turned with it. ``--out`` (labels only) reads an image only when ``<size>`` is missing, so
it neither turns boxes nor checks that images decode.

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
import math
import os
import random
import re
import shutil
import sys
import tempfile
import unicodedata
import xml.etree.ElementTree as ET
import xml.parsers.expat as expat
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from yolov3.archives import is_unsafe_relative
from yolov3.boxes import yolo_label_row
from yolov3.coco_ids import write_ids_record
from yolov3.files import IMAGE_SUFFIXES, OutputError, atomic_write_text, describe_write_failure
from yolov3.images import read_image

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
    atomic_write_text(names_path, "".join(f"{n}\n" for n in names))


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
        file_name = str(image["file_name"])
        if not file_name.strip() or is_unsafe_relative(file_name):  # its label file is written at this path
            raise ConversionError(f"{json_path}: images[{i}] (id {image['id']}): file_name {file_name!r} must be a "
                                  "relative path inside the image folder (no leading /, drive letter or '..')")
        images[image["id"]] = (file_name, float(width), float(height))

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
        atomic_write_text(label_path, "".join(f"{r}\n" for r in rows[image_id]))
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
_DECLARED_ENCODING = re.compile(rb"^(?:\xef\xbb\xbf)?\s*<\?xml[^>]*?\bencoding\s*=\s*[\"']([A-Za-z0-9._:-]+)[\"']")
_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")


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
    except OSError as exc:
        raise ConversionError(f"{xml_path}: cannot read it ({exc.strerror or exc})") from None
    try:
        return _parse_without_dtd(data, xml_path)
    except ConversionError:
        raise
    except LookupError as exc:  # expat asks Python's codecs for an encoding it does not know itself
        raise ConversionError(f"{xml_path}: declares an encoding Python does not know ({exc})") from None
    except ValueError:  # pyexpat reads UTF-8, UTF-16 and one-byte encodings, not GBK, Shift_JIS, Big5, ...
        pass
    match = _DECLARED_ENCODING.match(data)
    encoding = match.group(1).decode("ascii") if match else "?"
    try:
        text = data.decode(encoding)
    except (LookupError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{xml_path}: cannot decode it as {encoding}, the encoding it declares ({exc})") from None
    # the declaration is replaced where it stands, so expat's line numbers still point into the file
    text = _DECLARATION.sub('<?xml version="1.0" encoding="utf-8"?>', text, count=1)
    return _parse_without_dtd(text.encode("utf-8"), xml_path)


def _parse_without_dtd(data: bytes, xml_path: Path) -> ET.Element:
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
        hint = ""
        index = parser.ErrorByteIndex
        if exc.code == expat.errors.codes[expat.errors.XML_ERROR_INVALID_TOKEN] and 0 <= index < len(data) \
                and data[index] >= 0x80:
            hint = " (a byte that is not UTF-8: save the file as UTF-8, or declare its encoding in <?xml ...?>)"
        raise ConversionError(f"{xml_path}: malformed XML at line {exc.lineno} column {exc.offset + 1}: "
                              f"{expat.ErrorString(exc.code)}{hint}") from None
    return builder.close()


# --------------------------------------------------------------------------------------------------------------------
# Pascal VOC and LabelImg
# --------------------------------------------------------------------------------------------------------------------
def class_name(text: str) -> str:
    """A class name from ``<name>`` or a names file in one form: Unicode NFC (macOS tools write accents
    decomposed) and single spaces (a line break or a doubled space inside a name is never meant, and a line break
    would split the name in ``classes.txt``)."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def _xml_text(element: ET.Element, tag: str, xml_path: Path, context: str) -> str:
    child = element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise ConversionError(f"{xml_path}: {context} lacks <{tag}>")
    return child.text.strip()


def _xml_number(element: ET.Element, tag: str, xml_path: Path, context: str) -> float:
    text = _xml_text(element, tag, xml_path, context)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):  # float() takes 'nan' and 'inf', which would reach the label file
        raise ConversionError(f"{xml_path}: {context} <{tag}> is not a number: {text!r}")
    return value


def _xml_size(root: ET.Element, xml_path: Path) -> Optional[Tuple[float, float]]:
    """``<size>``'s width and height; None when it is missing or zero (LabelImg writes 0 x 0 when it could not
    read the image)."""
    size = root.find("size")
    if size is None or not any((size.findtext(tag) or "").strip() for tag in ("width", "height")):
        return None
    width, height = (_xml_number(size, tag, xml_path, "<size>") for tag in ("width", "height"))
    if width < 0 or height < 0:
        raise ConversionError(f"{xml_path}: <size> must be positive, got {width:g} x {height:g}")
    return (width, height) if width > 0 and height > 0 else None


_FLAGS = {"": False, "0": False, "false": False, "no": False, "1": True, "true": True, "yes": True}


def _is_difficult(obj: ET.Element, xml_path: Path, context: str) -> bool:
    text = (obj.findtext("difficult") or "").strip().lower()
    if text not in _FLAGS:
        raise ConversionError(f"{xml_path}: {context} <difficult> must be 0 or 1, got {text!r}")
    return _FLAGS[text]


def default_image_folder(annotations: Path) -> Path:
    """Where the images of an annotation folder are: VOC keeps them in ``JPEGImages`` beside ``Annotations``,
    LabelImg saves each XML beside its image."""
    beside = annotations.parent / "JPEGImages"
    return beside if annotations.name == "Annotations" and beside.is_dir() else annotations


class _Listing:
    """Files found by name, ignoring case: photos from a camera or Windows are often ``IMG_1.JPG`` while
    ``<filename>`` says ``IMG_1.jpg``, which a case-sensitive file system would not find. Each folder is listed once."""

    def __init__(self) -> None:
        self._folders: Dict[Path, Dict[str, List[Path]]] = {}

    def find(self, folder: Path, name: str) -> Optional[Path]:
        if (folder / name).is_file():
            return folder / name
        if folder not in self._folders:
            entries: Dict[str, List[Path]] = {}
            if folder.is_dir():
                for entry in folder.iterdir():
                    if entry.is_file():
                        entries.setdefault(entry.name.casefold(), []).append(entry)
            self._folders[folder] = entries
        matches = self._folders[folder].get(name.casefold(), [])
        return matches[0] if len(matches) == 1 else None


def find_image(xml_path: Path, root: ET.Element, image_folder: Path, listing: Optional[_Listing] = None
               ) -> Optional[Path]:
    """The image of an annotation in ``image_folder``: its ``<filename>`` (also as a path below the folder), else
    the XML's stem with an image suffix, ignoring case (LabelImg's ``<path>`` is where the labeller's machine kept
    it, no use here). Raises :class:`ConversionError` when both exist and are different files, or when the image
    is of a kind training does not read."""
    listing = listing or _Listing()
    given = PurePosixPath((root.findtext("filename") or "").strip().replace("\\", "/"))
    by_filename = None
    if given.name:
        inside = not given.is_absolute() and ".." not in given.parts and len(given.parts) > 1
        by_filename = (listing.find(image_folder / given.parent, given.name) if inside else None) \
            or listing.find(image_folder, given.name)
    by_stem = next(filter(None, (listing.find(image_folder, xml_path.stem + suffix) for suffix in IMAGE_SUFFIXES)),
                   None)
    if by_filename is not None and by_stem is not None and not by_filename.samefile(by_stem):
        raise ConversionError(f"{xml_path}: <filename> is {given.as_posix()}, but {by_stem.name}, named after the "
                              f"XML, is there too; which photo are the boxes for? Correct <filename> or rename one")
    image = by_filename or by_stem
    if image is not None and image.suffix.lower() not in IMAGE_SUFFIXES:
        raise ConversionError(f"{xml_path}: its image {image.name} is not of a kind training reads "
                              f"({', '.join(IMAGE_SUFFIXES)})")
    return image


# EXIF orientations 5 to 8 show the stored pixels a quarter turn round: the shown width is the stored height
_QUARTER_TURNS = (5, 6, 7, 8)


def _exif_orientation(image_path: Path) -> Tuple[int, Optional[Tuple[int, int]]]:
    """(EXIF orientation, stored width and height) from the image's header; (1, None) when there is none."""
    try:
        from PIL import Image  # Pillow comes with matplotlib; only the header is read

        with Image.open(image_path) as image:
            orientation, stored = image.getexif().get(0x0112, 1), image.size
    except Exception:  # noqa: BLE001 (no Pillow, or a format it does not know: cv2 alone decides below)
        return 1, None
    return (orientation, stored) if orientation in range(2, 9) else (1, stored)


def _orient_point(x: float, y: float, width: float, height: float, orientation: int) -> Tuple[float, float]:
    """Where the point (x, y) of a stored ``width`` x ``height`` image is shown under an EXIF orientation."""
    return {1: (x, y), 2: (width - x, y), 3: (width - x, height - y), 4: (x, height - y),
            5: (y, x), 6: (height - y, x), 7: (height - y, width - x), 8: (y, width - x)}[orientation]


def _same_shape(size: Tuple[float, float], other: Tuple[float, float]) -> bool:
    """Equal aspect ratios, within rounding: photos scaled down after labelling keep their normalised boxes."""
    return abs(size[0] * other[1] - size[1] * other[0]) <= 0.01 * size[0] * other[1]


def _image_frame(image_path: Path, xml_path: Path, xml_size: Optional[Tuple[float, float]]
                 ) -> Tuple[float, float, int, Optional[str]]:
    """(width, height of the frame the XML's boxes are in, the EXIF orientation to turn them by, a note or None).

    Training reads images with ``yolov3.images.read_image`` (cv2, which applies the EXIF orientation), so the
    labels must be in that frame. A labelling tool may have shown the photo turned (LabelImg 1.8+, CVAT, browsers)
    or not (older LabelImg): ``<size>`` tells which for a quarter turn; a half turn or mirror cannot be told apart
    and is taken as shown turned, with a note.
    """
    image = read_image(str(image_path))
    if image is None:
        raise ConversionError(f"{xml_path}: its image {image_path} cannot be read or decoded (corrupt, or not an "
                              "image)")
    height, width = image.shape[:2]
    orientation, stored = _exif_orientation(image_path)
    note = (f"{xml_path}: {image_path.name} has EXIF orientation {orientation}: its boxes are taken as drawn on the "
            "photo turned that way, as training reads it; check a few if your labelling tool showed it unturned")
    if xml_size is None:
        return width, height, 1, note if orientation != 1 else None
    if _same_shape(xml_size, (width, height)):
        ambiguous = orientation != 1 and (orientation not in _QUARTER_TURNS or _same_shape(xml_size, (height, width)))
        return xml_size[0], xml_size[1], 1, note if ambiguous else None
    if orientation in _QUARTER_TURNS and _same_shape(xml_size, (height, width)):
        # drawn on the stored pixels while cv2 turns them (or the other way round): turn the boxes the same way
        cv2_turned = stored is None or (width, height) != tuple(stored)
        return xml_size[0], xml_size[1], orientation if cv2_turned else {6: 8, 8: 6}.get(orientation, orientation), None
    raise ConversionError(f"{xml_path}: <size> is {xml_size[0]:g} x {xml_size[1]:g} but its image {image_path.name} "
                          f"is {width} x {height} (as training reads it); the boxes do not belong to this image")


def _collect_names(xml_paths: Iterable[Path]) -> Dict[str, Path]:
    """Every ``<object><name>`` of these files and the first file with it; files that do not parse are left to
    the conversion, which reports them."""
    first_file: Dict[str, Path] = {}
    for xml_path in xml_paths:
        try:
            root = parse_untrusted_xml(xml_path)
            for number, obj in enumerate(root.iter("object"), start=1):
                first_file.setdefault(class_name(_xml_text(obj, "name", xml_path, f"<object> #{number}")), xml_path)
        except ConversionError:
            continue
    return first_file


def voc_class_names(xml_paths: Iterable[Union[str, Path]]) -> List[str]:
    """Every ``<object><name>`` of these files, sorted (the class order when no names file is given).

    Names that differ only in case ('RBC', 'rbc') are refused: they are one class spelt two ways, and a names file
    (``--names``) is the way to say which spelling is the class."""
    first_file = _collect_names(Path(p) for p in xml_paths)
    by_case: Dict[str, List[str]] = {}
    for name in sorted(first_file):
        by_case.setdefault(name.casefold(), []).append(name)
    for spellings in by_case.values():
        if len(spellings) > 1:
            where = " and ".join(f"{name!r} ({first_file[name]})" for name in spellings)
            raise ConversionError(f"class names that differ only in case: {where}; pass --names with one spelling "
                                  "per class (the others are matched to it)")
    return sorted(first_file)


def _collected_note(names: Sequence[str]) -> str:
    return f"classes collected from the XML (sorted; index = position): {', '.join(names)}"


def _empty_counts() -> Dict[str, Any]:
    return {"boxes": 0, "difficult": 0, "clipped": 0, "empty": 0, "size_from_image": 0, "turned": 0, "per_class": {}}


def _add_counts(total: Dict[str, Any], counts: Dict[str, Any]) -> None:
    for key, value in counts.items():
        if key == "per_class":
            for name, n in value.items():
                total["per_class"][name] = total["per_class"].get(name, 0) + n
        else:
            total[key] += value


class _Conversion:
    """One run's class names, image look-ups, and what it noted (files skipped, classes matched ignoring case)."""

    def __init__(self, names: Sequence[str], include_difficult: bool) -> None:
        self.names = list(names)
        self.class_index = {name: i for i, name in enumerate(self.names)}
        by_case: Dict[str, List[str]] = {}
        for name in self.names:
            by_case.setdefault(name.casefold(), []).append(name)
        # a spelling that differs only in case goes to the one class spelt that way (if only one is)
        self.by_case = {key: spellings[0] for key, spellings in by_case.items() if len(spellings) == 1}
        self.include_difficult = include_difficult
        self.listing = _Listing()
        self.matched: Dict[Tuple[str, str], Dict[Path, None]] = {}  # (spelling in the XML, class) -> files

    def class_of(self, name: str, xml_path: Path, context: str) -> int:
        if name in self.class_index:
            return self.class_index[name]
        if name.casefold() in self.by_case:
            self.matched.setdefault((name, self.by_case[name.casefold()]), {})[xml_path] = None
            return self.class_index[self.by_case[name.casefold()]]
        raise ConversionError(f"{xml_path}: {context} has unknown class {name!r} (known: {', '.join(self.names)})")

    def convert(self, xml_path: Path, image_folder: Path, need_image: bool) -> Dict[str, Any]:
        """One annotation: ``rows``, ``image`` (None when not looked for), ``counts``, ``note``; raises
        :class:`ConversionError` for anything that makes the file unusable."""
        root = parse_untrusted_xml(xml_path)
        if root.tag != "annotation":
            raise ConversionError(f"{xml_path}: the root element is <{root.tag}>; a Pascal VOC annotation has "
                                  "<annotation>")
        counts = _empty_counts()
        xml_size = _xml_size(root, xml_path)
        image = note = None
        width, height, orientation = (xml_size or (0.0, 0.0)) + (1,)
        if need_image or xml_size is None:
            image = find_image(xml_path, root, image_folder, self.listing)
            if image is None:
                what = "<size> is missing or zero and no image was found to read it from" if xml_size is None \
                    else "no image for it"
                raise ConversionError(f"{xml_path}: {what} in {image_folder} (looked for its <filename> and "
                                      f"{xml_path.stem} with {', '.join(IMAGE_SUFFIXES)}; pass --images)")
            width, height, orientation, note = _image_frame(image, xml_path, xml_size)
            counts["size_from_image"] += xml_size is None
        rows = [row for number, obj in enumerate(root.iter("object"), start=1)
                if (row := self._row(obj, f"<object> #{number}", xml_path, width, height, orientation, counts))]
        return {"rows": rows, "image": image, "counts": counts, "note": note}

    def _row(self, obj: ET.Element, context: str, xml_path: Path, width: float, height: float, orientation: int,
             counts: Dict[str, Any]) -> Optional[str]:
        name = class_name(_xml_text(obj, "name", xml_path, context))
        index = self.class_of(name, xml_path, context)
        if _is_difficult(obj, xml_path, context) and not self.include_difficult:
            counts["difficult"] += 1
            return None
        box = obj.find("bndbox")
        if box is None:
            raise ConversionError(f"{xml_path}: {context} ({name}) lacks <bndbox>")
        xmin, ymin, xmax, ymax = (_xml_number(box, tag, xml_path, f"{context} <bndbox>")
                                  for tag in ("xmin", "ymin", "xmax", "ymax"))
        if xmax < xmin or ymax < ymin:
            raise ConversionError(f"{xml_path}: {context} ({name}) has xmax < xmin or ymax < ymin: "
                                  f"{xmin:g} {ymin:g} {xmax:g} {ymax:g}")
        x1, y1, x2, y2 = xmin - 1, ymin - 1, xmax, ymax  # 1-based inclusive -> continuous
        clipped = x1 < 0 or y1 < 0 or x2 > width or y2 > height
        if orientation != 1:
            (ax, ay), (bx, by) = (_orient_point(x, y, width, height, orientation) for x, y in ((x1, y1), (x2, y2)))
            x1, y1, x2, y2 = min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)
            if orientation in _QUARTER_TURNS:
                width, height = height, width
            counts["turned"] += 1
        row = _yolo_row(index, x1, y1, x2, y2, width, height)
        if row is None:
            counts["empty"] += 1
            return None
        counts["clipped"] += clipped
        counts["boxes"] += 1
        counts["per_class"][self.names[index]] = counts["per_class"].get(self.names[index], 0) + 1
        return row

    def convert_all(self, items: Sequence[Tuple[str, Path, Path]], need_images: bool
                    ) -> Tuple[Dict[str, Any], List[str]]:
        """``{id: result}`` of the files that converted, and one message per file skipped or worth a look."""
        done, messages = {}, []
        for item_id, xml_path, image_folder in items:
            try:
                done[item_id] = self.convert(xml_path, image_folder, need_images)
            except ConversionError as exc:
                messages.append(f"warning: {exc}; skipped")
                continue
            if done[item_id]["note"]:
                messages.append(f"note: {done[item_id]['note']}")
        return done, messages

    def matched_notes(self) -> List[str]:
        notes = []
        for (spelling, name), files in self.matched.items():
            more = f" and {len(files) - 1} more files" if len(files) > 1 else ""
            notes.append(f"note: class {spelling!r} in {next(iter(files))}{more} is taken as {name!r}")
        return notes


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
    folder = Path(image_folder) if image_folder is not None else xml_path.parent
    result = _Conversion([class_name(c) for c in classes], include_difficult).convert(xml_path, folder, False)
    _add_counts(counts, result["counts"])
    return result["rows"], result["counts"]["difficult"] + result["counts"]["empty"]


def _text_lines(path: Path) -> List[str]:
    """The lines of a split or names file; UTF-8, a byte-order mark (Windows editors) allowed."""
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise ConversionError(f"{path}: line {line} is not UTF-8 text (save the file as UTF-8)") from None


def read_ids(ids_path: Union[str, Path]) -> List[str]:
    """Image ids of a split file: the first word of each non-empty line (``ImageSets/Main/<split>.txt``; the
    per-class files add a flag after it). A trailing ``.xml`` or image suffix is dropped."""
    ids_path = Path(ids_path)
    if not ids_path.is_file():
        raise ConversionError(f"{ids_path}: split file not found")
    ids = []
    for line in _text_lines(ids_path):
        if line.strip():
            first = line.split()[0]
            ids.append(first[:-len(Path(first).suffix)]
                       if Path(first).suffix.lower() in (".xml",) + IMAGE_SUFFIXES else first)
    return ids


def _hidden(relative: PurePosixPath) -> bool:
    # dot files and folders: macOS's ._photo.xml resource forks, .ipynb_checkpoints, .git
    return any(part.startswith(".") for part in relative.parts)


def _xml_items(annotations: Path, ids: Optional[Sequence[str]] = None, split: str = "the split"
               ) -> Tuple[List[Tuple[str, Path]], List[str]]:
    """``(id, XML path)`` of a folder, and a message per listed id skipped. Without ``ids``: every ``.xml`` below
    the folder, its id the path inside it without suffix (``day1/img3``)."""
    if not annotations.is_dir():
        raise ConversionError(f"{annotations}: not a folder of VOC XML files")
    if ids is None:
        found = sorted((p.relative_to(annotations).with_suffix("").as_posix(), p) for p in annotations.rglob("*")
                       if p.suffix.lower() == ".xml" and p.is_file()
                       and not _hidden(PurePosixPath(p.relative_to(annotations).as_posix())))
        return found, []
    items, messages = [], []
    for item_id in dict.fromkeys(ids):  # an id listed twice is converted once
        relative = PurePosixPath(item_id)
        if "\\" in item_id or relative.is_absolute() or ".." in relative.parts:
            messages.append(f"warning: split {split!r}: id {item_id!r} is not a name inside {annotations}; skipped")
        elif not (annotations / f"{item_id}.xml").is_file():
            messages.append(f"warning: {annotations / f'{item_id}.xml'}: listed in split {split!r} but there is no "
                            "such file; skipped")
        else:
            items.append((item_id, annotations / f"{item_id}.xml"))
    if ids and not items:
        raise ConversionError(f"split {split!r}: none of its {len(ids)} ids has an XML file in {annotations} "
                              f"(first: {ids[0]!r})")
    return items, messages


def _xml_paths(annotations: Path, ids: Optional[Sequence[str]]) -> List[Path]:
    return [path for _, path in _xml_items(annotations, ids)[0]]


def resolve_class_names(annotations: Path, names_path: Optional[Path],
                        classes: Optional[Sequence[str]] = None) -> Tuple[List[str], Optional[str]]:
    """(class names, a note to print or None): ``classes`` if given, else an existing ``names_path`` (one per line),
    else collected from every XML in ``annotations`` (sorted)."""
    if classes is not None:
        return [class_name(name) for name in classes], None
    if names_path is not None and names_path.exists():
        if not names_path.is_file():
            raise ConversionError(f"{names_path}: --names must be a text file (one class name per line)")
        names = [class_name(line) for line in _text_lines(names_path) if line.strip()]
        if not names:
            raise ConversionError(f"{names_path}: names file is empty (one class name per line)")
        twice = next((name for name in names if names.count(name) > 1), None)
        if twice is not None:
            raise ConversionError(f"{names_path}: the class name {twice!r} is listed twice")
        return names, None
    names = voc_class_names(_xml_paths(annotations, None))
    if not names:
        raise ConversionError(f"{annotations}: no <object> in any XML file, so no class names to collect "
                              "(pass --names)")
    if names_path is not None:  # said, so that a mistyped --names is seen before the order is trained on
        return names, f"{names_path} does not exist yet: {_collected_note(names)}; written there"
    return names, _collected_note(names)


def summary_line(split: str, stats: Dict[str, object]) -> str:
    """One line for a converted split: images, boxes per class, and what was skipped or changed."""
    per_class = ", ".join(f"{name} {stats['per_class'][name]:,}" for name in stats["names"]
                          if stats["per_class"].get(name))
    turned = f", {stats['turned']} turned with their photo's EXIF orientation" if stats.get("turned") else ""
    files = f"; {len(stats['files_skipped'])} files skipped (see the warnings)" if stats.get("files_skipped") else ""
    return (f"{split}: {stats['images']:,} images, {stats['boxes']:,} boxes ({per_class or 'none'}); "
            f"{stats['difficult']} difficult skipped, {stats['clipped']} clipped to the image, {stats['empty']} "
            f"empty skipped, {stats['size_from_image']} sizes read from the image{turned}{files} -> {stats['out']}")


def _split_stats(done: Dict[str, Any], skipped: List[str], names: List[str], out: Path) -> Dict[str, Any]:
    counts = _empty_counts()
    for result in done.values():
        _add_counts(counts, result["counts"])
    return {"images": len(done), "skipped": counts["difficult"] + counts["empty"], **counts, "names": names,
            "out": str(out), "files_skipped": skipped}


def _nothing_converted(messages: List[str], what: str) -> ConversionError:
    problems = [m for m in messages if m.startswith("warning: ")]
    first = problems[0].removeprefix("warning: ").removesuffix("; skipped") if problems else what
    more = f" (and {len(problems) - 1} more files)" if len(problems) > 1 else ""
    return ConversionError(f"{first}{more}; nothing converted")


def voc_to_yolo(annotations: Union[str, Path, Iterable[Union[str, Path]]], out_dir: Union[str, Path],
                ids: Optional[Sequence[str]] = None, classes: Optional[Sequence[str]] = None,
                include_difficult: bool = False, names_path: Union[str, Path, None] = None,
                images: Union[str, Path, None] = None) -> Dict[str, object]:
    """Convert VOC XML files (a folder of them, or a list of paths) to ``out_dir/<id>.txt``.

    A folder's XML files are found in its subfolders too; an XML's id is its path inside the folder without
    ``.xml`` (``day1/img3``: ``out_dir/day1/img3.txt``); a list's ids are the files' stems. ``ids`` restricts a
    folder to those ids (an ``ImageSets/Main/*.txt`` list). ``classes`` fixes the class order; without it the names
    come from ``names_path`` when that file exists, else from every XML of the folder (sorted), and are written to
    ``names_path`` (default ``out_dir/../classes.txt``). Objects flagged ``difficult`` are skipped unless
    ``include_difficult`` (VOC evaluation ignores them too). ``images``: where to read an image's size when its XML
    has none (default: ``JPEGImages`` beside an ``Annotations`` folder, else the XML's folder).

    A file that cannot be used (malformed, unknown class, bad box, ...) is skipped and reported in
    ``files_skipped``; when none can be used, or ``out_dir`` holds label files this run would not write (they
    would mix with the new ones), :class:`ConversionError` is raised before anything is written.
    Returns counts (``images``, ``boxes``, ``skipped``, ``difficult``, ``clipped``, ``empty``, ``size_from_image``,
    ``turned``, ``per_class``), the ``names`` list, ``out``, ``note`` (how the names were chosen, or None),
    ``files_skipped`` and ``messages`` (those and the notes, one line each, to print).
    """
    out_dir = Path(out_dir)
    names_file = Path(names_path) if names_path else out_dir.parent / "classes.txt"
    if isinstance(annotations, (str, Path)):
        folder = Path(annotations)
        found, messages = _xml_items(folder, ids)
        image_root = Path(images) if images is not None else default_image_folder(folder)
        items = [(item_id, path, image_root / PurePosixPath(item_id).parent) for item_id, path in found]
        names, note = resolve_class_names(folder, names_file, classes)
    else:
        paths = [Path(p) for p in annotations]
        stems = [p.stem for p in paths]
        messages = [f"warning: {p}: another file of the list is also {p.stem}.xml; skipped" for p in paths
                    if stems.count(p.stem) > 1]
        items = [(p.stem, p, Path(images) if images is not None else default_image_folder(p.parent)) for p in paths
                 if stems.count(p.stem) == 1]
        names = [class_name(c) for c in classes] if classes is not None else voc_class_names(paths)
        note = None if classes is not None else _collected_note(names)
    if not items and not messages:
        raise ConversionError(f"{annotations}: no XML files to convert")
    conversion = _Conversion(names, include_difficult)
    done, file_messages = conversion.convert_all(items, need_images=False)
    messages += file_messages + conversion.matched_notes()
    if not done:
        raise _nothing_converted(messages, f"{annotations}: no XML files to convert")
    targets = {out_dir / f"{item_id}.txt" for item_id in done}
    stale = sorted(p for p in out_dir.rglob("*.txt") if p not in targets and p != names_file
                   and not _hidden(PurePosixPath(p.relative_to(out_dir).as_posix()))) if out_dir.is_dir() else []
    if stale:
        raise ConversionError(f"{out_dir}: holds {len(stale)} label files this run would not write (e.g. "
                              f"{stale[0].relative_to(out_dir)}), which would mix with the new ones; remove them "
                              "or choose an empty --out")
    for item_id, result in done.items():
        atomic_write_text(out_dir / f"{item_id}.txt", "".join(f"{r}\n" for r in result["rows"]))
    names_from_file = classes is None and note is None  # read from an existing names file: it stays as it is
    if not names_from_file:
        _write_names(names, names_file)
    skipped = [m for m in messages if m.startswith("warning: ")]
    return {**_split_stats(done, skipped, names, out_dir), "note": note, "messages": messages}


def split_by_fraction(stems: Sequence[str], val_fraction: float, seed: int = 0,
                      test_fraction: float = 0.0) -> Dict[str, List[str]]:
    """``train`` / ``val`` (/ ``test``) ids from one folder: a seeded shuffle, the first ``round(n * val_fraction)``
    (at least one when the fraction is positive) to val, the next ``round(n * test_fraction)`` (likewise) to test,
    the rest to train; each list in sorted order. A fraction of 0 leaves its split out, and val does not depend on
    ``test_fraction``: adding a test split later takes its images from train only."""
    for flag, fraction in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not 0 <= fraction < 1:
            raise ConversionError(f"{flag} must be in [0, 1), got {fraction}")
    order = sorted(stems)
    random.Random(seed).shuffle(order)
    n_val, n_test = (max(1, round(len(order) * f)) if f > 0 else 0 for f in (val_fraction, test_fraction))
    if n_val + n_test >= len(order):
        given = (f"--val-fraction {val_fraction} and --test-fraction {test_fraction} leave" if test_fraction
                 else f"--val-fraction {val_fraction} leaves")
        raise ConversionError(f"{given} no training image of {len(order)}")
    splits = {"train": sorted(order[n_val + n_test:]), "val": sorted(order[:n_val]),
              "test": sorted(order[n_val:n_val + n_test])}
    return {name: ids for name, ids in splits.items() if ids or name == "train"}


def _images_without_xml(image_root: Path, xml_ids: set, used: set) -> List[Path]:
    """Images below ``image_root`` that no XML of the folder names (by id or by ``<filename>``)."""
    if not image_root.is_dir():
        return []
    return sorted(p for p in image_root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not _hidden(PurePosixPath(p.relative_to(image_root).as_posix()))
                  and p.relative_to(image_root).with_suffix("").as_posix() not in xml_ids
                  and p.resolve() not in used)


def voc_to_yolo_dataset(annotations: Union[str, Path], root: Union[str, Path], splits: Dict[str, Optional[Sequence[str]]],
                        classes: Optional[Sequence[str]] = None, images: Union[str, Path, None] = None,
                        include_difficult: bool = False, names_path: Union[str, Path, None] = None,
                        log=print, write_yaml: bool = True) -> Dict[str, Dict[str, object]]:
    """The whole YOLO layout under ``root`` from a VOC or LabelImg folder: ``images/<split>`` (copies),
    ``labels/<split>``, ``classes.txt`` and ``data.yaml`` (``path: .``, so the folder can move).

    ``splits`` maps a split name to its image ids (None: every XML, subfolders included). ``root`` must not exist
    or be empty, so nothing already there is overwritten; the layout is built beside it and renamed into place
    at the end, so a run that fails leaves nothing behind. Class names as :func:`voc_to_yolo`. Every image is read
    as training reads it: one that is missing or does not decode, an XML that cannot be used, and a photo that two
    XML files claim are reported through ``log`` and skipped; ids in two splits are an error.
    ``log`` also gets one summary line per split. ``write_yaml=False`` leaves out ``data.yaml`` (a dataset built
    for a data YAML that already exists).
    """
    annotations, root = Path(annotations), Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ConversionError(f"{root}: exists and is not an empty folder; nothing was written (choose a new "
                              "--dataset folder, or move that one away)")
    if not splits:
        raise ConversionError("no split to write (give --split NAME=IDS_FILE or --val-fraction)")
    names, note = resolve_class_names(annotations, Path(names_path) if names_path else None, classes)
    if note:
        log(note)
    image_root = Path(images) if images is not None else default_image_folder(annotations)
    conversion = _Conversion(names, include_difficult)
    all_xml = _xml_items(annotations)[0]
    split_of: Dict[str, str] = {}
    done: Dict[str, Dict[str, Any]] = {}
    messages: Dict[str, List[str]] = {}
    for split, ids in splits.items():
        if ids is not None and not ids:
            raise ConversionError(f"split {split!r} lists no ids")
        found, messages[split] = _xml_items(annotations, ids, split) if ids is not None else (all_xml, [])
        for item_id, _ in found:
            if item_id in split_of:
                raise ConversionError(f"id {item_id!r} is in split {split_of[item_id]!r} and in split {split!r}; "
                                      "a photo in both would be scored on what it was trained on")
            split_of[item_id] = split
        items = [(item_id, path, image_root / PurePosixPath(item_id).parent) for item_id, path in found]
        done[split], file_messages = conversion.convert_all(items, need_images=True)
        messages[split] += file_messages
    # one photo claimed by two XML files (a copied XML whose <filename> was not changed): neither set of boxes
    # can be trusted for it
    claims: Dict[Path, List[Tuple[str, str]]] = {}
    for split, results in done.items():
        for item_id, result in results.items():
            claims.setdefault(result["image"].resolve(), []).append((split, item_id))
    for image, claimants in claims.items():
        if len(claimants) > 1:
            for split, item_id in claimants:
                others = ", ".join(f"{i}.xml" for s, i in claimants if i != item_id)
                messages[split].append(f"warning: {annotations / f'{item_id}.xml'}: its image {image} is also the "
                                       f"image of {others}; skipped")
                del done[split][item_id]
    for line in (m for split in splits for m in messages[split]):
        log(line)
    for line in conversion.matched_notes():
        log(line)
    if not any(done.values()):
        raise _nothing_converted([m for split in splits for m in messages[split]], f"{annotations}: no XML files")
    for split in splits:
        if not done[split]:
            log(f"warning: split '{split}': no file converted; it is left out of data.yaml (train.py needs train "
                "and val)")
    unlabelled = _images_without_xml(image_root, {item_id for item_id, _ in all_xml}, set(claims))
    if unlabelled:
        log(f"note: {len(unlabelled)} images in {image_root} have no XML and are left out (e.g. "
            f"{unlabelled[0].relative_to(image_root)}); to train on a photo with nothing on it, save an XML "
            "without objects for it")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.converting-", dir=root.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700 would become the dataset's: others could not read it
    try:
        results = {}
        for split in splits:
            for item_id, result in done[split].items():
                atomic_write_text(staging / "labels" / split / f"{item_id}.txt",
                                  "".join(f"{r}\n" for r in result["rows"]))
                image_copy = staging / "images" / split / f"{item_id}{result['image'].suffix.lower()}"
                image_copy.parent.mkdir(parents=True, exist_ok=True)
                try:
                    shutil.copyfile(result["image"], image_copy)
                except OSError as exc:  # named where it was going, not by the staging folder removed below
                    raise OutputError(describe_write_failure(root / image_copy.relative_to(staging), exc),
                                      exc.errno) from None
            skipped = [m for m in messages[split] if m.startswith("warning: ")]
            results[split] = _split_stats(done[split], skipped, names, root / "labels" / split)
            log(summary_line(split, results[split]))
        _write_names(names, staging / "classes.txt")
        if write_yaml:
            yaml_lines = ["# written by python -m yolov3.convert voc", "path: .  # this file's folder"]
            yaml_lines += [f"{split}: images/{split}" for split in splits if done[split]]
            yaml_lines += [f"names: {json.dumps(names)}"]
            atomic_write_text(staging / "data.yaml", "\n".join(yaml_lines) + "\n")
        if root.exists():
            root.rmdir()  # checked empty above
        os.replace(staging, root)
        if names_path is not None and note:  # a --names file that did not exist gets the names, as with --out
            _write_names(names, Path(names_path))
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OutputError):  # named where it was going, not by the staging folder just removed
            raise OutputError(str(exc).replace(str(staging), str(root)), exc.errno) from None
        raise
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
                     help="with --dataset and no --split: this fraction of the images (seeded) to val, the rest to "
                          "train (default: 0.2)")
    voc.add_argument("--test-fraction", type=float, default=None,
                     help="with --dataset and no --split: also this fraction to a test split, scored once at the "
                          "end of a run (train.py val.test=true; the real-data study's spec does) (default: none)")
    voc.add_argument("--seed", type=int, default=0, help="seed of --val-fraction's and --test-fraction's shuffle")
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
            if args.split or args.val_fraction is not None or args.test_fraction is not None:
                raise ConversionError("--split, --val-fraction and --test-fraction go with --dataset; with --out, "
                                      "give --ids")
            ids = read_ids(args.ids) if args.ids else None
            stats = voc_to_yolo(args.annotations, args.out, ids, include_difficult=args.difficult,
                                names_path=args.names, images=args.images)
            for line in ([stats["note"]] if stats["note"] else []) + stats["messages"]:
                print(line)
            print(summary_line(Path(args.ids).stem if args.ids else "all", stats))
        else:
            if args.ids:
                raise ConversionError("--ids goes with --out; with --dataset, give --split NAME=IDS_FILE")
            if args.split and (args.val_fraction is not None or args.test_fraction is not None):
                raise ConversionError("give either --split or --val-fraction/--test-fraction, not both")
            if args.split:
                split_names = [name for name, _ in args.split]
                twice = next((name for name in split_names if split_names.count(name) > 1), None)
                if twice is not None:
                    raise ConversionError(f"--split {twice}=... is given twice; give each split once")
                splits = {name: read_ids(path) for name, path in args.split}
            else:
                ids = [item_id for item_id, _ in _xml_items(Path(args.annotations))[0]]
                splits = split_by_fraction(ids, 0.2 if args.val_fraction is None else args.val_fraction, args.seed,
                                           args.test_fraction or 0.0)
            voc_to_yolo_dataset(args.annotations, args.dataset, splits, images=args.images,
                                include_difficult=args.difficult, names_path=args.names)
            print(f"data YAML: {Path(args.dataset) / 'data.yaml'} (python train.py --data {Path(args.dataset) / 'data.yaml'})")
    except (ConversionError, OSError) as exc:  # OSError: an output that could not be written (disk full, ...)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
