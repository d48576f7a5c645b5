"""Ablation specs: read and validate a YAML spec, and expand it into the runs of the study.

The schema and the run naming are documented at the top of :mod:`yolov3.ablation`. Every error names
``<spec file>: <key path>``; nothing here runs or writes anything.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from yolov3 import config as config_lib
from yolov3 import paths
from yolov3.config import Config, ConfigError
from yolov3.data_yaml import DataError, declares_split
from yolov3.yolov5_hyp import load_hyp

SPEC_KEYS = ("name", "description", "base", "variants", "grid", "grid_variants", "seeds", "baseline", "contrasts")
BASE_ONLY_KEYS = ("hyp",)  # keys of `base` that are not Config keys
# keys that do not change what a run computes: a difference here never blocks skipping/resuming a run
IGNORED_CONFIG_KEYS = ("train.workers", "train.cache", "train.save_period")
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

    index: int  # position in the study's run order: seed by seed, and per seed the arms in spec order
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
    command_overrides: dict = field(default_factory=dict)  # ablate.py's key=value after the spec: dotted -> value
    notes: list = field(default_factory=list)  # what loading decided for the user (printed once by ablate.py)
    contrasts: list = field(default_factory=list)  # (arm, reference) pairs the report compares beside the baseline


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
    for key in ("loss.objectness.name", "loss.cls.name"):
        name = config_lib.get_dotted(cfg, key)
        if name not in config_lib.LOSS_NAMES:
            raise AblationError(f"{label}: '{key}' is {name!r}; choices: {', '.join(sorted(config_lib.LOSS_NAMES))}")
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


def load_spec(path: Union[str, Path], name: Optional[str] = None, overrides: Sequence[str] = ()) -> Study:
    """Read, validate and expand an ablation spec; every error names ``<path>: <key path>``.

    ``name`` overrides the spec's ``name`` (ablate.py --name); ``overrides`` (ablate.py's ``key=value`` after the
    spec, e.g. ``data=my.yaml train.epochs=50``) replace the spec's base for every run (:func:`command_overrides`).
    Nothing is run or written.
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
    command_line = command_overrides(overrides)
    base = {**base, **command_line}
    try:
        base_cfg = load_hyp(hyp)[0] if hyp else Config()  # ours, or a yolov5 hyp file (as train.py --hyp)
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
    for key in command_line:  # a value a variant or the grid sets would silently win over the command line
        owners = [f"variants.{v}" for v, o in variants.items() if key in o] + ["grid"] * (key in grid)
        if owners:
            raise AblationError(f"command line: {key}: also set by {', '.join(owners)} of {src}, which would win "
                                "for those runs; change it in the spec instead")

    notes = []
    names_amp = "train.amp" in base or "train.amp" in grid or any("train.amp" in o for o in variants.values())
    if not names_amp and base_cfg.train.amp == "auto":  # silent on precision: float32, said once and recorded
        base = {**base, "train.amp": "off"}
        base_cfg = apply_flat(base_cfg, {"train.amp": "off"}, "base", src)
        notes.append(f"{src} does not set train.amp: every run trains in float32 (train.amp off, in each run's "
                     "command and config.yaml); set it in base for bf16")
    study = Study(name=study_name, spec_path=path, spec_text=spec_text, description=description.strip(), hyp=hyp,
                  base=base, variants=variants, grid=grid, grid_variants=list(grid_variants), seeds=list(seeds),
                  baseline=baseline, command_overrides=command_line, notes=notes)
    study.runs = expand_runs(study, base_cfg)
    study.contrasts = _check_contrasts(spec.get("contrasts"), list(dict.fromkeys(run.arm for run in study.runs)),
                                       baseline, src)
    return study


def _check_contrasts(raw: Any, arms: Sequence[str], baseline: str, src: str) -> list:
    """``contrasts``: a list of [arm, reference] pairs of the study's arms, the baseline not among them (every arm
    is compared with it already); returned as (arm, reference) tuples in spec order."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise AblationError(f"{src}: contrasts: expected a list of [arm, reference] pairs, got {raw!r}")
    pairs = []
    for i, pair in enumerate(raw):
        if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(a, str) for a in pair):
            raise AblationError(f"{src}: contrasts[{i}]: expected [arm, reference] (two arm names), got {pair!r}")
        for name in pair:
            if name not in arms:
                raise AblationError(f"{src}: contrasts[{i}]: {name!r} is not an arm of the study "
                                    f"(arms: {', '.join(arms)})")
        arm, reference = pair
        if arm == reference:
            raise AblationError(f"{src}: contrasts[{i}]: compares {arm!r} with itself")
        if baseline in pair:
            raise AblationError(f"{src}: contrasts[{i}]: every arm is compared with the baseline {baseline!r} "
                                "already; a contrast names two other arms")
        if (arm, reference) in pairs or (reference, arm) in pairs:
            raise AblationError(f"{src}: contrasts[{i}]: {arm!r} and {reference!r} are compared twice")
        pairs.append((arm, reference))
    return pairs


def command_overrides(overrides: Sequence[str]) -> dict:
    """ablate.py's ``key=value`` arguments -> {dotted key: value}, each key checked as a spec's keys are (an error
    names the argument); ``train.seed`` belongs to the spec's ``seeds``."""
    flat: dict = {}
    for text in overrides:
        try:
            path, value = config_lib.parse_override(text)
        except ConfigError as exc:
            raise AblationError(str(exc)) from None
        key = ".".join(path)
        check_config_key(key, f"command line: {text}")
        if key == "train.seed":
            raise AblationError(f"command line: {text}: the seeds are the spec's 'seeds' list")
        flat[key] = value
    return flat


def expand_runs(study: Study, base_cfg: Optional[Config] = None) -> list:
    """RunSpecs seed by seed: seed 0 of every arm (variants in spec order x grid points, first key slowest), then
    seed 1 of every arm, ... — so that a study stopped part way has whole pairs, and machine load (another process,
    a slower machine on another day) falls on every arm alike rather than on the arms that happen to run last.

    Every run must fix its numeric precision (``train.amp`` off, bf16 or fp16, never ``auto``): ``auto`` resolves
    differently on a CPU with and without native bf16, and a study resumed on another machine would compare runs
    computed differently. A spec that never names ``train.amp`` gets float32 from :func:`load_spec`."""
    src = str(study.spec_path)
    if base_cfg is None:
        base_cfg = load_hyp(study.hyp)[0] if study.hyp else Config()
        base_cfg = apply_flat(base_cfg, study.base, "base", src)
    labels = grid_labels(list(study.grid))
    grid_points = [dict(zip(study.grid, combo)) for combo in itertools.product(*study.grid.values())]
    runs: list = []
    seen: dict = {}
    arms: list = []  # (where, resolved config) per arm, to find arms that would train the same thing
    unfixed: list = []  # arms whose train.amp is 'auto' 
    for vname, voverrides in study.variants.items():
        variant_cfg = apply_flat(base_cfg, voverrides, f"variants.{vname}", src)
        points = grid_points if vname in study.grid_variants else [{}]
        for point in points:
            where = f"variants.{vname}" + (f" with grid {point}" if point else "")
            point_cfg = apply_flat(variant_cfg, point, "grid", src)
            _check_loss_names(point_cfg, f"{src}: {where}")
            arms.append((where, point_cfg))
            if point_cfg.train.amp == "auto":
                unfixed.append(where)
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
    if unfixed:
        raise AblationError(f"{src}: train.amp is 'auto' in {', '.join(unfixed[:3])}"
                            f"{f' and {len(unfixed) - 3} more' if len(unfixed) > 3 else ''}; a study fixes its "
                            "numeric precision so that every machine computes the same runs: set train.amp to "
                            "\"off\" (float32), bf16 or fp16 in base")
    seed_rank = {seed: position for position, seed in enumerate(study.seeds)}
    runs.sort(key=lambda run: (seed_rank[run.seed], run.index))  # stable: arms keep their spec order per seed
    return [dataclasses.replace(run, index=position) for position, run in enumerate(runs)]


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
    """What the runs need that is not there: a line per missing file ('<key> = <path> (needed by ...): file not
    found') and per data file without the test split that ``val.test`` asks for (empty when nothing is missing).
    train.py would find each only at its start, so a study would fail run after run."""
    missing: dict = {}
    needs_test: dict = {}
    for run in study.runs:
        for key in PATH_CONFIG_KEYS:
            value = config_lib.get_dotted(run.config, key)
            if value and not paths.resolve_path(value).exists():  # train.py falls back to the shipped file
                missing.setdefault((key, value), []).append(run.run_name)
        if run.config.val.test and run.config.data and paths.resolve_path(run.config.data).exists():
            needs_test.setdefault(run.config.data, []).append(run.run_name)
    if study.hyp and not Path(study.hyp).is_file():
        missing.setdefault(("hyp", study.hyp), []).append("all runs")
    lines = [f"{key} = {value} (needed by {len(names)} run(s), e.g. {names[0]}): file not found"
             for (key, value), names in missing.items()]
    for data, names in needs_test.items():
        try:
            has_test = declares_split(data, "test")
        except DataError:
            continue  # a data file train.py cannot read: its own message says why
        if not has_test:
            lines.append(f"val.test = true (set for {len(names)} run(s), e.g. {names[0]}) but {data} has no "
                         "'test' split: add one (python -m yolov3.convert voc ... --test-fraction 0.1 makes one), or "
                         "pass val.test=false")
    return lines


# --------------------------------------------------------------------------------------------------------------------
# Comparing resolved configs
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
    defaults = _flatten_dict(config_lib.to_dict(Config()))
    diffs = []
    for key in sorted(set(want) | set(have)):
        if key in IGNORED_CONFIG_KEYS:
            continue
        if key not in have and _same_value(key, want[key], defaults[key]):
            continue  # a key added after the run was made, at its default: what the run did (see yolov3.config)
        if key not in have:
            diffs.append(f"{key}: missing from the run, spec gives {want[key]!r}")
        elif key not in want:
            diffs.append(f"{key}: run has {have[key]!r}, not a key of the current config")
        elif not _same_value(key, want[key], have[key]):
            diffs.append(f"{key}: run has {have[key]!r}, spec gives {want[key]!r}")
    return diffs
