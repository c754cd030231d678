"""Dashboards that explain: gradient flow through time, saturation, gates, clipping, samples, layout."""

import re

import pytest
import torch
import torch.nn.functional as F

from rnnexp.checkpoint import load_checkpoint
from rnnexp.diagnostics import dead_fraction, heatmap, probe, saturated_fraction
from rnnexp.model import build_language_model
from rnnexp.train import train
from tests.helpers import read_scalars, tiny_run_config

CELL_TYPES = {"rnn": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}


def autograd_flow(model, inputs, targets, state, cell):
    """||dL_T/dh_t|| by hand: torch's own single-step cell with the model's weights, unrolled here."""
    rnn = model.rnn
    step = CELL_TYPES[cell](rnn.weight_ih_l0.shape[1], rnn.weight_hh_l0.shape[1])
    step.load_state_dict({"weight_ih": rnn.weight_ih_l0, "weight_hh": rnn.weight_hh_l0,
                          "bias_ih": rnn.bias_ih_l0, "bias_hh": rnn.bias_hh_l0})
    h = state
    hidden = []
    for x in model.embedding(inputs).unbind(0):
        h = step(x, h)
        hidden.append(h[0] if cell == "lstm" else h)
    loss = F.cross_entropy(model.head(hidden[-1]), targets[-1])
    return [float(torch.linalg.vector_norm(g)) for g in torch.autograd.grad(loss, hidden)]


@pytest.mark.parametrize("impl", ["scratch", "fused"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_gradient_flow_equals_dl_dh_from_autograd(cell, impl):
    torch.manual_seed(0)
    model = build_language_model(11, {"name": cell, "impl": impl, "hidden_size": 7},
                                 {"name": "arch1", "embedding_dim": 5, "dropout": 0.0})
    inputs, targets = torch.randint(0, 11, (9, 3)), torch.randint(0, 11, (9, 3))
    h0 = torch.randn(3, 7)
    state = (h0, torch.randn(3, 7)) if cell == "lstm" else h0
    layer_state = (state[0][None], state[1][None]) if cell == "lstm" else state[None]
    found = probe(model, inputs, targets, layer_state, "tanh")
    assert list(found) == ["rnn.l0"]
    expected = autograd_flow(model, inputs, targets, state, cell)
    assert found["rnn.l0"]["grad_norms"] == pytest.approx(expected, rel=1e-5)
    assert expected[0] < expected[-1]  # and a tiny untrained net does lose gradient going back


@pytest.mark.parametrize("residual", [False, True])
def test_gradient_flow_of_a_deep_fused_stack_equals_autograd_layer_by_layer(residual):
    torch.manual_seed(0)
    arch = {"name": "deep", "embedding_dim": 5, "num_layers": 2, "dropout": 0.0, "residual": residual}
    model = build_language_model(11, {"name": "lstm", "impl": "fused", "hidden_size": 7}, arch)
    inputs, targets = torch.randint(0, 11, (6, 2)), torch.randint(0, 11, (6, 2))
    found = probe(model, inputs, targets, None, "tanh")
    layers = [model.rnn.layers[0], model.rnn.layers[1]] if residual else [model.rnn, model.rnn]
    x, per_layer = model.embedding(inputs), []
    for k, layer in enumerate(layers):
        suffix = "l0" if residual else f"l{k}"
        step = torch.nn.LSTMCell(layer.input_size if (residual or k == 0) else 7, 7)
        step.load_state_dict({name: getattr(layer, f"{name}_{suffix}") for name in
                              ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
        h, c, hidden = torch.zeros(2, 7), torch.zeros(2, 7), []
        for x_t in x.unbind(0):
            h, c = step(x_t, (h, c))
            hidden.append(h)
        out = torch.stack(hidden)
        x = out + x if residual and k else out
        per_layer.append(hidden)
    loss = F.cross_entropy(model.head(x[-1]), targets[-1])
    grads = torch.autograd.grad(loss, [h for hidden in per_layer for h in hidden])
    expected = [float(torch.linalg.vector_norm(g)) for g in grads]
    names = ["rnn.layers.0.l0", "rnn.layers.1.l0"] if residual else ["rnn.l0", "rnn.l1"]
    assert list(found) == names
    assert found[names[0]]["grad_norms"] + found[names[1]]["grad_norms"] == pytest.approx(expected, rel=1e-5)


def test_gradient_flow_of_a_deep_fused_stack_equals_its_scratch_twin():
    torch.manual_seed(0)
    arch = {"name": "deep", "embedding_dim": 5, "num_layers": 2, "dropout": 0.0, "residual": False}
    fused = build_language_model(11, {"name": "gru", "impl": "fused", "hidden_size": 7}, arch)
    scratch = build_language_model(11, {"name": "gru", "impl": "scratch", "hidden_size": 7}, arch)
    scratch.load_state_dict(fused.state_dict())
    inputs, targets = torch.randint(0, 11, (6, 2)), torch.randint(0, 11, (6, 2))
    a, b = probe(fused, inputs, targets, None, "tanh"), probe(scratch, inputs, targets, None, "tanh")
    assert list(a) == ["rnn.l0", "rnn.l1"]
    for layer in a:
        assert a[layer]["grad_norms"] == pytest.approx(b[layer]["grad_norms"], rel=1e-5)
        assert a[layer]["cells"] == pytest.approx(b[layer]["cells"], rel=1e-5)
        assert 0 < a[layer]["cells"]["update_gate"] < 1 and 0 < a[layer]["cells"]["reset_gate"] < 1


def test_saturation_and_dead_units_on_constructed_states():
    h = torch.tensor([0.99, -0.96, 0.5, 0.0, -0.2, 0.951, 0.3, -0.99])
    assert saturated_fraction(h) == pytest.approx(4 / 8)
    relu = torch.zeros(4, 3, 5)  # (T, B, H): units 0 and 3 never fire, unit 1 fires once
    relu[:, :, 2] = 1.0
    relu[2, 1, 1] = 0.5
    relu[:, :, 4] = 0.1
    assert dead_fraction(relu) == pytest.approx(2 / 5)


def test_clipped_share_counts_the_steps_that_clipping_shrank(tiny_text, tmp_path):
    from rnnexp.tasks.language_model import LanguageModelTask

    config = resolve_config(tiny_text, tmp_path, "clip=1.0")
    task = LanguageModelTask(config, list("abc"))
    # pre-clip norms of five steps; torch scales by clip / (norm + 1e-6) where that is below 1
    task._window_norms = [(step, torch.tensor(norm)) for step, norm in enumerate((0.5, 2.0, 3.0, 0.9, 0.99))]
    assert float(task.clipped_fraction()) == pytest.approx(2 / 5)
    task._window_norms.append((5, torch.tensor(1.0)))  # 1 / (1 + 1e-6) < 1: shrunk by a hair, clipped
    assert float(task.clipped_fraction()) == pytest.approx(3 / 6)
    task.config = {**task.config, "clip": 0}  # no clipping: no step clipped
    assert float(task.clipped_fraction()) == 0.0


def test_clipping_is_logged_before_and_after(tiny_text, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, "clip=1e-6"))
    scalars = read_scalars(run_dir)
    assert [v for _, v in scalars["vitals/grad_norm/clipped_frac"]] == [1.0] * 4
    # Measured after torch's clip_grad_norm_, which scales by clip / (norm + 1e-6): a hair under clip.
    after_clip = [v for _, v in scalars["vitals/grad_norm/total_after_clip"]]
    assert all(v == pytest.approx(1e-6, rel=1e-4) and v <= 1e-6 for v in after_clip)
    assert all(v > 1e-6 for _, v in scalars["vitals/grad_norm/total"])


def test_diagnostics_do_not_change_training(tiny_text, tmp_path):
    runs = {}
    for every in (0, 1):
        run_dir = tmp_path / f"every{every}"
        train(tiny_run_config(tiny_text, run_dir, f"diagnostics.every_n_steps={every}", "trainer.max_steps=6",
                              "arch.dropout=0.3", "trainer.precision=32-true"))
        runs[every] = (read_scalars(run_dir), load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"])
    flow = "vitals/gradient_flow/rnn.l0/first_over_last"
    assert flow in runs[1][0] and flow not in runs[0][0]
    for tag in ("train/loss", "val/loss", "vitals/grad_norm/total"):
        assert runs[0][0][tag] == runs[1][0][tag], tag
    for name, tensor in runs[0][1].items():
        assert torch.equal(runs[1][1][name], tensor), name


def test_event_files_hold_the_layout_the_samples_the_images_and_histograms(tiny_text, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2

    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, "cell=rnn", "diagnostics.every_n_steps=2"))
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "histograms": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert {"samples/final/text_summary", "samples/validation/text_summary"} <= set(tags["tensors"])
    layout = layout_pb2.Layout.FromString(events.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    charts = {chart.title: list(chart.multiline.tag) for category in layout.category for chart in category.chart}
    assert charts["loss: training vs validation (nats per token)"] == ["train/loss", "val/loss"]
    per_layer = {title.split(": ")[1]: tags for title, tags in charts.items() if title.startswith("gradient norm per")}
    assert per_layer == {"embedding": ["vitals/grad_norm/embedding\\.weight$"],
                         "rnn layer 0": [f"vitals/grad_norm/rnn\\.{p}_l0$" for p in
                                         ("weight_ih", "weight_hh", "bias_ih", "bias_hh")],
                         "head": ["vitals/grad_norm/head\\.weight$", "vitals/grad_norm/head\\.bias$"]}
    assert [e.step for e in events.Images("vitals/gradient_flow/rnn.l0")] == [0, 2]
    assert {"vitals/weights/rnn.weight_hh_l0", "vitals/gradients/rnn.weight_hh_l0"} <= set(tags["histograms"])
    scalars = read_scalars(run_dir)
    assert [s for s, _ in scalars["vitals/gradient_flow/rnn.l0/first_over_last"]] == [0, 2]
    assert 0 <= scalars["vitals/cells/rnn.l0/saturated_frac"][0][1] <= 1


def test_validation_samples_are_the_same_for_the_same_seed(tiny_text, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    texts = []
    for name in ("a", "b"):
        train(tiny_run_config(tiny_text, tmp_path / name, "sample.val_length=30"))
        events = EventAccumulator(str(tmp_path / name), size_guidance={"tensors": 0})
        events.Reload()
        texts.append([e.tensor_proto.string_val[0] for e in events.Tensors("samples/validation/text_summary")])
        texts[-1].append((tmp_path / name / "sample.txt").read_text())
    assert texts[0] == texts[1] and len(texts[0]) == 3


def test_segmentation_shows_its_predicted_spaces(tiny_text, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, "data=segmentation", "data.corpus=text_file", f"data.path={tiny_text}",
                          "arch=bidirectional"))
    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    events.Reload()
    text = events.Tensors("samples/segmentation/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "predicted:" in text and "true:" in text
    truth = text.split("true:")[1].strip().split()[1:-1]  # the window may cut its first and last word
    assert truth and set(truth) <= set(tiny_text.read_text().split())  # the true spaces give back real words


def test_heatmap_colours_each_norm_relative_to_the_last_on_one_fixed_scale():
    image = heatmap([[1e-30, 2e-6, 2e-3, 2.0], [0.0, 5e-7, 5e-4, 0.5]], orders=20, scale=2)
    assert image.shape == (3, 4, 8)
    assert torch.equal(image[:, :2], image[:, 2:])  # the same ratios, the same colours
    assert torch.allclose(image[:, 0, 0], torch.tensor([0.27, 0.00, 0.33]))  # 1e-20 or less: dark blue
    assert torch.allclose(image[:, 0, 6], torch.tensor([0.99, 0.91, 0.14]))  # the last step: yellow
    assert image[:, 0, 2].sum() < image[:, 0, 4].sum()


def resolve_config(tiny_text, tmp_path, *overrides):
    from rnnexp.train import resolve

    return resolve(tiny_run_config(tiny_text, tmp_path, *overrides))


def test_run_names_are_short_readable_and_made_from_the_overrides():
    from rnnexp.run_names import run_name

    assert run_name("", "lstm") == "lstm"
    assert run_name("cell=gru,lr=0.003,unroll=40", "gru") == "gru_lr0.003_u40"
    assert run_name("arch.residual=true,arch=deep,data.path=/a/b.txt,data=text_file", "lstm") == \
        "lstm_residual_deep_text_file"  # paths say where, not what: left out
    assert run_name("cell.hidden_size=128,hydra.run.dir=x,trainer.enable_progress_bar=false", "rnn") == "rnn_h128"
    assert len(run_name(",".join(f"+k{i}=v{i}" for i in range(60)), "gru")) == 80
    # an Optuna trial's values, to 4 digits (overrides.yaml has them all); integers as they are
    assert run_name("hparams_search=lm_lr_clip,lr=0.0030862723645228127,seed=123456789", "gru") == \
        "gru_lr0.003086_seed123456789"


def test_run_and_sweep_folders_start_with_what_they_are_then_the_date(tmp_path, monkeypatch):
    """TensorBoard shortens run names from the end: the name comes first, the date and time after it."""
    from rnnexp.run_names import sweep_name
    from tests.test_sweeps import compose_with_hydra

    assert sweep_name(["cell=rnn,lstm", "lr=0.01,0.03", "unroll=40", "data.path=/a,b.txt"]) == "sweep_cell_lr"
    assert sweep_name(["hparams_search=lm_lr_clip", "unroll=choice(16,32)", "cell.hidden_size=range(64,257,64)"]) == \
        "sweep_u_h"
    assert sweep_name(["seed=1"]) == sweep_name([]) == "sweep"
    from hydra.core.hydra_config import HydraConfig

    config = compose_with_hydra("cell=gru", "unroll=40")
    monkeypatch.chdir(tmp_path)  # resolving the folder makes it
    HydraConfig.instance().set_config(config)  # as Hydra does before it makes the run's folder
    try:
        assert re.fullmatch(r"outputs/runs/gru_u40_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", config.hydra.run.dir)
    finally:
        HydraConfig.instance().cfg = None


def test_a_short_run_validates_ten_times_and_a_long_or_timed_one_every_250_steps():
    from rnnexp.train import resolve
    from tests.helpers import compose_config

    def interval(*overrides: str) -> int:
        return resolve(compose_config("run_dir=run", *overrides))["trainer"]["val_check_interval"]

    assert interval() == 250  # the default 3,000 steps
    assert interval("trainer.max_steps=300") == 30 and interval("trainer.max_steps=5") == 1
    assert interval("trainer.max_steps=-1", "trainer.max_time=00:00:01:00") == 250
    assert interval("trainer.max_steps=300", "trainer.val_check_interval=7") == 7  # as asked
