"""rnnexp.callbacks.LMProgressBar as a user sees it: a real Trainer fits a tiny module with the bar on a
rich console that records, and a fake clock (rnnexp.callbacks' `time.monotonic`, set by the module at each
batch) decides which batches are drawn. Checked: the bar draws at most `refresh_rate` times a second and
does nothing between draws; the counts it skipped are caught up before a validation, at the end of an
epoch and when a run fails; the final bar shows the full count and the task's `progress_stats`
(loss, tok_per_s, val_loss) formatted, without v_num. No timing is measured; nothing needs a network."""

from __future__ import annotations

import io
import re
import time
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import rich
import torch
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from rnnexp import callbacks
from rnnexp.callbacks import LMProgressBar

pytestmark = pytest.mark.filterwarnings(  # tiny in-memory data sets, read in the main process
    "ignore:The '\\w+_dataloader' does not have many workers:UserWarning")


class Clock:
    """What rnnexp.callbacks reads as time.monotonic(): the time the module last set."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(callbacks, "time", SimpleNamespace(monotonic=clock.monotonic, perf_counter=time.perf_counter))
    monkeypatch.setattr(rich, "_console", None)  # the bar reconfigures rich's global console: a fresh one here
    return clock


class Tiny(pl.LightningModule):
    """One weight. At each training batch the clock reads `train_times[global_step]` and the stats change
    (loss 2 + step/100, tok_per_s 12345.6 + 1000 step); a validation batch sets `val_times[batch_idx]`
    and val_loss 3.25 + batch_idx. `fail` = ("train", step) or ("val", batch_idx): a RuntimeError there."""

    def __init__(self, clock: Clock, train_times: list[float], val_times: list[float] = (), stats: bool = True,
                 fail: tuple[str, int] | None = None, log_acc: bool = False) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.clock, self.train_times, self.val_times, self.fail, self.log_acc = clock, train_times, val_times, fail, \
            log_acc
        if stats:
            self.progress_stats: dict[str, float] = {}

    def training_step(self, batch, batch_idx):
        step = self.global_step
        if self.fail == ("train", step):
            raise RuntimeError("failed in training")
        self.clock.now = self.train_times[step]
        if hasattr(self, "progress_stats"):
            self.progress_stats.update(loss=2 + step / 100, tok_per_s=12345.6 + 1000 * step)
        if self.log_acc:
            self.log("acc", 0.5, prog_bar=True)
        return ((self.weight - batch[0]) ** 2).mean()

    def validation_step(self, batch, batch_idx):
        if self.fail == ("val", batch_idx):
            raise RuntimeError("failed in validation")
        if self.val_times:
            self.clock.now = self.val_times[batch_idx]
        if hasattr(self, "progress_stats"):
            self.progress_stats["val_loss"] = 3.25 + batch_idx

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Probe(pl.Callback):
    """Placed after the bar: what the bar holds to draw after each of its hooks."""

    def __init__(self, bar: LMProgressBar) -> None:
        self.bar = bar
        self.after_batch: list[int] = []  # the training bar's count after each training batch
        self.metrics: list[dict] = []  # the metrics the bar shows, after each training batch
        self.at_validation: list[int] = []  # the training bar's count as each validation starts
        self.at_epoch_end: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after_batch.append(self.bar.train_progress_bar.completed)
        self.metrics.append(dict(self.bar._metric_component._metrics))

    def on_validation_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.at_validation.append(self.bar.train_progress_bar.completed)

    def on_train_epoch_end(self, trainer, pl_module):
        self.at_epoch_end.append(self.bar.train_progress_bar.completed)


def loader(n: int) -> DataLoader:
    return DataLoader(TensorDataset(torch.arange(n, dtype=torch.float32)), batch_size=1)


def console_kwargs() -> dict:
    return {"record": True, "force_terminal": True, "width": 200, "file": io.StringIO()}


def fit(tmp_path, module: Tiny, bar: LMProgressBar, batches: int = 8, val_batches: int = 0, **trainer_args):
    """Fit `module` with `bar`; the Probe, and the last frame drawn (its lines, as the terminal shows them)."""
    probe = Probe(bar)
    trainer = pl.Trainer(accelerator="cpu", devices=1, callbacks=[bar, probe], logger=CSVLogger(tmp_path),
                         enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
                         log_every_n_steps=1, limit_val_batches=val_batches, default_root_dir=tmp_path,
                         **{"max_epochs": 1, **trainer_args})
    trainer.fit(module, loader(batches), loader(max(val_batches, 1)))
    return probe, last_frame(bar)


def last_frame(bar: LMProgressBar) -> list[str]:
    """The rows of the last frame drawn, as the terminal shows them: rich draws each frame over the one
    before, going back to its first row ("\\r", an erase, a line up and an erase per further row)."""
    written = bar._console.file.getvalue()
    last = written.rsplit("\r\x1b[2K", 1)[-1]
    rows = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", last).splitlines()
    return [row.rstrip() for row in rows if row.strip()]


# Training batches 0.25 s apart: rate 1 draws every 4th, rate 2 every 2nd, rate 4 each one.
@pytest.mark.parametrize("rate,counts", [(1, [1, 1, 1, 1, 5, 5, 5, 5]), (None, [1, 1, 3, 3, 5, 5, 7, 7]),
                                         (4, [1, 2, 3, 4, 5, 6, 7, 8])], ids=["1", "default (2)", "4"])
def test_the_bar_draws_at_most_refresh_rate_times_a_second_and_ends_at_the_full_count(tmp_path, clock, rate, counts):
    kwargs = {} if rate is None else {"refresh_rate": rate}
    bar = LMProgressBar(console_kwargs=console_kwargs(), **kwargs)
    module = Tiny(clock, [0.25 * step for step in range(8)])
    probe, frame = fit(tmp_path, module, bar)
    assert probe.after_batch == counts
    # Between draws nothing is recomputed: the stats shown are those of the last batch drawn.
    shown = [m["loss"] for m in probe.metrics]
    assert shown == [f"{2 + (count - 1) / 100:.3f}" for count in counts]
    assert probe.at_epoch_end == [8]
    assert len(frame) == 1 and re.match(r"Epoch 0/0 +\S+ 8/8 ", frame[0]), frame
    assert frame[0].endswith("loss: 2.070 tok_per_s: 19,346"), frame  # the last batch's stats, formatted


def test_a_draw_is_due_exactly_one_interval_after_the_last(tmp_path, clock):
    bar = LMProgressBar(refresh_rate=2, console_kwargs=console_kwargs())
    probe, _ = fit(tmp_path, Tiny(clock, [0.0, 0.1, 0.49, 0.5, 0.99, 1.0]), bar, batches=6)
    assert probe.after_batch == [1, 1, 1, 4, 4, 6]


def test_counts_skipped_in_an_epoch_are_caught_up_at_its_end_and_never_go_back(tmp_path, clock):
    bar = LMProgressBar(refresh_rate=2, console_kwargs=console_kwargs())
    # Epoch 0 ends between draws; epoch 1 ends on a draw that follows skipped batches.
    times = [0.0, 0.1, 0.49, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.3, 1.5]
    probe, frame = fit(tmp_path, Tiny(clock, times), bar, batches=6, max_epochs=2)
    assert probe.after_batch == [1, 1, 1, 4, 4, 4, 0, 0, 3, 3, 3, 6]  # a new epoch's bar starts at 0
    assert probe.at_epoch_end == [6, 6]
    assert len(frame) == 1 and re.match(r"Epoch 1/1 +\S+ 6/6 ", frame[0]), frame


def test_the_training_bar_shows_the_step_that_validates_and_the_stats_show_val_loss(tmp_path, clock):
    bar = LMProgressBar(refresh_rate=2, console_kwargs=console_kwargs())
    module = Tiny(clock, [0.0, 0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.2], val_times=[0.15, 0.15, 0.15])
    probe, frame = fit(tmp_path, module, bar, val_batches=3, val_check_interval=4)
    assert probe.at_validation == [4, 8]  # caught up before each validation, drawn or not
    assert probe.after_batch == [1, 1, 1, 1, 4, 4, 4, 4]
    assert len(frame) == 1 and re.match(r"Epoch 0/0 +\S+ 8/8 ", frame[0]), frame
    assert frame[0].endswith("loss: 2.070 tok_per_s: 19,346 val_loss: 5.250"), frame


@pytest.mark.parametrize("where,shown", [(("train", 6), [r"Epoch 0/0 +\S+ 6/8 "]),
                                         (("val", 2), [r"Epoch 0/0 +\S+ 4/8 ", r"Validation +\S+ 2/3 "])],
                         ids=["in training", "in validation"])
def test_a_failed_run_leaves_the_bar_at_the_batch_it_reached(tmp_path, clock, where, shown):
    bar = LMProgressBar(refresh_rate=2, console_kwargs=console_kwargs())
    # Validation after step 4: its first batch is drawn (0.6), its second is not (0.7).
    module = Tiny(clock, [0.0, 0.1, 0.1, 0.1, 0.7, 0.8, 0.8, 0.8], val_times=[0.6, 0.7, 0.7], fail=where)
    with pytest.raises(RuntimeError, match="failed in"):
        fit(tmp_path, module, bar, val_batches=3, val_check_interval=4)
    frame = last_frame(bar)
    assert len(frame) == len(shown) and all(re.match(p, row) for p, row in zip(shown, frame, strict=True)), frame


def test_the_stats_replace_v_num_and_a_bar_bounded_by_steps_reads_epoch_n(tmp_path, clock):
    bar = LMProgressBar(refresh_rate=2, console_kwargs=console_kwargs())
    module = Tiny(clock, [0.0] * 4, log_acc=True)  # a metric logged with prog_bar=True still shows
    _, frame = fit(tmp_path, module, bar, batches=8, max_epochs=-1, max_steps=4)
    assert len(frame) == 1 and re.match(r"Epoch 0 +\S+ 4/4 ", frame[0]), frame  # not "Epoch 0/-2"
    assert frame[0].endswith("acc: 0.500 loss: 2.030 tok_per_s: 15,346"), frame
    assert "v_num" not in bar._console.export_text()


def test_a_module_without_stats_shows_lightnings_metrics_less_v_num(tmp_path, clock):
    bar = LMProgressBar(refresh_rate=2, console_kwargs=console_kwargs())
    _, frame = fit(tmp_path, Tiny(clock, [0.0] * 4, stats=False, log_acc=True), bar, batches=4)
    assert len(frame) == 1 and frame[0].endswith(" acc: 0.500"), frame
    assert "v_num" not in bar._console.export_text()


def validate(tmp_path, bar: LMProgressBar, clock: Clock, val_times: list[float]) -> list[str]:
    trainer = pl.Trainer(accelerator="cpu", devices=1, callbacks=[bar], logger=False, enable_model_summary=False,
                         limit_val_batches=3, default_root_dir=tmp_path)
    trainer.validate(Tiny(clock, [], val_times=val_times), loader(3), verbose=False)
    return last_frame(bar)


def test_a_validation_outside_fit_shows_its_own_bar(tmp_path, clock):
    """Trainer.validate, without training: the bar is made at the validation's start (each batch drawn)."""
    frame = validate(tmp_path, LMProgressBar(refresh_rate=2, console_kwargs=console_kwargs()), clock, [0.0, 0.5, 1.0])
    assert len(frame) == 1 and re.match(r"Validation +\S+ 3/3 ", frame[0]), frame


def test_a_validation_outside_fit_ends_at_its_full_count(tmp_path, clock):
    frame = validate(tmp_path, LMProgressBar(refresh_rate=2, console_kwargs=console_kwargs()), clock, [0.0, 0.1, 0.2])
    assert len(frame) == 1 and re.match(r"Validation +\S+ 3/3 ", frame[0]), frame


def test_refresh_rate_zero_turns_the_bar_off():
    bar = LMProgressBar(refresh_rate=0)
    assert bar.is_disabled


def test_a_real_run_shows_the_tasks_loss_tokens_per_second_and_val_loss(tiny_text, tmp_path, monkeypatch):
    """train.py's own bar (conf/callbacks/default.yaml) on a tiny language model, with the real clock."""
    from rnnexp.train import build
    from tests.helpers import tiny_run_config

    monkeypatch.setattr(rich, "_console", None)
    cfg = tiny_run_config(tiny_text, tmp_path / "run", "trainer.enable_progress_bar=true", "sample.length=0")
    trainer, task, data, _ = build(cfg)
    bar = next(c for c in trainer.callbacks if isinstance(c, LMProgressBar))
    bar._console_kwargs = console_kwargs()
    trainer.fit(task, data.train, data.valid)
    frame = last_frame(bar)
    assert len(frame) == 1, frame
    assert re.search(r"^Steps +\S+ 4/4 .* loss: \d+\.\d{3} tok_per_s: [\d,]+ val_loss: \d+\.\d{3}$", frame[0]), \
        frame
    assert "v_num" not in bar._console.export_text()
