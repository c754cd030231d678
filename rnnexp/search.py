"""An Optuna search's shared pieces: where a study is stored, and a trial's side of pruning.

The sweeper (hydra_plugins/rnnexp_sweeper) asks the study for trials and launches each as a job; the job
(a training run) reports each validation's main metric to its trial and stops when the study's pruner
says the trial is worse than the earlier ones at that step. Kept free of torch and Lightning at import.

Storages (`hydra.sweeper.storage`), as Optuna has them:
- `null`: `sqlite:///<the search's folder>/optuna.db`, for the workers of one machine;
- `sqlite:///PATH`: an SQLite file elsewhere (one machine: SQLite's locks do not hold on NFS);
- `journal:///PATH`: Optuna's journal file, for workers on several machines sharing a file system, no server;
- any database URL SQLAlchemy takes (`postgresql://user@host/db`, `mysql+pymysql://...`): any number of
  machines.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

from rnnexp.errors import ConfigError

log = logging.getLogger("rnnexp")

JOURNAL = "journal:///"
SQLITE = "sqlite:///"
SETTINGS_ATTR = "rnnexp_overrides"  # the study's record of the command line that made it


def default_storage(search_dir: str | Path) -> str:
    return f"{SQLITE}{Path(search_dir).resolve() / 'optuna.db'}"


def search_dir(study_name: str, storage: str | None) -> str:
    """The folder of a study's runs: `outputs/search/<study>` with the default storage; with another
    storage, `outputs/search/<study>-<8 hex digits of its URL>`, so that two studies of the same name in
    two storages never write into each other's trial folders."""
    if storage is None:
        return f"outputs/search/{study_name}"
    return f"outputs/search/{study_name}-{hashlib.sha256(str(storage).encode()).hexdigest()[:8]}"


def open_storage(url: str) -> Any:
    """The Optuna storage of a URL; SQLite waits for a lock (several workers) rather than failing at once.
    Opening a new SQLite database creates its tables: workers that start together retry the race."""
    import optuna
    from sqlalchemy.exc import ArgumentError, DBAPIError

    if url.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix(JOURNAL))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    engine: dict[str, Any] = {}
    if url.startswith(SQLITE):
        Path(url.removeprefix(SQLITE)).parent.mkdir(parents=True, exist_ok=True)
        engine = {"connect_args": {"timeout": 120}}
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine)
        except ImportError as e:  # the database's driver
            raise ConfigError(f"hydra.sweeper.storage={url}: its database driver is not installed "
                              f"({e.__cause__ or e}); for PostgreSQL: pip install 'psycopg[binary]', "
                              "for MySQL: pip install pymysql") from None
        except ArgumentError as e:
            raise ConfigError(f"hydra.sweeper.storage={url} is not a storage URL ({e}); give sqlite:///PATH, "
                              "journal:///PATH or a database URL such as postgresql://user@host/db") from None
        except DBAPIError:  # another worker is creating the same tables (or their version row): theirs do
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def make_pruner(config: dict[str, Any] | None) -> Any:
    """`hydra.sweeper.pruner` (a `_target_` config, conf/hydra/sweeper/pruner/) as an Optuna pruner."""
    import optuna
    from hydra.utils import instantiate

    return optuna.pruners.NopPruner() if not config else instantiate(config)


def trial_of_this_job() -> Any:
    """The Optuna trial this job runs, with its study's pruner, when the job is a trial of a search
    (the sweeper sets `hydra.sweeper.trial` in each job's config); else None."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized() or HydraConfig.get().sweeper.get("trial") is None:
        return None
    import optuna

    sweeper = HydraConfig.get().sweeper
    storage = open_storage(sweeper.storage or default_storage(HydraConfig.get().sweep.dir))
    pruner = make_pruner(OmegaConf.to_container(sweeper.pruner, resolve=True) if sweeper.get("pruner") else None)
    study = optuna.load_study(study_name=sweeper.study_name, storage=storage, pruner=pruner)
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, int(sweeper.trial))
    return optuna.trial.Trial(study, trial_id)
