"""rnnexp/callbacks.py's pieces as functions (the training tests run them whole): early stopping off
while patience is null and a resume's patience its own, the end-of-run report's carried wall time and
tokens, the profiler stand-in's one shared context, the cached state keys."""

from types import SimpleNamespace

import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from rnnexp.callbacks import AtomicCheckpointIO, Checkpoint, EarlyStop, NoProfiler, Report


def test_early_stopping_is_off_while_patience_is_null_and_checks_nothing():
    off = EarlyStop(monitor="val/loss", mode="min")
    assert not off.enabled and off.patience == 0
    off._run_early_stopping_check(object())  # no trainer attribute is read: nothing is checked
    on = EarlyStop(patience=3, monitor="val/loss", mode="min")
    assert on.enabled and on.patience == 3


def test_a_resume_keeps_early_stoppings_counters_but_this_runs_patience():
    stop = EarlyStop(patience=5, monitor="val/loss", mode="min")
    saved = EarlyStop(patience=1, monitor="val/loss", mode="min")
    saved.wait_count, saved.best_score = 2, torch.tensor(1.25)
    stop.load_state_dict(saved.state_dict())
    assert stop.patience == 5 and stop.wait_count == 2 and float(stop.best_score) == 1.25


def test_the_report_carries_wall_time_and_tokens_over_a_resume():
    report = Report()
    assert report.wall_seconds() == 0.0 and report.tokens() == 0 and report.state_dict() == {
        "wall_seconds": 0.0, "tokens": 0}
    report.load_state_dict({"wall_seconds": 2.5, "tokens": 100})
    assert report.wall_seconds() == 2.5 and report.tokens() == 100  # before this attempt starts
    report._task, report._processes = SimpleNamespace(tokens_trained=10), 2  # as on_fit_start sets them
    assert report.tokens() == 120  # every process trained as many as this one
    assert report.state_dict() == {"wall_seconds": 2.5, "tokens": 120}
    report.load_state_dict({})  # a checkpoint from before the report kept them
    assert report.earlier_seconds == 0.0 and report.earlier_tokens == 0


def test_the_report_counts_this_attempts_time_from_fit_start(monkeypatch):
    clock = iter([100.0, 103.5])  # a fake perf_counter: fit starts at 100 s, is read at 103.5 s
    monkeypatch.setattr("rnnexp.callbacks.time.perf_counter", lambda: next(clock))
    report = Report()
    report.load_state_dict({"wall_seconds": 1000.0, "tokens": 0})
    report.on_fit_start(SimpleNamespace(world_size=3), SimpleNamespace(tokens_trained=7))
    assert report.wall_seconds() == 1003.5
    assert report.tokens() == 21


def test_the_profiler_stand_in_enters_one_shared_do_nothing_context():
    profiler = NoProfiler()
    assert profiler.profile("a") is profiler.profile("b")
    with profiler.profile("a"):
        pass


def test_state_keys_are_lightnings_own_computed_once():
    checkpoint = Checkpoint(dirpath="x", monitor="val/loss", save_last=True)
    key = checkpoint.state_key
    assert key == ModelCheckpoint.state_key.fget(checkpoint) and checkpoint.state_key is key
    stop = EarlyStop(patience=2, monitor="val/loss", mode="min")
    assert stop.state_key == EarlyStopping.state_key.fget(stop) and stop._cached_state_key == stop.state_key


def test_lightnings_checkpoint_io_saves_through_a_rename_and_loads_bare_weights_where_asked(tmp_path):
    io = AtomicCheckpointIO()
    io.save_checkpoint({"w": torch.ones(2)}, str(tmp_path / "a.ckpt"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt"]  # no temporary file left
    loaded = io.load_checkpoint(tmp_path / "a.ckpt")  # no state_dict: ddp_spawn hands back bare weights
    assert torch.equal(loaded["w"], torch.ones(2)) and loaded["w"].device.type == "cpu"
    assert io.load_checkpoint(tmp_path / "a.ckpt", map_location="meta")["w"].device.type == "meta"


def test_a_run_stopped_by_its_time_budget_between_validations_ends_with_last_ckpt_at_its_final_step(tiny_text,
                                                                                                     tmp_path):
    """max_time stops a run wherever it is; its final validation, then last.ckpt, are at that step."""
    import json

    from rnnexp.checkpoint import load_checkpoint
    from rnnexp.train import train
    from tests.helpers import tiny_run_config

    run = tmp_path / "run"
    train(tiny_run_config(tiny_text, run, "trainer.max_steps=100000", "trainer.max_time=00:00:00:01",
                          "trainer.val_check_interval=100000", "callbacks.model_checkpoint.every_n_steps=0",
                          "sample.length=0"))
    steps = json.loads((run / "result.json").read_text())["steps"]
    assert 0 < steps < 100000
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == steps


def test_early_stop_says_why_it_ends_a_run_and_nothing_when_something_else_does(caplog):
    def trainer(loss: float, should_stop: bool, step: int) -> SimpleNamespace:
        return SimpleNamespace(callback_metrics={"val/loss": torch.tensor(loss)}, fast_dev_run=False,
                               should_stop=should_stop, current_epoch=0, global_step=step, world_size=1,
                               global_rank=0, is_global_zero=True,
                               strategy=SimpleNamespace(reduce_boolean_decision=lambda decision, all=True: decision))

    stop = EarlyStop(patience=1, monitor="val/loss", mode="min", verbose=False)
    with caplog.at_level("INFO", logger="rnnexp"):
        stop._run_early_stopping_check(trainer(2.0, should_stop=True, step=4))  # a signal or max_time stops it
        assert caplog.messages == []  # an improvement: early stopping has nothing to say
        ended = trainer(2.5, should_stop=False, step=8)
        stop._run_early_stopping_check(ended)
    assert ended.should_stop
    assert caplog.messages == ["early stopping at step 8: Monitored metric val/loss did not improve in the last 1 "
                               "records. Best score: 2.000. Signaling Trainer to stop."]
