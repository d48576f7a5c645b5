"""Train-state bookkeeping (yolov3/checkpoint.py): where a run stands, what a checkpoint holds, how resuming
restores it.

train.py's end-to-end tests (test_train.py) check that a resumed run equals an uninterrupted one; these check the
pieces on a 2-layer model, without a training run.
"""
import copy
import json
import math
import os
import re

import pytest
import torch

from conftest import MINIMAL_CFG
from yolov3.checkpoint import (TrainState, lean_checkpoint, load_resume, make_checkpoint, non_finite_weights,
                               restore_pending_grads, restore_training, resumed_amp_mode)
from yolov3.config import Config, ConfigError
from yolov3.model import Darknet
from yolov3.optim import ModelEMA
from yolov3.weights import read_checkpoint

TINY_CFG = MINIMAL_CFG
NAMES = ["a", "b"]
RESUME_ONLY = {"train_model", "optimizer", "ema", "scaler", "rng"}
MID_EPOCH = {"partial_sums", "partial_s", "pending_grads"}


def _row(epoch: int, map50: float, map50_95: float) -> dict:
    return {"epoch": epoch, "mAP50": map50, "mAP50_95": map50_95}


def _training_objects(seed: int):
    torch.manual_seed(seed)
    model = Darknet(TINY_CFG)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return model, optimizer, ModelEMA(model, decay=0.9, tau=1.0), torch.amp.GradScaler("cuda", enabled=False)


def _train_a_little(model, optimizer, ema, pending: bool) -> None:
    """One optimiser step (so momentum and EMA are not trivial), then optionally gradients not applied yet."""
    images = torch.rand(2, 3, 64, 64)
    sum(raw.sum() for raw in model(images)).backward()
    optimizer.step()
    ema.update(model)
    optimizer.zero_grad(set_to_none=True)
    if pending:
        sum(raw.square().mean() for raw in model(images)).backward()


def _assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_record_epoch_keeps_the_best_epoch_by_fitness_and_starts_the_next_one(tmp_path):
    state = TrainState(tmp_path, sums=torch.zeros(5))
    # fitness = 0.1 mAP50 + 0.9 mAP50_95, -1 without validation
    expected = [  # (row, improved, best epoch, best fitness)
        (_row(1, math.nan, math.nan), True, 1, -1.0),  # the first epoch is best.pt's even when not validated
        (_row(2, 0.5, 0.2), True, 2, 0.23),  # 0.05 + 0.18
        (_row(3, 0.9, 0.1), False, 2, 0.23),  # 0.09 + 0.09 = 0.18 < 0.23
        (_row(4, 0.3, 0.3), True, 4, 0.30),  # 0.03 + 0.27
    ]
    for row, improved, best, best_fitness in expected:
        state.sums += 3.0
        state.batches_done = 7
        assert state.record_epoch(row) is improved
        assert (state.best_epoch, state.completed_epochs, state.batches_done) == (best, row["epoch"], 0)
        assert state.best_fitness == pytest.approx(best_fitness) and not state.busy
        assert torch.equal(state.sums, torch.zeros(5))
    assert state.history == [row for row, *_ in expected]


def test_what_was_kept_names_the_last_checkpoint_on_disk(tmp_path):
    state = TrainState(tmp_path, sums=torch.zeros(5))
    assert state.what_was_kept() == "no checkpoint had been written yet, so there is nothing to resume"
    state.completed_epochs, state.batches_done = 2, 0
    state.mark_saved()
    state.completed_epochs, state.batches_done = 3, 4  # training went on after the save
    assert state.what_was_kept() == f"{tmp_path / 'weights' / 'last.pt'} (epoch 2, written before the problem) was kept"
    state.mark_saved()
    (tmp_path / "last.pt").write_bytes(b"")  # a run of the older layout: its checkpoints at the top
    assert state.what_was_kept() == (f"{tmp_path / 'last.pt'} (epoch 3 and 4 batches, written before the problem) "
                                     "was kept")


def test_a_mid_epoch_checkpoint_restores_everything_a_resume_needs(tmp_path):
    model, optimizer, ema, scaler = _training_objects(seed=0)
    _train_a_little(model, optimizer, ema, pending=True)
    state = TrainState(tmp_path, sums=torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0]), completed_epochs=1, batches_done=3,
                       best_fitness=0.5, best_epoch=1, history=[_row(1, 0.5, 0.5)])
    full = make_checkpoint(model, ema, optimizer, scaler, Config(), NAMES, state, "fp32", full=True)
    after_save = torch.rand(4)  # the RNG draws right after the checkpoint was taken
    torch.save(full, tmp_path / "last.pt")
    loaded = read_checkpoint(tmp_path / "last.pt")  # weights_only: plain data and tensors only
    assert {"batches_done", "best_epoch", "precision"} | RESUME_ONLY | MID_EPOCH <= set(loaded)
    assert (loaded["epoch"], loaded["batches_done"], loaded["best_epoch"], loaded["precision"]) == (1, 3, 1, "fp32")
    _assert_same_tensors(loaded["model"], ema.ema.state_dict())  # 'model' is what was validated: the EMA
    _assert_same_tensors(loaded["train_model"], model.state_dict())

    model2, optimizer2, ema2, _ = _training_objects(seed=1)  # other weights, no optimiser state yet
    restored = TrainState(tmp_path, sums=torch.zeros(5))
    restore_training(restored, loaded, model2, optimizer2, None, ema2)
    restore_pending_grads(loaded, model2, torch.device("cpu"))
    assert torch.equal(torch.rand(4), after_save)  # the random sequence continues where it was saved
    _assert_same_tensors(model2.state_dict(), model.state_dict())
    _assert_same_tensors(ema2.ema.state_dict(), ema.ema.state_dict())
    for p, p2 in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p.grad, p2.grad)  # accumulated, not yet applied
        assert torch.equal(optimizer.state[p]["momentum_buffer"], optimizer2.state[p2]["momentum_buffer"])
    assert (restored.completed_epochs, restored.batches_done, restored.best_epoch) == (1, 3, 1)
    assert restored.best_fitness == 0.5 and restored.history == [_row(1, 0.5, 0.5)]
    assert torch.equal(restored.sums, torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0])) and restored.saved == (1, 3)


class _ScalerRecorder:
    """Stands in for a CUDA GradScaler (none on a CPU machine): records the state a resume gives it."""

    def __init__(self):
        self.loaded = None

    def load_state_dict(self, state):
        self.loaded = state


def test_a_gpu_runs_grad_scaler_state_comes_back_and_a_cpu_runs_empty_one_is_left(tmp_path):
    model, optimizer, ema, scaler = _training_objects(seed=0)
    state = TrainState(tmp_path, sums=torch.zeros(5), completed_epochs=1, history=[_row(1, 0.5, 0.5)])
    full = make_checkpoint(model, ema, optimizer, scaler, Config(), NAMES, state, "fp16", full=True)
    for saved, expected in (({"scale": 1024.0, "growth_tracker": 7}, {"scale": 1024.0, "growth_tracker": 7}),
                            ({}, None)):  # fp16 loss scaling resumes where it was; a CPU run saved {}
        recorder = _ScalerRecorder()
        restore_training(TrainState(tmp_path, sums=torch.zeros(5)), {**full, "scaler": saved}, model, optimizer,
                         recorder, None)
        assert recorder.loaded == expected


def test_an_epoch_end_checkpoint_has_no_mid_epoch_part_and_best_pt_is_last_pt_lean(tmp_path):
    model, optimizer, ema, scaler = _training_objects(seed=0)
    _train_a_little(model, optimizer, ema, pending=False)
    state = TrainState(tmp_path, sums=torch.zeros(5), completed_epochs=2, best_epoch=2, best_fitness=0.3,
                       history=[_row(1, 0.1, 0.1), _row(2, 0.3, 0.3)])
    full = make_checkpoint(model, ema, optimizer, scaler, Config(), NAMES, state, "bf16", full=True)
    lean = make_checkpoint(model, ema, optimizer, scaler, Config(), NAMES, state, "bf16", full=False)
    assert not MID_EPOCH & set(full) and not (RESUME_ONLY | MID_EPOCH) & set(lean)
    assert set(lean_checkpoint(full)) == set(lean)  # best.pt made from last.pt holds what a best.pt holds
    state.batches_done, state.sums = 5, torch.ones(5)  # mid-epoch now: only a full checkpoint carries its part
    mid_full = make_checkpoint(model, ema, optimizer, scaler, Config(), NAMES, state, "bf16", full=True)
    mid_lean = make_checkpoint(model, ema, optimizer, scaler, Config(), NAMES, state, "bf16", full=False)
    assert MID_EPOCH <= set(mid_full) and set(lean_checkpoint(mid_full)) == set(mid_lean)

    model2, optimizer2, ema2, _ = _training_objects(seed=1)
    restored = TrainState(tmp_path, sums=torch.zeros(5))
    restore_training(restored, copy.deepcopy(full), model2, optimizer2, None, ema2)
    restore_pending_grads(full, model2, torch.device("cpu"))
    assert all(p.grad is None for p in model2.parameters())
    assert (restored.completed_epochs, restored.batches_done, restored.saved) == (2, 0, (2, 0))
    assert torch.equal(restored.sums, torch.zeros(5))


def test_load_resume_finds_the_newest_run_and_refuses_what_cannot_be_resumed(tmp_path):
    project = tmp_path / "runs"
    with pytest.raises(ConfigError, match=re.escape(f"--resume: no run with a last.pt under {project}")):
        load_resume("", str(project))
    with pytest.raises(ConfigError, match=re.escape(f"--resume: no checkpoint at {project / 'exp'}")):
        load_resume(str(project / "exp"), str(project))
    model, optimizer, ema, scaler = _training_objects(seed=0)
    state = TrainState(tmp_path, sums=torch.zeros(5), completed_epochs=1, best_epoch=1)
    full = make_checkpoint(model, ema, optimizer, scaler, Config(), NAMES, state, "fp32", full=True)
    for name, mtime in (("old", 1_000_000), ("new", 2_000_000)):
        (project / name).mkdir(parents=True)
        torch.save(full, project / name / "last.pt")
        os.utime(project / name / "last.pt", (mtime, mtime))
    ckpt, cfg, run_dir = load_resume("", str(project))
    assert run_dir == project / "new" and cfg == Config() and ckpt["epoch"] == 1
    assert load_resume(str(project / "old"), str(project))[2] == project / "old"  # a run folder or its last.pt
    torch.save(lean_checkpoint(full), project / "old" / "best.pt")
    with pytest.raises(ConfigError, match=r"best.pt is not a resumable checkpoint \(use a run's last.pt\)"):
        load_resume(str(project / "old" / "best.pt"), str(project))
    (project / "new" / "summary.json").write_text(json.dumps({"status": "finished"}))
    with pytest.raises(ConfigError, match=re.escape(f"--resume: {project / 'new'} already finished all 10 epochs")):
        load_resume("", str(project))
    (project / "new" / "summary.json").write_text('{"status": "fini')  # damaged: resuming rewrites it
    assert load_resume("", str(project))[2] == project / "new"
    # the new layout, <run>/weights/last.pt, beside runs of the older one: the newest of both, a folder or a file
    (project / "nested" / "weights").mkdir(parents=True)
    torch.save(full, project / "nested" / "weights" / "last.pt")
    assert load_resume("", str(project))[2] == project / "nested"
    assert load_resume(str(project / "nested"), str(project))[0]["epoch"] == 1
    assert load_resume(str(project / "nested" / "weights" / "last.pt"), str(project))[2] == project / "nested"
    os.utime(project / "nested" / "weights" / "last.pt", (1_500_000, 1_500_000))
    assert load_resume("", str(project))[2] == project / "new"


def test_a_resumed_run_keeps_its_precision():
    assert resumed_amp_mode(None, "auto") == "auto"  # a new run
    assert resumed_amp_mode({"precision": "fp32"}, "auto") == "off"
    assert resumed_amp_mode({"precision": "bf16"}, "off") == "bf16"
    assert resumed_amp_mode({"precision": "fp16"}, "auto") == "fp16"
    assert resumed_amp_mode({}, "bf16") == "bf16"  # a checkpoint from before precision was recorded


def test_non_finite_weights_names_the_first_broken_tensor_of_either_model():
    model, _, ema, _ = _training_objects(seed=0)
    assert non_finite_weights(model, ema.ema) is None and non_finite_weights(model, model) is None
    with torch.no_grad():
        ema.ema.module_list[0].bn.running_var[3] = math.inf
    assert non_finite_weights(model, ema.ema) == "module_list.0.bn.running_var"
    with torch.no_grad():
        model.module_list[1].conv.weight[0, 0, 0, 0] = math.nan
    assert non_finite_weights(model, ema.ema) == "module_list.1.conv.weight"


@pytest.mark.parametrize("checkpoint, message", [
    ("weights/last.pt", "holds an unfinished run"), ("last.pt", "holds an unfinished run"),
    ("weights/best.pt", "holds a model"), ("best.pt", "holds a model")])
def test_a_folder_with_a_checkpoint_in_either_layout_is_never_reused(tmp_path, checkpoint, message):
    from yolov3.checkpoint import RunFolderError, prepare_new_run_dir

    # a run that stopped after its config and results.csv were written (its leftovers would be cleared) but whose
    # checkpoint is still there, in the current layout (weights/) or the older one (top of the folder)
    (tmp_path / "config.yaml").write_text("train: {}\n")
    (tmp_path / "results.csv").write_text("epoch\n1\n")
    (tmp_path / checkpoint).parent.mkdir(exist_ok=True)
    (tmp_path / checkpoint).write_bytes(b"weights")
    with pytest.raises(RunFolderError, match=re.escape(f"{tmp_path} {message} ({tmp_path / checkpoint})")):
        prepare_new_run_dir(tmp_path)
    assert (tmp_path / "results.csv").read_text() == "epoch\n1\n" and (tmp_path / checkpoint).read_bytes() == b"weights"


def test_a_tie_keeps_the_earlier_best_epoch(tmp_path):
    state = TrainState(tmp_path, sums=torch.zeros(5))
    assert state.record_epoch({"epoch": 1, "mAP50": 0.5, "mAP50_95": 0.2}) is True
    assert state.record_epoch({"epoch": 2, "mAP50": 0.5, "mAP50_95": 0.2}) is False and state.best_epoch == 1
    unvalidated = TrainState(tmp_path, sums=torch.zeros(5))
    assert unvalidated.record_epoch({"epoch": 1, "mAP50": math.nan, "mAP50_95": math.nan}) is True
    assert unvalidated.record_epoch({"epoch": 2, "mAP50": math.nan, "mAP50_95": math.nan}) is False
    assert unvalidated.best_epoch == 1


def test_plain_state_dicts_load_best_epoch_is_recomputed_and_a_mid_epoch_last_never_repairs_best(tmp_path):
    from yolov3.checkpoint import best_checkpoint_needs_repair, load_initial_weights

    torch.manual_seed(0)
    saved = Darknet(MINIMAL_CFG).state_dict()
    torch.save(saved, tmp_path / "plain.pt")
    torch.manual_seed(1)
    model = Darknet(MINIMAL_CFG)
    message = load_initial_weights(model, str(tmp_path / "plain.pt"))
    assert message.endswith(f"transferred {len(saved)}/{len(saved)} tensors")
    assert all(torch.equal(model.state_dict()[k], saved[k]) for k in saved)
    assert best_checkpoint_needs_repair({"best_epoch": 2, "epoch": 2, "batches_done": 3}, tmp_path / "best.pt") is False
    assert best_checkpoint_needs_repair({"best_epoch": 2, "epoch": 2, "batches_done": 0}, tmp_path / "best.pt") is True


def test_a_last_pt_without_best_epoch_gets_it_from_its_history(tmp_path):
    model, optimizer, ema, scaler = _training_objects(seed=0)
    state = TrainState(tmp_path, sums=torch.zeros(5), completed_epochs=2, best_fitness=0.5,
                       history=[_row(1, 0.5, 0.5), _row(2, 0.1, 0.1)])
    full = make_checkpoint(model, ema, optimizer, scaler, Config(), NAMES, state, "fp32", full=True)
    del full["best_epoch"]  # an older last.pt
    model2, optimizer2, ema2, _ = _training_objects(seed=1)
    restored = TrainState(tmp_path, sums=torch.zeros(5))
    restore_training(restored, full, model2, optimizer2, None, ema2)
    assert restored.best_epoch == 1 and restored.record_epoch(_row(3, 0.2, 0.2)) is False  # .2 is not a new best


def test_half_the_tensors_transfer_and_a_pt_that_is_no_state_dict_is_named(tmp_path):
    from yolov3.checkpoint import load_initial_weights
    from yolov3.weights import WeightsError

    saved = Darknet(MINIMAL_CFG).state_dict()
    assert len(saved) == 8
    torch.save(dict(list(saved.items())[:4]), tmp_path / "half.pt")
    assert load_initial_weights(Darknet(MINIMAL_CFG), str(tmp_path / "half.pt")).endswith("transferred 4/8 tensors")
    torch.save(torch.zeros(3), tmp_path / "t.pt")
    with pytest.raises(WeightsError, match="not a train.py checkpoint or a state dict"):
        load_initial_weights(Darknet(MINIMAL_CFG), str(tmp_path / "t.pt"))
