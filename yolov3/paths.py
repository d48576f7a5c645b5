"""Where the files that ship with the project live: model cfgs, data YAMLs, hyperparameter and ablation specs.

In a checkout they sit at the repository root (``cfg/``, ``data/``, beside ``train.py``). ``pip install`` copies
that same tree into the package as ``yolov3/commands/`` (``train.py``, ``val.py``, ... beside ``cfg/`` and
``data/``; see pyproject.toml), so the console commands run the very scripts of the checkout. :data:`ROOT` is
whichever of the two exists.

A path given to a command is taken relative to the working directory first (what a user in a checkout types
keeps working unchanged); a relative path that is not there falls back to the shipped file of the same name, so
``cd /tmp && yolov3-train --cfg cfg/yolov3-tiny.cfg`` finds the cfg that came with the package.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Union

PACKAGE_DIR = Path(__file__).resolve().parent
INSTALLED_ROOT = PACKAGE_DIR / "commands"  # the checkout's scripts, cfg/ and data/, as pip installs them
CHECKOUT_ROOT = PACKAGE_DIR.parent


def _root() -> Path:
    if (INSTALLED_ROOT / "cfg").is_dir():
        return INSTALLED_ROOT
    return CHECKOUT_ROOT


ROOT = _root()  # train.py, val.py, detect.py, ablate.py, export.py, cfg/ and data/ are here


def candidates(path: Union[str, os.PathLike]) -> List[Path]:
    """The places :func:`resolve_path` looks for ``path``, in order: as given, then (when relative) under ROOT."""
    given = Path(path).expanduser()
    found = [given]
    if not given.is_absolute() and (ROOT / given) != given.resolve():
        found.append(ROOT / given)
    return found


def resolve_path(path: Union[str, os.PathLike]) -> Path:
    """``path`` if it exists (relative to the working directory), else the shipped file of that relative name
    under ROOT when that exists, else ``path`` unchanged (so the caller's "not found" names what was typed;
    :func:`tried` lists where it looked)."""
    for candidate in candidates(path):
        if candidate.exists():
            return candidate
    return Path(path)


def tried(path: Union[str, os.PathLike]) -> str:
    """``"looked for <a> and <b>"``: every place :func:`resolve_path` tried, as absolute paths, for an error."""
    return "looked for " + " and ".join(str(p if p.is_absolute() else Path.cwd() / p) for p in candidates(path))


def is_shipped(path: Union[str, os.PathLike]) -> bool:
    """True when ``path`` is one of the files installed inside the package (not a checkout's, not the user's)."""
    try:
        Path(path).resolve().relative_to(INSTALLED_ROOT)
    except ValueError:
        return False
    return INSTALLED_ROOT.is_dir()


def data_yaml_base(yaml_path: Union[str, os.PathLike]) -> Path:
    """The folder a data YAML's relative ``path:`` is taken from: the YAML's own folder, except for the YAMLs
    installed inside the package. Their datasets go where they would go in a checkout whose root is the working
    directory: ``data/shapes.yaml``'s ``path: ../datasets/shapes`` becomes ``./datasets/shapes``, never a folder
    inside site-packages."""
    yaml_path = Path(yaml_path).resolve()
    if is_shipped(yaml_path):
        return Path.cwd() / yaml_path.parent.relative_to(INSTALLED_ROOT)
    return yaml_path.parent
