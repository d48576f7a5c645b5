"""pip install: pyproject.toml agrees with the requirements files, the wheel holds the scripts, cfg/ and data/,
the installed commands find their default files from any folder, and `from yolov3 import ...` works lazily."""
import os
import shutil
import subprocess
import sys
import zipfile
from fnmatch import fnmatch
from pathlib import Path

import pytest

from yolov3 import paths

REPO = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")  # Python >= 3.11; the checks below only read pyproject.toml
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def requirement_lines(path):
    return [ln.split("#")[0].strip() for ln in path.read_text().splitlines()
            if ln.split("#")[0].strip() and not ln.startswith("-r")]


def test_pyproject_lists_the_requirements_files():
    dynamic = PYPROJECT["tool"]["setuptools"]["dynamic"]
    assert dynamic["dependencies"] == {"file": ["requirements.txt"]}
    assert sorted(PYPROJECT["project"]["optional-dependencies"]["dev"]) == sorted(
        requirement_lines(REPO / "requirements-dev.txt"))
    assert PYPROJECT["project"]["requires-python"] == ">=3.10"


def test_every_console_script_reaches_a_main_and_every_shipped_file_is_packaged():
    scripts = PYPROJECT["project"]["scripts"]
    assert set(scripts) == {"yolov3-train", "yolov3-val", "yolov3-detect", "yolov3-ablate", "yolov3-export"}
    for target in scripts.values():
        module, function = target.split(":")
        assert module.startswith("yolov3.commands.") and function == "main"
        assert "\ndef main(" in (REPO / f"{module.rsplit('.', 1)[1]}.py").read_text()
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["yolov3.commands"]
    shipped = [p.relative_to(REPO).as_posix() for folder in ("cfg", "data") for p in (REPO / folder).rglob("*")
               if p.is_file() and "__pycache__" not in p.parts]
    assert shipped and all(any(fnmatch(f, pattern) and f.count("/") == pattern.count("/") for pattern in patterns)
                           for f in shipped), shipped


def test_resolve_path_prefers_the_working_directory_then_the_shipped_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = paths.ROOT / "cfg" / "yolov3-tiny.cfg"
    assert paths.resolve_path("cfg/yolov3-tiny.cfg") == shipped  # nothing here: the shipped one
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "yolov3-tiny.cfg").write_text("[net]\n")
    assert paths.resolve_path("cfg/yolov3-tiny.cfg") == Path("cfg/yolov3-tiny.cfg")  # the user's own wins
    assert paths.resolve_path("cfg/none.cfg") == Path("cfg/none.cfg")  # neither: unchanged, for the error
    assert paths.tried("cfg/none.cfg") == f"looked for {tmp_path / 'cfg/none.cfg'} and {paths.ROOT / 'cfg/none.cfg'}"
    absolute = tmp_path / "x.cfg"
    assert paths.resolve_path(absolute) == absolute and paths.candidates(absolute) == [absolute]


def test_train_error_names_both_places_it_looked(tmp_path, monkeypatch, capsys):
    import train

    monkeypatch.chdir(tmp_path)
    assert train.main(["--cfg", "cfg/nothing.cfg", "--project", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: 'cfg': file not found: cfg/nothing.cfg (looked for {tmp_path / 'cfg/nothing.cfg'} "
                   f"and {REPO / 'cfg/nothing.cfg'})")


def test_a_shipped_data_yaml_puts_its_dataset_under_the_working_directory(tmp_path, monkeypatch):
    """Installed, data/coco.yaml lies in site-packages; its `path: ../datasets/coco` must not point in there."""
    from yolov3.data import load_data_yaml

    installed = tmp_path / "site" / "yolov3" / "commands"
    (installed / "cfg").mkdir(parents=True)
    (installed / "data").mkdir()
    shutil.copy(REPO / "data" / "coco.yaml", installed / "data" / "coco.yaml")
    monkeypatch.setattr(paths, "INSTALLED_ROOT", installed)
    monkeypatch.setattr(paths, "ROOT", installed)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    data = load_data_yaml("data/coco.yaml")  # not in the working directory: the installed one
    assert data["yaml"] == str(installed / "data" / "coco.yaml")
    assert data["path"] == str(work / "datasets" / "coco")
    assert data["val"] == [str(work / "datasets" / "coco" / "images" / "val2017")]
    # a YAML of the user's (or a checkout's) keeps its own folder as the base
    (work / "mine").mkdir()
    (work / "mine" / "my.yaml").write_text("path: ../sets/x\ntrain: a\nval: b\nnames: [p]\n")
    assert load_data_yaml(work / "mine" / "my.yaml")["path"] == str(work / "sets" / "x")


def fresh_python(code: str) -> str:
    """What ``code`` prints, run by a fresh interpreter in the checkout (nothing imported yet)."""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_import_yolov3_is_light_and_the_api_names_resolve():
    out = fresh_python("import sys, yolov3; assert 'torch' not in sys.modules, 'import yolov3 loaded torch'\n"
                       "from yolov3 import Darknet, load_model, Detector, YOLOLoss, export_darknet\n"
                       "from yolov3.model import Darknet as D; from yolov3.detector import Detector as De\n"
                       "assert Darknet is D and Detector is De and callable(load_model)\n"
                       "assert YOLOLoss.__name__ == 'YOLOLoss'\n"
                       "try:\n    yolov3.Nothing\nexcept AttributeError as e:\n    print(e)\n")
    assert out.strip() == "module 'yolov3' has no attribute 'Nothing'"


def test_detect_start_up_loads_no_training_dataset_or_download_module():
    """detect.py's imports leave out what detecting never uses; the exception classes a user's mistake raises are
    still all caught (user_errors imports their modules when called)."""
    unused = ["yolov3.checkpoint", "yolov3.data_yaml", "yolov3.dataset", "yolov3.fetch", "yolov3.archives",
              "yolov3.convert", "yolov3.optim", "yolov3.loss", "yolov3.synthetic", "matplotlib"]
    out = fresh_python(f"import sys; sys.argv = ['detect.py']; import detect\n"
                       f"print(sorted(m for m in {unused!r} if m in sys.modules))\n"
                       f"from yolov3.errors import user_errors\n"
                       f"print(sorted(c.__name__ for c in user_errors()))\n")
    loaded, caught = out.splitlines()
    assert loaded == "[]"
    assert caught == str(sorted(["FileNotFoundError", "OutputError", "ConfigError", "CfgError", "WeightsError",
                                 "DataError", "RunFolderError"]))


@pytest.mark.slow
def test_the_built_wheel_runs_from_any_folder(tmp_path):
    """Build the wheel from a copy of the checkout (no network: the installed setuptools), install it into a
    folder of its own, and use it from a folder that is not the checkout."""
    pytest.importorskip("setuptools")
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "runs", "datasets", "__pycache__", "*.pt",
                                                                ".venv", "build", "*.egg-info", ".pytest_cache"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next((tmp_path / "wheel").glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for expected in ("yolov3/commands/train.py", "yolov3/commands/detect.py", "yolov3/commands/export.py",
                     "yolov3/commands/cfg/yolov3-small.cfg", "yolov3/commands/cfg/hyp/hyp.scratch.yaml",
                     "yolov3/commands/cfg/ablation/objectness.yaml", "yolov3/commands/data/shapes.yaml",
                     "yolov3/commands/data/coco.names", "yolov3/paths.py", "yolov3/detector.py"):
        assert expected in names, expected
    assert not [n for n in names if "/" not in n]  # nothing at the top of site-packages (no train.py there)
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:  # what pip install does with a pure-Python wheel's files
        archive.extractall(site)
    work = tmp_path / "work"
    work.mkdir()
    code = ("import sys\nfrom yolov3 import paths\nprint(paths.ROOT)\n"
            "print(paths.resolve_path('cfg/yolov3-small.cfg'))\n"
            "from yolov3.data import load_data_yaml\nprint(load_data_yaml('data/coco.yaml')['path'])\n"
            "from yolov3.commands import detect\nsys.argv = ['yolov3-detect', '--help']\ndetect.main()\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == str(site / "yolov3" / "commands")
    assert lines[1] == str(site / "yolov3" / "commands" / "cfg" / "yolov3-small.cfg")
    assert lines[2] == str(work / "datasets" / "coco")
    assert "usage:" in result.stdout and "--weights" in result.stdout
