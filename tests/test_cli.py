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
               "--task", "--save-json", "--project", "--name"],
    "detect.py": ["--source", "--weights", "--save-txt", "--view-img"],
    "ablate.py": ["--dry-run", "--jobs", "--device", "--report-only"],
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
