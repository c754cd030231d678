"""The Optuna sweeper's own logic, in-process with a launcher that trains nothing (tests/test_search.py
runs real searches as users do, in subprocesses, which neither mutation testing nor a debugger sees):
ask and tell, pruned and failed trials, the shares of local workers, a study that grows, refusals."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from hydra_plugins.rnnexp_sweeper.optuna_sweeper import OptunaSweeper, as_settings
from rnnexp.search import default_storage


def objective(settings: dict[str, str]) -> float:
    """A made-up validation score of a trial's settings: what the launcher's job returns."""
    return round(abs(math.log10(float(settings["lr"])) + 2.5) + (0.5 if settings["cell"] == "rnn" else 0.0), 6)


class RecordingLauncher:
    """Hydra's launcher interface: each job gets a folder `<number>_job` and the result `outcome` gives it
    (a value; "pruned" writes result.json's pruned_at_step; "error" is train.py's NaN with error.txt;
    "crash" a job Hydra reports as failed)."""

    def __init__(self, sweep_dir: Path, outcomes: dict[int, str] | None = None) -> None:
        self.sweep_dir, self.outcomes, self.launched = sweep_dir, outcomes or {}, []

    def launch(self, job_overrides: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
        (overrides,) = job_overrides
        self.launched.append((initial_job_idx, list(overrides)))
        run_dir = self.sweep_dir / f"{initial_job_idx}_job"
        run_dir.mkdir(parents=True)
        outcome = self.outcomes.get(initial_job_idx, "value")
        value: object = objective(as_settings(overrides))
        status = JobStatus.COMPLETED
        if outcome == "pruned":
            (run_dir / "result.json").write_text(json.dumps({"pruned_at_step": 40}))
        elif outcome == "error":
            value = math.nan
            (run_dir / "error.txt").write_text("ConfigError: lr must be > 0\nTraceback ...\n")
        elif outcome == "crash":
            value, status = RuntimeError("killed"), JobStatus.FAILED
        elif outcome == "value":
            (run_dir / "result.json").write_text(json.dumps({"best": value}))  # train.py's record of a run
        hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(run_dir)}}})
        return [JobReturn(overrides=overrides, hydra_cfg=hydra_cfg, status=status, _return_value=value)]


def make_sweeper(tmp_path: Path, direction: str = "minimize", n_trials: int = 4, n_workers: int = 1,
                 outcomes: dict[int, str] | None = None, pruner: dict | None = None) -> OptunaSweeper:
    sweeper = OptunaSweeper(
        study_name="search", storage=None, direction=direction, n_trials=n_trials, n_workers=n_workers,
        sampler=OmegaConf.create({"_target_": "optuna.samplers.RandomSampler", "seed": 7}),
        pruner=OmegaConf.create(pruner) if pruner else None,
        params=OmegaConf.create({"lr": "tag(log, interval(0.0001, 0.1))", "cell": "choice(rnn, gru)"}))
    sweeper.sweep_dir = tmp_path / "search"
    sweeper.launcher = RecordingLauncher(sweeper.sweep_dir, outcomes)
    return sweeper


def load(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="search", storage=default_storage(tmp_path / "search"))


ARGUMENTS = ["data=text_file", "batch_size=4"]


@pytest.fixture(autouse=True)
def no_plots(request, monkeypatch):
    """Optuna's plots take a second or two a search: drawn in the first test only."""
    if "plots" not in request.keywords:
        monkeypatch.setattr("hydra_plugins.rnnexp_sweeper.optuna_sweeper.plot_study", lambda study, folder: None)


@pytest.mark.plots
def test_each_trial_runs_as_one_job_in_its_own_folder_and_is_told_its_own_value(tmp_path):
    sweeper = make_sweeper(tmp_path)
    sweeper.sweep(ARGUMENTS)
    study = load(tmp_path)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    for trial, (index, overrides) in zip(study.trials, sweeper.launcher.launched, strict=True):
        assert index == trial.number  # the job's folder is numbered by its trial
        settings = as_settings(overrides)
        assert overrides[:2] == ARGUMENTS and settings["hydra.sweeper.trial"] == str(trial.number)
        assert float(settings["lr"]) == trial.params["lr"] and settings["cell"] == trial.params["cell"]
        assert trial.value == objective(settings)
        assert trial.user_attrs["run_dir"] == str((sweeper.sweep_dir / f"{index}_job").resolve())
    assert len({t.params["lr"] for t in study.trials}) == 4
    assert all(1e-4 <= t.params["lr"] <= 0.1 for t in study.trials)
    results = OmegaConf.load(sweeper.sweep_dir / "optimization_results.yaml")
    best = min(study.trials, key=lambda t: t.value)
    assert (results.best_trial, results.best_value, results.best_params) == (best.number, best.value, best.params)
    assert results.storage == default_storage(sweeper.sweep_dir)
    assert (sweeper.sweep_dir / "optimization_history.png").stat().st_size > 0
    assert (sweeper.sweep_dir / "param_importances.png").stat().st_size > 0


def test_a_maximized_study_reports_its_highest_trial(tmp_path):
    sweeper = make_sweeper(tmp_path, direction="maximize")
    sweeper.sweep(ARGUMENTS)
    study = load(tmp_path)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    results = OmegaConf.load(sweeper.sweep_dir / "optimization_results.yaml")
    assert results.best_value == max(t.value for t in study.trials)


def test_pruned_and_failed_trials_are_told_so_and_the_search_goes_on(tmp_path, caplog):
    sweeper = make_sweeper(tmp_path, n_trials=5, outcomes={1: "pruned", 2: "error", 3: "crash"})
    with caplog.at_level("INFO", logger="rnnexp"):
        sweeper.sweep(ARGUMENTS)
    State = optuna.trial.TrialState
    assert [t.state for t in load(tmp_path).trials] == [State.COMPLETE, State.PRUNED, State.FAIL, State.FAIL,
                                                        State.COMPLETE]
    assert "trial 1: pruned at step 40" in caplog.text
    assert "trial 2 failed: ConfigError: lr must be > 0" in caplog.text  # the first line of its error.txt
    assert "trial 3 failed: RuntimeError: killed" in caplog.text
    results = OmegaConf.load(sweeper.sweep_dir / "optimization_results.yaml")
    assert results.best_trial in (0, 4)  # only finished trials compete


def test_a_search_whose_trials_all_failed_says_where_the_errors_are(tmp_path, capsys):
    sweeper = make_sweeper(tmp_path, n_trials=2, outcomes={0: "error", 1: "crash"})
    with pytest.raises(SystemExit) as stop:
        sweeper.sweep(ARGUMENTS)
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: no trial of study 'search' finished; each failed trial's error is in error.txt in its folder "
        f"under {sweeper.sweep_dir}")


def test_the_same_command_again_adds_trials_and_other_settings_are_refused(tmp_path, capsys):
    make_sweeper(tmp_path, n_trials=2).sweep(ARGUMENTS)
    again = make_sweeper(tmp_path, n_trials=3)
    again.launcher = RecordingLauncher(again.sweep_dir / "again")
    again.sweep(ARGUMENTS)
    assert [t.number for t in load(tmp_path).trials] == [0, 1, 2, 3, 4]
    assert [index for index, _ in again.launcher.launched] == [2, 3, 4]  # numbers go on: no folder reused
    for changed, expected in ((["data=text_file", "batch_size=8"], "batch_size=8 here, batch_size=4 there"),
                              (["data=text_file"], "no batch_size here, batch_size=4 there"),
                              ([*ARGUMENTS, "unroll=9"], "unroll=9 here, none of them there")):
        with pytest.raises(SystemExit) as stop:
            make_sweeper(tmp_path).sweep(changed)
        assert stop.value.code == 2
        assert f"was run with other settings: {expected};" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        make_sweeper(tmp_path, direction="maximize").sweep(ARGUMENTS)
    assert "is minimized, this search would maximize it" in capsys.readouterr().err
    assert len(load(tmp_path).trials) == 5  # nothing was added by the refused commands


@pytest.mark.parametrize(("n_trials", "n_workers", "shares"), [(5, 2, [3, 2]), (7, 3, [3, 2, 2]), (1, 3, [1, 0, 0])])
def test_local_workers_share_the_commands_trials(tmp_path, monkeypatch, n_trials, n_workers, shares):
    started = []
    monkeypatch.setattr(OptunaSweeper, "_start_local_workers", lambda self, rest: started.append(rest) or [])
    sweeper = make_sweeper(tmp_path, n_trials=n_trials, n_workers=n_workers)
    sweeper.sweep(ARGUMENTS)
    assert started == [shares[1:]] and len(sweeper.launcher.launched) == shares[0]


@pytest.mark.parametrize(("n_trials", "n_workers"), [(-1, 1), (3, 0)])
def test_impossible_trial_and_worker_counts_are_refused(tmp_path, capsys, n_trials, n_workers):
    with pytest.raises(SystemExit) as stop:
        make_sweeper(tmp_path, n_trials=n_trials, n_workers=n_workers).sweep(ARGUMENTS)
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == (f"error: hydra.sweeper.n_trials must be >= 0 and n_workers >= 1, "
                                               f"got {n_trials} and {n_workers}")


def test_each_trial_draws_from_a_sampler_seeded_by_the_study_seed_plus_its_number(tmp_path):
    sweeper = make_sweeper(tmp_path)
    assert sweeper._sampler(3)._rng.rng.randint(1 << 30) == optuna.samplers.RandomSampler(seed=10)._rng.rng.randint(
        1 << 30)
    unseeded = make_sweeper(tmp_path)
    unseeded.sampler_config = OmegaConf.create({"_target_": "optuna.samplers.RandomSampler", "seed": None})
    assert isinstance(unseeded._sampler(3), optuna.samplers.RandomSampler)


def test_the_studys_pruner_comes_from_the_config(tmp_path):
    sweeper = make_sweeper(tmp_path, n_trials=0, pruner={"_target_": "optuna.pruners.MedianPruner",
                                                          "n_startup_trials": 3})
    study = sweeper._open_study(default_storage(sweeper.sweep_dir), ARGUMENTS)
    assert isinstance(study.pruner, optuna.pruners.MedianPruner) and study.pruner._n_startup_trials == 3
    assert isinstance(make_sweeper(tmp_path)._open_study(default_storage(sweeper.sweep_dir), ARGUMENTS).pruner,
                      optuna.pruners.NopPruner)


def test_local_workers_are_this_command_again_each_with_its_share_of_trials_and_cores(tmp_path, monkeypatch):
    started = []

    class Recorded:
        def __init__(self, args, env):
            self.args, self.env = args, env
            started.append(self)

    monkeypatch.setattr("subprocess.Popen", Recorded)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    monkeypatch.setattr("sys.argv", ["train.py", "-m", "hparams_search=lm_lr_clip", "hydra.sweeper.n_workers=4",
                                     "hydra.sweeper.n_trials=7", "cell=gru"])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # recorded: what the sweeper sets is undone after the test
    sweeper = make_sweeper(tmp_path, n_trials=7, n_workers=4)
    workers = sweeper._start_local_workers([2, 0, 1])
    assert workers == started and len(started) == 2  # a worker with no trial is not started
    for worker, share in zip(started, (2, 1), strict=True):
        assert worker.args[1:] == ["train.py", "-m", "hparams_search=lm_lr_clip", "cell=gru",
                                   "hydra.sweeper.n_workers=1", f"hydra.sweeper.n_trials={share}"]
        assert worker.env["OMP_NUM_THREADS"] == "2"  # 8 cores among 4 workers
    assert os.environ["OMP_NUM_THREADS"] == "2"  # and this worker's own jobs
    assert sweeper._start_local_workers([]) == [] and len(started) == 2


@pytest.mark.plots
def test_the_parameter_importances_are_drawn_from_two_finished_trials_on(tmp_path):
    from hydra_plugins.rnnexp_sweeper.optuna_sweeper import plot_study

    study = optuna.create_study()
    space = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    for number, (lr, value) in enumerate([(0.001, 2.0), (0.01, 1.5)]):
        study.add_trial(optuna.trial.create_trial(params={"lr": lr}, distributions=space, value=value))
        folder = tmp_path / str(number)
        folder.mkdir()
        plot_study(study, folder)
        assert sorted(p.name for p in folder.iterdir()) == (
            ["optimization_history.png"] if number == 0 else ["optimization_history.png", "param_importances.png"])
