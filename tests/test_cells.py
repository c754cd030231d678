"""The scratch cells follow the same equations, parameters and initialisation as torch's kernels."""

import pytest
import torch

from rnnexp.cells import ScratchCell, ScratchRNN, fused_classes, make_cell, make_rnn, variant_of

CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]


def build_pair(cell, activation, num_layers=1, input_size=5, hidden_size=7, bidirectional=False):
    torch.manual_seed(0)
    scratch = make_rnn(cell, "scratch", input_size, hidden_size, num_layers, activation, bidirectional=bidirectional)
    torch.manual_seed(0)
    fused = make_rnn(cell, "fused", input_size, hidden_size, num_layers, activation, bidirectional=bidirectional)
    return scratch, fused


def random_state(cell, num_layers, batch, hidden):
    h = torch.randn(num_layers, batch, hidden)
    return (h, torch.randn(num_layers, batch, hidden)) if cell == "lstm" else h


@pytest.mark.parametrize("cell,activation", CELLS)
def test_same_seed_gives_same_parameters(cell, activation):
    scratch, fused = build_pair(cell, activation, num_layers=2)
    scratch_params, fused_params = scratch.state_dict(), fused.state_dict()
    assert list(scratch_params) == list(fused_params)
    for name in fused_params:
        assert torch.equal(scratch_params[name], fused_params[name]), name


@pytest.mark.parametrize("cell,activation", CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_scratch_matches_fused_outputs_states_and_gradients(cell, activation, num_layers):
    scratch, fused = build_pair(cell, activation, num_layers)
    x = torch.randn(11, 3, 5)  # (T, B, input)
    state = random_state(cell, num_layers, 3, 7)
    out_s, state_s = scratch(x, state)
    out_f, state_f = fused(x, state)
    torch.testing.assert_close(out_s, out_f, rtol=1e-5, atol=1e-6)
    for a, b in zip(torch.utils._pytree.tree_leaves(state_s), torch.utils._pytree.tree_leaves(state_f), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    (out_s.square().sum()).backward()
    (out_f.square().sum()).backward()
    fused_params = dict(fused.named_parameters())
    for name, p in scratch.named_parameters():
        torch.testing.assert_close(p.grad, fused_params[name].grad, rtol=1e-4, atol=1e-6, msg=name)


def test_lstm_forget_gate_bias_starts_at_one():
    for impl in ("scratch", "fused"):
        lstm = make_rnn("lstm", impl, 3, 4)
        forget_bias = lstm.bias_ih_l0[4:8] + lstm.bias_hh_l0[4:8]
        assert torch.equal(forget_bias, torch.ones(4)), impl


def test_lstm_step_follows_the_equations():
    """One step by hand: c' = f*c + i*g, h' = o*tanh(c'), gates in torch's order i, f, g, o."""
    torch.manual_seed(1)
    lstm = ScratchRNN("lstm", 2, 3)
    x, h, c = torch.randn(1, 1, 2), torch.randn(1, 1, 3), torch.randn(1, 1, 3)
    pre = x[0] @ lstm.weight_ih_l0.T + lstm.bias_ih_l0 + h[0] @ lstm.weight_hh_l0.T + lstm.bias_hh_l0
    i, f, g, o = pre.sigmoid()[:, 0:3], pre.sigmoid()[:, 3:6], pre.tanh()[:, 6:9], pre.sigmoid()[:, 9:12]
    c_next = f * c[0] + i * g
    _, (h_out, c_out) = lstm(x, (h, c))
    torch.testing.assert_close(c_out[0], c_next)
    torch.testing.assert_close(h_out[0], o * c_next.tanh())


@pytest.mark.parametrize("combine", ["concat", "product"])
def test_combine_variants_run_and_differ_from_sum(combine):
    torch.manual_seed(0)
    plain = ScratchRNN("rnn", 4, 6)
    torch.manual_seed(0)
    variant = ScratchRNN("rnn", 4, 6, combine=combine)
    x = torch.randn(5, 2, 4)
    out, h = variant(x)
    assert out.shape == (5, 2, 6) and h.shape == (1, 2, 6)
    assert not torch.allclose(out, plain(x)[0])
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in variant.parameters())


def test_product_combine_multiplies_the_transformed_input_and_state():
    torch.manual_seed(0)
    rnn = ScratchRNN("rnn", 3, 4, combine="product")
    x, h = torch.randn(1, 2, 3), torch.randn(1, 2, 4)
    expected = torch.tanh((x[0] @ rnn.weight_ih_l0.T + rnn.bias_ih_l0) * (h[0] @ rnn.weight_hh_l0.T + rnn.bias_hh_l0))
    torch.testing.assert_close(rnn(x, h)[1][0], expected)


def test_combine_only_where_it_is_defined():
    with pytest.raises(ValueError, match="scratch path only"):
        make_rnn("rnn", "fused", 3, 4, combine="concat")
    with pytest.raises(ValueError, match="vanilla rnn cell only"):
        make_rnn("lstm", "scratch", 3, 4, combine="product")


GATES = {  # the gates each cell records for the dashboards (docs/dashboards.md: vitals/cells/<layer>/<gate>)
    ("lstm", "standard"): {"input_gate", "forget_gate", "output_gate"},
    ("lstm", "peephole"): {"input_gate", "forget_gate", "output_gate"},
    ("lstm", "cifg"): {"forget_gate", "output_gate"},
    ("lstm", "no_output_gate"): {"input_gate", "forget_gate"},
    ("lstm", "no_forget_gate"): {"input_gate", "output_gate"},
    ("gru", "standard"): {"reset_gate", "update_gate"},
    ("gru", "cho"): {"reset_gate", "update_gate"},
    ("mgu", "standard"): {"forget_gate"},
}


@pytest.mark.parametrize("cell,variant", sorted(GATES))
def test_each_cell_records_its_gates_by_the_names_the_dashboards_show(cell, variant):
    import torch.nn.functional as F

    from rnnexp.cells import CELLS, ScratchCell, has_cell_state, step_function

    assert set(GATES) == {(c, v) for c, kind in CELLS.items() for v in kind.variants if c != "rnn"}
    torch.manual_seed(0)
    module = ScratchCell(cell, 3, 4, variant=variant)
    params = {name: p for name, p in module.named_parameters() if not name.endswith("_ih")}
    h = torch.randn(2, 4)
    c = torch.randn(2, 4) if has_cell_state(cell) else None
    gates: list[dict] = []
    step_function(cell, variant, params, torch.tanh)(F.linear(torch.randn(2, 3), module.weight_ih, module.bias_ih),
                                                     h, c, gates)
    assert len(gates) == 1 and set(gates[0]) == GATES[cell, variant]
    for value in gates[0].values():  # gate openings, one per unit
        assert value.shape == (2, 4) and 0 <= value.min() and value.max() <= 1


def test_a_scratch_cell_starts_as_torchs_cells_do_uniform_in_plus_minus_one_over_root_h():
    from rnnexp.cells import make_cell

    torch.manual_seed(0)
    cell = make_cell("gru", "scratch", 5, 16, variant="standard")
    values = torch.cat([p.detach().flatten() for p in cell.parameters()])
    assert values.abs().max() <= 0.25 and values.min() < -0.2 and values.max() > 0.2  # 1/sqrt(16) = 0.25


def test_only_the_forget_gates_bias_changes_from_torchs_initialisation():
    torch.manual_seed(0)
    plain = torch.nn.LSTM(3, 4)
    torch.manual_seed(0)
    ours = make_rnn("lstm", "fused", 3, 4)
    forget = slice(4, 8)  # torch's gate order: i, f, g, o
    others = torch.ones(16, dtype=torch.bool)
    others[forget] = False
    assert torch.equal(ours.bias_ih_l0[others], plain.bias_ih_l0[others])
    assert torch.equal(ours.bias_hh_l0[others], plain.bias_hh_l0[others])
    assert torch.equal(ours.weight_hh_l0, plain.weight_hh_l0)


def test_a_deep_bidirectional_scratch_stack_matches_torchs():
    scratch, fused = build_pair("gru", "tanh", num_layers=2, bidirectional=True)
    x, h = torch.randn(6, 3, 5), torch.randn(4, 3, 7)
    out_s, h_s = scratch(x, h)
    out_f, h_f = fused(x, h)
    torch.testing.assert_close(out_s, out_f, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h_s, h_f, rtol=1e-5, atol=1e-6)


def test_dropout_falls_between_layers_in_training_only_at_its_rate():
    x = torch.randn(5, 3, 4)

    def outputs(num_layers: int, dropout: float, training: bool, seed: int = 0) -> torch.Tensor:
        torch.manual_seed(0)
        rnn = ScratchRNN("lstm", 4, 6, num_layers=num_layers, dropout=dropout).train(training)
        torch.manual_seed(seed)
        return rnn(x)[0]

    assert torch.equal(outputs(2, 0.5, False), outputs(2, 0.0, False))  # evaluation: no dropout
    assert torch.equal(outputs(2, 0.5, False, seed=1), outputs(2, 0.5, False, seed=2))
    assert not torch.equal(outputs(2, 0.5, True), outputs(2, 0.0, True))  # between layers, in training
    assert not torch.equal(outputs(2, 0.5, True), outputs(2, 1.0, True))  # at its own rate
    assert torch.equal(outputs(1, 0.5, True), outputs(1, 0.0, True))  # nothing before the first layer


def test_zoneout_in_evaluation_keeps_its_expected_share_of_the_old_state():
    x, h0 = torch.randn(1, 2, 3), torch.randn(1, 2, 4)
    torch.manual_seed(0)
    plain = ScratchRNN("gru", 3, 4).eval()
    torch.manual_seed(0)
    zoned = ScratchRNN("gru", 3, 4).eval()
    zoned.zoneout = 0.25
    new = plain(x, h0)[0]
    torch.testing.assert_close(zoned(x, h0)[0], 0.25 * h0 + 0.75 * new)


def test_make_cell_builds_ours_or_torchs_cell_as_named():
    scratch = make_cell("gru", "scratch", 3, 4)  # the standard variant by default
    assert isinstance(scratch, ScratchCell) and (scratch.cell, scratch.variant) == ("gru", "standard")
    assert make_cell("lstm", "scratch", 3, 4, variant="cifg").variant == "cifg"
    relu = make_cell("rnn", "fused", 3, 4, activation="relu")
    assert type(relu) is torch.nn.RNNCell and relu.nonlinearity == "relu"
    assert type(make_cell("lstm", "fused", 3, 4)) is torch.nn.LSTMCell


def test_unknown_cells_and_variants_without_a_kernel_are_named_in_the_error():
    with pytest.raises(ValueError, match=r"^unknown cell 'lstn' with variant 'standard'; choose from \[\('rnn', "
                       r"'standard'\), \('rnn', 'irnn'\), \('lstm', 'standard'\)"):
        variant_of("lstn", "standard")
    with pytest.raises(ValueError, match=r"^unknown cell 'gru' with variant 'peephole'"):
        variant_of("gru", "peephole")
    for cell, variant in (("lstm", "peephole"), ("mgu", "standard"), ("lstn", "standard")):
        with pytest.raises(ValueError, match=rf"^{cell} {variant} has no fused kernel \(cell.impl=scratch\)$"):
            fused_classes(cell, variant)
    assert fused_classes("gru", "standard") == (torch.nn.GRU, torch.nn.GRUCell)


def test_a_probed_stack_records_each_layers_states_and_gates_at_every_step_and_an_unprobed_one_nothing():
    torch.manual_seed(0)
    rnn = ScratchRNN("lstm", 3, 4, num_layers=2)
    x = torch.randn(5, 2, 3)
    out, _ = rnn(x)
    assert rnn.probe is None
    rnn.probe = {}
    assert torch.equal(rnn(x)[0], out)  # probing changes nothing
    assert set(rnn.probe) == {"l0", "l1"}
    assert torch.equal(torch.stack(rnn.probe["l1"]["h"]), out)
    for layer in rnn.probe.values():
        assert len(layer["h"]) == len(layer["gates"]) == 5
        assert set(layer["gates"][0]) == {"input_gate", "forget_gate", "output_gate"}


def test_a_stack_is_refused_an_unknown_combine_or_implementation_and_initialises_both_directions():
    with pytest.raises(ValueError, match=r"^unknown combine 'mean'; choose from \['sum', "):
        ScratchRNN("rnn", 3, 4, combine="mean")
    with pytest.raises(ValueError, match=r"^unknown cell implementation 'cudnn'; choose 'scratch' or 'fused'$"):
        make_rnn("rnn", "cudnn", 3, 4)
    assert ScratchRNN("lstm", 3, 4, num_layers=2).dropout == 0.0  # no dropout unless asked
    for impl in ("scratch", "fused"):
        lstm = make_rnn("lstm", impl, 3, 4, bidirectional=True)
        for direction in ("", "_reverse"):  # the forget gate's bias of 1 in each direction
            bias = getattr(lstm, f"bias_ih_l0{direction}")[4:8] + getattr(lstm, f"bias_hh_l0{direction}")[4:8]
            assert torch.equal(bias, torch.ones(4)), (impl, direction)
