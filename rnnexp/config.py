"""Checks on the composed config, made before any data is read or model built. Each problem is one
`ConfigError` line that names the setting and says what would work."""

from __future__ import annotations

from typing import Any

from rnnexp.errors import ConfigError

CELLS = ("rnn", "lstm", "gru")
IMPLS = ("fused", "scratch")
ACTIVATIONS = ("tanh", "relu")
COMBINES = ("sum", "concat", "product")


def _positive_int(cfg: dict[str, Any], key: str, name: str | None = None) -> None:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name or key} must be a positive integer, got {value!r}")


def _fraction(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ConfigError(f"{name} must be a number in [0, 1), got {value!r}")


def validate_config(cfg: dict[str, Any]) -> None:
    """Raise ConfigError for the first setting that cannot work. `cfg` is the resolved config."""
    cell, arch, data = cfg["cell"], cfg["arch"], cfg["data"]
    _positive_int(cfg, "unroll")
    _positive_int(cfg, "batch_size")
    _positive_int(cell, "hidden_size", "cell.hidden_size")
    _positive_int(arch, "embedding_dim", "arch.embedding_dim")
    if not isinstance(cfg["lr"], int | float) or cfg["lr"] <= 0:
        raise ConfigError(f"lr must be a positive number, got {cfg['lr']!r}")
    if cfg["clip"] is not None and (not isinstance(cfg["clip"], int | float) or cfg["clip"] < 0):
        raise ConfigError(f"clip must be a number >= 0 (0 turns clipping off), got {cfg['clip']!r}")
    if isinstance(cfg["seed"], bool) or not isinstance(cfg["seed"], int):
        raise ConfigError(f"seed must be an integer, got {cfg['seed']!r}")

    if cell["name"] not in CELLS:
        raise ConfigError(f"cell.name must be one of {', '.join(CELLS)}, got {cell['name']!r}")
    if cell["impl"] not in IMPLS:
        raise ConfigError(f"cell.impl must be fused or scratch, got {cell['impl']!r}")
    if cell["name"] == "rnn" and cell["activation"] not in ACTIVATIONS:
        raise ConfigError(f"cell.activation must be tanh or relu, got {cell['activation']!r}")
    if arch["combine"] not in COMBINES:
        raise ConfigError(f"arch.combine must be one of {', '.join(COMBINES)}, got {arch['combine']!r}")
    if arch["combine"] != "sum" and cell["name"] != "rnn":
        raise ConfigError(
            f"arch.combine={arch['combine']} is defined for the vanilla rnn cell only; "
            f"cell={cell['name']} combines its gates by sum (arch.combine=sum)"
        )
    if arch["combine"] != "sum" and cell["impl"] == "fused":
        raise ConfigError(
            f"arch.combine={arch['combine']} exists on the scratch path only: add cell.impl=scratch "
            "(torch's fused kernels compute the sum U x + W h)"
        )
    _fraction(arch["dropout"], "arch.dropout")
    if "num_layers" in arch:
        _positive_int(arch, "num_layers", "arch.num_layers")
    if arch["name"] == "arch2" and arch["feedback"] not in ("teacher", "sampled", "scheduled"):
        raise ConfigError(f"arch.feedback must be teacher, sampled or scheduled, got {arch['feedback']!r}")
    task = data.get("task", "lm")
    if (arch["name"] == "seq2seq") != (task == "seq2seq"):
        raise ConfigError(
            f"data={data['name']} is a sequence-to-sequence task: use arch=seq2seq" if task == "seq2seq" else
            f"arch=seq2seq needs a sequence-to-sequence task (data=reverse, copy, sort, addition or parallel_text), "
            f"not data={data['name']}"
        )
    if arch["name"] == "arch2" and task != "lm":
        raise ConfigError(
            f"arch=arch2 feeds back its predicted next symbol: it is a language model, not for data={data['name']}"
        )
    if arch.get("combine", "sum") != "sum" and arch["name"] in ("arch2", "seq2seq"):
        raise ConfigError(
            f"arch.combine={arch['combine']} applies to arch1, deep and bidirectional, not arch={arch['name']}"
        )
    if task == "seq2seq" and data["name"] != "parallel_text":
        _validate_generated_task(data)
    if arch["name"] == "seq2seq":
        if arch["context"] not in ("init", "every_step", "both"):
            raise ConfigError(f"arch.context must be init, every_step or both, got {arch['context']!r}")
        if arch["encoder_hidden_size"] is not None:
            _positive_int(arch, "encoder_hidden_size", "arch.encoder_hidden_size")
        if not 0 <= arch["teacher_forcing"] <= 1:
            raise ConfigError(f"arch.teacher_forcing must be in [0, 1], got {arch['teacher_forcing']!r}")
        _positive_int(cfg["decode"], "beam_size", "decode.beam_size")
    if arch["name"] == "bidirectional" and task == "lm":
        raise ConfigError(
            "arch=bidirectional cannot be a causal language model: its backward RNN reads the very symbols it "
            "must predict; use it on a task that gives the whole input, e.g. data=segmentation"
        )

    if "val_fraction" in data:  # corpora in one file, split by fractions
        _fraction(data["val_fraction"], "data.val_fraction")
        _fraction(data.get("test_fraction", 0.0), "data.test_fraction")
        if data["val_fraction"] <= 0:
            raise ConfigError("data.val_fraction must be > 0: validation needs some text")
        if data["val_fraction"] + data.get("test_fraction", 0.0) >= 1:
            raise ConfigError("data.val_fraction + data.test_fraction must leave some text for training")
    if data.get("normalize") not in (None, "text8"):
        raise ConfigError(f"data.normalize must be null or text8, got {data['normalize']!r}")
    tokenizer = cfg["tokenizer"]
    if tokenizer["name"] == "word" and tokenizer["vocab_size"] is not None:
        _positive_int(tokenizer, "vocab_size", "tokenizer.vocab_size")
    if tokenizer["name"] == "byte" and data.get("normalize"):
        raise ConfigError("data.normalize works on characters: use tokenizer=char with it, not byte")

    if cfg["optim"]["name"] == "sgd" and cfg["optim"]["momentum"] < 0:
        raise ConfigError(f"optim.momentum must be >= 0, got {cfg['optim']['momentum']!r}")
    sched = cfg["sched"]
    if sched["name"] == "exponential":
        if not 0 < sched["decay_rate"] <= 1:
            raise ConfigError(f"sched.decay_rate must be in (0, 1], got {sched['decay_rate']!r}")
        _positive_int(sched, "decay_steps", "sched.decay_steps")
    limit = cfg["trainer"].get("limit_val_batches", 1.0)
    if limit is not None and limit <= 0:
        raise ConfigError(f"trainer.limit_val_batches must be > 0: every run is judged on validation, got {limit}")
    if cfg["guard"]["on_nonfinite"] not in ("stop", "skip"):
        raise ConfigError(f"guard.on_nonfinite must be stop or skip, got {cfg['guard']['on_nonfinite']!r}")
    if not isinstance(cfg["guard"]["explode_factor"], int | float) or cfg["guard"]["explode_factor"] < 0:
        raise ConfigError(f"guard.explode_factor must be a number >= 0, got {cfg['guard']['explode_factor']!r}")
    if cfg["sample"]["temperature"] <= 0:
        raise ConfigError(f"sample.temperature must be > 0, got {cfg['sample']['temperature']!r}")
    if cfg["sample"]["length"] < 0:
        raise ConfigError(f"sample.length must be >= 0, got {cfg['sample']['length']!r}")


def _validate_generated_task(data: dict[str, Any]) -> None:
    for key in ("train_batches", "valid_size", *(("max_digits",) if data["name"] == "addition" else
                                                ("num_symbols", "min_length", "max_length"))):
        _positive_int(data, key, f"data.{key}")
    if data["name"] != "addition":
        if data["num_symbols"] > 26:
            raise ConfigError(f"data.num_symbols must be at most 26 (the letters a-z), got {data['num_symbols']}")
        if data["min_length"] > data["max_length"]:
            raise ConfigError(f"data.min_length ({data['min_length']}) must not exceed data.max_length "
                              f"({data['max_length']})")
