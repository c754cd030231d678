"""Training speed of rnnexp against a plain PyTorch loop on the same model, data and optimizer.

Both run in this one process, alternating, so the machine's state affects them alike; the report is
their ratio (and each one's tokens per second, for orientation only):

    python scripts/benchmark.py                       # the default model (LSTM, H=512)
    python scripts/benchmark.py cell=gru cell.impl=scratch cell.hidden_size=128 --steps 100

Arguments other than --steps/--repeats are Hydra overrides of conf/train.yaml.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def plain_loop(config: dict, vocab_size: int, batches, steps: int) -> float:
    """The loop a PyTorch user would write: seconds for `steps` steps after 5 warm-up steps."""
    import torch
    import torch.nn.functional as F

    from rnnexp.model import build_language_model
    from rnnexp.optim import build_optimizer, build_scheduler
    from rnnexp.tasks.base import detach_state

    cell, arch = config["cell"], config["arch"]
    model = build_language_model(vocab_size, cell, arch)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # what accelerator="auto" picks
    model.to(device)
    optimizer = build_optimizer(model.parameters(), config["optim"], config["lr"])
    scheduler = build_scheduler(optimizer, config["sched"])
    bf16 = config["trainer"]["precision"] == "bf16-mixed"
    state, start = None, 0.0
    for step in range(steps + 5):
        if step == 5:
            start = time.perf_counter()
        inputs, targets = (t.to(device) for t in batches[step % len(batches)])
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            logits, state = model(inputs, state)
            state = detach_state(state)
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config["clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config["clip"])
        optimizer.step()
        if scheduler is not None and not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step()  # a plateau schedule waits for validations, which this loop has none of
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def framework(config: dict, vocab: list[str], batches, steps: int, run_dir: str) -> float:
    """rnnexp's LanguageModelTask under a Lightning Trainer, logging as `train.py` does."""
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.loggers import TensorBoardLogger

    from rnnexp.data import StreamLoader
    from rnnexp.tasks.language_model import LanguageModelTask

    class Clock(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 5:
                self.start = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.seconds = time.perf_counter() - self.start

    clock = Clock()
    trainer = pl.Trainer(
        max_steps=steps + 5, accelerator="auto", devices=1, gradient_clip_val=config["clip"] or None,
        log_every_n_steps=config["trainer"]["log_every_n_steps"], precision=config["trainer"]["precision"],
        logger=TensorBoardLogger(run_dir, name="", version=""), callbacks=[clock], limit_val_batches=0,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(LanguageModelTask(config, vocab), StreamLoader(batches))
    return clock.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args, overrides = parser.parse_known_args()

    import logging

    import numpy as np
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from rnnexp.data import TBPTTBatches
    from rnnexp.train import choose_precision

    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as run_dir:
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=[f"run_dir={run_dir}", *overrides])
        config = OmegaConf.to_container(cfg, resolve=True)
        trainer_cfg = config["trainer"]
        trainer_cfg["precision"] = choose_precision(str(trainer_cfg["precision"]), trainer_cfg["accelerator"])
        # Speed does not depend on what the tokens say: random ones, as many symbols as tiny-shakespeare has.
        vocab = [chr(ord("!") + i) for i in range(65)]
        stream = np.random.default_rng(0).integers(0, len(vocab), 1_000_000, dtype=np.uint8)
        batches = TBPTTBatches(stream, config["batch_size"], config["unroll"])
        tokens = args.steps * config["batch_size"] * config["unroll"]
        plain, ours = [], []
        for _ in range(args.repeats):
            torch.manual_seed(0)
            plain.append(plain_loop(config, len(vocab), batches, args.steps))
            torch.manual_seed(0)
            ours.append(framework(config, vocab, batches, args.steps, run_dir))
    cell = config["cell"]
    print(f"{cell['name']} ({cell['impl']}), H={cell['hidden_size']}, {config['trainer']['precision']}, "
          f"batch {config['batch_size']}, "
          f"unroll {config['unroll']}, {args.steps} steps x {args.repeats} repeats, {torch.get_num_threads()} threads")
    print(f"plain PyTorch loop: {tokens / statistics.median(plain):,.0f} tokens/s (median)")
    print(f"rnnexp (Lightning): {tokens / statistics.median(ours):,.0f} tokens/s (median)")
    print(f"rnnexp / plain time ratio: {statistics.median(o / p for o, p in zip(ours, plain, strict=True)):.3f} "
          "(1.0 = no overhead)")


if __name__ == "__main__":
    main()
