"""Config: defaults, YAML overrides, dotted overrides, and errors that name the key."""
import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from yolov3 import config as C

REPO = Path(__file__).resolve().parents[1]


def test_dotted_overrides_parse_yaml_values():
    cfg = C.apply_overrides(C.Config(), ["loss.objectness.name=focal", "loss.objectness.alpha=null",
                                         "loss.objectness.gamma=1.5", "train.epochs=3", "train.nesterov=false",
                                         "train.step_milestones=[0.5,0.75]"])
    assert cfg.loss.objectness.name == "focal"
    assert cfg.loss.objectness.alpha is None
    assert cfg.loss.objectness.gamma == 1.5
    assert cfg.train.epochs == 3 and cfg.train.nesterov is False
    assert cfg.train.step_milestones == [0.5, 0.75]
    # the class term is untouched: one field per axis
    assert cfg.loss.cls.name == "bce"


def test_int_is_accepted_for_float_and_integral_float_for_int():
    cfg = C.apply_overrides(C.Config(), ["loss.lambda_noobj=2", "train.epochs=4.0"])
    assert cfg.loss.lambda_noobj == 2.0 and isinstance(cfg.loss.lambda_noobj, float)
    assert cfg.train.epochs == 4 and isinstance(cfg.train.epochs, int)


@pytest.mark.parametrize("override, message", [
    ("loss.objectnes.gamma=1", "unknown key 'loss.objectnes'"),
    ("loss.objectness.gama=1", "unknown key 'loss.objectness.gama'"),
    ("train.epochs=abc", "'train.epochs' expects an integer, got 'abc'"),
    ("train.epochs=2.5", "'train.epochs' expects an integer"),
    ("loss.lambda_box=true", "'loss.lambda_box' expects a number"),
    ("train.ema=1", "'train.ema' expects true or false"),
    ("loss=3", "'loss' expects a mapping"),
    ("noequals", "must look like key=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(C.ConfigError, match="command line") as info:
        C.apply_overrides(C.Config(), [override])
    assert message in str(info.value)


def test_yaml_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "hyp.yaml"
    bad.write_text("train:\n  lr0: 0.01\n  momentun: 0.9\n")
    with pytest.raises(C.ConfigError) as info:
        C.load_config(bad)
    assert str(bad) in str(info.value) and "train.momentun" in str(info.value)
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(C.ConfigError, match="broken.yaml line"):
        C.load_config(broken)
    with pytest.raises(C.ConfigError, match="file not found"):
        C.load_config(tmp_path / "missing.yaml")


def test_precedence_defaults_then_yaml_then_overrides(tmp_path):
    hyp = tmp_path / "hyp.yaml"
    hyp.write_text("train:\n  lr0: 0.02\n  epochs: 7\n")
    cfg = C.load_config(hyp, ["train.epochs=9"])
    assert cfg.train.lr0 == 0.02 and cfg.train.epochs == 9
    assert cfg.train.momentum == C.TrainConfig().momentum


def test_saved_config_round_trips(tmp_path):
    cfg = C.apply_overrides(C.Config(), ["loss.objectness.name=focal", "loss.obj_prior=0.01"])
    C.save_config(cfg, tmp_path / "config.yaml")
    again = C.from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text()), source="config.yaml")
    assert again == cfg


def test_every_default_field_has_a_reason_comment():
    """Defaults live once, each with a one-line reason: every field line in config.py carries a comment."""
    source = (REPO / "yolov3" / "config.py").read_text().splitlines()
    for cls in (C.ObjectnessLossConfig, C.ClassLossConfig, C.LossConfig, C.AugmentConfig, C.TrainConfig,
                C.ValConfig, C.Config):
        for f in dataclasses.fields(cls):
            lines = [line for line in source if line.strip().startswith(f"{f.name}:")]
            assert lines, f.name
            assert any("#" in line for line in lines), f"{cls.__name__}.{f.name} has no reason comment"


def test_get_dotted():
    assert C.get_dotted(C.Config(), "loss.objectness.name") == "bce"
    with pytest.raises(C.ConfigError, match="unknown key 'loss.nope'"):
        C.get_dotted(C.Config(), "loss.nope")


def test_yaml_1_1_exponent_strings_are_numbers_and_nan_is_refused():
    assert C.apply_overrides(C.Config(), ["train.lr0=1e-3"]).train.lr0 == 0.001
    with pytest.raises(C.ConfigError, match="'loss.objectness.gamma' expects a finite number"):
        C.apply_overrides(C.Config(), ["loss.objectness.gamma=.nan"])


@pytest.mark.parametrize("override, message", [
    ("train.nominal_batch=0", "'train.nominal_batch' must be at least 1, got 0"),
    ("train.img_size=100", "'train.img_size' must be a multiple of 32 in [32, 8192], got 100"),
    # an extra 0 must fail here, not as an out-of-memory minutes later
    ("train.img_size=100000", "'train.img_size' must be a multiple of 32 in [32, 8192], got 100000"),
    ("train.img_size=8224", "'train.img_size' must be a multiple of 32 in [32, 8192], got 8224"),
    # train.py --seed -5 used to die with a traceback inside numpy's seeding
    ("train.seed=-5", "'train.seed' must be an integer in [0, 4294967295], got -5"),
    ("train.seed=4294967296", "'train.seed' must be an integer in [0, 4294967295], got 4294967296"),
    ("cutoff=0", "'cutoff' must be null or a number of layers, at least 1, got 0"),
    ("train.lr0=-0.1", "'train.lr0' must be greater than 0"),
    ("train.ema_tau=0", "'train.ema_tau' must be greater than 0"),
    ("train.step_milestones=[a]", "'train.step_milestones' must be a list of fractions in (0, 1]"),
    ("val.iou_thres=1.5", "'val.iou_thres' must be in (0, 1]"),
    ("augment.mosaic=2", "'augment.mosaic' must be a probability in [0, 1]"),
    ("train.optimizer=rmsprop", "'train.optimizer' must be one of sgd, adamw"),
    ("loss.box=l1", "'loss.box'"),
])
def test_validate_names_the_key_and_the_range(override, message):
    with pytest.raises(C.ConfigError) as info:
        C.validate(C.apply_overrides(C.Config(), [override]))
    assert message in str(info.value)


def test_defaults_are_valid():
    assert C.validate(C.Config()) == C.Config()


def test_img_size_seed_and_cutoff_ranges_are_closed_intervals():
    for key, last_good, first_bad in (("train.img_size", 8192, 8224), ("train.seed", 2**32 - 1, 2**32),
                                      ("train.seed", 0, -1), ("cutoff", 1, 0)):
        assert C.validate(C.apply_overrides(C.Config(), [f"{key}={last_good}"]))
        with pytest.raises(C.ConfigError, match=f"'{key}' must be"):
            C.validate(C.apply_overrides(C.Config(), [f"{key}={first_bad}"]))


def test_yaml_that_is_not_utf8_is_a_one_line_error_naming_the_file(tmp_path):
    latin1 = tmp_path / "hyp.latin1.yaml"
    latin1.write_bytes("train:\n  lr0: 0.02  # réglé\n".encode("latin-1"))
    with pytest.raises(C.ConfigError) as info:
        C.load_config(latin1)
    message = str(info.value)
    assert message.startswith(f"{latin1}: ") and "is not UTF-8 text" in message and "\n" not in message
    utf16 = tmp_path / "hyp.utf16.yaml"
    utf16.write_bytes("train:\n  lr0: 0.02\n".encode("utf-16"))
    with pytest.raises(C.ConfigError, match="hyp.utf16.yaml: file is not UTF-8 text"):
        C.load_config(utf16)
    # read_yaml serves every YAML reader and raises the caller's error class
    class SpecError(Exception):
        pass

    with pytest.raises(SpecError, match="spec is not UTF-8 text"):
        C.read_yaml(latin1, error=SpecError, what="spec")



def test_loss_choices_are_exactly_what_the_loss_module_implements():
    # config checks loss names without importing torch: its list must name exactly the losses yolov3.loss offers
    from yolov3.loss import OBJECTNESS_LOSSES

    assert sorted(C.LOSS_NAMES) == sorted(OBJECTNESS_LOSSES) == ["bce", "focal", "varifocal"]
    with pytest.raises(C.ConfigError, match=r"'loss.cls.name' is 'softmax'; choose from: bce, focal, varifocal"):
        C.validate(C.apply_overrides(C.Config(), ["loss.cls.name=softmax"]))


# every range of validate() at its edges: the value on the boundary, and the nearest invalid one on the other side
RANGE_EDGES = [
    # (key, accepted values at the edges, refused values just outside)
    ("train.img_size", [32, 8192], [0, 31, 33, 8224]),
    ("train.epochs", [1], [0]),
    ("train.batch_size", [1], [0]),
    ("train.nominal_batch", [1], [0]),
    ("train.seed", [0, 2**32 - 1], [-1, 2**32]),
    ("cutoff", [1, None], [0]),
    ("train.lr0", [1e-12], [0, -0.1]),
    ("train.lrf", [0, 1], [-0.001, 1.001]),
    ("train.momentum", [0, 0.999], [1, -0.001]),
    ("train.weight_decay", [0], [-1e-6]),
    ("train.warmup_epochs", [0], [-0.5]),
    ("train.warmup_momentum", [0, 0.999], [1]),
    ("train.warmup_bias_lr", [0], [-0.1]),
    ("train.step_milestones", [[1], [0.001, 1.0], []], [[0], [1.001], [True]]),
    ("train.step_gamma", [1e-9], [0]),
    ("train.ema_decay", [1e-9, 0.999999], [0, 1]),
    ("train.ema_tau", [1e-9], [0]),
    ("train.workers", [0], [-1]),
    ("train.grad_clip", [1e-9, None], [0]),
    ("train.diagnostics_every", [0], [-1]),
    ("train.patience", [0], [-1]),
    ("train.save_period", [0, 1], [-1]),
    ("train.freeze", [0, 10, "[0, 1, 5]", "[]"], [-1, "[-1]", "[0, true]", "[0.5]"]),
    ("val.conf_thres", [0, 1], [-0.001, 1.001]),
    ("val.iou_thres", [1e-9, 1], [0, 1.001]),
    ("val.max_det", [1], [0]),
    ("val.interval", [1], [0]),
    ("augment.hsv_h", [0, 0.5], [-0.001, 0.501]),
    ("augment.hsv_s", [0, 1], [-0.001, 1.001]),
    ("augment.hsv_v", [0, 1], [-0.001, 1.001]),
    ("augment.degrees", [0, 180], [-1, 181]),
    ("augment.translate", [0, 0.5], [-0.001, 0.501]),
    ("augment.scale", [0, 0.999], [1, -0.001]),
    ("augment.shear", [0, 89.9], [90, -0.1]),
    ("augment.fliplr", [0, 1], [-0.001, 1.001]),
    ("augment.mosaic", [0, 1], [-0.001, 1.001]),
]


def _with(key, value):
    return C.apply_overrides(C.Config(), [f"{key}={'null' if value is None else value}"])


LOSS_EDGES = [
    # the loss section's ranges (yolov3.config.validate_loss_config): accepted at the edges, refused just outside
    *[(f"loss.lambda_{term}", [0, 7.5], [-0.01]) for term in ("box", "obj", "noobj", "cls")],
    ("loss.cls.label_smoothing", [0, 1], [-0.01, 1.01]),
    ("loss.ignore_thresh", [0, 1, None], [-0.01, 1.01]),
    ("loss.extra_positive_iou", [0, 1, None], [-0.01, 1.01]),
    ("loss.obj_prior", [0.001, 0.999, None], [0, 1]),
    *[(f"loss.{part}.gamma", [0, 5], [-0.5]) for part in ("objectness", "cls")],
    *[(f"loss.{part}.alpha", [0, 1, None], [-0.01, 1.01]) for part in ("objectness", "cls")],
]


@pytest.mark.parametrize("key, accepted, refused", RANGE_EDGES + LOSS_EDGES,
                         ids=[edge[0] for edge in RANGE_EDGES + LOSS_EDGES])
def test_every_range_at_its_edges(key, accepted, refused):
    for value in accepted:
        cfg = _with(key, value)
        assert C.validate(cfg) is cfg, (key, value)
    # the loss section is checked by validate_loss_config, whose messages read "loss config: 'key' is ..."
    message = f"^loss config: '{re.escape(key)}' is " if key.startswith("loss.") else f"^config: '{key}' must be "
    for value in refused:
        with pytest.raises(C.ConfigError, match=message):
            C.validate(_with(key, value))


def test_range_table_covers_every_numeric_field():
    # a field added without a range would silently accept any number: every int/float field outside the loss
    # section (checked by loss.validate_loss_config) has a row in the table above
    covered = {edge[0] for edge in RANGE_EDGES}
    numeric = set()
    for section in ("train", "val", "augment"):
        for f in dataclasses.fields(getattr(C.Config(), section)):
            if isinstance(getattr(getattr(C.Config(), section), f.name), (int, float, list)) \
                    and not isinstance(getattr(getattr(C.Config(), section), f.name), bool):
                numeric.add(f"{section}.{f.name}")
    assert numeric - covered == set()


def test_field_reasons_are_the_comments_beside_the_fields():
    """--print-config's reasons come from config.py's own comments (read with tokenize/ast), one per dotted key."""
    reasons = C.field_reasons()
    assert list(reasons) == [key for key, _ in C.flat_items(C.Config())]  # every leaf, in declaration order
    assert reasons["train.patience"] == "stop after this many epochs without fitness gain; 0 = never"
    assert reasons["loss.objectness.gamma"] == "focal focusing parameter; 2 was best in Lin et al. 2017 (ignored by bce)"
    assert reasons["cfg"] == "Darknet model cfg"
    assert all(reasons.values()), [key for key, reason in reasons.items() if not reason]


def test_overrides_from_defaults_rebuild_the_config():
    """train.log's 'resolved' command: the key=value list that turns the defaults into this config again."""
    cfg = C.apply_overrides(C.Config(), ["data=my data.yaml", "loss.objectness.alpha=null", "train.freeze=[0, 2]",
                                         "train.lr0=0.02", "loss.objectness.name=focal"])
    overrides = C.overrides_from_defaults(cfg)
    assert overrides == ["data=my data.yaml", "loss.objectness.name=focal", "loss.objectness.alpha=null",
                         "train.lr0=0.02", "train.freeze=[0, 2]"]
    assert C.apply_overrides(C.Config(), overrides) == cfg
    assert C.overrides_from_defaults(C.Config()) == []


def test_negative_warmup_momentum_and_a_boolean_epoch_count_are_refused():
    with pytest.raises(C.ConfigError, match=re.escape("'train.warmup_momentum' must be in [0, 1)")):
        C.validate(C.apply_overrides(C.Config(), ["train.warmup_momentum=-0.1"]))
    with pytest.raises(C.ConfigError, match="'train.epochs' expects an integer, got True"):
        C.apply_overrides(C.Config(), ["train.epochs=true"])


def test_ranges_and_choices_the_docs_give_and_values_holding_an_equals_sign():
    with pytest.raises(C.ConfigError, match=re.escape("'train.grad_clip_epochs' must be null (every epoch) or at "
                                                      "least 1")):
        C.validate(C.apply_overrides(C.Config(), ["train.grad_clip_epochs=0"]))
    for ok in ("train.grad_clip_epochs=1", "train.grad_clip_epochs=null"):
        C.validate(C.apply_overrides(C.Config(), [ok]))
    for bad in ("train.lr0=.inf", "loss.lambda_box=-.inf"):
        with pytest.raises(C.ConfigError, match="expects a finite number"):
            C.apply_overrides(C.Config(), [bad])
    path = "runs/focal__gamma=2__seed0/weights/best.pt"  # ablation run names hold '='
    assert C.parse_override(f"weights={path}") == (["weights"], path)
    assert C.apply_overrides(C.Config(), [f"weights={path}"]).weights == path
    for amp in ("auto", "off", "bf16", "fp16"):
        assert C.validate(C.apply_overrides(C.Config(), [f"train.amp={amp}"])).train.amp == amp
    assert C.validate(C.apply_overrides(C.Config(), ["train.cache=off"])).train.cache == "off"
    with pytest.raises(C.ConfigError, match="'train.cache' must be one of auto, ram, off"):
        C.validate(C.apply_overrides(C.Config(), ["train.cache=disk"]))


def test_defaults_the_docs_promise():
    # README / docs/training.md: a bare train.py generates the built-in data; docs/training.md: cache auto;
    # docs/speed.md: two loader workers
    assert (C.Config().data, C.TrainConfig().cache, C.TrainConfig().workers) == ("data/shapes.yaml", "auto", 2)
