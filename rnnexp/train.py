"""One training run from a composed Hydra config: check it, load the data, fit, report."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from rnnexp.config import steps_per_batch, validate_components, validate_config
from rnnexp.errors import ConfigError
from rnnexp.resolvers import register

log = logging.getLogger("rnnexp")


def resolve(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain Python values, with a one-line error for a required value left unset."""
    register()  # as train.py does, for configs composed in-process
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as e:
        raise ConfigError(f"{e.full_key} is required: set it on the command line, e.g. {e.full_key}=...") from None


def choose_precision(requested: str, accelerator: str) -> str:
    """`auto`: bf16-mixed on a CPU with AMX tile units, where it measured 2.4x faster than fp32 for
    an LSTM with H=512 (docs/results.md), else full precision. AVX512-BF16 alone is not enough: on
    such a CPU (no AMX) bf16 measured 0.75-0.9x of fp32 for LSTMs with H=128-512. GPUs get 32-true
    until bf16 is measured there too."""
    import torch

    if requested != "auto":
        return requested
    on_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    cpu_amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return "bf16-mixed" if cpu_amx and not on_gpu else "32-true"


def train(cfg: DictConfig) -> float:
    """Train as `cfg` says; returns the run's best validation value of its task's main metric
    (val/bpc, val/ppl, val/f1 or val/seq_acc): the objective of an Optuna search."""
    trainer, task, data, ckpt_path = build(cfg)
    # Lightning validates the final weights inside fit (see Task.on_train_batch_end), so the
    # checkpoints, the HParams tab and the progress bar all see the last validation. The report and
    # result.json come from the process that trained (callbacks.Report): with ddp_spawn, not this one.
    trainer.fit(task, data.train, data.valid, ckpt_path=ckpt_path, weights_only=True)
    if not trainer.is_global_zero:  # another DDP process: rank 0 reports
        return math.nan
    run_dir = Path(task.config["run_dir"]).resolve()
    return json.loads((run_dir / "result.json").read_text(encoding="utf-8"))["best"][task.main_metric]


def build(cfg: DictConfig, data: Any = None) -> tuple[Any, Any, Any, Path | None]:
    """Everything `train` fits, as it fits it: (trainer, task, data, ckpt_path), with the config
    checked, a resume's checkpoint found and checked, and the loggers and callbacks made.
    `data` (a TaskData) replaces the task's own loading (scripts/benchmark.py trains on random tokens)."""
    config = resolve(cfg)
    validate_config(config)  # every check that needs neither torch nor Lightning: a bad value costs no import

    # Imported here, not at the top, so that `train.py --help` and `--cfg job` stay fast.
    import pytorch_lightning as pl
    import torch
    from hydra.utils import instantiate

    validate_components(config)

    from rnnexp.callbacks import NoProfiler, PruneTrial, Report, resolve_monitor
    from rnnexp.checkpoint import check_fits, check_same_settings, continues_run, find_checkpoint, load_checkpoint
    from rnnexp.download import resolve_cache_dir, resolve_data_dir
    from rnnexp.errors import CheckpointError
    from rnnexp.quiet import ModelSummary, expect_resume
    from rnnexp.search import trial_of_this_job
    from rnnexp.stopping import SaveOnStop
    from rnnexp.tasks import task_class

    ckpt_path, checkpoint, purge_step = None, None, None
    run_dir = Path(config["run_dir"]).resolve()
    earlier = run_dir / "checkpoints" / "last.ckpt"
    if config["ckpt_path"] is None and earlier.is_file():
        if not in_sweep():  # a resume is the one way to write into a run's folder
            raise CheckpointError(f"run folder {run_dir} holds a run already: resume it with ckpt_path={run_dir}, "
                                  "or leave the folder to rnnexp (a new one for each run)")
        # A sweep job that runs again in its own folder was requeued (a time limit, a preemption): it resumes.
        log.info("this job ran before in %s: resuming it", run_dir)
        config["ckpt_path"] = str(earlier)
    if config["ckpt_path"] is not None:  # resume: the same run, its settings, where it stopped
        ckpt_path = find_checkpoint(config["ckpt_path"])
        checkpoint = load_checkpoint(ckpt_path)
        check_same_settings(checkpoint, ckpt_path, config)
        budget = config["trainer"]["max_steps"]
        if 0 < budget <= checkpoint["global_step"]:
            raise CheckpointError(f"checkpoint {ckpt_path} is at step {checkpoint['global_step']} and "
                                  f"trainer.max_steps={budget}: nothing left to train; give a larger trainer.max_steps")

    share_cpu_threads()
    pl.seed_everything(config["seed"], workers=True)
    task_type = task_class(config)
    config["steps_per_batch"] = steps_per_batch(config, task_type.batch_holds_steps)
    if data is None:
        data = task_type.load_data(config, resolve_data_dir(config["data_dir"]),
                                   resolve_cache_dir(config["cache_dir"]))
    task = task_type(config, data.vocab.symbols)
    task.test_loader = data.test

    if ckpt_path is not None:
        check_fits(checkpoint, ckpt_path, config, data.vocab.symbols, task.state_dict())
        if continues_run(ckpt_path) and ckpt_path.resolve().parent.parent == run_dir:
            # TensorBoard drops what an interrupted run logged after the checkpoint's step.
            purge_step = checkpoint["global_step"]
            task.continues_run, task.resumed_at_step = True, purge_step
            after_earlier_event_files(run_dir)
        expect_resume(ckpt_path, task.continues_run)  # what Lightning says of a resume, expected here
        log.info("resuming from %s at step %d", ckpt_path.resolve(), checkpoint["global_step"])
        del checkpoint
    elif config["init_from"] is not None:  # a new run that starts from a checkpoint's weights
        init_path = find_checkpoint(config["init_from"])
        checkpoint = load_checkpoint(init_path)
        check_fits(checkpoint, init_path, config, data.vocab.symbols, task.state_dict())
        task.load_state_dict(checkpoint["state_dict"])
        log.info("weights from %s (step %d); a new run from step 0", init_path.resolve(), checkpoint["global_step"])
        del checkpoint

    loggers = [
        instantiate(c, **({"purge_step": purge_step} if purge_step and c["_target_"].endswith("TensorBoardLogger")
                          else {}))
        for c in (config["logger"] or {}).values()
    ]
    callbacks = [instantiate(resolve_monitor(c, task.main_metric, task.higher_is_better))
                 for c in (config["callbacks"] or {}).values() if c is not None] + [Report(), SaveOnStop()]
    trial = trial_of_this_job()
    if trial is not None:  # a job of an Optuna search: its validations go to its trial, which may be pruned
        callbacks.append(PruneTrial(trial, task.main_metric))
    if not config["trainer"].get("enable_progress_bar", True):  # one switch turns every bar off
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.ProgressBar)]
    if config["trainer"].get("enable_model_summary", True):  # Lightning's, less its FLOPs (always 0 here)
        callbacks.append(ModelSummary())  # in place of Lightning's own: enable_model_summary=False below
    precision = choose_precision(str(config["trainer"]["precision"]), config["trainer"]["accelerator"])
    # Without a checkpoint callback (callbacks.model_checkpoint=null), Lightning would add its own.
    checkpointing = any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks)
    strategy = {}
    if config["trainer"].get("strategy") == "ddp" and in_sweep():
        # Lightning's ddp starts the other processes by running the command line again, which
        # inside a -m sweep would run the whole sweep again: there, processes are spawned instead.
        strategy = {"strategy": "ddp_spawn"}
    # Without a profiler asked for (debug=profile asks), Lightning's default, cheaper per hook (see NoProfiler).
    profiler = {} if config["trainer"].get("profiler") else {"profiler": NoProfiler()}
    # Lightning counts validation intervals in batches; the config, as everything else, in steps.
    every = config["trainer"]["val_check_interval"]
    validation = {"val_check_interval": every // config["steps_per_batch"]} if isinstance(every, int) else {}
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=loggers, callbacks=callbacks, precision=precision,
                                      enable_checkpointing=checkpointing, enable_model_summary=False, **strategy,
                                      **profiler, **validation)
    task.check_processes(trainer.world_size)
    log.info(
        "training %s %s (%s, %s, %d parameters) on %s: %d steps a pass over the train split, %d steps a "
        "Lightning batch, %d validation batches, vocabulary %d; %d CPU threads", config["arch"]["name"],
        config["cell"]["name"], config["cell"]["impl"], trainer.precision, sum(p.numel() for p in task.parameters()),
        config["data"]["name"], steps_per_pass(data.train), config["steps_per_batch"], len(data.valid),
        len(data.vocab), torch.get_num_threads(),
    )
    if task.continues_run and trainer.is_global_zero:
        record_resume_overrides(run_dir)
    return trainer, task, data, ckpt_path


def steps_per_pass(train: Any) -> int:
    """Training steps in one pass over the training data: a language model's windows, else batches."""
    from rnnexp.data import TrainStream

    return train.batches.num_windows if isinstance(train, TrainStream) else len(train)


def after_earlier_event_files(run_dir: Path) -> None:
    """TensorBoard reads a folder's event files in name order, and a name starts with the second the
    file was made in, then a per-process counter (which sorts 10 before 9): a resume in the same second
    as an earlier file (in-process, as in a notebook) waits for the next second, so that its file, and
    its purge of the steps after the checkpoint, are read last."""
    import time

    latest = max((int(p.name.split(".")[3]) for p in run_dir.glob("events.out.tfevents.*")), default=0)
    time.sleep(max(0.0, latest + 1 - time.time()))


def in_sweep() -> bool:
    """Whether this run is a job of a Hydra multirun (-m)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def share_cpu_threads() -> None:
    """Jobs that a launcher runs side by side on one machine split its cores rather than each
    taking all of them: hydra/launcher=joblib's workers get OMP_NUM_THREADS = cores / n_jobs from
    joblib, a search's local workers (`hydra.sweeper.n_workers`) cores / n_workers from the sweeper;
    submitit's `hydra.launcher.cpus_per_task` is applied here."""
    import torch
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized() and HydraConfig.get().launcher.get("cpus_per_task"):
        torch.set_num_threads(HydraConfig.get().launcher.cpus_per_task)
    elif os.environ.get("OMP_NUM_THREADS", "").isdigit():  # also where torch was imported before it was set
        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))


def record_resume_overrides(run_dir: Path) -> None:
    """A resume into its run's folder adds its command-line overrides to the run's
    .hydra/overrides.yaml (the original ones stay first); Hydra's full record of this resume is in
    .hydra/resumes/ (see `hydra.output_subdir` in conf/train.yaml)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():  # composed in-process (tests): no Hydra record to extend
        return
    record = run_dir / ".hydra" / "overrides.yaml"
    earlier = OmegaConf.to_container(OmegaConf.load(record)) if record.exists() else []
    added = [o for o in HydraConfig.get().overrides.task if o not in earlier]
    if added:  # appended as YAML list items; an empty list (`[]`) is written anew
        with open(record, "a" if earlier else "w", encoding="utf-8") as f:
            f.write(OmegaConf.to_yaml(added))
