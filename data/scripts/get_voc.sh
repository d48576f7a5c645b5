#!/usr/bin/env bash
# Download Pascal VOC 2007 (trainval + test) and 2012 (trainval) and convert them to YOLO labels (for data/voc.yaml).
# Needs internet, curl and tar, ~4 GB. Never run by the tests.
# Usage: bash data/scripts/get_voc.sh [datasets_dir]   (default: datasets/ at the repository root)
set -euo pipefail
repo_root="$(cd "$(dirname "$0")/../.." && pwd)"
root="${1:-$repo_root/datasets}/VOC"
base_url="http://host.robots.ox.ac.uk/pascal/VOC"
mkdir -p "$root/downloads"
cd "$root/downloads"
fetch() {  # fetch URL -> file name, skipping finished downloads
  local name; name="$(basename "$1")"
  if [ ! -f "$name" ]; then curl -L --fail --retry 3 -o "$name.part" "$1"; mv "$name.part" "$name"; fi
  tar -xf "$name" -C "$root/downloads"
}
fetch "$base_url/voc2007/VOCtrainval_06-Nov-2007.tar"
fetch "$base_url/voc2007/VOCtest_06-Nov-2007.tar"
fetch "$base_url/voc2012/VOCtrainval_11-May-2012.tar"
cd "$repo_root"
devkit="$root/downloads/VOCdevkit"
for pair in 2007:train 2007:val 2007:test 2012:train 2012:val; do
  year="${pair%%:*}"; split="${pair##*:}"; set_name="$split$year"
  ids="$devkit/VOC$year/ImageSets/Main/$split.txt"
  mkdir -p "$root/images/$set_name"
  while read -r id; do
    cp -f "$devkit/VOC$year/JPEGImages/$id.jpg" "$root/images/$set_name/"
  done < "$ids"
  python -m yolov3.convert voc --annotations "$devkit/VOC$year/Annotations" --ids "$ids" \
    --out "$root/labels/$set_name" --names "$root/classes.txt"
done
echo "VOC ready under $root (delete $root/downloads to save space)"
