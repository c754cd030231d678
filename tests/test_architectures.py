"""Arch 2, deep, bidirectional and seq2seq: each composes and trains, and does what it claims."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from rnnexp.cells import make_rnn
from rnnexp.errors import ConfigError
from rnnexp.model import OutputFeedbackLM
from rnnexp.tasks.seq2seq import PairBatches, Seq2Seq, SymbolVocab, load_seq2seq, make_pair
from rnnexp.train import resolve, train
from tests.helpers import read_scalars, tiny_run_config, tiny_seq2seq_config

CELLS = [("rnn", "scratch"), ("rnn", "fused"), ("lstm", "scratch"), ("lstm", "fused"), ("gru", "scratch"),
         ("gru", "fused")]
# Scheduled sampling mixes both Arch 2 paths: the teacher's symbols and the model's own samples.
LM_ARCHS = [["arch=deep"], ["arch=deep", "arch.residual=true"], ["arch=arch2", "arch.feedback=scheduled",
                                                                 "arch.schedule_k=2"]]


@pytest.mark.parametrize("cell,impl", CELLS)
def test_every_architecture_trains_with_every_cell(tiny_text, tmp_path, cell, impl):
    cell_args = [f"cell={cell}", f"cell.impl={impl}"]
    for i, arch in enumerate(LM_ARCHS):  # a folder each: a run into another's folder warns (rightly)
        assert math.isfinite(train(tiny_run_config(tiny_text, tmp_path / f"lm{i}", *cell_args, *arch)))
    segmentation = ["data=segmentation", "data.corpus=text_file", f"data.path={tiny_text}", "arch=bidirectional"]
    train(tiny_run_config(tiny_text, tmp_path / "seg", *cell_args, *segmentation))
    assert "val/f1" in read_scalars(tmp_path / "seg")
    train(tiny_seq2seq_config(tmp_path / "s2s", *cell_args, "arch.attention=true", "arch.encoder_bidirectional=true"))
    assert "val/seq_acc" in read_scalars(tmp_path / "s2s")


def test_deep_stack_carries_every_layers_state(tiny_text, tmp_path):
    from rnnexp.tasks.language_model import LanguageModelTask

    config = resolve(tiny_run_config(tiny_text, tmp_path, "arch=deep", "arch.num_layers=3", "cell=lstm"))
    task = LanguageModelTask(config, list("abcdefgh"))
    task.step_loss((torch.randint(0, 8, (5, 2)), torch.randint(0, 8, (5, 2)), True))
    h, c = task.train_state
    assert h.shape == c.shape == (3, 2, 16)


def test_arch2_feeds_back_the_teachers_symbol_in_training_and_its_own_at_validation():
    torch.manual_seed(0)
    cell = {"name": "gru", "impl": "scratch", "hidden_size": 8}
    model = OutputFeedbackLM(6, cell, {"embedding_dim": 4, "feedback": "teacher", "dropout": 0.0})
    tokens, targets = torch.randint(0, 6, (3, 2)), torch.randint(0, 6, (3, 2))

    def by_hand(fed_back_at_step_1):
        """Logits of step 1 when `fed_back_at_step_1` is the symbol fed back into it."""
        h0 = model.cell(model.embedding(tokens[0]), model.feedback.weight[6].expand(2, 8))
        h1 = model.cell(model.embedding(tokens[1]), model.feedback(fed_back_at_step_1))
        return model.head(h0), model.head(h1)

    with torch.no_grad():
        model.train()
        train_logits, _ = model(tokens, None, targets)
        model.eval()
        val_logits, (fed,) = model(tokens, None, targets)
        step0, teacher_step1 = by_hand(targets[0])
        _, own_step1 = by_hand(step0.argmax(-1))
    torch.testing.assert_close(train_logits[1], teacher_step1)  # training: the true previous symbol
    torch.testing.assert_close(val_logits[1], own_step1)  # validation: its own previous output
    assert not torch.allclose(teacher_step1, own_step1)
    assert torch.equal(fed, val_logits[-1].argmax(-1))  # and that is what the next batch starts from


def test_scheduled_sampling_decays_from_teacher_to_own_outputs(tiny_text, tmp_path):
    from rnnexp.tasks.language_model import LanguageModelTask

    config = resolve(tiny_run_config(tiny_text, tmp_path, "arch=arch2", "arch.feedback=scheduled",
                                     "arch.schedule_k=100"))
    task = LanguageModelTask(config, list("abc"))
    assert task.teacher_prob() == pytest.approx(100 / 101)  # step 0
    assert task.teacher_prob() > 0.99


def test_bidirectional_matches_torch_and_masking_matches_packed_sequences():
    for cell in ("rnn", "lstm", "gru"):
        torch.manual_seed(0)
        scratch = make_rnn(cell, "scratch", 5, 7, num_layers=2, bidirectional=True)
        torch.manual_seed(0)
        fused = make_rnn(cell, "fused", 5, 7, num_layers=2, bidirectional=True)
        assert list(scratch.state_dict()) == list(fused.state_dict())
        x, lengths = torch.randn(9, 3, 5), torch.tensor([9, 4, 6])
        out_s, state_s = scratch(x)
        out_f, state_f = fused(x)
        torch.testing.assert_close(out_s, out_f, rtol=1e-5, atol=1e-6)
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        out_p, state_p = fused(packed)
        out_p, _ = torch.nn.utils.rnn.pad_packed_sequence(out_p, total_length=9)
        out_m, state_m = scratch(x, lengths=lengths)
        torch.testing.assert_close(out_m, out_p, rtol=1e-5, atol=1e-6)
        for a, b in zip(torch.utils._pytree.tree_leaves(state_m), torch.utils._pytree.tree_leaves(state_p),
                        strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bidirectional_on_a_causal_language_model_is_refused(tiny_text, tmp_path):
    with pytest.raises(ConfigError, match="arch=bidirectional cannot be a causal language model"):
        train(tiny_run_config(tiny_text, tmp_path / "run", "arch=bidirectional"))
    with pytest.raises(ConfigError, match="data=reverse is a sequence-to-sequence task: use arch=seq2seq"):
        train(tiny_seq2seq_config(tmp_path / "run", "arch=arch1"))


@pytest.mark.parametrize("impl", ["scratch", "fused"])
def test_padding_does_not_change_the_loss(impl):
    """Example A scores the same alone and padded next to a longer example B."""
    torch.manual_seed(0)
    vocab = SymbolVocab(["<pad>", "<s>", "</s>", *"abcdef"])
    arch = {"embedding_dim": 8, "encoder_hidden_size": 6, "encoder_bidirectional": True, "context": "both",
            "attention": True, "dropout": 0.0}
    model = Seq2Seq(len(vocab), {"name": "lstm", "impl": impl, "hidden_size": 10}, arch).eval()
    batches = PairBatches(vocab, 2)
    a, b = ("abc", "cba"), ("abcdefabc", "cbafedcba")

    def loss_of_a(pairs):
        source, lengths, target = batches.collate(pairs)
        logits = model(source, lengths, target)
        losses = F.cross_entropy(logits.permute(1, 2, 0), target[1:].T, ignore_index=0, reduction="none")
        return losses[0].sum()

    with torch.no_grad():
        torch.testing.assert_close(loss_of_a([a]), loss_of_a([a, b]), rtol=1e-5, atol=1e-6)


def test_beam_of_one_is_greedy_and_wider_beams_decode():
    torch.manual_seed(0)
    vocab = SymbolVocab(["<pad>", "<s>", "</s>", *"abcd"])
    arch = {"embedding_dim": 8, "encoder_hidden_size": None, "encoder_bidirectional": False, "context": "init",
            "attention": False, "dropout": 0.0}
    model = Seq2Seq(len(vocab), {"name": "gru", "impl": "fused", "hidden_size": 12}, arch).eval()
    source, lengths, _ = PairBatches(vocab, 3).collate([("abc", "a"), ("dd", "a"), ("abcd", "a")])
    greedy = model.greedy(source, lengths, 1, 2, 6)
    assert torch.equal(model.beam_search(source, lengths, 1, 2, 6, beam_size=1), greedy)
    assert model.beam_search(source, lengths, 1, 2, 6, beam_size=4).shape == greedy.shape


def test_generated_tasks_and_held_out_validation():
    rng = random.Random(0)
    data = {"num_symbols": 5, "min_length": 3, "max_length": 6, "max_digits": 3}
    for _ in range(50):
        s, t = make_pair("reverse", rng, data)
        assert t == s[::-1] and 3 <= len(s) <= 6 and set(s) <= set("abcde")
        s, t = make_pair("sort", rng, data)
        assert t == "".join(sorted(s))
        s, t = make_pair("copy", rng, data)
        assert t == s
        s, t = make_pair("addition", rng, data)
        x, y = s.split("+")
        assert int(t) == int(x) + int(y)
    config = {"data": {"name": "reverse", "num_symbols": 4, "min_length": 3, "max_length": 4, "train_batches": 20,
                       "valid_size": 100}, "batch_size": 16, "seed": 0}
    pairs = load_seq2seq(config, None)
    held_out = {tuple(pairs.valid.collate([p])[0].flatten().tolist()) for p in pairs.valid.pairs}
    for source, lengths, _ in pairs.train:
        for b in range(source.shape[1]):
            assert tuple(source[: lengths[b], b].tolist()) not in held_out


def test_parallel_text_reads_pairs_and_names_a_bad_line(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"{w}\t{w.upper()}\n" for w in ["cat", "dog", "bird", "fish", "cow"] * 4))
    config = {"data": {"name": "parallel_text", "path": str(path), "val_fraction": 0.2}, "batch_size": 4, "seed": 0}
    pairs = load_seq2seq(config, None)
    assert len(pairs.valid.pairs) == 4 and "C" in pairs.vocab.symbols
    path.write_text("cat\tCAT\ndog DOG\n")
    from rnnexp.errors import DataError

    with pytest.raises(DataError, match="line 2: expected 'source<TAB>target'"):
        load_seq2seq(config, None)


def test_seq2seq_logs_examples_to_the_text_tab(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(tiny_seq2seq_config(tmp_path / "run"))
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert "val/examples/text_summary" in events.Tags()["tensors"]
    text = events.Tensors("val/examples/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert text.startswith("| source | target | prediction |")


def test_residual_stack_adds_each_upper_layers_input_to_its_output():
    from rnnexp.model import make_recurrent

    torch.manual_seed(0)
    cell = {"name": "gru", "impl": "fused", "hidden_size": 6}
    stack = make_recurrent(cell, {"name": "deep", "num_layers": 2, "dropout": 0.0, "residual": True}, 4)
    x = torch.randn(5, 3, 4)
    first, _ = stack.layers[0](x)
    second, _ = stack.layers[1](first)
    out, state = stack(x)
    torch.testing.assert_close(out, second + first)
    assert state.shape == (2, 3, 6)


def test_a_residual_stack_carries_each_layers_state_and_drops_out_between_layers_only():
    """Deep residual stack (arch=deep arch.residual=true): two windows with the state carried equal one
    window twice as long, and dropout acts on the input of every layer above the first, not on the first."""
    from rnnexp.model import ResidualStack, make_recurrent

    torch.manual_seed(0)
    cell = {"name": "lstm", "impl": "fused", "hidden_size": 8, "variant": "standard", "_target_": None}
    arch = {"name": "deep", "num_layers": 3, "dropout": 0.5, "residual": True}
    stack = make_recurrent(cell, arch, input_size=8).eval()
    assert isinstance(stack, ResidualStack)
    x = torch.randn(10, 2, 8)  # (time, batch, features)
    whole, _ = stack(x)
    first, state = stack(x[:5])
    second, _ = stack(x[5:], state)
    torch.testing.assert_close(torch.cat([first, second]), whole)
    assert not torch.allclose(stack(x[5:])[0], second)  # the carried state matters

    dropped_inputs = []
    stack.dropout.register_forward_pre_hook(lambda module, args: dropped_inputs.append(args[0]))
    stack(x)
    assert len(dropped_inputs) == 2 and all(t is not x for t in dropped_inputs)


@pytest.mark.parametrize("mode", ["teacher", "sampled", "scheduled"])
def test_arch2_feeds_back_what_its_feedback_mode_names(mode):
    """In training: teacher feeds back the true symbol; sampled and scheduled the true symbol with probability
    teacher_prob (the task gives sampled 0), else a sample of its own output distribution. At validation: its most
    likely output, whatever the mode. Row vocab_size of the feedback table ("no output yet") stays zero."""
    torch.manual_seed(0)
    cell = {"name": "gru", "impl": "scratch", "hidden_size": 4, "variant": "standard", "_target_": None}
    model = OutputFeedbackLM(3, cell, {"embedding_dim": 4, "feedback": mode, "dropout": 0.0})
    assert model.feedback.padding_idx == 3 and model.feedback.num_embeddings == 4
    assert torch.count_nonzero(model.feedback.weight[3]) == 0
    logits = torch.tensor([[0.0, 3.0, 0.0]]).repeat(4000, 1)  # its own choice: symbol 1 with p = 0.91
    target = torch.zeros(4000, dtype=torch.long)              # the true symbol: 0
    model.eval()
    assert torch.equal(model._next_feedback(logits, target, 1.0), torch.ones(4000, dtype=torch.long))
    model.train()
    own_share = {p: (model._next_feedback(logits, target, p) == 1).float().mean().item() for p in (1.0, 0.5, 0.0)}
    p_own = math.exp(3) / (2 + math.exp(3))
    mixed = {1.0: 0.0, 0.5: 0.5 * p_own, 0.0: p_own}  # the task passes teacher_prob 0 for sampled
    expected = {"teacher": {1.0: 0.0, 0.5: 0.0, 0.0: 0.0}, "sampled": mixed, "scheduled": mixed}[mode]
    for p, share in own_share.items():
        assert share == pytest.approx(expected[p], abs=0.03), (p, own_share)
    without_target = (model._next_feedback(logits, None, 1.0) == 1).float().mean().item()
    assert without_target == pytest.approx(p_own, abs=0.03)  # generation: its own samples


def test_arch2_samples_its_own_outputs_in_proportion_to_their_softmax():
    """The Gumbel-max trick, argmax(logits + G) with G = -log(Exp(1)), draws each symbol with its softmax
    probability; with three or more symbols a wrong sign of G or another noise gives other shares."""
    torch.manual_seed(0)
    cell = {"name": "gru", "impl": "scratch", "hidden_size": 4}
    model = OutputFeedbackLM(4, cell, {"embedding_dim": 4, "feedback": "sampled", "dropout": 0.0}).train()
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]]).repeat(40000, 1)
    shares = torch.bincount(model._next_feedback(logits, None, 0.0), minlength=4).float() / 40000
    torch.testing.assert_close(shares, torch.softmax(logits[0], dim=-1), atol=0.01, rtol=0)


def test_arch2_in_sampled_mode_never_feeds_back_the_targets():
    """Sampled mode feeds back its own samples in training whatever teacher_prob it is given."""
    cell = {"name": "lstm", "impl": "scratch", "hidden_size": 8}
    torch.manual_seed(0)
    model = OutputFeedbackLM(5, cell, {"embedding_dim": 4, "feedback": "sampled", "dropout": 0.0}).train()
    tokens, targets = torch.randint(0, 5, (6, 3)), torch.randint(0, 5, (6, 3))
    with torch.no_grad():
        torch.manual_seed(1)
        with_targets, (fed, c) = model(tokens, None, targets, teacher_prob=1.0)
        torch.manual_seed(1)
        without, (fed_without, _) = model(tokens)
        teacher = OutputFeedbackLM(5, cell, {"embedding_dim": 4, "feedback": "teacher", "dropout": 0.0}).train()
        teacher.load_state_dict(model.state_dict())
        _, (fed_teacher, _) = teacher(tokens, None, targets)
    assert torch.equal(with_targets, without) and torch.equal(fed, fed_without)
    assert torch.equal(fed_teacher, targets[-1])  # the teacher's does
    assert c.dtype == torch.float32 and c.shape == (3, 8)


def test_build_language_model_makes_arch2_for_arch2_and_arch1_otherwise():
    from rnnexp.model import RNNLanguageModel, build_language_model

    cell = {"name": "gru", "impl": "fused", "hidden_size": 8}
    arch = {"embedding_dim": 4, "num_layers": 1, "combine": "sum", "dropout": 0.0, "feedback": "teacher"}
    assert type(build_language_model(5, cell, {**arch, "name": "arch2"})) is OutputFeedbackLM
    assert type(build_language_model(5, cell, {**arch, "name": "arch1"})) is RNNLanguageModel


@pytest.mark.parametrize("name", ["arch1", "arch2"])
def test_a_language_model_run_in_two_windows_with_the_state_equals_one_run(name):
    """Truncated BPTT carries the state from window to window: the state a window returns starts the next."""
    from rnnexp.model import build_language_model

    torch.manual_seed(0)
    cell = {"name": "lstm", "impl": "fused", "hidden_size": 8}
    arch = {"name": name, "embedding_dim": 4, "num_layers": 2, "combine": "sum", "dropout": 0.0,
            "feedback": "teacher"}
    model = build_language_model(7, cell, arch).eval()
    tokens = torch.randint(0, 7, (10, 3))
    with torch.no_grad():
        whole, _ = model(tokens)
        first, state = model(tokens[:4])
        second, _ = model(tokens[4:], state)
    torch.testing.assert_close(torch.cat([first, second]), whole)
    assert not torch.allclose(second, model(tokens[4:])[0])  # the state matters


def test_make_recurrent_builds_the_stack_its_config_names():
    from examples.minimal_cell import LeakyRNNCell
    from rnnexp.cells import ScratchRNN
    from rnnexp.model import ResidualStack, make_recurrent

    relu = {"name": "rnn", "impl": "scratch", "hidden_size": 6, "activation": "relu"}
    one = make_recurrent(relu, {"name": "arch1", "combine": "concat", "dropout": 0.3}, 4)
    assert (one.activation, one.combine, one.num_layers, one.dropout) == ("relu", "concat", 1, 0.0)
    cifg = make_recurrent({"name": "lstm", "impl": "scratch", "hidden_size": 6, "variant": "cifg"},
                          {"name": "arch1", "dropout": 0.0}, 4)
    assert (cifg.variant, cifg.activation, cifg.combine) == ("cifg", "tanh", "sum")  # the defaults of the rest
    custom = make_recurrent({"name": "custom", "impl": "scratch", "hidden_size": 6,
                             "_target_": "examples.minimal_cell.LeakyRNNCell"}, {"name": "arch1", "dropout": 0.0}, 4)
    assert isinstance(custom, ScratchRNN) and isinstance(custom.cells["l0"], LeakyRNNCell)
    with pytest.raises(ConfigError, match=r"^cell._target_=examples.nowhere.Cell cannot be imported"):
        make_recurrent({"name": "custom", "impl": "scratch", "hidden_size": 6, "_target_": "examples.nowhere.Cell"},
                       {"name": "arch1", "dropout": 0.0}, 4)

    lstm = {"name": "lstm", "impl": "fused", "hidden_size": 6}
    deep = make_recurrent(lstm, {"name": "deep", "num_layers": 2, "dropout": 0.3}, 4)
    assert type(deep) is torch.nn.LSTM and (deep.num_layers, deep.dropout) == (2, 0.3)  # dropout between layers
    assert make_recurrent(lstm, {"name": "deep", "num_layers": 2, "dropout": 0.3, "residual": False}, 4).dropout == 0.3
    shallow = make_recurrent(lstm, {"name": "deep", "num_layers": 1, "dropout": 0.3, "residual": True}, 4)
    assert type(shallow) is torch.nn.LSTM and shallow.dropout == 0.0  # one layer: no residual, no dropout
    assert make_recurrent(lstm, {"name": "arch1", "dropout": 0.3}, 4).num_layers == 1
    both = make_recurrent(lstm, {"name": "bidirectional", "num_layers": 2, "dropout": 0.0, "residual": True}, 4)
    assert isinstance(both, ResidualStack) and both.layers[1].input_size == 12 and both.per_layer == 2
