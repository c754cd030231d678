"""The study presets (conf/experiment/: unroll_study, long_range, arch_compare, lr_sweep) and the
vector-to-sequence task."""

import json

import pytest
import torch

from rnnexp.resolvers import register
from rnnexp.tasks.seq2seq import Seq2Seq, load_seq2seq, number_words
from tests.helpers import TINY_MODEL, compose_config, tiny_seq2seq_config

STUDIES = {  # preset: (what its sweep varies, what shrinks one job of it to a tiny run)
    "unroll_study": ({"cell": "rnn,rnn_relu,lstm,gru", "unroll": "5,10,20,40,80"}, ["data=text_file"]),
    "long_range": ({"data": "adding,copy_memory", "data.length": "25,50,100", "cell": "rnn,lstm,gru"},
                   ["data.length=12", "data.train_batches=4", "data.valid_size=8"]),
    "arch_compare": ({"arch_variant": "arch1_sum,arch1_concat,arch1_product,arch2_teacher,arch2_scheduled,deep"},
                     ["data=text_file", "arch_variant=arch1_product"]),
    "lr_sweep": ({"lr": "0.1,0.25,0.5,1.0,1.5,2.5"}, ["data=text_file"]),
    "cell_ablation": ({"cell": "lstm,lstm_peephole,lstm_cifg,lstm_no_output_gate,lstm_no_forget_gate,gru,gru_cho,mgu,"
                               "irnn"}, ["data=text_file", "cell=mgu"]),
}
STEPS = {"long_range": 1000, "arch_compare": 5000, "lr_sweep": 4000, "cell_ablation": 1000}  # at scale=1
UNROLL_STUDY_TOKENS = 2_000_000  # the same text for every unroll: steps = tokens / (batch_size x unroll)


@pytest.mark.parametrize("study", STUDIES)
def test_each_study_preset_composes_and_runs_one_tiny_job(study, tiny_text, tmp_path):
    from hydra import compose, initialize_config_dir

    from rnnexp.train import train
    from tests.helpers import REPO

    swept, shrink = STUDIES[study]
    register()  # ${seed_list:...} in the sweeper's settings (train.py registers them at import)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        hydra_cfg = compose(config_name="train", overrides=[f"experiment={study}"], return_hydra_config=True)
    # three seeds of each setting: replicates, summarised with their mean and interval
    assert {k: str(v).replace(" ", "") for k, v in hydra_cfg.hydra.sweeper.params.items()} == {**swept, "seed": "1,2,3"}
    budget = compose_config(f"experiment={study}").trainer
    assert budget.max_time is None  # a budget in steps: the same on any machine
    unroll_study_steps = round(UNROLL_STUDY_TOKENS / (64 * compose_config(f"experiment={study}").unroll))
    assert budget.max_steps == (STEPS[study] if study in STEPS else unroll_study_steps)
    tiny = [o for o in TINY_MODEL if not o.startswith(("cell.hidden_size", "batch_size", "unroll"))]
    run_dir = tmp_path / "run"
    cfg = compose_config(f"experiment={study}", *shrink, f"data.path={tiny_text}" if "data=text_file" in shrink else
                         "seed=1", "cell.hidden_size=8", "batch_size=4", "unroll=8", *tiny, f"run_dir={run_dir}")
    train(cfg)
    assert json.loads((run_dir / "result.json").read_text())["steps"] == 4


def test_scale_multiplies_a_study_presets_steps_and_seeds_sets_its_replicates():
    assert compose_config("experiment=lr_sweep", "scale=4").trainer.max_steps == 4 * STEPS["lr_sweep"]
    assert compose_config("experiment=long_range", "scale=0.5").trainer.max_steps == STEPS["long_range"] // 2
    for unroll in (5, 80):  # the same tokens at every unroll, scale times them
        steps = compose_config("experiment=unroll_study", f"unroll={unroll}", "scale=2").trainer.max_steps
        assert steps == round(2 * UNROLL_STUDY_TOKENS / (64 * unroll))
    from hydra import compose, initialize_config_dir

    from tests.helpers import REPO

    register()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        hydra_cfg = compose(config_name="train", overrides=["experiment=arch_compare", "seeds=5"],
                            return_hydra_config=True)
    assert hydra_cfg.hydra.sweeper.params.seed == "1,2,3,4,5"


def test_arch_variants_set_their_architecture():
    assert compose_config("arch_variant=arch1_concat").arch.combine == "concat"
    assert compose_config("arch_variant=arch2_scheduled").arch.feedback == "scheduled"
    assert compose_config("arch_variant=deep").arch.num_layers == 3


def test_numbers_in_words():
    assert [number_words(n) for n in (0, 7, 13, 40, 42, 100, 407, 1042, 99999)] == [
        "zero", "seven", "thirteen", "forty", "forty two", "one hundred", "four hundred seven",
        "one thousand forty two", "ninety nine thousand nine hundred ninety nine"]


@pytest.mark.parametrize("context", ["init", "every_step", "both"])
def test_vector_to_sequence_feeds_the_vector_as_initial_state_every_step_or_both(context, tmp_path):
    from rnnexp.train import train

    config = tiny_seq2seq_config(tmp_path / "run", "data=number_words", "data.max_value=999", "data.valid_size=20",
                                 "arch.encoder=vector", f"arch.context={context}")
    data = load_seq2seq(config, tmp_path)
    source, lengths, target = next(iter(data.train))
    assert source.shape[0] == 3  # three digits, zero-padded: one fixed-size vector per number
    model = Seq2Seq(len(data.vocab.symbols), config.cell, config.arch, source_length=3)
    assert model.encoder is None and model.bridge.in_features == 3 * len(data.vocab.symbols)
    memory = model.start(source, lengths)
    h = memory["state"][0] if isinstance(memory["state"], tuple) else memory["state"]
    assert h.abs().sum() > 0 if context in ("init", "both") else h.abs().sum() == 0  # the vector starts it or not
    # every step: the decoder's input has the context beside the symbol's embedding
    every_step = context in ("every_step", "both")
    assert model.decoder.input_size == config.arch.embedding_dim + config.cell.hidden_size * every_step
    changed = source.clone()
    changed[0] = (changed[0] + 1) % 10 + 3  # another first digit: the output must depend on it
    assert not torch.allclose(model(source, lengths, target), model(changed, lengths, target))
    train(config)  # and it trains, with token and sequence accuracy
    assert "val/seq_acc" in json.loads((tmp_path / "run" / "result.json").read_text())["final"]


def test_vector_encoder_refuses_attention(tmp_path):
    from rnnexp.config import validate_config
    from rnnexp.errors import ConfigError
    from rnnexp.train import resolve

    config = tiny_seq2seq_config(tmp_path / "run", "data=number_words", "arch.encoder=vector", "arch.attention=true")
    with pytest.raises(ConfigError, match="arch.encoder=vector has no encoder states"):
        validate_config(resolve(config))


@pytest.mark.slow
def test_a_sweep_over_tasks_is_summarized_one_table_and_chart_per_metric(tmp_path):
    from tests.helpers import run_train

    sweep = tmp_path / "sweep"
    result = run_train("-m", "experiment=long_range", "seeds=1", "data=adding,copy_memory", "cell=rnn,gru",
                       "data.length=12", "data.train_batches=4",
                       "data.valid_size=8", "cell.hidden_size=8", "batch_size=4", "unroll=5", "trainer.max_steps=4",
                       "trainer.val_check_interval=2", "trainer.enable_progress_bar=false", "optim=adam",
                       f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = (sweep / "summary.md").read_text()
    assert summary.startswith("# sweep: 4 runs, by val/mse, val/loss")
    for metric in ("val/mse", "val/loss"):
        section = summary.split(f"## {metric}: 2 runs")[1].split("## ")[0]
        assert f"| best {metric} |" in section and section.count("| finished |") == 2
        assert "| cell |" in section  # swept within the section; data is not (one task per section)
    assert (sweep / "by_parameter.png").stat().st_size > 0 and (sweep / "curves.png").stat().st_size > 0
