"""Training speed of `python train.py` against a plain PyTorch loop on the same model and batches.

The rnnexp side is what train.py runs: the Trainer, loggers, callbacks (progress bar, checkpoints,
diagnostics, validation samples, early stopping, report) and validation schedule that
`rnnexp.train.build` makes from the composed config. The plain side is the loop a PyTorch user
would write: its own copy of the model, optimizer, schedule, clipping and precision, on the same
batches, validating over the same validation batches at the same steps.

The two alternate batch by batch in this one process: after each of train.py's Lightning batches
(`steps_per_batch` steps, 25 at the defaults) the plain loop takes the same steps (and validates
where train.py did), timed on its own; train.py's time is the whole window's less the plain loop's.
So a slow or busy moment of the machine falls on both alike,
and the report is their time ratio (tokens per second for orientation only):

    python scripts/benchmark.py --size short --threads 1 --clock cpu --breakdown  # LSTM H=32, batch 8, unroll 16
    python scripts/benchmark.py --threads 1 --clock cpu --breakdown               # the default model, LSTM H=256
    python scripts/benchmark.py cell=gru cell.impl=scratch cell.hidden_size=128

What is timed: `--steps` training steps after `--warmup` ones (each rounded up to a whole batch; every
variant takes as many steps a batch as train.py, but the one that shows their effect), with whatever
falls between them
(validations, checkpoints, diagnostics, samples, the progress bar's drawing); the run is then
stopped, so its start (Trainer, sanity check) and end (last validation, test split, sample, report)
are not. `--breakdown` also runs train.py with each part switched off in turn: a part's share is how
much of the plain loop's time it adds, so the shares and the rest add up to about the ratio minus 1.
The progress bar draws as it would on a terminal, into /dev/null. Tokens are random, in
tiny-shakespeare's sizes and alphabet. Arguments other than the options below are Hydra overrides
of conf/train.yaml.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZES = {
    "default": [],  # conf/train.yaml as it is: LSTM H=256, batch 32, unroll 64
    "short": ["cell.hidden_size=32", "batch_size=8", "unroll=16"],  # a step of about a millisecond
}
# What --breakdown switches off, one at a time: (name, overrides). Validation goes on both sides.
PARTS = [
    ("progress bar", ["trainer.enable_progress_bar=false"]),
    ("checkpoints", ["callbacks.model_checkpoint=null"]),
    ("diagnostics", ["callbacks.diagnostics=null"]),
    ("validation samples", ["sample.val_length=0"]),
    ("early stopping (off by default)", ["callbacks.early_stop=null"]),
    ("TensorBoard logging", ["logger=none"]),
    ("validation (both sides)", ["trainer.val_check_interval=1000000"]),  # after the timed steps
]
BARE = "bare LightningModule and Trainer"
ONE_STEP = "one step a batch (steps_per_batch=1)"
ALPHABET = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # tiny-shakespeare's 65 symbols
TRAIN_TOKENS, VALID_TOKENS = 1_003_854, 111_540  # tiny-shakespeare's 90/10 split


class WindowDone(Exception):
    """Raised once the timed steps are done: the rest of the run is not measured."""


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def random_data(config: dict[str, Any]) -> Any:
    """A TaskData of random tokens, as train.py's language-model data (no test split, as tiny-shakespeare)."""
    import numpy as np

    from rnnexp.data import StreamLoader, TBPTTBatches, TrainStream
    from rnnexp.tasks.base import TaskData
    from rnnexp.tasks.language_model import EVAL_STEPS_PER_BATCH
    from rnnexp.tokenizers import vocab_from_symbols

    rng = np.random.default_rng(0)
    vocab = vocab_from_symbols(config["tokenizer"], list(ALPHABET))
    batch_size, unroll = config["batch_size"], config["unroll"]
    train = TBPTTBatches(rng.integers(0, 65, TRAIN_TOKENS, dtype=np.uint8), batch_size, unroll)
    valid = TBPTTBatches(rng.integers(0, 65, VALID_TOKENS, dtype=np.uint8), batch_size, unroll, "validation",
                         max(1, EVAL_STEPS_PER_BATCH // unroll))
    return TaskData(vocab, TrainStream(train, config["steps_per_batch"]), StreamLoader(valid))


class PlainLoop:
    """The loop a PyTorch user would write, one step at a time: `step()` trains on the next batch,
    `validate()` runs over the validation batches that train.py's validation runs over."""

    def __init__(self, config: dict[str, Any], data: Any) -> None:
        import torch

        from rnnexp.model import build_language_model
        from rnnexp.optim import build_optimizer, build_scheduler
        from rnnexp.train import choose_precision

        self.config, self.train, self.valid = config, data.train.batches, data.valid.batches
        self.model = build_language_model(len(data.vocab), config["cell"], config["arch"])
        self.device = "cuda" if torch.cuda.is_available() else "cpu"  # what accelerator="auto" picks
        self.model.to(self.device)
        self.optimizer = build_optimizer(self.model.parameters(), config["optim"], config["lr"])
        self.scheduler = build_scheduler(self.optimizer, config["sched"])
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler = None  # stepped at validations only: nothing per step
        trainer = config["trainer"]
        self.bf16 = choose_precision(str(trainer["precision"]), trainer["accelerator"]) == "bf16-mixed"
        limit = trainer.get("limit_val_batches")
        self.n_valid = len(self.valid) if limit is None else int(limit) if isinstance(limit, int) \
            else int(len(self.valid) * limit)
        self.state, self.k = None, 0

    def step(self) -> None:
        import torch
        import torch.nn.functional as F

        from rnnexp.tasks.base import detach_state

        if self.k % len(self.train) == 0:
            self.state = None  # a new pass starts every stream over
        inputs, targets = (t.to(self.device) for t in self.train[self.k % len(self.train)])
        self.k += 1
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16):
            logits, state = self.model(inputs, self.state)
            self.state = detach_state(state)
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config["clip"]:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config["clip"])
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def validate(self) -> float:
        import torch
        import torch.nn.functional as F

        self.model.eval()
        nll, state = torch.zeros((), device=self.device, dtype=torch.float64), None
        with torch.no_grad(), torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16):
            for j in range(self.n_valid):  # each batch: several unroll windows, one after the other
                for inputs, targets in zip(*(t.to(self.device).split(self.config["unroll"]) for t in self.valid[j]),
                                           strict=True):
                    logits, state = self.model(inputs, state)
                    nll += F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum")
        self.model.train()
        return float(nll)  # the user reads the number


def lockstep(plain: PlainLoop, warmup: int, steps: int, every: int, cpu: bool) -> Any:
    """A callback that times train.py's steps from the first batch that starts at step >= warmup to
    the first that starts at step >= warmup + steps, and then stops the run; after each batch the
    plain loop takes the same steps (and validates where train.py did), timed apart. cpu: CPU time,
    the process's for the window (all threads: the progress bar draws in one of its own), the main
    thread's for the plain loop."""
    import pytorch_lightning as pl

    total_clock = time.process_time if cpu else time.perf_counter
    plain_clock = time.thread_time if cpu else time.perf_counter

    class Lockstep(pl.Callback):
        total = plain_seconds = math.nan
        start_step = end_step = -1

        def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
            if self.start_step < 0 and trainer.global_step >= warmup:
                synchronize()
                self.start, self.start_step, self.plain_seconds = total_clock(), trainer.global_step, 0.0
            elif self.start_step >= 0 and trainer.global_step >= warmup + steps:
                synchronize()
                self.total, self.end_step = total_clock() - self.start, trainer.global_step
                raise WindowDone
            self.batch_start = trainer.global_step

        def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
            synchronize()
            start = plain_clock()
            for _ in range(trainer.global_step - self.batch_start):
                plain.step()
            if every and trainer.global_step % every == 0:
                plain.validate()
            synchronize()
            if self.start_step >= 0:
                self.plain_seconds += plain_clock() - start

    return Lockstep()


def rnnexp_run(cfg: Any, data: Any, callback: Any) -> None:
    """train.py's run (rnnexp.train.build, then fit), with `callback` added, until it stops the run."""
    from pytorch_lightning.callbacks import RichProgressBar

    from rnnexp.train import build

    trainer, task, data, ckpt_path = build(cfg, data)
    for bar in trainer.callbacks:
        if isinstance(bar, RichProgressBar):  # drawn as on a terminal, where nobody sees it
            bar._console_kwargs = {"force_terminal": True, "file": open(os.devnull, "w"), "width": 120}  # noqa: SIM115
    trainer.callbacks.append(callback)
    try:
        trainer.fit(task, data.train, data.valid, ckpt_path=ckpt_path, weights_only=True)
    except WindowDone:
        pass


def bare_run(config: dict[str, Any], data: Any, callback: Any) -> None:
    """A minimal LightningModule under a bare Trainer (Lightning's defaults; no logger, callbacks or
    validation; the same model, optimizer, schedule, clipping and precision): Lightning's own cost."""
    import pytorch_lightning as pl
    import torch
    import torch.nn.functional as F

    from rnnexp.data import TrainStream
    from rnnexp.model import build_language_model
    from rnnexp.optim import build_optimizer, build_scheduler
    from rnnexp.tasks.base import detach_state
    from rnnexp.train import choose_precision

    class Bare(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = build_language_model(len(data.vocab), config["cell"], config["arch"])
            self.state = None

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            inputs, targets, (starts_pass,) = batch
            logits, state = self.model(inputs, None if starts_pass else self.state)
            self.state = detach_state(state)
            return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

        def configure_optimizers(self) -> Any:
            optimizer = build_optimizer(self.parameters(), config["optim"], config["lr"])
            scheduler = build_scheduler(optimizer, config["sched"])
            if scheduler is None or isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                return optimizer
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    torch.manual_seed(config["seed"])
    trainer = pl.Trainer(
        max_steps=config["trainer"]["max_steps"], max_epochs=-1, accelerator="auto", devices=1, logger=False,
        precision=choose_precision(str(config["trainer"]["precision"]), config["trainer"]["accelerator"]),
        gradient_clip_val=config["clip"] or None, callbacks=[callback], limit_val_batches=0, num_sanity_val_steps=0,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    try:
        trainer.fit(Bare(), TrainStream(data.train.batches, 1))  # a batch per step
    except WindowDone:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="default",
                        help="default: conf/train.yaml's model; short: LSTM H=32, batch 8, unroll 16")
    parser.add_argument("--steps", type=int, default=500, help="timed steps (500: two validations, one "
                        "every-500-steps checkpoint and four diagnostics at the defaults)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (up to the next batch)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch's CPU threads (default: torch's choice)")
    parser.add_argument("--breakdown", action="store_true", help="also switch each part off in turn")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: CPU time, steadier than wall time on a machine that other work shares; "
                        "with --threads 1 (torch's other threads would not be counted for the plain loop)")
    parser.add_argument("--json", help="also write the measured seconds, (rnnexp, plain) per run, to this file")
    args, overrides = parser.parse_known_args(argv)
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu needs --threads 1")

    import pytorch_lightning  # noqa: F401  (it sets its loggers' levels when imported: before ours)
    import torch
    from hydra import compose, initialize_config_dir

    from rnnexp.config import steps_per_batch
    from rnnexp.data import TrainStream
    from rnnexp.quiet import silence_known_noise
    from rnnexp.train import resolve

    if args.threads:
        torch.set_num_threads(args.threads)
    silence_known_noise()
    for name in ("pytorch_lightning", "lightning_fabric", "lightning", "rnnexp"):
        logging.getLogger(name).setLevel(logging.WARNING)
    variants: list[tuple[str, list[str]]] = [("train.py", [])]
    if args.breakdown:
        variants += [(f"without {name}", extra) for name, extra in PARTS]
        all_off = [o for _, extra in variants[1:] for o in extra]
        variants += [("all of the above off", all_off), (BARE, all_off), (ONE_STEP, ["steps_per_batch=1"])]
    # The model summary is printed once, before the timed steps: left out to keep the output short.
    base = [*SIZES[args.size], "+trainer.enable_model_summary=false", *overrides]

    times: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in variants}  # (rnnexp, plain) pairs
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(config_dir=str(REPO / "conf"),
                                                                        version_base="1.3"):
        config = resolve(compose("train", overrides=[f"run_dir={tmp}/run", *base]))
        # Every variant takes as many steps a batch as train.py does here (switching a part off may
        # change what `auto` finds), except the one that shows what taking them one by one costs.
        config["steps_per_batch"] = steps_per_batch(config, batch_holds_steps=True)
        same_steps = [f"steps_per_batch={config['steps_per_batch']}"]
        configs = {name: compose("train", overrides=[f"run_dir={tmp}/run", *base, *extra, *(
            [] if any(o.startswith("steps_per_batch=") for o in extra) else same_steps)]) for name, extra in variants}
        data = random_data(config)
        runs = 0
        for _ in range(args.repeats):
            for name, _extra in variants:
                runs += 1
                cfg = configs[name]
                cfg.run_dir = f"{tmp}/run{runs}"  # a new run folder each time, as train.py makes
                variant = resolve(cfg)
                every = variant["trainer"]["val_check_interval"]
                plain = PlainLoop(variant, data)
                clock = lockstep(plain, args.warmup, args.steps, 0 if name == BARE else every, args.clock == "cpu")
                own = replace(data, train=TrainStream(data.train.batches, variant["steps_per_batch"]))
                bare_run(variant, data, clock) if name == BARE else rnnexp_run(cfg, own, clock)
                if math.isnan(clock.total):
                    raise RuntimeError(f"the run ended before step {args.warmup + args.steps}")
                times[name].append((clock.total - clock.plain_seconds, clock.plain_seconds))
    if args.json:
        Path(args.json).write_text(json.dumps(times, indent=1) + "\n", encoding="utf-8")
    report(args, config, variants, times)


def report(args: argparse.Namespace, config: dict[str, Any], variants: list[tuple[str, list[str]]],
           times: dict[str, list[tuple[float, float]]]) -> None:
    """The table: each variant's time ratio to its plain loop, and each part's share of the plain time."""
    import torch

    from rnnexp.train import choose_precision

    cell, trainer = config["cell"], config["trainer"]
    tokens = args.steps * config["batch_size"] * config["unroll"]
    full = times["train.py"]
    plain_full = [p for _, p in full]
    ratio = {name: statistics.median(o / p for o, p in pairs) for name, pairs in times.items()}
    # What a variant adds over its plain loop (ratio - 1), in units of the full run's plain time: the
    # same where both plain loops validate alike, else scaled by their median times.
    scale = {name: statistics.median(p for _, p in times[name]) / statistics.median(plain_full)
             if any(o.startswith("trainer.val_check_interval") for o in extra) else 1.0 for name, extra in variants}
    excess = {name: (ratio[name] - 1) * scale[name] for name in times}
    print(f"{cell['name']} ({cell['impl']}), H={cell['hidden_size']}, "
          f"{choose_precision(str(trainer['precision']), trainer['accelerator'])}, batch {config['batch_size']}, "
          f"unroll {config['unroll']}; {args.steps} timed steps x {args.repeats} repeats, "
          f"{torch.get_num_threads()} thread(s), {args.clock} clock; validation every "
          f"{trainer['val_check_interval']} steps")
    print(f"plain PyTorch loop: {tokens / statistics.median(plain_full):,.0f} tokens/s; "
          f"train.py: {tokens / statistics.median(o for o, _ in full):,.0f} tokens/s (medians)")
    print(f"{'':40} {'time ratio':>10} {'share':>7}  (ratios of the repeats)")
    for name, pairs in times.items():
        share = "" if name in ("train.py", BARE) else f"{excess['train.py'] - excess[name]:+7.3f}"
        print(f"{name:40} {ratio[name]:10.3f} {share:>7}  ({' '.join(f'{o / p:.3f}' for o, p in pairs)})")
    print("time ratio: rnnexp's time / the plain loop's (1.0 = no overhead; median of the repeats); "
          "share: what the part adds, as a fraction of the plain loop's time")


if __name__ == "__main__":
    main()
