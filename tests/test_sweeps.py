"""Sweeps beyond a plain -m loop: parallel and cluster launchers (searches: tests/test_search.py)."""

import os
import runpy

import pytest
from hydra import compose, initialize_config_dir

from tests.helpers import REPO, TINY_MODEL, make_text, run_train

QUIET = ["sample.length=0", "sample.val_length=0"]


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(make_text())
    return path


def compose_with_hydra(*overrides: str):
    runpy.run_path(str(REPO / "train.py"))  # registers train.py's resolvers, runs nothing
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.slow
def test_joblib_runs_jobs_side_by_side_with_the_cores_shared(text, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_train("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2", f"hydra.sweep.dir={sweep}",
                       "data=text_file", f"data.path={text}", *TINY_MODEL, *QUIET, "trainer.max_steps=40")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(sweep.glob("*_lstm_*"))
    assert len(runs) == 2
    # started: Hydra writes the job's config; ended: train() writes result.json
    spans = [((run / ".hydra" / "config.yaml").stat().st_mtime, (run / "result.json").stat().st_mtime) for run in runs]
    (start_a, end_a), (start_b, end_b) = spans
    assert start_a < end_b and start_b < end_a  # they ran at the same time
    threads = max(os.cpu_count() // 2, 1)  # joblib gives each of the 2 workers half the cores
    for run in runs:
        assert f"; {threads} CPU threads" in (run / "train.log").read_text()


@pytest.mark.slow
def test_submitit_local_runs_a_sweep(text, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_train("-m", "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1", "seed=1,2",
                       f"hydra.sweep.dir={sweep}", "data=text_file", f"data.path={text}", *TINY_MODEL, *QUIET)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(sweep.glob("*_lstm_*"))
    assert [run.name.split("_")[0] for run in runs] == ["0", "1"]
    for run in runs:
        assert (run / "result.json").exists() and (run / "checkpoints" / "last.ckpt").exists()
        assert "; 1 CPU threads" in (run / "train.log").read_text()  # hydra.launcher.cpus_per_task


def test_slurm_preset_sets_partition_time_gpus_and_array_parallelism():
    cfg = compose_with_hydra("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4")
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min, launcher.array_parallelism) == \
        ("gpu", 4, 240, 16)


def test_typo_in_a_search_preset_name_is_one_line():
    result = run_train("-m", "hparams_search=lm_lr_clp")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: hparams_search=lm_lr_clp does not exist (no "
                                     "hparams_search/lm_lr_clp.yaml in conf/ or the search path); "
                                     "did you mean hparams_search=lm_lr_clip?")
