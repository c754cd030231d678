"""Optuna searches (`-m hparams_search=NAME`, hydra_plugins/rnnexp_sweeper): the search space, pruning,
several workers on one study (SQLite, a journal file, a real PostgreSQL server), and the dashboard."""

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rnnexp.browser import CHROMIUM, browser_page, serving
from tests.helpers import REPO, TINY_MODEL, make_text, run_train
from tests.postgres_server import postgres_server, server_programs
from tests.test_sweeps import compose_with_hydra


def search(steps: int = 12, every: int = 4) -> list[str]:
    """A search of tiny runs: `steps` steps, a validation (reported to the trial) every `every`; lr and unroll
    searched."""
    kept = (o for o in TINY_MODEL if not o.startswith(("unroll=", "trainer.max_steps=", "trainer.val_check_interval=",
                                                         "sample.")))
    return ["-m", "hparams_search=lm_lr_clip", "data=text_file", "sample.length=0", "sample.val_length=0", *kept,
            f"trainer.max_steps={steps}", f"trainer.val_check_interval={every}", "unroll=choice(4,8)", "clip=1.0"]


SEARCH = search()
SHORT = search(steps=4, every=2)  # where nothing is pruned: the trials only need to finish


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(make_text())
    return path


def start_train(*args: str, cwd: Path = REPO) -> subprocess.Popen:
    """train.py as a user starts it, from `cwd` (where its outputs/ folder goes), not waited for."""
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(*processes: subprocess.Popen) -> None:
    """Wait for each; all must succeed (the others are stopped if one fails)."""
    try:
        for process in processes:
            _, err = process.communicate(timeout=400)
            assert process.returncode == 0, err[-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.communicate()


def trials(study_name: str, url: str) -> list:
    """The study's trials, read through the project's own storage opener, its connections closed after."""
    import optuna

    from rnnexp.search import open_storage

    storage = open_storage(url)
    try:
        return optuna.load_study(study_name=study_name, storage=storage).trials
    finally:
        if hasattr(storage, "engine"):  # a database: no connection left for the garbage collector to warn about
            storage.engine.dispose()


def folder_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def trial_folders(sweep: Path) -> dict[int, Path]:
    folders = {}
    for run in sweep.glob("*_lstm_*"):
        number = int(run.name.split("_")[0])
        assert number not in folders, f"two folders for trial {number}"
        folders[number] = run
    return folders


# --- the search space and where a study's runs go (no training) ---------------------------------


def test_hydra_sweep_syntax_becomes_optuna_distributions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from hydra_plugins.rnnexp_sweeper.optuna_sweeper import search_space

    space, fixed = search_space(["lr=tag(log, interval(1e-4, 1e-2))", "arch.dropout=interval(0.0, 0.5)",
                                 "cell.hidden_size=range(64, 257, 64)", "unroll=range(10, 41, 10)",
                                 "clip=choice(0.0, 1.0)", "cell=choice(rnn, lstm)", "scale=range(0.5, 2.0, 0.5)",
                                 "batch_size=8", "+extra=1"])
    assert space == {
        "lr": FloatDistribution(1e-4, 1e-2, log=True),
        "arch.dropout": FloatDistribution(0.0, 0.5),
        "cell.hidden_size": IntDistribution(64, 256, step=64),
        "unroll": IntDistribution(10, 40, step=10),  # Hydra's range excludes its stop; 40 is its last value
        "clip": CategoricalDistribution([0.0, 1.0]),
        "cell": CategoricalDistribution(["rnn", "lstm"]),
        "scale": FloatDistribution(0.5, 1.5, step=0.5),
    }
    assert fixed == ["batch_size=8", "+extra=1"]


def test_a_study_in_another_storage_gets_its_own_folder():
    from rnnexp.search import search_dir

    default = search_dir("lm_lr_clip_gru_tinyshakespeare", None)
    assert default == "outputs/search/lm_lr_clip_gru_tinyshakespeare"
    elsewhere = {search_dir("lm_lr_clip_gru_tinyshakespeare", url)
                 for url in ("sqlite:////other/path.db", "journal:///shared/study.log", "postgresql://db/optuna")}
    assert len(elsewhere) == 3 and default not in elsewhere
    assert all(re.fullmatch(re.escape(default) + "-[0-9a-f]{8}", d) for d in elsewhere)  # 8 hex digits of the URL


def test_search_presets_use_the_projects_sweeper_with_median_pruning():
    for preset in ("lm_lr_clip", "lm_size"):
        cfg = compose_with_hydra(f"hparams_search={preset}")
        sweeper = cfg.hydra.sweeper
        assert sweeper._target_ == "hydra_plugins.rnnexp_sweeper.optuna_sweeper.OptunaSweeper"
        assert (sweeper.direction, sweeper.storage, sweeper.n_workers) == ("minimize", None, 1)  # val/bpc
        assert sweeper.pruner._target_ == "optuna.pruners.MedianPruner"
        assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
        assert cfg.hydra.sweep.dir == f"outputs/search/{preset}_lstm_tinyshakespeare"
    other = compose_with_hydra("hparams_search=lm_lr_clip", "hydra/sweeper/pruner=hyperband",
                               "hydra/sweeper/sampler=random", "data=segmentation")
    assert other.hydra.sweeper.pruner._target_ == "optuna.pruners.HyperbandPruner"
    assert other.hydra.sweeper.sampler._target_ == "optuna.samplers.RandomSampler"
    assert other.hydra.sweeper.direction == "maximize"  # val/f1


def test_trials_dataframe_works_in_the_projects_environment(tmp_path):
    import optuna

    from rnnexp.search import open_storage

    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(storage=storage, study_name="s")
    study.optimize(lambda trial: trial.suggest_float("x", -1, 1) ** 2, n_trials=3)
    frame = study.trials_dataframe()
    storage.engine.dispose()
    assert len(frame) == 3 and "params_x" in frame.columns


# --- real searches ----------------------------------------------------------------------------


@pytest.mark.slow
def test_workers_started_together_share_one_study_and_a_second_storage_leaves_it_alone(text, tmp_path):
    sweep = tmp_path / "search"
    command = [*SHORT, f"data.path={text}", f"hydra.sweep.dir={sweep}", "hydra.sweeper.n_trials=2"]
    finish(start_train(*command), start_train(*command))  # two workers at the same instant, one new study
    study = trials("lm_lr_clip_lstm_text_file", f"sqlite:///{sweep}/optuna.db")
    assert sorted(t.number for t in study) == [0, 1, 2, 3]
    assert {t.state.name for t in study} == {"COMPLETE"}
    assert len({t.params["lr"] for t in study}) == 4  # the workers' samplers are seeded apart
    folders = trial_folders(sweep)
    assert sorted(folders) == [0, 1, 2, 3]  # trial N's run is in N_..., one folder each
    for trial in study:
        best = json.loads((folders[trial.number] / "result.json").read_text())["best"]["val/bpc"]
        assert trial.value == pytest.approx(best)
        assert trial.user_attrs["run_dir"] == str(folders[trial.number].resolve())
    assert (sweep / "optimization_history.png").stat().st_size > 0
    assert (sweep / "param_importances.png").stat().st_size > 0

    changed = run_train(*command, "batch_size=8")  # another experiment: not mixed into this study
    assert changed.returncode == 2
    assert changed.stderr.strip().splitlines()[-1].startswith("error: study 'lm_lr_clip_lstm_text_file' in sqlite:///")
    assert "other settings: batch_size=8 here, batch_size=4 there; give its settings" in changed.stderr

    # The same study name in another storage (a journal file): its own folder.
    before = folder_digest(sweep)
    journal = tmp_path / "elsewhere" / "study.log"
    other = [*SHORT, f"data.path={text}", f"hydra.sweeper.storage=journal:///{journal}", "hydra.sweeper.n_trials=1"]
    finish(start_train(*other, cwd=tmp_path))  # its folder is outputs/search/<study>-<storage's hash>
    assert folder_digest(sweep) == before  # the first study's folders, byte for byte
    from rnnexp.search import search_dir

    assert [t.number for t in trials("lm_lr_clip_lstm_text_file", f"journal:///{journal}")] == [0]
    assert list(trial_folders(tmp_path / search_dir("lm_lr_clip_lstm_text_file", f"journal:///{journal}"))) == [0]


@pytest.mark.slow
def test_pruning_stops_a_worse_trial_early_and_a_failed_trial_does_not_end_the_search(text, tmp_path):
    sweep = tmp_path / "search"
    result = run_train(*SEARCH, f"data.path={text}", f"hydra.sweep.dir={sweep}", "hydra.sweeper.n_trials=6",
                       "hydra.sweeper.pruner.n_startup_trials=1", "hydra.sweeper.sampler.n_startup_trials=6",
                       "lr=choice(0.03,0.00001,-1.0)")  # a good, a hopeless and a refused (failed) learning rate
    assert result.returncode == 0, result.stderr[-3000:]
    study = trials("lm_lr_clip_lstm_text_file", f"sqlite:///{sweep}/optuna.db")
    states = [(t.params["lr"], t.state.name) for t in study]
    assert (-1.0, "FAIL") in states and (0.03, "COMPLETE") in states
    pruned = [t for t in study if t.state.name == "PRUNED"]
    assert pruned and all(t.params["lr"] == 0.00001 for t in pruned)
    folders = trial_folders(sweep)
    for trial in pruned:  # stopped at once, its folder, curves and checkpoints kept
        run = folders[trial.number]
        record = json.loads((run / "result.json").read_text())
        assert record["pruned_at_step"] == record["steps"] == max(trial.intermediate_values) < 12
        assert (run / "checkpoints" / "last.ckpt").exists() and list(run.glob("events.out.tfevents.*"))
        assert f"| pruned at step {record['steps']} |" in (sweep / "summary.md").read_text()
    for failed in (t for t in study if t.state.name == "FAIL"):
        assert "lr must be a positive number" in (folders[failed.number] / "error.txt").read_text()


@pytest.mark.slow
@pytest.mark.skipif(server_programs() is None, reason="needs PostgreSQL's server (apt-get install postgresql)")
def test_three_workers_on_a_postgresql_study_run_nine_distinct_trials(text, tmp_path):
    """As on several machines: a command with two local workers and another command, started together,
    three trials each, on one study in a real PostgreSQL server."""
    with postgres_server() as url:
        common = [*SHORT, f"data.path={text}", f"hydra.sweeper.storage={url}", "hydra/sweeper/pruner=none"]
        finish(start_train(*common, "hydra.sweeper.n_trials=6", "hydra.sweeper.n_workers=2", cwd=tmp_path),
               start_train(*common, "hydra.sweeper.n_trials=3", cwd=tmp_path))
        study = trials("lm_lr_clip_lstm_text_file", url)
        assert sorted(t.number for t in study) == list(range(9))
        assert {t.state.name for t in study} == {"COMPLETE"}
        assert len({(t.params["lr"], t.params["unroll"]) for t in study}) == 9
        from rnnexp.search import search_dir

        assert sorted(trial_folders(tmp_path / search_dir("lm_lr_clip_lstm_text_file", url))) == list(range(9))


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_dashboard_shows_a_studys_trials_in_a_real_browser(tmp_path):
    import optuna

    from rnnexp.search import default_storage, open_storage

    url = default_storage(tmp_path)
    storage = open_storage(url)
    study = optuna.create_study(study_name="lm_lr_clip_gru_tinyshakespeare", storage=storage)
    for number in range(3):  # trials as a search leaves them: validations reported, a value told
        trial = study.ask()
        lr = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        for step in (250, 500):
            trial.report(2.0 - number * 0.1 - step / 1000, step)
        study.tell(trial, 1.4 - number * 0.1 + lr)
    try:
        with serving("optuna-dashboard", url, path="/dashboard") as address, browser_page() as page:
            page.goto(f"{address}/dashboard")
            page.get_by_text("lm_lr_clip_gru_tinyshakespeare").first.click()
            for number in range(3):  # the intermediate values' legend names every trial
                page.get_by_text(f"trial #{number}").first.wait_for(timeout=30_000)
            assert page.get_by_text(f"Best Trial (number={study.best_trial.number})").count() == 1
    finally:
        storage.engine.dispose()
