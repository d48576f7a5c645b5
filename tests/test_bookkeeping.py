"""The bookkeeping of a training run: the DDP stop agreement and its rule, on two simulated ranks in threads.

train.py end to end (checkpoint order, Ctrl-C, NaN guard, resuming, real DDP under gloo) is tests/test_train.py.
"""
from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest
import torch

from yolov3 import bookkeeping
from yolov3.bookkeeping import VALIDATION_KEYS, Bookkeeper, RankAgreement, RunPlan
from yolov3.config import Config
from yolov3.evaluate import LOSS_TERMS
from yolov3.precision import resolve_precision

CPU = torch.device("cpu")


class FakeGroup:
    """``world_size`` ranks as threads: each rank's all_reduce_max waits for all, then gets the elementwise maximum
    (what torch.distributed.all_reduce with ReduceOp.MAX does across processes)."""

    def __init__(self, world_size: int = 2) -> None:
        self.barrier = threading.Barrier(world_size, timeout=20)
        self.values = [None] * world_size

    def reducer(self, rank: int):
        def all_reduce_max(values: torch.Tensor) -> None:
            self.values[rank] = values.clone()
            self.barrier.wait()
            maximum = torch.stack(self.values).max(0).values
            self.barrier.wait()  # every rank has read the others' values before any is replaced
            values.copy_(maximum)
        return all_reduce_max


def run_ranks(*ranks):
    """Run each callable in its own thread; returns each one's result, or the exception it raised."""
    results = [None] * len(ranks)

    def call(index, function):
        try:
            results[index] = function()
        except BaseException as error:  # KeyboardInterrupt included: it is one of the outcomes under test
            results[index] = error

    threads = [threading.Thread(target=call, args=(i, f)) for i, f in enumerate(ranks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a rank hangs"
    return results


def test_a_single_process_agrees_with_itself_without_any_collective():
    def no_collective(values):
        raise AssertionError("a single process must not call a collective")

    agreement = RankAgreement(1, CPU, no_collective)
    assert agreement.any("loss", 0, 3, True) == (True,)
    assert agreement.any("epoch", 0, -1, False, True) == (False, True)


def test_ranks_in_step_share_every_flag():
    group = FakeGroup()
    first, second = (RankAgreement(2, CPU, group.reducer(rank)) for rank in (0, 1))
    results = run_ranks(lambda: [first.any("batch", 1, 2, False), first.any("epoch", 1, -1, False, True)],
                        lambda: [second.any("batch", 1, 2, True), second.any("epoch", 1, -1, False, False)])
    assert results[0] == results[1] == [(True,), (False, True)]


def test_ranks_out_of_step_fail_at_once_naming_both_points_instead_of_hanging():
    group = FakeGroup()
    first, second = (RankAgreement(2, CPU, group.reducer(rank)) for rank in (0, 1))
    results = run_ranks(lambda: first.any("epoch", 0, -1, False, False), lambda: second.any("batch", 0, 2, False))
    for result in results:
        assert isinstance(result, RuntimeError)
        assert "'batch' of epoch 1, batch 2" in str(result) and "'epoch' of epoch 1" in str(result)
        assert "same agreement points in the same order" in str(result)


# --------------------------------------------------------------------------------------------------------------------
# The rule kept by the Bookkeeper itself: rank 0 validates and saves, the other ranks do not, and yet every rank makes
# the same agreement calls; whatever stops the run (a Ctrl-C on another rank, rank 0's early stop) stops all at once
# --------------------------------------------------------------------------------------------------------------------
class StubTensorBoard:
    def log_epoch(self, row):
        pass

    def close(self):
        pass


def make_book(tmp_path: Path, rank: int, group: FakeGroup, cfg: Config) -> Bookkeeper:
    plan = RunPlan(cfg, tmp_path, None, (), allow_partial_weights=False, noval=False, nosave=False)
    book = Bookkeeper(plan, ["a"], resolve_precision("off", CPU), CPU, world_size=2, is_main=rank == 0)
    book.agreement = RankAgreement(2, CPU, group.reducer(rank))
    model = torch.nn.Linear(2, 2)
    book.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.amp.GradScaler("cuda", enabled=False),
                None)
    book.tensorboard = StubTensorBoard() if rank == 0 else None
    return book


def simulate(book: Bookkeeper, scores: list, stop_at=None) -> list:
    """train.py's calls for epochs 2.. of 3-batch epochs (epoch 1 draws and records diagnostics; not needed here);
    rank 0 'validates' with ``scores`` (mAP per epoch). ``stop_at``: (epoch, batch) where Ctrl-C arrives here."""
    book.state.completed_epochs = 1
    seen = []
    terms = dict.fromkeys(LOSS_TERMS, torch.tensor(0.5))
    with book.stopping_on_ctrl_c():
        for epoch in book.epochs():
            for batch_index in book.progress(range(3), epoch):
                book.start_batch(epoch, batch_index, 3 * epoch + batch_index, 0.01)
                assert not book.watch([])
                book.check_loss(torch.tensor(1.0), ["x.jpg"])
                if (epoch, batch_index) == stop_at:
                    book.stop_request.requested = True
                book.end_batch(torch.tensor(1.0), terms, torch.zeros(1, 3, 32, 32), torch.zeros(0, 6), ["x.jpg"])
                seen.append((epoch, batch_index))
            metrics = None
            if book.is_main:
                book.check_weights(epoch)
                if book.validation_options(epoch) is not None:
                    metrics = {**dict.fromkeys(VALIDATION_KEYS, 0.0), "mAP50": scores[epoch], "mAP50_95": scores[epoch]}
            if book.end_epoch(epoch, metrics):
                break
    return seen


@pytest.fixture
def quiet_files(monkeypatch):
    """No figures and a checkpoint without a Darknet: the agreement, not the files, is under test here."""
    monkeypatch.setattr(bookkeeping, "plot_results_csv", lambda *args: None)
    monkeypatch.setattr(bookkeeping, "make_checkpoint", lambda *args: {"model": {}})


def test_rank_0s_early_stop_stops_every_rank_after_the_same_epoch(tmp_path, quiet_files):
    cfg = dataclasses.replace(Config(), train=dataclasses.replace(Config().train, epochs=10, patience=1,
                                                                   diagnostics_every=0))
    group = FakeGroup()
    books = [make_book(tmp_path / f"rank{rank}", rank, group, cfg) for rank in (0, 1)]
    scores = [0.0, 0.5, 0.4, 0.3, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]  # no gain after epoch 2: stop after epoch 4
    results = run_ranks(lambda: simulate(books[0], scores), lambda: simulate(books[1], scores))
    assert results[0] == results[1] == [(epoch, batch) for epoch in (1, 2, 3) for batch in range(3)]
    assert [row["epoch"] for row in books[0].state.history] == [2, 3, 4]
    assert books[1].state.completed_epochs == 4  # the other rank followed without validating


def test_a_ctrl_c_on_another_rank_stops_every_rank_after_that_batch(tmp_path, quiet_files, capsys):
    cfg = dataclasses.replace(Config(), train=dataclasses.replace(Config().train, epochs=10, diagnostics_every=0))
    group = FakeGroup()
    books = [make_book(tmp_path / f"rank{rank}", rank, group, cfg) for rank in (0, 1)]
    scores = [0.1 * epoch for epoch in range(10)]
    results = run_ranks(lambda: simulate(books[0], scores), lambda: simulate(books[1], scores, stop_at=(2, 1)))
    assert all(isinstance(result, KeyboardInterrupt) for result in results)
    assert [(b.state.completed_epochs, b.state.batches_done) for b in books] == [(2, 2), (2, 2)]
    assert "interrupted: saved" in capsys.readouterr().err  # rank 0 saved last.pt for both
    assert (tmp_path / "rank0" / "weights" / "last.pt").is_file() and not (tmp_path / "rank1" / "weights").exists()



def _reduce_on_rank(rank, rendezvous, out_dir):
    import torch.distributed as dist

    from yolov3.distributed import all_reduce_max

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    values = torch.tensor([float(rank), 5.0 - rank, 0.0])  # rank 0: [0, 5, 0], rank 1: [1, 4, 0]
    all_reduce_max(values)
    torch.save(values, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def test_the_ranks_agree_on_the_elementwise_maximum_over_a_real_process_group(tmp_path):
    # what RankAgreement rests on: a flag raised on any rank (stop, Ctrl-C, a NaN) reaches every rank
    import torch.multiprocessing as mp

    mp.start_processes(_reduce_on_rank, args=(tmp_path / "rendezvous", tmp_path), nprocs=2, start_method="fork")
    for rank in (0, 1):
        assert torch.load(tmp_path / f"rank{rank}.pt", weights_only=True).tolist() == [1.0, 5.0, 0.0]
