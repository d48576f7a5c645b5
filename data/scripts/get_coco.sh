#!/usr/bin/env bash
# Download COCO 2017 detection images and annotations and convert them to YOLO labels (for data/coco.yaml).
# Needs internet, curl, unzip and ~45 GB free during extraction (~20 GB after). Never run by the tests.
# Usage: bash data/scripts/get_coco.sh [datasets_dir]   (default: datasets/ at the repository root)
set -euo pipefail
repo_root="$(cd "$(dirname "$0")/../.." && pwd)"
root="${1:-$repo_root/datasets}/coco"
base_url="http://images.cocodataset.org"
mkdir -p "$root/images" "$root/downloads"
fetch() {  # fetch URL: download into downloads/, skipping finished downloads
  local name; name="$(basename "$1")"
  if [ ! -f "$root/downloads/$name" ]; then
    curl -L --fail --retry 3 -o "$root/downloads/$name.part" "$1"
    mv "$root/downloads/$name.part" "$root/downloads/$name"
  fi
}
fetch "$base_url/zips/train2017.zip"
fetch "$base_url/zips/val2017.zip"
fetch "$base_url/annotations/annotations_trainval2017.zip"
[ -d "$root/images/train2017" ] || unzip -q "$root/downloads/train2017.zip" -d "$root/images"
[ -d "$root/images/val2017" ] || unzip -q "$root/downloads/val2017.zip" -d "$root/images"
[ -d "$root/annotations" ] || unzip -q "$root/downloads/annotations_trainval2017.zip" -d "$root"
cd "$repo_root"
for split in train2017 val2017; do
  python -m yolov3.convert coco --json "$root/annotations/instances_$split.json" --out "$root/labels/$split" \
    --names "$root/classes.txt"
done
echo "COCO ready under $root (delete $root/downloads to save space)"
