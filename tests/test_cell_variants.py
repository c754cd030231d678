"""The literature's cell variants follow their equations, and a cell of your own trains everywhere."""

import math
import re

import numpy as np
import pytest
import torch

from rnnexp.cells import CELLS, ScratchCell, make_cell, make_rnn
from rnnexp.checkpoint import load_checkpoint
from rnnexp.errors import ConfigError
from rnnexp.train import train
from tests.helpers import read_scalars, tiny_run_config, tiny_seq2seq_config

GATE_ROWS = {(c, v): spec.rows for c, kind in CELLS.items() for v, spec in kind.variants.items()}

CUSTOM = "examples.minimal_cell.LeakyRNNCell"


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def numpy_step(cell, variant, p, x, h, c):
    """Each variant's equations, written again in NumPy from the papers."""
    W, U, b, bh = p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"]
    H = h.shape[-1]
    blocks = dict(zip(GATE_ROWS[(cell, variant)], np.split(x @ W.T + b + h @ U.T + bh, len(GATE_ROWS[(cell, variant)]),
                                                           axis=-1), strict=True))
    if cell == "lstm":
        if variant == "peephole":
            p_i, p_f, p_o = np.split(p["weight_peephole"], 3)
            i, f = sigmoid(blocks["i"] + p_i * c), sigmoid(blocks["f"] + p_f * c)
            c = f * c + i * np.tanh(blocks["g"])
            return sigmoid(blocks["o"] + p_o * c) * np.tanh(c), c
        f = sigmoid(blocks["f"]) if "f" in blocks else 1.0
        i = sigmoid(blocks["i"]) if "i" in blocks else 1 - f
        o = sigmoid(blocks["o"]) if "o" in blocks else 1.0
        c = f * c + i * np.tanh(blocks["g"])
        return o * np.tanh(c), c
    if cell == "gru":
        xr, xz, xn = np.split(x @ W.T + b, 3, axis=-1)
        Ur, Uz, Un = np.split(U, 3)
        br, bz, bn = np.split(bh, 3)
        r, z = sigmoid(xr + h @ Ur.T + br), sigmoid(xz + h @ Uz.T + bz)
        n = np.tanh(xn + (r * (h @ Un.T + bn) if variant == "standard" else (r * h) @ Un.T + bn))
        return (1 - z) * n + z * h, None
    if cell == "mgu":
        xf, xn = np.split(x @ W.T + b, 2, axis=-1)
        Uf, Un = np.split(U, 2)
        bf, bn = np.split(bh, 2)
        f = sigmoid(xf + h @ Uf.T + bf)
        return (1 - f) * h + f * np.tanh(xn + (f * h) @ Un.T + bn), None
    assert H and cell == "rnn"
    return np.maximum(blocks["h"], 0) if variant == "irnn" else np.tanh(blocks["h"]), None


@pytest.mark.parametrize("cell,variant", sorted(GATE_ROWS))
def test_each_variants_step_equals_its_equations_in_numpy(cell, variant):
    torch.manual_seed(0)
    module = ScratchCell(cell, 4, 5, "relu" if variant == "irnn" else "tanh", variant)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()  # random weights, not the initialisation, so every term counts
    x, h, c = torch.randn(3, 4), torch.randn(3, 5), torch.randn(3, 5)
    out = module(x, (h, c) if cell == "lstm" else h)
    h_torch, c_torch = out if cell == "lstm" else (out, None)
    params = {name: p.detach().double().numpy() for name, p in module.named_parameters()}
    h_np, c_np = numpy_step(cell, variant, params, x.double().numpy(), h.double().numpy(), c.double().numpy())
    np.testing.assert_allclose(h_torch.detach().numpy(), h_np, rtol=1e-5, atol=1e-6)
    if cell == "lstm":
        np.testing.assert_allclose(c_torch.detach().numpy(), c_np, rtol=1e-5, atol=1e-6)


def test_cho_gru_differs_from_the_cudnn_gru_and_equals_it_when_the_reset_gate_is_open():
    torch.manual_seed(0)
    cudnn, cho = ScratchCell("gru", 4, 5), ScratchCell("gru", 4, 5, variant="cho")
    cho.load_state_dict(cudnn.state_dict())
    x, h = torch.randn(3, 4), torch.randn(3, 5)
    assert not torch.allclose(cudnn(x, h), cho(x, h), atol=1e-4)
    with torch.no_grad():
        for module in (cudnn, cho):
            module.bias_hh[:5] = 100.0  # r = sigmoid(... + 100) = 1
    torch.testing.assert_close(cudnn(x, h), cho(x, h))
    fused = torch.nn.GRUCell(4, 5)
    fused.load_state_dict(cudnn.state_dict())
    torch.testing.assert_close(fused(x, h), cudnn(x, h))  # and ours is cuDNN's


def test_irnn_starts_from_the_identity_with_zero_biases_scratch_and_fused_alike():
    for impl in ("scratch", "fused"):
        torch.manual_seed(0)
        rnn = make_rnn("rnn", impl, 3, 4, activation="relu", variant="irnn")
        assert torch.equal(rnn.weight_hh_l0, torch.eye(4)) and not rnn.bias_ih_l0.any() and not rnn.bias_hh_l0.any()
    assert torch.equal(make_cell("rnn", "fused", 3, 4, "relu", "irnn").weight_hh, torch.eye(4))


def test_forget_gate_bias_starts_at_one_in_every_variant_that_has_one():
    for variant, rows in [(v, r) for (c, v), r in GATE_ROWS.items() if c == "lstm"]:
        lstm = make_rnn("lstm", "scratch", 3, 4, variant=variant)
        bias = (lstm.bias_ih_l0 + lstm.bias_hh_l0).view(len(rows), 4)
        if "f" in rows:
            assert torch.equal(bias[rows.index("f")], torch.ones(4)), variant


@pytest.mark.parametrize("overrides,message", [
    (["cell=lstm_peephole", "cell.impl=fused"], "cell.variant=peephole has no fused kernel: add cell.impl=scratch"),
    (["cell=mgu", "cell.impl=fused"], "cell=mgu has no fused kernel: add cell.impl=scratch"),
    (["cell=gru", "cell.variant=peephole"], "cell.variant must be one of standard, cho for cell=gru"),
    (["cell=rnn", "cell.variant=irnn"], "cell.variant=irnn is a ReLU RNN"),
    (["cell=custom"], "cell._target_ is required"),
    (["cell=custom", "cell._target_=examples.nowhere.Cell"], "cannot be imported"),
    (["cell=custom", "cell._target_=math.sqrt"], "is not a torch.nn.Module class"),
    (["cell=custom", "cell._target_=torch.nn.Linear"], "must be built as Linear(input_size, hidden_size) and step"),
    (["cell=custom", "cell._target_=torch.nn.Identity"], "must be built as Identity(input_size, hidden_size)"),
    (["cell=custom", "cell._target_=tests.helpers.DoubleCell"], "in the dtype of its inputs (float32); it returned "
                                                                "(2, 16) torch.float64"),
])
def test_bad_cells_are_refused_before_training(tiny_text, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        train(tiny_run_config(tiny_text, tmp_path / "run", *overrides))
    assert not (tmp_path / "run").exists()


ARCHS = [[], ["arch=deep", "arch.num_layers=2"], ["arch=deep", "arch.num_layers=2", "arch.residual=true"],
         ["arch=arch2"]]


@pytest.mark.parametrize("arch", ARCHS, ids=["arch1", "deep", "residual", "arch2"])
def test_a_custom_cell_trains_with_every_language_model_architecture_and_resumes(tiny_text, tmp_path, arch):
    run_dir = tmp_path / "run"
    cell = ["cell=custom", f"cell._target_={CUSTOM}", *arch]
    train(tiny_run_config(tiny_text, run_dir, *cell))
    first = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert any(name.endswith("leak") for name in first["state_dict"])
    train(tiny_run_config(tiny_text, run_dir, *cell, f"ckpt_path={run_dir}", "trainer.max_steps=6"))
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 6
    assert [s for s, _ in read_scalars(run_dir)["train/loss"]] == list(range(6))


def test_a_custom_cell_tags_segments_decodes_resumes_and_shows_in_the_dashboards(tiny_text, tmp_path):
    cell = ["cell=custom", f"cell._target_={CUSTOM}"]
    segmentation = ["data=segmentation", "data.corpus=text_file", f"data.path={tiny_text}", "arch=bidirectional"]
    seg, s2s = tmp_path / "seg", tmp_path / "s2s"
    assert math.isfinite(train(tiny_run_config(tiny_text, seg, *cell, *segmentation)))
    assert math.isfinite(train(tiny_seq2seq_config(s2s, *cell, "arch.attention=true")))
    train(tiny_run_config(tiny_text, seg, *cell, *segmentation, f"ckpt_path={seg}", "trainer.max_steps=6"))
    train(tiny_seq2seq_config(s2s, *cell, "arch.attention=true", f"ckpt_path={s2s}", "trainer.max_steps=6"))
    for run in (seg, s2s):
        assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 6
    train(tiny_run_config(tiny_text, tmp_path / "lm", *cell, "diagnostics.every_n_steps=2"))
    scalars = read_scalars(tmp_path / "lm")
    assert "vitals/gradient_flow/rnn.l0/first_over_last" in scalars and "vitals/cells/rnn.l0/saturated_frac" in scalars


@pytest.mark.parametrize("cell", ["lstm_peephole", "lstm_cifg", "lstm_no_output_gate", "lstm_no_forget_gate",
                                  "gru_cho", "mgu", "irnn"])
def test_every_variant_trains_through_train_py(tiny_text, tmp_path, cell):
    assert math.isfinite(train(tiny_run_config(tiny_text, tmp_path / "run", f"cell={cell}")))


def test_the_cell_ablation_preset_runs_as_a_sweep_and_ends_with_its_summary(tiny_text, tmp_path):
    import subprocess
    import sys

    from tests.helpers import REPO, TINY_MODEL

    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "train.py", "-m", "experiment=cell_ablation", "cell=lstm_cifg,gru_cho",
         "seeds=1", "data=text_file", f"data.path={tiny_text}", f"hydra.sweep.dir={sweep}", *TINY_MODEL,
         "sample.length=0"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = (sweep / "summary.md").read_text()
    assert "| lstm_cifg |" in summary and "| gru_cho |" in summary and (sweep / "by_parameter.png").exists()
    assert len(list(sweep.glob("*/.hydra"))) == 2  # the command line's cells replace the preset's nine
