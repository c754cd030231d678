"""Every value check of rnnexp/config.py, in milliseconds: a composed config with one value changed is
refused with its exact line, and the same setting at the edge of what works passes (a check that
refused too much, or said the wrong thing, fails here). tests/test_bad_inputs.py runs a case of each
kind through the whole run; these cover the rest."""

import copy
from dataclasses import fields
from functools import cache

import pytest

from rnnexp import schema
from rnnexp.config import validate_components, validate_config
from rnnexp.errors import ConfigError
from rnnexp.train import resolve
from tests.helpers import compose_config

BASES = {  # composed once each; every case changes values of one of them
    "lm": ("data=text_file", "data.path=t.txt", "run_dir=run"),
    "rnn": ("data=text_file", "data.path=t.txt", "run_dir=run", "cell=rnn"),
    "word": ("data=text_file", "data.path=t.txt", "run_dir=run", "tokenizer=word"),
    "byte": ("data=text_file", "data.path=t.txt", "run_dir=run", "tokenizer=byte"),
    "sgd": ("data=text_file", "data.path=t.txt", "run_dir=run", "optim=sgd"),
    "arch2": ("data=text_file", "data.path=t.txt", "run_dir=run", "arch=arch2"),
    "seq2seq": ("arch=seq2seq", "data=reverse", "run_dir=run"),
    "adding": ("data=adding", "run_dir=run"),
    "number_words": ("arch=seq2seq", "data=number_words", "run_dir=run"),
    "addition": ("arch=seq2seq", "data=addition", "run_dir=run"),
    "exponential": ("data=text_file", "data.path=t.txt", "run_dir=run", "sched=exponential"),
    "cosine": ("data=text_file", "data.path=t.txt", "run_dir=run", "sched=cosine", "trainer.max_steps=100"),
    "plateau": ("data=text_file", "data.path=t.txt", "run_dir=run", "sched=plateau", "trainer.max_steps=100",
                "trainer.val_check_interval=10"),
    "nosched": ("data=text_file", "data.path=t.txt", "run_dir=run", "sched=none"),
    "deep": ("data=text_file", "data.path=t.txt", "run_dir=run", "arch=deep"),
    "parallel": ("arch=seq2seq", "data=parallel_text", "data.path=pairs.tsv", "run_dir=run"),
    "custom": ("data=text_file", "data.path=t.txt", "run_dir=run", "cell=custom",
               "cell._target_=examples.minimal_cell.LeakyRNNCell", "cell.hidden_size=16"),
}


@cache
def _base(name: str) -> dict:
    return resolve(compose_config(*BASES[name]))


class Drop:
    """A change that removes the key (named in the test's id, the same in every process)."""

    def __repr__(self) -> str:
        return "DROP"


DROP = Drop()


def config(name: str, **changes) -> dict:
    """Base `name` with `changes` made, a dotted key given with `__` for each dot."""
    cfg = copy.deepcopy(_base(name))
    for key, value in changes.items():
        *groups, last = key.split("__")
        holder = cfg
        for group in groups:
            holder = holder[group]
        if value is DROP:
            del holder[last]
        else:
            holder[last] = value
    return cfg


REFUSED = [
    ("lm", {"scale": 0}, "scale must be a positive number, got 0"),
    ("lm", {"scale": -0.5}, "scale must be a positive number, got -0.5"),
    ("lm", {"scale": "0.5"}, "scale must be a positive number, got '0.5'"),  # quoted in a YAML file
    *[("lm", {f"arch__{key}": 1.0}, f"arch.{key} must be a number in [0, 1), got 1.0")  # AWD-LSTM's regularisers
      for key in ("embedding_dropout", "input_dropout", "output_dropout", "weight_drop", "zoneout")],
    ("lm", {"arch__ar": -1.0}, "arch.ar must be a number >= 0 (0 turns it off), got -1.0"),
    ("lm", {"arch__zoneout": 0.1}, "arch.zoneout acts between the steps of the scratch cells: add cell.impl=scratch "
     "(torch's fused kernels run all steps inside one call)"),
    ("lm", {"arch__tar": "2"}, "arch.tar must be a number >= 0 (0 turns it off), got '2'"),
    ("lm", {"seed": "3"}, "seed must be an integer, got '3'"),
    ("lm", {"unroll": 0}, "unroll must be a positive integer, got 0"),
    ("lm", {"clip": -0.5}, "clip must be a number >= 0 (0 turns clipping off), got -0.5"),
    ("lm", {"cell__impl": "cuda"}, "cell.impl must be fused or scratch, got 'cuda'"),
    ("rnn", {"cell__activation": "sigmoid"}, "cell.activation must be tanh or relu, got 'sigmoid'"),
    ("custom", {"cell__impl": "fused"}, "cell=custom runs your equations step by step: cell.impl must be scratch"),
    ("lm", {"arch__combine": "max"}, "arch.combine must be one of sum, concat, product, got 'max'"),
    ("lm", {"arch__combine": "concat", "cell__impl": "scratch"},
     "arch.combine=concat is defined for the vanilla rnn cell only; cell=lstm combines its gates by sum "
     "(arch.combine=sum)"),
    ("rnn", {"arch__combine": "product"},
     "arch.combine=product exists on the scratch path only: add cell.impl=scratch (torch's fused kernels compute "
     "the sum U x + W h)"),
    ("lm", {"arch__dropout": 1}, "arch.dropout must be a number in [0, 1), got 1"),
    ("lm", {"data__val_fraction": True}, "data.val_fraction must be a number in [0, 1), got True"),
    ("lm", {"data__test_fraction": False}, "data.test_fraction must be a number in [0, 1), got False"),
    ("lm", {"data__test_fraction": "0.1"}, "data.test_fraction must be a number in [0, 1), got '0.1'"),
    ("arch2", {"arch__feedback": "random"}, "arch.feedback must be teacher, sampled or scheduled, got 'random'"),
    ("seq2seq", {"arch__encoder": "cnn"}, "arch.encoder must be rnn or vector, got 'cnn'"),
    ("seq2seq", {"arch__encoder": "vector", "arch__attention": True},
     "arch.encoder=vector has no encoder states: it takes a generated task's fixed-size source, without attention "
     "or a bidirectional encoder"),
    ("seq2seq", {"arch__encoder": "vector", "arch__attention": False, "arch__encoder_bidirectional": True},
     "arch.encoder=vector has no encoder states: it takes a generated task's fixed-size source, without attention "
     "or a bidirectional encoder"),
    ("seq2seq", {"arch__context": "never"}, "arch.context must be init, every_step or both, got 'never'"),
    ("seq2seq", {"arch__encoder_hidden_size": 0}, "arch.encoder_hidden_size must be a positive integer, got 0"),
    ("seq2seq", {"arch__teacher_forcing": 1.5}, "arch.teacher_forcing must be in [0, 1], got 1.5"),
    ("seq2seq", {"arch__teacher_forcing": -0.5}, "arch.teacher_forcing must be in [0, 1], got -0.5"),
    ("lm", {"data__val_fraction": 0.0}, "data.val_fraction must be > 0: validation needs some text"),
    ("lm", {"data__val_fraction": 1.0}, "data.val_fraction must be a number in [0, 1), got 1.0"),
    ("lm", {"data__test_fraction": -0.1}, "data.test_fraction must be a number in [0, 1), got -0.1"),
    ("lm", {"data__val_fraction": 0.5, "data__test_fraction": 0.5},
     "data.val_fraction + data.test_fraction must leave some text for training"),
    ("lm", {"data__normalize": "lower"}, "data.normalize must be null or text8, got 'lower'"),
    ("word", {"tokenizer__vocab_size": 0}, "tokenizer.vocab_size must be a positive integer, got 0"),
    ("byte", {"data__normalize": "text8"}, "data.normalize works on characters: use tokenizer=char with it, not byte"),
    ("sgd", {"optim__momentum": -0.9}, "optim.momentum must be >= 0, got -0.9"),
    ("lm", {"guard__explode_factor": -1}, "guard.explode_factor must be a number >= 0, got -1"),
    ("lm", {"trainer__gradient_clip_val": 5.0},
     "set the gradient clipping with the top-level clip, not trainer.gradient_clip_val (clip=1.0, "
     "trainer.gradient_clip_val=5.0)"),
    ("lm", {"clip": 0, "trainer__gradient_clip_val": 0.5},
     "set the gradient clipping with the top-level clip, not trainer.gradient_clip_val (clip=0, "
     "trainer.gradient_clip_val=0.5)"),
    ("lm", {"trainer__gradient_clip_algorithm": "value"},
     "clip clips the total gradient norm (trainer.gradient_clip_algorithm=norm); got 'value'"),
    ("lm", {"diagnostics__every_n_steps": -1}, "diagnostics.every_n_steps must be an integer >= 0 (0: off), got -1"),
    ("lm", {"trainer__log_every_n_steps": 0}, "trainer.log_every_n_steps must be a positive integer, got 0"),
    ("lm", {"trainer__max_time": "00:00:8:00"},
     "trainer.max_time must be DD:HH:MM:SS, two digits each after the days (e.g. 00:00:08:00 for 8 minutes), "
     "got '00:00:8:00'"),
    ("lm", {"sample__temperature": 0.0}, "sample.temperature must be > 0, got 0.0"),
    ("lm", {"sample__length": -1}, "sample.length must be >= 0, got -1"),
    ("lm", {"sample__val_length": -1}, "sample.val_length must be >= 0, got -1"),
    ("adding", {"data__length": 2.5}, "data.length must be a positive integer, got 2.5"),
    ("adding", {"data__length": 1},
     "data.length must be at least 2 for the adding problem (a marker in each half), got 1"),
    ("adding", {"data__train_batches": 0}, "data.train_batches must be a positive integer, got 0"),
    ("adding", {"data__valid_size": 0}, "data.valid_size must be a positive integer, got 0"),
    ("number_words", {"data__max_value": 10**6},
     "data.max_value must be below 1000000 (words up to thousands), got 1000000"),
    ("number_words", {"data__max_value": 1998, "data__valid_size": 1000},
     "data.valid_size=1000 would hold out over half of the 1999 numbers: give a larger data.max_value or a "
     "smaller valid_size"),
    ("seq2seq", {"data__num_symbols": 0}, "data.num_symbols must be a positive integer, got 0"),
    ("seq2seq", {"data__min_length": 0}, "data.min_length must be a positive integer, got 0"),
    ("seq2seq", {"data__max_length": 2.5}, "data.max_length must be a positive integer, got 2.5"),
    ("addition", {"data__max_digits": 0}, "data.max_digits must be a positive integer, got 0"),
    ("number_words", {"data__max_value": True}, "data.max_value must be a positive integer, got True"),
    ("seq2seq", {"data__num_symbols": 27}, "data.num_symbols must be at most 26 (the letters a-z), got 27"),
    ("seq2seq", {"data__min_length": 4, "data__max_length": 3},
     "data.min_length (4) must not exceed data.max_length (3)"),
    ("exponential", {"sched__decay_rate": 0.0}, "sched.decay_rate must be in (0, 1], got 0.0"),
    ("exponential", {"sched__decay_rate": 1.5}, "sched.decay_rate must be in (0, 1], got 1.5"),
    ("exponential", {"sched__decay_steps": 0}, "sched.decay_steps must be a positive integer, got 0"),
    ("cosine", {"sched__total_steps": True},
     "sched=cosine needs sched.total_steps > 0 (it follows trainer.max_steps, here 100): set trainer.max_steps "
     "or sched.total_steps"),
    ("cosine", {"sched__total_steps": 0},
     "sched=cosine needs sched.total_steps > 0 (it follows trainer.max_steps, here 100): set trainer.max_steps "
     "or sched.total_steps"),
    ("cosine", {"sched__warmup_steps": -1}, "sched.warmup_steps must be an integer >= 0, got -1"),
    ("cosine", {"sched__warmup_steps": 1.5}, "sched.warmup_steps must be an integer >= 0, got 1.5"),
    ("plateau", {"sched__mode": "max"}, "sched.mode must be min: the plateau schedule follows val/loss, got 'max'"),
    ("plateau", {"trainer__val_check_interval": 100},
     "sched=plateau lowers the lr when val/loss stops improving, but this run validates only at its end "
     "(trainer.val_check_interval=100, trainer.max_steps=100): validate more often"),
    ("plateau", {"trainer__val_check_interval": 0.5},
     "sched=plateau lowers the lr when val/loss stops improving, but this run validates only at its end "
     "(trainer.val_check_interval=0.5, trainer.max_steps=100): validate more often"),
    ("lm", {"arch__tie_weights": True, "arch__embedding_dim": 64, "cell__hidden_size": 32},
     "arch.tie_weights shares one matrix between the embedding and the readout: it needs arch.embedding_dim = "
     "cell.hidden_size, got 64 and 32"),
    ("deep", {"arch__num_layers": 0}, "arch.num_layers must be a positive integer, got 0"),
    *[(base, {"cell__name": "rnn", "cell__activation": "tanh", "cell__impl": "scratch", "arch__combine": "concat"},
       f"arch.combine=concat applies to arch1, deep and bidirectional, not arch={base}")
      for base in ("arch2", "seq2seq")],
    ("parallel", {"arch__encoder": "vector"}, "arch.encoder=vector has no encoder states: it takes a generated "
     "task's fixed-size source, without attention or a bidirectional encoder"),
    ("seq2seq", {"decode__beam_size": 0}, "decode.beam_size must be a positive integer, got 0"),
    ("lm", {"ckpt_path": "a.ckpt", "init_from": "b.ckpt"}, "give ckpt_path (resume a run) or init_from (a new run "
     "from a checkpoint's weights), not both: a run that started with init_from resumes with ckpt_path alone"),
    ("lm", {"trainer__limit_val_batches": 0},
     "trainer.limit_val_batches must be > 0: every run is judged on validation, got 0"),
    ("lm", {"trainer__limit_val_batches": -0.5},
     "trainer.limit_val_batches must be > 0: every run is judged on validation, got -0.5"),
    ("lm", {"guard__on_nonfinite": "ignore"}, "guard.on_nonfinite must be stop or skip, got 'ignore'"),
    ("lm", {"guard__explode_factor": "3"}, "guard.explode_factor must be a number >= 0, got '3'"),
    *[("lm", {"trainer__max_time": bad}, "trainer.max_time must be DD:HH:MM:SS, two digits each after the days "
       f"(e.g. 00:00:08:00 for 8 minutes), got {bad!r}") for bad in ("00:00:08:00:00", "x00:00:08:00", "00:08:00")],
    *[("lm", {"steps_per_batch": bad}, f"steps_per_batch must be auto or a positive integer, got {bad!r}")
      for bad in (0, -2, True, 2.5, "4", "AUTO")],
    *[("lm", {"diagnostics__every_n_steps": bad},
       f"diagnostics.every_n_steps must be an integer >= 0 (0: off), got {bad!r}") for bad in ("10", "-1")],
    ("lm", {"data__task": DROP}, "data.task is missing: every config in conf/data/ names its task (an import path), "
     "name, metric and higher_is_better (see docs/extending.md)"),
    *[("lm", {f"data__{key}": DROP}, f"data.{key} is missing: every config in conf/data/ names its task (an import "
       "path), name, metric and higher_is_better (see docs/extending.md)") for key in ("metric", "higher_is_better")],
    ("lm", {"arch__name": "arch9"},
     "arch.name must be one of arch1, deep, bidirectional, arch2, seq2seq, got 'arch9': pick one with arch=..."),
    ("lm", {"tokenizer__name": DROP}, "tokenizer.name must be one of char, byte, word, got None: pick one with "
     "tokenizer=..."),
    ("lm", {"diagnostics__every_n_steps": True},  # the schema's types come first
     "diagnostics.every_n_steps has the wrong type: Value 'True' of type 'bool' could not be converted to Integer"),
    ("lm", {"arch__embedding_dim": "wide"},
     "arch.embedding_dim has the wrong type: Value 'wide' of type 'str' could not be converted to Integer"),
    ("lm", {"data__higher_is_better": "yes"}, "data.higher_is_better must be true or false, got 'yes'"),
    ("lm", {"data__higher_is_better": 1}, "data.higher_is_better must be true or false, got 1"),
    ("plateau", {"trainer__val_check_interval": 1, "trainer__max_steps": 1},  # the shortest budget
     "sched=plateau lowers the lr when val/loss stops improving, but this run validates only at its end "
     "(trainer.val_check_interval=1, trainer.max_steps=1): validate more often"),
]


@pytest.mark.parametrize("base,changes,message", REFUSED,
                         ids=[f"{b}:{','.join(f'{k}={v}' for k, v in c.items())}" for b, c, _ in REFUSED])
def test_a_value_that_cannot_work_is_refused_with_its_line(base, changes, message):
    with pytest.raises(ConfigError) as refused:
        validate_config(config(base, **changes))
    assert str(refused.value) == message


@pytest.mark.parametrize("base,section,where,dataclass", [
    ("lm", "", "the top level", schema.Train), ("lm", "arch", "arch=arch1", schema.Arch1),
    ("arch2", "arch", "arch=arch2", schema.Arch2), ("word", "tokenizer", "tokenizer=word", schema.WordTokenizer),
    ("lm", "cell", "cell=lstm", schema.Cell), ("custom", "cell", "cell=custom", schema.CustomCell),
    ("lm", "guard", "guard", schema.Guard), ("seq2seq", "decode", "decode", schema.Decode)])
def test_a_key_like_none_of_its_place_is_refused_with_the_keys_that_place_has(base, section, where, dataclass):
    key = f"{section}.qqqqqq" if section else "qqqqqq"
    with pytest.raises(ConfigError) as refused:
        validate_config(config(base, **{key.replace(".", "__"): 1}))
    assert str(refused.value) == f"unknown key '{key}'; {where} has: {', '.join(f.name for f in fields(dataclass))}"


PASSES = [  # each setting at the edge of what works
    ("lm", {}), ("lm", {"unroll": 1, "batch_size": 1, "scale": 0.001, "clip": 0, "lr": 1e-9, "seed": 0,
             "trainer__gradient_clip_val": None}),
    ("lm", {"clip": None, "trainer__gradient_clip_val": None}),
    ("lm", {"arch__dropout": 0.0}), ("lm", {"arch__dropout": 0.99}),
    ("rnn", {"cell__activation": "relu"}), ("rnn", {"arch__combine": "concat", "cell__impl": "scratch"}),
    ("seq2seq", {"arch__teacher_forcing": 0.0}), ("seq2seq", {"arch__teacher_forcing": 1.0}),
    ("seq2seq", {"arch__encoder": "vector", "arch__attention": False, "arch__encoder_bidirectional": False}),
    ("seq2seq", {"arch__context": "both", "arch__encoder_hidden_size": 1}),
    ("lm", {"data__val_fraction": 0.5, "data__test_fraction": 0.49}), ("lm", {"data__normalize": "text8"}),
    ("word", {"tokenizer__vocab_size": 1}), ("word", {"tokenizer__vocab_size": None}),
    ("sgd", {"optim__momentum": 0.0}),
    ("lm", {"guard__explode_factor": 0, "guard__on_nonfinite": "skip", "diagnostics__every_n_steps": 0}),
    ("lm", {"sample__length": 0, "sample__val_length": 0, "sample__temperature": 0.01}),
    ("adding", {"data__length": 2}),
    ("number_words", {"data__max_value": 999_999}),
    ("number_words", {"data__max_value": 1999, "data__valid_size": 1000}),
    ("seq2seq", {"data__num_symbols": 26, "data__min_length": 3, "data__max_length": 3}),
    ("exponential", {"sched__decay_rate": 1.0, "sched__decay_steps": 1}),
    ("cosine", {"sched__total_steps": 1, "sched__warmup_steps": 0}),
    ("plateau", {"trainer__val_check_interval": 99}),
    ("plateau", {"sched__mode": DROP}),  # ReduceLROnPlateau's default mode, min
    ("plateau", {"trainer__max_steps": DROP}),  # Lightning's default, -1: no budget in steps
    ("plateau", {"trainer__val_check_interval": 500, "trainer__max_steps": -1}),
    ("lm", {"arch__zoneout": 0.1, "cell__impl": "scratch"}), ("lm", {"arch__zoneout": 0.0}),
    ("lm", {"arch__tie_weights": True, "arch__embedding_dim": 32, "cell__hidden_size": 32}),
    ("lm", {"arch__tie_weights": DROP, "arch__embedding_dim": 64, "cell__hidden_size": 32}),
    ("deep", {"arch__num_layers": 1}), ("lm", {"arch__num_layers": DROP}),
    ("deep", {"cell__name": "rnn", "cell__activation": "tanh", "cell__impl": "scratch", "arch__combine": "concat"}),
    *[("arch2", {"arch__feedback": feedback}) for feedback in ("teacher", "sampled", "scheduled")],
    *[("seq2seq", {"arch__context": context}) for context in ("init", "every_step")],
    ("parallel", {}), ("seq2seq", {"arch__encoder_hidden_size": None, "decode__beam_size": 1}),
    ("lm", {"data__test_fraction": DROP, "data__val_fraction": 0.99}),
    ("lm", {"data__normalize": None}), ("lm", {"data__normalize": DROP}), ("byte", {"data__normalize": None}),
    ("lm", {"ckpt_path": "a.ckpt"}), ("lm", {"init_from": "b.ckpt"}),
    ("lm", {"trainer__limit_val_batches": None}), ("lm", {"trainer__limit_val_batches": DROP}),
    ("lm", {"trainer__limit_val_batches": 0.01}),
    ("lm", {"guard__on_nonfinite": "stop", "guard__explode_factor": 2.5}),
    ("lm", {"trainer__gradient_clip_algorithm": "norm"}),
    *[("lm", {"trainer__max_time": good}) for good in ("00:00:08:00", " 1:00:00:00 ", "10:23:59:59", None)],
    ("lm", {"trainer__max_time": {"minutes": 8}}), ("lm", {"trainer__max_time": DROP}),
    ("lm", {"trainer__log_every_n_steps": 1}),
    *[("lm", {"steps_per_batch": good}) for good in ("auto", 1, 32)],
    ("lm", {"diagnostics__every_n_steps": 1}),
    ("lm", {"data__higher_is_better": True}),
]


@pytest.mark.parametrize("base,changes", PASSES,
                         ids=[f"{b}:{','.join(f'{k}={v}' for k, v in c.items())}" for b, c in PASSES])
def test_a_value_at_the_edge_of_what_works_passes(base, changes):
    validate_config(config(base, **changes))


def test_the_built_in_configs_pass_the_component_checks():
    for name in ("lm", "rnn", "seq2seq", "plateau", "nosched", "custom"):
        validate_components(config(name))


COMPONENTS = [
    ("lm", {"cell__variant": "bogus"},
     "cell.variant must be one of standard, peephole, cifg, no_output_gate, no_forget_gate for cell=lstm, "
     "got 'bogus'"),
    ("rnn", {"cell__activation": None}, "cell=rnn needs cell.activation (tanh or relu)"),
    ("rnn", {"cell__variant": "irnn", "cell__impl": "scratch", "cell__activation": "tanh"},
     "cell.variant=irnn is a ReLU RNN with an identity recurrent matrix: add cell.activation=relu"),
    ("nosched", {"sched__foo": 1, "sched__bar": 2}, "sched=none takes no settings, got bar, foo"),
    ("lm", {"cell__name": "mgu", "cell__impl": "fused"}, "cell=mgu has no fused kernel: add cell.impl=scratch"),
    ("lm", {"data__zzzz": 1}, "unknown key 'data.zzzz'; data=text_file has: task, name, metric, higher_is_better, "
     "remote, member, path, folder, files, members, val_fraction, test_fraction, normalize"),
    ("lm", {"arch__name": "seq2seq"}, "arch=seq2seq needs a sequence-to-sequence task (data=reverse, copy, sort, "
     "addition, number_words or parallel_text), not data=text_file"),
    ("adding", {"arch__zoneout": 0.1}, "arch.zoneout regularises a language model (Arch 1, deep), not data=adding"),
    ("lm", {"optim__lr": 0.1}, "optim.lr is set by rnnexp itself, from the top-level lr"),
    ("lm", {"trainer__logger": False}, "trainer.logger is set by rnnexp itself"),
    ("lm", {"trainer__callbacks": []}, "trainer.callbacks is set by rnnexp itself"),
    ("lm", {"logger__extra": {"_target_": "tests.test_config_values.needs_two", "_partial_": True}},
     "logger.extra (tests.test_config_values.needs_two) needs first, second: add +logger.extra.first=..."),
    ("custom", {"cell___target_": "tests.helpers.DoubleCell"},
     "cell._target_=tests.helpers.DoubleCell must return the next h, shaped (batch, hidden_size) = (2, 16) here, "
     "in the dtype of its inputs (float32); it returned (2, 16) torch.float64"),
    ("custom", {"cell___target_": "tests.test_config_values.NotAModule"},
     "cell._target_=tests.test_config_values.NotAModule is not a torch.nn.Module class"),
    ("custom", {"cell___target_": "tests.test_config_values.ReturnsATuple"},
     "cell._target_=tests.test_config_values.ReturnsATuple must return the next h, shaped (batch, hidden_size) = "
     "(2, 16) here, in the dtype of its inputs (float32); it returned tuple"),
    ("custom", {"cell___target_": "tests.test_config_values.WrongShape"},
     "cell._target_=tests.test_config_values.WrongShape must return the next h, shaped (batch, hidden_size) = "
     "(2, 16) here, in the dtype of its inputs (float32); it returned (2, 3) torch.float32"),
    ("custom", {"cell___target_": "tests.test_config_values.FailsSilently"},
     "cell._target_=tests.test_config_values.FailsSilently must be built as FailsSilently(input_size, hidden_size) "
     "and step as h = cell(x, h); trying it gave ValueError: "),
    ("custom", {"cell___target_": "tests.test_config_values.FailsSaying"},  # its error's first line only
     "cell._target_=tests.test_config_values.FailsSaying must be built as FailsSaying(input_size, hidden_size) "
     "and step as h = cell(x, h); trying it gave ValueError: x has 3 features, expected 5"),
    ("custom", {"cell___target_": "tests.test_config_values.NoSuchCell"},  # the setting named
     "cell._target_=tests.test_config_values.NoSuchCell cannot be imported (AttributeError: module "
     "'tests.test_config_values' has no attribute 'NoSuchCell')"),
]


class NotAModule:
    def __init__(self, input_size: int, hidden_size: int) -> None:
        pass


def _module(step):
    import torch

    return type(step.__name__, (torch.nn.Module,), {"__init__": lambda self, i, h: torch.nn.Module.__init__(self),
                                                    "forward": step})


ReturnsATuple = _module(lambda self, x, h: (h,))
ReturnsATuple.__name__ = "ReturnsATuple"
WrongShape = _module(lambda self, x, h: x)
WrongShape.__name__ = "WrongShape"


def _fails(self, x, h):
    raise ValueError()


FailsSilently = _module(_fails)
FailsSilently.__name__ = "FailsSilently"


def _fails_saying(self, x, h):
    raise ValueError("x has 3 features, expected 5\n(the details after the first line)")


FailsSaying = _module(_fails_saying)
FailsSaying.__name__ = "FailsSaying"


@pytest.mark.parametrize("base,changes,message", COMPONENTS, ids=[m.split(" ")[0] for _, _, m in COMPONENTS])
def test_a_component_that_cannot_work_is_refused_with_its_line(base, changes, message):
    cfg = config(base, **changes)
    with pytest.raises(ConfigError) as refused:
        validate_components(cfg)
    assert str(refused.value) == message


def two_arguments(params, alpha=1.0, beta=2.0):
    """A `_target_` taking two settings after what rnnexp passes first (an optimizer's params)."""


def needs_two(first, second, third=3):
    """A `_target_` with two required arguments."""


def any_keyword(**kwargs):
    """A library's `_target_` that takes any keyword."""


TARGET = "tests.test_config_values.two_arguments"
KEY_ERRORS = [  # (key, the keys beside it, where, target): the line a key the config lacks gets
    (("cell.hiden_size", ["hidden_size", "impl"], "cell=lstm", None),
     "unknown key 'cell.hiden_size'; did you mean 'cell.hidden_size'?"),
    (("unrol", ["unroll", "lr"], "the top level", None), "unknown key 'unrol'; did you mean 'unroll'?"),
    (("cell.zzz", ["hidden_size", "impl"], "cell=lstm", None),
     "unknown key 'cell.zzz'; cell=lstm has: hidden_size, impl"),
    (("cell.hiden_size", ["hidden_size"], "cell=lstm", "no.such.module.Thing"),  # reported later, as it is
     "unknown key 'cell.hiden_size'; did you mean 'cell.hidden_size'?"),
    (("cell.zzz", ["hidden_size"], "cell=lstm", "no.such.module.Thing"),
     "unknown key 'cell.zzz'; cell=lstm has: hidden_size"),
    (("optim.beta", [], "optim", TARGET), f"optim.beta is not set in this config; {TARGET} takes it: add it "
     "with +optim.beta=..."),
    (("optim.alpah", [], "optim", TARGET), "unknown key 'optim.alpah'; did you mean 'optim.alpha'?"),
    (("optim.gamma", [], "optim", TARGET),
     f"unknown key 'optim.gamma'; {TARGET} takes: alpha, beta; drop it with ~optim.gamma"),
    (("optim.params", [], "optim", TARGET),  # the first argument is rnnexp's to pass, for optim and sched
     f"unknown key 'optim.params'; {TARGET} takes: alpha, beta; drop it with ~optim.params"),
    (("sched.params", [], "sched", TARGET),
     f"unknown key 'sched.params'; {TARGET} takes: alpha, beta; drop it with ~sched.params"),
    (("logger.x.params", [], "logger.x", TARGET), f"logger.x.params is not set in this config; {TARGET} takes it: "
     "add it with +logger.x.params=..."),
    (("logger.x.whatever", [], "logger.x", "tests.test_config_values.any_keyword"),
     "logger.x.whatever is not set in this config; tests.test_config_values.any_keyword takes it: add it with "
     "+logger.x.whatever=..."),
]


@pytest.mark.parametrize("arguments,message", KEY_ERRORS, ids=[a[0] for a, _ in KEY_ERRORS])
def test_a_key_the_config_lacks_is_named_with_the_closest_key_or_what_its_target_takes(arguments, message):
    from rnnexp.config import unknown_key_error

    assert str(unknown_key_error(*arguments)) == message


def test_our_own_class_takes_its_arguments_and_its_parents_and_needs_what_each_needs():
    """rnnexp's classes that pass **kwargs on (callbacks.EarlyStop) are followed to their parent; an
    argument that either requires is required."""
    from pytorch_lightning.callbacks import EarlyStopping

    from rnnexp.callbacks import EarlyStop
    from rnnexp.config import accepted_arguments

    def __init__(self, threshold: float, patience: int = 3, **kwargs) -> None:
        EarlyStopping.__init__(self, patience=patience, **kwargs)

    __init__.__module__ = "rnnexp.example"  # followed as rnnexp's own are (a test's are not)
    extended = type("ExtendedEarlyStop", (EarlyStopping,), {"__init__": __init__})
    names, required = accepted_arguments(extended, skip_first=False)
    assert {"threshold", "patience", "monitor", "min_delta", "mode"} <= names and "kwargs" not in names
    assert required == ["threshold", "monitor"]
    assert accepted_arguments(EarlyStop, skip_first=False)[1] == ["monitor"]
    assert accepted_arguments(extended, skip_first=True)[1] == ["monitor"]  # its first argument is rnnexp's to give

    def takes_any(self, size: int, **kwargs) -> None:
        pass

    takes_any.__module__ = "rnnexp.example"
    open_ended = type("OpenEnded", (), {"__init__": takes_any})  # followed to object.__init__, which has no module
    assert accepted_arguments(open_ended, skip_first=False) == (None, ["size"])
