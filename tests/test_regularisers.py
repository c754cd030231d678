"""AWD-LSTM's regularisers on an Arch 1 language model (rnnexp/model.py): locked dropout, embedding dropout,
tied embeddings, AR and TAR; each off by default, refused where it does not apply, trained and resumed."""

import pytest
import torch

from rnnexp.errors import ConfigError
from rnnexp.model import REGULARISERS, LockedDropout, RNNLanguageModel, embedding_dropout
from rnnexp.train import train
from tests.helpers import compose_config, read_scalars, tiny_run_config

CELL = {"name": "lstm", "impl": "fused", "hidden_size": 16}


def arch(**regularisers):
    return {"name": "arch1", "embedding_dim": 16, "num_layers": 1, "combine": "sum", "dropout": 0.0,
            **regularisers}


def test_locked_dropout_keeps_one_mask_across_time_and_draws_one_per_sequence():
    torch.manual_seed(0)
    dropout = LockedDropout(0.5).train()
    out = dropout(torch.ones(7, 4, 32))  # (time, sequences, units)
    kept = out != 0
    assert torch.equal(kept, kept[:1].expand_as(kept))  # the same units at every step of the window
    assert not all(torch.equal(kept[0, 0], kept[0, b]) for b in range(1, 4))  # another mask per sequence
    assert set(out.unique().tolist()) == {0.0, 2.0}  # kept ones scaled by 1 / (1 - p)
    assert torch.equal(dropout.eval()(out), out) and torch.equal(LockedDropout(0.0).train()(out), out)


def test_embedding_dropout_drops_whole_rows_and_scales_the_rest():
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(10, 6)
    tokens = torch.tensor([[1, 2, 3, 1], [2, 1, 4, 4]])
    out = embedding_dropout(embedding, tokens, 0.5)
    for token in tokens.unique().tolist():
        rows = out[tokens == token]
        dropped = bool((rows == 0).all())
        assert dropped or torch.allclose(rows, embedding.weight[token].expand_as(rows) * 2)  # every occurrence alike
    assert (out == 0).all(dim=-1).any() and not (out == 0).all()  # some tokens dropped, some kept
    assert torch.equal(embedding_dropout(embedding, tokens, 0.0), embedding(tokens))


def test_tied_embeddings_share_one_tensor_and_untied_ones_do_not():
    tied = RNNLanguageModel(11, CELL, arch(tie_weights=True))
    assert tied.head.weight is tied.embedding.weight
    # starts in U(-0.1, 0.1) as AWD-LSTM's: N(0, 1) rows as the readout would give a near one-hot softmax
    assert tied.embedding.weight.abs().max() <= 0.1 and tied.embedding.weight.std() > 0.04
    assert sum(p.numel() for p in tied.parameters()) == sum(p.numel() for p in RNNLanguageModel(
        11, CELL, arch()).parameters()) - 11 * 16  # one matrix fewer
    assert RNNLanguageModel(11, CELL, arch()).head.weight is not RNNLanguageModel(11, CELL, arch()).embedding.weight
    with pytest.raises(ConfigError, match="arch.tie_weights .* needs arch.embedding_dim = cell.hidden_size, got 8 "
                                          "and 16"):
        from rnnexp.config import validate_config

        validate_config(compose_config("arch.tie_weights=true", "arch.embedding_dim=8", "cell.hidden_size=16"))


def test_ar_and_tar_are_their_formulas_and_zero_when_their_weights_are_zero():
    torch.manual_seed(0)
    tokens = torch.randint(0, 11, (6, 3))
    model = RNNLanguageModel(11, CELL, arch(ar=2.0, tar=1.0)).train()
    model(tokens)
    outputs, _ = model.rnn(model.embedding(tokens))
    expected = 2.0 * outputs.pow(2).mean() + 1.0 * (outputs[1:] - outputs[:-1]).pow(2).mean()
    assert model.penalty.item() == pytest.approx(expected.item(), rel=1e-5)
    off = RNNLanguageModel(11, CELL, arch()).train()
    off(tokens)
    assert off.penalty is None  # nothing added to the loss
    model.eval()(tokens)
    assert model.penalty is None  # training only


def test_everything_off_is_the_model_without_regularisers():
    assert {k: compose_config().arch[k] for k in REGULARISERS} == REGULARISERS
    torch.manual_seed(0)
    plain = RNNLanguageModel(11, CELL, arch())
    torch.manual_seed(0)
    off = RNNLanguageModel(11, CELL, arch(**REGULARISERS))
    tokens = torch.randint(0, 11, (6, 3))
    assert torch.equal(plain.train()(tokens)[0], off.train()(tokens)[0])


def test_a_regulariser_on_a_task_that_is_not_a_language_model_is_refused(tmp_path):
    from rnnexp.config import validate_components

    with pytest.raises(ConfigError, match="arch.output_dropout regularises a language model .*not data=segmentation"):
        validate_components(compose_config("data=segmentation", "arch=deep", "arch.output_dropout=0.3"))
    with pytest.raises(ConfigError, match="arch.ar must be a number >= 0"):
        from rnnexp.config import validate_config

        validate_config(compose_config("arch.ar=-1"))


@pytest.mark.parametrize("impl", ["fused", "scratch"])
def test_a_regularised_model_trains_logs_its_penalty_apart_and_resumes_exactly(impl, tiny_text, tmp_path):
    options = [f"cell.impl={impl}", "cell=lstm", "arch.embedding_dim=16", "cell.hidden_size=16",
               "arch.tie_weights=true", "arch.embedding_dropout=0.1", "arch.input_dropout=0.2",
               "arch.output_dropout=0.3", "arch.ar=2", "arch.tar=1", "trainer.log_every_n_steps=2",
               "trainer.val_check_interval=4", "sample.length=0", "sample.val_length=0", "trainer.deterministic=true",
               "seed=3", "arch.weight_drop=0.3", *(["arch.zoneout=0.1"] if impl == "scratch" else [])]
    whole, first = tmp_path / "whole", tmp_path / "first"
    train(tiny_run_config(tiny_text, whole, *options, "trainer.max_steps=8"))
    scalars = read_scalars(whole)
    penalty = [v for _, v in scalars["train/activation_penalty"]]
    assert [s for s, _ in scalars["train/activation_penalty"]] == [1, 3, 5, 7] and all(v > 0 for v in penalty)
    train(tiny_run_config(tiny_text, first, *options, "trainer.max_steps=4"))  # then resumed to 8
    train(tiny_run_config(tiny_text, first, *options, "trainer.max_steps=8", f"ckpt_path={first}"))
    resumed = read_scalars(first)
    for tag in ("train/loss", "train/activation_penalty", "val/loss"):
        assert resumed[tag] == scalars[tag], tag  # dropout masks, penalties and weights: exactly as uninterrupted
    whole_weights = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    resumed_weights = torch.load(first / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(whole_weights[k], resumed_weights[k]) for k in whole_weights)


def test_weight_drop_runs_torchs_fused_kernel_on_dropped_recurrent_weights_and_keeps_the_raw_ones():
    model = RNNLanguageModel(11, CELL, arch(weight_drop=0.3)).train()  # not dropout's default rate, 0.5
    assert type(model.rnn) is torch.nn.LSTM  # the fused layer itself, no wrapper
    raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tokens = torch.randint(0, 11, (6, 3))
    torch.manual_seed(1)
    logits, _ = model(tokens)
    torch.manual_seed(1)  # the same mask, drawn the same way, set by hand into a copy
    dropped = torch.nn.functional.dropout(model.rnn.weight_hh_l0.detach(), 0.3, training=True)
    copy = RNNLanguageModel(11, CELL, arch()).train()
    copy.load_state_dict(raw)
    with torch.no_grad():
        copy.rnn.weight_hh_l0.copy_(dropped)
    assert torch.allclose(logits, copy(tokens)[0], atol=1e-6)
    assert (dropped == 0).any() and all(torch.equal(raw[k], v) for k, v in model.state_dict().items())  # raw kept
    logits.sum().backward()
    assert model.rnn.weight_hh_l0.grad is not None  # trained through the mask
    model.eval()
    assert torch.equal(model(tokens)[0], model(tokens)[0])  # evaluation: no drop, deterministic
    copy.load_state_dict(raw)
    assert torch.equal(model(tokens)[0], copy.eval()(tokens)[0])  # with the raw weights


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_zoneout_at_zero_is_no_zoneout_and_at_one_keeps_the_old_state(cell):
    scratch = {"name": cell, "impl": "scratch", "hidden_size": 8}
    tokens = torch.randint(0, 11, (5, 3))
    torch.manual_seed(0)
    plain = RNNLanguageModel(11, scratch, arch(embedding_dim=8))
    torch.manual_seed(0)
    zero = RNNLanguageModel(11, scratch, arch(embedding_dim=8, zoneout=0.0))
    assert torch.equal(plain.train()(tokens)[0], zero.train()(tokens)[0])
    torch.manual_seed(0)
    frozen = RNNLanguageModel(11, scratch, arch(embedding_dim=8, zoneout=1.0))
    start = frozen.rnn.initial_state(3, torch.zeros(1))
    start = (start[0] + 0.5, start[1] - 0.25) if cell == "lstm" else start + 0.5
    for mode in (frozen.train, frozen.eval):
        mode()
        outputs, state = frozen.rnn(frozen.embedding(tokens), start)
        h0 = start[0] if cell == "lstm" else start
        assert torch.equal(outputs, h0.expand_as(outputs)) and torch.equal(state[0] if cell == "lstm" else state, h0)
    half = RNNLanguageModel(11, scratch, arch(embedding_dim=8, zoneout=0.5)).train()
    outputs, _ = half.rnn(half.embedding(tokens))
    kept = outputs[1:] == outputs[:-1]
    assert kept.any() and not kept.all()  # some units kept their value, step by step
    from rnnexp.config import validate_config

    with pytest.raises(ConfigError, match="arch.zoneout acts between the steps of the scratch cells"):
        validate_config(compose_config("arch.zoneout=0.1", "cell.impl=fused"))


AVERAGES = {
    "ema": ["+callbacks.weight_average._target_=pytorch_lightning.callbacks.EMAWeightAveraging",
            "+callbacks.weight_average.decay=0.5"],
    "swa": ["+callbacks.weight_average._target_=rnnexp.callbacks.StochasticWeightAverage",
            "+callbacks.weight_average.start_step=5"],  # after the validation at step 4, before that at 8
    "swa_resumed_mid_average": ["+callbacks.weight_average._target_=rnnexp.callbacks.StochasticWeightAverage",
                                "+callbacks.weight_average.start_step=2"],  # the step-4 checkpoint holds an average
}


@pytest.mark.parametrize("kind", AVERAGES)
def test_averaged_weights_are_validated_saved_and_resumed_exactly(kind, tiny_text, tmp_path):
    options = [*AVERAGES[kind], "trainer.log_every_n_steps=2", "trainer.val_check_interval=4", "sample.length=0",
               "sample.val_length=0", "trainer.deterministic=true", "seed=3"]
    whole, first, plain = tmp_path / "whole", tmp_path / "first", tmp_path / "plain"
    train(tiny_run_config(tiny_text, whole, *options, "trainer.max_steps=8"))
    train(tiny_run_config(tiny_text, first, *options, "trainer.max_steps=4"))
    train(tiny_run_config(tiny_text, first, *options, "trainer.max_steps=8", f"ckpt_path={first}"))
    train(tiny_run_config(tiny_text, plain, *options[2:], "trainer.max_steps=8"))  # the same run, not averaged
    ran, resumed, unaveraged = read_scalars(whole), read_scalars(first), read_scalars(plain)
    assert resumed["train/loss"] == ran["train/loss"] == unaveraged["train/loss"]  # training itself is untouched
    assert resumed["val/loss"] == ran["val/loss"]
    (first_validation, *_), last_validation = ran["val/loss"], ran["val/loss"][-1]
    if kind == "swa":  # before its first averaged step, the trained weights are validated as they are
        assert first_validation == unaveraged["val/loss"][0]
    assert last_validation != unaveraged["val/loss"][-1]  # then validation scores the average
    saved = {name: torch.load(run / "checkpoints" / "last.ckpt", weights_only=False) for name, run in
             (("whole", whole), ("first", first), ("plain", plain))}
    for key in ("state_dict", "current_model_state"):
        assert all(torch.equal(v, saved["first"][key][k]) for k, v in saved["whole"][key].items()), key
    # the checkpoint's weights are the average (what sample.py and evaluate.py load); the trained ones beside them
    trained = saved["whole"]["current_model_state"]
    assert all(torch.equal(v, saved["plain"]["state_dict"][k]) for k, v in trained.items())
    assert any(not torch.equal(v, saved["whole"]["current_model_state"][k])
               for k, v in saved["whole"]["state_dict"].items())


def test_swa_averages_the_weights_from_its_start_step_on():
    from rnnexp.callbacks import StochasticWeightAverage

    swa = StochasticWeightAverage(start_step=3, every_n_steps=2)
    assert [step for step in range(10) if swa.should_update(step_idx=step)] == [3, 5, 7, 9]
    assert not swa.should_update(epoch_idx=4)


def test_nt_avsgd_starts_averaging_when_validation_is_worse_than_the_best_before_the_last_patience_ones(caplog):
    import logging
    from types import SimpleNamespace

    from rnnexp.callbacks import NonMonotonicAverage

    average = NonMonotonicAverage(patience=2)
    trainer = SimpleNamespace(sanity_checking=False, callback_metrics={}, global_step=0)
    with caplog.at_level(logging.INFO, logger="rnnexp"):
        for step, loss in enumerate([3.0, 2.5, 2.4, 2.45, 2.38, 2.6, 2.3], start=1):
            trainer.global_step, trainer.callback_metrics = 100 * step, {"val/loss": torch.tensor(loss)}
            average.on_validation_end(trainer, None)
            if step < 6:  # 2.45 is worse than 2.4, the last validation but one, but not than 3.0 and 2.5 before
                assert average.start_step is None and not average.should_update(step_idx=100 * step), step
    assert average.start_step == 600  # 2.6 > min(3.0, 2.5, 2.4, 2.45): the first non-monotone validation
    assert caplog.messages == ["step 600: validation loss 2.6000 is worse than the best before the last 2 "
                               "validations: averaging the weights from here on (NT-AvSGD)"]  # said once
    ignored = NonMonotonicAverage(patience=0)  # the sanity check and a validation without val/loss count for nothing
    ignored.on_validation_end(SimpleNamespace(sanity_checking=True, callback_metrics={"val/loss": torch.tensor(1.0)},
                                              global_step=0), None)
    ignored.on_validation_end(SimpleNamespace(sanity_checking=False, callback_metrics={}, global_step=5), None)
    assert ignored.losses == [] and ignored.start_step is None
    for losses, start in (([3.0, 2.5, 2.6, 2.5], None),  # equal to the best before: not worse
                          ([3.0, 2.9, 2.0, 2.1, 2.5], 5)):  # worse than 2.0, the best of all before the last 2
        check = NonMonotonicAverage(patience=2)
        for step, loss in enumerate(losses, start=1):
            check.on_validation_end(SimpleNamespace(sanity_checking=False, global_step=step,
                                                    callback_metrics={"val/loss": torch.tensor(loss)}), None)
        assert check.start_step == start, losses
    assert average.should_update(step_idx=600) and average.should_update(step_idx=700)
    restored = NonMonotonicAverage(patience=2)
    restored.load_state_dict(average.state_dict())
    assert (restored.start_step, restored.losses) == (600, average.losses)


def test_ar_alone_and_tar_alone_each_add_their_own_term():
    torch.manual_seed(0)
    tokens = torch.randint(0, 11, (6, 3))
    for ar, tar in ((2.0, 0.0), (0.0, 3.0)):
        model = RNNLanguageModel(11, CELL, arch(ar=ar, tar=tar)).train()
        model(tokens)
        outputs, _ = model.rnn(model.embedding(tokens))
        expected = ar * outputs.pow(2).mean() + tar * (outputs[1:] - outputs[:-1]).pow(2).mean()
        assert model.penalty is not None and model.penalty.item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_model_drops_embedding_rows_in_training_only():
    torch.manual_seed(0)
    model = RNNLanguageModel(11, CELL, arch(embedding_dropout=0.5))
    plain = RNNLanguageModel(11, CELL, arch())
    plain.load_state_dict(model.state_dict())
    tokens = torch.randint(0, 11, (6, 3))
    with torch.no_grad():
        assert torch.equal(model.eval()(tokens)[0], plain.eval()(tokens)[0])  # evaluation: all rows, unscaled
        torch.manual_seed(1)
        dropped = model.train()(tokens)[0]
        torch.manual_seed(1)
        mask = torch.empty(11, 1).bernoulli_(0.5) / 0.5  # the same draw, by hand
        by_hand = plain.head(plain.rnn(torch.nn.functional.embedding(tokens, plain.embedding.weight * mask))[0])
    torch.testing.assert_close(dropped, by_hand)
    assert not torch.allclose(dropped, plain.train()(tokens)[0])


def test_swa_resumed_from_before_its_first_averaged_step_starts_from_the_saved_weights_without_a_warning():
    import warnings

    from torch.optim.swa_utils import AveragedModel

    from rnnexp.callbacks import StochasticWeightAverage

    torch.manual_seed(0)
    model, saved = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    swa = StochasticWeightAverage(start_step=10)
    swa._average_model = AveragedModel(model)  # as its setup() makes it at fit's start
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not Lightning's "not created with WeightAveraging": it was, before step 10
        swa.on_load_checkpoint(None, model, {"state_dict": saved.state_dict()})
    for name, value in saved.state_dict().items():
        assert torch.equal(swa._average_model.module.state_dict()[name], value)
    assert not swa.averaging()
    restored = StochasticWeightAverage(start_step=0)
    restored.load_state_dict(StochasticWeightAverage(start_step=7).state_dict())
    assert restored.start_step == 7
    restored.load_state_dict({k: v for k, v in swa.state_dict().items() if k != "start_step"})  # an older checkpoint
    assert restored.start_step == 7


def test_the_averaging_callbacks_defaults_and_settings():
    """SWA averages every step from step 0 unless told; NT-AvSGD waits AWD-LSTM's `nonmono` = 5 validations
    and passes SWA's settings on; an older NT-AvSGD state without losses loads as none yet."""
    from torch.optim.swa_utils import AveragedModel

    from rnnexp.callbacks import NonMonotonicAverage, StochasticWeightAverage

    assert [s for s in range(4) if StochasticWeightAverage().should_update(step_idx=s)] == [0, 1, 2, 3]
    every_third = StochasticWeightAverage(start_step=1, every_n_steps=3)
    assert [s for s in range(10) if every_third.should_update(step_idx=s)] == [1, 4, 7]  # counted from start_step
    swa = StochasticWeightAverage()
    swa._average_model = AveragedModel(torch.nn.Linear(2, 2))
    assert not swa.averaging()
    swa._average_model.update_parameters(torch.nn.Linear(2, 2))
    assert swa.averaging()  # from the first averaged step on
    nt = NonMonotonicAverage(every_n_steps=3)
    assert (nt.patience, nt.every_n_steps, nt.start_step) == (5, 3, None)
    older = {k: v for k, v in nt.state_dict().items() if k != "losses"}
    nt.losses = [2.0]
    nt.load_state_dict(older)
    assert nt.losses == []
