"""End-to-end runs of the real config and training path, with tiny models on tiny text."""

import math

import pytest
import torch
import yaml

from rnnexp.errors import ConfigError
from rnnexp.train import train
from tests.helpers import read_scalars, tiny_run_config

VALID = [
    ("rnn", "fused", "sum"),
    ("rnn", "scratch", "sum"),
    ("rnn", "scratch", "concat"),
    ("rnn", "scratch", "product"),
    ("lstm", "fused", "sum"),
    ("lstm", "scratch", "sum"),
    ("gru", "fused", "sum"),
    ("gru", "scratch", "sum"),
]


@pytest.mark.parametrize("cell,impl,combine", VALID)
def test_every_valid_cell_impl_combine_trains(tiny_text, tmp_path, cell, impl, combine):
    run_dir = tmp_path / "run"
    best = train(tiny_run_config(tiny_text, run_dir, f"cell={cell}", f"cell.impl={impl}", f"arch.combine={combine}"))
    assert math.isfinite(best)
    scalars = read_scalars(run_dir)
    assert [step for step, _ in scalars["train/loss"]] == [0, 1, 2, 3]
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert (run_dir / "checkpoints" / "best.ckpt").exists()


def test_relu_rnn_with_sgd_and_exponential_decay(tiny_text, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, "cell=rnn", "cell.activation=relu", "optim=sgd", "lr=0.5", "clip=5",
                          "sched=exponential", "sched.decay_rate=0.5", "sched.decay_steps=2"))
    lrs = [lr for _, lr in read_scalars(run_dir)["train/lr"]]
    # lr = 0.5 * 0.5 ** (step / 2), read before each optimizer step
    assert lrs == pytest.approx([0.5 * 0.5 ** (s / 2) for s in range(4)], rel=1e-6)


def test_scratch_and_fused_give_the_same_losses(tiny_text, tmp_path):
    """Same seed, same data, full precision: the first 15 training losses agree within 1e-4 relative."""
    for cell in ("rnn", "lstm", "gru"):
        losses = {}
        for impl in ("scratch", "fused"):
            run_dir = tmp_path / f"{cell}-{impl}"
            train(tiny_run_config(tiny_text, run_dir, f"cell={cell}", f"cell.impl={impl}", "trainer.max_steps=15",
                                  "trainer.precision=32-true", "trainer.val_check_interval=15", "sample.length=0"))
            losses[impl] = [loss for _, loss in read_scalars(run_dir)["train/loss"]]
        assert len(losses["fused"]) == 15
        assert losses["scratch"] == pytest.approx(losses["fused"], rel=1e-4), cell
        assert losses["fused"][-1] < losses["fused"][0]  # and it learns


def test_logs_every_tag_every_n_steps(tiny_text, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, "cell=gru", "trainer.max_steps=6", "trainer.log_every_n_steps=3",
                          "trainer.val_check_interval=3"))
    scalars = read_scalars(run_dir)
    params = ["embedding.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0",
              "head.weight", "head.bias"]
    for tag in ["train/loss", "train/lr", "train/lr_log10", "vitals/grad_norm/total",
                *(f"vitals/grad_norm/{p}" for p in params)]:
        assert [step for step, _ in scalars[tag]] == [2, 5], tag
    for tag in ["val/loss", "val/bpc"]:
        assert len(scalars[tag]) >= 2, tag
    assert not [tag for tag in scalars if tag.startswith("val_hp/")]  # those are in the HParams sub-run only
    assert [v for _, v in scalars["train/lr_log10"]] == pytest.approx([math.log10(v) for _, v in scalars["train/lr"]])
    # bits per character are nats per character over ln 2
    for (_, loss), (_, bpc) in zip(scalars["val/loss"], scalars["val/bpc"], strict=True):
        assert bpc == pytest.approx(loss / math.log(2))
    # the total is the norm of the per-parameter norms
    total = scalars["vitals/grad_norm/total"][0][1]
    assert total == pytest.approx(math.sqrt(sum(scalars[f"vitals/grad_norm/{p}"][0][1] ** 2 for p in params)), rel=1e-5)


def test_hparams_go_to_a_sub_run_with_every_setting_and_the_hp_metrics_only_where_measured(tiny_text, tmp_path):
    """TensorBoard's HParams tab reads <run>/hparams: a session record of every setting (no experiment
    record, which TensorBoard would take from one run for all), and hp/ metrics at the validations' steps."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir = tmp_path / "run"
    best = train(tiny_run_config(tiny_text, run_dir, "lr=0.01", "cell=rnn", "optim=sgd"))
    events = EventAccumulator(str(run_dir / "hparams"))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    assert set(content) == {"_hparams_/session_start_info"}
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]) \
        .session_start_info.hparams
    assert hparams["lr"].number_value == pytest.approx(0.01)
    assert hparams["cell/name"].string_value == "rnn" and hparams["cell/activation"].string_value == "tanh"
    assert hparams["optim/momentum"].number_value == 0.0 and hparams["trainer/precision"].string_value
    assert not {"run_dir", "data_dir", "ckpt_path"} & set(hparams)  # where files are: not a setting
    # hparams.yaml holds the same settings, flat (not the checkpoint's whole config and vocabulary too)
    assert set(yaml.safe_load((run_dir / "hparams.yaml").read_text(encoding="utf-8"))) == set(hparams)
    main = EventAccumulator(str(run_dir))
    main.Reload()
    with pytest.raises(KeyError, match="could not be found"):  # nothing in the run itself for the tab to take
        main.PluginTagToContent("hparams")
    scalars, validations = read_scalars(run_dir / "hparams"), read_scalars(run_dir)["val/bpc"]
    assert set(scalars) == {"val_hp/bpc", "val_hp/best_bpc"}
    assert scalars["val_hp/bpc"] == validations  # at each validation's step, none at step 0
    assert scalars["val_hp/best_bpc"][-1][1] == pytest.approx(best, rel=1e-6)  # train() returns it


def test_resume_restores_weights_optimizer_and_step(tiny_text, tmp_path):
    first = tmp_path / "first"
    train(tiny_run_config(tiny_text, first, "trainer.max_steps=5"))  # last validation at step 4
    checkpoint = torch.load(first / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 5 and checkpoint["optimizer_states"][0]["state"]
    resumed = tmp_path / "resumed"
    train(tiny_run_config(tiny_text, resumed, "trainer.max_steps=7", f"ckpt_path={first}/checkpoints/last.ckpt"))
    assert [step for step, _ in read_scalars(resumed)["train/loss"]] == [5, 6]
    assert torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 7


def test_checkpoint_holds_vocabulary_and_config(tiny_text, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir))
    hyper = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["hyper_parameters"]
    assert "".join(hyper["vocab"]) == "".join(sorted(set(tiny_text.read_text())))
    assert hyper["config"]["cell"]["name"] == "lstm"


def test_seed_zero_is_honoured(tiny_text, tmp_path):
    losses = []
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        train(tiny_run_config(tiny_text, tmp_path / name, f"seed={seed}", "sample.length=0"))
        losses.append([v for _, v in read_scalars(tmp_path / name)["train/loss"]])
    assert losses[0] == losses[1]
    assert losses[0] != losses[2]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["cell=rnn", "arch.combine=concat"], "exists on the scratch path only: add cell.impl=scratch"),
        (["cell=lstm", "cell.impl=scratch", "arch.combine=product"], "defined for the vanilla rnn cell only"),
        (["cell=rnn", "cell.activation=sigmoid"], "cell.activation must be tanh or relu"),
        (["cell.impl=cudnn"], "cell.impl must be fused or scratch"),
        (["lr=0"], "lr must be a positive number"),
        (["unroll=0"], "unroll must be a positive integer"),
        (["batch_size=-4"], "batch_size must be a positive integer"),
        (["cell.hidden_size=0"], "cell.hidden_size must be a positive integer"),
        (["clip=-1"], "clip must be a number >= 0"),
        (["arch.dropout=1.0"], r"arch.dropout must be a number in \[0, 1\)"),
        (["data.val_fraction=0"], "data.val_fraction must be > 0"),
        (["sched=exponential", "sched.decay_rate=1.5"], r"sched.decay_rate must be in \(0, 1\]"),
    ],
)
def test_bad_config_is_refused_before_any_work(tiny_text, tmp_path, overrides, message):
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        train(tiny_run_config(tiny_text, run_dir, *overrides))
    assert not run_dir.exists()


def test_text_file_without_a_path_is_a_config_error(tmp_path):
    from tests.helpers import compose_config

    with pytest.raises(ConfigError, match="data.path is required"):
        train(compose_config("data=text_file", f"run_dir={tmp_path}"))


def test_experiment_recipe_applies_and_trains(tiny_text, tmp_path):
    from tests.helpers import compose_config

    cfg = compose_config("experiment=vanilla_rnn_sgd")
    assert (cfg.cell.name, cfg.optim._target_, cfg.sched._target_, cfg.lr, cfg.clip) == (
        "rnn", "torch.optim.SGD", "rnnexp.optim.exponential_decay", 0.5, 5.0)
    best = train(tiny_run_config(tiny_text, tmp_path / "run", "experiment=vanilla_rnn_sgd"))
    assert math.isfinite(best)


def test_hidden_state_is_carried_detached_between_batches_and_kept_apart_from_validation(tiny_text, tmp_path):
    import torch.nn.functional as F

    from rnnexp.data import TBPTTBatches
    from rnnexp.tasks.language_model import LanguageModelTask
    from rnnexp.tokenizers import CharVocab
    from rnnexp.train import resolve

    config = resolve(tiny_run_config(tiny_text, tmp_path, "cell=lstm"))
    text = tiny_text.read_text()
    vocab = CharVocab.build([text])
    batches = TBPTTBatches(vocab.encode(text), batch_size=4, unroll=8)
    task = LanguageModelTask(config, vocab.symbols)
    task.step_loss((*batches[0], True))
    carried = task.train_state
    assert not any(s.requires_grad for s in carried)  # detached: BPTT stops at the batch boundary
    inputs, targets = batches[1]
    with torch.no_grad():
        logits_carried, _ = task.model(inputs, carried)
        logits_fresh, _ = task.model(inputs, None)
    loss = task.step_loss((*batches[1], False))
    assert loss.item() == pytest.approx(F.cross_entropy(logits_carried.flatten(0, 1), targets.flatten()).item())
    assert loss.item() != pytest.approx(F.cross_entropy(logits_fresh.flatten(0, 1), targets.flatten()).item())
    train_state = task.train_state
    task.on_validation_epoch_start()
    task.validation_step(batches[0], 0)
    assert task.train_state is train_state and task.val_state is not None
    # The first window of every pass starts each stream afresh, whatever state was carried.
    with torch.no_grad():
        logits_first, _ = task.model(batches[0][0], None)
    loss_first = task.step_loss((*batches[0], True))
    expected_first = F.cross_entropy(logits_first.flatten(0, 1), batches[0][1].flatten())
    assert loss_first.item() == pytest.approx(expected_first.item())


def test_word_level_training_logs_perplexity_and_samples_words(tiny_text, tmp_path, capsys):
    run_dir = tmp_path / "run"
    best = train(tiny_run_config(tiny_text, run_dir, "tokenizer=word", "sample.prime=the"))
    scalars = read_scalars(run_dir)
    assert "val/bpc" not in scalars
    for (_, loss), (_, ppl) in zip(scalars["val/loss"], scalars["val/ppl"], strict=True):
        assert ppl == pytest.approx(math.exp(loss), rel=1e-5)
    assert read_scalars(run_dir / "hparams")["val_hp/best_ppl"][-1][1] == pytest.approx(best, rel=1e-5)  # returned
    sample = capsys.readouterr().out.split("---\n")[1]
    words = set(tiny_text.read_text().split())
    assert sample.startswith("the ") and set(sample.split()) <= words | {"<unk>"}


def test_wikitext2_word_experiment_composes():
    from tests.helpers import compose_config

    cfg = compose_config("experiment=wikitext2_word", "data.files.train=test.txt")
    assert (cfg.data.name, cfg.tokenizer.name, cfg.unroll, cfg.batch_size) == ("wikitext2", "word", 35, 20)
    assert cfg.data.files.train == "test.txt"


def test_the_defaults_are_the_shakespeare_cpu_recipe_but_its_time_limit():
    """README "Results": `python train.py trainer.max_time=00:00:01:20` runs experiment=shakespeare_cpu."""
    from omegaconf import OmegaConf

    from tests.helpers import compose_config

    def recipe(*overrides: str) -> dict:
        cfg = compose_config(*overrides)
        keys = ("cell", "arch", "optim", "sched", "data", "tokenizer", "batch_size", "unroll", "lr", "clip")
        resolved = OmegaConf.to_container(cfg, resolve=False)
        return {"max_time": cfg.trainer.max_time, "max_steps": cfg.trainer.max_steps, "lr_value": cfg.lr,
                **{key: resolved[key] for key in keys if key != "lr"}}

    preset, default = recipe("experiment=shakespeare_cpu"), recipe("trainer.max_time=00:00:01:20")
    assert preset == default
    assert (preset["cell"]["hidden_size"], preset["batch_size"], preset["lr_value"]) == (256, 32, 0.01)


def test_wikitext2_awd_experiment_composes_with_every_regulariser_and_passes_validation():
    from omegaconf import OmegaConf

    from rnnexp.config import validate_config
    from tests.helpers import compose_config

    cfg = compose_config("experiment=wikitext2_awd", "data.files.train=test.txt", "run_dir=run")
    assert (cfg.data.name, cfg.tokenizer.name, cfg.arch.tie_weights) == ("wikitext2", "word", True)
    assert cfg.arch.embedding_dim == cfg.cell.hidden_size
    assert all(cfg.arch[key] > 0 for key in ("embedding_dropout", "input_dropout", "output_dropout", "weight_drop",
                                             "ar", "tar"))
    validate_config(OmegaConf.to_container(cfg, resolve=True))


def test_vanilla_rnn_trains_with_sgd_and_its_learning_rate_unless_told_otherwise():
    from tests.helpers import compose_config

    cfg = compose_config("cell=rnn", "cell.activation=relu", "unroll=40", "lr=0.5", "clip=5")
    assert (cfg.optim._target_, cfg.lr) == ("torch.optim.SGD", 0.5)
    assert (compose_config("cell=rnn").optim._target_, compose_config("cell=rnn").lr) == ("torch.optim.SGD", 0.5)
    assert (compose_config("cell=rnn", "optim=adam").lr, compose_config("cell=gru").lr) == (0.01, 0.01)


def test_a_prime_outside_the_vocabulary_falls_back_to_the_corpus_first_symbol(tmp_path, capsys):
    text = tmp_path / "one_line.txt"
    text.write_text("abc def ghi " * 300)  # no newline: the default prime "\n" cannot be spelled
    train(tiny_run_config(text, tmp_path / "run", "sample.length=10"))
    sample = capsys.readouterr().out.split("---\n")[1]
    assert sample.startswith("a") and len(sample.rstrip("\n")) == 11
