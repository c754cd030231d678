"""`vitals/gradient_flow/<layer>/first_over_last`, as the Diagnostics callback logs it, is ||dL_T/dh_1|| /
||dL_T/dh_T|| of the norms `probe` finds on the very batch the step trained on, layer by layer; and
the callback's images and histograms, with a logger of its own here (no training)."""

import copy
import math
from types import SimpleNamespace

import pytest
import torch

from rnnexp.diagnostics import COLOUR_BAR, PLOT, Diagnostics, gradient_flow_image, heatmap, probe, row_labels
from rnnexp.model import build_language_model


class Logger:
    """What the callback needs of a Lightning logger: log_metrics (no `experiment`: no images)."""

    def __init__(self) -> None:
        self.logged: list[tuple[int, dict[str, float]]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.logged.append((step, dict(metrics)))


class Writer:
    """TensorBoard's SummaryWriter, as far as the callback uses it: what was added, in order."""

    def __init__(self) -> None:
        self.added: list[tuple] = []

    def add_image(self, tag, image, step) -> None:
        self.added.append(("image", tag, image, step))

    def add_histogram(self, tag, values, step) -> None:
        self.added.append(("histogram", tag, values.clone(), step))


class WriterLogger(Logger):
    def __init__(self) -> None:
        super().__init__()
        self.experiment = Writer()


@pytest.mark.parametrize("cell,layers", [("lstm", 1), ("gru", 2), ("rnn", 1)])
def test_first_over_last_is_the_ratio_of_the_probed_norms_of_the_same_batch(cell, layers):
    torch.manual_seed(0)
    arch = {"name": "deep", "embedding_dim": 5, "num_layers": layers, "dropout": 0.0, "residual": False}
    model = build_language_model(11, {"name": cell, "impl": "fused", "hidden_size": 7}, arch)
    inputs, targets = torch.randint(0, 11, (9, 3)), torch.randint(0, 11, (9, 3))
    h = torch.randn(layers, 3, 7)
    state = (h, torch.randn(layers, 3, 7)) if cell == "lstm" else h
    expected = probe(copy.deepcopy(model), inputs, targets, state, "tanh")
    assert len(expected) == layers

    logger = Logger()
    trainer = SimpleNamespace(global_step=6, loggers=[logger])
    task = SimpleNamespace(model=model, replay_batch=(inputs, targets, state), config={"cell": {"name": cell}})
    callback = Diagnostics(every_n_steps=3, histograms=False)
    callback.on_before_optimizer_step(trainer, task, None)  # step 6 (6 % 3 == 0), before its update

    ((step, logged),) = logger.logged
    assert step == 6
    assert {f"vitals/cells/{layer}/saturated_frac" for layer in expected} <= set(logged)  # tanh cells: saturation
    for layer, found in expected.items():
        norms = found["grad_norms"]
        assert len(norms) == 9 and len(set(norms)) == 9  # one per step of the window, all different
        assert logged[f"vitals/gradient_flow/{layer}/first_over_last"] == pytest.approx(norms[0] / norms[-1], rel=1e-6)
        assert logged[f"vitals/gradient_flow/{layer}/first_over_last_log10"] == pytest.approx(
            math.log10(norms[0] / norms[-1]), rel=1e-6)
        for key, value in found["cells"].items():
            assert logged[f"vitals/cells/{layer}/{key}"] == pytest.approx(value, rel=1e-6)
    assert callback.history == {layer: [found["grad_norms"]] for layer, found in expected.items()}


def test_nothing_is_logged_between_the_due_steps():
    logger = Logger()
    trainer = SimpleNamespace(global_step=4, loggers=[logger])
    task = SimpleNamespace(model=None, replay_batch=None, config={})
    callback = Diagnostics(every_n_steps=3)
    callback.on_before_optimizer_step(trainer, task, None)
    assert logger.logged == []


def test_images_keep_the_last_rows_and_histograms_show_the_recurrent_weights_and_their_gradients():
    torch.manual_seed(0)
    arch = {"name": "deep", "embedding_dim": 5, "num_layers": 1, "dropout": 0.0, "residual": False}
    model = build_language_model(11, {"name": "rnn", "impl": "fused", "hidden_size": 7, "activation": "relu"},
                                 arch)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    model.rnn.weight_ih_l0.grad = None  # no gradient: no histogram of one
    logger, plain = WriterLogger(), Logger()
    trainer = SimpleNamespace(global_step=0, loggers=[logger, plain])
    callback = Diagnostics(every_n_steps=2, max_rows=2)
    batches = [(torch.randint(0, 11, (6, 3)), torch.randint(0, 11, (6, 3)), None) for _ in range(4)]
    task = SimpleNamespace(model=model, replay_batch=None, config={"cell": {"name": "rnn", "activation": "relu"}})
    for step, batch in enumerate(batches * 2):  # steps 0..7: due at 0, 2, 4, 6
        trainer.global_step = step
        task.replay_batch = batch
        callback.on_before_optimizer_step(trainer, task, None)
    added = logger.experiment.added
    histograms = [(tag, step) for kind, tag, _, step in added if kind == "histogram"]
    assert histograms == [(tag, step) for step in (0, 2, 4, 6) for tag in  # the step they are the weights of
                          ("vitals/weights/rnn.weight_hh_l0", "vitals/gradients/rnn.weight_hh_l0")]
    assert torch.equal(added[0][2], model.rnn.weight_hh_l0.detach())
    assert torch.equal(added[1][2], model.rnn.weight_hh_l0.grad)
    images = [(tag, image, step) for kind, tag, image, step in added if kind == "image"]
    assert [(tag, step) for tag, _, step in images] == [("vitals/gradient_flow/rnn.l0", s) for s in (0, 2, 4, 6)]
    norms = [probe(model, *batch, "relu")["rnn.l0"]["grad_norms"] for batch in batches]
    assert torch.equal(plotted(images[0][1], 1, 6), colours([norms[0]]))
    assert torch.equal(plotted(images[1][1], 2, 6), colours([norms[0], norms[2]]))
    # the last max_rows=2 rows (steps 4, 6: the batches of steps 0 and 2 again)
    assert torch.equal(plotted(images[3][1], 2, 6), colours([norms[0], norms[2]]))
    assert callback.history == {"rnn.l0": [norms[0], norms[2]]} and callback.history_steps == {"rnn.l0": [4, 6]}
    assert [step for step, _ in logger.logged] == [0, 2, 4, 6] and logger.logged == plain.logged
    assert set(logger.logged[0][1]) == {"vitals/gradient_flow/rnn.l0/first_over_last", "vitals/cells/rnn.l0/dead_frac",
                                        "vitals/gradient_flow/rnn.l0/first_over_last_log10"}


def plotted(image: torch.Tensor, rows: int, window: int) -> torch.Tensor:
    """The colour at the centre of each (row, step) cell of the figure's heatmap: (3, rows, window)."""
    left, top, right, bottom = PLOT
    assert image.shape == (3, 215, 440) and image.dtype == torch.uint8
    ys = [int(top + (r + 0.5) * (bottom - top) / rows) for r in range(rows)]
    xs = [int(left + (t + 0.5) * (right - left) / window) for t in range(window)]
    return image[:, ys][:, :, xs]


def colours(rows: list[list[float]]) -> torch.Tensor:
    return (heatmap(rows, scale=1) * 255).round().byte()


def test_the_figure_labels_at_most_six_rows_with_their_steps_evenly_and_its_colour_bar_runs_from_yellow_to_blue():
    assert row_labels([0, 2]) == [(0, "0"), (1, "2")]
    assert row_labels(list(range(0, 1500, 125))) == [(0, "0"), (2, "250"), (4, "500"), (6, "750"), (8, "1000"),
                                                      (10, "1250")]
    image = gradient_flow_image([0], [[1e-20, 1.0]], "rnn.l0")
    bar_left, bar_top, bar_right, bar_bottom = COLOUR_BAR
    x = (bar_left + bar_right) // 2
    assert image[:, bar_top, x].tolist() == colours([[1.0, 1.0]])[:, 0, 0].tolist()  # 0: yellow at the top
    assert image[:, bar_bottom - 1, x].tolist() == colours([[1e-20, 1.0]])[:, 0, 0].tolist()  # -20 at the bottom


def test_no_histograms_when_turned_off_and_no_replay_without_loggers():
    model = build_language_model(11, {"name": "gru", "impl": "fused", "hidden_size": 7},
                                 {"name": "arch1", "embedding_dim": 5, "num_layers": 1, "dropout": 0.0,
                                  "combine": "sum"})
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    logger = WriterLogger()
    task = SimpleNamespace(model=model, replay_batch=(torch.zeros(4, 2, dtype=torch.long),) * 2 + (None,),
                           config={"cell": {"name": "gru"}})
    callback = Diagnostics(every_n_steps=1, histograms=False)
    callback.on_before_optimizer_step(SimpleNamespace(global_step=0, loggers=[]), task, None)
    assert callback.history == {}  # no loggers: no replay
    callback.on_before_optimizer_step(SimpleNamespace(global_step=0, loggers=[logger]), task, None)
    assert [kind for kind, *_ in logger.experiment.added] == ["image"]  # the replay's figure, no histogram


VIRIDIS = [[0.27, 0.00, 0.33], [0.23, 0.32, 0.55], [0.13, 0.57, 0.55], [0.37, 0.79, 0.38], [0.99, 0.91, 0.14]]


def test_heatmap_colours_each_ratio_to_the_last_step_on_the_fixed_viridis_scale():
    # Ratios to the last norm of 1e-20 (or less), 1e-15, 1e-10, 1e-5, 1 (or more): the scale's five anchors.
    image = heatmap([[2e-30, 2e-20, 2e-15, 2e-10, 2e-5, 8.0, 2.0]], scale=1)
    assert image.shape == (3, 1, 7)
    expected = [VIRIDIS[0], VIRIDIS[0], VIRIDIS[1], VIRIDIS[2], VIRIDIS[3], VIRIDIS[4], VIRIDIS[4]]
    assert torch.allclose(image[:, 0].T, torch.tensor(expected), atol=1e-6)
    halfway = heatmap([[10 ** -2.5, 1.0]], scale=1)[:, 0, 0]  # between the last two anchors
    assert torch.allclose(halfway, (torch.tensor(VIRIDIS[3]) + torch.tensor(VIRIDIS[4])) / 2, atol=1e-6)
    assert heatmap([[1.0, 0.0]], scale=1)[:, 0, 1].tolist() == pytest.approx(VIRIDIS[0])  # a last norm of 0
    default = heatmap([[1e-20, 1.0], [1.0, 1.0]])  # 20 orders of magnitude, 4 x 4 pixels a value
    assert default.shape == (3, 8, 8) and torch.allclose(default[:, 3, 3], torch.tensor(VIRIDIS[0]))
    assert torch.allclose(default[:, 4, 0], torch.tensor(VIRIDIS[4]))
    assert torch.equal(default[:, 0, 0], default[:, 3, 3])
    assert torch.allclose(heatmap([[1e-5, 1.0]], orders=10, scale=1)[:, 0, 0], torch.tensor(VIRIDIS[2]))


def test_dead_and_saturated_fractions_count_units_not_values():
    from rnnexp.diagnostics import dead_fraction, saturated_fraction

    h = torch.zeros(3, 2, 5)  # (T, B, H): units 0, 1 and 3 never fire; unit 2 fires once, unit 4 always
    h[1, 0, 2] = 0.3
    h[:, :, 4] = 0.7
    assert dead_fraction(h) == pytest.approx(3 / 5)
    assert saturated_fraction(torch.tensor([0.95, -0.95, 0.951, -0.96, 0.0])) == pytest.approx(2 / 5)  # > 0.95 only


@pytest.mark.parametrize("fused", [torch.nn.RNN(5, 7, num_layers=2, nonlinearity="relu"),
                                   torch.nn.GRU(5, 7, bidirectional=True), torch.nn.LSTM(5, 7)],
                         ids=["relu-rnn", "bidirectional-gru", "lstm"])
def test_the_replay_copy_steps_torchs_fused_layers_through_the_same_equations(fused):
    from rnnexp.cells import ScratchRNN
    from rnnexp.diagnostics import scratch_copy

    torch.manual_seed(0)
    model = torch.nn.Module()
    model.encoder = torch.nn.Module()
    model.encoder.rnn = fused
    replica = scratch_copy(model)
    assert isinstance(replica.encoder.rnn, ScratchRNN) and model.encoder.rnn is fused  # the model is left as it was
    x = torch.randn(6, 3, 5)
    assert torch.allclose(replica.encoder.rnn(x)[0], fused(x)[0], atol=1e-5)


def test_the_callbacks_defaults_and_when_it_is_due():
    assert (Diagnostics().every_n_steps, Diagnostics().histograms, Diagnostics().max_rows) == (125, True, 64)
    model = build_language_model(11, {"name": "gru", "impl": "fused", "hidden_size": 7},
                                 {"name": "arch1", "embedding_dim": 5, "num_layers": 1, "dropout": 0.0,
                                  "combine": "sum"})
    batch = (torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, 2, dtype=torch.long), None)
    for every, due in ((0, []), (1, [0, 1, 2]), (2, [0, 2])):
        logger = Logger()
        callback = Diagnostics(every_n_steps=every)
        for step in range(3):
            trainer = SimpleNamespace(global_step=step, loggers=[logger])
            callback.on_before_optimizer_step(trainer, SimpleNamespace(model=model, replay_batch=batch,
                                                                       config={"cell": {"name": "gru"}}), None)
        assert [step for step, _ in logger.logged] == due, every
    no_replay = SimpleNamespace(model=model, config={"cell": {"name": "gru"}})  # a task that keeps no batch
    callback.on_before_optimizer_step(SimpleNamespace(global_step=0, loggers=[logger]), no_replay, None)
    assert [step for step, _ in logger.logged] == [0, 2]


def test_gradient_flow_of_three_gru_layers_from_a_carried_state_equals_autograd():
    """Each layer starts from its own slice of the carried state; the norms of every layer come back."""
    torch.manual_seed(0)
    arch = {"name": "deep", "embedding_dim": 5, "num_layers": 3, "dropout": 0.0, "residual": False}
    model = build_language_model(11, {"name": "gru", "impl": "fused", "hidden_size": 7}, arch)
    inputs, targets = torch.randint(0, 11, (5, 2)), torch.randint(0, 11, (5, 2))
    h0 = torch.randn(3, 2, 7)
    found = probe(model, inputs, targets, h0, "tanh")
    x, hidden = model.embedding(inputs), []
    for k in range(3):
        step = torch.nn.GRUCell(5 if k == 0 else 7, 7)
        step.load_state_dict({name: getattr(model.rnn, f"{name}_l{k}") for name in
                              ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
        h, layer = h0[k], []
        for x_t in x.unbind(0):
            h = step(x_t, h)
            layer.append(h)
        hidden += layer
        x = torch.stack(layer)
    loss = torch.nn.functional.cross_entropy(model.head(x[-1]), targets[-1])
    expected = [float(torch.linalg.vector_norm(g)) for g in torch.autograd.grad(loss, hidden)]
    assert list(found) == ["rnn.l0", "rnn.l1", "rnn.l2"]
    assert [n for layer in found.values() for n in layer["grad_norms"]] == pytest.approx(expected, rel=1e-5)
