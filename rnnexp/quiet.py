"""What a run does not print, and why: one place for every message the project silences or avoids.

Avoided at the source (the project's settings, Lightning's extension points):
- "`Trainer(limit_val_batches=1.0)` was configured so 100% of the batches will be used": Lightning
  says so for an explicit 1.0; conf/trainer/default.yaml leaves the limit null (all batches, silently).
- "The `srun` command is available on your system but is not used": Lightning's automatic choice of a
  cluster environment checks for SLURM on every Trainer; `cluster_environment()` (a plugin in
  conf/trainer/default.yaml) makes that choice explicitly instead (SLURM only inside a SLURM job step).
- "Total FLOPs: 0" in the model summary, and "Precision bf16-mixed is not supported by the model
  summary": `ModelSummary`, in place of Lightning's, leaves the FLOPs out and sizes the parameters
  as stored (see there).
- "Experiment logs directory ... exists and is not empty" with logger=csv or many: the CSV logger writes
  in a folder of its own, csv/ (conf/logger/csv.yaml), not in the run folder that Hydra's record fills.

Silenced where this project expects them, for one resume at a time (no setting turns them off):
"Checkpoint directory ... exists and is not empty" on a resume into its own run folder, and "The
dirpath has changed ..." on a resume into a new one: `expect_resume()`.

Filtered by text (`silence_known_noise()`, which train.py installs), each narrowly by message,
category and the module that warns, because no setting turns them off: torch's LeafSpec deprecation
inside Lightning, the srun hint of Lightning's second SLURM check (in fit), Lightning's guess that a
short epoch hides the training logs, and its notice of its cloud logger. pyproject.toml's pytest
`filterwarnings` accepts the same warnings for the tests, which train in-process, not through train.py.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importing this module imports neither torch nor Lightning (train.py uses it before they load)
    from lightning_fabric.plugins.environments import ClusterEnvironment


def silence_known_noise() -> None:
    """Warnings and log lines that every run would print and that tell the user nothing."""
    # Lightning 2.6 builds torch's deprecated `LeafSpec()` in its own pytree helper (torch >= 2.10 warns);
    # nothing the project calls differently would avoid it.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning, module=r"pytorch_lightning\.utilities\._pytree")
    # Lightning checks for SLURM once more in every `fit()` without a checkpoint path (to find its own
    # hpc_ckpt_* requeue checkpoints), even though `cluster_environment()` has already decided: outside a
    # SLURM job step, on any machine that merely has SLURM's client (`srun`) installed, it warns then.
    # This project's SLURM runs are started by hydra/launcher=slurm (submitit), which runs them with srun.
    # (Its category, Lightning's PossibleUserWarning, is a UserWarning: named so, no Lightning import here.)
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not used",
                            category=UserWarning, module=r"lightning_fabric\.plugins\.environments\.slurm")
    # Lightning's guess that a short epoch hides the training logs: its runs here are bounded by steps
    # (max_epochs=-1) and it logs every log_every_n_steps *global* steps, across epochs; tasks with few
    # batches per epoch (debug=overfit's one, the long-range tasks' data.train_batches) log all the same.
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging",
                            category=UserWarning, module=r"pytorch_lightning\.loops\.fit_loop")
    # Lightning's notice of its cloud logger, printed when a Trainer starts.
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
        lambda record: "try installing [litlogger]" not in record.getMessage())


def expect_resume(checkpoint: Path, continues_run: bool) -> None:
    """What Lightning's ModelCheckpoint says of every resume here, expected by design: silenced for this
    resume only, by its message, category and module.
    - A resume that continues its run (from the run's checkpoints/last.ckpt, in the run's folder) saves
      into the folder it resumes from: "Checkpoint directory <that folder> exists and is not empty".
      Any other non-empty folder still warns.
    - Any other resume starts a new run folder, with a best of its own (rnnexp/checkpoint.py
      continues_run): "The dirpath has changed from <the checkpoint's folder> to <this run's>, therefore
      `best_model_score` ... won't be reloaded".
    """
    if continues_run:
        folder = re.escape(os.path.realpath(checkpoint.parent))  # ModelCheckpoint names its folder so
        message = rf"Checkpoint directory {folder} exists and is not empty\."
    else:
        message = r"The dirpath has changed from .* therefore `best_model_score`"
    warnings.filterwarnings("ignore", message=message, category=UserWarning,
                            module=r"pytorch_lightning\.callbacks\.model_checkpoint")


def cluster_environment() -> ClusterEnvironment:
    """The cluster environment Lightning would choose by itself (in its order: torchrun, SLURM, LSF, MPI,
    else a plain machine), chosen here explicitly, for two reasons:
    - Lightning's own choice warns "The `srun` command is available on your system but is not used" on
      any machine with SLURM's client installed, in every run that is not a SLURM job step;
    - inside a SLURM job step, Lightning's SLURM environment is still used (ranks, nodes, main address
      from SLURM), but without Lightning's auto-requeue: submitit (hydra/launcher=slurm) is the requeue
      mechanism, and two requeue mechanisms in one job would fight.
    """
    from lightning_fabric.plugins.environments import (
        LightningEnvironment,
        LSFEnvironment,
        MPIEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    if TorchElasticEnvironment.detect():  # torchrun first, as Lightning does: it may run inside SLURM
        return TorchElasticEnvironment()
    if in_slurm_job_step():
        return SLURMEnvironment(auto_requeue=False)
    for environment in (LSFEnvironment, MPIEnvironment):
        if environment.detect():
            return environment()
    return LightningEnvironment()


def in_slurm_job_step() -> bool:
    """Lightning's own test for a SLURM job step (SLURMEnvironment.detect(), less its warning): srun sets
    SLURM_NTASKS; a job named bash or interactive is an interactive allocation that runs processes itself."""
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def _size(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def _count(n: int) -> str:
    from pytorch_lightning.utilities.model_summary import get_human_readable_count

    return get_human_readable_count(int(n)).strip()


def show(rows: list[tuple[str, ...]], totals: list[tuple[str, str]]) -> None:
    """The summary table and its totals, printed with rich as Lightning's RichModelSummary prints them."""
    from rich import get_console
    from rich.table import Table

    table = Table(header_style="bold magenta")
    for title, justify in (("", "left"), ("Name", "left"), ("Type", "left"), ("Params", "right"), ("Mode", "left")):
        table.add_column(title, justify=justify, style="dim" if not title else None, no_wrap=title == "Name")
    for row in rows:
        table.add_row(*row)
    get_console().print(table)
    get_console().print("\n".join(f"[bold]{name}[/]: {value}" for name, value in totals))


def __getattr__(name: str) -> Any:
    """`ModelSummary` is defined on first use, so that importing this module does not import Lightning."""
    if name != "ModelSummary":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()["ModelSummary"] = _define_model_summary()
    return globals()["ModelSummary"]


def _define_model_summary() -> type:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelSummary as LightningModelSummary

    class ModelSummary(LightningModelSummary):
        """Lightning's model summary (layers, parameters, size, train/eval modes) without its FLOPs.

        Lightning 2.6 counts FLOPs only while running the module's `example_input_array` through it; the
        tasks here take differently shaped inputs and set none, so its FLOPs column and "Total FLOPs" would
        always read 0 (and torch's FLOP counter, which Lightning uses, does not count nn.LSTM's fused kernel
        even then). The rest is Lightning's table, computed here from the modules: Lightning's own
        computation warns under bf16-mixed that it does not know that precision's size, where the
        parameters are float32 all the same (their size here is that of the parameters as stored).
        Depth 2 by default: the task's model and its parts (embedding, recurrent layers, readout)."""

        def __init__(self, max_depth: int = 2) -> None:
            super().__init__(max_depth=max_depth)

        def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if not self._max_depth or not trainer.is_global_zero:
                return
            # Lightning's layers (its ModelSummary's): the submodules down to max_depth, the root left out
            layers = [(n, m) for n, m in pl_module.named_modules() if n and n.count(".") < self._max_depth]
            rows = [(str(i), name, type(module).__name__, _count(_size(module)), "train" if module.training else "eval")
                    for i, (name, module) in enumerate(layers)]
            parameters = list(pl_module.parameters())
            total = sum(p.numel() for p in parameters)
            other = total - sum(_size(module) for name, module in layers if "." not in name)  # in no submodule
            if other > 0:
                rows.append(("", "Other params", "n/a", _count(other), "n/a"))
            trainable = sum(p.numel() for p in parameters if p.requires_grad)
            training = [module.training for module in list(pl_module.modules())[1:]]
            totals = [
                ("Trainable params", _count(trainable)),
                ("Non-trainable params", _count(total - trainable)),
                ("Total params", _count(total)),
                ("Parameter size (MB)", f"{sum(p.numel() * p.element_size() for p in parameters) / 1e6:,.3f}"),
                ("Modules in train mode", str(sum(training))),
                ("Modules in eval mode", str(len(training) - sum(training))),
            ]
            show(rows, totals)

    ModelSummary.__module__, ModelSummary.__qualname__ = __name__, "ModelSummary"  # pickled by name (ddp_spawn)
    return ModelSummary
