"""Checks on the composed config, made before any data is read or model built. Each problem is one
`ConfigError` line that names the setting and says what would work.

Two passes. `validate_config` needs neither torch nor Lightning, so a bad value is refused in about
the time of `--help`: keys first (a key that nothing reads is refused with the closest real key, so a
typo such as `+unrol=40` never trains with the default in silence; groups against their schema in
rnnexp/schema.py), then every value. `validate_components` then imports what the config names: the
task (its data keys and the architectures it takes), the cell (rnnexp/cells.py CELLS), and each
`_target_` object, whose keys must be arguments of its target.
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
import typing
from dataclasses import fields
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from rnnexp import schema
from rnnexp.errors import ConfigError, import_object

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
    """Raise ConfigError for the first setting that cannot work, of those that can be judged without
    importing torch, Lightning or the parts the config names. `cfg` is the resolved config."""
    check_keys(cfg)
    cell, arch, data = cfg["cell"], cfg["arch"], cfg["data"]
    _positive_int(cfg, "unroll")
    _positive_int(cfg, "batch_size")
    _positive_int(cell, "hidden_size", "cell.hidden_size")
    _positive_int(arch, "embedding_dim", "arch.embedding_dim")
    if not isinstance(cfg["lr"], int | float) or cfg["lr"] <= 0:
        raise ConfigError(f"lr must be a positive number, got {cfg['lr']!r}")
    if isinstance(cfg["scale"], bool) or not isinstance(cfg["scale"], int | float) or cfg["scale"] <= 0:
        raise ConfigError(f"scale must be a positive number, got {cfg['scale']!r}")
    _positive_int(cfg, "seeds")
    if cfg["clip"] is not None and (not isinstance(cfg["clip"], int | float) or cfg["clip"] < 0):
        raise ConfigError(f"clip must be a number >= 0 (0 turns clipping off), got {cfg['clip']!r}")
    if isinstance(cfg["seed"], bool) or not isinstance(cfg["seed"], int):
        raise ConfigError(f"seed must be an integer, got {cfg['seed']!r}")

    if cell["impl"] not in IMPLS:
        raise ConfigError(f"cell.impl must be fused or scratch, got {cell['impl']!r}")
    if cell.get("activation") is not None and cell["activation"] not in ACTIVATIONS:
        raise ConfigError(f"cell.activation must be tanh or relu, got {cell['activation']!r}")
    if cell["name"] == "custom" and cell["impl"] != "scratch":
        raise ConfigError("cell=custom runs your equations step by step: cell.impl must be scratch")
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
    for key in ("embedding_dropout", "input_dropout", "output_dropout", "weight_drop", "zoneout"):  # AWD-LSTM's
        if key in arch:
            _fraction(arch[key], f"arch.{key}")
    for key in ("ar", "tar"):
        if key in arch and (isinstance(arch[key], bool) or not isinstance(arch[key], int | float) or arch[key] < 0):
            raise ConfigError(f"arch.{key} must be a number >= 0 (0 turns it off), got {arch[key]!r}")
    if arch.get("zoneout") and cell["impl"] != "scratch":
        raise ConfigError("arch.zoneout acts between the steps of the scratch cells: add cell.impl=scratch "
                          "(torch's fused kernels run all steps inside one call)")
    if arch.get("tie_weights") and arch["embedding_dim"] != cell["hidden_size"]:
        raise ConfigError(f"arch.tie_weights shares one matrix between the embedding and the readout: it needs "
                          f"arch.embedding_dim = cell.hidden_size, got {arch['embedding_dim']} and "
                          f"{cell['hidden_size']}")
    if "num_layers" in arch:
        _positive_int(arch, "num_layers", "arch.num_layers")
    if arch["name"] == "arch2" and arch["feedback"] not in ("teacher", "sampled", "scheduled"):
        raise ConfigError(f"arch.feedback must be teacher, sampled or scheduled, got {arch['feedback']!r}")
    if arch["combine"] != "sum" and arch["name"] in ("arch2", "seq2seq"):
        raise ConfigError(
            f"arch.combine={arch['combine']} applies to arch1, deep and bidirectional, not arch={arch['name']}"
        )
    _validate_data(data)
    if arch["name"] == "seq2seq":
        if arch["encoder"] not in ("rnn", "vector"):
            raise ConfigError(f"arch.encoder must be rnn or vector, got {arch['encoder']!r}")
        if arch["encoder"] == "vector" and (arch["attention"] or arch["encoder_bidirectional"] or
                                             data["name"] == "parallel_text"):
            raise ConfigError("arch.encoder=vector has no encoder states: it takes a generated task's fixed-size "
                              "source, without attention or a bidirectional encoder")
        if arch["context"] not in ("init", "every_step", "both"):
            raise ConfigError(f"arch.context must be init, every_step or both, got {arch['context']!r}")
        if arch["encoder_hidden_size"] is not None:
            _positive_int(arch, "encoder_hidden_size", "arch.encoder_hidden_size")
        if not 0 <= arch["teacher_forcing"] <= 1:
            raise ConfigError(f"arch.teacher_forcing must be in [0, 1], got {arch['teacher_forcing']!r}")
        _positive_int(cfg["decode"], "beam_size", "decode.beam_size")
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

    if cfg["optim"].get("momentum", 0) < 0:
        raise ConfigError(f"optim.momentum must be >= 0, got {cfg['optim']['momentum']!r}")
    if cfg["ckpt_path"] is not None and cfg["init_from"] is not None:
        raise ConfigError("give ckpt_path (resume a run) or init_from (a new run from a checkpoint's weights), "
                          "not both: a run that started with init_from resumes with ckpt_path alone")
    _validate_schedule(cfg)
    limit = cfg["trainer"].get("limit_val_batches")  # None: every batch
    if limit is not None and limit <= 0:
        raise ConfigError(f"trainer.limit_val_batches must be > 0: every run is judged on validation, got {limit}")
    if cfg["guard"]["on_nonfinite"] not in ("stop", "skip"):
        raise ConfigError(f"guard.on_nonfinite must be stop or skip, got {cfg['guard']['on_nonfinite']!r}")
    if not isinstance(cfg["guard"]["explode_factor"], int | float) or cfg["guard"]["explode_factor"] < 0:
        raise ConfigError(f"guard.explode_factor must be a number >= 0, got {cfg['guard']['explode_factor']!r}")
    trainer = cfg["trainer"]
    if trainer.get("gradient_clip_val") is not None:  # the task clips (Task.on_before_optimizer_step)
        raise ConfigError("set the gradient clipping with the top-level clip, not trainer.gradient_clip_val "
                          f"(clip={cfg['clip']}, trainer.gradient_clip_val={trainer.get('gradient_clip_val')})")
    if trainer.get("gradient_clip_algorithm", "norm") != "norm":
        raise ConfigError("clip clips the total gradient norm (trainer.gradient_clip_algorithm=norm); "
                          f"got {trainer['gradient_clip_algorithm']!r}")
    max_time = trainer.get("max_time")  # Lightning's Timer takes DD:HH:MM:SS with two digits after the days
    if isinstance(max_time, str) and not re.fullmatch(r"\d+:\d\d:\d\d:\d\d", max_time.strip()):
        raise ConfigError(f"trainer.max_time must be DD:HH:MM:SS, two digits each after the days "
                          f"(e.g. 00:00:08:00 for 8 minutes), got {max_time!r}")
    # Each step's loss and gradient norm wait on the device for the next logging step (Task.count_train).
    _positive_int(trainer, "log_every_n_steps", "trainer.log_every_n_steps")
    wanted = cfg["steps_per_batch"]
    if wanted != "auto" and (isinstance(wanted, bool) or not isinstance(wanted, int) or wanted <= 0):
        raise ConfigError(f"steps_per_batch must be auto or a positive integer, got {wanted!r}")
    every = cfg["diagnostics"]["every_n_steps"]
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise ConfigError(f"diagnostics.every_n_steps must be an integer >= 0 (0: off), got {every!r}")
    if cfg["sample"]["temperature"] <= 0:
        raise ConfigError(f"sample.temperature must be > 0, got {cfg['sample']['temperature']!r}")
    for key in ("length", "val_length"):
        if cfg["sample"][key] < 0:
            raise ConfigError(f"sample.{key} must be >= 0, got {cfg['sample'][key]!r}")


# auto's largest: beyond it the saving is under 1% of a short step, and a stop (a signal, max_time,
# early stopping) waits for the batch to end.
MAX_STEPS_PER_BATCH = 32


def batch_boundaries(cfg: dict[str, Any]) -> dict[str, int]:
    """The step intervals at which something happens between Lightning batches, by setting: a batch of
    several steps must end on each (validation, the every-N-steps checkpoint, diagnostics)."""
    checkpoint = (cfg["callbacks"] or {}).get("model_checkpoint") or {}
    intervals = {"trainer.val_check_interval": cfg["trainer"].get("val_check_interval"),
                 "callbacks.model_checkpoint.every_n_steps": checkpoint.get("every_n_steps", 0),
                 "diagnostics.every_n_steps": cfg["diagnostics"]["every_n_steps"]}
    return {key: value for key, value in intervals.items() if isinstance(value, int) and value > 0}


def steps_per_batch(cfg: dict[str, Any], batch_holds_steps: bool) -> int:
    """How many optimizer steps one Lightning batch holds (`steps_per_batch`; see Task.training_step):
    `auto` is the largest number up to MAX_STEPS_PER_BATCH that divides every interval of
    `batch_boundaries`, and 1 where a batch cannot hold several steps: under DDP (each backward needs
    its own forward through DDP's wrapper), with weight averaging (Lightning averages after each
    batch), and for a task whose batch is one step's (`batch_holds_steps`: all but language models).
    A number is checked against the same rules."""
    wanted, trainer = cfg["steps_per_batch"], cfg["trainer"]
    if batch_holds_steps and not isinstance(trainer.get("val_check_interval"), int):
        raise ConfigError(f"trainer.val_check_interval must be a number of steps for a language model, which trains "
                          f"on its windows pass after pass without epochs, got {trainer.get('val_check_interval')!r}")
    several_processes = str(trainer.get("strategy", "auto")).startswith("ddp") or \
        str(trainer.get("devices", 1)) != "1" or trainer.get("num_nodes", 1) != 1
    one_only = ("several training processes (trainer.devices, trainer.strategy=ddp)" if several_processes else
                "weight averaging (callbacks.weight_average)" if (cfg["callbacks"] or {}).get("weight_average") else
                f"data={cfg['data']['name']}, whose batch is one step's" if not batch_holds_steps else None)
    if one_only is not None:
        if wanted not in ("auto", 1):
            raise ConfigError(f"steps_per_batch={wanted} is not possible with {one_only}: use steps_per_batch=auto")
        return 1
    boundaries = batch_boundaries(cfg)
    if wanted != "auto":
        for key, every in boundaries.items():
            if every % wanted:
                raise ConfigError(f"steps_per_batch={wanted} must divide {key}={every} (a batch of steps ends "
                                  "where it happens): give a divisor of it, or steps_per_batch=auto")
        return wanted
    common = math.gcd(*boundaries.values()) if boundaries else MAX_STEPS_PER_BATCH
    return max(k for k in range(1, MAX_STEPS_PER_BATCH + 1) if common % k == 0)


def _validate_data(data: dict[str, Any]) -> None:
    """The data keys that several tasks share, checked wherever they appear; then the rules of
    single built-in data sets."""
    for key in ("length", "train_batches", "valid_size", "num_symbols", "min_length", "max_length", "max_digits",
                "max_value"):
        if key in data:
            _positive_int(data, key, f"data.{key}")
    if data["name"] == "adding" and data["length"] < 2:
        raise ConfigError(f"data.length must be at least 2 for the adding problem (a marker in each half), "
                          f"got {data['length']}")
    if data["name"] == "number_words":
        if data["max_value"] >= 10**6:
            raise ConfigError(f"data.max_value must be below 1000000 (words up to thousands), got {data['max_value']}")
        if 2 * data["valid_size"] > data["max_value"] + 1:
            raise ConfigError(f"data.valid_size={data['valid_size']} would hold out over half of the "
                              f"{data['max_value'] + 1} numbers: give a larger data.max_value or a smaller valid_size")
    if "num_symbols" in data and data["num_symbols"] > 26:
        raise ConfigError(f"data.num_symbols must be at most 26 (the letters a-z), got {data['num_symbols']}")
    if "min_length" in data and "max_length" in data:
        if data["min_length"] > data["max_length"]:
            raise ConfigError(f"data.min_length ({data['min_length']}) must not exceed data.max_length "
                              f"({data['max_length']})")


def _validate_schedule(cfg: dict[str, Any]) -> None:
    sched, trainer = cfg["sched"], cfg["trainer"]
    target = sched.get("_target_") or ""
    if target.endswith("exponential_decay"):
        if not 0 < sched["decay_rate"] <= 1:
            raise ConfigError(f"sched.decay_rate must be in (0, 1], got {sched['decay_rate']!r}")
        _positive_int(sched, "decay_steps", "sched.decay_steps")
    if target.endswith("warmup_cosine"):
        if isinstance(sched["total_steps"], bool) or not isinstance(sched["total_steps"], int) or \
                sched["total_steps"] <= 0:
            raise ConfigError(f"sched=cosine needs sched.total_steps > 0 (it follows trainer.max_steps, here "
                              f"{trainer['max_steps']}): set trainer.max_steps or sched.total_steps")
        if not isinstance(sched["warmup_steps"], int) or sched["warmup_steps"] < 0:
            raise ConfigError(f"sched.warmup_steps must be an integer >= 0, got {sched['warmup_steps']!r}")
    if target.endswith("ReduceLROnPlateau"):
        if sched.get("mode", "min") != "min":
            raise ConfigError(f"sched.mode must be min: the plateau schedule follows val/loss, got {sched['mode']!r}")
        every, max_steps = trainer.get("val_check_interval"), trainer.get("max_steps", -1)
        if not isinstance(every, int) or (max_steps > 0 and every >= max_steps):
            raise ConfigError(
                f"sched=plateau lowers the lr when val/loss stops improving, but this run validates only at its end "
                f"(trainer.val_check_interval={every}, trainer.max_steps={max_steps}): validate more often"
            )


# --- keys --------------------------------------------------------------------------------------

def _unknown(key: str, known: list[str], where: str, target: bool = False) -> ConfigError:
    """'unknown key ...; did you mean ...?' with the closest known key, if any is close. A key of a
    `_target_` object is more often one its previous target took (betas, swapping Adam for
    Adagrad) than a typo: a closer match is asked for, and the way to drop the key is named."""
    section, _, name = key.rpartition(".")
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.7 if target else 0.5)
    prefix = f"{section}." if section else ""
    if close:
        hint = f"did you mean '{prefix}{close[0]}'?"
    elif target:
        hint = f"{where} takes: {', '.join(known)}; drop it with ~{key}"
    else:
        hint = f"{where} has: {', '.join(known)}"
    return ConfigError(f"unknown key '{key}'; {hint}")


def unknown_key_error(key: str, known: list[str], where: str, target: str | None = None) -> ConfigError:
    """The error for `key`, which the config does not hold (a command-line override without `+`),
    given the keys beside it, or, in a `_target_` object, the arguments of `target`."""
    if target is None:
        return _unknown(key, known, where)
    try:
        function = import_object(target, "_target_")
    except ConfigError:  # a target that does not import is reported when the run checks it
        return _unknown(key, known, where)
    arguments, _ = accepted_arguments(function, skip_first=key.startswith(("optim.", "sched.")))
    name = key.rpartition(".")[2]
    if arguments is None or name in arguments:
        return ConfigError(f"{key} is not set in this config; {target} takes it: add it with +{key}=...")
    return _unknown(key, sorted(arguments), target, target=True)


def _check_schema(values: dict[str, Any], dataclass: type, section: str, where: str) -> None:
    try:
        OmegaConf.merge(OmegaConf.structured(dataclass), values)
    except ConfigKeyError as e:
        holder = dataclass
        for part in e.full_key.split(".")[:-1]:  # the schema of the mapping that holds the unknown key
            holder = typing.get_type_hints(holder)[part]
        parent = e.full_key.rpartition(".")[0]
        raise _unknown(f"{section}{e.full_key}", [f.name for f in fields(holder)],
                       f"{section}{parent}" if parent else where) from None
    except ValidationError as e:
        raise ConfigError(f"{section}{e.full_key} has the wrong type: {str(e).splitlines()[0]}") from None


def check_keys(cfg: dict[str, Any]) -> None:
    """ConfigError for a key that no part of rnnexp reads, naming the closest real one: the keys
    whose schema is known without importing anything (the top level, arch, tokenizer, cell)."""
    _check_schema(cfg, schema.Train, "", "the top level")
    for group, options in schema.GROUPS.items():
        name = cfg[group].get("name")
        if name not in options:
            raise ConfigError(f"{group}.name must be one of {', '.join(options)}, got {name!r}: "
                              f"pick one with {group}=...")
        _check_schema(cfg[group], options[name], f"{group}.", f"{group}={name}")
    _check_schema(cfg["cell"], schema.cell_schema(cfg["cell"]), "cell.", f"cell={cfg['cell'].get('name')}")
    data = cfg["data"]
    for key in ("task", "name", "metric", "higher_is_better"):
        if key not in data:
            raise ConfigError(f"data.{key} is missing: every config in conf/data/ names its task (an import path), "
                              "name, metric and higher_is_better (see docs/extending.md)")
    if not isinstance(data["higher_is_better"], bool):
        raise ConfigError(f"data.higher_is_better must be true or false, got {data['higher_is_better']!r}")


def validate_components(cfg: dict[str, Any]) -> None:
    """The checks that import what the config names (torch, Lightning, the task, the cell, every
    `_target_`); run after `validate_config`, before any data is read."""
    from rnnexp.tasks import task_class

    task = task_class(cfg)
    _check_schema(cfg["data"], task.data_schema, "data.", f"data={cfg['data']['name']}")
    refusal = task.arch_refusal(cfg["arch"]["name"], cfg["data"]["name"])
    if refusal:
        raise ConfigError(refusal)
    from rnnexp.model import REGULARISERS
    from rnnexp.tasks.language_model import LanguageModelTask

    regularisers = [key for key, off in REGULARISERS.items() if cfg["arch"].get(key, off) != off]
    if regularisers and not issubclass(task, LanguageModelTask):
        raise ConfigError(f"arch.{regularisers[0]} regularises a language model (Arch 1, deep), not "
                          f"data={cfg['data']['name']}")
    _validate_cell(cfg["cell"])
    _check_target(cfg["optim"], "optim", skip_first=True, ours=("default_lr",), given=("lr",))
    if cfg["sched"].get("_target_") is not None:
        _check_target(cfg["sched"], "sched", skip_first=True)
    elif set(cfg["sched"]) - {"_target_"}:
        raise ConfigError(f"sched=none takes no settings, got {', '.join(sorted(set(cfg['sched']) - {'_target_'}))}")
    _check_target(cfg["trainer"], "trainer", given=("logger", "callbacks"))
    for group in ("logger", "callbacks"):
        for entry, values in (cfg[group] or {}).items():
            if values is not None:
                _check_target(values, f"{group}.{entry}")


def _check_target(values: dict[str, Any], section: str, skip_first: bool = False, ours: tuple = (),
                  given: tuple = ()) -> None:
    """The keys of a `_target_` object must be arguments of its target (or ours); required ones present."""
    if not isinstance(values, dict) or "_target_" not in values:
        raise ConfigError(f"{section} needs a _target_ (the class or function it builds)")
    target = import_object(values["_target_"], f"{section}._target_")
    if section == "optim":
        import torch

        if not (isinstance(target, type) and issubclass(target, torch.optim.Optimizer)):
            raise ConfigError(f"optim._target_={values['_target_']} is not a torch.optim.Optimizer")
    arguments, required = accepted_arguments(target, skip_first)
    if arguments is None:  # it takes any keyword
        return
    keys = [k for k in values if k not in ("_target_", "_partial_", *ours)]
    for key in keys:
        if key in given:
            source = ", from the top-level lr" if key == "lr" else ""
            raise ConfigError(f"{section}.{key} is set by rnnexp itself{source}")
        if key not in arguments:
            raise _unknown(f"{section}.{key}", sorted((arguments | set(ours)) - set(given)), values["_target_"],
                           target=True)
    missing = [k for k in required if k not in keys and k not in given]
    if missing:
        raise ConfigError(f"{section} ({values['_target_']}) needs {', '.join(missing)}: "
                          f"add +{section}.{missing[0]}=...")


# Library classes whose **kwargs go to one other class, checked against that class's arguments.
KWARGS_GO_TO = {"pytorch_lightning.loggers.tensorboard.TensorBoardLogger.__init__":
                "torch.utils.tensorboard.SummaryWriter"}


def accepted_arguments(target: Any, skip_first: bool) -> tuple[set[str] | None, list[str]]:
    """The keyword arguments a class or function takes (None: any, it has **kwargs), and the
    required ones. Our own subclasses that pass **kwargs on are followed to their parents."""
    names: set[str] = set()
    required: list[str] = []
    functions = [c.__init__ for c in target.__mro__ if "__init__" in vars(c)] if isinstance(target, type) \
        else [target]
    for depth, function in enumerate(functions):
        parameters = list(inspect.signature(function).parameters.values())
        if parameters and parameters[0].name == "self":
            parameters = parameters[1:]
        if skip_first and depth == 0:
            parameters = parameters[1:]  # the params of an optimizer, the optimizer of a schedule
        named = [p for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        names |= {p.name for p in named}
        required += [p.name for p in named if p.default is p.empty and p.name not in required]
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            return names, required
        passed_on = KWARGS_GO_TO.get(f"{getattr(function, '__module__', '')}.{function.__qualname__}")
        if passed_on is not None:  # e.g. TensorBoardLogger hands **kwargs to SummaryWriter
            functions[depth + 1:] = [import_object(passed_on, "_target_").__init__]
        elif not getattr(function, "__module__", "").startswith("rnnexp."):
            return None, required  # a library's **kwargs: anything may be meant
    return None, required


def _validate_cell(cell: dict[str, Any]) -> None:
    from rnnexp.cells import CELLS

    name = cell["name"]
    if name == "custom":
        _check_custom_cell(cell["_target_"], cell["hidden_size"])
        return
    if name not in CELLS:
        raise ConfigError(f"cell.name must be one of {', '.join([*CELLS, 'custom'])}, got {name!r}")
    kind = CELLS[name]
    if cell["variant"] not in kind.variants:
        raise ConfigError(f"cell.variant must be one of {', '.join(kind.variants)} for cell={name}, "
                          f"got {cell['variant']!r}")
    if kind.activation != (cell.get("activation") is not None):
        raise ConfigError(f"cell={name} needs cell.activation (tanh or relu)" if kind.activation else
                          f"cell.activation is a setting of the cells that apply one ("
                          f"{', '.join(n for n, k in CELLS.items() if k.activation)}), not of cell={name}")
    variant = kind.variants[cell["variant"]]
    if cell["impl"] == "fused" and not (variant.fused and kind.fused):
        what = f"cell={name}" if cell["variant"] == "standard" else f"cell.variant={cell['variant']}"
        raise ConfigError(f"{what} has no fused kernel: add cell.impl=scratch")
    if variant.identity_init and cell["activation"] != "relu":
        raise ConfigError("cell.variant=irnn is a ReLU RNN with an identity recurrent matrix: add cell.activation=relu")


def _check_custom_cell(target: str, hidden_size: int) -> None:
    """A custom cell must import, build as cls(input_size, hidden_size), and step (x, h) -> h."""
    import torch

    cls = import_object(target, "cell._target_")
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ConfigError(f"cell._target_={target} is not a torch.nn.Module class")
    try:
        cell = cls(3, hidden_size)
        h = cell(torch.zeros(2, 3), torch.zeros(2, hidden_size))
    except Exception as e:
        raise ConfigError(f"cell._target_={target} must be built as {cls.__name__}(input_size, hidden_size) and "
                          f"step as h = cell(x, h); trying it gave {type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if not isinstance(h, torch.Tensor) or tuple(h.shape) != (2, hidden_size) or h.dtype != torch.float32:
        got = f"{tuple(h.shape)} {h.dtype}" if isinstance(h, torch.Tensor) else type(h).__name__
        raise ConfigError(f"cell._target_={target} must return the next h, shaped (batch, hidden_size) = "
                          f"(2, {hidden_size}) here, in the dtype of its inputs (float32); it returned {got}")
