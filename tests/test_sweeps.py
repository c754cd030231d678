"""Sweeps beyond a plain -m loop: the Optuna search presets, parallel and cluster launchers."""

import json
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


def test_search_presets_minimise_loss_metrics_and_maximise_accuracy_metrics():
    for preset in ("lm_lr_clip", "lm_size"):
        cfg = compose_with_hydra(f"hparams_search={preset}")
        assert cfg.hydra.sweeper._target_ == "hydra_plugins.rnnexp_sweeper.optuna_study.OptunaSweeper"
        assert cfg.hydra.sweeper.direction == "minimize"  # val/bpc
        assert cfg.hydra.sweeper.storage == f"sqlite:///outputs/search/{preset}_lstm_tinyshakespeare/optuna.db"
        assert cfg.hydra.sweeper.params  # something to search
    segmentation = compose_with_hydra("hparams_search=lm_lr_clip", "data=segmentation")
    assert segmentation.hydra.sweeper.direction == "maximize"  # val/f1


@pytest.mark.slow
def test_optuna_study_grows_when_the_same_command_runs_again(text, tmp_path):
    import optuna

    sweep = tmp_path / "search"
    command = ["-m", "hparams_search=lm_lr_clip", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}",
               "data=text_file", f"data.path={text}", *(o for o in TINY_MODEL if not o.startswith("unroll=")), *QUIET,
               "unroll=choice(4,8)"]  # a search space on the command line replaces the preset's
    for _ in range(2):
        result = run_train(*command)
        assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="lm_lr_clip_lstm_text_file", storage=f"sqlite:///{sweep}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    assert len({t.params["lr"] for t in study.trials}) == 4  # the second command went on, not over
    for trial in study.trials:  # trial N's run is in N_..., and its value is that run's best val/bpc
        (run,) = sweep.glob(f"{trial.number}_lstm_*")
        best = json.loads((run / "result.json").read_text())["best"]["val/bpc"]
        assert trial.value == pytest.approx(best)
    assert (sweep / "summary.md").read_text().count("| finished |") == 4

    changed = run_train(*command, "batch_size=8")  # another experiment: not mixed into this study
    assert changed.returncode == 2
    assert changed.stderr.strip().splitlines()[-1].startswith(
        "error: study 'lm_lr_clip_lstm_text_file' in sqlite:///")
    assert "other settings: batch_size=8 here, batch_size=4 there; give its settings" in changed.stderr


@pytest.mark.slow
def test_a_failed_trial_is_marked_failed_and_the_search_goes_on(text, tmp_path):
    import optuna

    sweep = tmp_path / "search"
    result = run_train("-m", "hparams_search=lm_lr_clip", "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}",
                       "data=text_file", f"data.path={text}", *TINY_MODEL, *QUIET, "clip=1.0",
                       "lr=choice(-1.0,0.01)")  # lr=-1 is refused: those trials fail
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="lm_lr_clip_lstm_text_file", storage=f"sqlite:///{sweep}/optuna.db")
    states = {t.params["lr"]: t.state.name for t in study.trials}
    assert states.get(-1.0) == "FAIL" and "COMPLETE" in states.values()
    (failed,) = [run for run in sweep.glob("*_lstm_*") if (run / "error.txt").exists()]
    assert "lr must be a positive number" in (failed / "error.txt").read_text()


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
