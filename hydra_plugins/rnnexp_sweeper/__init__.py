"""rnnexp's Hydra plugin: `optuna_sweeper.OptunaSweeper`, the Optuna sweeper of conf/hparams_search/
(conf/hydra/sweeper/optuna.yaml). Hydra finds plugins only in the `hydra_plugins` namespace package."""
