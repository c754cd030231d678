"""A resume continues its run with the checkpoint's own settings: every setting is compared, each one
changed in turn (the settings come from real composed configs, not from a list here), and only
those a resume may change pass. And, quickly (the SIGKILL test in test_resume.py is slow): a resume
carries on with the hidden state the checkpoint saved, the one the uninterrupted run had."""

import copy
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rnnexp.checkpoint import check_same_settings, flatten, load_checkpoint
from rnnexp.errors import CheckpointError
from rnnexp.train import resolve, train
from tests.helpers import REPO, tiny_run_config, tiny_seq2seq_config

# What a resume may change, as docs/reliability.md says it: how long it trains, how it logs and shows
# progress, where files are (keys, or groups ending in "."). This list is the specification the
# code's RESUME_MAY_CHANGE is checked against; every other setting must be refused.
MAY_CHANGE = (
    "ckpt_path", "init_from", "run_dir", "data_dir", "cache_dir", "scale", "seeds", "sample.", "logger.",
    "diagnostics.", "callbacks.progress_bar.", "callbacks.diagnostics.", "callbacks.early_stop.",
    "callbacks.model_checkpoint.every_n_steps", "trainer.max_steps", "trainer.max_time", "trainer.max_epochs",
    "trainer.val_check_interval", "trainer.log_every_n_steps", "trainer.enable_progress_bar",
    "trainer.enable_model_summary", "trainer.num_sanity_val_steps", "trainer.accelerator", "trainer.devices",
    "trainer.profiler", "trainer.strategy", "trainer.num_nodes", "steps_per_batch",
)

CONFIGS = {  # several group options, so that every group's keys are met
    "lm": lambda text, run: tiny_run_config(text, run),
    "word-deep-ddp": lambda text, run: tiny_run_config(text, run, "tokenizer=word", "arch=deep", "optim=sgd",
                                                       "sched=plateau", "trainer=ddp", "logger=many"),
    "cosine-gru": lambda text, run: tiny_run_config(text, run, "cell=gru", "sched=cosine", "optim=rmsprop",
                                                    "arch=arch2"),
    "seq2seq": lambda text, run: tiny_seq2seq_config(run, "cell=rnn"),
    "segmentation": lambda text, run: tiny_run_config(text, run, "data=segmentation", "data.corpus=text_file",
                                                      f"data.path={text}", "arch=bidirectional", "optim=adamw"),
}


def allowed(key: str) -> bool:
    return any(key == m or (m.endswith(".") and key.startswith(m)) for m in MAY_CHANGE)


def changed(value):
    """Another value of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "_other"
    if isinstance(value, list):
        return [*value, 7]
    if isinstance(value, dict):
        return {**value, "other": 7}
    return "other"  # None


def checkpoint_of(config: dict) -> dict:
    return {"hyper_parameters": {"config": config, "vocab": list("abc")}}


def refusal(saved: dict, now: dict) -> str | None:
    try:
        check_same_settings(checkpoint_of(saved), Path("run/checkpoints/last.ckpt"), now)
    except CheckpointError as e:
        return str(e)
    return None


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_resume_that_changes_any_setting_is_refused_unless_a_resume_may_change_it(tiny_text, tmp_path, name):
    cfg = CONFIGS[name](tiny_text, tmp_path / "run")
    saved = resolve(cfg)
    assert refusal(saved, resolve(cfg)) is None  # the same settings resume
    wrong = []
    for key, value in flatten(saved).items():
        other = copy.deepcopy(cfg)
        OmegaConf.update(other, key, changed(value), merge=False, force_add=True)
        now = resolve(other)  # settings that follow this one (${run_dir}, ${clip}, ...) change with it
        assert flatten(now)[key] != value, key
        message = refusal(saved, now)
        if allowed(key) and message is not None:
            wrong.append(f"{key} may change on a resume, but: {message}")
        if not allowed(key) and (message is None or f" {key}={flatten(now)[key]} (checkpoint: " not in message):
            wrong.append(f"{key} changed, and the resume was not refused for it: {message}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_resume_that_adds_or_drops_a_setting_is_refused_unless_a_resume_may_change_it(tiny_text, tmp_path, name):
    saved = resolve(CONFIGS[name](tiny_text, tmp_path / "run"))
    wrong = []
    for group in [k for k, v in saved.items() if isinstance(v, dict) and v]:
        now = copy.deepcopy(saved)
        now[group]["added_on_resume"] = 1
        message = refusal(saved, now)
        if allowed(f"{group}.added_on_resume") != (message is None):
            wrong.append(f"{group}.added_on_resume: {message}")
        dropped = next(iter(saved[group]))
        now = copy.deepcopy(saved)
        del now[group][dropped]
        message = refusal(saved, now)
        if allowed(f"{group}.{dropped}") != (message is None) or (message and "=(absent) (checkpoint:" not in message):
            wrong.append(f"{group}.{dropped} dropped: {message}")
    assert not wrong, "\n".join(wrong)


def test_a_cosine_schedules_length_may_change_only_with_the_budget_it_follows(tiny_text, tmp_path):
    cfg = tiny_run_config(tiny_text, tmp_path / "run", "sched=cosine")
    saved = resolve(cfg)
    assert saved["sched"]["total_steps"] == saved["trainer"]["max_steps"] == 4
    longer = resolve(OmegaConf.merge(cfg, {"trainer": {"max_steps": 40}}))
    assert longer["sched"]["total_steps"] == 40 and refusal(saved, longer) is None  # it follows the budget
    own = resolve(OmegaConf.merge(cfg, {"sched": {"total_steps": 40}}))
    assert "sched.total_steps=40 (checkpoint: 4)" in refusal(saved, own)  # set apart from the budget: refused
    both = resolve(OmegaConf.merge(cfg, {"sched": {"total_steps": 30}, "trainer": {"max_steps": 40}}))
    assert "sched.total_steps=30 (checkpoint: 4)" in refusal(saved, both)


class HiddenStateAt(pl.Callback):
    """Keeps the hidden state that training step `step` started from (the task's replay_batch holds
    it) and the weights after it. Kept on the class: Hydra builds the instance."""

    seen: dict[str, object] = {}

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        if trainer.global_step - 1 == self.step:  # global_step counts the step just taken
            state = pl_module.replay_batch[2]
            HiddenStateAt.seen = {"state": None if state is None else tuple(s.clone() for s in state),
                                  "weights": {k: v.clone() for k, v in pl_module.state_dict().items()}}


def test_a_resume_starts_from_the_hidden_state_its_checkpoint_saved(tiny_text, tmp_path):
    steady = ["trainer.deterministic=true", "trainer.precision=32-true", "sample.length=0", "sample.val_length=0",
              "+callbacks.state._target_=tests.test_resume_settings.HiddenStateAt", "+callbacks.state.step=4"]
    train(tiny_run_config(tiny_text, tmp_path / "straight", "trainer.max_steps=6", *steady))
    straight = HiddenStateAt.seen
    train(tiny_run_config(tiny_text, tmp_path / "first", "trainer.max_steps=4", *steady))
    saved = load_checkpoint(tmp_path / "first" / "checkpoints" / "last.ckpt")
    (saved_state,) = saved["rnnexp"]["train_states"]  # one process: (h, c) of the LSTM
    assert saved["global_step"] == 4 and saved_state is not None
    HiddenStateAt.seen = {}
    train(tiny_run_config(tiny_text, tmp_path / "resumed", "trainer.max_steps=6", *steady,
                          f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}"))
    resumed = HiddenStateAt.seen
    assert straight["state"] is not None and resumed["state"] is not None
    assert all(s.abs().sum() > 0 for s in straight["state"])  # carried from step 3, not a fresh zero state
    for a, b, c in zip(straight["state"], saved_state, resumed["state"], strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
    for name, tensor in straight["weights"].items():  # and so step 4 trains to the same weights
        assert torch.equal(resumed["weights"][name], tensor), name


def test_only_a_runs_own_last_ckpt_continues_it_in_its_folder_and_record(tmp_path):
    from rnnexp.checkpoint import new_folder, resume_output_subdir, resume_run_dir

    run = tmp_path / "runs" / "a"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("last.ckpt", "best.ckpt"):
        (run / "checkpoints" / name).write_bytes(b"x")
    (tmp_path / "copy.ckpt").write_bytes(b"x")
    new = str(tmp_path / "new" / "deeper" / "run")  # made now, with the folders above it
    for given in (run, run / "checkpoints" / "last.ckpt"):
        assert resume_run_dir(str(given), new) == str(run)
        assert resume_output_subdir(str(given), "2026-12-01_10-00-00") == ".hydra/resumes/2026-12-01_10-00-00"
    assert not (tmp_path / "new").exists()
    for given in (run / "checkpoints" / "best.ckpt", tmp_path / "copy.ckpt", None, tmp_path / "missing.ckpt"):
        assert resume_output_subdir(None if given is None else str(given), "now") == ".hydra"
    assert resume_run_dir(str(run / "checkpoints" / "best.ckpt"), new) == new and Path(new).is_dir()
    assert new_folder(new) == f"{new}-2" and new_folder(new) == f"{new}-3"  # taken: the next free name


def test_a_presets_own_folder_leaves_no_empty_default_folder_behind(tmp_path, monkeypatch):
    """OmegaConf's merge resolves the default hydra.sweep.dir that a study preset replaces, making its
    folder (a sweep again for each job); Hydra's callback (conf/train.yaml) removes it, and only it."""
    from rnnexp.checkpoint import RemoveUnusedFolders, new_folder
    from rnnexp.resolvers import register

    register()  # as train.py does at import
    monkeypatch.chdir(tmp_path)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        config = compose(config_name="train", overrides=["experiment=lr_sweep"], return_hydra_config=True)
    made = list((tmp_path / "outputs" / "multirun").iterdir())
    assert [p.name.partition("_")[0] for p in made] == ["sweep"]  # the default's, made in the merge
    kept = Path(new_folder(str(tmp_path / "outputs" / "multirun" / "kept")))
    (kept / "multirun.yaml").write_text("x")
    assert config.hydra.callbacks.unused_folders._target_ == "rnnexp.checkpoint.RemoveUnusedFolders"
    RemoveUnusedFolders().on_multirun_start(config)
    study = Path(config.hydra.sweep.dir)
    assert study.name.startswith("lr_sweep_") and study.is_dir()
    assert sorted((tmp_path / "outputs" / "multirun").iterdir()) == sorted([kept, study.resolve()])


def test_an_unreadable_checkpoint_is_named_with_the_first_line_of_why(tmp_path):
    from rnnexp.checkpoint import _first_line

    assert _first_line(ValueError("  first\nsecond  ")) == "first"
    assert _first_line(EOFError("   ")) == "EOFError" and _first_line(OSError()) == "OSError"
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=rf"^checkpoint {empty} is corrupt or truncated \(.+\)$"):
        load_checkpoint(empty)


def test_a_resume_within_the_second_of_an_earlier_event_file_writes_a_file_that_sorts_after_it(tmp_path):
    """TensorBoard reads event files in name order (second, host, pid, a counter that sorts 10 before 9):
    an in-process resume in the same second waits for the next one, so its purge is read last."""
    import time

    from rnnexp.train import after_earlier_event_files

    now = int(time.time())
    (tmp_path / f"events.out.tfevents.{now:010d}.host.1.9").write_bytes(b"")
    after_earlier_event_files(tmp_path)
    assert time.time() >= now + 1  # a file made now is named with a later second
    started = time.time()
    after_earlier_event_files(tmp_path / "no_events_here")
    assert time.time() - started < 0.5  # and nothing to wait for without earlier files
