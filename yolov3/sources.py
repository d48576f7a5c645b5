"""detect.py's inputs and the names of their outputs: --source expanded into images, videos and streams, and one
output stem per input so that no two inputs write the same file.

Also :func:`display`, a path as text that can be printed and stored in JSON or YAML whatever bytes its name holds.
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path

from yolov3.files import IMAGE_SUFFIXES

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm", ".flv", ".asf", ".ts"}
STREAM_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://")
FRAME_TAG = re.compile(r"^(.*)_(\d+)$")  # "<video stem>_<frame>": the names a video's frames take


class SourceError(ValueError):
    """A --source that cannot be used (missing path, unknown extension, empty folder)."""


@dataclass
class Source:
    kind: str  # "image", "video" or "stream"
    location: str  # a path, a webcam index or a URL


def resolve_sources(source: str) -> tuple[list, list]:
    """Expand --source into a list of Source items, plus warnings for files that were skipped."""
    warnings = []
    source = str(source).strip()
    if source.isdigit():
        return [Source("stream", source)], warnings
    if source.lower().startswith(STREAM_PREFIXES):
        suffix = Path(source.split("?")[0]).suffix.lower()
        return [Source("image" if suffix in IMAGE_SUFFIXES else "stream", source)], warnings
    unsearched = ""  # a folder's subfolders are not read: said beside the result, so nothing is left out unsaid
    if any(ch in source for ch in "*?["):
        paths = sorted(p for p in glob.glob(source, recursive=True) if not os.path.isdir(p))  # '**/*' lists folders
        if not paths:
            raise SourceError(f"--source {source}: the pattern matched no file")
    else:
        path = Path(source)
        if not path.exists():
            raise SourceError(f"--source {source}: no such file or folder")
        if path.is_dir():
            entries = list(path.iterdir())
            paths = sorted(str(p) for p in entries if p.is_file())
            subfolders = sum(p.is_dir() and not p.name.startswith(".") for p in entries)
            if subfolders:
                unsearched = (f"{subfolders} subfolder{'s' * (subfolders != 1)} not searched (a folder's own files "
                              f"only; --source '{path / '**' / '*'}' takes every file below it)")
                warnings.append(f"--source {source}: {unsearched}")
        elif path.suffix.lower() == ".txt":
            # surrogateescape: a listed name that is not UTF-8 (Linux allows any bytes) still names its file
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
            lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
            paths = [str((path.parent / ln) if not Path(ln).is_absolute() and not Path(ln).exists() else ln)
                     for ln in lines]
            missing = [p for p in paths if not Path(p).exists()]
            warnings += [f"{source}: listed file not found: {p}" for p in missing]
            paths = [p for p in paths if p not in missing]
        else:
            paths = [str(path)]
    items = []
    for p in paths:
        suffix = Path(p).suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            items.append(Source("image", p))
        elif suffix in VIDEO_SUFFIXES:
            items.append(Source("video", p))
        elif len(paths) == 1:
            raise SourceError(f"--source {p}: unknown extension '{suffix}' (images: "
                              f"{', '.join(sorted(IMAGE_SUFFIXES))}; videos: {', '.join(sorted(VIDEO_SUFFIXES))})")
        else:
            warnings.append(f"skipped {p}: unknown extension '{suffix}'")
    if not items:
        raise SourceError(f"--source {source}: no image or video found" + (f"; {unsearched}" if unsearched else ""))
    return items, warnings


def display(path: str | Path) -> str:
    """A path as text that can be printed and stored in JSON or YAML.

    Linux file names are bytes; Python decodes the bytes that are not UTF-8 to lone surrogates, which a strict
    stdout, JSON readers and YAML cannot take. Those bytes are shown as ``\\xNN`` escapes instead; any other name is
    returned unchanged.
    """
    text = os.fspath(path)
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that did not come from a file name
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def opencv_can_open(path: str | Path) -> bool:
    """OpenCV's video reader and writer take a path as UTF-8 and crash (segfault) on one that is not."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def natural_stem(item: Source, index: int) -> str:
    """The name an input's outputs take when no other input claims it: the file's stem, or stream<index>."""
    return f"stream{index}" if item.kind == "stream" else Path(item.location).stem


def output_stems(items: list) -> list:
    """One output stem per input, in input order, so that no two inputs write the same file.

    An input keeps its stem unless an earlier one took it; then it gets ``<stem>_2``, ``<stem>_3``... skipping every
    stem some input has of its own, so a later ``x_2.jpg`` still keeps its name. Stems compare case-folded (x.jpg and
    X.JPG would overwrite each other on macOS and Windows). An image and a video may share a stem (x.jpg, x.mp4,
    labels/x.txt vs labels/x_<frame>.txt); but a video's frames are named ``<stem>_<frame>``, so an image stem of
    that form beside that video is taken too, and an image renamed next to a video of its stem becomes
    ``<stem>-<n>`` (every ``<stem>_<n>`` is one of that video's frames).
    """
    natural = [natural_stem(item, index) for index, item in enumerate(items, 1)]
    own_stems = {stem.casefold() for stem in natural}
    image_stems, video_stems = set(), set()  # claimed so far, case-folded
    frame_like = set()  # <p> of every claimed image stem <p>_<digits>: a video stem <p> would reuse its names

    def is_frame_name(key: str) -> bool:
        match = FRAME_TAG.match(key)
        return match is not None and match.group(1) in video_stems

    def is_taken(key: str, is_video: bool, renamed: bool) -> bool:
        if renamed and key in own_stems:
            return True
        if is_video:
            return key in video_stems or key in frame_like
        return key in image_stems or is_frame_name(key)

    stems = []
    for item, stem in zip(items, natural):
        is_video = item.kind != "image"
        candidate, n = stem, 1
        while is_taken(candidate.casefold(), is_video, n > 1):
            n += 1
            candidate = f"{stem}_{n}"
            if not is_video and is_frame_name(candidate.casefold()):
                candidate = f"{stem}-{n}"
        key = candidate.casefold()
        if is_video:
            video_stems.add(key)
        else:
            image_stems.add(key)
            match = FRAME_TAG.match(key)
            if match is not None:
                frame_like.add(match.group(1))
        stems.append(candidate)
    return stems


def image_suffix(location: str) -> str:
    """The image's suffix as written (x.JPG stays .JPG), without a URL's query string."""
    path = location.split("?")[0] if location.lower().startswith(STREAM_PREFIXES) else location
    return Path(path).suffix
