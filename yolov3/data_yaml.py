"""The data YAML and Darknet's ``.data`` file: which images make each split, and the class names.

Data YAML (the common YOLO convention)::

    path: ../datasets/coco       # dataset root; relative to the YAML's folder (default: that folder); for the
                                 # YAMLs installed with the package, relative to ./data (yolov3.paths)
    train: images/train2017      # relative to `path`: a folder of images, a .txt list of image paths, or a list
    val: images/val2017
    test: test-dev2017.txt       # optional
    nc: 80                       # optional; must equal len(names)
    names: [person, bicycle, ...]  # or {0: person, 1: bicycle, ...}
    download: ...                # optional: text telling a person how to get the data (never run), or a mapping
                                 # that builds the dataset when it is missing (yolov3.fetch; data/bccd.yaml)
    generate: {...}              # optional, built-in dataset only: see yolov3.synthetic

Lines of a .txt list are image paths relative to ``path`` (or absolute). Any other top-level key (a Roboflow
export's ``roboflow:`` block, yolov5's ``download`` scripts are fine) is warned about and ignored. A relative ``path``
that does not exist relative to the YAML's folder is also looked for relative to the working directory and the
repository root, as yolov5 resolves it (``path: ../datasets/coco128`` beside the clone); when none exists, the error
about the first missing split says where it looked.

Darknet / PyTorch-YOLOv3 ``.data`` files are read too: ``classes``, ``train``, ``valid``, optional ``test`` (image
folders or ``.txt`` lists) and ``names`` (a ``.names`` file, one class per line); paths relative to the working
directory as darknet takes them (else to the ``.data`` file's folder); other keys (``backup``, ``eval``) are ignored.

The other data modules build on this one: :mod:`yolov3.labels` (label files, their scan and cache),
:mod:`yolov3.dataset` (the Dataset and its loader); :mod:`yolov3.data` gathers their public names.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Tuple, Union

from yolov3 import paths as project_paths
from yolov3 import synthetic
from yolov3.config import read_yaml
from yolov3.fetch import FetchError, ensure_dataset, parse_download_spec
from yolov3.paths import data_yaml_base, resolve_path

# one logger for every data module: train.log and the tests listen to "yolov3.data"
LOGGER = logging.getLogger("yolov3.data")

YAML_KEYS = ("path", "train", "val", "test", "nc", "names", "download", "generate")
SPLIT_KEYS = ("train", "val", "test")


class DataError(ValueError):
    """A dataset problem; the message names the YAML, key, split, file or line involved."""


class _FallbackHandler(logging.StreamHandler):
    """Prints to stderr only while the application has configured no root handler, so messages are never lost
    (the command lines configure nothing) and never doubled (when an application calls ``logging.basicConfig``)."""

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            super().emit(record)


def _ensure_log_output() -> None:
    package_logger = logging.getLogger("yolov3")
    if not any(isinstance(h, _FallbackHandler) for h in package_logger.handlers):
        handler = _FallbackHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        package_logger.addHandler(handler)
    if package_logger.level == logging.NOTSET:
        package_logger.setLevel(logging.INFO)  # the scan summary is INFO and must show by default


_ensure_log_output()


def _read_yaml_mapping(path: Path) -> dict:
    content = read_yaml(path, error=DataError, what="data YAML")
    if not isinstance(content, dict):
        raise DataError(f"{path}: a data YAML must be a mapping with keys {', '.join(YAML_KEYS)}")
    return content


def _parse_names(names, nc, source: Path) -> List[str]:
    if isinstance(names, dict):
        keys = sorted(names)
        if any(isinstance(k, bool) or not isinstance(k, int) for k in keys) or keys != list(range(len(keys))):
            raise DataError(f"{source}: 'names' as a mapping needs the keys 0..{len(keys) - 1}, got {keys}")
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names:
        raise DataError(f"{source}: 'names' must be a non-empty list or a mapping index -> name, got {names!r}")
    names = [str(n) for n in names]
    if nc is not None:
        if isinstance(nc, bool) or not isinstance(nc, int):
            raise DataError(f"{source}: 'nc' must be an integer, got {nc!r}")
        if nc != len(names):
            raise DataError(f"{source}: 'nc' is {nc} but 'names' lists {len(names)} classes")
    return names


def _resolve_split(value, root: Path, source: Path, split: str) -> List[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    resolved = []
    for item in items:
        if not isinstance(item, str):
            raise DataError(f"{source}: '{split}' expects a path or a list of paths, got {item!r}")
        item_path = Path(item).expanduser()
        full = item_path if item_path.is_absolute() else root / item_path
        # a Roboflow export writes 'train: ../train/images' from a folder beside the dataset; its YAML sits in the
        # dataset, so where that path does not exist, the same path below the root is the one meant
        inside = root / Path(*item_path.parts[1:]) if item_path.parts[:1] == ("..",) else None
        if inside is not None and not full.exists() and inside.exists():
            LOGGER.warning("note %s: split '%s': %s does not exist; using %s (an export that writes its paths from "
                           "a folder beside the dataset, as Roboflow's does)", source, split, full, inside)
            full = inside
        resolved.append(str(full))
    return resolved


SINGLE_CLASS_NAME = "object"  # the one class of train.single_cls (val.py --single-cls names it the same)


def as_single_class(data: dict) -> dict:
    """``data`` (from :func:`load_data_yaml`) with every box as class 0 of the one class ``object``: a dataset built
    from it reads the same images and boxes with the class column zeroed (train.single_cls, yolov5's --single-cls).
    ``nc`` stays the data's: the label rows are still checked against the classes the data has."""
    return {**data, "names": [SINGLE_CLASS_NAME], "single_cls": True}


def declares_split(path: Union[str, Path], split: str) -> bool:
    """Whether the data YAML (or ``.data`` file) at ``path`` names a non-empty ``split``: what a tool checks before
    it starts runs that will need that split. A YAML is only read (nothing generated or fetched); a ``.data`` file
    is loaded as train.py loads it, so a missing names file raises DataError."""
    yaml_path = resolve_path(path).resolve()
    if yaml_path.suffix == ".data":
        return bool(_load_darknet_data(yaml_path).get(split))
    return bool(_read_yaml_mapping(yaml_path).get(split))


def load_data_yaml(path: Union[str, Path], fetch: bool = True) -> dict:
    """Read and check a data YAML. Returns ``{'path', 'train', 'val', 'test', 'nc', 'names', 'yaml', 'download'}``:
    ``path`` the resolved root, each split a list of resolved folders / .txt files, ``names`` a list, ``yaml`` the
    YAML's own path (for messages). A ``generate:`` block writes the built-in dataset first when needed; a
    ``download:`` mapping builds a missing dataset (:mod:`yolov3.fetch`; ``$YOLOV3_DATA_SOURCE`` may name a local
    archive or folder instead of its url) unless ``fetch`` is False. A Darknet ``.data`` file gives the same dict (see the module
    docstring)."""
    yaml_path = resolve_path(path).resolve()  # as given, else the data YAML of that name shipped with the package
    if yaml_path.suffix == ".data":
        return _load_darknet_data(yaml_path)
    content = _read_yaml_mapping(yaml_path)
    unknown = [key for key in content if key not in YAML_KEYS]
    if unknown:  # a Roboflow export adds a roboflow: block, other tools their own keys: say so, use the rest
        LOGGER.warning("WARNING %s: ignoring unknown key%s %s (known keys: %s)", yaml_path, "s" * (len(unknown) > 1),
                       ", ".join(f"'{key}'" for key in unknown), ", ".join(YAML_KEYS))
    root_value = content.get("path")
    tried: List[str] = []
    if root_value is None:
        root = data_yaml_base(yaml_path)
    elif isinstance(root_value, str):
        root, tried = _dataset_root(root_value, yaml_path, generated="generate" in content)
    else:
        raise DataError(f"{yaml_path}: 'path' must be a string, got {root_value!r}")
    if "names" not in content:
        raise DataError(f"{yaml_path}: missing key 'names' (the class names, a list or a mapping index -> name)")
    names = _parse_names(content["names"], content.get("nc"), yaml_path)
    if "generate" in content:
        try:
            synthetic.ensure_shapes_dataset(root, content["generate"] or {}, source=str(yaml_path), names=names)
        except synthetic.SyntheticDataError as exc:
            raise DataError(str(exc)) from None
    data = {"path": str(root), "nc": len(names), "names": names, "yaml": str(yaml_path),
            "download": content.get("download"), "path_tried": tried}
    for split in SPLIT_KEYS:
        data[split] = _resolve_split(content.get(split), root, yaml_path, split)
    if isinstance(data["download"], dict):
        data["path_tried"] = []  # built where the YAML says when missing (the first place _dataset_root looks)
        try:
            if fetch:
                ensure_dataset(data, data["download"], log=LOGGER.info)
            else:
                parse_download_spec(data["download"], yaml_path)
        except FetchError as exc:
            raise DataError(str(exc)) from None
    return data


def _dataset_root(value: str, yaml_path: Path, generated: bool) -> Tuple[Path, List[str]]:
    """(dataset root, the places looked at when none of them exists) for a YAML's ``path: value``.

    Relative to the YAML's folder first (our convention), then to the working directory and the repository root
    (yolov5's). The built-in dataset is generated where the YAML itself says.
    """
    given = Path(value).expanduser()
    if given.is_absolute():
        return given.resolve(), []
    candidates = [data_yaml_base(yaml_path) / given, Path.cwd() / given]
    if project_paths.ROOT != project_paths.INSTALLED_ROOT:  # a checkout (an installed package is no place for datasets)
        candidates.append(project_paths.ROOT / given)
    candidates = list(dict.fromkeys(c.resolve() for c in candidates))
    if generated:
        return candidates[0], []
    for candidate in candidates:
        if candidate.is_dir():
            return candidate, []
    return candidates[0], [str(c) for c in candidates]


DARKNET_DATA_KEYS = {"classes": "nc", "train": "train", "valid": "val", "test": "test", "names": "names"}
DARKNET_IGNORED_KEYS = ("backup", "eval", "results", "map", "top", "labels")  # training/output settings of darknet


def _darknet_path(value: str, data_file: Path) -> Path:
    """A path in a .data file: relative to the working directory (darknet's rule), else to the file's folder."""
    given = Path(value).expanduser()
    if given.is_absolute() or given.exists():
        return given.resolve() if given.is_absolute() else (Path.cwd() / given)
    beside = data_file.parent / given
    return beside if beside.exists() else Path.cwd() / given


def _load_darknet_data(data_file: Path) -> dict:
    """A Darknet / PyTorch-YOLOv3 ``.data`` file as :func:`load_data_yaml`'s dict."""
    try:
        text = data_file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{data_file}: file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{data_file}: not UTF-8 text (undecodable byte at offset {exc.start})") from None
    values: Dict[str, Tuple[str, int]] = {}
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#")[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise DataError(f"{data_file}:{line_no}: expected 'key = value' (a Darknet .data file), got {line!r}")
        key, value = (part.strip() for part in line.split("=", 1))
        if key in DARKNET_DATA_KEYS:
            values[key] = (value, line_no)
        elif key not in DARKNET_IGNORED_KEYS:
            LOGGER.warning("WARNING %s:%d: ignoring unknown key '%s' (known keys: %s)", data_file, line_no, key,
                           ", ".join(DARKNET_DATA_KEYS))
    for key in ("names", "train", "valid"):
        if key not in values:
            raise DataError(f"{data_file}: missing key '{key}' (a .data file needs classes, train, valid, names)")
    names_value, names_line = values["names"]
    names_file = _darknet_path(names_value, data_file)
    if not names_file.is_file():
        raise DataError(f"{data_file}:{names_line}: names file {names_value} not found (looked for "
                        f"{Path.cwd() / names_value} and {data_file.parent / names_value})")
    names = [ln.strip() for ln in names_file.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    nc = None
    if "classes" in values:
        classes_value, classes_line = values["classes"]
        if not classes_value.isdigit():
            raise DataError(f"{data_file}:{classes_line}: 'classes' must be a whole number, got {classes_value!r}")
        nc = int(classes_value)
    names = _parse_names(names, nc, data_file)
    data = {"path": str(Path.cwd()), "nc": len(names), "names": names, "yaml": str(data_file), "download": None,
            "path_tried": []}
    for key, split in (("train", "train"), ("valid", "val"), ("test", "test")):
        data[split] = [str(_darknet_path(values[key][0], data_file))] if key in values else []
    return data
