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

import numpy as np
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


def viridis(x: np.ndarray) -> np.ndarray:
    """Colours (..., 3) of values in [0, 1], interpolated between VIRIDIS_ANCHORS (in NumPy: these small
    arrays cost torch more in thread start-ups than in arithmetic)."""
    anchors = VIRIDIS_ANCHORS.numpy()
    stops = np.linspace(0, 1, len(anchors))
    return np.stack([np.interp(np.clip(x, 0, 1), stops, anchors[:, c]) for c in range(3)], axis=-1)


def heatmap(rows: list[list[float]], orders: int = 20, scale: int = 4) -> Tensor:
    """An image (3, H, W) of gradient norms, one row each, top to bottom: each norm relative to the
    row's last one, log10 of it coloured on one fixed scale for every run, from dark blue
    (10^-orders or less) through green to yellow (1). Each value is a scale x scale block."""
    values = np.array([[math.log10(max(v / max(row[-1], 1e-38), 1e-38)) for v in row] for row in rows])
    image = torch.from_numpy(viridis((values + orders) / orders)).float().permute(2, 0, 1)  # (3, rows, T)
    return image.repeat_interleave(scale, 1).repeat_interleave(scale, 2)


# The gradient-flow figure: 440 x 215 pixels, about what a TensorBoard Time Series card shows (in a
# 1600-pixel window), so that it is shown at its own size; the heatmap fills PLOT (left, top, right,
# bottom), the colour bar COLOUR_BAR.
FIGURE_SIZE, PLOT, COLOUR_BAR = (440, 215), (62, 22, 352, 168), (366, 22, 378, 168)


def row_labels(steps: list[int]) -> list[tuple[int, str]]:
    """(row, label) of the rows the figure labels with their training step: at most 6, evenly spaced
    (11-pixel text in a plot 146 pixels high)."""
    return [(i, str(steps[i])) for i in range(0, len(steps), -(-len(steps) // 6))]


def gradient_flow_image(steps: list[int], rows: list[list[float]], layer: str, orders: int = 20) -> Tensor:
    """The gradient-flow figure one reads at 100%, as an image (3, 215, 440) of uint8: `heatmap`'s
    colours (one row per replay, labelled with its training step; one column per step t of the window),
    axes, and a colour bar in log10 of ||dL_T/dh_t|| / ||dL_T/dh_T||. Drawn with Pillow in a few
    milliseconds (matplotlib took about 110 ms a figure here, most of a short run's diagnostics)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=11)
    figure = Image.new("RGB", FIGURE_SIZE, "white")
    draw = ImageDraw.Draw(figure)

    def pixels(colours: np.ndarray) -> Image.Image:  # (H, W, 3) in [0, 1]
        return Image.fromarray(np.round(colours * 255).astype(np.uint8))

    def vertical(text: str, centre: tuple[int, int]) -> None:  # an axis title, read bottom to top
        width = int(draw.textlength(text, font=font))
        label = Image.new("RGB", (width, 13), "white")
        ImageDraw.Draw(label).text((0, 0), text, fill="black", font=font)
        label = label.rotate(90, expand=True)
        figure.paste(label, (centre[0] - label.width // 2, centre[1] - label.height // 2))

    left, top, right, bottom = PLOT
    window, height = len(rows[0]), (bottom - top) / len(rows)
    figure.paste(pixels(heatmap(rows, orders, scale=1).permute(1, 2, 0).numpy()).resize(
        (right - left, bottom - top), Image.NEAREST), (left, top))
    draw.rectangle((left - 1, top - 1, right, bottom), outline="black")
    draw.text(((left + right) / 2, 2), f"gradient flow, {layer}", fill="black", font=font, anchor="mt")
    for row, label in row_labels(steps):
        y = top + (row + 0.5) * height
        draw.line((left - 4, y, left - 1, y), fill="black")
        draw.text((left - 6, y), label, fill="black", font=font, anchor="rm")
    for t in sorted({1, (window + 1) // 2, window}):  # the first, middle and last step of the window
        x = left + (t - 0.5) * (right - left) / window
        draw.line((x, bottom, x, bottom + 3), fill="black")
        draw.text((x, bottom + 5), str(t), fill="black", font=font, anchor="mt")
    draw.text(((left + right) / 2, bottom + 20), "t, step of the window (L_T: the last's loss)", fill="black",
              font=font, anchor="mt")
    vertical("training step", (10, (top + bottom) // 2))
    bar_left, bar_top, bar_right, bar_bottom = COLOUR_BAR
    levels = np.repeat(np.linspace(1, 0, bar_bottom - bar_top)[:, None], bar_right - bar_left, axis=1)
    figure.paste(pixels(viridis(levels)), (bar_left, bar_top))
    draw.rectangle((bar_left - 1, bar_top - 1, bar_right, bar_bottom), outline="black")
    for value in range(0, -orders - 1, -5):
        y = bar_top + (-value / orders) * (bar_bottom - bar_top - 1)
        draw.line((bar_right, y, bar_right + 3, y), fill="black")
        draw.text((bar_right + 5, y), str(value), fill="black", font=font, anchor="lm")
    vertical("log10 |dL/dh_t| / |dL/dh_T|", (FIGURE_SIZE[0] - 14, (bar_top + bar_bottom) // 2))
    return torch.from_numpy(np.asarray(figure).copy()).permute(2, 0, 1)


class Diagnostics(pl.Callback):
    """Logs what the module docstring lists, every `every_n_steps` steps (0: never), to TensorBoard."""

    def __init__(self, every_n_steps: int = 125, histograms: bool = True, max_rows: int = 64) -> None:
        self.every_n_steps, self.histograms, self.max_rows = every_n_steps, histograms, max_rows
        self.history: dict[str, list[list[float]]] = {}  # per layer, the gradient norms of the last replays
        self.history_steps: dict[str, list[int]] = {}  # and the training steps they were replayed at

    def _writers(self, trainer: pl.Trainer) -> list:
        return [lg.experiment for lg in trainer.loggers if hasattr(getattr(lg, "experiment", None), "add_image")]

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
                writer.add_image(f"vitals/gradient_flow/{layer}", gradient_flow_image(steps, rows, layer), step)
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)
