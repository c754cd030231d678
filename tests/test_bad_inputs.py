"""Every bad input gets one clear line and a non-zero exit before any training, and leaves no run folder.

Every case's line is checked in-process (the config composed as train.py composes it, then built as
train.py builds it); a case of each kind runs `train.py` itself, as a user would, in a fresh working
directory: one line on stderr, exit status 2, no run folder. `scripts/sample.py` is run the same way."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rnnexp.errors import RnnexpError
from rnnexp.train import build, train
from tests.helpers import REPO, TINY_MODEL, compose_config, make_text, run_script_in_process, tiny_run_config


class Payload:
    """Unpickling this runs a shell command: what a tampered checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    text = root / "text.txt"
    text.write_text(make_text())
    train(tiny_run_config(text, root / "run", "sample.length=0"))
    good = root / "run" / "checkpoints" / "last.ckpt"
    (root / "other_vocab.txt").write_text(make_text().upper())
    (root / "empty.txt").write_bytes(b"")
    (root / "latin1.txt").write_bytes("na\xefve caf\xe9 ".encode("latin-1") * 10)
    (root / "small.txt").write_text("tiny corpus\n" * 10)
    (root / "corrupt.ckpt").write_bytes(bytes(range(256)) * 8)
    (root / "truncated.ckpt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    torch.save({"state_dict": {}, "hook": Payload(root / "pwned")}, root / "tampered.ckpt")
    torch.save({"weights": torch.zeros(2)}, root / "not_ours.ckpt")
    torch.save({"state_dict": {"w": torch.zeros(2)}, "global_step": 3}, root / "plain_lightning.ckpt")
    (root / "zips").mkdir()
    (root / "zips" / "text8.zip").write_bytes(b"PK\x03\x04" + b"\0" * 100)  # a truncated download
    return {"root": root, "text": text, "good": good}


def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


TRAIN = ["data=text_file", "data.path={text}", *TINY_MODEL]
CASES = [
    # (overrides, exit code, the message's line); {name} is filled in from the `files` fixture.
    (["cell=transformer"], 2, "error: cell=transformer does not exist (no cell/transformer.yaml in conf/ or the "
     "search path); the options are custom, gru, "),
    (["arch=arch9"], 2, "error: arch=arch9 does not exist (no arch/arch9.yaml in conf/ or the "
     "search path); did you mean arch=arch"),
    (["data=imagenet"], 2, "error: data=imagenet does not exist (no data/imagenet.yaml in conf/ or the "
     "search path); the options are adding, addition, "),
    ([*TRAIN, "unroll=0"], 2, "error: unroll must be a positive integer, got 0"),
    ([*TRAIN, "batch_size=-1"], 2, "error: batch_size must be a positive integer, got -1"),
    ([*TRAIN, "cell.hidden_size=0"], 2, "error: cell.hidden_size must be a positive integer, got 0"),
    ([*TRAIN, "arch.embedding_dim=0"], 2, "error: arch.embedding_dim must be a positive integer, got 0"),
    ([*TRAIN, "lr=0"], 2, "error: lr must be a positive number, got 0"),
    ([*TRAIN, "lr=-0.1"], 2, "error: lr must be a positive number, got -0.1"),
    ([*TRAIN, "arch.dropout=1.0"], 2, "error: arch.dropout must be a number in [0, 1), got 1.0"),
    ([*TRAIN, "arch.dropout=-0.1"], 2, "error: arch.dropout must be a number in [0, 1), got -0.1"),
    ([*TRAIN, "clip=-1"], 2, "error: clip must be a number >= 0 (0 turns clipping off), got -1"),
    ([*TRAIN, "cell=rnn", "arch.combine=concat"], 2,
     "error: arch.combine=concat exists on the scratch path only: add cell.impl=scratch "
     "(torch's fused kernels compute the sum U x + W h)"),
    ([*TRAIN, "arch=bidirectional"], 2, "error: arch=bidirectional cannot be a causal language model"),
    ([*TRAIN, "arch=deep", "arch.num_layers=0"], 2, "error: arch.num_layers must be a positive integer, got 0"),
    (["arch=seq2seq", "data=reverse", "decode.beam_size=0"], 2,
     "error: decode.beam_size must be a positive integer, got 0"),
    ([*TRAIN, "trainer.limit_val_batches=0"], 2, "error: trainer.limit_val_batches must be > 0"),
    ([*TRAIN, "arch=arch2", "cell=rnn", "cell.impl=scratch", "arch.combine=product"], 2,
     "error: arch.combine=product applies to arch1, deep and bidirectional, not arch=arch2"),
    (["arch=seq2seq", "data=sort", "data.min_length=9", "data.max_length=3"], 2,
     "error: data.min_length (9) must not exceed data.max_length (3)"),
    (["arch=seq2seq", "data=copy", "data.num_symbols=30"], 2, "error: data.num_symbols must be at most 26"),
    ([*TRAIN, "guard.on_nonfinite=ignore"], 2, "error: guard.on_nonfinite must be stop or skip, got 'ignore'"),
    (["data=text_file"], 2, "error: data.path is required: set it on the command line, e.g. data.path=..."),
    ([*TRAIN, "data.path={root}/missing.txt"], 2, "error: data file {root}/missing.txt does not exist"),
    ([*TRAIN, "data.path={root}/empty.txt"], 2, "error: data file {root}/empty.txt is empty"),
    ([*TRAIN, "data.path={root}/latin1.txt"], 2,
     "error: data file {root}/latin1.txt is not UTF-8 text (bad byte at offset 2)"),
    ([*TRAIN, "data.path={root}/small.txt", "batch_size=64", "unroll=64"], 2,
     "error: the train split has 108 tokens, too few for batch_size=64 x unroll=64: it needs at least 4160"),
    (["data=text8", "data_dir={root}/zips"], 2, "error: {root}/zips/text8.zip has SHA-256 "),
    ([*TRAIN, "ckpt_path={root}/missing.ckpt"], 2, "error: checkpoint {root}/missing.ckpt does not exist"),
    ([*TRAIN, "ckpt_path=last"], 2, "error: ckpt_path=last: no run under outputs/ has a checkpoints/last.ckpt yet"),
    ([*TRAIN, "ckpt_path={root}/corrupt.ckpt"], 2, "error: checkpoint {root}/corrupt.ckpt is corrupt or truncated"),
    ([*TRAIN, "ckpt_path={root}/truncated.ckpt"], 2,
     "error: checkpoint {root}/truncated.ckpt is corrupt or truncated"),
    ([*TRAIN, "ckpt_path={root}/tampered.ckpt"], 2,
     "error: checkpoint {root}/tampered.ckpt holds objects that would run code when loaded (posix.system); refused"),
    ([*TRAIN, "ckpt_path={root}/not_ours.ckpt"], 2, "error: {root}/not_ours.ckpt is not an rnnexp checkpoint"),
    ([*TRAIN, "init_from={good}", "data.path={root}/other_vocab.txt"], 2,
     "error: checkpoint {good} was trained on another vocabulary"),
    ([*TRAIN, "ckpt_path={good}", "cell.hidden_size=32"], 2,
     "error: resuming {good} continues its run with its own settings, but this run differs: "
     "cell.hidden_size=32 (checkpoint: 16); give the checkpoint's values, or start a new run from its weights "
     "with init_from={good} instead of ckpt_path"),
    ([*TRAIN, "init_from={good}", "cell.hidden_size=32"], 2,
     "error: checkpoint {good} has another model: cell.hidden_size=16 (this run: 32)"),
    ([*TRAIN, "ckpt_path={good}", "init_from={good}"], 2,
     "error: give ckpt_path (resume a run) or init_from (a new run from a checkpoint's weights), not both: "
     "a run that started with init_from resumes with ckpt_path alone"),
    ([*TRAIN, "ckpt_path={root}/plain_lightning.ckpt"], 2,
     "error: {root}/plain_lightning.ckpt is not an rnnexp checkpoint (it has no rnnexp config and vocabulary)"),
    # Keys that nothing reads are refused, with the closest real key.
    ([*TRAIN, "+unrol=40"], 2, "error: unknown key 'unrol'; did you mean 'unroll'?"),
    ([*TRAIN, "+cell.hiden_size=40"], 2, "error: unknown key 'cell.hiden_size'; did you mean 'cell.hidden_size'?"),
    ([*TRAIN, "+cell._target_=torch.nn.GRUCell"], 2, "error: unknown key 'cell._target_'"),
    ([*TRAIN, "+guard.on_nan=skip"], 2, "error: unknown key 'guard.on_nan'; did you mean 'guard.on_nonfinite'?"),
    ([*TRAIN, "+trainer.max_step=5"], 2, "error: unknown key 'trainer.max_step'; did you mean 'trainer.max_steps'?"),
    ([*TRAIN, "+callbacks.model_checkpoint.every_n_step=5"], 2,
     "error: unknown key 'callbacks.model_checkpoint.every_n_step'; did you mean "
     "'callbacks.model_checkpoint.every_n_steps'?"),
    # Optimizers and schedules: unknown names, targets, keys; schedules that cannot work.
    ([*TRAIN, "optim=adagrad"], 2, "error: optim=adagrad does not exist (no optim/adagrad.yaml in conf/ or the "
     "search path); the options are adam, adamw, "),
    (["-m", *TRAIN, "sched=none,step"], 2, "error: sched=step does not exist (no sched/step.yaml in conf/ or the "
     "search path); the options are cosine, "),
    ([*TRAIN, "data.path={root}/other_vocab.txt", "ckpt_path={good}"], 2,
     "this run differs: data.path={root}/other_vocab.txt (checkpoint: {root}/text.txt)"),
    ([*TRAIN, "ckpt_path={good}", "trainer.max_steps=4"], 2,
     "error: checkpoint {good} is at step 4 and trainer.max_steps=4: nothing left to train"),
    ([*TRAIN, "sched=plateau", "sched.mode=max"], 2, "error: sched.mode must be min"),
    ([*TRAIN, "data.task=rnnexp.tasks.imagenet.ImageNetTask"], 2,
     "error: data.task=rnnexp.tasks.imagenet.ImageNetTask cannot be imported (ModuleNotFoundError: "),
    ([*TRAIN, "data.task=rnnexp.model.cell_kind"], 2, "error: data.task=rnnexp.model.cell_kind is not a "),
    ([*TRAIN, "cell.name=lstmm"], 2, "error: cell.name must be one of rnn, lstm, gru, mgu, custom, got 'lstmm'"),
    ([*TRAIN, "+cell.activation=relu"], 2, "error: cell.activation is a setting of the cells that apply one (rnn), "
     "not of cell=lstm"),
    ([*TRAIN, "cell=lstm_peephole", "cell.impl=fused"], 2,
     "error: cell.variant=peephole has no fused kernel: add cell.impl=scratch"),
    ([*TRAIN, "cell=custom", "cell._target_=torch.nn.Linear"], 2,
     "error: cell._target_=torch.nn.Linear must be built as Linear(input_size, hidden_size) and step as "
     "h = cell(x, h)"),
    ([*TRAIN, "+logger.tensorboard.flush_sec=5"], 2,
     "error: unknown key 'logger.tensorboard.flush_sec'; did you mean 'logger.tensorboard.flush_secs'?"),
    ([*TRAIN, "optim._target_=torch.optim.Adamm"], 2,
     "error: optim._target_=torch.optim.Adamm cannot be imported (AttributeError: module 'torch.optim' has no "
     "attribute 'Adamm')"),
    ([*TRAIN, "optim._target_=torch.nn.Linear"], 2,
     "error: optim._target_=torch.nn.Linear is not a torch.optim.Optimizer"),
    ([*TRAIN, "optim._target_=torch.optim.Adagrad"], 2,
     "error: unknown key 'optim.betas'; torch.optim.Adagrad takes: "),
    ([*TRAIN, "+optim.lr=0.1"], 2, "error: optim.lr is set by rnnexp itself, from the top-level lr"),
    ([*TRAIN, "+sched.gamma=0.5"], 2, "error: unknown key 'sched.gamma'; rnnexp.optim.exponential_decay takes: "
     "decay_rate, decay_steps; drop it with ~sched.gamma"),
    ([*TRAIN, "sched._target_=torch.optim.lr_scheduler.StepLR", "~sched.decay_rate", "~sched.decay_steps"], 2,
     "error: sched (torch.optim.lr_scheduler.StepLR) needs step_size: add +sched.step_size=..."),
    ([*TRAIN, "sched=cosine", "trainer.max_steps=-1", "trainer.max_time=00:00:00:10"], 2,
     "error: sched=cosine needs sched.total_steps > 0 (it follows trainer.max_steps, here -1)"),
    ([*TRAIN, "sched=plateau", "trainer.val_check_interval=100"], 2,
     "error: sched=plateau lowers the lr when val/loss stops improving, but this run validates only at its end"),
]


# The command line itself, for one case of each kind: Hydra's own errors (an option that does not
# exist, in a run and in a sweep), the config checks without and with torch, data, checkpoints, resumes.
COMMAND_LINE = ["cell=transformer", "sched=none,step", "unroll=0", "+unrol=40", "cell.name=lstmm",
                "data.path={root}/missing.txt", "ckpt_path={root}/tampered.ckpt", "trainer.max_steps=4"]


def refusal(overrides: list[str], run_dir: Path) -> str:
    """The line train.py prints for these overrides, found in-process: Hydra's composition errors as
    rnnexp.hydra_errors words them, then every check train.py makes before it trains."""
    from hydra.errors import ConfigCompositionException, MissingConfigException

    from rnnexp.hydra_errors import missing_option, unknown_key

    try:
        cfg = compose_config(*overrides, f"run_dir={run_dir}")
    except MissingConfigException as e:
        return f"error: {missing_option(e)}"
    except ConfigCompositionException as e:
        return f"error: {unknown_key(e)}"
    with pytest.raises(RnnexpError) as refused:  # anything else would be a traceback: a bug
        build(cfg)
    return f"error: {refused.value}"


@pytest.mark.parametrize("overrides,code,message", [c for c in CASES if "-m" not in c[0]],
                         ids=[" ".join(c[0][-1:]) for c in CASES if "-m" not in c[0]])
def test_train_refuses_bad_input(files, tmp_path, monkeypatch, caplog, overrides, code, message):
    fill = {k: str(v) for k, v in files.items()}
    monkeypatch.chdir(tmp_path)  # ckpt_path=last looks under ./outputs
    line = refusal([o.format(**fill) for o in overrides], tmp_path / "run")
    assert message.format(**fill) in line and "\n" not in line
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]  # the line alone
    run = tmp_path / "run"
    assert not (run / "checkpoints").exists() and not list(run.glob("events.out.*"))  # nothing like a result
    assert not (files["root"] / "pwned").exists()  # and no code from a checkpoint ever ran


@pytest.mark.parametrize("overrides,code,message", [c for c in CASES if c[0][-1] in COMMAND_LINE],
                         ids=[c[0][-1] for c in CASES if c[0][-1] in COMMAND_LINE])
def test_the_command_line_says_it_in_one_line_and_leaves_no_folder(files, tmp_path, overrides, code, message):
    fill = {k: str(v) for k, v in files.items()}
    result = run("train.py", *(o.format(**fill) for o in overrides), cwd=tmp_path)
    assert result.returncode == code, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]  # one line, no traceback
    assert message.format(**fill) in lines[0], result.stderr[-2000:]
    # no run folder, not even an empty outputs/runs/ (a sweep's folder keeps Hydra's multirun.yaml)
    assert [p.name for p in tmp_path.glob("outputs/**/*") if p.is_file()] in ([], ["multirun.yaml"])
    assert not (files["root"] / "pwned").exists()


def test_every_command_line_case_is_a_case():
    assert len([c for c in CASES if c[0][-1] in COMMAND_LINE]) == len(COMMAND_LINE)


SAMPLE_CASES = [
    ("{root}/missing.ckpt", "error: checkpoint {root}/missing.ckpt does not exist"),
    ("{root}/corrupt.ckpt", "error: checkpoint {root}/corrupt.ckpt is corrupt or truncated"),
    ("{root}/truncated.ckpt", "error: checkpoint {root}/truncated.ckpt is corrupt or truncated"),
    ("{root}/tampered.ckpt", "error: checkpoint {root}/tampered.ckpt holds objects that would run code"),
    ("{root}/not_ours.ckpt", "error: {root}/not_ours.ckpt is not an rnnexp checkpoint"),
]


@pytest.mark.parametrize("checkpoint,message", SAMPLE_CASES, ids=[c[0] for c in SAMPLE_CASES])
def test_sample_script_gives_the_same_errors(files, checkpoint, message):
    fill = {k: str(v) for k, v in files.items()}
    result = run_script_in_process("sample.py", checkpoint.format(**fill))
    assert result.returncode == 2
    assert result.stderr.strip().startswith(message.format(**fill)) and "\n" not in result.stderr.strip()
    assert not (files["root"] / "pwned").exists()


def test_sample_script_refuses_a_prime_outside_the_vocabulary(files, tmp_path):
    result = run("scripts/sample.py", str(files["good"]), "--prime", "Ω", cwd=tmp_path)  # the script, as users run it
    assert result.returncode == 2 and result.stderr.strip() == "error: character 'Ω' is not in the vocabulary"
