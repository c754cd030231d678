"""rnnexp.callbacks.Report's end of fit on its own (the training tests run it whole): the lines it prints
and the result.json it writes, for a run with everything (a sample, a best checkpoint, the test split,
TensorBoard) and for a bare one (pruned, nothing saved, no test split), and nothing on a rank other than 0."""

import json
from types import SimpleNamespace

import pytest
import torch
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from rnnexp.callbacks import PruneTrial, Report


def task(run_dir, **changes):
    values = {"sample_text": None, "config": {"sample": {"temperature": 0.75}, "run_dir": str(run_dir)},
              "main_metric": "val/bpc", "global_step": 40, "best_score": 1.5, "best_step": 30, "test_metrics": None,
              "tokens_trained": 500}
    return SimpleNamespace(**{**values, **changes})


def trainer(**changes):
    values = {"is_global_zero": True, "world_size": 2, "checkpoint_callbacks": [], "callbacks": [], "loggers": [],
              "callback_metrics": {"val/loss": torch.tensor(1.25), "val/bpc": torch.tensor(1.8125)}}
    return SimpleNamespace(**{**values, **changes})


@pytest.fixture
def clock(monkeypatch):
    times = iter([100.0, 110.0])  # fit starts at 100 s and ends at 110 s
    monkeypatch.setattr("rnnexp.callbacks.time.perf_counter", lambda: next(times))


def test_a_full_run_prints_sample_final_best_test_and_where_and_writes_its_result(tmp_path, clock, capsys,
                                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    report = Report()
    report.load_state_dict({"wall_seconds": 5.0, "tokens": 200})  # an earlier attempt
    ended = task("run", sample_text="the fox", test_metrics={"loss": 1.125, "bpc": 1.625})
    checkpoints = [SimpleNamespace(best_model_path=""), SimpleNamespace(best_model_path="run/best.ckpt")]
    fit = trainer(checkpoint_callbacks=checkpoints, callbacks=[report, PruneTrial(None, "val/bpc")],
                  loggers=[CSVLogger(tmp_path), TensorBoardLogger(tmp_path)])
    report.on_fit_start(fit, ended)
    report.on_fit_end(fit, ended)
    assert capsys.readouterr().out == (
        "\n--- sample (temperature 0.75) ---\nthe fox\n---\n"
        "final val/loss 1.2500, val/bpc 1.8125 after 40 steps\n"
        f"best  val/bpc 1.5000 at step 30: {run_dir}/best.ckpt\n"
        "test split (final weights): test/loss 1.1250, test/bpc 1.6250\n"
        f"run folder: {run_dir}\n"
        f"view it:    tensorboard --logdir {run_dir}\n")
    written = (run_dir / "result.json").read_text(encoding="utf-8")
    assert written.endswith("}\n") and "\n  \"final\": {\n" in written  # indented by 2, one key a line
    assert json.loads(written) == {
        "final": {"val/loss": 1.25, "val/bpc": 1.8125},
        "best": {"val/bpc": 1.5, "step": 30, "checkpoint": "run/best.ckpt"},
        "steps": 40, "test": {"loss": 1.125, "bpc": 1.625},
        "wall_seconds": 15.0, "tokens": 1200, "tokens_per_sec": 80.0}  # 5 + 10 s; 200 + 500 x 2 processes


def test_a_pruned_run_without_checkpoint_test_split_or_time_says_so(tmp_path, capsys):
    report = Report()  # no on_fit_start: no time measured
    pruned = PruneTrial(None, "val/bpc")
    pruned.pruned_at_step = 30
    report.on_fit_end(trainer(callbacks=[report, pruned], loggers=[CSVLogger(tmp_path)],
                              checkpoint_callbacks=[SimpleNamespace(best_model_path="")]), task(tmp_path))
    assert capsys.readouterr().out == (
        "pruned at step 30: the search's pruner found this trial worse than earlier ones\n"
        "final val/loss 1.2500, val/bpc 1.8125 after 40 steps\n"
        "best  val/bpc 1.5000 at step 30 (no checkpoint saved)\n"
        f"run folder: {tmp_path}\n")
    result = json.loads((tmp_path / "result.json").read_text(encoding="utf-8"))
    assert result == {"final": {"val/loss": 1.25, "val/bpc": 1.8125},
                      "best": {"val/bpc": 1.5, "step": 30, "checkpoint": None}, "steps": 40, "test": None,
                      "wall_seconds": 0.0, "tokens": 0, "tokens_per_sec": None, "pruned_at_step": 30}


def test_only_rank_zero_reports(tmp_path, capsys):
    Report().on_fit_end(trainer(is_global_zero=False), task(tmp_path))
    assert capsys.readouterr().out == "" and not (tmp_path / "result.json").exists()
