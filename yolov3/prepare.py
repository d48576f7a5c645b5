"""Build a dataset whose data YAML has a ``download:`` mapping, before training (or offline, from a local copy).

    python -m yolov3.prepare data/bccd.yaml                                   # fetch download.url (needs internet)
    python -m yolov3.prepare data/bccd.yaml --source ~/Downloads/BCCD_Dataset-master.zip   # a local archive or folder

train.py, val.py and detect.py --data do the same on their own when the dataset is missing; this command exists
to do it by hand, from a copy you already have, and to say whether a dataset is complete.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from yolov3.data_yaml import DataError, load_data_yaml
from yolov3.fetch import ENV_SOURCE, FetchError, ensure_dataset, parse_download_spec


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yolov3.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("data", help="data YAML with a download: mapping, e.g. data/bccd.yaml")
    parser.add_argument("--source", default=None,
                        help=f"a local archive (.zip, .tar.gz) or folder, or a URL, instead of download.url "
                             f"(also: ${ENV_SOURCE})")
    args = parser.parse_args(argv)
    try:
        data = load_data_yaml(args.data, fetch=False)  # checks the download: mapping, builds nothing
        if parse_download_spec(data["download"], data["yaml"]) is None:
            raise DataError(f"{data['yaml']}: has no download: mapping to build its dataset from")
        if not ensure_dataset(data, data["download"], args.source):
            print(f"{data['path']}: complete (every split of {data['yaml']} is there; remove it to build it again)")
    except (DataError, FetchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
