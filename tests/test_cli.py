"""Every command line answers --help with its documented flags; every shipped YAML loads."""
import subprocess
import sys
from pathlib import Path

import pytest

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


class _Payload:
    """Unpickling this runs code: it would create the marker file (what a malicious checkpoint does)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


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
    torch.save({"model": _Payload(marker), "cfg_text": "[net]"}, payload)
    plain = tmp_path / "plain.pt"  # not a torch.save zip: a bare pickle stream
    plain.write_bytes(pickle.dumps({"model": _Payload(marker)}))
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
