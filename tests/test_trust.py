"""Runs you can trust: best.ckpt is the best state, a resume keeps its run's settings and never
rewrites another run's record, and init_from starts a new run from a checkpoint's weights."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rnnexp.checkpoint import load_checkpoint
from rnnexp.errors import CheckpointError
from rnnexp.train import train
from tests.helpers import REPO, TINY_MODEL, make_text, read_scalars, tiny_run_config


def best_checkpoint_score(path: Path) -> float:
    """The best score the checkpoint callback kept in best.ckpt's own state."""
    callbacks = load_checkpoint(path)["callbacks"]
    return float(next(v["best_model_score"] for k, v in callbacks.items() if k.startswith("Checkpoint")))


# Lightning writes each validation at the step of the last training batch before it: 249 for 250.
@pytest.mark.parametrize("steps,validated_at", [(300, [249, 299]), (100, [99])])
def test_best_checkpoint_holds_the_best_validation_of_the_run(tiny_text, tmp_path, capsys, steps, validated_at):
    """A run that ends between validations (300 steps, validation every 250) or before the first
    (100 steps) is validated at its end inside fit, so best.ckpt sees that validation too."""
    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, f"trainer.max_steps={steps}", "trainer.val_check_interval=250",
                          "trainer.log_every_n_steps=50", "lr=0.01", "sample.length=0"))
    scalars = read_scalars(run_dir)
    assert [step for step, _ in scalars["val/bpc"]] == validated_at
    best_step, best_bpc = min(scalars["val/bpc"], key=lambda item: item[1])
    best = run_dir / "checkpoints" / "best.ckpt"
    assert load_checkpoint(best)["global_step"] == best_step + 1
    assert best_checkpoint_score(best) == pytest.approx(best_bpc, rel=1e-6)
    assert read_scalars(run_dir / "hparams")["val_hp/best_bpc"][-1][1] == pytest.approx(best_bpc, rel=1e-6)
    printed = capsys.readouterr().out
    assert f"best  val/bpc {best_bpc:.4f} at step {best_step + 1}: {best.resolve()}" in printed
    assert f"val/bpc {scalars['val/bpc'][-1][1]:.4f} after {steps} steps" in printed


def test_resume_refuses_changed_settings_and_accepts_a_longer_budget(tiny_text, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, "sample.length=0"))
    with pytest.raises(CheckpointError, match=r"this run differs: lr=0.02 \(checkpoint: 0.01\), "
                                              r"unroll=4 \(checkpoint: 8\); give the checkpoint's values"):
        train(tiny_run_config(tiny_text, run_dir, "sample.length=0", f"ckpt_path={run_dir}", "unroll=4", "lr=0.02"))
    train(tiny_run_config(tiny_text, run_dir, "sample.length=0", f"ckpt_path={run_dir}", "trainer.max_steps=6",
                          "trainer.log_every_n_steps=2", "trainer.val_check_interval=3"))
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 6


def test_init_from_starts_a_new_run_from_the_checkpoints_weights(tiny_text, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    train(tiny_run_config(tiny_text, first, "sample.length=0"))
    # Another unroll and a vanishing lr: the weights stay those of the checkpoint, the step starts at 0.
    train(tiny_run_config(tiny_text, second, "sample.length=0", f"init_from={first}", "unroll=4", "lr=1e-12",
                          "optim=sgd"))
    start, after = load_checkpoint(first / "checkpoints" / "last.ckpt"), load_checkpoint(second / "checkpoints" /
                                                                                          "last.ckpt")
    assert after["global_step"] == 4 and [s for s, _ in read_scalars(second)["train/loss"]] == [0, 1, 2, 3]
    for name, tensor in start["state_dict"].items():
        assert torch.allclose(after["state_dict"][name], tensor, atol=1e-6), name
    assert after["hyper_parameters"]["config"]["unroll"] == 4


# --- records: subprocesses, as Hydra writes .hydra/ only for a real command -----------------------

def run_train(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run's record: its TensorBoard events and .hydra files, byte for byte."""
    files = [*run_dir.glob("events.out.*"), *(run_dir / ".hydra").glob("*.yaml")]
    return {str(f.relative_to(run_dir)): f.read_bytes() for f in files}


@pytest.fixture
def finished_run(tmp_path) -> tuple[Path, list[str]]:
    text = tmp_path / "text.txt"
    text.write_text(make_text())
    options = ["data=text_file", f"data.path={text}", *TINY_MODEL, "sample.length=0", "trainer.max_steps=6",
               "trainer.val_check_interval=3"]
    run_dir = tmp_path / "original"
    run_train(tmp_path, *options, f"hydra.run.dir={run_dir}")
    return run_dir, options


def test_resuming_from_best_ckpt_starts_a_new_folder_and_leaves_the_run_untouched(finished_run, tmp_path):
    run_dir, options = finished_run
    before = snapshot(run_dir)
    result = run_train(tmp_path, *options, f"ckpt_path={run_dir}/checkpoints/best.ckpt", "trainer.max_steps=9")
    assert snapshot(run_dir) == before
    new_runs = list((tmp_path / "outputs" / "runs").iterdir())
    assert len(new_runs) == 1 and f"run folder: {new_runs[0].resolve()}" in result.stdout
    assert f"ckpt_path: {run_dir}/checkpoints/best.ckpt" in (new_runs[0] / ".hydra" / "config.yaml").read_text()
    assert load_checkpoint(new_runs[0] / "checkpoints" / "last.ckpt")["global_step"] == 9


def test_init_from_writes_a_new_folder_and_leaves_the_run_untouched(finished_run, tmp_path):
    run_dir, options = finished_run
    before = snapshot(run_dir)
    run_train(tmp_path, *options, f"init_from={run_dir}", "unroll=4")
    assert snapshot(run_dir) == before
    assert len(list((tmp_path / "outputs" / "runs").iterdir())) == 1


def test_resuming_the_latest_state_continues_the_run_and_appends_its_overrides(finished_run, tmp_path):
    run_dir, options = finished_run
    config_before = (run_dir / ".hydra" / "config.yaml").read_bytes()
    overrides_before = (run_dir / ".hydra" / "overrides.yaml").read_text()
    run_train(tmp_path, *options, f"ckpt_path={run_dir}", "trainer.max_steps=9")
    overrides_after = (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert overrides_after.startswith(overrides_before)
    assert overrides_after[len(overrides_before):] == f"- ckpt_path={run_dir}\n- trainer.max_steps=9\n"
    assert (run_dir / ".hydra" / "config.yaml").read_bytes() == config_before
    resumes = list((run_dir / ".hydra" / "resumes").iterdir())
    assert len(resumes) == 1 and "max_steps: 9" in (resumes[0] / "config.yaml").read_text()
    assert [step for step, _ in read_scalars(run_dir)["val/loss"]] == [2, 5, 8]  # after steps 3, 6, 9


def test_a_refused_resume_leaves_the_run_as_it_was(finished_run, tmp_path):
    run_dir, options = finished_run
    before = snapshot(run_dir)
    result = subprocess.run([sys.executable, str(REPO / "train.py"), *options, f"ckpt_path={run_dir}", "unroll=4"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert result.returncode == 2 and "unroll=4 (checkpoint: 8)" in result.stderr
    assert snapshot(run_dir) == before and not (run_dir / ".hydra" / "resumes").exists()


# Lightning's warnings about what this test asks for on purpose: the legacy `precision=16`, fp16 on a CPU.
@pytest.mark.filterwarnings("ignore:`precision=16` is supported for historical reasons:UserWarning")
@pytest.mark.filterwarnings("ignore:You passed .* but AMP with fp16 is not supported on CPU:UserWarning")
def test_hparams_list_the_trainer_settings_actually_used(tiny_text, tmp_path):
    """`precision=16` runs as bf16-mixed on a CPU; the HParams tab says what ran, not what was asked."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, "trainer.precision=16", "trainer.accelerator=cpu", "sample.length=0"))
    events = EventAccumulator(str(run_dir / "hparams"))  # the HParams sub-run
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["trainer/precision"].string_value == "bf16-mixed"
    assert hparams["trainer/max_steps"].number_value == 4
    assert hparams["trainer/deterministic"].bool_value is False


@pytest.mark.parametrize("amx,avx512_bf16,expected", [(True, True, "bf16-mixed"), (False, True, "32-true"),
                                                        (False, False, "32-true")])
def test_auto_precision_is_bf16_only_where_it_measured_faster(monkeypatch, amx, avx512_bf16, expected):
    """bf16-mixed measured 2.4x fp32 on a CPU with AMX and 0.75-0.9x on one with AVX512-BF16 alone;
    a precision that is asked for is kept as it is."""
    from rnnexp.train import choose_precision

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_precision("auto", "auto") == expected
    assert choose_precision("32-true", "auto") == "32-true"
    assert choose_precision("bf16-mixed", "cpu") == "bf16-mixed"


def test_a_checkpoint_of_the_earlier_layout_samples_and_is_refused_for_resume_naming_what_changed(tiny_text,
                                                                                                  tmp_path):
    """Before optimizers and schedules were _target_ objects, a checkpoint's config named them by
    `name`; such a checkpoint still loads for sampling, and a resume lists the settings that changed."""
    from rnnexp.tasks import task_from_checkpoint

    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, "sample.length=0"))
    old = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    config = old["hyper_parameters"]["config"]
    config["optim"] = {"name": "adam", **{k: v for k, v in config["optim"].items() if k != "_target_"}}
    config["sched"] = {"name": "exponential", **{k: v for k, v in config["sched"].items() if k != "_target_"}}
    del config["init_from"]
    torch.save(old, tmp_path / "old.ckpt")
    task = task_from_checkpoint(load_checkpoint(tmp_path / "old.ckpt"))
    assert torch.equal(task.model.head.weight, old["state_dict"]["model.head.weight"])
    with pytest.raises(CheckpointError, match=r"differs: optim._target_=torch.optim.Adam \(checkpoint: \(absent\)\), "
                                              r"optim.name=\(absent\) \(checkpoint: adam\)"):
        train(tiny_run_config(tiny_text, run_dir, "sample.length=0", f"ckpt_path={tmp_path}/old.ckpt"))


def test_a_run_stopped_between_validations_resumes_without_logging_a_step_twice(tiny_text, tmp_path):
    """Stopped at step 5 (validations every 2), the last checkpoint is written at the validation the
    stop asked for; the resumed run logs each training step once and each validation at the step
    of the batch before it, as an uninterrupted run does."""
    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, "trainer.max_steps=5", "sample.length=0"))
    train(tiny_run_config(tiny_text, run_dir, "trainer.max_steps=8", "sample.length=0", f"ckpt_path={run_dir}"))
    scalars = read_scalars(run_dir)
    assert [s for s, _ in scalars["train/loss"]] == list(range(8))
    assert [s for s, _ in scalars["val/loss"]] == [1, 3, 4, 5, 7]  # after steps 2, 4, 5 | 6, 8


def test_early_stopping_turned_on_at_a_resume_uses_the_resumes_patience(tiny_text, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, "sample.length=0"))  # early stopping off, 4 steps
    train(tiny_run_config(tiny_text, run_dir, "sample.length=0", f"ckpt_path={run_dir}", "trainer.max_steps=20",
                          "callbacks.early_stop.patience=2", "callbacks.early_stop.min_delta=100"))
    # after the resume: step 6 sets the best, 8 and 10 do not improve by 100: patience 2 stops at 10
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 10
