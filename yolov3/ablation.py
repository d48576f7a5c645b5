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
      hyp: cfg/hyp.scratch.yaml #   optional YAML of overrides applied first (train.py --hyp)
      cfg: cfg/yolov3-small.cfg #   any Config key, dotted or nested
      data: data/shapes.yaml
      train.epochs: 10
      loss: {objectness: {name: bce}}
    variants:                   # named arms; each a (possibly empty) mapping of config overrides on top of base
      bce: {}
      focal: {loss.objectness.name: focal, loss.objectness.gamma: 2, loss.objectness.alpha: 0.25}
    grid:                       # optional cartesian sweep: dotted key -> list of values (null allowed where the
      loss.objectness.gamma: [0, 0.5, 1, 2, 5]          #   config field is optional, e.g. alpha: null = off)
      loss.objectness.alpha: [0.25, 0.5, 0.75, null]
    grid_variants: [focal]      # optional; the variants the grid multiplies. Default: every variant but the baseline.
    seeds: [0, 1, 2]            # non-empty list of unique non-negative integers; sets train.seed
    baseline: bce               # the variant every other arm is compared with (paired over seeds)

Resolution of one run's config: defaults <- ``base.hyp`` <- ``base`` <- the variant <- the grid point <- the seed.
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
    runs/ablate/<study>/runs.json          the resolved list of runs (names, identities, overrides, commands)
    runs/ablate/<study>/runs/<run>/        train.py's run folder (--project .../runs --name <run> --exist-ok), plus
        ablation.json                      identity written before launch: study, baseline, index, variant, arm,
                                           grid, seed, overrides, command, and after it ends: exit_code
        train.log                          the run's stdout and stderr (appended to on resume)

A rerun skips finished runs (a summary.json with ``"status": "finished"`` and config.yaml equal to the expected
resolved config, ignoring keys in :data:`IGNORED_CONFIG_KEYS`), resumes partial ones (last.pt without such a
summary: ``train.py --resume``; a damaged summary.json is named and does not count) and starts missing ones; a
finished or partial run whose config.yaml differs is an error naming the keys (the spec changed: delete those run
folders or use another --name).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import yaml

from yolov3 import config as config_lib
from yolov3 import paths
from yolov3.config import Config, ConfigError

ROOT = paths.ROOT  # the checkout, or its copy inside the installed package
DEFAULT_TRAIN_SCRIPT = ROOT / "train.py"

SPEC_KEYS = ("name", "description", "base", "variants", "grid", "grid_variants", "seeds", "baseline")
BASE_ONLY_KEYS = ("hyp",)  # keys of `base` that are not Config keys
# resolved config keys passed to train.py as flags (always, so train.py's own flag defaults never matter)
FLAG_KEYS = {"cfg": "--cfg", "data": "--data", "train.epochs": "--epochs", "train.batch_size": "--batch-size",
             "train.img_size": "--img-size", "train.seed": "--seed", "train.workers": "--workers"}
# keys that do not change what a run computes: a difference here never blocks skipping/resuming a run
IGNORED_CONFIG_KEYS = ("train.workers", "train.cache")
PATH_CONFIG_KEYS = ("cfg", "data", "weights")  # compared as resolved paths (train.py may store them differently)
RUN_NAME_SEPARATOR = "__"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._=-]")


class AblationError(ValueError):
    """A problem with an ablation spec or study folder; the message names the file and key path."""


# --------------------------------------------------------------------------------------------------------------------
# Data types
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    """One training run of a study."""

    index: int  # position in the study's run order (variants in spec order, then grid points, then seeds)
    run_name: str  # folder name, e.g. focal__gamma=2_alpha=0.25__seed0
    variant: str
    arm: str  # run_name without the seed part: the unit the report aggregates over seeds
    grid: dict  # dotted grid key -> value for this run ({} when the variant is not gridded)
    seed: int
    overrides: dict  # dotted key -> value: base, then variant, then grid point (train.seed excluded)
    config: Config = field(compare=False, repr=False)  # the expected resolved config


@dataclass
class Study:
    """A validated ablation spec, expanded into runs."""

    name: str
    spec_path: Path
    spec_text: str
    description: str
    hyp: Optional[str]
    base: dict  # dotted key -> value
    variants: dict  # variant -> {dotted key: value}, in spec order
    grid: dict  # dotted key -> list of values
    grid_variants: list
    seeds: list
    baseline: str
    runs: list = field(default_factory=list)  # list[RunSpec]


@dataclass
class PlannedRun:
    """A run and what to do with it now: 'skip' (finished), 'resume' (last.pt, no summary.json) or 'start'."""

    run: RunSpec
    run_dir: Path
    action: str
    command: list  # argv (train.py invocation), empty for 'skip'
    note: str = ""  # why a run folder is not what it seems (e.g. a damaged summary.json), for the user


@dataclass
class RunOutcome:
    run_name: str
    action: str
    status: str  # 'finished', 'skipped', 'failed'
    exit_code: Optional[int]
    seconds: float
    message: str = ""


# --------------------------------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------------------------------
def _section_fields(obj: Any) -> list:
    return [f.name for f in dataclasses.fields(obj)]


def flatten_overrides(mapping: Any, where: str, source: str) -> dict:
    """Nested and/or dotted override mapping -> {dotted key: value}, keys checked against Config.

    ``where`` is the key path of ``mapping`` inside the spec (``variants.focal``) and ``source`` the spec file;
    errors read ``<source>: <where>.<key path>: <problem>``.
    """
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise AblationError(f"{source}: {where}: expected a mapping of config keys, got {mapping!r}")
    flat: dict = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
                raise AblationError(f"{source}: {where}.{prefix}{key}: keys must be non-empty dotted names")
            dotted = prefix + key
            if isinstance(value, dict):
                walk(value, dotted + ".")
                continue
            if dotted in flat:
                raise AblationError(f"{source}: {where}.{dotted}: set twice (once dotted, once nested)")
            flat[dotted] = value

    walk(mapping, "")
    for dotted in flat:
        check_config_key(dotted, f"{source}: {where}.{dotted}")
    return flat


def check_config_key(dotted: str, label: str) -> None:
    """Raise AblationError (prefixed by ``label``) unless ``dotted`` names a leaf field of Config."""
    obj: Any = Config()
    walked = []
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(obj):
            raise AblationError(f"{label}: unknown key '{part}' ('{'.'.join(walked)}' is a value, not a section)")
        names = _section_fields(obj)
        if part not in names:
            here = "'" + ".".join(walked) + "'" if walked else "the top level"
            hint = ""
            short = {"epochs": "train.epochs", "batch_size": "train.batch_size", "img_size": "train.img_size",
                     "workers": "train.workers", "seed": "train.seed"}
            if not walked and part in short:
                hint = f"; did you mean '{short[part]}'?"
            raise AblationError(f"{label}: unknown key '{part}' (valid keys under {here}: {', '.join(names)}){hint}")
        walked.append(part)
        obj = getattr(obj, part)
    if dataclasses.is_dataclass(obj):
        raise AblationError(f"{label}: '{dotted}' is a section; give its keys ({', '.join(_section_fields(obj))})")


def apply_flat(cfg: Config, flat: dict, where: str, source: str) -> Config:
    """Apply {dotted key: value} to ``cfg``, type-checked; errors name ``<source>: <where>.<key>``."""
    for dotted, value in flat.items():
        try:
            cfg = config_lib.merge_dict(cfg, config_lib.nest(dotted.split("."), value), f"{source}: {where}.{dotted}")
        except ConfigError as exc:
            raise AblationError(str(exc)) from None
    return cfg


def _check_loss_names(cfg: Config, label: str) -> None:
    """Fail early on an unknown objectness/class loss name (train.py would only fail once the run starts)."""
    try:
        from yolov3.loss import OBJECTNESS_LOSSES
    except Exception:  # the loss module is optional for validation; train.py checks again
        return
    for key in ("loss.objectness.name", "loss.cls.name"):
        name = config_lib.get_dotted(cfg, key)
        if name not in OBJECTNESS_LOSSES:
            raise AblationError(f"{label}: '{key}' is {name!r}; choices: {', '.join(sorted(OBJECTNESS_LOSSES))}")
    try:  # value ranges and the other choices, as train.py will check them
        config_lib.validate(cfg, source=label)
    except ConfigError as exc:
        raise AblationError(str(exc)) from None


def _check_name(value: Any, label: str) -> str:
    if not isinstance(value, str) or not _SAFE_NAME.match(value) or RUN_NAME_SEPARATOR in value:
        raise AblationError(f"{label}: {value!r} is not a valid name (letters, digits, '_', '-', '.'; starting "
                            f"with a letter or digit; no '{RUN_NAME_SEPARATOR}')")
    return value


def format_value(value: Any) -> str:
    """A grid value as it appears in run names: 2.0 -> '2', 0.25 -> '0.25', None -> 'none', True -> 'true'."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return format(value, "g")
    if isinstance(value, (list, tuple)):
        return "-".join(format_value(v) for v in value)
    return str(value)


def grid_labels(grid_keys: Sequence[str]) -> dict:
    """Shortest unique trailing part of each dotted grid key: loss.objectness.gamma -> 'gamma' (or
    'objectness-gamma' when loss.cls.gamma is swept too). Dots become '-' so labels stay filesystem-safe."""
    labels = {}
    for key in grid_keys:
        parts = key.split(".")
        for depth in range(1, len(parts) + 1):
            label = ".".join(parts[-depth:])
            clashes = [k for k in grid_keys if k != key and (k == label or k.endswith("." + label))]
            if not clashes:
                break
        labels[key] = label.replace(".", "-")
    return labels


def make_run_name(variant: str, grid_point: dict, seed: int, labels: Optional[dict] = None) -> str:
    """Deterministic, filesystem-safe run name: ``<variant>[__gamma=2_alpha=0.25]__seed<seed>``."""
    labels = labels or grid_labels(list(grid_point))
    name = variant
    if grid_point:
        name += RUN_NAME_SEPARATOR + "_".join(f"{labels[k]}={format_value(v)}" for k, v in grid_point.items())
    name += f"{RUN_NAME_SEPARATOR}seed{seed}"
    return _UNSAFE_CHARS.sub("-", name)


def arm_of(run_name: str) -> str:
    """The arm (variant + grid point) of a run name: strips the trailing ``__seed<k>``."""
    return re.sub(rf"{RUN_NAME_SEPARATOR}seed\d+$", "", run_name)


def load_spec(path: Union[str, Path], name: Optional[str] = None) -> Study:
    """Read, validate and expand an ablation spec; every error names ``<path>: <key path>``.

    ``name`` overrides the spec's ``name`` (ablate.py --name). Nothing is run or written.
    """
    path = Path(path)
    src = str(path)
    spec = config_lib.read_yaml(path, error=AblationError, what="ablation spec")
    spec_text = path.read_text(encoding="utf-8")  # copied verbatim into the study folder (comments included)
    if not isinstance(spec, dict):
        raise AblationError(f"{src}: expected a mapping with keys {', '.join(SPEC_KEYS)}")
    unknown = [k for k in spec if k not in SPEC_KEYS]
    if unknown:
        raise AblationError(f"{src}: {unknown[0]}: unknown key (valid top-level keys: {', '.join(SPEC_KEYS)})")

    study_name = _check_name(name if name is not None else spec.get("name", path.stem), f"{src}: name")
    description = spec.get("description") or ""
    if not isinstance(description, str):
        raise AblationError(f"{src}: description: expected text, got {description!r}")

    # ---- base ----
    base_raw = spec.get("base") or {}
    if not isinstance(base_raw, dict):
        raise AblationError(f"{src}: base: expected a mapping of config keys, got {base_raw!r}")
    hyp = base_raw.get("hyp")
    if hyp is not None and not isinstance(hyp, str):
        raise AblationError(f"{src}: base.hyp: expected a path to a YAML file, got {hyp!r}")
    base = flatten_overrides({k: v for k, v in base_raw.items() if k not in BASE_ONLY_KEYS}, "base", src)
    try:
        base_cfg = config_lib.load_config(hyp) if hyp else Config()
    except ConfigError as exc:
        raise AblationError(f"{src}: base.hyp: {exc}") from None
    base_cfg = apply_flat(base_cfg, base, "base", src)

    # ---- variants ----
    variants_raw = spec.get("variants")
    if not isinstance(variants_raw, dict) or not variants_raw:
        raise AblationError(f"{src}: variants: expected a non-empty mapping of variant name -> overrides")
    variants = {}
    for vname, overrides in variants_raw.items():
        _check_name(vname, f"{src}: variants.{vname}")
        variants[vname] = flatten_overrides(overrides, f"variants.{vname}", src)

    # ---- baseline ----
    baseline = spec.get("baseline")
    if baseline is None:
        raise AblationError(f"{src}: baseline: missing; name the variant to compare against "
                            f"(one of: {', '.join(variants)})")
    if baseline not in variants:
        raise AblationError(f"{src}: baseline: {baseline!r} is not a variant (variants: {', '.join(variants)})")

    # ---- seeds ----
    seeds = spec.get("seeds")
    if not isinstance(seeds, list) or not seeds:
        raise AblationError(f"{src}: seeds: expected a non-empty list of integers, got {seeds!r}")
    for i, seed in enumerate(seeds):
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise AblationError(f"{src}: seeds[{i}]: expected a non-negative integer, got {seed!r}")
    duplicates = sorted({s for s in seeds if seeds.count(s) > 1})
    if duplicates:
        raise AblationError(f"{src}: seeds: duplicate seeds {duplicates} (each seed pairs runs across variants)")

    # ---- grid ----
    grid_raw = spec.get("grid") or {}
    if not isinstance(grid_raw, dict):
        raise AblationError(f"{src}: grid: expected a mapping of dotted key -> list of values, got {grid_raw!r}")
    grid = {}
    for key, values in grid_raw.items():
        if not isinstance(key, str):
            raise AblationError(f"{src}: grid.{key}: keys must be dotted config names")
        check_config_key(key, f"{src}: grid.{key}")
        if not isinstance(values, list) or not values:
            raise AblationError(f"{src}: grid.{key}: expected a non-empty list of values, got {values!r}")
        for i, value in enumerate(values):
            apply_flat(base_cfg, {key: value}, f"grid.{key}[{i}]", src)  # type check only
        shown = [format_value(v) for v in values]
        if len(set(shown)) != len(shown):
            raise AblationError(f"{src}: grid.{key}: duplicate values {values}")
        grid[key] = values
    grid_variants = spec.get("grid_variants")
    if grid_variants is None:
        grid_variants = [v for v in variants if v != baseline] if grid else []
    if not isinstance(grid_variants, list):
        raise AblationError(f"{src}: grid_variants: expected a list of variant names, got {grid_variants!r}")
    for i, vname in enumerate(grid_variants):
        if vname not in variants:
            raise AblationError(f"{src}: grid_variants[{i}]: {vname!r} is not a variant "
                                f"(variants: {', '.join(variants)})")
    if grid_variants and not grid:
        raise AblationError(f"{src}: grid_variants: given but there is no grid")
    if grid and not grid_variants:
        raise AblationError(f"{src}: grid: no variant to apply it to (list them in grid_variants; "
                            f"the baseline cannot be gridded)")
    if baseline in grid_variants:
        raise AblationError(f"{src}: grid_variants: the baseline {baseline!r} cannot be gridded "
                            f"(each arm is compared with one baseline arm)")
    for vname in grid_variants:
        for key in grid:
            if key in variants[vname]:
                raise AblationError(f"{src}: variants.{vname}.{key}: also swept by grid.{key}; remove one")

    # ---- train.seed is owned by `seeds` ----
    for where, flat in [("base", base)] + [(f"variants.{v}", o) for v, o in variants.items()]:
        if "train.seed" in flat:
            raise AblationError(f"{src}: {where}.train.seed: set seeds with the top-level 'seeds' list")
    if "train.seed" in grid:
        raise AblationError(f"{src}: grid.train.seed: set seeds with the top-level 'seeds' list")

    study = Study(name=study_name, spec_path=path, spec_text=spec_text, description=description.strip(), hyp=hyp,
                  base=base, variants=variants, grid=grid, grid_variants=list(grid_variants), seeds=list(seeds),
                  baseline=baseline)
    study.runs = expand_runs(study, base_cfg)
    return study


def expand_runs(study: Study, base_cfg: Optional[Config] = None) -> list:
    """Variants (spec order) x grid points (for gridded variants; first key varies slowest) x seeds -> RunSpecs."""
    src = str(study.spec_path)
    if base_cfg is None:
        base_cfg = config_lib.load_config(study.hyp) if study.hyp else Config()
        base_cfg = apply_flat(base_cfg, study.base, "base", src)
    labels = grid_labels(list(study.grid))
    grid_points = [dict(zip(study.grid, combo)) for combo in itertools.product(*study.grid.values())]
    runs: list = []
    seen: dict = {}
    arms: list = []  # (where, resolved config) per arm, to find arms that would train the same thing
    for vname, voverrides in study.variants.items():
        variant_cfg = apply_flat(base_cfg, voverrides, f"variants.{vname}", src)
        points = grid_points if vname in study.grid_variants else [{}]
        for point in points:
            where = f"variants.{vname}" + (f" with grid {point}" if point else "")
            point_cfg = apply_flat(variant_cfg, point, "grid", src)
            _check_loss_names(point_cfg, f"{src}: {where}")
            arms.append((where, point_cfg))
            for seed in study.seeds:
                cfg = config_lib.merge_dict(point_cfg, {"train": {"seed": seed}}, f"{src}: seeds")
                name = make_run_name(vname, point, seed, labels)
                if name in seen:
                    raise AblationError(f"{src}: runs '{seen[name]}' and {where} seed {seed} both get the run "
                                        f"name {name!r}; make the values distinguishable")
                seen[name] = f"{where} seed {seed}"
                merged = {**study.base, **voverrides, **point}
                runs.append(RunSpec(index=len(runs), run_name=name, variant=vname, arm=arm_of(name),
                                    grid=dict(point), seed=seed, overrides=merged, config=cfg))
    _check_distinct_arms(arms, src)
    return runs


def _check_distinct_arms(arms: Sequence[tuple], src: str) -> None:
    """Two arms resolving to the same training config (``loss.objectness.name: bce`` spelled out next to a baseline
    that has it by default, or one override set given twice) would compare a config with itself: an error naming
    both. Keys that do not change results (:data:`IGNORED_CONFIG_KEYS`) are left out of the comparison."""
    flat = []
    for where, cfg in arms:
        values = _flatten_dict(config_lib.to_dict(cfg))
        flat.append((where, {k: v for k, v in values.items() if k not in IGNORED_CONFIG_KEYS}))
    for i, (where_a, a) in enumerate(flat):
        for where_b, b in flat[i + 1:]:
            if a.keys() == b.keys() and all(_same_value(key, a[key], b[key]) for key in a):
                raise AblationError(f"{src}: {where_a} and {where_b} resolve to the same training config, so "
                                    "comparing them would only measure seed noise; make them differ or remove one")


def check_paths(study: Study) -> list:
    """Files the runs need that do not exist: a list of '<key> of <runs>: <path>' lines (empty when all exist)."""
    missing: dict = {}
    for run in study.runs:
        for key in PATH_CONFIG_KEYS:
            value = config_lib.get_dotted(run.config, key)
            if value and not paths.resolve_path(value).exists():  # train.py falls back to the shipped file
                missing.setdefault((key, value), []).append(run.run_name)
    if study.hyp and not Path(study.hyp).is_file():
        missing.setdefault(("hyp", study.hyp), []).append("all runs")
    return [f"{key} = {value} (needed by {len(names)} run(s), e.g. {names[0]}): file not found"
            for (key, value), names in missing.items()]


# --------------------------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------------------------
def yaml_value(value: Any) -> str:
    """A value as train.py's ``key=value`` parser (yaml.safe_load) reads it back: None -> 'null', 'a b' -> 'a b'."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")]
    if text.endswith("..."):
        text = text[:-3].strip()
    return text


def train_command(run: RunSpec, runs_dir: Union[str, Path], hyp: Optional[str] = None, device: str = "",
                  train_script: Union[str, Path, None] = None, resume: bool = False) -> list:
    """The train.py argv for ``run``: the flag keys (:data:`FLAG_KEYS`) from the resolved config, then every other
    spec override as ``key=value``. A resume passes only ``--resume <run>/last.pt`` (train.py takes the config
    from the checkpoint), plus --workers and --device."""
    script = str(train_script or DEFAULT_TRAIN_SCRIPT)
    cmd = [sys.executable, script]
    run_dir = Path(runs_dir) / run.run_name
    if resume:
        cmd += ["--resume", str(run_dir / "last.pt"), "--workers", str(run.config.train.workers)]
        return cmd + (["--device", device] if device else [])
    for key, flag in FLAG_KEYS.items():
        cmd += [flag, str(config_lib.get_dotted(run.config, key))]
    if hyp:
        cmd += ["--hyp", hyp]
    cmd += ["--project", str(runs_dir), "--name", run.run_name, "--exist-ok"]
    if device:
        cmd += ["--device", device]
    cmd += [f"{key}={yaml_value(value)}" for key, value in run.overrides.items() if key not in FLAG_KEYS]
    return cmd


def display_command(cmd: Sequence[str]) -> str:
    """``cmd`` as a shell line, with the interpreter shown as 'python' and the script relative to the cwd."""
    shown = list(cmd)
    if shown and shown[0] == sys.executable:
        shown[0] = "python"
    if len(shown) > 1:
        try:
            shown[1] = os.path.relpath(shown[1])
        except ValueError:
            pass
    return shlex.join(shown)


# --------------------------------------------------------------------------------------------------------------------
# Planning (skip / resume / start)
# --------------------------------------------------------------------------------------------------------------------
def _flatten_dict(data: Any, prefix: str = "") -> dict:
    out = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(_flatten_dict(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def _same_value(key: str, a: Any, b: Any) -> bool:
    if key in PATH_CONFIG_KEYS and isinstance(a, str) and isinstance(b, str) and a and b:
        return Path(a).resolve() == Path(b).resolve()
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value("", x, y) for x, y in zip(a, b))
    return a == b


def config_differences(expected: Config, saved: dict) -> list:
    """'key: run has X, spec gives Y' for every key (except IGNORED_CONFIG_KEYS) where a saved config.yaml
    differs from the expected resolved config."""
    want = _flatten_dict(config_lib.to_dict(expected))
    have = _flatten_dict(saved or {})
    diffs = []
    for key in sorted(set(want) | set(have)):
        if key in IGNORED_CONFIG_KEYS:
            continue
        if key not in have:
            diffs.append(f"{key}: missing from the run, spec gives {want[key]!r}")
        elif key not in want:
            diffs.append(f"{key}: run has {have[key]!r}, not a key of the current config")
        elif not _same_value(key, want[key], have[key]):
            diffs.append(f"{key}: run has {have[key]!r}, spec gives {want[key]!r}")
    return diffs


def study_paths(project: Union[str, Path], study_name: str) -> tuple:
    """(study_dir, runs_dir): runs/ablate/<study>/ and runs/ablate/<study>/runs/."""
    study_dir = Path(project) / study_name
    return study_dir, study_dir / "runs"


def plan_runs(study: Study, study_dir: Union[str, Path], device: str = "",
              train_script: Union[str, Path, None] = None) -> list:
    """Decide per run: 'skip' (summary.json, config matches), 'resume' (last.pt, no summary.json) or 'start'.

    Raises AblationError listing every run whose saved config.yaml no longer matches the spec.
    """
    runs_dir = Path(study_dir) / "runs"
    device = "0" if parse_devices(device) else device  # with GPUs listed, each child sees one, as cuda:0
    planned, conflicts = [], []
    for run in study.runs:
        run_dir = runs_dir / run.run_name
        summary, problem = read_summary(run_dir)
        finished = summary is not None
        partial = (run_dir / "last.pt").is_file()
        if finished or partial:
            config_path = run_dir / "config.yaml"
            if config_path.is_file():
                try:
                    saved = yaml.safe_load(config_path.read_text(encoding="utf-8"))
                except (OSError, ValueError, yaml.YAMLError) as exc:  # UnicodeDecodeError is a ValueError
                    raise AblationError(f"{config_path}: unreadable or invalid YAML: {exc}") from None
                diffs = config_differences(run.config, saved)
                if diffs:
                    conflicts.append(f"  {run_dir}: " + "; ".join(diffs[:5]) +
                                     (f"; ... ({len(diffs) - 5} more)" if len(diffs) > 5 else ""))
            elif finished:
                conflicts.append(f"  {run_dir}: has summary.json but no config.yaml to compare with the spec")
        if finished:
            action, cmd = "skip", []
        elif partial:
            action = "resume"
            cmd = train_command(run, runs_dir, study.hyp, device, train_script, resume=True)
        else:
            action = "start"
            cmd = train_command(run, runs_dir, study.hyp, device, train_script)
        done = {"resume": "resumed from its last.pt", "start": "started again"}.get(action, "")
        note = f"{problem}; the run counts as not finished and is {done}" if problem else ""
        planned.append(PlannedRun(run=run, run_dir=run_dir, action=action, command=cmd, note=note))
    if conflicts:
        raise AblationError(f"{study.spec_path}: the spec changed since these runs were made (their config.yaml "
                            "differs from what the spec now resolves to):\n" + "\n".join(conflicts) +
                            "\ndelete those run folders to redo them, or run the changed spec under another "
                            "--name")
    return planned


def read_summary(run_dir: Union[str, Path]) -> tuple:
    """``(summary, problem)`` for ``<run_dir>/summary.json``, which train.py writes when a run finished:
    ``(dict, None)`` for a finished run's summary, ``(None, None)`` when there is none, and ``(None, problem)``
    (naming the file) when it is there but is no finished run's summary — truncated, not JSON, not a mapping, or
    without ``"status": "finished"``. Such a run is not finished: counting it would drop it from being redone."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return None, None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError and UnicodeDecodeError
        return None, f"{path}: unreadable ({exc})"
    if not isinstance(summary, dict):
        return None, f"{path}: expected a JSON mapping, got {type(summary).__name__}"
    if summary.get("status") != "finished":
        return None, f"{path}: status is {summary.get('status')!r}, not 'finished'"
    return summary, None


def stale_run_folders(study: Study, study_dir: Union[str, Path]) -> list:
    """Run folders under the study that the current spec does not produce (e.g. a removed variant)."""
    runs_dir = Path(study_dir) / "runs"
    expected = {run.run_name for run in study.runs}
    if not runs_dir.is_dir():
        return []
    return sorted(p.name for p in runs_dir.iterdir() if p.is_dir() and p.name not in expected)


# --------------------------------------------------------------------------------------------------------------------
# Writing the study folder
# --------------------------------------------------------------------------------------------------------------------
def run_record(study: Study, run: RunSpec, command: Sequence[str] = ()) -> dict:
    """The JSON-able identity of a run (an entry of runs.json and the content of ablation.json)."""
    return {"study": study.name, "baseline": study.baseline, "index": run.index, "run_name": run.run_name,
            "variant": run.variant, "arm": run.arm, "grid": run.grid, "seed": run.seed,
            "overrides": run.overrides, "command": list(command)}


def write_study_files(study: Study, study_dir: Union[str, Path], planned: Sequence[PlannedRun]) -> None:
    """spec.yaml (verbatim copy) and runs.json (every run with its identity and command)."""
    from yolov3.utils import atomic_write_text  # local: utils imports torch, which validation does not need

    study_dir = Path(study_dir)
    atomic_write_text(study_dir / "spec.yaml", study.spec_text)
    records = [run_record(study, p.run, p.command or train_command(p.run, study_dir / "runs", study.hyp))
               for p in planned]
    atomic_write_text(study_dir / "runs.json", json.dumps({"study": study.name, "baseline": study.baseline,
                                                           "grid_keys": list(study.grid), "seeds": study.seeds,
                                                           "runs": records}, indent=2))


def _write_identity(study: Study, planned: PlannedRun, exit_code: Optional[int] = None) -> None:
    from yolov3.utils import atomic_write_text

    record = run_record(study, planned.run, planned.command)
    record["exit_code"] = exit_code
    atomic_write_text(planned.run_dir / "ablation.json", json.dumps(record, indent=2))


# --------------------------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------------------------
def parse_devices(device: str) -> list:
    """'0,1' -> ['0', '1']; '', 'cpu' -> [] (no GPU pinning)."""
    device = (device or "").strip().lower()
    if device in ("", "cpu", "auto"):
        return []
    parts = [d.strip().replace("cuda:", "") for d in device.split(",") if d.strip()]
    for part in parts:
        if not part.isdigit():
            raise AblationError(f"--device {device!r}: expected cpu or GPU indices such as 0 or 0,1")
    return parts


def child_environment(jobs: int, gpu: Optional[str], cpu_count: Optional[int] = None) -> dict:
    """Environment for one train.py process: CPU threads split between parallel jobs, one GPU when pinned."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"  # the log file shows progress as it happens
    if jobs > 1:
        threads = max(1, (cpu_count or os.cpu_count() or 1) // jobs)  # parallel jobs would oversubscribe the cores
        env["OMP_NUM_THREADS"] = str(threads)
        env["MKL_NUM_THREADS"] = str(threads)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def _pump(stream, log_path: Path, echo) -> None:
    with open(log_path, "a", encoding="utf-8", errors="replace") as log:
        for line in stream:
            log.write(line)
            log.flush()
            if echo is not None:
                echo(line.rstrip("\n"))


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.replace("\r", "\n").splitlines()[-lines:])


def execute(study: Study, planned: Sequence[PlannedRun], jobs: int = 1, device: str = "", verbose: bool = False,
            progress: bool = True, poll_s: float = 0.1) -> list:
    """Run the 'start' and 'resume' entries, up to ``jobs`` at a time; returns a RunOutcome per planned run.

    Each run's stdout/stderr go to ``<run>/train.log``; a failed run does not stop the others. With GPUs listed in
    ``device`` each job sees one GPU (CUDA_VISIBLE_DEVICES) and gets ``--device 0``; on CPU the cores are split.
    On Ctrl-C (KeyboardInterrupt) the running children get one SIGINT and are waited for (see
    :func:`interrupt_and_wait`), then the KeyboardInterrupt propagates; no further run is started.
    """
    from tqdm import tqdm

    gpus = parse_devices(device)
    jobs = max(1, int(jobs))
    outcomes = {p.run.run_name: RunOutcome(p.run.run_name, "skip", "skipped", None, 0.0)
                for p in planned if p.action == "skip"}
    todo = [p for p in planned if p.action != "skip"]
    bar = tqdm(total=len(planned), initial=len(outcomes), desc=f"ablate {study.name}", unit="run",
               disable=not progress, dynamic_ncols=True)
    echo = bar.write if (verbose and jobs == 1) else None
    free_slots = list(range(jobs))
    active: dict = {}  # slot -> (planned, Popen, pump thread, start time)

    def launch(item: PlannedRun, slot: int) -> None:
        gpu = gpus[slot % len(gpus)] if gpus else None
        cmd = list(item.command)
        if gpu is not None:  # the child sees only its GPU, as cuda:0
            cmd = _replace_device(cmd, "0")
        item.run_dir.mkdir(parents=True, exist_ok=True)
        item.command = cmd
        _write_identity(study, item)
        log_path = item.run_dir / "train.log"
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"# ablate.py {time.strftime('%Y-%m-%d %H:%M:%S')} {item.action}"
                      f"{' on GPU ' + gpu if gpu is not None else ''}: {display_command(cmd)}\n")
        # a session of its own: a Ctrl-C at the terminal reaches only this runner, which forwards exactly one
        # SIGINT; a second one, from the terminal's process group, would cut train.py's checkpoint save short
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                env=child_environment(jobs, gpu), errors="replace",
                                start_new_session=os.name == "posix")
        pump = threading.Thread(target=_pump, args=(proc.stdout, log_path, echo), daemon=True)
        pump.start()
        active[slot] = (item, proc, pump, time.time())
        bar.set_postfix_str(", ".join(a[0].run.run_name for a in active.values()), refresh=True)

    def reap(slot: int) -> None:
        item, proc, pump, started = active.pop(slot)
        pump.join()
        code = proc.returncode
        _write_identity(study, item, exit_code=code)
        seconds = time.time() - started
        summary, problem = read_summary(item.run_dir)
        if code == 0 and summary is not None:
            outcomes[item.run.run_name] = RunOutcome(item.run.run_name, item.action, "finished", code, seconds)
        else:
            why = f"exit code {code}" if code else f"exit code 0 but {problem or 'no summary.json was written'}"
            message = f"{item.run.run_name} failed ({why}); log: {item.run_dir / 'train.log'}\n" + \
                      _tail(item.run_dir / "train.log")
            outcomes[item.run.run_name] = RunOutcome(item.run.run_name, item.action, "failed", code, seconds,
                                                     message)
            bar.write(message, file=sys.stderr)
        free_slots.append(slot)
        bar.update(1)

    try:
        queue = list(todo)
        while queue or active:
            while queue and free_slots:
                launch(queue.pop(0), free_slots.pop(0))
            for slot in [s for s, a in active.items() if a[1].poll() is not None]:
                reap(slot)
            if active:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        # stop only the processes this function started, and let each save its last.pt first
        procs = [proc for _, proc, _, _ in active.values()]
        interrupt_and_wait(procs, say=lambda text: bar.write(text, file=sys.stderr))
        for _, _, pump, _ in active.values():
            pump.join(timeout=5)  # the child's last words ("saved ... last.pt") belong in its train.log
        raise
    finally:
        bar.close()
    return [outcomes[p.run.run_name] for p in planned]


def _send_interrupt(proc: subprocess.Popen) -> None:
    if os.name == "posix":
        proc.send_signal(signal.SIGINT)  # what a Ctrl-C gives train.py: it saves last.pt and exits 130
    else:  # pragma: no cover - Windows cannot send SIGINT to one process
        proc.terminate()


def interrupt_and_wait(procs: Sequence[subprocess.Popen], say=print) -> None:
    """Forward one SIGINT to each running child and wait until it exits (train.py saves ``last.pt`` first, however
    long that takes); a second Ctrl-C while waiting kills the children still running."""
    running = [proc for proc in procs if proc.poll() is None]
    if not running:
        return
    for proc in running:
        _send_interrupt(proc)
    say(f"interrupted: waiting for {len(running)} run(s) to save last.pt; press Ctrl-C again to kill them")
    try:
        for proc in running:
            proc.wait()
    except KeyboardInterrupt:
        for proc in running:
            if proc.poll() is None:
                proc.kill()
        for proc in running:
            proc.wait()
        say("killed the running run(s); their last.pt may be older than this interrupt")


def _replace_device(cmd: list, device: str) -> list:
    cmd = list(cmd)
    if "--device" in cmd:
        cmd[cmd.index("--device") + 1] = device
    else:
        cmd += ["--device", device]
    return cmd


def describe_plan(study: Study, planned: Sequence[PlannedRun]) -> str:
    """The --dry-run listing: one block per run with its action, identity, overrides and exact command."""
    counts = {a: sum(p.action == a for p in planned) for a in ("start", "resume", "skip")}
    lines = [f"study {study.name}: {len(planned)} runs ({len(study.variants)} variants"
             + (f", grid {' x '.join(str(len(v)) for v in study.grid.values())} on {', '.join(study.grid_variants)}"
                if study.grid else "")
             + f", seeds {study.seeds}); baseline {study.baseline}; "
             + ", ".join(f"{n} to {a}" for a, n in counts.items()),
             "base: " + (f"--hyp {study.hyp} " if study.hyp else "")
             + (" ".join(f"{k}={yaml_value(v)}" for k, v in study.base.items()) or "(defaults)")]
    for p in planned:
        run = p.run
        grid = " ".join(f"{k}={format_value(v)}" for k, v in run.grid.items()) or "-"
        own = {**study.variants[run.variant], **run.grid}  # what this run adds to base
        overrides = " ".join(f"{k}={yaml_value(v)}" for k, v in own.items()) or "-"
        lines.append(f"[{run.index + 1}/{len(planned)}] {run.run_name}  ({p.action})")
        lines.append(f"    variant: {run.variant}  grid: {grid}  seed: {run.seed}")
        lines.append(f"    overrides (on top of base): {overrides}")
        lines.append(f"    command: {display_command(p.command) if p.command else '(finished; skipped)'}")
    return "\n".join(lines)
