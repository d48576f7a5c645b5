"""Ablation studies from YAML: load and validate a spec, expand it into runs, run train.py for each, resume.

Spec schema (``cfg/ablation/*.yaml``)
-------------------------------------
Every config key below is a key of :class:`yolov3.config.Config`, written either dotted
(``loss.objectness.gamma: 2``) or nested (``loss: {objectness: {gamma: 2}}``) — the same namespace as train.py's
``key=value`` overrides. Paths (``cfg``, ``data``, ``hyp``, ``weights``) are relative to the folder ablate.py runs
from (the repository root), exactly as for train.py.

    name: objectness            # optional; default: the spec file's stem. Letters, digits, '_', '-', '.'
    description: ...            # optional free text, copied into the report
    base:                       # the training config shared by every run
      hyp: cfg/hyp/hyp.scratch.yaml # optional YAML of overrides applied first (train.py --hyp)
      cfg: cfg/yolov3-small.cfg #   any Config key, dotted or nested
      data: data/shapes.yaml
      train.epochs: 10
      loss: {objectness: {name: bce}}
    variants:                   # named arms; each a (possibly empty) mapping of config overrides on top of base
      bce: {}
      focal: {loss.objectness.name: focal}                #   (the grid below sets its gamma and alpha)
    grid:                       # optional cartesian sweep: dotted key -> list of values (null allowed where the
      loss.objectness.gamma: [0, 0.5, 1, 2, 5]          #   config field is optional, e.g. alpha: null = off)
      loss.objectness.alpha: [0.25, 0.5, 0.75, null]
    grid_variants: [focal]      # optional; the variants the grid multiplies. Default: every variant but the baseline.
    seeds: [0, 1, 2]            # non-empty list of unique non-negative integers; sets train.seed
    baseline: bce               # the variant every other arm is compared with (paired over seeds)
    contrasts:                  # optional: [arm, reference] pairs of two other arms, compared the same way in the
      - [focal__gamma=2_alpha=0.25, focal__gamma=0_alpha=0.25]   # report (secondary, not corrected)

Resolution of one run's config: defaults <- ``base.hyp`` <- ``base`` (with ablate.py's ``key=value`` arguments
replacing its keys) <- the variant <- the grid point <- the seed.
The grid is applied *on top of* each variant in ``grid_variants``: a gridded variant becomes one arm per grid point
(``focal__gamma=2_alpha=0.25``); the other variants stay single arms. A grid key may not also be set by a variant it
multiplies (the variant's value would be silently dead), the baseline may not be gridded (comparisons need one
reference arm), ``train.seed`` is set only through ``seeds``, and no two arms may resolve to the same config (the
comparison would be meaningless).

Ctrl-C while runs are going forwards one SIGINT to each train.py (they run in sessions of their own, so the terminal
does not signal them twice) and waits for them to save last.pt and exit; a second Ctrl-C kills them.

Runs and folders
----------------
Run name: ``<variant>[__<k1>=<v1>_<k2>=<v2>...]__seed<seed>``, where ``k`` is the shortest unique trailing part of
each grid key (``gamma``; ``objectness.gamma`` when ``loss.cls.gamma`` is swept too) and values are written
``format(v, 'g')`` for numbers, ``none`` for null, lower-case booleans; characters outside ``[A-Za-z0-9._=-]`` become
``-``. The arm is the run name without ``__seed<seed>``.

    runs/ablate/<study>/spec.yaml          copy of the spec
    runs/ablate/<study>/runs.json          the resolved list of runs (names, identities, overrides, commands) and
                                           the key=value overrides of the command line
    runs/ablate/<study>/runs/<run>/        train.py's run folder (--project .../runs --name <run> --exist-ok), plus
        ablation.json                      identity written before launch: study, baseline, index, variant, arm,
                                           grid, seed, overrides, command, and after it ends: exit_code
        train.log                          train.py's own log of the run (its lines, no progress bars)
        console.log                        everything the run printed, progress bars included (appended to on resume)
    runs/ablate/<study>/dataset.json       the object : no-object cell ratio of the data per (data, cfg, img_size)
    runs/ablate/<study>/reproductions/<run>/   a finished run rerun with its seed and threads (--reproduce), a
                                           run folder like the others; the report compares it, never pools it

A rerun skips finished runs (a summary.json with ``"status": "finished"`` and config.yaml equal to the expected
resolved config, ignoring keys in :data:`IGNORED_CONFIG_KEYS`), resumes partial ones (last.pt without such a
summary: ``train.py --resume``; a damaged summary.json is named and does not count) and starts missing ones; a
finished or partial run whose config.yaml differs is an error naming the keys (the spec changed: delete those run
folders or use another --name).

The code
--------
Three modules, one per step, re-exported here (the names ablate.py and the tests use):
:mod:`yolov3.ablation_spec` (load and validate a spec, expand it into runs), :mod:`yolov3.ablation_plan` (per
run: skip, resume or start, and the exact train.py command) and :mod:`yolov3.ablation_runner` (run the train.py
processes, record the study folder, handle Ctrl-C); :mod:`yolov3.ablation_reproduce` reruns one finished run and
compares it with its original. The report is :mod:`yolov3.report`.
"""
from __future__ import annotations

from yolov3.ablation_plan import (DEFAULT_TRAIN_SCRIPT, FLAG_KEYS, PlannedRun, describe_plan, display_command,
                                  parse_devices, plan_runs, stale_run_folders, study_paths, train_command, yaml_value)
from yolov3.ablation_runner import (RunOutcome, child_environment, execute, interrupt_and_wait, run_record,
                                    write_study_files)
from yolov3.ablation_spec import (IGNORED_CONFIG_KEYS, PATH_CONFIG_KEYS, RUN_NAME_SEPARATOR, SPEC_KEYS, AblationError,
                                  RunSpec, Study, apply_flat, arm_of, check_config_key, check_paths,
                                  config_differences, expand_runs, flatten_overrides, format_value, grid_labels,
                                  load_spec, make_run_name)

__all__ = ["DEFAULT_TRAIN_SCRIPT", "FLAG_KEYS", "IGNORED_CONFIG_KEYS", "PATH_CONFIG_KEYS", "RUN_NAME_SEPARATOR",
           "SPEC_KEYS", "AblationError", "PlannedRun", "RunOutcome", "RunSpec", "Study", "apply_flat", "arm_of",
           "check_config_key", "check_paths", "child_environment", "config_differences", "describe_plan",
           "display_command", "execute", "expand_runs", "flatten_overrides", "format_value", "grid_labels",
           "interrupt_and_wait", "load_spec", "make_run_name", "parse_devices", "plan_runs", "run_record",
           "stale_run_folders", "study_paths", "train_command", "write_study_files", "yaml_value"]
