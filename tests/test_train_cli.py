"""train.py's command line without training (yolov3/train_cli.py): yolov5's flags and the keys they set, the size of
another --cfg, --print-config, the resolved command of train.log."""
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from yolov3.config import Config, ConfigError, to_dict
from yolov3.train_cli import check_resume_flags, command_header, format_config, parse_args, resolve_config

REPO = Path(__file__).resolve().parents[1]


def resolved(*argv):
    return resolve_config(parse_args(list(argv)))


def test_yolov5_flags_set_their_config_keys():
    cfg, notes = resolved("--imgsz", "320", "--optimizer", "AdamW", "--patience", "5", "--sync-bn",
                          "--label-smoothing", "0.1", "--save-period", "2", "--freeze", "10", "--single-cls",
                          "--cache", "--batch", "8")
    assert (cfg.train.img_size, cfg.train.optimizer, cfg.train.patience, cfg.train.sync_bn) == (320, "adamw", 5, True)
    assert (cfg.loss.cls.label_smoothing, cfg.train.save_period, cfg.train.freeze) == (0.1, 2, 10)
    assert (cfg.train.single_cls, cfg.train.cache, cfg.train.batch_size) == (True, "ram", 8)
    assert notes == []
    assert resolved("--img", "128")[0].train.img_size == 128
    assert resolved("--freeze", "0", "1", "5")[0].train.freeze == [0, 1, 5]  # several numbers: layer indices
    untouched = resolved()[0]
    assert untouched == Config()  # flags not given leave every key to --hyp and the defaults


def test_the_darknet_era_flags_set_their_config_keys(tmp_path):
    import torch

    start = str(tmp_path / "start.pt")
    torch.save({"model": {}}, start)
    cfg, _ = resolved("--cfg", "cfg/yolov3-tiny.cfg", "--data", "data/bccd.yaml", "--weights", start, "--cutoff", "75",
                      "--epochs", "7", "--batch-size", "4", "--img-size", "96", "--workers", "3", "--seed", "11",
                      "--multi-scale")
    assert (cfg.cfg, cfg.data, cfg.weights, cfg.cutoff) == ("cfg/yolov3-tiny.cfg", "data/bccd.yaml", start, 75)
    t = cfg.train
    assert (t.epochs, t.batch_size, t.img_size, t.workers, t.seed, t.multi_scale) == (7, 4, 96, 3, 11, True)


def test_cos_lr_and_the_order_hyp_flags_overrides(tmp_path):
    hyp = tmp_path / "step.yaml"
    hyp.write_text(yaml.safe_dump({"train": {"schedule": "step", "patience": 3}}))
    assert resolved("--hyp", str(hyp))[0].train.schedule == "step"
    assert resolved("--hyp", str(hyp), "--cos-lr")[0].train.schedule == "cosine"  # a flag beats --hyp
    assert resolved("--hyp", str(hyp), "--patience", "4", "train.patience=6")[0].train.patience == 6  # overrides last


@pytest.mark.parametrize("argv, message", [
    (["--optimizer", "Adam"], "argument --optimizer: Adam is not offered here; the nearest is AdamW (Adam with "
                              "decoupled weight decay): --optimizer AdamW"),
    (["--cache", "disk"], "argument --cache: 'disk' is not offered (no cache files beside the images); the nearest "
                          "is --cache ram: the decoded images in memory"),
])
def test_yolov5_values_we_do_not_have_name_the_nearest(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2 and capsys.readouterr().err.strip().endswith(f"error: {message}")


def test_another_cfg_sets_the_image_size_to_its_width_unless_one_is_given():
    cfg, notes = resolved("--cfg", "cfg/yolov3-tiny.cfg")  # [net] width=416
    assert cfg.train.img_size == 416
    assert notes == ["img size 416: the [net] width of cfg/yolov3-tiny.cfg (give --img-size to train at another)"]
    for extra in (["--img-size", "320"], ["train.img_size=320"]):
        cfg, notes = resolved("--cfg", "cfg/yolov3-tiny.cfg", *extra)
        assert cfg.train.img_size == 320 and notes == []
    assert resolved("--cfg", "cfg/yolov3-small.cfg") == (Config(), [])  # the default cfg keeps the default size
    with pytest.raises(ConfigError, match="'cfg': file not found: cfg/none.cfg"):
        resolved("--cfg", "cfg/none.cfg")


def test_print_config_lists_every_key_with_its_default_and_reason():
    text = format_config(resolved("--patience", "7")[0])
    lines = text.splitlines()

    def dotted(tree, prefix=""):  # the keys of the saved config.yaml, walked independently of format_config
        return [k for key, value in tree.items()
                for k in (dotted(value, f"{prefix}{key}.") if isinstance(value, dict) else [prefix + key])]

    assert [line.split(" = ")[0] for line in lines] == dotted(to_dict(Config()))  # one line per key, in order
    patience = next(line for line in lines if line.startswith("train.patience = "))
    assert patience.split("#")[0].strip() == "train.patience = 7 (default 0)"
    assert patience.split("# ", 1)[1] == "stop after this many epochs without fitness gain; 0 = never"
    assert next(line for line in lines if line.startswith("weights = ")).split("#")[0].strip() == "weights = ''"


def test_resume_refuses_the_new_flags_too():
    for flag in (["--freeze", "3"], ["--single-cls"], ["--imgsz", "320"], ["--cos-lr"]):
        with pytest.raises(ConfigError, match="cannot change it"):
            check_resume_flags(parse_args(["--resume", *flag]))
    check_resume_flags(parse_args(["--resume", "--workers", "0"]))  # allowed


def test_the_resolved_command_of_train_log_trains_the_same_config(tmp_path, monkeypatch):
    hyp = tmp_path / "hyp.yaml"
    hyp.write_text(yaml.safe_dump({"lr0": 0.02, "fl_gamma": 2.0}))  # yolov5's, translated
    args = parse_args(["--hyp", str(hyp), "--freeze", "0", "2", "--imgsz", "128", "loss.obj_prior=0.01"])
    cfg, _ = resolve_config(args)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    command, resolved_line = command_header(args, cfg, resumed=False)
    assert command == f"command: python train.py --hyp {hyp} --freeze 0 2 --imgsz 128 loss.obj_prior=0.01"
    words = shlex.split(resolved_line.removeprefix("resolved: "))
    assert words[:2] == ["python", "train.py"]
    assert resolve_config(parse_args(words[2:]))[0] == cfg  # no --hyp needed any more
    assert command_header(args, cfg, resumed=True) == [command]


def test_a_hyp_file_keeps_the_cfgs_width_and_resume_refuses_a_new_name(tmp_path):
    (tmp_path / "hyp.yaml").write_text("train:\n  lr0: 0.02\n")
    cfg, notes = resolve_config(parse_args(["--cfg", "cfg/yolov3-tiny.cfg", "--hyp", str(tmp_path / "hyp.yaml")]))
    assert (cfg.train.img_size, cfg.train.lr0) == (416, 0.02)
    assert any("img size 416" in note for note in notes)
    with pytest.raises(ConfigError, match="--name cannot change it"):
        check_resume_flags(parse_args(["--resume", "--name", "other"]))


def test_flags_the_docs_give_cache_off_bare_resume_project_and_a_non_square_cfgs_width(tmp_path):
    assert resolve_config(parse_args(["--cache", "off"]))[0].train.cache == "off"
    assert resolve_config(parse_args(["--cache", "auto"]))[0].train.cache == "auto"
    assert parse_args(["--resume"]).resume == "" and parse_args([]).resume is None
    assert parse_args([]).project == "runs/train"
    text = Path("cfg/yolov3-tiny.cfg").read_text().replace("width=416", "width=320").replace("height=416", "height=192")
    (tmp_path / "rect.cfg").write_text(text)
    cfg, notes = resolve_config(parse_args(["--cfg", str(tmp_path / "rect.cfg")]))
    assert cfg.train.img_size == 320 and any(note.startswith("img size 320") for note in notes)


def test_an_old_pickle_checkpoint_is_accepted_and_junk_named_pt_is_not(tmp_path):
    import pickle

    from yolov3.train_cli import check_weights_file

    (tmp_path / "old.pt").write_bytes(pickle.dumps({"model": {}}))
    assert check_weights_file(str(tmp_path / "old.pt")) == tmp_path / "old.pt"
    (tmp_path / "x.pt").write_bytes(b"\x00junk")
    with pytest.raises(ConfigError, match="is named .pt but is not a PyTorch checkpoint"):
        check_weights_file(str(tmp_path / "x.pt"))


@pytest.mark.parametrize("flag, nearest", [("--notest", "--noval"), ("--adam", "--optimizer AdamW")])
def test_flags_of_other_ports_are_answered_with_the_nearest_here(flag, nearest, capsys):
    with pytest.raises(SystemExit) as info:
        parse_args([flag])
    assert info.value.code == 2
    assert f"error: unrecognized argument {flag}; nearest here: {nearest}" in capsys.readouterr().err.splitlines()[-1]
