"""`-m hparams_search=NAME`: an Optuna search as a Hydra sweeper, by ask and tell (docs/sweeps.md).

Each worker asks the study for a trial, launches it as one job (its run's folder is named after the
trial's number), and tells the study the result as soon as the job ends: no batch waits for its slowest
trial. Any number of workers share one study through its storage (rnnexp.search): the local ones of
`hydra.sweeper.n_workers=N`, and the same command started on other machines or as a SLURM array. A job
reports each validation to its trial (rnnexp.callbacks.PruneTrial), and the study's pruner stops it
early when it is worse than earlier trials at the same step.

A study grows: the same command run again adds `n_trials` trials to it; other settings are refused,
rather than mixing two experiments' trials in one study.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("rnnexp")


def search_space(arguments: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Hydra's sweep syntax as Optuna distributions: `choice(...)` (and a shuffled `range`) is
    categorical, `range(a, b, step)` an int or float grid, `interval(a, b)` uniform and
    `tag(log, interval(a, b))` log-uniform floats (an integer setting: `range` or `choice`); other
    overrides are kept as they are."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep, Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space: dict[str, Any] = {}
    fixed: list[str] = []
    for override in OverridesParser.create().parse_overrides(arguments):
        name, value = override.get_key_element(), override.value()
        if not override.is_sweep_override():
            fixed.append(override.input_line)
        elif isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
            space[name] = CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
        elif isinstance(value, RangeSweep):  # Hydra's range excludes its stop, Optuna's high is included
            if any(isinstance(v, float) for v in (value.start, value.stop, value.step)):
                last = value.start + value.step * (math.ceil((value.stop - value.start) / value.step) - 1)
                space[name] = FloatDistribution(value.start, last, step=value.step)
            else:
                last = value.start + value.step * ((value.stop - value.start - 1) // value.step)
                space[name] = IntDistribution(int(value.start), int(last), step=int(value.step))
        elif isinstance(value, IntervalSweep):  # Hydra reads an interval's ends as floats: a float setting
            space[name] = FloatDistribution(value.start, value.end, log="log" in value.tags)
        else:
            raise ValueError(f"{override.input_line}: a search takes choice, range, interval and tag(log, ...)")
    return space, fixed


def suggest(trial: Any, name: str, distribution: Any) -> Any:
    """The trial's value of one setting, through Optuna's public suggest methods."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step,
                                 log=distribution.log)
    return trial.suggest_float(name, distribution.low, distribution.high, step=distribution.step,
                               log=distribution.log)


def as_settings(overrides: list[str]) -> dict[str, str]:
    """Command-line overrides as {key: value}; the last of a repeated key wins, as in Hydra."""
    return {key: value for key, _, value in (override.partition("=") for override in overrides)}


def exit_with(message: str) -> None:
    """A search's refusal: outside any job, so not train.py's error handling: one line, status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


class OptunaSweeper(Sweeper):
    def __init__(self, study_name: str, storage: str | None, direction: str, n_trials: int, n_workers: int,
                 sampler: DictConfig, pruner: DictConfig | None, params: DictConfig | None,
                 trial: int | None = None) -> None:
        self.study_name, self.storage_url = study_name, storage
        self.direction, self.n_trials, self.n_workers = direction, n_trials, n_workers
        self.sampler_config, self.pruner_config = sampler, pruner
        self.params = params or {}
        # `trial` is set only in a job's own config: the job's trial number (rnnexp.search.trial_of_this_job).

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)
        self.sweep_dir = Path(config.hydra.sweep.dir)

    def sweep(self, arguments: list[str]) -> None:
        from rnnexp.search import default_storage

        if self.n_trials < 0 or self.n_workers < 1:
            exit_with(f"hydra.sweeper.n_trials must be >= 0 and n_workers >= 1, got {self.n_trials} and "
                      f"{self.n_workers}")
        url = self.storage_url or default_storage(self.sweep_dir)
        params = [f"{key}={value}" for key, value in self.params.items()] + list(arguments)
        try:
            space, fixed = search_space(params)
        except ValueError as e:
            exit_with(str(e))
        study = self._open_study(url, list(arguments))
        # The command's n_trials shared by its local workers; this process is the first of them.
        shares = [self.n_trials // self.n_workers + (1 if i < self.n_trials % self.n_workers else 0)
                  for i in range(self.n_workers)]
        helpers = self._start_local_workers(shares[1:])
        log.info("study %s in %s: %d trials so far; this worker adds %d", self.study_name, url, len(study.trials),
                 shares[0])
        for _ in range(shares[0]):
            self._run_trial(study, space, fixed, url)
        failed = [p.args for p in helpers if p.wait() != 0]
        self._report(study, url)
        if failed:
            exit_with(f"{len(failed)} of the local workers failed (their errors are above)")

    def _open_study(self, url: str, arguments: list[str]) -> Any:
        """Create the study, or load it if it exists (workers that start together: one creates it, the
        others load it); refuse a study made by a command with other settings."""
        import optuna

        from rnnexp.errors import ConfigError
        from rnnexp.search import SETTINGS_ATTR, make_pruner, open_storage

        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        try:
            storage = open_storage(url)
        except ConfigError as e:
            exit_with(str(e))
        study = optuna.create_study(study_name=self.study_name, storage=storage, direction=self.direction,
                                    pruner=make_pruner(self._pruner()), load_if_exists=True)
        if study.direction.name.lower() != self.direction:
            exit_with(f"study {self.study_name!r} in {url} is {study.direction.name.lower()}d, this search "
                      f"would {self.direction} it: give hydra.sweeper.study_name=NEW")
        recorded = study.user_attrs.get(SETTINGS_ATTR)
        if recorded is None:  # a new study (or one whose creator has not recorded them yet: the same command)
            study.set_user_attr(SETTINGS_ATTR, arguments)  # in order: the last of a key wins
        elif as_settings(recorded) != as_settings(arguments):
            earlier, now = as_settings(recorded), as_settings(arguments)
            changes = [f"{key}={now[key]}" if key in now else f"no {key}" for key in sorted(earlier.keys() | now.keys())
                       if earlier.get(key) != now.get(key)]
            were = [f"{key}={earlier[key]}" for key in sorted(earlier) if earlier[key] != now.get(key)]
            exit_with(f"study {self.study_name!r} in {url} was run with other settings: {' '.join(changes)} here, "
                      f"{' '.join(were) or 'none of them'} there; give its settings to add trials to it, or "
                      "hydra.sweeper.study_name=NEW for a new study")
        return study

    def _pruner(self) -> dict[str, Any] | None:
        return OmegaConf.to_container(self.pruner_config, resolve=True) if self.pruner_config else None

    def _start_local_workers(self, shares: list[int]) -> list[subprocess.Popen]:
        """A process of this very command for each share of trials, each one worker with its share of the
        trials and of the cores; this process is the first worker, and waits for the others at the end."""
        if not shares:
            return []
        threads = max(1, (os.cpu_count() or 1) // self.n_workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # this worker's own jobs (rnnexp.train.share_cpu_threads)
        own = [a for a in sys.argv[1:] if not a.startswith(("hydra.sweeper.n_workers=", "hydra.sweeper.n_trials="))]
        environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        return [subprocess.Popen([sys.executable, sys.argv[0], *own, "hydra.sweeper.n_workers=1",
                                  f"hydra.sweeper.n_trials={share}"], env=environment)
                for share in shares if share > 0]

    def _sampler(self, trial_number: int) -> Any:
        """The sampler for one trial, seeded by the study's seed plus the trial's number: reproducible,
        and no two workers (which get distinct trial numbers) draw the same random start."""
        from hydra.utils import instantiate

        config = OmegaConf.to_container(self.sampler_config, resolve=True)
        if config.get("seed") is not None:
            config["seed"] = int(config["seed"]) + trial_number
        return instantiate(config)

    def _run_trial(self, study: Any, space: dict[str, Any], fixed: list[str], url: str) -> None:
        import optuna

        trial = study.ask()
        study.sampler = self._sampler(trial.number)
        values = {name: suggest(trial, name, distribution) for name, distribution in space.items()}
        overrides = [*fixed, *(f"{name}={value}" for name, value in values.items()),
                     f"hydra.sweeper.trial={trial.number}"]  # the job reports to it (rnnexp.search)
        (job,) = self.launcher.launch([overrides], initial_job_idx=trial.number)  # the folder: <number>_...
        run_dir = Path(job.hydra_cfg.hydra.runtime.output_dir) if job.hydra_cfg else None
        if run_dir is not None:
            trial.set_user_attr("run_dir", str(run_dir.resolve()))
        value = job.return_value if job.status == JobStatus.COMPLETED else None
        result = run_dir / "result.json" if run_dir else None
        if isinstance(value, (int, float)) and not math.isnan(value) and result is not None and result.exists():
            import json

            pruned = json.loads(result.read_text(encoding="utf-8")).get("pruned_at_step")
            if pruned is not None:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                log.info("trial %d: pruned at step %d", trial.number, pruned)
                return
            study.tell(trial, float(value))
            log.info("trial %d: %s", trial.number, value)
            return
        # train.py records a failed run's error in error.txt and returns NaN (a plain sweep goes on)
        record = run_dir / "error.txt" if run_dir else None
        if record and record.exists():
            reason = record.read_text(encoding="utf-8").splitlines()[0]
        elif job.status == JobStatus.FAILED:  # the job raised: Hydra keeps the exception as its return value
            reason = f"{type(job._return_value).__name__}: {job._return_value}"
        else:
            reason = f"the job returned {value!r}"
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        log.warning("trial %d failed: %s", trial.number, reason)

    def _report(self, study: Any, url: str) -> None:
        """optimization_results.yaml and Optuna's own plots beside the summary; or why there is no best trial."""
        import optuna

        finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not finished:
            exit_with(f"no trial of study {self.study_name!r} finished; each failed trial's error is in "
                      f"error.txt in its folder under {self.sweep_dir}")
        best = study.best_trial
        OmegaConf.save(OmegaConf.create({"name": "optuna", "study_name": self.study_name, "storage": url,
                                         "best_trial": best.number, "best_params": best.params,
                                         "best_value": best.value}),
                       self.sweep_dir / "optimization_results.yaml")
        plot_study(study, self.sweep_dir)


def plot_study(study: Any, folder: Path) -> None:
    """optimization_history.png (every trial's value and the best so far) and param_importances.png
    (fANOVA, Optuna's default; it needs two finished trials), with Optuna's matplotlib plots."""
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as plots

    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    drawn = {"optimization_history": plots.plot_optimization_history}
    if len(finished) >= 2 and any(t.distributions for t in finished):
        drawn["param_importances"] = plots.plot_param_importances
    for name, plot in drawn.items():
        with warnings.catch_warnings():  # Optuna marks its matplotlib plots experimental, on every call
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            axes = plot(study)
        axes.figure.savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
        plt.close(axes.figure)
