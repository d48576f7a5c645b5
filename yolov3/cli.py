"""What every command line shares: ``--help`` shows each flag's default, and a flag of yolov5, ultralytics' yolov3,
Darknet or PyTorch-YOLOv3 that these commands do not have is answered with its nearest equivalent here.

    train.py: error: unrecognized argument --rect; nearest here: none needed: every image is letterboxed to the
    square --img-size, in training and validation alike

Standard library only (argparse, difflib).
"""
from __future__ import annotations

import argparse
import difflib
import os
from typing import Optional, Sequence


def sleep_idle_omp_threads() -> None:
    """Make idle OpenMP threads sleep at once instead of spinning (``OMP_WAIT_POLICY=PASSIVE``), unless the user set
    the policy. libgomp reads it when torch loads it, so detect.py and val.py call this before ``import torch``. On a
    shared CPU spinning threads made detection 5-16x slower, sleeping ones 1.2-2.9x (yolov3/threads.py,
    benchmarks/bench_load.py)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# flags of the tools our users come from, and what to type here instead (or why nothing is needed)
FOREIGN_FLAGS = {
    "--rect": "none needed: every image is letterboxed to the square --img-size, in training and validation alike",
    "--evolve": "ablate.py spec.yaml with a grid: sweeps config keys over seeds with paired confidence intervals",
    "--bucket": "none: copy the data to a local folder and point --data at its YAML",
    "--image-weights": "none: no class-weighted sampling; loss.cls.name=focal weighs hard classes in the loss instead",
    "--quad": "none: batches are plain stacks of letterboxed images",
    "--noautoanchor": "none needed: training uses the cfg's [yolo] anchors as written; python -m yolov3.anchors "
                      "--data D --write new.cfg fits them to your boxes beforehand",
    "--noplots": "none: the plots are cheap and always drawn",
    "--linear-lr": "train.schedule=step (or the default cosine schedule); there is no linear one",
    "--adam": "--optimizer AdamW",
    "--accumulate": "train.nominal_batch=N (images per optimiser step; gradients accumulate up to it)",
    "--notest": "--noval",
    "--cache-images": "--cache ram",
    "--entity": "none: no Weights & Biases; TensorBoard logs each epoch when the tensorboard package is installed",
    "--upload_dataset": "none: no Weights & Biases",
    "--bbox_interval": "none: no Weights & Biases; val_batch0_pred.jpg shows predictions at the end of training",
    "--artifact_alias": "none: no Weights & Biases",
    "--local_rank": "torchrun --nproc_per_node N train.py ... (each process reads LOCAL_RANK from the environment)",
    "--local-rank": "torchrun --nproc_per_node N train.py ... (each process reads LOCAL_RANK from the environment)",
    "--ndjson-console": "none: train.log in the run folder holds each epoch's line; results.csv the numbers",
    "--ndjson-file": "none: train.log in the run folder holds each epoch's line; results.csv the numbers",
    "--model": "--cfg (a Darknet .cfg)",
    "--pretrained_weights": "--weights",
    "--n_cpu": "--workers",
    "--checkpoint_interval": "--save-period N (weights/epoch<N>.pt every N epochs)",
    "--evaluation_interval": "val.interval=N (validate every N epochs)",
    "--multiscale_training": "--multi-scale",
    "--nms_thres": "--iou-thres (val.py, detect.py); in train.py val.iou_thres=X",
    "--logdir": "--project (train.log, results.csv and TensorBoard events go to the run folder)",
    "--augment": "none: no test-time augmentation",
    "--half": "none for inference: models run in float32 (training: train.amp=bf16|fp16)",
    "--dnn": "export.py --include darknet, then cv2.dnn.readNetFromDarknet on the files it writes",
    "--save-hybrid": "--save-txt (the detections; labels are not mixed in)",
    "--visualize": "none: no feature-map dumps",
    "--update": "none: checkpoints need no stripping (best.pt is already lean)",
    "--vid-stride": "none: every frame of a video is processed",
    "--verbose": "none needed: the per-class table is always printed",
    "--imgsz-val": "none: validation runs at the training size",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The module docstring as written, and ``(default: X)`` after every flag's help that does not state it.

    Switches that are off by default (``store_true``) and flags whose default is "not given" (None) show none; the
    help of such a flag says what happens without it (train.py's say which config key and default they stand for).
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = (action.help or "").strip()
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        shown = "''" if action.default == "" else "%(default)s"
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


class CommandParser(argparse.ArgumentParser):
    """argparse with :class:`HelpFormatter`, whose answer to a flag it does not know names the nearest one here:
    from :data:`FOREIGN_FLAGS`, the same flag with hyphens for underscores, or the closest spelling."""

    def __init__(self, description: Optional[str] = None, **kwargs) -> None:
        super().__init__(description=description, formatter_class=HelpFormatter, **kwargs)

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        if not action.help and action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            action.help = "(default: '')" if action.default == "" else "(default: %(default)s)"
        return action

    def parse_args(self, args: Optional[Sequence[str]] = None, namespace=None):  # noqa: D102 - argparse's
        # intermixed: key=value positionals may come before, between and after the flags (train.py, ablate.py)
        parsed, unknown = self.parse_known_intermixed_args(args, namespace)
        flags = [a for a in unknown if a.startswith("-") and len(a) > 1]
        if flags:
            self.error("; ".join(self.nearest(flag) for flag in flags))
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        return parsed

    def known_flags(self) -> list:
        return [option for action in self._actions for option in action.option_strings]

    def nearest(self, flag: str) -> str:
        """'unrecognized argument --x; nearest here: ...' for one unknown ``flag`` (``--x=value`` too)."""
        name = flag.split("=", 1)[0]
        known = self.known_flags()
        hyphenated = name[:2] + name[2:].replace("_", "-")
        if name in FOREIGN_FLAGS:
            hint = FOREIGN_FLAGS[name]
        elif hyphenated in known:
            hint = f"{hyphenated} (hyphens, not underscores)"
        else:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.7)
            hint = close[0] if close else "see --help"
        return f"unrecognized argument {name}; nearest here: {hint}"
