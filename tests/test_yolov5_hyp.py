"""A yolov5 hyp.*.yaml given to --hyp: translated key by key, loss gains and fl_gamma with their warnings, keys
without an equivalent refused by name (yolov3/yolov5_hyp.py)."""
import re
from pathlib import Path

import pytest
import yaml

from yolov3.config import Config, ConfigError, load_config
from yolov3.yolov5_hyp import is_yolov5_hyp, load_hyp

REPO = Path(__file__).resolve().parents[1]

# yolov5's hyp.scratch-low.yaml as its keys and values are (anchor_t left out; the tests add it)
SCRATCH_LOW = {"lr0": 0.01, "lrf": 0.01, "momentum": 0.937, "weight_decay": 0.0005, "warmup_epochs": 3.0,
               "warmup_momentum": 0.8, "warmup_bias_lr": 0.1, "box": 0.05, "cls": 0.5, "cls_pw": 1.0, "obj": 1.0,
               "obj_pw": 1.0, "iou_t": 0.20, "fl_gamma": 0.0, "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4,
               "degrees": 0.0, "translate": 0.1, "scale": 0.5, "shear": 0.0, "perspective": 0.0, "flipud": 0.0,
               "fliplr": 0.5, "mosaic": 1.0, "mixup": 0.0, "copy_paste": 0.0}


def write(tmp_path, data, name="hyp.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_yolov5_hyp_file_is_translated_key_by_key(tmp_path):
    data = {**{k: v for k, v in SCRATCH_LOW.items() if k != "iou_t"}, "lr0": 0.02, "warmup_epochs": 2.5,
            "hsv_s": 0.6, "scale": 0.9, "mosaic": 0.5, "box": 0.05, "obj": 0.7, "cls": 0.3}
    cfg, notes = load_hyp(write(tmp_path, data))
    assert (cfg.train.lr0, cfg.train.lrf, cfg.train.momentum, cfg.train.weight_decay) == (0.02, 0.01, 0.937, 0.0005)
    assert (cfg.train.warmup_epochs, cfg.train.warmup_momentum, cfg.train.warmup_bias_lr) == (2.5, 0.8, 0.1)
    assert (cfg.augment.hsv_h, cfg.augment.hsv_s, cfg.augment.hsv_v) == (0.015, 0.6, 0.4)
    assert (cfg.augment.degrees, cfg.augment.translate, cfg.augment.scale, cfg.augment.shear) == (0, 0.1, 0.9, 0)
    assert (cfg.augment.fliplr, cfg.augment.mosaic) == (0.5, 0.5)
    # its objectness BCE covers object and no-object cells alike: obj weighs both of our confidence terms
    assert (cfg.loss.lambda_box, cfg.loss.lambda_obj, cfg.loss.lambda_noobj, cfg.loss.lambda_cls) == (0.05, 0.7, 0.7,
                                                                                                      0.3)
    assert cfg.loss.objectness.name == "bce" and cfg.loss.cls.name == "bce"  # fl_gamma 0: no focal loss
    untouched = Config()
    assert (cfg.train.epochs, cfg.train.schedule, cfg.val) == (untouched.train.epochs, "cosine", untouched.val)
    assert notes[0].startswith(f"{tmp_path / 'hyp.yaml'}: read as a yolov5 hyp file: lr0 -> train.lr0, ")
    assert "obj -> loss.lambda_obj, obj -> loss.lambda_noobj" in notes[0]
    assert notes[1].startswith(f"warning: {tmp_path / 'hyp.yaml'}: box, cls, obj set the term weights loss.lambda_*")
    assert "the same gain weighs a term differently here" in notes[1]


def test_every_same_meaning_key_lands_on_its_own_setting(tmp_path):
    # a distinct value for each (none a default, none equal to another), so a key written into another's setting
    # shows; the expected place of each is written out here from yolov5's hyp files, not read from the module
    values = {"lr0": 0.021, "lrf": 0.031, "momentum": 0.91, "weight_decay": 0.00041, "warmup_epochs": 2.1,
              "warmup_momentum": 0.71, "warmup_bias_lr": 0.051, "hsv_h": 0.011, "hsv_s": 0.61, "hsv_v": 0.31,
              "degrees": 1.1, "translate": 0.121, "scale": 0.41, "shear": 0.21, "fliplr": 0.33, "mosaic": 0.77}
    cfg, _ = load_hyp(write(tmp_path, values))
    t, a = cfg.train, cfg.augment
    assert (t.lr0, t.lrf, t.momentum, t.weight_decay) == (0.021, 0.031, 0.91, 0.00041)
    assert (t.warmup_epochs, t.warmup_momentum, t.warmup_bias_lr) == (2.1, 0.71, 0.051)
    assert (a.hsv_h, a.hsv_s, a.hsv_v, a.degrees, a.translate, a.scale, a.shear, a.fliplr, a.mosaic) == (
        0.011, 0.61, 0.31, 1.1, 0.121, 0.41, 0.21, 0.33, 0.77)


def test_fl_gamma_turns_on_focal_loss_on_objectness_and_class_as_yolov5_does(tmp_path):
    cfg, notes = load_hyp(write(tmp_path, {"lr0": 0.01, "fl_gamma": 1.5}))
    for section in (cfg.loss.objectness, cfg.loss.cls):
        assert (section.name, section.gamma, section.alpha) == ("focal", 1.5, 0.25)
    assert notes[-1] == (f"warning: {tmp_path / 'hyp.yaml'}: fl_gamma 1.5: focal loss with gamma 1.5 and alpha 0.25 "
                         "on objectness AND class, as yolov5 applies it (loss.objectness.* and loss.cls.*; to study "
                         "focal objectness alone, set loss.cls.name=bce)")


def test_keys_without_an_equivalent_are_refused_by_name_unless_off(tmp_path):
    path = write(tmp_path, {**SCRATCH_LOW, "iou_t": 0.3, "anchor_t": 5.0, "mixup": 0.1})
    with pytest.raises(ConfigError) as info:
        load_hyp(path)
    message = str(info.value)
    assert message.startswith(f"{path}: yolov5 keys with no equivalent here: iou_t: 0.3 (an IoU threshold for "
                              "positives; here loss.extra_positive_iou); mixup: 0.1 (no mixup augmentation here); "
                              "anchor_t: 5.0 (yolov5's anchor-to-box ratio for positives")
    assert message.endswith(". Delete them (or set mixup: 0.0, which turns it off) to use the rest of the file")
    # a stock file as yolov5 ships it (anchor_t 4.0, iou_t 0.2) trains, saying what it ignores
    cfg, notes = load_hyp(write(tmp_path, {**SCRATCH_LOW, "anchor_t": 4.0}))
    assert cfg.train.momentum == 0.937
    assert any(n.startswith(f"warning: {tmp_path / 'hyp.yaml'}: iou_t: 0.2, anchor_t: 4.0 ignored (yolov5's stock "
                            "value)") for n in notes)
    # at their off values (cls_pw 1, mixup 0, ...) such keys are what we do anyway
    cfg, _ = load_hyp(write(tmp_path, {k: v for k, v in SCRATCH_LOW.items() if k != "iou_t"}))
    assert cfg.train.lr0 == 0.01


@pytest.mark.parametrize("data, message", [
    ({"lr0": 0.01, "dfl": 1.5}, "read as a yolov5 hyp file, but dfl is neither yolov5's nor a key of ours"),
    ({"lr0": 0.01, "train": {"epochs": 3}}, "yolov5 hyperparameters mixed with sections of ours (train)"),
    ({"lr0": "fast"}, "lr0: 'train.lr0' expects a number, got 'fast'"),
])
def test_bad_yolov5_files_are_one_line_errors(tmp_path, data, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_hyp(write(tmp_path, data))


@pytest.mark.parametrize("hyp", sorted((REPO / "cfg" / "hyp").glob("*.yaml")), ids=lambda p: p.name)
def test_our_own_hyp_files_load_as_before(hyp):
    assert not is_yolov5_hyp(yaml.safe_load(hyp.read_text()))
    assert load_hyp(hyp) == (load_config(hyp), [])


def test_a_yolov5_hyp_file_keeps_the_base_it_is_given(tmp_path):
    import dataclasses

    base = dataclasses.replace(Config(), train=dataclasses.replace(Config().train, img_size=416))
    cfg, _ = load_hyp(write(tmp_path, {"lr0": 0.02}), base)
    assert (cfg.train.img_size, cfg.train.lr0) == (416, 0.02)


def test_a_yolov5_hyp_without_fl_gamma_keeps_bce(tmp_path):
    cfg, notes = load_hyp(write(tmp_path, {"lr0": 0.02}))
    assert cfg.loss.objectness.name == cfg.loss.cls.name == "bce"
    assert not any("fl_gamma" in note for note in notes)
