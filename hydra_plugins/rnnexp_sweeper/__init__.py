"""rnnexp's Hydra plugin: `optuna_study.OptunaSweeper`, the Optuna sweeper of conf/hparams_search/.
Hydra finds plugins in the `hydra_plugins` namespace package only, hence this folder."""
