"""A task's pieces, without training (fast: what mutation testing runs against rnnexp/tasks/base.py first):
each hook and helper of rnnexp.tasks.base.Task called on a real task with a stand-in trainer, loggers and
writers (SimpleNamespace, FakeLogger, Recorder): the dashboards' layout, the HParams record, logging
steps and validations, the NaN guard, checkpoints' extras, the end of training, DDP's sums."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from pytorch_lightning.accelerators import CPUAccelerator

from rnnexp.tasks.base import Task, TrainingDiverged, _upgrade_loop_state, _wrapping_markdown, hparams_of
from rnnexp.tasks.language_model import LanguageModelTask
from rnnexp.train import resolve
from tests.helpers import tiny_run_config


def task_of(tiny_text, tmp_path, *overrides: str) -> LanguageModelTask:
    return LanguageModelTask(resolve(tiny_run_config(tiny_text, tmp_path / "run", *overrides)), list("abc"))


def test_each_custom_scalars_chart_draws_the_tags_a_run_logs_for_it(tiny_text, tmp_path):
    task = task_of(tiny_text, tmp_path, "arch=deep", "arch.num_layers=2", "cell=lstm")
    parameters = [name for name, _ in task.model.named_parameters()]
    layers = ["rnn.l0", "rnn.l1"]
    logged = ["train/loss", "train/lr", "train/lr_log10", "train/tokens_per_sec", "val/loss", "val/bpc",
              "val_hp/bpc", "val_hp/best_bpc", "vitals/grad_norm/total", "vitals/grad_norm/total_after_clip",
              "vitals/grad_norm/clipped_frac", *(f"vitals/grad_norm/{name}" for name in parameters),
              *(f"vitals/gradient_flow/{layer}/first_over_last{end}" for layer in layers for end in ("", "_log10")),
              *(f"vitals/cells/{layer}/{key}" for layer in layers
                for key in ("saturated_frac", "input_gate", "forget_gate", "output_gate"))]
    drawn = {category: {title: (kind, [tag for tag in logged if any(re.search(r, tag) for r in regexes)])
                        for title, (kind, regexes) in charts.items()}
             for category, charts in task.dashboard_layout().items()}
    norms = "vitals/grad_norm/"
    assert drawn == {
        "training": {
            "loss: training vs validation (nats per token)": ("Multiline", ["train/loss", "val/loss"]),
            "validation bpc, and the best so far": ("Multiline", ["val/bpc", "val_hp/best_bpc"]),
            "learning rate, log10 (optimizers' rates side by side)": ("Multiline", ["train/lr_log10"]),
            "tokens per second": ("Multiline", ["train/tokens_per_sec"]),
        },
        "gradients": {
            "total norm, before and after clipping": ("Multiline", [f"{norms}total", f"{norms}total_after_clip"]),
            "share of steps clipped": ("Multiline", [f"{norms}clipped_frac"]),
            "gradient norm per parameter: embedding": ("Multiline", [f"{norms}embedding.weight"]),
            **{f"gradient norm per parameter: rnn layer {n}": (
                "Multiline", [f"{norms}rnn.{p}_l{n}" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")])
               for n in (0, 1)},
            "gradient norm per parameter: head": ("Multiline", [f"{norms}head.weight", f"{norms}head.bias"]),
            "gradient flow: log10 |dL_T/dh_1| / |dL_T/dh_T| (0: all of it arrives; -20: vanished)": (
                "Multiline", [f"vitals/gradient_flow/{layer}/first_over_last_log10" for layer in layers]),
        },
        "cells": {
            "saturated (|h| > 0.95) or dead (ReLU) units": (
                "Multiline", [f"vitals/cells/{layer}/saturated_frac" for layer in layers]),
            "mean gate openings": ("Multiline", [f"vitals/cells/{layer}/{gate}_gate" for layer in layers
                                                 for gate in ("input", "forget", "output")]),
        },
    }


def test_a_bidirectional_stacks_reverse_direction_gets_its_own_gradient_norm_chart(tiny_text, tmp_path):
    task = task_of(tiny_text, tmp_path, "data=segmentation", "arch=bidirectional")
    charts = task.gradient_norm_charts()
    assert list(charts) == [f"gradient norm per parameter: {key}" for key in
                            ("embedding", "rnn layer 0", "rnn layer 0 reverse", "head")]
    parameters = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    assert charts["gradient norm per parameter: rnn layer 0 reverse"] == [
        "Multiline", [f"vitals/grad_norm/rnn\\.{p}_l0_reverse$" for p in parameters]]


def test_the_hparams_record_flattens_the_settings_and_says_how_the_trainer_ran():
    config = {"cell": {"name": "lstm", "hidden_size": 8, "activation": None, "gates": ["i", "f"]},
              "lr": 0.01, "tie": True, "seed": 0, "run_dir": "here", "data_dir": "d", "cache_dir": "c",
              "ckpt_path": None, "init_from": None, "logger": {"x": 1}, "callbacks": {"y": 2},
              "trainer": {"max_steps": 5, "max_time": None, "deterministic": True, "devices": 2}}
    trainer = SimpleNamespace(precision="bf16-mixed", accelerator=CPUAccelerator())
    assert hparams_of(config, trainer) == {
        "cell/name": "lstm", "cell/hidden_size": 8, "cell/activation": "null", "cell/gates": '["i", "f"]',
        "lr": 0.01, "tie": True, "seed": 0, "trainer/max_steps": 5, "trainer/max_time": "null",
        "trainer/deterministic": True, "trainer/precision": "bf16-mixed", "trainer/accelerator": "CPU"}


@pytest.mark.parametrize("step", [0, 10, 50, 10**6])
def test_scheduled_sampling_feeds_the_true_symbol_with_probability_k_over_k_plus_exp_step_over_k(
        tiny_text, tmp_path, step):
    scheduled = task_of(tiny_text, tmp_path, "arch=arch2", "arch.feedback=scheduled", "arch.schedule_k=10")
    teacher = task_of(tiny_text, tmp_path, "arch=arch2", "arch.feedback=teacher", "arch.schedule_k=10")
    for task in (scheduled, teacher):
        task._trainer = SimpleNamespace(global_step=step)
    assert scheduled.teacher_prob() == pytest.approx(10 / (10 + math.exp(min(step / 10, 700))), rel=1e-12)
    assert teacher.teacher_prob() == 1.0


def test_text_for_tensorboard_escapes_what_markdown_reads_and_keeps_runs_of_spaces():
    assert _wrapping_markdown("a  b") == "a &nbsp;b"
    assert _wrapping_markdown("a   b c") == "a &nbsp;&nbsp;b c"
    assert _wrapping_markdown("<i> & *x*") == "&lt;i\\> &amp; \\*x\\*"
    specials = "\\`*_{}[]()>#+-.!"
    assert _wrapping_markdown(specials) == "".join("\\" + c for c in specials)
    assert _wrapping_markdown("plain, words: 'q' ; ?") == "plain, words: 'q' ; ?"


def optim_progress(completed: int) -> dict:
    counts = {"ready": completed, "completed": completed}
    return {"total": dict(counts), "current": dict(counts)}


def test_a_checkpoint_of_before_steps_per_batch_counts_its_steps_where_manual_optimisation_reads_them():
    automatic = "epoch_loop.automatic_optimization.optim_progress"
    manual = "epoch_loop.manual_optimization.optim_step_progress"

    def checkpoint(manual_steps: int) -> dict:
        return {"loops": {"fit_loop": {
            automatic: {"optimizer": {"step": optim_progress(12), "zero_grad": optim_progress(12)}},
            manual: optim_progress(manual_steps),
            "state_dict": {"combined_loader": [{"position": 3}], "other": 1}}}}

    old = checkpoint(0)
    _upgrade_loop_state(old)
    assert old["loops"]["fit_loop"][manual] == optim_progress(12)
    assert old["loops"]["fit_loop"]["state_dict"] == {"other": 1}  # the loader's position is not restored
    new = checkpoint(5)  # already stepped by the task: left as it is
    _upgrade_loop_state(new)
    assert new == checkpoint(5)
    for without in ("combined_loader", "state_dict"):  # an old checkpoint without a loader's state
        old = checkpoint(0)
        fit_loop = old["loops"]["fit_loop"]
        (fit_loop["state_dict"] if without == "combined_loader" else fit_loop).pop(without)
        _upgrade_loop_state(old)
        assert old["loops"]["fit_loop"][manual] == optim_progress(12)
    for partial in ({}, {"loops": {}}, {"loops": {"fit_loop": {manual: optim_progress(0)}}}):
        before = json.dumps(partial)
        _upgrade_loop_state(partial)
        assert json.dumps(partial) == before


def test_a_task_that_defines_training_step_is_refused_when_its_class_is_made():
    with pytest.raises(TypeError, match=r"^Broken defines training_step: a task gives one step's loss in step_loss "
                                        r"\(Task.training_step does the backward, clipping and update\)$"):
        type("Broken", (Task,), {"training_step": lambda self, batch, index: None})
    assert issubclass(type("Fine", (Task,), {"step_loss": lambda self, batch: None}), Task)


def test_the_architectures_a_task_refuses_by_default_and_why():
    assert Task.arch_refusal("arch2", "reverse") == (
        "arch=arch2 feeds back its predicted next symbol: it is a language model, not for data=reverse")
    assert Task.arch_refusal("seq2seq", "segmentation") == (
        "arch=seq2seq needs a sequence-to-sequence task (data=reverse, copy, sort, addition, number_words or "
        "parallel_text), not data=segmentation")
    assert [Task.arch_refusal(arch, "x") for arch in ("arch1", "deep", "bidirectional")] == [None] * 3


def test_a_checkpoint_restores_the_tasks_best_its_log_window_and_the_random_state(tiny_text, tmp_path):
    saved_rng = torch.get_rng_state()
    expected = torch.rand(3)
    old = {"best_val_loss": 1.5, "best_score": 2.25, "plateau": {"best": 1.0}, "first_logged_loss": 4.0,
           "log_window": (6.0, 3, 100), "torch_rng": saved_rng, "cuda_rng": [], "train_state": None}
    new = {**old, "best_step": 7, "log_window": ([(5, 1.0), (6, 3.0)], 2, 100), "penalty_window": torch.tensor(0.5),
           "norm_window": [(6, 2.0)], "train_states": [None]}
    task = task_of(tiny_text, tmp_path)
    task.continues_run = True
    task.on_load_checkpoint({"rnnexp": old})  # a checkpoint of before steps_per_batch, best_step and AR/TAR
    assert torch.equal(torch.rand(3), expected)
    assert (task.best_val_loss, task.best_score, task.best_step, task.first_logged_loss) == (1.5, 2.25, -1, 4.0)
    assert task._plateau_state == {"best": 1.0}
    assert task._window_losses == [(-1, 2.0)] * 3  # the saved sum as three steps of its mean
    assert (task._penalty_sum, task._window_norms) == (None, [])
    task.on_load_checkpoint({"rnnexp": new})
    assert (task.best_step, task._window_losses, task._window_norms) == (7, [(5, 1.0), (6, 3.0)], [(6, 2.0)])
    assert torch.equal(task._penalty_sum, torch.tensor(0.5))
    elsewhere = task_of(tiny_text, tmp_path)  # a resume into a new folder keeps its own best
    elsewhere.on_load_checkpoint({"rnnexp": new})
    assert (elsewhere.best_val_loss, elsewhere.best_score, elsewhere.best_step) == (math.inf, None, -1)
    for window, losses in (((0.0, 0, 0), []), ((2.0, 1, 10), [(-1, 2.0)])):  # empty, one step
        elsewhere.on_load_checkpoint({"rnnexp": {**old, "log_window": window}})
        assert elsewhere._window_losses == losses


class Recorder:
    """A TensorBoard writer's or any closeable's methods that note each call."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def add_text(self, *args: object) -> None:
        self.calls.append(("add_text", *args))

    def close(self) -> None:
        self.calls.append(("close",))

    def add_scalar(self, *args: object) -> None:
        self.calls.append(("add_scalar", *args))

    def flush(self) -> None:
        self.calls.append(("flush",))


class FakeLogger:
    """A Lightning logger: its `experiment` (TensorBoard's writer, CSV's, or none at all), and in
    `metrics` each call in order: (metrics, step), ("saved", None), ("hparams", params)."""

    def __init__(self, experiment: object | None) -> None:
        self.metrics: list[tuple] = []
        if experiment is not None:
            self.experiment = experiment

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.metrics.append((metrics, step))

    def save(self) -> None:
        self.metrics.append(("saved", None))

    def log_hyperparams(self, params: dict) -> None:
        self.metrics.append(("hparams", params))


def test_the_end_of_training_measures_the_test_split_and_writes_the_sample_to_its_file_and_the_text_tab(
        tiny_text, tmp_path):
    tensorboard, csv, plain = FakeLogger(Recorder()), FakeLogger(object()), FakeLogger(None)
    task = task_of(tiny_text, tmp_path)
    sample_file = Path(task.config["run_dir"]) / "sample.txt"
    sample_file.parent.mkdir(parents=True)
    task.test_loader = "the test loader"
    task.evaluate = lambda loader: {"loss": 1.5, "bpc": 2.0} if loader == "the test loader" else None
    task.generate_sample = lambda: "a  b\n<c> *d*"
    task._trainer = SimpleNamespace(is_global_zero=True, global_step=30, loggers=[tensorboard, csv, plain])
    task.on_train_end()
    assert task.test_metrics == {"loss": 1.5, "bpc": 2.0}
    for logger in (tensorboard, csv, plain):
        assert logger.metrics == [({"test/loss": 1.5, "test/bpc": 2.0}, 30)]
    assert sample_file.read_bytes() == b"a  b\n<c> *d*\n"
    assert tensorboard.experiment.calls == [("add_text", "samples/final", "a &nbsp;b  \n&lt;c\\> \\*d\\*  ", 29)]

    sample_file.unlink()
    other_rank = FakeLogger(Recorder())
    task._trainer = SimpleNamespace(is_global_zero=False, global_step=30, loggers=[other_rank])
    task.on_train_end()  # measures its share of the test split; writes no sample
    assert len(other_rank.metrics) == 1 and not other_rank.experiment.calls and not sample_file.exists()
    task.test_loader, task.generate_sample = None, lambda: None  # no test split, no sample (sample.length=0)
    task._trainer = SimpleNamespace(is_global_zero=True, global_step=30, loggers=[other_rank])
    task.on_train_end()
    assert len(other_rank.metrics) == 1 and not other_rank.experiment.calls and not sample_file.exists()
    task._trainer = SimpleNamespace(global_step=0, loggers=[other_rank])
    task.log_text("samples/validation", "x  y", preformatted=False)  # as it is, at step 0 before any step
    assert other_rank.experiment.calls == [("add_text", "samples/validation", "x  y", 0)]


def test_sums_over_ddp_processes_go_through_the_strategy_and_a_single_process_keeps_its_value(tiny_text, tmp_path):
    task = task_of(tiny_text, tmp_path)
    reduced = []
    strategy = SimpleNamespace(reduce=lambda value, reduce_op: reduced.append((value, reduce_op)) or value * 2)
    value = torch.tensor(3.0)
    for processes in (2, 3):
        task._trainer = SimpleNamespace(world_size=processes, strategy=strategy)
        assert task.sum_over_ranks(value) == 6.0
    assert reduced == [(value, "sum")] * 2
    task._trainer = SimpleNamespace(world_size=1, strategy=strategy)
    assert task.sum_over_ranks(value) is value
    assert task.gather_from_ranks("mine") == ["mine"]


def test_gathering_from_ddp_processes_lists_each_ones_value_in_rank_order(tiny_text, tmp_path, monkeypatch):
    def all_gather_object(into: list, value: object) -> None:
        assert into == [None, None, None]
        into[:] = ["rank 0's", value, "rank 2's"]

    monkeypatch.setattr(torch.distributed, "all_gather_object", all_gather_object)
    task = task_of(tiny_text, tmp_path)
    task._trainer = SimpleNamespace(world_size=3)
    assert task.gather_from_ranks("mine") == ["rank 0's", "mine", "rank 2's"]


def test_a_nested_modules_gradient_norm_chart_is_named_by_its_whole_path(tiny_text, tmp_path):
    task = task_of(tiny_text, tmp_path)
    task.model = torch.nn.ModuleDict({"encoder": torch.nn.ModuleDict({"embedding": torch.nn.Embedding(3, 2),
                                                                       "rnn": torch.nn.GRU(2, 2)})})
    assert list(task.gradient_norm_charts()) == ["gradient norm per parameter: encoder.embedding",
                                                 "gradient norm per parameter: encoder.rnn layer 0"]


def test_teardown_closes_the_hparams_record_once(tiny_text, tmp_path):
    task = task_of(tiny_text, tmp_path)
    task.teardown("fit")  # none was opened: nothing to close
    writer = Recorder()
    task._hparams_writer = writer
    task.teardown("fit")
    task.teardown("validate")
    assert writer.calls == [("close",)] and task._hparams_writer is None


def test_a_logging_step_writes_the_windows_means_the_norms_and_the_rates_in_one_go(tiny_text, tmp_path):
    task = task_of(tiny_text, tmp_path, "clip=1.0", "cell=rnn", "cell.hidden_size=4", "arch.embedding_dim=3")
    logger = FakeLogger(None)
    for p in task.parameters():
        p.grad = torch.full_like(p, 0.5)
    grads = {name: 0.5 * p.numel() ** 0.5 for name, p in task.model.named_parameters()}
    total = math.sqrt(sum(g * g for g in grads.values()))
    task._trainer = SimpleNamespace(log_every_n_steps=5, global_step=9, loggers=[logger], world_size=1)
    task.count_train(torch.tensor(2.0), tokens=60, penalty=torch.tensor(1.0))
    task.count_train(torch.tensor(4.0), tokens=40, penalty=torch.tensor(2.0))
    task._window_start = time.perf_counter() - 10.0
    optimizer = torch.optim.SGD(task.parameters(), lr=0.5)
    assert task.tokens_trained == 100  # by this process in this attempt, not reset by logging
    task.on_before_optimizer_step(optimizer)
    (metrics, step), saved = logger.metrics
    assert step == 9 and saved == ("saved", None)  # written and flushed at the step they describe
    assert metrics.keys() == {*(f"vitals/grad_norm/{name}" for name in grads), "vitals/grad_norm/total",
                              "vitals/grad_norm/total_after_clip", "vitals/grad_norm/clipped_frac", "train/loss",
                              "train/activation_penalty", "train/lr", "train/lr_log10", "train/tokens_per_sec"}
    for name, norm in grads.items():
        assert metrics[f"vitals/grad_norm/{name}"] == pytest.approx(norm, rel=1e-5)
    assert metrics["vitals/grad_norm/total"] == pytest.approx(total, rel=1e-5)
    assert metrics["vitals/grad_norm/total_after_clip"] == pytest.approx(1.0, rel=1e-5)
    assert metrics["vitals/grad_norm/clipped_frac"] == 1.0
    assert (metrics["train/loss"], metrics["train/activation_penalty"]) == (3.0, 1.5)  # the means of the steps
    assert (metrics["train/lr"], metrics["train/lr_log10"]) == (0.5, pytest.approx(math.log10(0.5)))
    assert 100 / 10.5 < metrics["train/tokens_per_sec"] <= 100 / 10.0
    assert task.progress_stats == {"loss": 3.0, "tok_per_s": metrics["train/tokens_per_sec"]}
    assert (task._window_losses, task._window_norms, task._penalty_sum, task._window_tokens) == ([], [], None, 0)

    # Two DDP processes (the other's numbers as this one's): the loss is their mean, the tokens their sum.
    logger.metrics.clear()
    strategy = SimpleNamespace(reduce=lambda value, reduce_op: value * 2)
    task._trainer = SimpleNamespace(log_every_n_steps=5, global_step=14, loggers=[logger], world_size=2,
                                    strategy=strategy)
    task.count_train(torch.tensor(1.0), tokens=50, penalty=torch.tensor(0.5))
    task._window_start = time.perf_counter() - 10.0
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    task.on_before_optimizer_step(optimizer)
    metrics = logger.metrics[0][0]
    assert (metrics["train/loss"], metrics["train/activation_penalty"]) == (1.0, 0.5)
    assert 100 / 10.5 < metrics["train/tokens_per_sec"] <= 100 / 10.0
    assert metrics["train/lr_log10"] == -math.inf
    # A step that is not a logging step writes nothing; a window without a loss logs a loss of 0.
    logger.metrics.clear()
    task._trainer = SimpleNamespace(log_every_n_steps=5, global_step=15, loggers=[logger], world_size=1)
    task.on_before_optimizer_step(optimizer)
    assert logger.metrics == [] and len(task._window_norms) == 1
    task._trainer.global_step = 19  # a window without a penalty (AR/TAR off) logs none
    task.count_train(torch.tensor(1.0), tokens=50)
    task.on_before_optimizer_step(optimizer)
    assert "train/activation_penalty" not in logger.metrics[0][0]
    logger.metrics.clear()
    task._trainer.global_step = 24
    task.on_before_optimizer_step(optimizer)
    assert logger.metrics[0][0]["train/loss"] == 0.0
    task._trainer = SimpleNamespace(log_every_n_steps=0, global_step=24, loggers=[logger], world_size=1)
    assert not task._is_log_step()


def test_clipped_frac_counts_the_steps_whose_norm_clipping_shrank(tiny_text, tmp_path):
    task = task_of(tiny_text, tmp_path, "clip=1.0")
    assert task.clipped_fraction() == 0.0  # no step yet
    # torch scales by clip / (norm + 1e-6) where that is below 1: at 1 - 5e-7, not at 1 - 1e-6 (float32)
    task._window_norms = [(step, torch.tensor(norm)) for step, norm in enumerate((0.5, 1 - 5e-7, 1 - 1e-6, 3.0))]
    assert task.clipped_fraction() == 0.5
    unclipped = task_of(tiny_text, tmp_path, "clip=0")
    unclipped._window_norms = task._window_norms
    assert unclipped.clipped_fraction() == 0.0


def test_the_nan_guard_finds_the_first_bad_step_and_skip_mode_drops_a_bad_gradient(tiny_text, tmp_path, caplog):
    nan, one = torch.tensor(math.nan), torch.tensor(1.0)
    stop = task_of(tiny_text, tmp_path)
    assert stop.first_bad_step() == -1
    stop._window_losses = [(3, one), (4, one), (5, torch.tensor(math.inf))]
    stop._window_norms = [(3, one), (4, nan), (5, one)]
    assert stop.first_bad_step() == 4  # the gradient's NaN came first
    with pytest.raises(TrainingDiverged, match=r"^loss or gradient became NaN/inf at step 4; training stopped, the "
                       r"checkpoints hold the last finite state \(try a lower lr, clip > 0, or "
                       r"guard.on_nonfinite=skip\)$"):
        stop.raise_if_diverged()
    stop._window_norms = [(0, nan)]
    assert stop.first_bad_step() == 0
    with pytest.raises(TrainingDiverged, match="at step 0;"):
        stop.raise_if_diverged()
    stop._window_losses, stop._window_norms = [(1, one)], [(1, one)]
    stop.raise_if_diverged()  # finite: goes on
    stop._trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler="fp16's GradScaler"))
    stop._window_norms = [(1, nan)]  # overflowing gradients are the scaler's to skip
    assert stop._grad_scaler() == "fp16's GradScaler" and stop.first_bad_step() == -1

    skip = task_of(tiny_text, tmp_path, "guard.on_nonfinite=skip")
    skip._window_losses, skip._window_norms = [(2, one)], [(2, nan)]
    assert skip.first_bad_step() == -1  # under skip, bad gradients are dropped, not kept
    parameter = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    skip._trainer = SimpleNamespace(global_step=7)
    for norm, kept in ((one, True), (nan, False)):
        parameter.grad = torch.ones(2)
        skip._skip_if_nonfinite(norm, optimizer)
        assert (parameter.grad is not None) == kept
    assert caplog.messages[-1] == "step 7: gradient norm is nan; step skipped"
    for task, trainer in ((stop, SimpleNamespace(global_step=7)),
                          (skip, SimpleNamespace(global_step=7, precision_plugin=SimpleNamespace(scaler="fp16")))):
        task._trainer = trainer
        parameter.grad = torch.ones(2)
        task._skip_if_nonfinite(nan, optimizer)  # stop mode, or fp16's scaler: the gradient is left
        assert parameter.grad is not None


def test_a_train_loss_over_explode_factor_times_the_first_logged_one_is_warned_of(tiny_text, tmp_path, caplog):
    task = task_of(tiny_text, tmp_path, "guard.explode_factor=3")
    task._trainer = SimpleNamespace(global_step=20)
    for loss in (2.0, 6.0, 6.5):
        task._report_explosion(loss)
    assert task.first_logged_loss == 2.0
    assert caplog.messages == ["step 20: train loss 6.500 is over 3x its first value 2.000: exploding?"]
    quiet = task_of(tiny_text, tmp_path, "guard.explode_factor=0")
    quiet._trainer = SimpleNamespace(global_step=20)
    for loss in (2.0, 100.0):
        quiet._report_explosion(loss)
    assert len(caplog.messages) == 1


def test_validation_time_is_left_out_of_the_training_throughput(tiny_text, tmp_path):
    task = task_of(tiny_text, tmp_path)
    task._window_start = 100.0
    task.on_validation_start()
    task._validation_started -= 5.0  # as if the validation had taken 5 s
    task.on_validation_end()
    assert 105.0 <= task._window_start < 105.5  # the window starts 5 s later: the same training time


def test_a_checkpoint_carries_the_tasks_windows_and_bests_to_the_resumed_task(tiny_text, tmp_path):
    saved = task_of(tiny_text, tmp_path)
    saved.best_val_loss, saved.best_score, saved.best_step, saved.first_logged_loss = 1.25, 1.8, 6, 3.5
    saved.count_train(torch.tensor(2.0), tokens=10, penalty=torch.tensor(0.25))
    saved._window_norms = [(7, torch.tensor(4.0))]
    checkpoint: dict = {}
    saved.on_save_checkpoint(checkpoint)
    resumed = task_of(tiny_text, tmp_path)
    resumed.continues_run = True
    resumed.on_load_checkpoint(checkpoint)
    assert (resumed.best_val_loss, resumed.best_score, resumed.best_step, resumed.first_logged_loss) == (
        1.25, 1.8, 6, 3.5)
    assert resumed._window_losses == saved._window_losses and resumed._window_norms == saved._window_norms
    assert torch.equal(resumed._penalty_sum, torch.tensor(0.25))


@pytest.mark.parametrize("higher_is_better", [False, True])
def test_a_validation_keeps_the_first_best_score_in_the_metrics_direction_and_logs_it(
        tiny_text, tmp_path, higher_is_better):
    task = task_of(tiny_text, tmp_path)
    task.higher_is_better = higher_is_better
    logged, logger, writer = [], FakeLogger(None), Recorder()
    task.log_dict = lambda values, **options: logged.append((values, options))
    task._hparams_writer = writer
    scores = (2.0, 1.5, 1.5, 1.75) if not higher_is_better else (0.5, 0.75, 0.75, 0.625)
    for step, (loss, score) in enumerate(zip((3.0, 2.0, 2.5, 2.25), scores, strict=True), start=1):
        task._trainer = SimpleNamespace(global_step=10 * step, loggers=[logger], world_size=1)
        task.log_validation(torch.tensor(loss), {"val/bpc": torch.tensor(loss / math.log(2))}, torch.tensor(score))
    best = 1.5 if not higher_is_better else 0.75
    assert (task.best_val_loss, task.best_score, task.best_step) == (2.0, best, 20)  # a tie keeps the first
    assert task.progress_stats["val_loss"] == 2.25
    values, options = logged[-1]
    assert values == {"val/loss": 2.25, "val/bpc": pytest.approx(2.25 / math.log(2)), "val_hp/bpc": scores[-1],
                      "val_hp/best_bpc": best}
    assert options["logger"] is False and not options["sync_dist"]
    assert logger.metrics[-2:] == [(values, 39), ("saved", None)]  # at the step of the last training batch
    assert writer.calls[-3:] == [("add_scalar", "val_hp/bpc", scores[-1], 39),
                                 ("add_scalar", "val_hp/best_bpc", best, 39), ("flush",)]
    task._trainer = SimpleNamespace(global_step=50, loggers=[], world_size=2)  # DDP: the values are synced
    task.log_validation(torch.tensor(2.0), {}, torch.tensor(1.0))
    assert logged[-1][1]["sync_dist"] is True
    with pytest.raises(TrainingDiverged, match=r"^validation loss is nan at step 50$"):
        task.log_validation(torch.tensor(math.nan), {}, torch.tensor(1.0))


def test_the_start_of_a_run_records_its_settings_and_layout_once_and_a_resume_purges_the_hparams_run(
        tiny_text, tmp_path):
    from pytorch_lightning.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    task = task_of(tiny_text, tmp_path)
    with_layout, plain = FakeLogger(Recorder()), FakeLogger(None)
    add_custom_scalars = []
    with_layout.experiment.add_custom_scalars = add_custom_scalars.append
    trainer = SimpleNamespace(precision="32-true", accelerator=CPUAccelerator(), is_global_zero=True,
                              loggers=[with_layout, plain])
    task._trainer = trainer
    task.on_fit_start()
    params = hparams_of(task.config, trainer)
    assert with_layout.metrics == plain.metrics == [("hparams", params)]
    assert add_custom_scalars == [task.dashboard_layout()]
    assert task._hparams_writer is None  # no TensorBoard logger: no HParams sub-run
    task.continues_run = True  # a resume into its own folder: the records are there already
    task.on_fit_start()
    assert len(with_layout.metrics) == 1 and len(add_custom_scalars) == 1

    tensorboard = TensorBoardLogger(save_dir=str(tmp_path / "tb"), name="", version="")
    task._trainer = SimpleNamespace(precision="32-true", accelerator=CPUAccelerator(), is_global_zero=True,
                                    loggers=[tensorboard])
    task.resumed_at_step = 7
    task.on_fit_start()
    task.teardown("fit")
    (events,) = (tmp_path / "tb" / "hparams").iterdir()
    starts = [event.step for event in EventFileLoader(str(events)).Load()
              if event.HasField("session_log") and event.session_log.status == event.session_log.START]
    assert starts == [7]  # TensorBoard drops what an interrupted attempt wrote from step 7 on
