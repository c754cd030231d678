"""Lightning callbacks, as the `callbacks` config group uses them."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint, RichProgressBar


class Checkpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, with last.ckpt always holding the final state: Lightning's own
    skips it at the end of training when an earlier validation already wrote one, so a run stopped
    by max_steps or max_time between validations would leave a stale last.ckpt."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)


class LMProgressBar(RichProgressBar):
    """Shows the host-side numbers the task refreshes at its logging steps (`progress_stats`:
    mean train loss, tokens per second, last validation loss) instead of tensors logged with
    `prog_bar=True`, which the bar would copy to the host at every refresh."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        stats = getattr(pl_module, "progress_stats", {})
        items.update({k: f"{v:,.0f}" if k.startswith("tok") else f"{v:.3f}" for k, v in stats.items()})
        return items

    def _get_train_description(self, current_epoch: int) -> str:
        # Lightning's reads "Epoch 0/-2" when training is bounded by steps or time (max_epochs=-1).
        if self.trainer.max_epochs is None or self.trainer.max_epochs < 0:
            return f"Epoch {current_epoch}"
        return super()._get_train_description(current_epoch)
