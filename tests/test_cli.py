"""Every command line answers --help with its documented flags; every shipped YAML loads."""
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CodeRunningPickle
from yolov3.config import load_config

REPO = Path(__file__).resolve().parents[1]

FLAGS = {
    "train.py": ["--cfg", "--data", "--hyp", "--weights", "--epochs", "--batch-size", "--img-size", "--device",
                 "--workers", "--project", "--name", "--exist-ok", "--resume", "--seed", "--multi-scale", "--cache",
                 "--noval", "--nosave", "key=value"],
    "val.py": ["--data", "--weights", "--cfg", "--img-size", "--batch-size", "--conf-thres", "--iou-thres",
               "--no-optimize",
               "--task", "--save-json", "--save-txt", "--save-conf", "--single-cls", "--project", "--name"],
    "detect.py": ["--source", "--weights", "--save-txt", "--view-img", "--no-optimize"],
    "ablate.py": ["--dry-run", "--jobs", "--device", "--report-only"],
    "export.py": ["--weights", "--cfg", "--include", "--target", "--img-size", "--out"],
}


@pytest.mark.parametrize("script", sorted(FLAGS))
def test_help(script):
    result = subprocess.run([sys.executable, str(REPO / script), "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for flag in FLAGS[script]:
        assert flag in result.stdout, f"{script} --help does not mention {flag}"


@pytest.mark.parametrize("hyp", sorted((REPO / "cfg" / "hyp").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_hyp_files_load(hyp):
    cfg = load_config(hyp)
    assert cfg.train.lr0 > 0


def test_train_cli_rejects_a_bad_override_before_any_work(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "train.py"), "--project", str(tmp_path),
                             "loss.objectness.alpha=high"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: command line: 'loss.objectness.alpha' expects float or null, "
                                     "got 'high'")
    assert not any(tmp_path.iterdir())  # no run folder was made


def test_no_yaml_a_user_is_given_runs_code(tmp_path):
    """A YAML tag that would run code (PyYAML's unsafe loaders build python objects from it) is an error naming the
    file, wherever YAML is read: data YAML, hyp file, key=value override, ablation spec, a study's run config."""
    from yolov3.ablation import AblationError, load_spec, plan_runs
    from yolov3.config import ConfigError, apply_overrides, Config
    from yolov3.data import DataError, load_data_yaml

    marker = tmp_path / "PWNED"
    evil = f"!!python/object/apply:os.system ['touch {marker}']"
    (tmp_path / "data.yaml").write_text(f"train: {evil}\nval: images\nnames: [a]\n")
    with pytest.raises(DataError, match=r"data\.yaml line 1: invalid YAML"):
        load_data_yaml(tmp_path / "data.yaml")
    (tmp_path / "hyp.yaml").write_text(f"train:\n  lr0: {evil}\n")
    with pytest.raises(ConfigError, match=r"hyp\.yaml line 2: invalid YAML"):
        load_config(tmp_path / "hyp.yaml")
    with pytest.raises(ConfigError, match="cannot parse the value of 'train.lr0'"):
        apply_overrides(Config(), [f"train.lr0={evil}"])
    spec = (REPO / "cfg" / "ablation" / "objectness.yaml").read_text()
    (tmp_path / "spec.yaml").write_text(spec.replace("\nname:", f"\nevil: {evil}\nname:", 1))
    with pytest.raises(AblationError, match=r"spec\.yaml line \d+: invalid YAML"):
        load_spec(tmp_path / "spec.yaml")
    study = load_spec(REPO / "cfg" / "ablation" / "objectness.yaml")
    run_dir = tmp_path / "study" / "runs" / study.runs[0].run_name
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text('{"status": "finished"}')
    (run_dir / "config.yaml").write_text(f"train: {evil}\n")  # a shared or committed study folder
    with pytest.raises(AblationError, match="config.yaml: unreadable or invalid YAML"):
        plan_runs(study, tmp_path / "study")
    assert not marker.exists()


def test_no_command_runs_code_from_a_checkpoint(tmp_path, capsys):
    """Every command that reads a .pt refuses one whose pickle would run code, and says so in one line."""
    import pickle

    import torch
    import yaml

    import detect
    import export
    import train
    import val

    marker = tmp_path / "PWNED"
    payload = tmp_path / "payload.pt"
    torch.save({"model": CodeRunningPickle(marker), "cfg_text": "[net]"}, payload)
    plain = tmp_path / "plain.pt"  # not a torch.save zip: a bare pickle stream
    plain.write_bytes(pickle.dumps({"model": CodeRunningPickle(marker)}))
    run_dir = tmp_path / "runs" / "exp"
    run_dir.mkdir(parents=True)
    (run_dir / "last.pt").write_bytes(payload.read_bytes())
    data = tmp_path / "tiny.yaml"
    data.write_text(yaml.safe_dump({"path": "shapes", "train": "images/train", "val": "images/val", "nc": 5,
                                    "names": ["circle", "rectangle", "triangle", "star", "cross"],
                                    "generate": {"train_images": 4, "val_images": 2, "img_size": 64, "seed": 0}}))
    image = tmp_path / "image.jpg"
    import cv2
    import numpy as np

    cv2.imwrite(str(image), np.full((64, 64, 3), 127, np.uint8))
    commands = {
        "train --weights": lambda w: train.main(["--weights", str(w), "--data", str(data), "--epochs", "1",
                                                 "--img-size", "64", "--workers", "0",
                                                 "--project", str(tmp_path / "runs"), "--name", "new"]),
        "train --resume": lambda w: train.main(["--resume", str(run_dir)]),
        "val": lambda w: val.main(["--weights", str(w), "--data", str(data), "--img-size", "64",
                                   "--project", str(tmp_path / "val")]),
        "detect": lambda w: detect.main(["--weights", str(w), "--source", str(image),
                                         "--project", str(tmp_path / "detect")]),
        "export": lambda w: export.main(["--weights", str(w), "--out", str(tmp_path / "export")]),
    }
    for name, command in commands.items():
        for weights in (payload, plain):
            capsys.readouterr()
            assert command(weights) == 2, name
            err = capsys.readouterr().err.strip().splitlines()[-1]
            assert err.startswith("error: ") and "Traceback" not in err, (name, err)
            if weights is payload:
                assert "refused: it asks to load the Python object 'exec'" in err, (name, err)
            assert not marker.exists(), f"{name} ran the payload of {weights.name}"


class _Captured(Exception):
    def __init__(self, parser):
        self.parser = parser


@pytest.mark.parametrize("script", ["train", "val", "detect", "ablate", "export"])
def test_every_help_shows_the_defaults(script, monkeypatch):
    """Each flag with a default states it in --help; train.py's flags also name the config key and its default."""
    import argparse
    import importlib

    from yolov3 import cli
    from yolov3.config import Config, get_dotted, yaml_text
    from yolov3.train_cli import FLAG_KEYS

    def capture(self, args=None, namespace=None):
        raise _Captured(self)

    monkeypatch.setattr(cli.CommandParser, "parse_args", capture)
    module = importlib.import_module(script)
    with pytest.raises(_Captured) as info:
        module.parse_args([])
    parser = info.value.parser
    formatter = parser._get_formatter()
    checked = 0
    for action in parser._actions:
        shown = formatter._expand_help(action) if action.help else ""
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            expected = "''" if action.default == "" else (
                " ".join(action.default) if isinstance(action.default, list) else str(action.default))
            assert f"(default: {expected}" in shown, (script, action.option_strings, shown)
            checked += 1
        if script == "train" and action.dest in FLAG_KEYS:
            key = FLAG_KEYS[action.dest]
            value = get_dotted(Config(), key)
            assert f"(default: {yaml_text(value) if value != '' else 'none'}; config key {key})" in shown, shown
            checked += 1
    assert checked >= 2


@pytest.mark.parametrize("script, argv, answer", [
    ("train", ["--rect"], "unrecognized argument --rect; nearest here: none needed: every image is letterboxed to "
                          "the square --img-size, in training and validation alike"),
    ("train", ["--evolve", "300"], "unrecognized argument --evolve; nearest here: ablate.py spec.yaml with a grid"),
    ("train", ["--img_size", "64"], "unrecognized argument --img_size; nearest here: --img-size (hyphens, not "
                                    "underscores)"),
    ("train", ["--epoks=3"], "unrecognized argument --epoks; nearest here: --epochs"),
    ("train", ["--bucket", "gs://x", "--quad"], "unrecognized argument --bucket; nearest here: none: copy the data "
                                                "to a local folder and point --data at its YAML; unrecognized "
                                                "argument --quad; nearest here: none"),
    ("val", ["--data", "d.yaml", "--weights", "w.pt", "--half"], "unrecognized argument --half; nearest here: none "
                                                                 "for inference"),
    ("detect", ["--weights", "w.pt", "--source", "x.jpg", "--visualize"], "unrecognized argument --visualize; nearest here: none: no "
                                                     "feature-map dumps"),
    ("ablate", ["spec.yaml", "--evolve"], "unrecognized argument --evolve; nearest here: ablate.py spec.yaml"),
    ("export", ["--weights", "w.pt", "--zzz"], "unrecognized argument --zzz; nearest here: see --help"),
])
def test_a_foreign_flag_is_answered_with_the_nearest_one_here(script, argv, answer, capsys):
    import importlib

    module = importlib.import_module(script)
    with pytest.raises(SystemExit) as info:
        module.parse_args(argv)
    assert info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: " + answer in last, last


def test_a_malformed_cfg_is_a_one_line_error(tmp_path, capsys):
    import train

    bad = tmp_path / "bad.cfg"
    bad.write_text("[net]\nwidth=64\nheight=64\nchannels=3\n[convolutional]\nfilters=abc\nsize=3\nstride=1\n"
                   "activation=leaky\n")
    assert train.main(["--cfg", str(bad), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.cfg" in err and "Traceback" not in err
