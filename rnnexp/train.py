"""One training run from a composed Hydra config: check it, load the data, fit, report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from rnnexp.config import validate_config
from rnnexp.errors import ConfigError

log = logging.getLogger("rnnexp")


def resolve(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain Python values, with a one-line error for a required value left unset."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as e:
        raise ConfigError(f"{e.full_key} is required: set it on the command line, e.g. {e.full_key}=...") from None


def choose_precision(requested: str, accelerator: str) -> str:
    """`auto`: bf16-mixed on a CPU with native bf16 units (AVX512-BF16 or AMX), where it measured
    2.4x faster for an LSTM with H=512 (see README), else full precision. GPUs get 32-true until
    bf16 is measured there too."""
    import torch

    if requested != "auto":
        return requested
    on_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    cpu_bf16 = any(getattr(torch.cpu, probe, lambda: False)()
                   for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return "bf16-mixed" if cpu_bf16 and not on_gpu else "32-true"


def sample_prime(config: dict[str, Any], vocab: Any, train_loader: Any) -> str:
    """`sample.prime`, checked before training; if this vocabulary cannot spell it (the default "\n"
    in text8, say), the corpus's first symbol instead, so a finished run never fails at its sample."""
    from rnnexp.errors import DataError

    prime = config["sample"]["prime"]
    try:
        if len(vocab.encode(prime)) > 0:
            return prime
    except DataError:
        pass
    fallback = vocab.decode(train_loader.batches[0][0][:1, 0].tolist())
    log.warning("sample.prime %r is not in this vocabulary; the sample starts from %r", prime, fallback)
    return fallback


def train(cfg: DictConfig) -> float:
    """Train as `cfg` says; returns the best validation loss (the value Hydra sweepers minimise)."""
    config = resolve(cfg)
    validate_config(config)

    # Imported here, not at the top, so that `train.py --help` and `--cfg job` stay fast.
    import hydra
    import pytorch_lightning as pl
    import torch

    from rnnexp.checkpoint import check_fits, find_checkpoint, load_checkpoint
    from rnnexp.data import StreamLoader, TBPTTBatches, load_corpus
    from rnnexp.download import resolve_cache_dir, resolve_data_dir
    from rnnexp.sample import generate
    from rnnexp.task import task_class

    pl.seed_everything(config["seed"], workers=True)
    data_dir = resolve_data_dir(config["data_dir"])
    kind = config["data"].get("task", "lm")
    if kind == "lm":
        corpus = load_corpus(config["data"], config["tokenizer"], data_dir, resolve_cache_dir(config["cache_dir"]))
        vocab = corpus.vocab
        # Stream order matters (the hidden state is carried from batch to batch), so no shuffling;
        # no worker processes either: a batch is a slice of a tensor.
        train_loader = StreamLoader(TBPTTBatches(corpus.train, config["batch_size"], config["unroll"], "train"))
        val_loader = StreamLoader(TBPTTBatches(corpus.valid, config["batch_size"], config["unroll"], "validation"))
    elif kind == "segmentation":
        from rnnexp.segmentation import load_segmentation

        segmentation = load_segmentation(config, data_dir)
        vocab, train_loader, val_loader = segmentation.vocab, segmentation.train, segmentation.valid
    else:
        from rnnexp.seq2seq import load_seq2seq

        pairs = load_seq2seq(config, data_dir)
        vocab, train_loader, val_loader = pairs.vocab, pairs.train, pairs.valid

    prime = sample_prime(config, vocab, train_loader) if kind == "lm" else ""
    task = task_class(config)(config, vocab.symbols)
    ckpt_path, start_step = None, 0
    if config["ckpt_path"] is not None:
        ckpt_path = find_checkpoint(config["ckpt_path"])
        checkpoint = load_checkpoint(ckpt_path)
        check_fits(checkpoint, ckpt_path, config, vocab.symbols, task.state_dict())
        start_step = checkpoint["global_step"]
        log.info("resuming from %s at step %d", ckpt_path, start_step)
        del checkpoint

    # purge_step: TensorBoard drops what an interrupted run logged after the checkpoint's step.
    logger = [
        hydra.utils.instantiate(c, **({"purge_step": start_step} if c["_target_"].endswith("TensorBoardLogger")
                                       and start_step else {}))
        for c in (cfg.logger or {}).values()
    ]
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.callbacks or {}).values()]
    if not config["trainer"].get("enable_progress_bar", True):  # one switch turns every bar off
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.ProgressBar)]
    precision = choose_precision(str(config["trainer"]["precision"]), config["trainer"]["accelerator"])
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer, logger=logger, callbacks=callbacks, precision=precision
    )
    log.info(
        "training %s %s (%s, %s, %d parameters) on %s: %d train / %d validation batches, vocabulary %d",
        config["arch"]["name"],
        config["cell"]["name"],
        config["cell"]["impl"],
        precision,
        sum(p.numel() for p in task.parameters()),
        config["data"]["name"],
        len(train_loader),
        len(val_loader),
        len(vocab),
    )
    trainer.fit(task, train_loader, val_loader, ckpt_path=ckpt_path, weights_only=True)

    # A run cut short by max_time or max_steps may end between validations: measure the final weights.
    if task.last_val_step != task.global_step:
        trainer.validate(task, val_loader, verbose=False)
    final_loss = float(trainer.callback_metrics["val/loss"])
    final_score = float(trainer.callback_metrics[f"hp/val_{task.score_name}"])

    sample_cfg = config["sample"]
    if kind == "lm" and sample_cfg["length"] > 0:
        generator = torch.Generator().manual_seed(config["seed"])
        text = generate(task.model, vocab, prime, sample_cfg["length"],
                        sample_cfg["temperature"], generator)
        print(f"\n--- sample (temperature {sample_cfg['temperature']}) ---\n{text}\n---")
    run_dir = Path(config["run_dir"]).resolve()
    print(
        f"final val/loss {final_loss:.4f}, val/{task.score_name} {final_score:.4f} "
        f"(best {task.best_score:.4f}), after {task.global_step} steps\n"
        f"run folder: {run_dir}\n"
        f"view it:    tensorboard --logdir {run_dir}"
    )
    return task.best_val_loss
