"""Hyperparameter search with hydra-optuna-sweeper, kept as a study that grows: `hparams_search=NAME`
(conf/hparams_search/) stores the study in `optuna.db` inside its sweep folder, and the same command
run again adds trials to it instead of starting over.

`OptunaSweeper` is hydra-optuna-sweeper's sweeper with what a study kept on disk needs: the folder exists before
the SQLite file is opened in it; a re-run numbers its jobs after the trials already there, so trial
N's folder is `N_...` and no earlier trial's folder is written into; a re-run with other settings
is refused, rather than mixing trials of two experiments in one study; and a job that failed (train.py
records its error and returns NaN so that a plain sweep goes on) is a failed trial, where the plugin
would end the whole search on optuna 2.x's refusal of a NaN value.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper as PluginOptunaSweeper

log = logging.getLogger("rnnexp")

SETTINGS_ATTR = "rnnexp_overrides"  # the study's record of the command line that made it


def sqlite_file(storage: Any) -> Path | None:
    """The database file of a `sqlite:///PATH` storage URL, else None."""
    if isinstance(storage, str) and storage.startswith("sqlite:///"):
        return Path(storage.removeprefix("sqlite:///"))
    return None


def as_settings(overrides: list[str]) -> dict[str, str]:
    """Command-line overrides as {key: value}; the last of a repeated key wins, as in Hydra."""
    return {key: value for key, _, value in (override.partition("=") for override in overrides)}


class JobFailed(Exception):
    """A sweep job that failed: its error is in error.txt in its folder."""


class FailedJobsRaise:
    """The sweeper's launcher, with each job that returned NaN (a failed job, see train.py) turned
    into a failed JobReturn, which the Optuna sweeper marks as a failed trial."""

    def __init__(self, launcher: Any) -> None:
        self.launcher = launcher

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        returns = self.launcher.launch(job_overrides, initial_job_idx)
        for job in returns:
            value = job.return_value if job.status == JobStatus.COMPLETED else None
            if isinstance(value, float) and math.isnan(value):
                record = Path(job.hydra_cfg.hydra.runtime.output_dir) / "error.txt"
                error = record.read_text(encoding="utf-8").splitlines()[0] if record.exists() else "no error.txt"
                job.status = JobStatus.FAILED
                job._return_value = JobFailed(f"{error} ({record})")
        return returns

    def __getattr__(self, name: str) -> Any:
        return getattr(self.launcher, name)


class OptunaSweeper(PluginOptunaSweeper):
    """hydra-optuna-sweeper's sweeper for a study that is continued by running the same command again."""

    def setup(self, **kwargs: Any) -> None:
        super().setup(**kwargs)
        self.sweeper.launcher = FailedJobsRaise(self.sweeper.launcher)

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        impl = self.sweeper
        if impl.storage is not None:
            database = sqlite_file(impl.storage)
            if database is not None:
                database.parent.mkdir(parents=True, exist_ok=True)
            if impl.study_name in {s.study_name for s in optuna.get_all_study_summaries(impl.storage)}:
                self._continue(optuna.load_study(study_name=impl.study_name, storage=impl.storage), arguments)
            else:
                study = optuna.create_study(study_name=impl.study_name, storage=impl.storage,
                                            directions=impl._get_directions())
                study.set_user_attr(SETTINGS_ATTR, list(arguments))  # in order: the last of a key wins
        try:
            return impl.sweep(arguments)
        except ValueError:  # the plugin asks the study for its best trial at the end
            study = optuna.load_study(study_name=impl.study_name, storage=impl.storage) if impl.storage else None
            if study is None or any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
                raise
            print(f"error: no trial of study {impl.study_name!r} finished; each failed trial's error is in "
                  f"error.txt in its folder under {impl.sweep_dir}", file=sys.stderr)
            sys.exit(2)

    def _continue(self, study: Any, arguments: list[str]) -> None:
        """Go on with an earlier study: refuse other settings, number jobs after its trials, reseed."""
        impl = self.sweeper
        earlier, now = as_settings(study.user_attrs.get(SETTINGS_ATTR, arguments)), as_settings(arguments)
        if earlier != now:
            changes = [f"{key}={now[key]}" if key in now else f"no {key}" for key in sorted(earlier.keys() | now.keys())
                       if earlier.get(key) != now.get(key)]
            were = [f"{key}={earlier[key]}" for key in sorted(earlier) if earlier[key] != now.get(key)]
            # Outside the job function, so not train.py's error handling: one line, status 2.
            print(f"error: study {impl.study_name!r} in {impl.storage} was run with other settings: "
                  f"{' '.join(changes)} here, {' '.join(were) or 'none of them'} there; give its settings to add "
                  "trials to it, or hydra.sweeper.study_name=NEW for a new study", file=sys.stderr)
            sys.exit(2)
        already = len(study.trials)
        impl.job_idx = already  # the next job's folder is named after its trial number
        # The same seed would suggest the same first trials again: go on from another one.
        sampler = impl.config.hydra.sweeper.sampler
        if sampler.get("seed") is not None:
            impl.sampler = instantiate(sampler, seed=sampler.seed + already)
        log.info("study %s has %d trials; adding %d", impl.study_name, already, impl.n_trials)
