"""rnnexp.callbacks.PruneTrial on its own (tests/test_search.py runs it whole, in Optuna searches): after
each real validation it reports the main metric at that step to the trial, and when the pruner says so
it writes last.ckpt, stops the run after that step and says so, once."""

import logging
from types import SimpleNamespace

import pytest
import torch

import rnnexp.stopping
from rnnexp.callbacks import PruneTrial


class Trial:
    """What PruneTrial uses of an optuna.trial.Trial: report, should_prune, number."""

    number = 7

    def __init__(self, prune: bool) -> None:
        self.prune = prune
        self.reported: list[tuple[float, int]] = []

    def report(self, value: float, step: int) -> None:
        self.reported.append((value, step))

    def should_prune(self) -> bool:
        return self.prune


def trainer(step: int = 250, sanity_checking: bool = False, **metrics: float):
    values = metrics or {"val/bpc": 1.25, "val/loss": 0.875}
    return SimpleNamespace(sanity_checking=sanity_checking, global_step=step, should_stop=False,
                           callback_metrics={k.replace("_", "/"): torch.tensor(v) for k, v in values.items()})


@pytest.fixture
def saved(monkeypatch) -> list:
    saved = []
    monkeypatch.setattr(rnnexp.stopping, "save_last", lambda t: saved.append(t.global_step))
    return saved


def test_a_validation_reports_the_main_metric_at_its_step_and_a_trial_kept_trains_on(saved):
    prune = PruneTrial(Trial(prune=False), "val/bpc")
    assert prune.trial.number == 7 and prune.metric == "val/bpc" and prune.pruned_at_step is None
    run = trainer(250)
    prune.on_validation_end(run, None)
    assert prune.trial.reported == [(1.25, 250)] and type(prune.trial.reported[0][0]) is float
    assert not run.should_stop and prune.pruned_at_step is None and saved == []


def test_a_pruned_trial_saves_last_stops_after_its_step_says_so_and_reports_no_more(saved, caplog):
    prune = PruneTrial(Trial(prune=True), "val/bpc")
    run = trainer(500)
    with caplog.at_level(logging.INFO, logger="rnnexp"):
        prune.on_validation_end(run, None)
    assert run.should_stop and prune.pruned_at_step == 500 and saved == [500]
    assert [r.getMessage() for r in caplog.records] == ["trial 7 pruned at step 500 (val/bpc 1.2500)"]
    later = trainer(750)
    prune.on_validation_end(later, None)  # Lightning may validate once more before it stops
    assert prune.trial.reported == [(1.25, 500)] and prune.pruned_at_step == 500 and saved == [500]
    assert not later.should_stop


@pytest.mark.parametrize("run", [trainer(0, sanity_checking=True), trainer(250, val_loss=0.5)],
                         ids=["sanity check", "metric not logged"])
def test_a_sanity_check_or_a_validation_without_the_metric_reports_nothing(saved, run):
    prune = PruneTrial(Trial(prune=True), "val/bpc")
    prune.on_validation_end(run, None)
    assert prune.trial.reported == [] and not run.should_stop and prune.pruned_at_step is None and saved == []


@pytest.mark.parametrize("storage", ["journal", "default"])
def test_a_searchs_job_finds_its_trial_in_its_studys_storage_with_its_pruner(tmp_path, storage):
    """trial_of_this_job, in process (tests/test_search.py's searches run it in their jobs): the trial
    the sweeper put in the job's config, from the search's storage (its folder's optuna.db by default),
    with the search's pruner; None outside a search."""
    import optuna
    from hydra.core.hydra_config import HydraConfig

    from rnnexp.search import JOURNAL, default_storage, open_storage, trial_of_this_job
    from tests.test_sweeps import compose_with_hydra

    url = f"{JOURNAL}{tmp_path / 'elsewhere' / 'study.log'}" if storage == "journal" else None
    opened = open_storage(url or default_storage(tmp_path))
    study = optuna.create_study(study_name="study", storage=opened)
    study.ask(), study.ask()  # trials 0 and 1
    optuna.create_study(study_name="other", storage=opened).ask()  # a study found by its name
    overrides = ["hparams_search=lm_lr_clip", f"hydra.sweep.dir={tmp_path}", "hydra.sweeper.study_name=study",
                 f"hydra.sweeper.storage={url or 'null'}"]
    assert trial_of_this_job() is None  # not a Hydra job
    try:
        HydraConfig.instance().set_config(compose_with_hydra(*overrides))
        assert trial_of_this_job() is None  # a job, not a search's trial
        HydraConfig.instance().set_config(compose_with_hydra(*overrides, "hydra.sweeper.trial=1",
                                                             "hydra.sweeper.pruner.n_startup_trials=3"))
        trial = trial_of_this_job()
        assert isinstance(trial, optuna.trial.Trial) and trial.number == 1 and trial.study.study_name == "study"
        pruner = trial.study.pruner
        assert isinstance(pruner, optuna.pruners.MedianPruner) and pruner._n_startup_trials == 3
        HydraConfig.instance().set_config(compose_with_hydra(*overrides, "hydra.sweeper.trial=0",
                                                             "hydra/sweeper/pruner=hyperband", "trainer.max_steps=900"))
        pruner = trial_of_this_job().study.pruner  # its budget follows the run's, ${trainer.max_steps}
        assert isinstance(pruner, optuna.pruners.HyperbandPruner) and pruner._max_resource == 900
        HydraConfig.instance().set_config(compose_with_hydra(*overrides, "hydra.sweeper.trial=0",
                                                             "hydra.sweeper.pruner=null"))
        trial = trial_of_this_job()
        assert trial.number == 0 and isinstance(trial.study.pruner, optuna.pruners.NopPruner)
    finally:
        HydraConfig.instance().cfg = None
