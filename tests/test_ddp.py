"""Training on several processes (trainer=ddp): each rank carries its own streams, and together they
train on exactly the batches one process would."""

import json

import pytest
import torch

from rnnexp import data as data_module
from rnnexp.data import StreamLoader, TBPTTBatches, streams_of_rank
from rnnexp.errors import CheckpointError, DataError
from tests.helpers import TINY_MODEL, make_text, run_train, tiny_run_config


def test_each_rank_gets_its_own_streams_and_together_they_make_the_whole_batch(monkeypatch):
    tokens = torch.arange(8 * 41).numpy()  # every token is its own position in the corpus
    loader = StreamLoader(TBPTTBatches(tokens, batch_size=8, unroll=5))
    whole = list(loader)
    by_rank = []
    for rank in range(2):
        monkeypatch.setattr(data_module, "process_rank", lambda rank=rank: (rank, 2))
        by_rank.append(list(loader))
    seen = [{int(t) for inputs, targets in batches for t in torch.cat([inputs, targets]).flatten()}
            for batches in by_rank]
    assert not seen[0] & seen[1]  # no two ranks ever see the same text
    for k, (inputs, targets) in enumerate(whole):  # rank 0 has streams 0-3, rank 1 streams 4-7
        assert torch.equal(torch.cat([by_rank[0][k][0], by_rank[1][k][0]], dim=1), inputs)
        assert torch.equal(torch.cat([by_rank[0][k][1], by_rank[1][k][1]], dim=1), targets)
    with pytest.raises(DataError, match="batch_size=8 streams cannot be shared by 3 processes"):
        streams_of_rank(8, 0, 3)


@pytest.mark.slow
def test_two_cpu_processes_train_and_resume_as_one_process_would(tmp_path):
    from rnnexp.train import train
    from tests.helpers import read_scalars

    text = tmp_path / "tiny.txt"
    text.write_text(make_text())
    settings = ["data=text_file", f"data.path={text}", *TINY_MODEL, "sample.length=0", "sample.val_length=0",
                "trainer.precision=32-true"]
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    run = tmp_path / "ddp"
    first = run_train(*settings, *ddp, f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr[-3000:]
    # written once, by rank 0: one event file, one best.ckpt and one last.ckpt
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    resumed = run_train(*settings, *ddp, f"ckpt_path={run}", "trainer.max_steps=6")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    # One process, the same batch_size (streams) and 6 steps straight: the same numbers.
    single = tmp_path / "single"
    best = train(tiny_run_config(text, single, "sample.length=0", "sample.val_length=0", "trainer.precision=32-true",
                                 "trainer.max_steps=6"))
    result = json.loads((run / "result.json").read_text())
    assert result["steps"] == 6
    assert result["best"]["val/bpc"] == pytest.approx(best, rel=1e-4)
    ddp_curve, single_curve = read_scalars(run)["val/loss"], read_scalars(single)["val/loss"]
    assert [s for s, _ in ddp_curve] == [s for s, _ in single_curve] == [1, 3, 5]
    assert [v for _, v in ddp_curve] == pytest.approx([v for _, v in single_curve], rel=1e-4)
    assert len(torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["rnnexp"]["train_states"]) == 2

    with pytest.raises(CheckpointError) as alone:  # one process cannot go on with two
        train(tiny_run_config(text, run, "sample.length=0", "sample.val_length=0", "trainer.precision=32-true",
                              f"ckpt_path={run}", "trainer.max_steps=8"))
    assert str(alone.value) == ("the checkpoint was trained by 2 processes, each carrying the hidden state of its "
                                "streams; resume it with as many (trainer.devices), not 1")


@pytest.mark.slow
def test_ddp_inside_a_sweep_spawns_its_processes(tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text(make_text())
    sweep = tmp_path / "sweep"
    # One job shows it: its second process is spawned, not started by running the sweep's command line again.
    result = run_train("-m", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "seed=1",
                       f"hydra.sweep.dir={sweep}", "data=text_file", f"data.path={text}", *TINY_MODEL,
                       "sample.length=0", "sample.val_length=0")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(sweep.glob("*_lstm_*"))
    assert len(runs) == 1 and all((run / "result.json").exists() for run in runs)
    assert not any((run / "error.txt").exists() for run in runs)
