"""See inside the network: gradient flow through time, saturated units, gates, histograms.

Every `every_n_steps` training steps the window of that step is replayed (after its backward, before
its update), from the state it started from, through the cell equations of rnnexp/cells.py with the
model's current weights (a copy of the model in which torch's fused layers, which keep h_t inside
their kernels, are replaced by scratch layers with the same weights), in full precision and without
dropout. On that replay:

- gradient flow: ||dL_T / dh_t|| for every step t of the window and every layer, where L_T is the
  loss of the window's last prediction: how much of its error reaches back to step t. Logged as a
  figure per layer (rows: replays, labelled with their training step, oldest first; columns: t =
  1..T; colour: log10 of ||dL_T/dh_t|| / ||dL_T/dh_T|| on one scale for every run, dark blue at
  1e-20 or less, yellow at 1, with its colour bar) and as `vitals/gradient_flow/<layer>/first_over_last` =
  ||dL_T/dh_1|| / ||dL_T/dh_T|| (far below 1: vanishing; above 1: exploding), and its log10
  `vitals/gradient_flow/<layer>/first_over_last_log10`, which a linear chart can show.
- `vitals/cells/<layer>/saturated_frac`: share of hidden units with |h| > 0.95 (tanh cells), or
  `vitals/cells/<layer>/dead_frac`: share of ReLU units that are 0 at every step of every stream.
- `vitals/cells/<layer>/<gate>`: mean gate openings (LSTM input, forget, output; GRU reset, update).
- histograms of the recurrent matrices W_hh and of their (pre-clip) gradients.

The replay is separate from training: it changes no weight, gradient, hidden state or random
number of the run. It costs about one scratch forward and backward pass per replayed step.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnexp.cells import CELLS, ScratchRNN

FUSED = {kind.fused[0]: name for name, kind in CELLS.items() if kind.fused}  # nn.LSTM: "lstm", ...
SATURATED = 0.95


def scratch_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` whose fused recurrent layers are ScratchRNNs holding the same weights."""
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        cell = FUSED.get(type(module))
        if cell is None:
            continue
        scratch = ScratchRNN(cell, module.input_size, module.hidden_size, module.num_layers,
                             getattr(module, "nonlinearity", "tanh"), bidirectional=module.bidirectional)
        scratch.load_state_dict(module.state_dict())
        parent_name, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attribute, scratch.to(
            next(module.parameters()).device))
    return model


def saturated_fraction(h: Tensor) -> float:
    """Share of hidden values with |h| > 0.95: units stuck near tanh's flat ends pass little gradient."""
    return float((h.abs() > SATURATED).float().mean())


def dead_fraction(h: Tensor) -> float:
    """Share of units (last dimension) that are 0 at every step and in every stream of h (T, B, H):
    ReLU units that never fire, and so never learn."""
    return float((h == 0).flatten(0, -2).all(0).float().mean())


def probe(model: nn.Module, inputs: Tensor, targets: Tensor, state: Any, activation: str) -> dict[str, dict]:
    """Replay one batch as described in the module docstring: per layer, the gradient norms
    ||dL_T/dh_t|| (t = 1..T), saturation and gate means. {} for a model without recurrent layers
    (Arch 2 steps through single cells). The run's random numbers are left as they were."""
    cuda = [inputs.device.index or 0] if inputs.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # building the scratch layers draws initial weights
        return _probe(model, inputs, targets, state, activation)


def _probe(model: nn.Module, inputs: Tensor, targets: Tensor, state: Any, activation: str) -> dict[str, dict]:
    replica = scratch_copy(model).float().eval()
    layers = [m for m in replica.modules() if isinstance(m, ScratchRNN)]
    if not layers:
        return {}
    for layer in layers:
        layer.probe = {}
    device_type = inputs.device.type
    with torch.enable_grad(), torch.autocast(device_type, enabled=False):
        state = None if state is None else (tuple(s.float() for s in state) if isinstance(state, tuple)
                                            else state.float())
        logits, _ = replica(inputs, state)
        last_loss = F.cross_entropy(logits[-1].float(), targets[-1])
        records = {f"{path}.{name}": record
                   for path, layer in replica.named_modules() if isinstance(layer, ScratchRNN)
                   for name, record in layer.probe.items()}
        hidden = [h for record in records.values() for h in record["h"]]
        grads = torch.autograd.grad(last_loss, hidden, allow_unused=True)
    result, k = {}, 0
    for name, record in records.items():
        steps = len(record["h"])
        norms = [0.0 if g is None else float(torch.linalg.vector_norm(g)) for g in grads[k:k + steps]]
        k += steps
        h = torch.stack([x.detach() for x in record["h"]])
        cells = {"dead_frac": dead_fraction(h)} if activation == "relu" else {"saturated_frac": saturated_fraction(h)}
        for gate in (record["gates"] or [{}])[0]:
            cells[gate] = float(torch.stack([g[gate].detach() for g in record["gates"]]).mean())
        result[name] = {"grad_norms": norms, "cells": cells}
    return result


VIRIDIS_ANCHORS = torch.tensor([[0.27, 0.00, 0.33], [0.23, 0.32, 0.55], [0.13, 0.57, 0.55], [0.37, 0.79, 0.38],
                                [0.99, 0.91, 0.14]])  # viridis at 0, 1/4, 1/2, 3/4, 1


def heatmap(rows: list[list[float]], orders: int = 20, scale: int = 4) -> Tensor:
    """An image (3, H, W) of gradient norms, one row each, top to bottom: each norm relative to the
    row's last one, log10 of it coloured on one fixed scale for every run, from dark blue
    (10^-orders or less) through green to yellow (1). Each value is a scale x scale block."""
    values = torch.tensor([[math.log10(max(v / max(row[-1], 1e-38), 1e-38)) for v in row] for row in rows])
    x = ((values + orders) / orders).clamp(0, 1)
    anchors = VIRIDIS_ANCHORS
    position = x * (len(anchors) - 1)
    lower = position.floor().long().clamp(max=len(anchors) - 2)
    weight = (position - lower)[..., None]
    colours = anchors[lower] * (1 - weight) + anchors[lower + 1] * weight  # (rows, T, 3)
    image = colours.permute(2, 0, 1)
    return image.repeat_interleave(scale, 1).repeat_interleave(scale, 2)


def gradient_flow_figure(steps: list[int], rows: list[list[float]], layer: str, orders: int = 20) -> Any:
    """The gradient-flow image as a figure one reads at 100%: `heatmap`'s colours (one row per replay,
    labelled with its training step; one column per step t of the window), axes, and a colour bar in
    log10 of ||dL_T/dh_t|| / ||dL_T/dh_T||. 440 x 215 pixels, about what a TensorBoard Time Series card
    shows (in a 1600-pixel window), so that it is shown at its own size: a larger image is shrunk to the
    card, and its text with it."""
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LinearSegmentedColormap, Normalize

    window = len(rows[0])
    with plt.rc_context({"font.size": 9}):  # 12.5 pixels at 100 dpi
        figure, axes = plt.subplots(figsize=(4.4, 2.15), dpi=100)
        axes.imshow(heatmap(rows, orders, scale=1).permute(1, 2, 0).numpy(), aspect="auto", interpolation="nearest",
                    extent=(0.5, window + 0.5, len(rows) - 0.5, -0.5))
        shown = range(0, len(rows), -(-len(rows) // 6))  # at most 6 labels: 12.5-pixel text in 150 pixels
        axes.set_yticks(list(shown), [str(steps[i]) for i in shown])
        axes.set_xlabel("t, step of the window (L_T: the last's loss)")
        axes.set_ylabel("training step")
        axes.set_title(f"gradient flow, {layer}")
        scale = LinearSegmentedColormap.from_list("rnnexp", VIRIDIS_ANCHORS.tolist())
        bar = figure.colorbar(plt.cm.ScalarMappable(Normalize(-orders, 0), scale), ax=axes)
        bar.set_label("log10 |dL/dh_t| / |dL/dh_T|")
        figure.tight_layout()
    return figure


class Diagnostics(pl.Callback):
    """Logs what the module docstring lists, every `every_n_steps` steps (0: never), to TensorBoard."""

    def __init__(self, every_n_steps: int = 125, histograms: bool = True, max_rows: int = 64) -> None:
        self.every_n_steps, self.histograms, self.max_rows = every_n_steps, histograms, max_rows
        self.history: dict[str, list[list[float]]] = {}  # per layer, the gradient norms of the last replays
        self.history_steps: dict[str, list[int]] = {}  # and the training steps they were replayed at

    def _writers(self, trainer: pl.Trainer) -> list:
        return [lg.experiment for lg in trainer.loggers if hasattr(getattr(lg, "experiment", None), "add_figure")]

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        """At every `every_n_steps`-th step, after its backward and before its update (one of several
        steps of a Lightning batch, config.steps_per_batch): its histograms, and its window replayed."""
        if self.every_n_steps <= 0 or trainer.global_step % self.every_n_steps or not trainer.loggers:
            return
        step = trainer.global_step  # the step being taken, as the training metrics number it
        if self.histograms:
            for writer in self._writers(trainer):
                for name, parameter in pl_module.model.named_parameters():
                    if "weight_hh" in name:
                        writer.add_histogram(f"vitals/weights/{name}", parameter.detach().float(), step)
                        if parameter.grad is not None:
                            writer.add_histogram(f"vitals/gradients/{name}", parameter.grad.float(), step)
        replay = getattr(pl_module, "replay_batch", None)
        if replay is not None:
            self._replay(trainer, pl_module, replay, step)

    def _replay(self, trainer: pl.Trainer, pl_module: pl.LightningModule, replay: Any, step: int) -> None:
        inputs, targets, state = replay
        report = probe(pl_module.model, inputs, targets, state, pl_module.config["cell"].get("activation", "tanh"))
        scalars: dict[str, float] = {}
        for layer, found in report.items():
            norms = found["grad_norms"]
            ratio = norms[0] / max(norms[-1], 1e-30)
            scalars[f"vitals/gradient_flow/{layer}/first_over_last"] = ratio
            # The same on a scale a linear chart can show: 1e-19 and 1e-4 are -19 and -4, not both 0.
            scalars[f"vitals/gradient_flow/{layer}/first_over_last_log10"] = math.log10(max(ratio, 1e-38))
            scalars.update({f"vitals/cells/{layer}/{key}": value for key, value in found["cells"].items()})
            rows, steps = self.history.setdefault(layer, []), self.history_steps.setdefault(layer, [])
            rows.append(norms)
            steps.append(step)
            del rows[: -self.max_rows], steps[: -self.max_rows]
            for writer in self._writers(trainer):
                writer.add_figure(f"vitals/gradient_flow/{layer}", gradient_flow_figure(steps, rows, layer), step)
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)
