#!/usr/bin/env python3
"""Download the official Darknet YOLOv3 weights, resumably and atomically, and check their sizes.

    python weights/download_weights.py                      # all four files into weights/
    python weights/download_weights.py yolov3-tiny          # just one
    python weights/download_weights.py --mirror https://example.org/darknet   # <mirror>/<file name> instead

Each file is fetched into ``<name>.part`` (an interrupted download resumes from there with an HTTP Range request)
and renamed to its final name only once its size is exactly the expected one, so a final name never holds half a
file. Expected sizes = header + 4 bytes per float; all four files use the 20-byte header (int32 major, minor,
revision + int64 ``seen``, written when major*10 + minor >= 2):
  yolov3.weights       20 + 4 * 62,001,757 = 248,007,048 bytes
  yolov3-tiny.weights  20 + 4 *  8,858,734 =  35,434,956 bytes
  yolov3-spp.weights   20 + 4 * 63,052,381 = 252,209,544 bytes
  darknet53.conv.74    20 + 4 * 40,620,640 = 162,482,580 bytes (yolov3.cfg layers 0..73: load with cutoff=74)
"""
from __future__ import annotations

import argparse
import os
import struct
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Tuple

OFFICIAL_BASE_URL = "https://pjreddie.com/media/files"
HEADER_BYTES = 20  # int32 major, minor, revision + int64 seen
# file name -> float32 values after the header (see yolov3.weights.count_darknet_floats)
FLOAT_COUNTS: Dict[str, int] = {
    "yolov3.weights": 62_001_757,
    "yolov3-tiny.weights": 8_858_734,
    "yolov3-spp.weights": 63_052_381,
    "darknet53.conv.74": 40_620_640,
}
EXPECTED_BYTES: Dict[str, int] = {name: HEADER_BYTES + 4 * floats for name, floats in FLOAT_COUNTS.items()}
SHORT_NAMES = {name.split(".")[0] if name.endswith(".weights") else name: name for name in FLOAT_COUNTS}
CHUNK_BYTES = 1 << 20  # read 1 MiB at a time: steady progress output without holding the file in memory


def _check_header(path: Path) -> Tuple[int, int, int]:
    """(major, minor, revision); raises if the file does not start like a 20-byte-header Darknet weights file."""
    with open(path, "rb") as fh:
        major, minor, revision = struct.unpack("<3i", fh.read(12))
    if not (major * 10 + minor >= 2 and major < 1000 and minor < 1000):
        raise ValueError(f"{path}: header version {major}.{minor}.{revision} does not use the expected 20-byte header")
    return major, minor, revision


def download(name: str, out_dir: Path, base_url: str, timeout: float = 60.0, quiet: bool = False) -> Path:
    """Fetch ``base_url/name`` into ``out_dir/name`` (resuming ``name.part``); returns the final path."""
    expected = EXPECTED_BYTES[name]
    final = out_dir / name
    if final.is_file() and final.stat().st_size == expected:
        if not quiet:
            print(f"{final}: already complete ({expected:,} bytes)")
        return final
    if final.exists():
        raise ValueError(f"{final} exists with {final.stat().st_size:,} bytes, expected {expected:,}; "
                         "remove it (or use --force) to download again")
    out_dir.mkdir(parents=True, exist_ok=True)
    part = out_dir / (name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if have > expected:  # cannot be a prefix of the right file
        part.unlink()
        have = 0
    url = f"{base_url.rstrip('/')}/{name}"
    if have < expected:
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = have and response.status == 206
            if have and not resumed:  # server ignored the Range request: start over
                have = 0
            mode = "ab" if resumed else "wb"
            if not quiet:
                print(f"{url} -> {part} ({'resuming at ' + format(have, ',') if resumed else 'from the start'})")
            with open(part, mode) as fh:
                while True:
                    chunk = response.read(CHUNK_BYTES)
                    if not chunk:
                        break
                    fh.write(chunk)
                    have += len(chunk)
                    if have > expected:
                        break
                    if not quiet:
                        print(f"\r  {have / expected:6.1%} of {expected:,} bytes", end="", flush=True)
            if not quiet:
                print()
    size = part.stat().st_size
    if size != expected:
        if size > expected:
            part.unlink()
        raise ValueError(f"{url}: got {size:,} bytes, expected {expected:,} "
                         f"({'download interrupted: run again to resume' if size < expected else 'wrong file; removed'})")
    _check_header(part)
    os.replace(part, final)  # atomic: the final name appears only complete
    if not quiet:
        print(f"{final}: ok ({expected:,} bytes)")
    return final


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Download the official Darknet YOLOv3 weights (size-checked, resumable, atomic).",
        epilog="Sizes: " + ", ".join(f"{n} {b:,} B" for n, b in EXPECTED_BYTES.items()))
    parser.add_argument("names", nargs="*", default=list(SHORT_NAMES),
                        help=f"which files (default: all): {', '.join(SHORT_NAMES)}")
    parser.add_argument("--dir", type=Path, default=Path(__file__).resolve().parent,
                        help="destination folder (default: this script's folder, weights/)")
    parser.add_argument("--mirror", default=OFFICIAL_BASE_URL,
                        help=f"base URL holding the files under their official names (default: {OFFICIAL_BASE_URL})")
    parser.add_argument("--force", action="store_true", help="download again even if a final file exists")
    parser.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in SHORT_NAMES and n not in FLOAT_COUNTS]
    if unknown:
        parser.error(f"unknown weights {', '.join(unknown)}; choose from {', '.join(SHORT_NAMES)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    failures = 0
    for short in args.names:
        name = SHORT_NAMES.get(short, short)
        if args.force and (args.dir / name).exists():
            (args.dir / name).unlink()
        try:
            download(name, args.dir, args.mirror, timeout=args.timeout, quiet=args.quiet)
        except (OSError, ValueError, urllib.error.URLError) as exc:
            failures += 1
            print(f"error: {name}: {exc}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
