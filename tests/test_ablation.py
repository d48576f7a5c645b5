"""Ablation specs: validation (errors name the key path), expansion, run naming, planning, running, dry run."""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import ablate
from yolov3 import config as config_lib
from yolov3.ablation import (AblationError, arm_of, check_paths, config_differences, execute, expand_runs, format_value,
                             grid_labels, load_spec, make_run_name, plan_runs, train_command, yaml_value)

ROOT = Path(__file__).resolve().parents[1]
SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]*$")

BASE_SPEC = {
    "base": {"cfg": "cfg/yolov3-small.cfg", "data": "data/shapes.yaml", "train.epochs": 3, "train.amp": "off"},
    "variants": {"bce": {"loss.objectness.name": "bce"},
                 "focal": {"loss.objectness.name": "focal", "loss.objectness.gamma": 2}},
    "seeds": [0, 1],
    "baseline": "bce",
}


def write_spec(tmp_path: Path, spec: dict, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def with_changes(**changes) -> dict:
    """BASE_SPEC with top-level keys replaced; a replaced base keeps the fixed precision every study needs."""
    spec = json.loads(json.dumps(BASE_SPEC))
    spec.update(changes)
    if "base" in changes and "train.amp" not in changes["base"]:
        spec["base"] = {**changes["base"], "train.amp": "off"}
    return spec


# ---------------------------------------------------------------------------------------------------------------
# Validation: every error names the spec file and the key path
# ---------------------------------------------------------------------------------------------------------------
BAD_SPECS = [
    # dotted typo -> full key path, the bad part and the valid keys at that level
    (with_changes(variants={"bce": {}, "focal": {"loss.objectness.gama": 2}}),
     "x.yaml: variants.focal.loss.objectness.gama: unknown key 'gama' (valid keys under 'loss.objectness': "
     "name, gamma, alpha)"),
    # the same typo written nested gives the same path
    (with_changes(variants={"bce": {}, "focal": {"loss": {"objectness": {"gama": 2}}}}),
     "x.yaml: variants.focal.loss.objectness.gama: unknown key 'gama'"),
    (with_changes(variants={"bce": {}, "focal": {"loss.objectness.gamma": "two"}}),
     "x.yaml: variants.focal.loss.objectness.gamma: 'loss.objectness.gamma' expects a number, got 'two'"),
    (with_changes(base={"epochs": 3}), "x.yaml: base.epochs: unknown key 'epochs'"),
    (with_changes(base={"epochs": 3}), "did you mean 'train.epochs'?"),
    (with_changes(base={"loss": 3}), "x.yaml: base.loss: 'loss' is a section"),
    (with_changes(base={"loss.box.x": 3}), "x.yaml: base.loss.box.x: unknown key 'x' ('loss.box' is a value"),
    (with_changes(variant={}), "x.yaml: variant: unknown key (valid top-level keys:"),
    (with_changes(baseline="nope"), "x.yaml: baseline: 'nope' is not a variant (variants: bce, focal)"),
    (with_changes(baseline=None), "x.yaml: baseline: missing"),
    (with_changes(variants={}), "x.yaml: variants: expected a non-empty mapping"),
    (with_changes(seeds=[]), "x.yaml: seeds: expected a non-empty list of integers"),
    (with_changes(seeds=3), "x.yaml: seeds: expected a non-empty list of integers, got 3"),
    (with_changes(seeds=[0, 1, 1]), "x.yaml: seeds: duplicate seeds [1]"),
    (with_changes(seeds=[0, "1"]), "x.yaml: seeds[1]: expected a non-negative integer, got '1'"),
    (with_changes(contrasts=3), "x.yaml: contrasts: expected a list of [arm, reference] pairs, got 3"),
    (with_changes(contrasts=[["focal"]]),
     "x.yaml: contrasts[0]: expected [arm, reference] (two arm names), got ['focal']"),
    (with_changes(contrasts=[["focal", "nope"]]),
     "x.yaml: contrasts[0]: 'nope' is not an arm of the study (arms: bce, focal)"),
    (with_changes(contrasts=[["focal", "focal"]]), "x.yaml: contrasts[0]: compares 'focal' with itself"),
    (with_changes(contrasts=[["focal", "bce"]]),
     "x.yaml: contrasts[0]: every arm is compared with the baseline 'bce' already; a contrast names two other arms"),
    (with_changes(variants={"bce": {}, "focal": {"loss.objectness.name": "focal"}, "prior": {"loss.obj_prior": 0.01}},
                  contrasts=[["focal", "prior"], ["prior", "focal"]]),
     "x.yaml: contrasts[1]: 'prior' and 'focal' are compared twice"),
    (with_changes(seeds=[0, True]), "x.yaml: seeds[1]: expected a non-negative integer, got True"),
    (with_changes(grid={"loss.objectness.gamma": 2}),
     "x.yaml: grid.loss.objectness.gamma: expected a non-empty list of values, got 2"),
    (with_changes(grid={"loss.objectness.gama": [1, 2]}), "x.yaml: grid.loss.objectness.gama: unknown key 'gama'"),
    (with_changes(grid={"loss.objectness.alpha": [0.25, "x"]}),
     "x.yaml: grid.loss.objectness.alpha[1].loss.objectness.alpha: 'loss.objectness.alpha' expects float or null"),
    (with_changes(grid={"loss.objectness.alpha": [0.5, 0.50]}), "x.yaml: grid.loss.objectness.alpha: duplicate"),
    # a grid key the gridded variant also sets would make the variant's value dead
    (with_changes(grid={"loss.objectness.gamma": [1, 2]}),
     "x.yaml: variants.focal.loss.objectness.gamma: also swept by grid.loss.objectness.gamma"),
    (with_changes(grid={"loss.objectness.alpha": [0.25]}, grid_variants=["bce", "focal"]),
     "x.yaml: grid_variants: the baseline 'bce' cannot be gridded"),
    (with_changes(grid={"loss.objectness.alpha": [0.25]}, grid_variants=["focl"]),
     "x.yaml: grid_variants[0]: 'focl' is not a variant"),
    (with_changes(grid_variants=["focal"]), "x.yaml: grid_variants: given but there is no grid"),
    (with_changes(variants={"bce": {}, "focal": {"train.seed": 3}}),
     "x.yaml: variants.focal.train.seed: set seeds with the top-level 'seeds' list"),
    (with_changes(variants={"bce": {}, "a b": {}}), "x.yaml: variants.a b: 'a b' is not a valid name"),
    (with_changes(variants={"bce": {}, "a__b": {}}), "x.yaml: variants.a__b: 'a__b' is not a valid name"),
    (with_changes(name="my study"), "x.yaml: name: 'my study' is not a valid name"),
    (with_changes(base={"hyp": "nowhere/hyp.yaml"}), "x.yaml: base.hyp: nowhere/hyp.yaml: file not found"),
    # arms that resolve to the same config would compare a config with itself
    (with_changes(variants={"bce": {}, "bce_explicit": {"loss.objectness.name": "bce"}}),
     "x.yaml: variants.bce and variants.bce_explicit resolve to the same training config"),
    (with_changes(variants={"bce": {}, "focal": {"loss.objectness.name": "focal"},
                            "focal_again": {"loss": {"objectness": {"name": "focal"}}}}),
     "x.yaml: variants.focal and variants.focal_again resolve to the same training config"),
    (with_changes(variants={"bce": {}, "w4": {"train.workers": 4}}),  # workers do not change what is computed
     "x.yaml: variants.bce and variants.w4 resolve to the same training config"),
    (with_changes(variants={"bce": {}, "focal": {"loss.objectness.name": "focal"},
                            "focal_g1": {"loss.objectness.name": "focal", "loss.objectness.gamma": 1}},
                  grid={"loss.objectness.gamma": [1, 2]}, grid_variants=["focal"]),
     "x.yaml: variants.focal with grid {'loss.objectness.gamma': 1} and variants.focal_g1 resolve to the same "
     "training config"),
]


@pytest.mark.parametrize("spec, message", BAD_SPECS, ids=[m[:60] for _, m in BAD_SPECS])
def test_invalid_spec_error_names_key_path(tmp_path, spec, message):
    path = write_spec(tmp_path, spec)
    with pytest.raises(AblationError) as info:
        load_spec(path)
    assert message in str(info.value).replace(str(tmp_path) + "/", "")


def test_unknown_loss_name_fails_before_any_run(tmp_path):
    pytest.importorskip("yolov3.loss")
    path = write_spec(tmp_path, with_changes(variants={"bce": {}, "focal": {"loss.objectness.name": "focall"}}))
    with pytest.raises(AblationError, match=r"variants\.focal: 'loss\.objectness\.name' is 'focall'; choices: "
                                            r"bce, focal"):
        load_spec(path)


def test_spec_that_is_not_utf8_is_a_one_line_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(yaml.safe_dump(BASE_SPEC).encode() + "description: réglage\n".encode("latin-1"))
    with pytest.raises(AblationError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}: ablation spec is not UTF-8 text") and "\n" not in str(info.value)


def test_invalid_yaml_names_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("variants:\n  bce: {\n")
    with pytest.raises(AblationError, match=r"broken\.yaml line \d+: invalid YAML"):
        load_spec(path)


# ---------------------------------------------------------------------------------------------------------------
# Expansion
# ---------------------------------------------------------------------------------------------------------------
def test_expansion_variants_grid_seeds(tmp_path):
    spec = {
        "base": {"train.epochs": 3, "loss.lambda_noobj": 2.0, "train.amp": "off"},
        "variants": {"bce": {}, "focal": {"loss.objectness.name": "focal", "loss.lambda_noobj": 0.5},
                     "focal_cls": {"loss.cls.name": "focal"}},
        "grid": {"loss.objectness.gamma": [0, 2, 5], "loss.objectness.alpha": [0.25, None]},
        "grid_variants": ["focal"],
        "seeds": [3, 7],
        "baseline": "bce",
    }
    study = load_spec(write_spec(tmp_path, spec, "grid.yaml"))
    assert study.name == "grid"  # default: the file stem
    # bce: 1 arm, focal: 3 gammas x 2 alphas = 6 arms, focal_cls: 1 arm -> 8 arms x 2 seeds = 16 runs
    assert len(study.runs) == 16
    assert len({r.arm for r in study.runs}) == 8
    assert [r.index for r in study.runs] == list(range(16))
    names = [r.run_name for r in study.runs]
    # seed by seed: every arm of seed 3 (variants in order, first grid key slowest), then every arm of seed 7
    assert names[:4] == ["bce__seed3", "focal__gamma=0_alpha=0.25__seed3", "focal__gamma=0_alpha=none__seed3",
                         "focal__gamma=2_alpha=0.25__seed3"]
    assert names[5] == "focal__gamma=5_alpha=0.25__seed3" and names[7] == "focal_cls__seed3"
    assert names[8] == "bce__seed7" and names[-1] == "focal_cls__seed7"
    run = next(r for r in study.runs if r.run_name == "focal__gamma=5_alpha=none__seed7")
    assert run.grid == {"loss.objectness.gamma": 5, "loss.objectness.alpha": None}
    # resolution order: base < variant < grid < seed
    assert run.config.loss.lambda_noobj == 0.5  # variant beats base's 2.0
    assert run.config.loss.objectness.name == "focal"
    assert run.config.loss.objectness.gamma == 5.0 and run.config.loss.objectness.alpha is None
    assert run.config.train.seed == 7 and run.config.train.epochs == 3
    assert run.overrides == {"train.epochs": 3, "loss.lambda_noobj": 0.5, "train.amp": "off",
                             "loss.objectness.name": "focal", "loss.objectness.gamma": 5,
                             "loss.objectness.alpha": None}
    bce = study.runs[0]
    assert bce.grid == {} and bce.config.loss.lambda_noobj == 2.0 and bce.config.loss.objectness.name == "bce"
    # default grid_variants: every variant but the baseline
    spec.pop("grid_variants")
    study = load_spec(write_spec(tmp_path, spec, "grid2.yaml"))
    assert len(study.runs) == 2 * (1 + 6 + 6) and study.grid_variants == ["focal", "focal_cls"]


def test_nested_and_dotted_keys_resolve_the_same(tmp_path):
    dotted = load_spec(write_spec(tmp_path, with_changes(
        variants={"bce": {}, "focal": {"loss.objectness.name": "focal", "loss.objectness.alpha": None}}), "a.yaml"))
    nested = load_spec(write_spec(tmp_path, with_changes(
        variants={"bce": {}, "focal": {"loss": {"objectness": {"name": "focal", "alpha": None}}}}), "b.yaml"))
    assert [config_lib.to_dict(r.config) for r in dotted.runs] == [config_lib.to_dict(r.config) for r in nested.runs]


def test_hyp_applies_before_base(tmp_path):
    hyp = tmp_path / "hyp.yaml"
    hyp.write_text("train: {lr0: 0.02, momentum: 0.9}\n")
    study = load_spec(write_spec(tmp_path, with_changes(base={"hyp": str(hyp), "train.lr0": 0.005})))
    assert study.runs[0].config.train.lr0 == 0.005  # base wins over hyp
    assert study.runs[0].config.train.momentum == 0.9  # hyp wins over defaults
    cmd = train_command(study.runs[0], tmp_path / "runs", study.hyp)
    assert cmd[cmd.index("--hyp") + 1] == str(hyp)


def parse_like_train_py(cmd: list) -> config_lib.Config:
    """What train.py resolves from our argv: defaults <- --hyp <- flags <- key=value (train.py's documented order)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*")
    for flag in ("--cfg", "--data", "--hyp", "--project", "--name", "--device", "--resume"):
        parser.add_argument(flag)
    for flag in ("--epochs", "--batch-size", "--img-size", "--seed", "--workers"):
        parser.add_argument(flag, type=int)
    parser.add_argument("--exist-ok", action="store_true")
    args = parser.parse_args(cmd[2:])
    cfg = config_lib.load_config(args.hyp)
    flags = {"cfg": args.cfg, "data": args.data,
             "train": {"epochs": args.epochs, "batch_size": args.batch_size, "img_size": args.img_size,
                       "seed": args.seed, "workers": args.workers}}
    cfg = config_lib.from_dict(flags, "flags", cfg)
    return config_lib.apply_overrides(cfg, args.overrides)


@pytest.mark.parametrize("spec_file", sorted((ROOT / "cfg" / "ablation").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_specs_load_and_commands_reproduce_config(spec_file):
    study = load_spec(spec_file)
    expected_runs = {"objectness": 45, "objectness_pilot": 6, "objectness_recipe": 10, "objectness_recipe_confirm": 4, "objectness_length": 4, "box_loss": 12, "box_loss_confirm": 10, "box_loss_default_recipe": 6, "focal_grid": 42, "objectness_vs_class": 12, "voc_yolov3": 6,
                     "precision": 6, "bccd_finetune": 3, "objectness_bccd_pilot": 4, "objectness_bccd": 30}
    assert len(study.runs) == expected_runs[study.name]
    names = [r.run_name for r in study.runs]
    assert len(set(names)) == len(names) and all(SAFE.match(n) for n in names)
    assert spec_file.read_text().lstrip().startswith("#")  # each spec explains its question and cost
    for run in study.runs:
        # the exact argv, read back the way train.py reads it, gives the config the planner expects
        cmd = train_command(run, "runs/ablate/x/runs", study.hyp)
        assert config_differences(run.config, config_lib.to_dict(parse_like_train_py(cmd))) == []


COMMITTED_STUDIES = sorted(p for p in (ROOT / "docs" / "studies").iterdir() if (p / "runs").is_dir())


def _shipped_plan(study_dir: Path) -> tuple:
    """(the shipped spec of a committed study, {run name: the config that spec plans for it})."""
    shipped = ROOT / "cfg" / "ablation" / f"{study_dir.name}.yaml"
    return shipped, {run.run_name: run.config for run in load_spec(shipped).runs}


@pytest.mark.parametrize("study_dir", COMMITTED_STUDIES, ids=lambda p: p.name)
def test_committed_runs_match_what_their_shipped_spec_resolves_to(study_dir):
    """A changed default or spec would make `ablate.py` refuse to resume a committed study (its runs' config.yaml
    no longer what the spec resolves to) and would make a rerun train something else: every committed run must
    still be the run its shipped spec plans."""
    _, planned = _shipped_plan(study_dir)
    committed = sorted(d for d in (study_dir / "runs").iterdir() if (d / "config.yaml").is_file())
    assert committed, f"{study_dir} has no committed run"
    for run_dir in committed:
        assert run_dir.name in planned, f"{run_dir} is not a run of cfg/ablation/{study_dir.name}.yaml"
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config_differences(planned[run_dir.name], saved) == [], run_dir


@pytest.mark.parametrize("study_dir", COMMITTED_STUDIES, ids=lambda p: p.name)
def test_committed_study_records_rebuild_the_runs_of_the_shipped_spec(study_dir, tmp_path, monkeypatch):
    """spec.yaml and runs.json are how a reader rebuilds a run from nothing: the spec copy must be the shipped spec,
    and each run's recorded command must train the config that spec plans (a default changed since the runs, with
    the spec pinning the old value, once left runs.json commands that would have trained the new default)."""
    from yolov3.train_cli import parse_args as parse_train_args, resolve_config

    shipped, planned = _shipped_plan(study_dir)
    assert (study_dir / "spec.yaml").read_text() == shipped.read_text(), \
        f"{study_dir}/spec.yaml is not {shipped.name}: rewrite the study records"
    records = json.loads((study_dir / "runs.json").read_text())["runs"]
    assert sorted(r["run_name"] for r in records) == sorted(planned)
    # train.py refuses initial weights that are not there; a checkout has none (COCO weights are downloaded): stand-ins
    # in a scratch working folder (cfg and data files resolve to the checkout's own)
    monkeypatch.chdir(tmp_path)
    for config in planned.values():
        if config.weights:
            (tmp_path / config.weights).parent.mkdir(parents=True, exist_ok=True)
            # a Darknet header (version 0.2, seen 0) and one float: train.py checks a weights file's first bytes
            (tmp_path / config.weights).write_bytes(struct.pack("<3iqf", 0, 2, 0, 0, 0.0))
    for record in records:
        argv = record["command"][2:]  # the python interpreter and train.py, as on the machine that ran it
        config, _ = resolve_config(parse_train_args(argv))
        assert config_differences(planned[record["run_name"]], config_lib.to_dict(config)) == [], record["run_name"]


def test_objectness_spec_arms_test_each_claim_at_fixed_precision():
    study = load_spec(ROOT / "cfg" / "ablation" / "objectness.yaml")
    arms = {r.variant: r.config for r in study.runs if r.seed == 0}
    assert list(arms) == ["bce", "bce_prior", "bce_alpha_only", "focal_g2", "focal_g2_a25", "retinanet",
                          "retinanet_lr", "focal_g2_a90", "varifocal"]
    assert study.baseline == "bce" and study.seeds == [0, 1, 2, 3, 4] and len(study.runs) == 45
    # one recipe for all: fp32, a guard clip at 100, lr .006 after a 3-epoch warmup without a bias-lr boost, 10 epochs
    assert all((c.train.amp, c.train.grad_clip, c.train.warmup_epochs, c.train.warmup_bias_lr, c.train.epochs)
               == ("off", 100, 3, 0, 10) for c in arms.values())
    assert all(c.train.lr0 == 0.006 and c.train.weight_decay == 0.0005 for k, c in arms.items() if k != "retinanet_lr")
    bce, alpha_only = arms["bce"].loss, arms["bce_alpha_only"].loss
    assert (bce.objectness.name, bce.obj_prior, bce.normalizer) == ("bce", None, "batch")
    # alpha .25 under BCE is exactly lambda_obj .25 and lambda_noobj .75
    assert (alpha_only.objectness.name, alpha_only.lambda_obj, alpha_only.lambda_noobj) == ("bce", 0.25, 0.75)
    focal = {k: (arms[k].loss.objectness.gamma, arms[k].loss.objectness.alpha)
             for k in ("focal_g2", "focal_g2_a25", "focal_g2_a90")}
    assert focal == {"focal_g2": (2.0, None), "focal_g2_a25": (2.0, 0.25), "focal_g2_a90": (2.0, 0.9)}
    retina, retina_lr = arms["retinanet"], arms["retinanet_lr"]
    assert (retina.loss.normalizer, retina.loss.obj_prior) == ("positives", 0.01)
    # lr x 5.8 (positives per image) and decay / 5.8: the same step size and the same lr x decay as the batch normaliser
    assert retina_lr.loss == retina.loss
    assert retina_lr.train.lr0 == pytest.approx(0.006 * 5.8) and retina_lr.train.weight_decay == pytest.approx(0.0005 / 5.8, rel=1e-3)
    assert (arms["varifocal"].loss.objectness.name, arms["varifocal"].loss.obj_target) == ("varifocal", "iou")
    assert [r.variant for r in study.runs[:9]] == list(arms) and study.runs[9].seed == 1  # seed by seed


def test_a_spec_must_fix_the_numeric_precision(tmp_path):
    spec = json.loads(json.dumps(BASE_SPEC))
    del spec["base"]["train.amp"]
    # silent on precision: float32 for every run, said once and recorded in each run's overrides (its command)
    study = load_spec(write_spec(tmp_path, spec))
    assert {run.config.train.amp for run in study.runs} == {"off"}
    assert all(run.overrides["train.amp"] == "off" for run in study.runs)
    assert len(study.notes) == 1 and "does not set train.amp: every run trains in float32" in study.notes[0]
    spec["base"]["train.amp"] = "auto"  # said explicitly: still refused
    with pytest.raises(AblationError, match=r"train.amp is 'auto' in variants.bce, variants.focal; a study fixes "
                                            r"its numeric precision"):
        load_spec(write_spec(tmp_path, spec))
    del spec["base"]["train.amp"]
    spec["variants"]["focal"]["train.amp"] = "bf16"
    with pytest.raises(AblationError, match=r"'auto' in variants.bce;"):  # only the arm left at auto is named
        load_spec(write_spec(tmp_path, spec))


# ---------------------------------------------------------------------------------------------------------------
# Naming
# ---------------------------------------------------------------------------------------------------------------
def test_run_names_deterministic_and_safe():
    point = {"loss.objectness.gamma": 2.0, "loss.objectness.alpha": 0.25}
    assert make_run_name("focal", point, 0) == "focal__gamma=2_alpha=0.25__seed0"
    assert make_run_name("focal", point, 0) == make_run_name("focal", dict(point), 0)
    assert make_run_name("bce", {}, 12) == "bce__seed12"
    assert make_run_name("v", {"loss.objectness.alpha": None, "train.ema": True}, 1) == "v__alpha=none_ema=true__seed1"
    # characters outside [A-Za-z0-9._=-] become '-'
    assert make_run_name("v", {"weights": "w/x y.pt"}, 0) == "v__weights=w-x-y.pt__seed0"
    assert arm_of("focal__gamma=2_alpha=0.25__seed10") == "focal__gamma=2_alpha=0.25"
    assert format_value(1e-5) == "1e-05" and format_value(0.5) == "0.5" and format_value(5) == "5"


def test_grid_labels_disambiguate_same_leaf_names():
    labels = grid_labels(["loss.objectness.gamma", "loss.cls.gamma", "loss.objectness.alpha"])
    assert labels == {"loss.objectness.gamma": "objectness-gamma", "loss.cls.gamma": "cls-gamma",
                      "loss.objectness.alpha": "alpha"}


def test_colliding_run_names_are_an_error(tmp_path):
    spec = with_changes(grid={"weights": ["a b", "a-b"]}, variants={"bce": {}, "v": {}})
    with pytest.raises(AblationError, match=r"both get the run name 'v__weights=a-b__seed0'"):
        load_spec(write_spec(tmp_path, spec))


def test_yaml_value_round_trips_through_safe_load():
    for value in (None, 0.25, 2, True, "focal", "a b", "1", [0.8, 0.9], "null"):
        assert yaml.safe_load(yaml_value(value)) == value


# ---------------------------------------------------------------------------------------------------------------
# Planning: skip / resume / start, and a changed spec
# ---------------------------------------------------------------------------------------------------------------
def fake_finished(run_dir: Path, cfg: config_lib.Config) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config_lib.to_dict(cfg), sort_keys=False))
    (run_dir / "summary.json").write_text(json.dumps({"status": "finished"}))


def test_plan_skip_resume_start_and_changed_config(tmp_path):
    study = load_spec(write_spec(tmp_path, with_changes(seeds=[0])))
    assert [r.run_name for r in study.runs] == ["bce__seed0", "focal__seed0"]
    study_dir = tmp_path / "study"
    bce, focal = study.runs
    fake_finished(study_dir / "runs" / bce.run_name, bce.config)
    (study_dir / "runs" / focal.run_name).mkdir(parents=True)
    (study_dir / "runs" / focal.run_name / "last.pt").write_bytes(b"x")
    plan = plan_runs(study, study_dir)
    assert [p.action for p in plan] == ["skip", "resume"]
    assert plan[1].command[2:4] == ["--resume", str(study_dir / "runs" / "focal__seed0" / "last.pt")]
    # the current layout, weights/last.pt, is resumed the same way
    (study_dir / "runs" / focal.run_name / "last.pt").unlink()
    (study_dir / "runs" / focal.run_name / "weights").mkdir()
    (study_dir / "runs" / focal.run_name / "weights" / "last.pt").write_bytes(b"x")
    plan = plan_runs(study, study_dir)
    assert plan[1].action == "resume"
    assert plan[1].command[2:4] == ["--resume", str(study_dir / "runs" / "focal__seed0" / "weights" / "last.pt")]
    # a missing run is started with the full command
    (study_dir / "runs" / focal.run_name / "weights" / "last.pt").unlink()
    plan = plan_runs(study, study_dir)
    assert [p.action for p in plan] == ["skip", "start"] and "--name" in plan[1].command
    # workers may differ (does not change results); anything else is a changed spec
    changed = config_lib.apply_overrides(bce.config, ["train.workers=7"])
    fake_finished(study_dir / "runs" / bce.run_name, changed)
    assert plan_runs(study, study_dir)[0].action == "skip"
    # a run made before train.freeze existed (its config.yaml lacks the key) ran as its default says: it matches
    older = config_lib.to_dict(bce.config)
    del older["train"]["freeze"], older["train"]["single_cls"]
    (study_dir / "runs" / bce.run_name / "config.yaml").write_text(yaml.safe_dump(older, sort_keys=False))
    assert plan_runs(study, study_dir)[0].action == "skip"
    frozen = load_spec(write_spec(tmp_path, with_changes(seeds=[0])), overrides=["train.freeze=2"])
    with pytest.raises(AblationError, match=re.escape("train.freeze: missing from the run, spec gives 2")):
        plan_runs(frozen, study_dir)
    changed = config_lib.apply_overrides(bce.config, ["loss.objectness.gamma=3"])
    fake_finished(study_dir / "runs" / bce.run_name, changed)
    with pytest.raises(AblationError) as info:
        plan_runs(study, study_dir)
    message = str(info.value)
    assert "the spec changed" in message and "bce__seed0" in message
    assert "loss.objectness.gamma: run has 3.0, spec gives 2.0" in message and "another --name" in message
    # a finished run without its config.yaml cannot be shown to match the spec; a partial one (the trainer writes
    # config.yaml first, so it died before anything else) is resumed, which checks its checkpoint
    (study_dir / "runs" / bce.run_name / "config.yaml").unlink()
    with pytest.raises(AblationError, match="has summary.json but no config.yaml to compare with the spec"):
        plan_runs(study, study_dir)
    (study_dir / "runs" / bce.run_name / "summary.json").unlink()
    (study_dir / "runs" / bce.run_name / "last.pt").write_bytes(b"x")
    assert plan_runs(study, study_dir)[0].action == "resume"


@pytest.mark.parametrize("content, problem", [
    ('{"status": "finished", "epo', "unreadable"),  # truncated
    ("[1, 2]", "expected a JSON mapping, got list"),
    ('{"epochs": 3}', "status is None, not 'finished'"),
    (b"\xff\xfe{", "unreadable"),
])
def test_plan_names_a_damaged_summary_and_does_not_count_the_run_as_finished(tmp_path, content, problem):
    study = load_spec(write_spec(tmp_path, with_changes(seeds=[0])))
    study_dir = tmp_path / "study"
    bce, focal = study.runs
    for run in (bce, focal):
        fake_finished(study_dir / "runs" / run.run_name, run.config)
        summary = study_dir / "runs" / run.run_name / "summary.json"
        summary.write_bytes(content if isinstance(content, bytes) else content.encode())
    (study_dir / "runs" / bce.run_name / "last.pt").write_bytes(b"x")
    plan = plan_runs(study, study_dir)
    assert [p.action for p in plan] == ["resume", "start"]
    bce_summary = study_dir / "runs" / bce.run_name / "summary.json"
    assert plan[0].note.startswith(f"{bce_summary}: {problem}")
    assert plan[0].note.endswith("the run counts as not finished and is resumed from its last.pt")
    assert plan[1].note.endswith("the run counts as not finished and is started again")


def test_plan_names_a_config_yaml_that_is_not_utf8(tmp_path):
    study = load_spec(write_spec(tmp_path, with_changes(seeds=[0])))
    run_dir = tmp_path / "study" / "runs" / study.runs[0].run_name
    run_dir.mkdir(parents=True)
    (run_dir / "last.pt").write_bytes(b"x")
    (run_dir / "config.yaml").write_bytes(b"train: {epochs: 3}  # \xff\n")
    with pytest.raises(AblationError, match=re.escape(f"{run_dir / 'config.yaml'}: unreadable or invalid YAML")):
        plan_runs(study, tmp_path / "study")


# ---------------------------------------------------------------------------------------------------------------
# Running with a fake train.py
# ---------------------------------------------------------------------------------------------------------------
FAKE_TRAIN = r'''
import argparse, json, os, sys
from pathlib import Path
sys.path.insert(0, {root!r})
import numpy as np, yaml
from yolov3 import config as C

p = argparse.ArgumentParser()
p.add_argument("overrides", nargs="*")
for f in ("--cfg", "--data", "--hyp", "--project", "--name", "--device", "--resume"):
    p.add_argument(f)
for f in ("--epochs", "--batch-size", "--img-size", "--seed", "--workers"):
    p.add_argument(f, type=int)
p.add_argument("--exist-ok", action="store_true")
a = p.parse_args()
if a.resume:
    run_dir = Path(a.resume).parent
    cfg = C.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
else:
    cfg = C.load_config(a.hyp)
    cfg = C.from_dict({{"cfg": a.cfg, "data": a.data, "train": {{"epochs": a.epochs, "batch_size": a.batch_size,
                      "img_size": a.img_size, "seed": a.seed, "workers": a.workers}}}}, "flags", cfg)
    cfg = C.apply_overrides(cfg, a.overrides)
    run_dir = Path(a.project) / a.name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(C.to_dict(cfg), sort_keys=False))
with open(os.environ["FAKE_TRAIN_CALLS"], "a") as fh:
    fh.write(json.dumps({{"name": run_dir.name, "resume": bool(a.resume),
                         "omp": os.environ.get("OMP_NUM_THREADS"), "device": a.device,
                         "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}}) + "\n")
print("fake training", run_dir.name)
if run_dir.name in os.environ.get("FAKE_TRAIN_FAIL", "").split(","):
    print("fake failure: loss is nan", file=sys.stderr)
    sys.exit(3)
if run_dir.name in os.environ.get("FAKE_TRAIN_BAD_SUMMARY", "").split(","):
    (run_dir / "last.pt").write_bytes(b"done")
    (run_dir / "summary.json").write_text('{{"status": "fini')  # truncated, yet the exit status is 0
    sys.exit(0)
if run_dir.name in os.environ.get("FAKE_TRAIN_PARTIAL", "").split(",") and not a.resume:
    (run_dir / "last.pt").write_bytes(b"partial")
    sys.exit(1)
focal = cfg.loss.objectness.name == "focal"
map50 = 0.5 + 0.01 * cfg.train.seed + (0.03 if focal else 0.0)
rows = ["epoch,train_obj,train_noobj,mAP50,mAP50_95,epoch_time_s"]
rows += [f"{{e}},{{1.0 / e}},{{4.0 / e}},{{map50 * e / 2}},{{map50 / 2 * e / 2}},1.5" for e in (1, 2)]
(run_dir / "results.csv").write_text("\n".join(rows) + "\n")
np.savez(run_dir / "objectness_losses.npz", pos=np.array([1.0, 1.0, 2.0]), neg=np.array([0.1, 0.1, 3.8]))
(run_dir / "last.pt").write_bytes(b"done")
final = {{"mAP50": map50, "mAP50_95": map50 / 2, "precision": 0.7, "recall": 0.6, "train_obj": 0.5,
         "train_noobj": 2.0}}
(run_dir / "summary.json").write_text(json.dumps({{"status": "finished", "epochs": 2, "final": final,
                                                  "wall_time_s": 3.0}}))
'''


@pytest.fixture
def fake_train(tmp_path, monkeypatch):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN.format(root=str(ROOT)))
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_TRAIN_CALLS", str(calls))

    def read_calls():
        lines = calls.read_text().splitlines() if calls.exists() else []
        calls.unlink(missing_ok=True)
        return [json.loads(line) for line in lines]
    return script, read_calls


def runner_spec(tmp_path: Path) -> Path:
    (tmp_path / "model.cfg").write_text("[net]\n")
    (tmp_path / "data.yaml").write_text("nc: 1\n")
    spec = with_changes(base={"cfg": str(tmp_path / "model.cfg"), "data": str(tmp_path / "data.yaml"),
                              "train.epochs": 2}, name="fake")
    return write_spec(tmp_path, spec, "fake.yaml")


def test_runner_failure_logging_rerun_and_resume(tmp_path, fake_train, monkeypatch, capsys):
    script, read_calls = fake_train
    spec = runner_spec(tmp_path)
    project = tmp_path / "ablate"
    argv = [str(spec), "--project", str(project), "--train-script", str(script)]
    monkeypatch.setenv("FAKE_TRAIN_FAIL", "focal__seed1")
    monkeypatch.setenv("FAKE_TRAIN_PARTIAL", "bce__seed1")
    # bce__seed1 stops after writing last.pt, focal__seed1 fails: both reported, the others still finish
    assert ablate.main(argv) == 1
    calls = read_calls()
    assert sorted(c["name"] for c in calls) == ["bce__seed0", "bce__seed1", "focal__seed0", "focal__seed1"]
    study_dir = project / "fake"
    runs_dir = study_dir / "runs"
    assert (runs_dir / "focal__seed0" / "summary.json").is_file()
    log = (runs_dir / "focal__seed1" / "console.log").read_text()  # all it printed (train.py keeps train.log)
    assert "fake failure: loss is nan" in log and "--name focal__seed1" in log
    identity = json.loads((runs_dir / "focal__seed1" / "ablation.json").read_text())
    assert identity["exit_code"] == 3 and identity["variant"] == "focal" and identity["seed"] == 1
    out, err = capsys.readouterr()
    assert "focal__seed1 failed (exit code 3)" in err
    # a line per finished run with its mAP and time, above one bar over the study with an ETA
    assert re.search(r"^\[\d/4\] bce__seed0 finished in \d+\.\d min: mAP@\.5:\.95 0\.2500, mAP@\.5 0\.5000$", out, re.M), out
    assert re.search(r"^\[\d/4\] focal__seed0 finished in .* mAP@\.5:\.95 0\.2650, mAP@\.5 0\.5300$", out, re.M), out
    assert "ablate fake: 4/4 runs |" in err and ", ETA " in err
    assert yaml.safe_load((study_dir / "spec.yaml").read_text()) == yaml.safe_load(spec.read_text())
    planned = json.loads((study_dir / "runs.json").read_text())
    assert [r["run_name"] for r in planned["runs"]] == ["bce__seed0", "focal__seed0", "bce__seed1", "focal__seed1"]
    summary = (study_dir / "summary.csv").read_text()
    assert "focal__seed1,focal,focal,1,failed" in summary
    assert "bce__seed1,bce,bce,1,failed" in summary  # exited 1 after writing last.pt: failed but resumable

    # rerun: finished runs skipped, the partial one resumed, the failed one started again
    monkeypatch.setenv("FAKE_TRAIN_FAIL", "")
    assert ablate.main(argv) == 0
    calls = {c["name"]: c for c in read_calls()}
    assert sorted(calls) == ["bce__seed1", "focal__seed1"]
    assert calls["bce__seed1"]["resume"] is True and calls["focal__seed1"]["resume"] is False
    # runs.json keeps the command that starts the resumed run from nothing, not the resume (its last.pt is not kept)
    recorded = {r["run_name"]: r["command"] for r in json.loads((study_dir / "runs.json").read_text())["runs"]}
    resumed = recorded["bce__seed1"]
    assert "--resume" not in resumed and resumed[resumed.index("--name") + 1] == "bce__seed1"
    assert resumed[resumed.index("--seed") + 1] == "1"
    assert (study_dir / "summary.md").is_file()
    # third time: nothing to do
    assert ablate.main(argv) == 0 and read_calls() == []


def test_parallel_jobs_split_cpu_threads(tmp_path, fake_train, monkeypatch):
    script, read_calls = fake_train
    study = load_spec(runner_spec(tmp_path))
    planned = plan_runs(study, tmp_path / "study", train_script=script)
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    outcomes = execute(study, planned, jobs=2, progress=False)
    assert [o.status for o in outcomes] == ["finished"] * 4
    # 4 cores / 2 jobs -> 2 threads per run
    assert {c["omp"] for c in read_calls()} == {"2"}


def test_parallel_jobs_on_gpus_each_see_one_of_the_listed_gpus(tmp_path, fake_train):
    script, read_calls = fake_train
    study = load_spec(runner_spec(tmp_path))
    planned = plan_runs(study, tmp_path / "study", device="2,3", train_script=script)
    outcomes = execute(study, planned, jobs=2, device="2,3", progress=False)
    assert [o.status for o in outcomes] == ["finished"] * 4
    calls = read_calls()
    # job slot k runs on the k-th listed GPU, which the child sees alone, as cuda:0
    assert {c["gpu"] for c in calls} == {"2", "3"} and {c["device"] for c in calls} == {"0"}


def test_ablate_passes_its_gpus_on_and_report_only_runs_nothing(tmp_path, fake_train):
    script, read_calls = fake_train
    argv = [str(runner_spec(tmp_path)), "--project", str(tmp_path / "ablate"), "--train-script", str(script)]
    assert ablate.main(argv + ["--jobs", "2", "--device", "2,3"]) == 0
    calls = read_calls()
    assert len(calls) == 4 and {c["gpu"] for c in calls} == {"2", "3"} and {c["device"] for c in calls} == {"0"}
    # a run left to do: --report-only reports, and starts nothing
    (tmp_path / "ablate" / "fake" / "runs" / "bce__seed1" / "summary.json").unlink()
    (tmp_path / "ablate" / "fake" / "summary.md").unlink()
    assert ablate.main(argv + ["--report-only"]) == 0
    assert read_calls() == [] and (tmp_path / "ablate" / "fake" / "summary.md").is_file()


def test_variants_runs_only_the_named_arms_then_the_rest(tmp_path, fake_train, capsys):
    script, read_calls = fake_train
    spec = runner_spec(tmp_path)
    argv = [str(spec), "--project", str(tmp_path / "ablate"), "--train-script", str(script), "--jobs", "1"]
    assert ablate.main(argv + ["--variants", "no_such,bce"]) == 2
    err = capsys.readouterr().err
    assert "--variants 'no_such,bce': no such variant no_such" in err and "has bce, focal" in err
    assert read_calls() == []
    assert ablate.main(argv + ["--variants", "focal"]) == 0
    assert [c["name"] for c in read_calls()] == ["focal__seed0", "focal__seed1"]  # still seed by seed
    assert "2 other unfinished runs wait for a run without --variants" in capsys.readouterr().out
    runs = json.loads((tmp_path / "ablate" / "fake" / "runs.json").read_text())["runs"]
    assert len(runs) == 4  # the study keeps every run; the report shows the waiting arm as not run
    assert ablate.main(argv) == 0
    assert [c["name"] for c in read_calls()] == ["bce__seed0", "bce__seed1"]


@pytest.fixture
def bce_study(tmp_path, fake_train):
    """(ablate.py argv, project, read_calls) after the fake study's bce arm ran (seeds 0 and 1; focal not run)."""
    script, read_calls = fake_train
    project = tmp_path / "ablate"
    argv = [str(runner_spec(tmp_path)), "--project", str(project), "--train-script", str(script)]
    assert ablate.main(argv + ["--variants", "bce", "--jobs", "1"]) == 0
    read_calls()
    return argv, project, read_calls


def test_reproduce_reruns_a_finished_run_with_its_threads_and_compares(bce_study, capsys):
    argv, project, read_calls = bce_study
    study_dir = project / "fake"
    original = study_dir / "runs" / "bce__seed1"
    # one thread (two study jobs on two cores) is a thread count like any other
    (original / "environment.json").write_text(json.dumps({"cpu_line": "Test CPU, 2 cores, AVX2", "threads": 1}))
    capsys.readouterr()
    assert ablate.main(argv + ["--reproduce", "bce__seed1", "--dry-run"]) == 0
    assert "1 CPU thread, as the original ran" in capsys.readouterr().out
    # the original ran with 3 threads (not what --jobs 1 or this test process would give a child)
    (original / "environment.json").write_text(json.dumps({"cpu_line": "Test CPU, 2 cores, AVX2", "threads": 3,
                                                           "torch": "9.9"}))
    # a dry run shows the rerun's command: the same run into reproductions/, nothing run
    assert ablate.main(argv + ["--reproduce", "bce__seed1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "reproduce bce__seed1 (start)" in out and "3 CPU threads, as the original ran" in out
    command = shlex.split(out.split("command: ", 1)[1].strip())
    assert command[command.index("--project") + 1] == str(study_dir / "reproductions")
    assert command[command.index("--seed") + 1] == "1" and read_calls() == []
    assert not (study_dir / "reproductions").exists()

    assert ablate.main(argv + ["--reproduce", "bce__seed1"]) == 0
    calls = read_calls()
    assert [(c["name"], c["omp"]) for c in calls] == [("bce__seed1", "3")]
    rerun = study_dir / "reproductions" / "bce__seed1"
    assert json.loads((rerun / "ablation.json").read_text())["exit_code"] == 0
    out = capsys.readouterr().out
    assert "bce__seed1: final val mAP@.5:.95 0.2550 (original), 0.2550 (rerun), difference +0.0000: reproduced" in out
    summary = (study_dir / "summary.md").read_text()
    assert "## Reproductions" in summary
    assert "| bce__seed1 | 0.2550 | 0.2550 | +0.0000 | 0.0000 (2) | yes | Test CPU, 2 cores, AVX2; 3 threads; " \
           "torch 9.9 | unknown (no environment.json) |" in summary
    # reruns stay out of the study's statistics
    assert "bce__seed1" in (study_dir / "summary.csv").read_text()
    assert (study_dir / "summary.csv").read_text().count("bce__seed1") == 1

    # again: the finished rerun is compared, not rerun; a rerun 0.006 away is not reproduced at 0.005, is at 0.01
    finished = json.loads((rerun / "summary.json").read_text())
    finished["final"]["mAP50_95"] += 0.006
    (rerun / "summary.json").write_text(json.dumps(finished))
    assert ablate.main(argv + ["--reproduce", "bce__seed1"]) == 1
    assert read_calls() == []
    out = capsys.readouterr().out
    assert "difference +0.0060: NOT reproduced (tolerance 0.005)" in out
    assert "| bce__seed1 | 0.2550 | 0.2610 | +0.0060 | 0.0000 (2) | no |" in (study_dir / "summary.md").read_text()
    assert ablate.main(argv + ["--reproduce", "bce__seed1", "--tolerance", "0.01"]) == 0
    # the rerun's own environment, a GPU one, is named with its device
    (rerun / "environment.json").write_text(json.dumps({"cpu_line": "Other CPU", "threads": 3, "device": "cuda:0",
                                                        "gpu": "Test GPU", "torch": "9.9"}))
    assert ablate.main(argv + ["--reproduce", "bce__seed1", "--no-report"]) == 1
    assert "rerun on cuda:0 (Test GPU); Other CPU; 3 threads; torch 9.9" in capsys.readouterr().out


def test_reproduce_reports_a_failed_rerun_then_resumes_it_with_the_same_threads(bce_study, monkeypatch, capsys):
    argv, project, read_calls = bce_study
    original = project / "fake" / "runs" / "bce__seed0"
    (original / "environment.json").write_text(json.dumps({"threads": 2, "device": "cpu"}))
    monkeypatch.setenv("FAKE_TRAIN_PARTIAL", "bce__seed0")  # the rerun stops after writing last.pt, exit 1
    assert ablate.main(argv + ["--reproduce", "bce__seed0"]) == 1
    assert [(c["resume"], c["omp"]) for c in read_calls()] == [(False, "2")]
    assert "bce__seed0: the rerun failed (exit code 1)" in capsys.readouterr().out
    assert "| bce__seed0 | 0.2500 | failed (exit 1) |" in (project / "fake" / "summary.md").read_text()
    monkeypatch.setenv("FAKE_TRAIN_PARTIAL", "")
    assert ablate.main(argv + ["--reproduce", "bce__seed0"]) == 0
    assert [(c["resume"], c["omp"]) for c in read_calls()] == [(True, "2")]
    # a GPU original: a warning that digits cannot agree there
    (original / "environment.json").write_text(json.dumps({"threads": 2, "device": "cuda:0"}))
    assert ablate.main(argv + ["--reproduce", "bce__seed0", "--dry-run"]) == 0
    assert "the original ran on cuda:0, where training is not deterministic" in capsys.readouterr().err


def test_reproduce_refuses_what_it_cannot_compare(bce_study, capsys):
    argv, project, read_calls = bce_study
    capsys.readouterr()
    assert ablate.main(argv + ["--reproduce", "bce__seed7"]) == 2
    assert "--reproduce 'bce__seed7': " in capsys.readouterr().err
    assert ablate.main(argv + ["--reproduce", "focal__seed0"]) == 2  # never ran
    err = capsys.readouterr().err
    assert "focal__seed0 is not a finished run (no summary.json)" in err
    assert ablate.main(argv + ["--reproduce", "bce__seed0", "--variants", "bce"]) == 2
    assert "it takes no --variants" in capsys.readouterr().err
    for flag in (["--report-only"], ["--jobs", "2"]):
        assert ablate.main(argv + flag + ["--reproduce", "bce__seed0"]) == 2
        assert "it takes no --report-only or --jobs" in capsys.readouterr().err
    # the spec with other key=value than the study's: the rerun would be another run
    assert ablate.main(argv + ["--reproduce", "bce__seed0", "--name", "fake", "train.lr0=0.02"]) == 2
    err = capsys.readouterr().err
    assert "its runs were made with the command-line overrides none, not train.lr0=0.02" in err
    assert read_calls() == []
    # an original whose saved config is not what the spec gives (the spec was edited) cannot be rerun from it
    original = project / "fake" / "runs" / "bce__seed1" / "config.yaml"
    saved = original.read_text()
    original.write_text(saved.replace("lr0: 0.01", "lr0: 0.03"))
    assert ablate.main(argv + ["--reproduce", "bce__seed1"]) == 2
    err = capsys.readouterr().err
    assert "--reproduce bce__seed1: the original was made with another config" in err and "train.lr0" in err
    original.write_text(saved)
    # an earlier rerun made with another config is named, not mixed in
    assert ablate.main(argv + ["--reproduce", "bce__seed0"]) == 0
    assert [c["name"] for c in read_calls()] == ["bce__seed0"]
    rerun = project / "fake" / "reproductions" / "bce__seed0"
    config = yaml.safe_load((rerun / "config.yaml").read_text())
    config["train"]["lr0"] = 0.5
    (rerun / "config.yaml").write_text(yaml.safe_dump(config))
    capsys.readouterr()
    assert ablate.main(argv + ["--reproduce", "bce__seed0"]) == 2
    err = capsys.readouterr().err
    assert "the earlier rerun was made with another config" in err and "train.lr0" in err
    assert read_calls() == []


def test_reproduction_compares_the_epochs_both_validated(tmp_path):
    from yolov3 import ablation_reproduce
    from yolov3.report_tables import reproduction_lines

    def run(folder: Path, curve: list, final=None) -> None:
        folder.mkdir(parents=True)
        rows = ["epoch,mAP50,mAP50_95"] + [f"{e},0.5,{'' if v is None else v}" for e, v in curve]
        (folder / "results.csv").write_text("\n".join(rows) + "\n")
        if final is not None:
            (folder / "summary.json").write_text(json.dumps({"status": "finished", "final": {"mAP50_95": final}}))

    study = tmp_path / "study"
    # validated every 2 epochs in the original, every epoch in the rerun: epochs 2 and 4 are compared
    run(study / "runs" / "a__seed0", [(1, None), (2, 0.30), (3, None), (4, 0.41)], final=0.41)
    run(study / "reproductions" / "a__seed0", [(1, 0.1), (2, 0.33), (3, 0.35), (4, 0.4)], final=0.4)
    item = ablation_reproduce.compare(study, "a__seed0")
    assert item.epochs_compared == 2 and abs(item.largest_epoch_difference - 0.03) < 1e-12
    assert abs(item.difference + 0.01) < 1e-12 and not item.within() and item.within(0.01 + 1e-12)
    # a rerun still going is listed as such; a folder whose original never finished is left out
    run(study / "runs" / "b__seed0", [(1, 0.2)], final=0.2)
    run(study / "reproductions" / "b__seed0", [(1, 0.2)])
    run(study / "runs" / "c__seed0", [(1, 0.2)])
    run(study / "reproductions" / "c__seed0", [(1, 0.2)], final=0.2)
    assert [i.run_name for i in ablation_reproduce.collect(study)] == ["a__seed0", "b__seed0"]
    lines = reproduction_lines(study)
    assert "| a__seed0 | 0.4100 | 0.4000 | -0.0100 | 0.0300 (2) | no | unknown (no environment.json) | " \
           "unknown (no environment.json) |" in lines
    assert any(line.startswith("| b__seed0 | 0.2000 | not finished |  | 0.0000 (1) |  |") for line in lines)
    assert reproduction_lines(tmp_path / "no_study") == []


def test_dry_run_lists_runs_and_commands_without_running(tmp_path, fake_train, capsys):
    script, read_calls = fake_train
    spec = runner_spec(tmp_path)
    project = tmp_path / "ablate"
    assert ablate.main([str(spec), "--dry-run", "--project", str(project), "--train-script", str(script)]) == 0
    out = capsys.readouterr().out
    assert "study fake: 4 runs (2 variants, seeds [0, 1]); baseline bce; 4 to start, 0 to resume, 0 to skip" in out
    assert "[4/4] focal__seed1  (start)" in out
    assert "variant: focal  grid: -  seed: 1" in out
    assert "overrides (on top of base): loss.objectness.name=focal loss.objectness.gamma=2" in out
    command = next(line for line in out.splitlines() if "--name focal__seed1" in line).split("command: ", 1)[1]
    argv = shlex.split(command)
    assert argv[0] == "python" and Path(argv[1]).resolve() == script.resolve()
    cfg = parse_like_train_py([sys.executable] + argv[1:])
    assert cfg.train.seed == 1 and cfg.loss.objectness.name == "focal" and cfg.train.epochs == 2
    assert not project.exists() and read_calls() == []  # nothing written, nothing run


def test_bad_spec_exits_2_with_message(tmp_path, capsys):
    spec = write_spec(tmp_path, with_changes(variants={"bce": {}, "focal": {"loss.objectness.gama": 2}}))
    assert ablate.main([str(spec), "--dry-run", "--project", str(tmp_path / "p")]) == 2
    assert "variants.focal.loss.objectness.gama: unknown key 'gama'" in capsys.readouterr().err


def test_missing_files_block_a_real_run(tmp_path, capsys):
    spec = write_spec(tmp_path, with_changes(base={"cfg": "nowhere.cfg"}))
    study = load_spec(spec)
    assert check_paths(study)[0].startswith("cfg = nowhere.cfg (needed by 4 run(s), e.g. bce__seed0)")
    assert ablate.main([str(spec), "--project", str(tmp_path / "p")]) == 2
    assert "nowhere.cfg" in capsys.readouterr().err and not (tmp_path / "p").exists()


@pytest.mark.parametrize("data_text, suffix", [
    ("path: .\ntrain: images/train\nval: images/val\nnames: [a]\n", ".yaml"),  # what `convert voc` writes
    ("classes = 1\ntrain = train.txt\nvalid = val.txt\nnames = x.names\n", ".data"),
])
def test_a_test_split_that_val_test_needs_is_checked_before_any_run(tmp_path, capsys, monkeypatch, data_text,
                                                                     suffix):
    monkeypatch.chdir(tmp_path)  # a .data file's paths are relative to the working directory
    (tmp_path / "x.names").write_text("a\n")
    data = tmp_path / f"mine{suffix}"
    data.write_text(data_text)
    spec = write_spec(tmp_path, with_changes(base={"cfg": str(ROOT / "cfg/yolov3-small.cfg"), "data": str(data),
                                                   "val.test": True}))
    expected = (f"val.test = true (set for 4 run(s), e.g. bce__seed0) but {data} has no 'test' split: add one "
                "(python -m yolov3.convert voc ... --test-fraction 0.1 makes one), or pass val.test=false")
    assert check_paths(load_spec(spec)) == [expected]
    assert ablate.main([str(spec), "--project", str(tmp_path / "p")]) == 2
    assert capsys.readouterr().err == f"error: {spec}: {expected}\n" and not (tmp_path / "p").exists()
    assert check_paths(load_spec(spec, overrides=["val.test=false"])) == []  # the way out the message names
    test_key = "test: images/test\n" if suffix == ".yaml" else "test = test.txt\n"
    data.write_text(data_text + test_key)
    assert check_paths(load_spec(spec)) == []


def test_runner_names_a_damaged_summary_and_resumes_the_run(tmp_path, fake_train, monkeypatch, capsys):
    script, read_calls = fake_train
    argv = [str(runner_spec(tmp_path)), "--project", str(tmp_path / "ablate"), "--train-script", str(script),
            "--no-report"]
    summary = tmp_path / "ablate" / "fake" / "runs" / "bce__seed1" / "summary.json"
    monkeypatch.setenv("FAKE_TRAIN_BAD_SUMMARY", "bce__seed1")
    assert ablate.main(argv) == 1  # exit 0 with a truncated summary.json is no finished run
    assert f"bce__seed1 failed (exit code 0 but {summary}: unreadable" in capsys.readouterr().err
    read_calls()
    monkeypatch.setenv("FAKE_TRAIN_BAD_SUMMARY", "")
    assert ablate.main(argv) == 0
    assert [(c["name"], c["resume"]) for c in read_calls()] == [("bce__seed1", True)]
    assert f"warning: {summary}: unreadable" in capsys.readouterr().err
    assert json.loads(summary.read_text())["status"] == "finished"


# ---------------------------------------------------------------------------------------------------------------
# Ctrl-C: the runner forwards one SIGINT and waits for train.py to save
# ---------------------------------------------------------------------------------------------------------------
FAKE_INTERRUPTIBLE_TRAIN = r'''
import os, signal, sys, time
from pathlib import Path

args = sys.argv[1:]
run_dir = Path(args[args.index("--project") + 1]) / args[args.index("--name") + 1]
run_dir.mkdir(parents=True, exist_ok=True)
received = []
signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))  # count, like train.py would notice
(run_dir / "started.tmp").write_text(str(os.getpid()))
os.replace(run_dir / "started.tmp", run_dir / "started")  # the test reads the pid as soon as the name appears
while not received:
    time.sleep(0.01)
(run_dir / "saving").write_text("")
time.sleep(float(os.environ["FAKE_SAVE_S"]))  # writing last.pt takes a while; a second SIGINT would cut it short
(run_dir / "last.pt").write_text(f"saved after {len(received)} SIGINT")
print("interrupted: saved", run_dir / "last.pt", flush=True)
sys.exit(130)
'''


def _wait_for(path: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def _start_interruptible_study(tmp_path: Path, save_s: float):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_INTERRUPTIBLE_TRAIN)
    env = dict(os.environ, FAKE_SAVE_S=str(save_s))
    # a session of its own stands for the terminal's foreground process group
    runner = subprocess.Popen([sys.executable, str(ROOT / "ablate.py"), str(runner_spec(tmp_path)), "--project",
                               str(tmp_path / "ablate"), "--train-script", str(script), "--no-report", "--jobs", "1"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    run_dir = tmp_path / "ablate" / "fake" / "runs" / "bce__seed0"
    try:
        _wait_for(run_dir / "started")
    except AssertionError:
        runner.kill()
        raise
    return runner, run_dir


@pytest.mark.skipif(os.name != "posix", reason="SIGINT to one process is POSIX")
@pytest.mark.parametrize("whole_group", [False, True], ids=["runner-only", "terminal-group"])
def test_interrupt_waits_for_the_child_to_save_its_checkpoint(tmp_path, whole_group):
    runner, run_dir = _start_interruptible_study(tmp_path, save_s=0.5)
    try:
        if whole_group:  # Ctrl-C at a terminal signals the whole foreground process group
            os.killpg(runner.pid, signal.SIGINT)
        else:
            runner.send_signal(signal.SIGINT)
        _, err = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 130, err
    # the child got exactly one SIGINT and had time to save; the runner launched nothing after it
    assert (run_dir / "last.pt").read_text() == "saved after 1 SIGINT"
    assert "interrupted: saved" in (run_dir / "console.log").read_text()
    assert "waiting for 1 run(s) to save last.pt" in err
    assert not (run_dir.parent / "bce__seed1").exists()


@pytest.mark.skipif(os.name != "posix", reason="SIGINT to one process is POSIX")
def test_second_interrupt_kills_the_child_at_once(tmp_path):
    runner, run_dir = _start_interruptible_study(tmp_path, save_s=120)
    child_pid = int((run_dir / "started").read_text())
    try:
        runner.send_signal(signal.SIGINT)
        _wait_for(run_dir / "saving")
        runner.send_signal(signal.SIGINT)
        _, err = runner.communicate(timeout=30)
    finally:
        if runner.poll() is None:
            runner.kill()
        child_alive = _alive(child_pid)
        if child_alive:  # never leave the sleeping fake behind, whatever the runner did
            os.kill(child_pid, signal.SIGKILL)
    assert runner.returncode == 130, err
    assert not child_alive  # killed and reaped by the runner, not left running
    assert not (run_dir / "last.pt").exists()


@pytest.mark.skipif(os.name != "posix", reason="SIGINT to one process is POSIX")
def test_a_second_interrupt_before_the_message_is_out_still_kills_the_child():
    """The second Ctrl-C can come while the runner is still printing that it waits (seen once in the suite: the
    child had its SIGINT, the runner was in its message, and the KeyboardInterrupt escaped, leaving it running)."""
    from yolov3.ablation import interrupt_and_wait

    ignores_sigint = ("import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                      "print('ready', flush=True); time.sleep(120)")
    child = subprocess.Popen([sys.executable, "-c", ignores_sigint],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    said = []

    def say(message):
        said.append(message)
        if len(said) == 1:
            raise KeyboardInterrupt  # the second Ctrl-C, delivered during the first message

    try:
        assert child.stdout.readline() == "ready\n"
        try:
            interrupt_and_wait([child], say=say)
        except KeyboardInterrupt:
            pytest.fail("the second interrupt escaped interrupt_and_wait without killing the child")
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert said[-1].startswith("killed the running run(s)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_default_jobs_one_per_gpu_else_two_cpu_runs(monkeypatch):
    monkeypatch.setattr(ablate.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(ablate.torch.cuda, "is_available", lambda: False)
    assert ablate.default_jobs("", []) == 2 and ablate.default_jobs("cpu", []) == 2
    assert ablate.default_jobs("0,1,2", ["0", "1", "2"]) == 3
    monkeypatch.setattr(ablate.os, "cpu_count", lambda: 1)
    assert ablate.default_jobs("cpu", []) == 1  # one core: nothing to share
    monkeypatch.setattr(ablate.torch.cuda, "is_available", lambda: True)
    assert ablate.default_jobs("", []) == 1  # train.py would put every run on the same GPU


def test_child_environment_splits_threads_and_quietens_progress_bars(monkeypatch):
    from yolov3.ablation import child_environment

    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    env = child_environment(2, None, cpu_count=4)
    assert (env["OMP_NUM_THREADS"], env["MKL_NUM_THREADS"], env["TQDM_MININTERVAL"]) == ("2", "2", "30")
    assert env["PYTHONUNBUFFERED"] == "1" and "CUDA_VISIBLE_DEVICES" not in env
    assert child_environment(1, "1")["CUDA_VISIBLE_DEVICES"] == "1"
    monkeypatch.setenv("TQDM_MININTERVAL", "1")  # the user's own choice wins
    assert child_environment(1, None)["TQDM_MININTERVAL"] == "1"


# ---------------------------------------------------------------------------------------------------------------
# The study on the user's data: key=value after the spec, recorded; the data's object : no-object cells
# ---------------------------------------------------------------------------------------------------------------
def test_command_line_overrides_replace_the_base_of_every_run(tmp_path):
    spec = write_spec(tmp_path, BASE_SPEC)
    study = load_spec(spec, overrides=["data=my.yaml", "train.epochs=50", "loss.obj_prior=0.01"])
    assert study.command_overrides == {"data": "my.yaml", "train.epochs": 50, "loss.obj_prior": 0.01}
    for run in study.runs:
        assert (run.config.data, run.config.train.epochs, run.config.loss.obj_prior) == ("my.yaml", 50, 0.01)
        assert run.config.cfg == "cfg/yolov3-small.cfg"  # the rest of the base stays
    command = train_command(study.runs[3], tmp_path / "runs")
    assert command[command.index("--data") + 1] == "my.yaml" and command[command.index("--epochs") + 1] == "50"
    assert "loss.obj_prior=0.01" in command
    assert load_spec(spec).runs[0].config.train.epochs == 3  # without them: the spec's own base


@pytest.mark.parametrize("overrides, message", [
    (["train.epoch=50"], "command line: train.epoch=50: unknown key 'epoch' (valid keys under 'train':"),
    (["epochs=50"], "did you mean 'train.epochs'?"),
    (["train.epochs=many"], "'train.epochs' expects an integer, got 'many'"),
    (["train.epochs"], "command line: override 'train.epochs' must look like key=value"),
    (["train.seed=3"], "command line: train.seed=3: the seeds are the spec's 'seeds' list"),
    (["loss.objectness.gamma=1"], "command line: loss.objectness.gamma: also set by variants.focal of "),
    (["loss.objectness.name=focal"], "also set by variants.bce, variants.focal of"),
])
def test_command_line_overrides_are_checked_like_the_spec(tmp_path, overrides, message):
    with pytest.raises(AblationError, match=re.escape(message)):
        load_spec(write_spec(tmp_path, BASE_SPEC), overrides=overrides)


def test_a_rerun_with_other_overrides_is_refused(tmp_path, fake_train, monkeypatch, capsys):
    script, read_calls = fake_train
    argv = [str(runner_spec(tmp_path)), "--project", str(tmp_path / "ablate"), "--train-script", str(script),
            "--no-report"]
    assert ablate.main(argv + ["train.batch_size=4"]) == 0
    recorded = json.loads((tmp_path / "ablate" / "fake" / "runs.json").read_text())["command_line_overrides"]
    assert recorded == {"train.batch_size": 4} and len(read_calls()) == 4
    capsys.readouterr()
    for other in (["train.batch_size=8"], []):
        assert ablate.main(argv + other) == 2
        err = capsys.readouterr().err
        assert (f"its runs were made with the command-line overrides train.batch_size=4, not "
                f"{'train.batch_size=8' if other else 'none'}; rerun with the same ones") in err
    assert ablate.main(argv + ["train.batch_size=4", "train.workers=0"]) == 0  # workers do not change results
    assert read_calls() == []


def test_dataset_record_and_report_give_the_datas_object_to_no_object_ratio(tmp_path, easy_data):
    from yolov3.ablation_runner import write_dataset_record
    from yolov3.report import build_report

    spec = with_changes(base={"cfg": "cfg/yolov3-small.cfg", "data": str(easy_data), "train.img_size": 128},
                        variants={"bce": {}, "focal": {"loss.objectness.name": "focal"},
                                  "big": {"train.img_size": 256}}, seeds=[0])
    study = load_spec(write_spec(tmp_path, spec))
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    entries = write_dataset_record(study, study_dir)
    # the easy data's train labels, counted here from the files: one object cell per box
    labels = sorted((easy_data.parent / "shapes" / "labels" / "train").glob("*.txt"))
    boxes = sum(len(path.read_text().split("\n")) - 1 for path in labels)
    assert len(labels) == 8 and boxes > 0
    cells_128 = 3 * (16 ** 2 + 8 ** 2 + 4 ** 2)  # yolov3-small: 3 anchors at strides 8, 16, 32 of 128 px
    assert [(e["arms"], e["img_size"], e["cells_per_image"]) for e in entries] == [
        (["bce", "focal"], 128, cells_128), (["big"], 256, 4 * cells_128)]
    assert (entries[0]["images"], entries[0]["object_cells"]) == (8, boxes)
    assert entries[0]["noobject_cells"] == 8 * cells_128 - boxes
    assert json.loads((study_dir / "dataset.json").read_text()) == entries
    summary = build_report(study_dir, plots=False).files["summary.md"].read_text()
    ratio = (8 * cells_128 - boxes) / boxes
    assert "## The data: object and no-object cells" in summary
    assert (f"- `{easy_data}` with `cfg/yolov3-small.cfg` at 128 px (arms bce, focal): object : no-object cells = "
            f"1 : {ratio:,.0f} ({boxes:,} object cells, one per box, and {8 * cells_128 - boxes:,} no-object cells "
            f"in 8 training images of {cells_128:,} cells)") in summary


# ---------------------------------------------------------------------------------------------------------------
# Planted-bug checks: what a run is started with, recorded as, and compared by
# ---------------------------------------------------------------------------------------------------------------
def test_every_started_run_reuses_the_folder_ablate_made_and_gets_the_device(tmp_path):
    """ablate.py makes runs/<run>/ before train.py starts, so train.py must be told --exist-ok (else it writes to
    <run>2/ and the study never sees the run); --device reaches started and resumed runs alike."""
    from yolov3.train_cli import parse_args

    study = load_spec(write_spec(tmp_path, with_changes(seeds=[0])))
    for run in study.runs:
        command = train_command(run, tmp_path / "runs", device="cpu")
        args = parse_args(command[2:])
        assert args.exist_ok is True and args.name == run.run_name and args.device == "cpu"
    (tmp_path / "study" / "runs" / "focal__seed0").mkdir(parents=True)
    (tmp_path / "study" / "runs" / "focal__seed0" / "last.pt").write_bytes(b"x")
    resumed = plan_runs(study, tmp_path / "study", device="cpu")[1]
    assert resumed.action == "resume" and resumed.command[-2:] == ["--device", "cpu"]


GRID_SPEC = dict(grid={"loss.objectness.alpha": [0.25, 0.5]}, grid_variants=["focal"])


def test_a_gridded_variant_keeps_its_arms_apart_and_variants_selects_all_of_them(tmp_path):
    from yolov3.ablation_runner import run_record

    study = load_spec(write_spec(tmp_path, with_changes(**GRID_SPEC)))
    gridded = next(r for r in study.runs if r.grid)
    assert run_record(study, gridded)["arm"] == gridded.arm == "focal__alpha=0.25"
    planned = plan_runs(study, tmp_path / "s")
    chosen = ablate.select_variants(planned, study, "focal")
    assert len(chosen) == 4 and {p.run.variant for p in chosen} == {"focal"}
    assert {p.run.arm for p in chosen} == {"focal__alpha=0.25", "focal__alpha=0.5"}
    with pytest.raises(AblationError, match=re.escape("command line: loss.objectness.alpha: also set by grid of")):
        load_spec(write_spec(tmp_path, with_changes(**GRID_SPEC)), overrides=["loss.objectness.alpha=0.9"])


def test_runs_json_records_the_hyp_of_a_run_it_skips(tmp_path):
    from yolov3.ablation_runner import write_study_files

    (tmp_path / "hyp.yaml").write_text("train:\n  lr0: 0.02\n")
    spec = with_changes(base={**BASE_SPEC["base"], "hyp": str(tmp_path / "hyp.yaml")}, seeds=[0])
    study = load_spec(write_spec(tmp_path, spec))
    study_dir = tmp_path / "study"
    fake_finished(study_dir / "runs" / study.runs[0].run_name, study.runs[0].config)
    planned = plan_runs(study, study_dir)
    assert planned[0].action == "skip"
    write_study_files(study, study_dir, planned)
    command = json.loads((study_dir / "runs.json").read_text())["runs"][0]["command"]
    assert command[command.index("--hyp") + 1] == str(tmp_path / "hyp.yaml")


def test_spec_checks_name_ranges_seeds_and_grids(tmp_path):
    assert load_spec(write_spec(tmp_path, with_changes(name="fake")), name="other").name == "other"
    bad = [
        (with_changes(variants={"bce": {}, "focal": {"loss.objectness.name": "focal", "train.epochs": 0}}),
         "variants.focal: 'train.epochs' must be"),
        (with_changes(seeds=[0, -1]), "x.yaml: seeds[1]: expected a non-negative integer, got -1"),
        (with_changes(grid={"loss.objectness.alpha": [0.25]}, grid_variants=[]), "grid: no variant to apply it to"),
        (with_changes(grid={"train.seed": [1, 2]}, grid_variants=["focal"]),
         "x.yaml: grid.train.seed: set seeds with the top-level 'seeds' list"),
    ]
    for spec, message in bad:
        with pytest.raises(AblationError, match=re.escape(message)):
            load_spec(write_spec(tmp_path, spec))


def test_runs_follow_the_order_of_the_seeds_list(tmp_path):
    names = [r.run_name for r in load_spec(write_spec(tmp_path, with_changes(seeds=[1, 0]))).runs]
    assert names == ["bce__seed1", "focal__seed1", "bce__seed0", "focal__seed0"]


def test_keys_that_do_not_change_results_do_not_make_a_finished_run_stale_and_small_values_count(tmp_path):
    study = load_spec(write_spec(tmp_path, with_changes(seeds=[0])))
    bce = study.runs[0]
    fake_finished(tmp_path / "study" / "runs" / bce.run_name,
                  config_lib.apply_overrides(bce.config, ["train.save_period=5"]))
    assert plan_runs(study, tmp_path / "study")[0].action == "skip"
    spec_cfg = config_lib.apply_overrides(bce.config, ["train.weight_decay=0.0001"])
    saved = config_lib.to_dict(config_lib.apply_overrides(bce.config, ["train.weight_decay=0.0005"]))
    assert config_differences(spec_cfg, saved) == ["train.weight_decay: run has 0.0005, spec gives 0.0001"]


def test_dataset_record_lists_each_arm_once_per_model(tmp_path, easy_data):
    from yolov3.ablation_runner import write_dataset_record

    spec = with_changes(base={"cfg": "cfg/yolov3-small.cfg", "data": str(easy_data), "train.img_size": 128},
                        variants={"bce": {}, "tiny": {"cfg": "cfg/yolov3-tiny.cfg"}}, seeds=[0, 1])
    study = load_spec(write_spec(tmp_path, spec))
    (tmp_path / "study").mkdir()
    entries = write_dataset_record(study, tmp_path / "study")
    assert [(e["cfg"], e["arms"]) for e in entries] == [("cfg/yolov3-small.cfg", ["bce"]),
                                                       ("cfg/yolov3-tiny.cfg", ["tiny"])]


def test_child_threads_one_job_keeps_the_inherited_setting_and_more_jobs_than_cores_get_one(monkeypatch):
    from yolov3.ablation import child_environment

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert child_environment(1, None, cpu_count=8)["OMP_NUM_THREADS"] == "1"
    env = child_environment(4, None, cpu_count=2)
    assert (env["OMP_NUM_THREADS"], env["MKL_NUM_THREADS"]) == ("1", "1")


def test_default_jobs_on_a_gpu_machine_and_a_many_core_cpu(monkeypatch):
    monkeypatch.setattr(ablate.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(ablate.torch.cuda, "is_available", lambda: False)
    assert ablate.default_jobs("", []) == 2 and ablate.default_jobs("cpu", []) == 2
    monkeypatch.setattr(ablate.torch.cuda, "is_available", lambda: True)
    assert ablate.default_jobs("", []) == 1 and ablate.default_jobs("cpu", []) == 2


def test_reproduce_tolerance_is_inclusive_printed_and_the_rerun_goes_to_the_named_gpu(bce_study, capsys):
    from yolov3.ablation_reproduce import Reproduction

    assert Reproduction("r", 0.25, 0.25, 0, float("nan"), {}, {}).within(0.0) is True
    argv, project, read_calls = bce_study
    assert ablate.main(argv + ["--reproduce", "bce__seed1", "--device", "3"]) == 0
    assert [(c["gpu"], c["device"]) for c in read_calls()] == [("3", "0")]
    assert ablate.main(argv + ["--reproduce", "bce__seed1", "--tolerance", "0"]) == 0  # the same digits
    assert ablate.main(argv + ["--reproduce", "bce__seed1", "--tolerance", "-1"]) == 2
    rerun = project / "fake" / "reproductions" / "bce__seed1"
    finished = json.loads((rerun / "summary.json").read_text())
    finished["final"]["mAP50_95"] += 0.006
    (rerun / "summary.json").write_text(json.dumps(finished))
    capsys.readouterr()
    assert ablate.main(argv + ["--reproduce", "bce__seed1", "--tolerance", "0.01"]) == 0
    assert "difference +0.0060: reproduced (tolerance 0.01)" in capsys.readouterr().out


def test_runner_counts_echoes_and_records_each_run_as_it_starts(tmp_path, fake_train, capsys, monkeypatch):
    from yolov3.ablation_runner import _tail, check_recorded_overrides

    script, read_calls = fake_train
    spec = runner_spec(tmp_path)
    study = load_spec(spec)
    one_seed = load_spec(write_spec(tmp_path, {**yaml.safe_load(spec.read_text()), "seeds": [0]}, "one.yaml"))
    study_dir = tmp_path / "s1"
    execute(one_seed, plan_runs(one_seed, study_dir, train_script=script), jobs=1, progress=False)
    out = capsys.readouterr().out
    assert "[1/2] bce__seed0 finished" in out and "[2/2] focal__seed0 finished" in out
    assert "fake training" not in out  # train.py's own output only with --verbose
    study_dir = tmp_path / "s2"
    fake_finished(study_dir / "runs" / "bce__seed0", one_seed.runs[0].config)
    execute(one_seed, plan_runs(one_seed, study_dir, train_script=script), jobs=1, progress=True)
    captured = capsys.readouterr()
    assert "[1/1] focal__seed0 finished" in captured.out + captured.err
    assert "2/2 runs |" in captured.err  # the skipped run counts as done
    study_dir = tmp_path / "s3"
    execute(one_seed, plan_runs(one_seed, study_dir, train_script=script), jobs=1, verbose=True, progress=False)
    assert "fake training bce__seed0" in capsys.readouterr().out
    log = tmp_path / "log.txt"
    log.write_text("\n".join(f"l{i}" for i in range(20)) + "\n")
    assert _tail(log) == "\n".join(f"    l{i}" for i in range(5, 20))
    # a rerun naming the same data file by a relative path is the same study
    monkeypatch.chdir(tmp_path)
    recorded = tmp_path / "s4"
    (recorded / "runs" / "bce__seed0").mkdir(parents=True)
    (recorded / "runs.json").write_text(json.dumps({"command_line_overrides": {"data": str(tmp_path / "data.yaml")}}))
    check_recorded_overrides(load_spec(spec, overrides=["data=data.yaml"]), recorded)
    read_calls()


def test_ablation_json_is_written_before_train_py_starts(tmp_path, capsys):
    probe = tmp_path / "probe.py"
    probe.write_text("import sys\nfrom pathlib import Path\na = sys.argv[1:]\n"
                     "d = Path(a[a.index('--project') + 1]) / a[a.index('--name') + 1]\n"
                     "(d / 'seen').write_text(str((d / 'ablation.json').is_file()))\n")
    study = load_spec(runner_spec(tmp_path))
    planned = plan_runs(study, tmp_path / "s", train_script=probe)
    execute(study, planned, jobs=1, progress=False)
    assert [(p.run_dir / "seen").read_text() for p in planned] == ["True"] * len(planned)


def _documented_specs() -> dict:
    """The example spec of docs/ablations.md and of yolov3/ablation.py's docstring, as a user would copy them."""
    from yolov3 import ablation

    page = (ROOT / "docs" / "ablations.md").read_text(encoding="utf-8")
    block = page.split("## The spec", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    doc = ablation.__doc__.split("\n")
    first = next(k for k, line in enumerate(doc) if line.strip().startswith("name: objectness"))
    last = next(k for k, line in enumerate(doc) if line.strip().startswith("- [focal__gamma=2"))
    return {"docs/ablations.md": block, "yolov3/ablation.py": "\n".join(line[4:] for line in doc[first:last + 1])}


@pytest.mark.parametrize("where", ["docs/ablations.md", "yolov3/ablation.py"])
def test_the_documented_example_specs_load_and_expand(tmp_path, monkeypatch, where):
    # both examples: bce, and focal multiplied by a 5 x 4 grid of gamma and alpha, over three seeds
    path = tmp_path / "example.yaml"
    path.write_text(_documented_specs()[where])
    monkeypatch.chdir(ROOT)
    runs = expand_runs(load_spec(path))
    arms = {run.arm for run in runs}
    assert len(arms) == 1 + 5 * 4 and len(runs) == 3 * len(arms), where
    assert "focal__gamma=2_alpha=0.25" in arms and "focal__gamma=0_alpha=none" in arms
    assert load_spec(path).contrasts == [("focal__gamma=2_alpha=0.25", "focal__gamma=0_alpha=0.25")]


def test_contrasts_name_grid_arms_and_reach_the_report_of_a_run_and_of_report_only(tmp_path, fake_train):
    spec = with_changes(variants={"bce": {}, "focal": {"loss.objectness.name": "focal"}},
                        grid={"loss.objectness.gamma": [1, 2]}, contrasts=[["focal__gamma=2", "focal__gamma=1"]])
    assert load_spec(write_spec(tmp_path, spec)).contrasts == [("focal__gamma=2", "focal__gamma=1")]
    script, _ = fake_train
    spec["base"] = yaml.safe_load(runner_spec(tmp_path).read_text())["base"]  # the fake runner's stand-in files
    argv = [str(write_spec(tmp_path, {**spec, "name": "c"})), "--project", str(tmp_path / "ablate"),
            "--train-script", str(script)]
    summary = tmp_path / "ablate" / "c" / "summary.md"
    assert ablate.main(argv) == 0
    row = "| focal__gamma=2 | focal__gamma=1 | mAP@0.5:0.95 | 2 |"
    assert row in summary.read_text()
    summary.unlink()
    assert ablate.main(argv + ["--report-only"]) == 0 and row in summary.read_text()
