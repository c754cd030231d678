"""The docs cannot drift: every `python train.py ...` command in README.md and docs/*.md composes with
Hydra and passes rnnexp's config checks, and every `scripts/*.py` command uses flags its script has.

What counts as a command: a line of a fenced code block (`\\` continues it on the next line), or an
inline code span, that starts with `python train.py` (or `python3`, `.venv/bin/python`) or with
`make train`, after any leading `VAR=value` environment assignments (those are set while composing).
`make train ARGS="..."` passes the words of ARGS to train.py; other make variables are ignored.
Text after ` #` is a shell comment.

How a command is composed, as train.py would (without training):
- `--cfg X`, `--package X`, `--resolve`, `--help`, `--hydra-help`, `--info` only change what train.py
  prints, so they are dropped; any other flag (`-cd DIR`, ...) fails the test until it has a rule.
- A single run composes in Hydra's RUN mode; `hydra.run.dir` gives `hydra.runtime.output_dir`, so
  `run_dir` and every `${hydra:...}` interpolation resolve.
- `-m` composes the sweep's own config (MULTIRUN mode, launcher and sweeper groups included), then
  jobs as Hydra's launchers do (`load_sweep_config`, `hydra.job.num`, `hydra.sweep.subdir`). Not every
  job: every value of every swept parameter (a comma list, `choice`, `range`, both ends of an
  `interval`; the preset's `hydra.sweeper.params` and the command line) in at least one job, the
  i-th job taking each parameter's i-th value. A 3 x 3 grid composes 3 jobs, not 9: a composition
  costs ~0.1-0.3 s, and the doc sweeps hold over 100 jobs.
- Each job's config is resolved (`rnnexp.train.resolve`: a `???` left unset fails) and checked with
  `rnnexp.config.validate_config`, which refuses unknown keys (`+unrol=40`) and bad values.

Placeholders, by rule:
- `<...>` standing alone (`<same options>`, `<model options>`) stands for options the reader repeats:
  it is dropped. `<...>` inside a value (`ckpt_path=outputs/runs/<run>`) becomes its word (`run`);
  a quoted `"<s>"` is a real value and stays.
- `mypackage.MyCell` stands for the reader's own cell: it is composed as examples.minimal_cell's.
- A command with `...` or an upper-case placeholder word (`NAME`, `N`, `DIR`, `CKPT`, `FILE`) in its
  arguments is not a runnable command: it is skipped, and the skip names it.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SCRIPTS = sorted((REPO / "scripts").glob("*.py"))

PYTHON = r"(?:python3?|\.venv/bin/python3?)"
TRAIN = re.compile(rf"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*(?:{PYTHON}\s+train\.py|make\s+train)(?:\s|$)")
SCRIPT = re.compile(rf"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*{PYTHON}\s+scripts/\w+\.py(?:\s|$)")
LONE_ANGLE = re.compile(r"(?<!\S)<[^<>\s\"'][^<>\"']*>(?!\S)")  # `<same options>` as a word of its own
INNER_ANGLE = re.compile(r"(?<![\"'<])<([A-Za-z][\w -]*)>(?![\"'>])")  # `outputs/runs/<run>`
SKIPPED = re.compile(r"\.\.\.|(?<!\w)(NAME|N|DIR|CKPT|FILE)(?!\w)")
SUBSTITUTES = {"mypackage.MyCell": "examples.minimal_cell.LeakyRNNCell"}
PRINT_FLAGS = {"--cfg": 1, "-c": 1, "--package": 1, "-p": 1, "--resolve": 0, "--help": 0, "-h": 0,
               "--hydra-help": 0, "--info": 0, "-i": 0}


@dataclass(frozen=True)
class Command:
    source: str  # file:line
    text: str  # as written
    program: str  # "train" or a script's file name
    env: tuple[tuple[str, str], ...]
    args: tuple[str, ...]  # the program's arguments, placeholders replaced
    skip: str | None = None  # why it is not run, if it is a placeholder
    error: str | None = None  # why it cannot be read as a command (fails the test)


def candidates(markdown: str) -> list[tuple[int, str]]:
    """(line number, text) of every code-block line (continuations joined) and inline code span."""
    found, prose = [], []
    in_fence, pending, start = False, "", 0
    for number, line in enumerate(markdown.splitlines(), 1):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence, pending = not in_fence, ""
            prose.append("")
            continue
        if not in_fence:
            prose.append(line)
            continue
        prose.append("")
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        found.append((start, 0, (pending + line).strip()))
        pending = ""
    text = "\n".join(prose)
    for match in re.finditer(r"`([^`]+)`", text):
        if "\n\n" not in match.group(1):  # a code span never crosses a paragraph
            found.append((text.count("\n", 0, match.start()) + 1, match.start(), " ".join(match.group(1).split())))
    return [(line, text) for line, _, text in sorted(found)]  # in the order they appear


def parse(text: str, source: str) -> Command | None:
    """The command in `text`, or None if it is not a train.py, make train or scripts/ command."""
    if not (TRAIN.match(text) or SCRIPT.match(text)):
        return None
    try:
        words = shlex.split(INNER_ANGLE.sub(lambda m: m.group(1).replace(" ", "_"), LONE_ANGLE.sub(" ", text)),
                            comments=True)
    except ValueError as e:  # unbalanced quotes: the reader's shell would not run it either
        return Command(source, text, "train", (), (), error=f"cannot be split as a shell would: {e}")
    env = []
    while "=" in words[0] and re.match(r"^[A-Za-z_]\w*=", words[0]):
        key, _, value = words.pop(0).partition("=")
        env.append((key, os.path.expanduser(value)))
    if words[0] == "make":  # make train [VAR=value ...]: ARGS goes to train.py
        program, args = "train", []
        for word in words[2:]:
            if word.startswith("ARGS="):
                args = shlex.split(word[len("ARGS="):])
    else:
        program = "train" if words[1] == "train.py" else Path(words[1]).name
        args = words[2:]
    args = [substitute(a) for a in args]
    placeholder = next((a for a in args if SKIPPED.search(a)), None)
    skip = f"placeholder {SKIPPED.search(placeholder).group(0)!r} in {placeholder!r}" if placeholder else None
    return Command(source, text, program, tuple(env), tuple(args), skip)


def substitute(arg: str) -> str:
    key, equals, value = arg.partition("=")
    return f"{key}={SUBSTITUTES[value]}" if equals and value in SUBSTITUTES else arg


def extract(markdown: str, name: str) -> list[Command]:
    commands = [parse(text, f"{name}:{line}") for line, text in candidates(markdown)]
    return [c for c in commands if c is not None]


def doc_commands() -> list[Command]:
    commands, seen = [], set()
    for path in DOC_FILES:
        for command in extract(path.read_text(encoding="utf-8"), path.relative_to(REPO).as_posix()):
            key = (command.source.split(":")[0], command.program, command.env, command.args)
            if key not in seen:  # the same command twice in one file is checked once
                seen.add(key)
                commands.append(command)
    return commands


class JobError(Exception):
    """One job of a doc sweep does not compose or validate (the message names its overrides)."""


def split_flags(args: tuple[str, ...]) -> tuple[bool, list[str]]:
    """(multirun?, Hydra overrides): flags that only change what is printed are dropped."""
    multirun, overrides, words = False, [], list(args)
    while words:
        word = words.pop(0)
        if word in ("-m", "--multirun"):
            multirun = True
        elif word in PRINT_FLAGS:
            del words[:PRINT_FLAGS[word]]
        elif word in ("--config-dir", "-cd"):  # Hydra adds the folder to the search path
            overrides.append(f"hydra.searchpath=[file://{words.pop(0)}]")
        elif word.startswith("-"):
            raise ValueError(f"no rule for the flag {word!r} in tests/test_docs.py: add one")
        else:
            overrides.append(word)
    return multirun, overrides


def job_overrides(master, task: list[str]) -> list[list[str]]:
    """The overrides of the jobs to compose for a sweep: every value of every swept parameter (every
    choice, both ends of an interval) in at least one job, the i-th job taking each parameter's i-th
    value (the grid's diagonal: a 3 x 3 grid gives 3 jobs, not 9). The parameters are the sweep
    preset's `hydra.sweeper.params`, replaced key by key by the command line, as both sweepers do."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep

    parser = OverridesParser.create()
    params = [f"{key}={value}" for key, value in (master.hydra.sweeper.get("params") or {}).items()]
    if master.hydra.sweeper._target_.endswith("BasicSweeper"):  # refuses what Hydra's grid refuses
        BasicSweeper.split_arguments(parser.parse_overrides(params + task), None)
    space = {}
    for override in parser.parse_overrides(params + task):
        key = override.get_key_element()
        if isinstance(override.value(), IntervalSweep):
            sweep = override.value()
            space[key] = [f"{key}={int(x) if 'int' in sweep.tags else x}" for x in (sweep.start, sweep.end)]
        elif override.is_discrete_sweep():
            space[key] = [f"{key}={x}" for x in override.sweep_string_iterator()]
        else:
            space[key] = [f"{key}={override.get_value_element_as_str()}"]
    size = max((len(values) for values in space.values()), default=1)
    return [[values[i % len(values)] for values in space.values()] for i in range(size)]


def finish(cfg, dir_key: str, subdir_key: str | None) -> dict:
    """As hydra.core.utils.run_job sets a job up, then rnnexp's resolve and validate_config."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict, read_write

    from rnnexp.config import validate_config
    from rnnexp.train import resolve

    HydraConfig.instance().set_config(cfg)
    output_dir = str(OmegaConf.select(cfg, dir_key))
    if subdir_key is not None:
        output_dir = os.path.join(output_dir, str(OmegaConf.select(cfg, subdir_key)))
    with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = os.path.abspath(output_dir)
    HydraConfig.instance().set_config(cfg)
    OmegaConf.select(cfg, "hydra.output_subdir")  # the Hydra settings conf/ sets must resolve too
    OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    with open_dict(cfg):
        del cfg["hydra"]
    config = resolve(cfg)
    validate_config(config)
    return config


def compose_command(args: tuple[str, ...], env: tuple[tuple[str, str], ...] = ()) -> list[dict]:
    """The resolved, validated config of every job the command would run; raises what train.py would."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from rnnexp.resolvers import register

    register()
    multirun, overrides = split_flags(args)
    saved = {key: os.environ.get(key) for key, _ in env}
    os.environ.update(dict(env))
    try:
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3", job_name="train"):
            hydra = GlobalHydra.instance().hydra
            if not multirun:
                cfg = hydra.compose_config("train", overrides, run_mode=RunMode.RUN)
                with open_dict(cfg):
                    cfg.hydra.mode = RunMode.RUN
                return [finish(cfg, "hydra.run.dir", None)]
            master = hydra.compose_config("train", overrides, run_mode=RunMode.MULTIRUN)
            jobs = job_overrides(master, list(master.hydra.overrides.task))
            configs = []
            for number, job in enumerate(jobs):
                cfg = hydra.config_loader.load_sweep_config(master, list(job))
                with open_dict(cfg):
                    cfg.hydra.job.id = cfg.hydra.job.num = number
                try:
                    configs.append(finish(cfg, "hydra.sweep.dir", "hydra.sweep.subdir"))
                except Exception as e:
                    raise JobError(f"job {number} ({' '.join(job)}): {type(e).__name__}: {e}") from e
            return configs
    finally:
        HydraConfig.instance().cfg = None
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@functools.cache
def composed(args: tuple[str, ...], env: tuple[tuple[str, str], ...]) -> list[dict]:
    return compose_command(args, env)


COMMANDS = doc_commands()
TRAIN_COMMANDS = [c for c in COMMANDS if c.program == "train"]
SCRIPT_COMMANDS = [c for c in COMMANDS if c.program != "train"]


def command_id(command: Command) -> str:
    return f"{command.source} {' '.join(command.args)}"[:120]


@pytest.mark.parametrize("command", TRAIN_COMMANDS, ids=command_id)
def test_doc_command_composes_and_validates(command: Command):
    assert command.error is None, f"{command.source}: `{command.text}` {command.error}"
    if command.skip:
        pytest.skip(f"{command.source}: {command.skip}")
    try:
        configs = composed(command.args, command.env)
    except Exception as e:
        pytest.fail(f"{command.source}: `{command.text}` does not compose: {type(e).__name__}: {e}", pytrace=False)
    assert configs


@functools.cache
def script_help(script: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"scripts/{script}", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("script", [s.name for s in SCRIPTS])
def test_script_help_runs(script: str):
    result = script_help(script)
    assert result.returncode == 0, f"scripts/{script} --help: {result.stderr[-2000:]}"
    assert "usage:" in result.stdout


@pytest.mark.parametrize("command", SCRIPT_COMMANDS, ids=command_id)
def test_doc_script_command_uses_flags_the_script_has(command: Command):
    assert (REPO / "scripts" / command.program).is_file(), f"{command.source}: no scripts/{command.program}"
    options = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", script_help(command.program).stdout))
    unknown = [a for a in command.args if a.startswith("-") and a != "-" and a.split("=")[0] not in options]
    assert not unknown, f"{command.source}: `{command.text}` uses {unknown}, not in scripts/{command.program} --help"


def test_the_docs_have_commands_to_check():
    assert len(TRAIN_COMMANDS) > 50 and all(c.args is not None for c in TRAIN_COMMANDS)
    assert sum(c.skip is None for c in TRAIN_COMMANDS) > 0.9 * len(TRAIN_COMMANDS)  # few placeholders


DRIFTED = """
A renamed group option, a renamed key, an unknown key, a bad sweep value:

```
python train.py cell=gruu
python train.py -m cell=lstm,gru \\
    unrol=40
```

and inline: `RNNEXP_DATA_DIR=~/data python train.py +unrol=40 # comment`,
`make train ARGS="cell=gru optim=adagrad"`, `python train.py -m hparams_search=lm_lr_clip cell.hidden_sise=4`.
"""


def test_a_drifted_doc_command_fails():
    from hydra.errors import ConfigCompositionException, MissingConfigException

    from rnnexp.errors import ConfigError

    commands = extract(DRIFTED, "drifted.md")
    assert [(c.source, c.args, c.env) for c in commands] == [
        ("drifted.md:5", ("cell=gruu",), ()),
        ("drifted.md:6", ("-m", "cell=lstm,gru", "unrol=40"), ()),
        ("drifted.md:10", ("+unrol=40",), (("RNNEXP_DATA_DIR", os.path.expanduser("~/data")),)),
        ("drifted.md:11", ("cell=gru", "optim=adagrad"), ()),
        ("drifted.md:11", ("-m", "hparams_search=lm_lr_clip", "cell.hidden_sise=4"), ()),
    ]
    expected = [MissingConfigException, ConfigCompositionException, ConfigError, MissingConfigException,
                ConfigCompositionException]
    for command, error in zip(commands, expected, strict=True):
        with pytest.raises(error):
            compose_command(command.args, command.env)
    with pytest.raises(pytest.fail.Exception, match=r"drifted.md:5: `python train.py cell=gruu` does not compose"):
        test_doc_command_composes_and_validates(commands[0])  # the failure names the file, line and command
    assert compose_command(("cell=gru", "unroll=40"))[0]["unroll"] == 40  # and the right spelling works


def test_placeholders_follow_the_rules():
    resume, own_cell, prose, named, quoted = extract(
        "`python train.py <same options> ckpt_path=outputs/runs/<run> trainer.max_steps=6000`\n"
        "`python train.py cell=custom cell._target_=mypackage.MyCell`\n"
        "call `python train.py ...` or `python train.py -m hparams_search=NAME`\n\n"
        "```\npython train.py tokenizer=word 'tokenizer.line_start=\"<s>\"'   # a comment\n```\n", "p.md")
    assert resume.args == ("ckpt_path=outputs/runs/run", "trainer.max_steps=6000") and resume.skip is None
    assert own_cell.args == ("cell=custom", "cell._target_=examples.minimal_cell.LeakyRNNCell")
    assert prose.skip == "placeholder '...' in '...'"
    assert named.skip == "placeholder 'NAME' in 'hparams_search=NAME'"
    assert quoted.args == ("tokenizer=word", 'tokenizer.line_start="<s>"') and quoted.skip is None
    assert compose_command(quoted.args)[0]["tokenizer"]["line_start"] == "<s>"


def test_a_sweep_composes_every_value_of_every_parameter():  # two commands of the docs (cached)
    grid = composed(("-m", "cell=rnn,lstm,gru", "unroll=10,40,100"), ())
    assert [(j["cell"]["name"], j["unroll"]) for j in grid] == [("rnn", 10), ("lstm", 40), ("gru", 100)]
    assert [j["run_dir"].split("/")[-1] for j in grid] == ["0_rnn_u10", "1_lstm_u40", "2_gru_u100"]
    search = composed(("-m", "hparams_search=lm_lr_clip", "cell=gru", "lr=tag(log, interval(1e-4, 1e-2))",
                       "unroll=64"), ())
    assert [j["lr"] for j in search] == [1e-4, 1e-2, 1e-4, 1e-2]  # both ends of the command line's interval
    assert [j["clip"] for j in search] == [0.0, 0.25, 1.0, 5.0]  # every choice of the preset
    assert {j["unroll"] for j in search} == {64}  # a fixed value on the command line replaces the preset's


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_doc_links_and_images_resolve(path: Path):
    text = path.read_text(encoding="utf-8")
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"`[^`]*`", "", text)):
        if re.match(r"^[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists() or (anchor and anchor not in heading_anchors(linked.read_text(encoding="utf-8"))):
            broken.append(target)
    assert not broken, f"{path.relative_to(REPO)}: broken links {broken}"
    if path.parent.name == "docs":  # each page: a title, a one-line summary, a link back to the README
        title, blank, summary, back = text.splitlines()[:4]
        assert title.startswith("# ") and not blank and summary and "](../README.md)" in back
