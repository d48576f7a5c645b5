"""Running a planned study: train.py processes, a few at a time, each logged to its run folder; Ctrl-C handled.

Each run's whole output (progress bars included) goes to ``<run>/console.log``; train.py writes its own line-based
``train.log`` beside it. A line per finished run (its mAP@.5:.95 and time) and one bar over the study (with an ETA)
show the progress. Ctrl-C while runs are going forwards one SIGINT to each train.py (they run in sessions of their
own, so the terminal does not signal them twice) and waits for them to save last.pt and exit; a second Ctrl-C kills
them. The study folder records the command-line overrides a study was run with (runs.json) and the object :
no-object cell ratio of the user's data (dataset.json, for the report).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from tqdm import tqdm

from yolov3.ablation_plan import PlannedRun, display_command, parse_devices, train_command
from yolov3.ablation_spec import IGNORED_CONFIG_KEYS, PATH_CONFIG_KEYS, AblationError, RunSpec, Study
from yolov3.config import yaml_text
from yolov3.datastats import model_statistics
from yolov3.files import atomic_write_text
from yolov3.runs import read_summary

CONSOLE_LOG = "console.log"  # everything a run's train.py printed, progress bars included (train.log: its lines)


@dataclass
class RunOutcome:
    run_name: str
    action: str
    status: str  # 'finished', 'skipped', 'failed'
    exit_code: Optional[int]
    seconds: float
    message: str = ""


# --------------------------------------------------------------------------------------------------------------------
# Writing the study folder
# --------------------------------------------------------------------------------------------------------------------
def run_record(study: Study, run: RunSpec, command: Sequence[str] = ()) -> dict:
    """The JSON-able identity of a run (an entry of runs.json and the content of ablation.json)."""
    return {"study": study.name, "baseline": study.baseline, "index": run.index, "run_name": run.run_name,
            "variant": run.variant, "arm": run.arm, "grid": run.grid, "seed": run.seed,
            "overrides": run.overrides, "command": list(command)}


def write_study_files(study: Study, study_dir: Union[str, Path], planned: Sequence[PlannedRun]) -> None:
    """spec.yaml (verbatim copy) and runs.json (every run with its identity and the command that starts it).

    A resumed run is recorded with its start command, not ``--resume <last.pt>``: the record is for rebuilding a run
    from nothing, and the checkpoint it would resume from is never committed.
    """
    study_dir = Path(study_dir)
    atomic_write_text(study_dir / "spec.yaml", study.spec_text)
    records = [run_record(study, p.run, p.command if p.action == "start"
                          else train_command(p.run, study_dir / "runs", study.hyp)) for p in planned]
    atomic_write_text(study_dir / "runs.json", json.dumps({"study": study.name, "baseline": study.baseline,
                                                           "grid_keys": list(study.grid), "seeds": study.seeds,
                                                           "command_line_overrides": study.command_overrides,
                                                           "runs": records}, indent=2))


def _overrides_text(overrides: dict) -> str:
    return " ".join(f"{key}={yaml_text(value)}" for key, value in overrides.items()) or "none"


def check_recorded_overrides(study: Study, study_dir: Union[str, Path]) -> None:
    """Refuse to go on with other command-line overrides than the ones the study's runs were made with (runs.json
    records them): its runs would be mixed with runs of another configuration. Checked before planning, so this
    says what changed rather than each run's config differences. A study folder without a record (none written
    yet, or by an older version) had none; one without run folders has nothing to mix."""
    path = Path(study_dir) / "runs.json"
    if not path.is_file() or not any((Path(study_dir) / "runs" / run.run_name).is_dir() for run in study.runs):
        return
    try:
        recorded = json.loads(path.read_text(encoding="utf-8")).get("command_line_overrides") or {}
    except (OSError, ValueError, AttributeError) as exc:
        raise AblationError(f"{path}: unreadable ({exc}); delete it to rewrite it") from None

    def comparable(overrides: dict) -> dict:
        return {key: (str(Path(value).resolve()) if key in PATH_CONFIG_KEYS and isinstance(value, str) and value
                      else value) for key, value in overrides.items() if key not in IGNORED_CONFIG_KEYS}

    if comparable(recorded) != comparable(study.command_overrides):
        raise AblationError(f"{study_dir}: its runs were made with the command-line overrides "
                            f"{_overrides_text(recorded)}, not {_overrides_text(study.command_overrides)}; rerun "
                            "with the same ones to go on, or give another --name for a study of the new ones")


def write_dataset_record(study: Study, study_dir: Union[str, Path]) -> list:
    """``dataset.json``: the object : no-object cell ratio of each distinct (data, cfg, img_size) of the study's
    arms (yolov3.datastats), for the report; returns its entries. A dataset that cannot be read is left to train.py
    to report: the entry says why instead."""
    entries: dict = {}
    for run in study.runs:
        cfg = run.config
        key = (cfg.data, cfg.cfg, cfg.train.img_size)
        if key in entries:
            entries[key]["arms"] += [run.arm] * (run.arm not in entries[key]["arms"])
            continue
        entry = {"data": cfg.data, "cfg": cfg.cfg, "img_size": cfg.train.img_size, "split": "train",
                 "arms": [run.arm]}
        try:
            stats = model_statistics(cfg.data, cfg.cfg, cfg.train.img_size)
            entry.update({k: stats[k] for k in ("images", "boxes", "cells_per_image", "object_cells",
                                                "noobject_cells", "noobject_per_object")})
        except (OSError, ValueError) as exc:  # DataError, CfgError are ValueErrors
            entry["problem"] = str(exc).splitlines()[0]
        entries[key] = entry
    records = list(entries.values())
    atomic_write_text(Path(study_dir) / "dataset.json", json.dumps(records, indent=2))
    return records


def _write_identity(study: Study, planned: PlannedRun, exit_code: Optional[int] = None) -> None:
    record = run_record(study, planned.run, planned.command)
    record["exit_code"] = exit_code
    atomic_write_text(planned.run_dir / "ablation.json", json.dumps(record, indent=2))


# --------------------------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------------------------
def child_environment(jobs: int, gpu: Optional[str], cpu_count: Optional[int] = None,
                      threads: Optional[int] = None) -> dict:
    """Environment for one train.py process: CPU threads split between parallel jobs (or exactly ``threads``: a
    rerun of a run made with that many), one GPU when pinned."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"  # the log file shows progress as it happens
    # a progress bar redrawn per batch becomes one log line per batch (the pipe turns its \r into \n): at most
    # one line per bar every 30 s keeps console.log readable and small (tqdm reads TQDM_* defaults from the environment)
    env.setdefault("TQDM_MININTERVAL", "30")
    if threads is None and jobs > 1:
        threads = max(1, (cpu_count or os.cpu_count() or 1) // jobs)  # parallel jobs would oversubscribe the cores
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
        env["MKL_NUM_THREADS"] = str(threads)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def _pump(stream, log_path: Path, echo) -> None:
    with open(log_path, "a", encoding="utf-8", errors="replace") as log:
        for line in stream:
            log.write(line)
            log.flush()
            if echo is not None:
                echo(line.rstrip("\n"))


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.replace("\r", "\n").splitlines()[-lines:])


def execute(study: Study, planned: Sequence[PlannedRun], jobs: int = 1, device: str = "", verbose: bool = False,
            progress: bool = True, poll_s: float = 0.1, threads: Optional[int] = None) -> list:
    """Run the 'start' and 'resume' entries, up to ``jobs`` at a time; returns a RunOutcome per planned run.

    Each run's stdout/stderr go to ``<run>/console.log``; a failed run does not stop the others; each finished one
    prints a line with its mAP@.5:.95 and time above the study's bar (runs done, elapsed, ETA). With GPUs listed in
    ``device`` each job sees one GPU (CUDA_VISIBLE_DEVICES) and gets ``--device 0``; on CPU the cores are split
    (``threads``, when given, is every run's thread count instead).
    On Ctrl-C (KeyboardInterrupt) the running children get one SIGINT and are waited for (see
    :func:`interrupt_and_wait`), then the KeyboardInterrupt propagates; no further run is started.
    """
    gpus = parse_devices(device)
    jobs = max(1, int(jobs))
    outcomes = {p.run.run_name: RunOutcome(p.run.run_name, "skip", "skipped", None, 0.0)
                for p in planned if p.action == "skip"}
    todo = [p for p in planned if p.action != "skip"]
    # smoothing 0: the ETA from the mean time per run so far (runs take minutes; the last one alone says little)
    bar = tqdm(total=len(planned), initial=len(outcomes), desc=f"ablate {study.name}", unit="run",
               disable=not progress, dynamic_ncols=True, smoothing=0,
               bar_format="{desc}: {n_fmt}/{total_fmt} runs |{bar}| {elapsed} elapsed, ETA {remaining}{postfix}")
    say = bar.write if progress else print
    echo = bar.write if (verbose and jobs == 1) else None
    free_slots = list(range(jobs))
    active: dict = {}  # slot -> (planned, Popen, pump thread, start time)

    def launch(item: PlannedRun, slot: int) -> None:
        gpu = gpus[slot % len(gpus)] if gpus else None
        cmd = list(item.command)
        if gpu is not None:  # the child sees only its GPU, as cuda:0
            cmd = _replace_device(cmd, "0")
        item.run_dir.mkdir(parents=True, exist_ok=True)
        item.command = cmd
        _write_identity(study, item)
        log_path = item.run_dir / CONSOLE_LOG
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"# ablate.py {time.strftime('%Y-%m-%d %H:%M:%S')} {item.action}"
                      f"{' on GPU ' + gpu if gpu is not None else ''}: {display_command(cmd)}\n")
        # a session of its own: a Ctrl-C at the terminal reaches only this runner, which forwards exactly one
        # SIGINT; a second one, from the terminal's process group, would cut train.py's checkpoint save short
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                env=child_environment(jobs, gpu, threads=threads), errors="replace",
                                start_new_session=os.name == "posix")
        pump = threading.Thread(target=_pump, args=(proc.stdout, log_path, echo), daemon=True)
        pump.start()
        active[slot] = (item, proc, pump, time.time())
        bar.set_postfix_str(", ".join(a[0].run.run_name for a in active.values()), refresh=True)

    def reap(slot: int) -> None:
        item, proc, pump, started = active.pop(slot)
        pump.join()
        code = proc.returncode
        _write_identity(study, item, exit_code=code)
        seconds = time.time() - started
        summary, problem = read_summary(item.run_dir)
        done = sum(o.status != "skipped" for o in outcomes.values()) + 1
        if code == 0 and summary is not None:
            outcomes[item.run.run_name] = RunOutcome(item.run.run_name, item.action, "finished", code, seconds)
            final = summary.get("final") or {}
            say(f"[{done}/{len(todo)}] {item.run.run_name} finished in {seconds / 60:.1f} min: mAP@.5:.95 "
                f"{final.get('mAP50_95', float('nan')):.4f}, mAP@.5 {final.get('mAP50', float('nan')):.4f}")
        else:
            why = f"exit code {code}" if code else f"exit code 0 but {problem or 'no summary.json was written'}"
            message = f"[{done}/{len(todo)}] {item.run.run_name} failed ({why}); log: {item.run_dir / CONSOLE_LOG}\n" \
                      + _tail(item.run_dir / CONSOLE_LOG)
            outcomes[item.run.run_name] = RunOutcome(item.run.run_name, item.action, "failed", code, seconds,
                                                     message)
            bar.write(message, file=sys.stderr)
        free_slots.append(slot)
        bar.update(1)

    try:
        queue = list(todo)
        while queue or active:
            while queue and free_slots:
                launch(queue.pop(0), free_slots.pop(0))
            for slot in [s for s, a in active.items() if a[1].poll() is not None]:
                reap(slot)
            if active:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        # stop only the processes this function started, and let each save its last.pt first
        procs = [proc for _, proc, _, _ in active.values()]
        interrupt_and_wait(procs, say=lambda text: bar.write(text, file=sys.stderr))
        for _, _, pump, _ in active.values():
            pump.join(timeout=5)  # the child's last words ("saved ... last.pt") belong in its console.log
        raise
    finally:
        bar.close()
    return [outcomes[p.run.run_name] for p in planned]


def _send_interrupt(proc: subprocess.Popen) -> None:
    if os.name == "posix":
        proc.send_signal(signal.SIGINT)  # what a Ctrl-C gives train.py: it saves last.pt and exits 130
    else:  # pragma: no cover - Windows cannot send SIGINT to one process
        proc.terminate()


def interrupt_and_wait(procs: Sequence[subprocess.Popen], say=print) -> None:
    """Forward one SIGINT to each running child and wait until it exits (train.py saves ``last.pt`` first, however
    long that takes); a second Ctrl-C while waiting kills the children still running."""
    running = [proc for proc in procs if proc.poll() is None]
    if not running:
        return
    try:  # a second Ctrl-C may come as soon as the first child has its SIGINT, even before the message is out
        for proc in running:
            _send_interrupt(proc)
        say(f"interrupted: waiting for {len(running)} run(s) to save last.pt; press Ctrl-C again to kill them")
        for proc in running:
            proc.wait()
    except KeyboardInterrupt:
        for proc in running:
            if proc.poll() is None:
                proc.kill()
        for proc in running:
            proc.wait()
        say("killed the running run(s); their last.pt may be older than this interrupt")


def _replace_device(cmd: list, device: str) -> list:
    cmd = list(cmd)
    if "--device" in cmd:
        cmd[cmd.index("--device") + 1] = device
    else:
        cmd += ["--device", device]
    return cmd
