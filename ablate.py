#!/usr/bin/env python
"""Run an ablation study described by a YAML spec: many train.py runs, then a report.

    python ablate.py cfg/ablation/objectness.yaml --dry-run       # validate, list runs and exact commands
    python ablate.py cfg/ablation/objectness.yaml                 # run (skips finished, resumes partial runs)
    python ablate.py cfg/ablation/objectness.yaml data=my.yaml train.epochs=50   # the study on your data
    python ablate.py cfg/ablation/focal_grid.yaml --jobs 2        # two runs at a time (CPU cores split)
    python ablate.py cfg/ablation/voc_yolov3.yaml --device 0,1    # one run per GPU
    python ablate.py cfg/ablation/objectness_bccd.yaml --variants bce,retinanet   # these arms' runs first
    python ablate.py cfg/ablation/objectness.yaml --report-only   # rebuild the report from the run folders
    python ablate.py cfg/ablation/objectness.yaml --reproduce bce__seed0   # rerun a finished run: same result?

The spec schema is documented at the top of yolov3/ablation.py and in each cfg/ablation/*.yaml. key=value after
the spec replaces the spec's base for every run (checked as the spec's keys are; a key a variant or the grid sets is
an error); the study remembers them, and a rerun with other ones is refused. Everything lands in <project>/<study>/:
spec.yaml, runs.json, dataset.json (your data's object : no-object cells), runs/<run>/ (train.py's folder with its
train.log, plus ablation.json and console.log: all the run printed), summary.csv, summary.md and the plots.
--reproduce RUN reruns one finished run with its seed and its recorded thread count into
<project>/<study>/reproductions/RUN/ and compares the final val mAP@.5:.95 (exit 0 within --tolerance, else 1);
the report lists every rerun. Exit status: 0 when every run finished, 1 when any failed, 2 for a bad spec.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

from yolov3.cli import CommandParser
from yolov3.ablation import (AblationError, check_paths, describe_plan, execute, load_spec, parse_devices,
                             plan_runs, stale_run_folders, study_paths, write_study_files)
from yolov3.ablation_plan import display_command
from yolov3.ablation_reproduce import TOLERANCE, compare, describe, plan_reproduction
from yolov3.ablation_runner import check_recorded_overrides, write_dataset_record
from yolov3.config import ConfigError
from yolov3.report import build_report
from yolov3.paths import resolve_path


def parse_args(argv=None) -> argparse.Namespace:
    parser = CommandParser(description=__doc__)  # defaults in --help; foreign flags get their nearest
    parser.add_argument("spec", help="ablation spec YAML (see cfg/ablation/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config keys replacing the spec's base for every run, e.g. data=my.yaml "
                             "train.epochs=50 (train.py --print-config lists the keys)")
    parser.add_argument("--dry-run", action="store_true", help="validate, list the runs and their commands, exit")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs in parallel (default: one per GPU listed in --device; 1 on a GPU picked "
                             "automatically; on CPU 2 (with 2+ cores), the cores split between them)")
    parser.add_argument("--device", default="", help="passed to train.py: '' (auto), cpu, or GPU indices such as "
                                                     "0,1 (then each parallel run gets one GPU)")
    parser.add_argument("--variants", default=None, metavar="NAME[,NAME...]",
                        help="run only these variants' runs now (still seed by seed); the others stay in the "
                             "study and a later run without the flag does them: the arms a tight budget keeps "
                             "first (default: every variant)")
    parser.add_argument("--name", help="study name (default: the spec's name, else its file stem)")
    parser.add_argument("--project", default="runs/ablate", help="parent folder of study folders")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report without running anything")
    parser.add_argument("--reproduce", metavar="RUN", default=None,
                        help="rerun this finished run (e.g. bce__seed0) with its seed and thread count into "
                             "<study>/reproductions/RUN/ and compare its final val mAP@.5:.95 with the original's")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help="--reproduce: the largest |difference| of final mAP@.5:.95 that counts as reproduced")
    parser.add_argument("--no-report", action="store_true", help="run without building the report afterwards")
    parser.add_argument("--verbose", action="store_true", help="echo train.py's output (with --jobs 1)")
    parser.add_argument("--train-script", default=None, help=argparse.SUPPRESS)  # tests inject a fake train.py
    return parser.parse_args(argv)


CPU_JOBS = 2  # 2 cores: two 1-thread runs finished a 4-run study 1.53-1.55x sooner than one 2-thread run
# (benchmarks/results/2026-12-01-ablate-jobs-xeon-amx.md)


def default_jobs(device: str, gpus: list) -> int:
    """Parallel runs when --jobs is not given: one per listed GPU; one for a GPU train.py finds itself (they would
    share it); on CPU, CPU_JOBS when the machine has that many cores (train.py processes scale worse in threads
    than in processes: the loop's data work and small ops leave cores idle)."""
    if gpus:
        return len(gpus)
    if str(device).strip().lower() != "cpu" and torch.cuda.is_available():
        return 1
    return max(1, min(CPU_JOBS, os.cpu_count() or 1))


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        study = load_spec(resolve_path(args.spec), name=args.name, overrides=args.overrides)  # or the shipped spec
        for note in study.notes:
            print(f"note: {note}")
        study_dir, _ = study_paths(args.project, study.name)
        if args.reproduce is not None and (args.report_only or args.jobs is not None):
            raise AblationError("--reproduce reruns one run on its own; it takes no --report-only or --jobs")
        if args.report_only:
            return report(study_dir, study.contrasts)
        if args.reproduce is not None:
            return reproduce(study, study_dir, args)
        gpus = parse_devices(args.device)
        jobs = args.jobs if args.jobs is not None else default_jobs(args.device, gpus)
        if jobs < 1:
            raise AblationError(f"--jobs must be at least 1, got {jobs}")
        check_recorded_overrides(study, study_dir)  # the key=value a study's runs were made with
        planned = plan_runs(study, study_dir, device=args.device, train_script=args.train_script)
        to_run = select_variants(planned, study, args.variants)
        missing = check_paths(study)
        stale = stale_run_folders(study, study_dir)
        if args.dry_run:
            print(describe_plan(study, planned))
            if len(to_run) < len(planned):
                print(f"--variants {args.variants}: this command runs only " +
                      (", ".join(p.run.run_name for p in to_run if p.action != "skip") or "nothing (all finished)"))
            print(f"study folder: {study_dir}")
            if gpus:
                print(f"each run sees one GPU of {gpus} through CUDA_VISIBLE_DEVICES (hence --device 0)")
            for line in missing:
                print(f"warning: {line}")
            for name in stale:
                print(f"note: {study_dir / 'runs' / name} is not a run of this spec; the report leaves it out")
            for item in planned:
                if item.note:
                    print(f"warning: {item.note}")
            return 0
        if missing:
            raise AblationError(f"{args.spec}: " + "; ".join(missing))
    except (AblationError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    for item in planned:
        if item.note:
            print(f"warning: {item.note}", file=sys.stderr)
    write_study_files(study, study_dir, planned)
    for entry in write_dataset_record(study, study_dir):
        if "problem" not in entry:
            print(f"data {entry['data']} at {entry['img_size']} px: object : no-object cells = 1 : "
                  f"{entry['noobject_per_object']:.0f} ({entry['boxes']} boxes in {entry['images']} train images)")
    counts = {a: sum(p.action == a for p in planned) for a in ("start", "resume", "skip")}
    print(f"study {study.name}: {len(planned)} runs in {study_dir} ({counts['skip']} finished, "
          f"{counts['resume']} to resume, {counts['start']} to start; jobs={jobs})")
    if len(to_run) < len(planned):
        left = sum(p.action != "skip" for p in planned) - sum(p.action != "skip" for p in to_run)
        print(f"--variants {args.variants}: {sum(p.action != 'skip' for p in to_run)} of them now; {left} other "
              "unfinished runs wait for a run without --variants")
    try:
        outcomes = execute(study, to_run, jobs=jobs, device=args.device, verbose=args.verbose)
    except KeyboardInterrupt:
        print("\ninterrupted; rerun the same command to resume (finished runs are kept, interrupted ones continue "
              "from their last.pt)", file=sys.stderr)
        return 130
    failed = [o for o in outcomes if o.status == "failed"]
    if not args.no_report:
        report(study_dir, study.contrasts)
    if failed:
        print(f"{len(failed)} of {len(outcomes)} runs failed: " + ", ".join(o.run_name for o in failed) +
              " (logs: <run>/console.log, <run>/train.log); rerun to retry them", file=sys.stderr)
        return 1
    return 0


def reproduce(study, study_dir, args) -> int:
    """--reproduce RUN: rerun it (or resume or reuse an earlier rerun) and compare; 0 when within --tolerance."""
    if args.variants is not None:
        raise AblationError("--reproduce reruns one run; it takes no --variants")
    if not args.tolerance >= 0:
        raise AblationError(f"--tolerance must be a number >= 0, got {args.tolerance}")
    check_recorded_overrides(study, study_dir)  # key=value other than the study's would rerun another run
    item, threads, warning = plan_reproduction(study, study_dir, args.reproduce, args.device, args.train_script)
    shown = f"{threads} CPU thread{'s' if threads != 1 else ''}, as the original ran" if threads else \
        "ablate.py's default threads (the original recorded none)"
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if args.dry_run:
        print(f"reproduce {args.reproduce} ({item.action}) into {item.run_dir} with {shown}")
        print(f"command: {display_command(item.command) if item.command else '(finished; compared again)'}")
        return 0
    if item.action != "skip":
        missing = check_paths(study)
        if missing:
            raise AblationError(f"{args.spec}: " + "; ".join(missing))
        print(f"reproduce {args.reproduce}: {item.action} in {item.run_dir} with {shown}")
        try:
            execute(study, [item], jobs=1, device=args.device, verbose=args.verbose, threads=threads)
        except KeyboardInterrupt:
            print("\ninterrupted; rerun the same command to resume the rerun from its last.pt", file=sys.stderr)
            return 130
    result = compare(study_dir, args.reproduce)
    print(describe(result, args.tolerance))
    if not args.no_report:
        report(study_dir, study.contrasts)
    return 0 if result.within(args.tolerance) else 1


def select_variants(planned: list, study, variants) -> list:
    """The planned runs of the variants named in --variants (comma-separated), or all of them when it is None."""
    if variants is None:
        return planned
    names = [name.strip() for name in variants.split(",") if name.strip()]
    unknown = [name for name in names if name not in study.variants]
    if not names or unknown:
        raise AblationError(f"--variants {variants!r}: {'no such variant ' + ', '.join(unknown) if unknown else 'empty'}"
                            f"; {study.spec_path} has {', '.join(study.variants)}")
    return [item for item in planned if item.run.variant in names]


def report(study_dir, contrasts=()) -> int:
    if not study_dir.is_dir():
        print(f"error: no study folder at {study_dir}; run the study first (or pass its --project/--name)",
              file=sys.stderr)
        return 2
    result = build_report(study_dir, contrasts=contrasts)
    print(f"report: {result.files['summary.md']}")
    for note in result.study.notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
