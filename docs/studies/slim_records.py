"""Slim the committed per-run objectness records: docs/studies/<study>/runs/<run>/objectness_losses.npz.

The studies committed before 2026-12-06 kept 250,000 negatives per run (about 1.3 MB a run, 121 MB in all). This
rewrites each such file in place, keeping

- every positive: 'pos' and 'pos_logit' unchanged, float32;
- a seeded uniform sample of 20,000 negatives (``numpy.random.default_rng(0)``), the same indices for 'neg' and
  'neg_logit', which are aligned element by element;

in the form ``yolov3.runs.objectness_record`` gives every new run's record: the negatives float16 and ordered by
logit (since 2026-12-06, issue 27: a sorted float16 array deflates to about half of a shuffled one; the values and their
pairing are kept, and every report reads them sorted), with ``np.savez_compressed``. 20,000 is what
``yolov3.evaluate.objectness_samples`` keeps for new runs. A file already in that form is left as it is, so a
second pass changes nothing. Then rebuild each study's report with
``python ablate.py cfg/ablation/<study>.yaml --project docs/studies --report-only``: it comes out byte for byte
as before unless negatives were dropped (the order of the negatives is not read, and 'neg', the run's own loss, is
read only for runs saved without logits, where it was float16 already).

    python docs/studies/slim_records.py                 # every study folder here
    python docs/studies/slim_records.py docs/studies/objectness docs/studies/box_loss
"""
import argparse
import os
import sys
from pathlib import Path

import numpy as np

STUDIES = Path(__file__).resolve().parent
sys.path.insert(0, str(STUDIES.parents[1]))  # run as a script from anywhere: the repository's yolov3 package
from yolov3.runs import is_objectness_record, objectness_record  # noqa: E402

NEGATIVES = 20_000
SEED = 0
RECORD = "objectness_losses.npz"


def slim(arrays: dict, negatives: int = NEGATIVES, seed: int = SEED) -> dict:
    """The slim record of one run's arrays ('pos', 'neg', 'pos_logit', 'neg_logit'; any other key kept as is)."""
    out = dict(arrays)
    neg_keys = [key for key in ("neg", "neg_logit") if key in out]
    sizes = {out[key].size for key in neg_keys}
    if len(sizes) > 1:
        raise ValueError(f"'neg' and 'neg_logit' differ in length ({sizes}): they must align element by element")
    size = sizes.pop() if sizes else 0
    if size > negatives:
        keep = np.sort(np.random.default_rng(seed).choice(size, size=negatives, replace=False))
        for key in neg_keys:
            out[key] = np.asarray(out[key]).ravel()[keep]
    return objectness_record(out)


def is_slim(arrays: dict, negatives: int = NEGATIVES) -> bool:
    return (all(arrays[key].size <= negatives for key in ("neg", "neg_logit") if key in arrays)
            and is_objectness_record(arrays))


def rewrite(path: Path) -> tuple:
    """Slim one file in place (atomically); (bytes before, bytes after, negatives before, rewritten or not)."""
    before = path.stat().st_size
    with np.load(path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    n_neg = arrays["neg"].size if "neg" in arrays else 0
    if is_slim(arrays):
        return before, before, n_neg, False
    slimmed = slim(arrays)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **slimmed)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return before, path.stat().st_size, n_neg, True


def records(folders: list) -> list:
    if not folders:
        folders = sorted(p for p in STUDIES.iterdir() if p.is_dir())
    return sorted(path for folder in folders for path in Path(folder).glob(f"runs/*/{RECORD}"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, help="study folders (default: every one here)")
    args = parser.parse_args(argv)
    total_before = total_after = 0
    for path in records(args.folders):
        before, after, n_neg, changed = rewrite(path)
        total_before += before
        total_after += after
        print(f"{path}: {n_neg:,} negatives, {before / 1e3:,.0f} kB -> {after / 1e3:,.0f} kB"
              + ("" if changed else " (already slim)"))
    print(f"all: {total_before / 1e6:.1f} MB -> {total_after / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
