"""A task's pure pieces, without training (fast: what mutation testing runs against rnnexp/tasks/base.py):
the Custom Scalars layout against the tags a run logs, the HParams record of a config, and the
scheduled-sampling probability."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
from pytorch_lightning.accelerators import CPUAccelerator

from rnnexp.tasks.base import hparams_of
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
