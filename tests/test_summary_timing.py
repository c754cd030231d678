"""Wall time and throughput in result.json and sweep summaries: measured by callbacks.Report for runs
of any length (no logged train/tokens_per_sec needed), and summed over a resumed run's attempts."""

import csv
import json
import math
import time
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import OmegaConf

from rnnexp.summary import summarize
from rnnexp.train import train
from tests.helpers import compose_config, tiny_run_config

TOKENS_PER_STEP = 4 * 8  # TINY_MODEL: batch_size=4 streams x unroll=8


class Sleep(pl.Callback):
    """Makes each training step take at least `seconds`: a wall time the test can check."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_before_optimizer_step(self, *args) -> None:  # per step, however many a Lightning batch holds
        time.sleep(self.seconds)


SLOW = ["+callbacks.sleep._target_=tests.test_summary_timing.Sleep", "+callbacks.sleep.seconds=0.1"]


def record_for_summary(run_dir: Path, cfg, overrides: list[str]) -> None:
    """What Hydra writes into a run's .hydra/ (in-process runs have none): the summary reads it."""
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), run_dir / ".hydra" / "overrides.yaml")


def summary_rows(root: Path) -> dict[str, dict[str, str]]:
    summarize(root)
    with open(root / "summary.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {row["run"]: row for row in rows}


def test_a_run_shorter_than_log_every_n_steps_gets_measured_wall_time_and_throughput(tiny_text, tmp_path):
    run_dir = tmp_path / "sweep" / "short"
    # 4 steps, logged every 50: no train/loss and no train/tokens_per_sec is ever logged.
    cfg = tiny_run_config(tiny_text, run_dir, "trainer.log_every_n_steps=50", "sample.length=0", *SLOW)
    started = time.perf_counter()
    train(cfg)
    elapsed = time.perf_counter() - started
    result = json.loads((run_dir / "result.json").read_text())
    assert result["steps"] == 4 and result["tokens"] == 4 * TOKENS_PER_STEP
    assert 4 * 0.1 <= result["wall_seconds"] <= elapsed  # the 4 slowed steps, within train()'s own time
    assert math.isclose(result["tokens_per_sec"], result["tokens"] / result["wall_seconds"])
    record_for_summary(run_dir, cfg, ["trainer.log_every_n_steps=50"])
    row = summary_rows(tmp_path / "sweep")["short"]
    assert row["status"] == "finished" and row["steps"] == "4"
    assert float(row["wall s"]) == round(result["wall_seconds"], 1) > 0
    assert float(row["tokens/s"].replace(",", "")) == round(result["tokens_per_sec"]) > 0


def test_a_resumed_run_reports_the_wall_time_and_tokens_of_all_its_attempts(tiny_text, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, "sample.length=0", *SLOW))
    first = json.loads((run_dir / "result.json").read_text())
    train(tiny_run_config(tiny_text, run_dir, "sample.length=0", *SLOW, f"ckpt_path={run_dir}",
                          "trainer.max_steps=8"))
    both = json.loads((run_dir / "result.json").read_text())
    assert both["steps"] == 8 and both["tokens"] == 8 * TOKENS_PER_STEP
    # The first attempt's time up to its last checkpoint (at its end), and 4 more slowed steps.
    assert both["wall_seconds"] >= 0.9 * first["wall_seconds"] + 4 * 0.1
    assert math.isclose(both["tokens_per_sec"], both["tokens"] / both["wall_seconds"])


def test_a_run_without_result_json_falls_back_to_its_events_and_leaves_missing_measures_blank(tmp_path):
    run_dir = tmp_path / "sweep" / "running"
    record_for_summary(run_dir, compose_config(), [])  # started: its config saved, nothing logged yet
    row = summary_rows(tmp_path / "sweep")["running"]
    assert row["status"] == "running or stopped" and row["wall s"] == "" and row["tokens/s"] == ""
