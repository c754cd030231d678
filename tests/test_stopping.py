"""Nothing lost when a run is stopped: Ctrl-C and SIGTERM save the step reached, a job requeued after
its time limit resumes in its own folder, and runs started together get folders of their own."""

import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rnnexp.checkpoint import load_checkpoint
from tests.helpers import REPO, make_text, read_scalars

# The first scheduled checkpoint (a validation, or every 500 steps) comes long after step 3.
EXACT = ["data=text_file", "cell.hidden_size=32", "arch.embedding_dim=8", "batch_size=4", "unroll=16",
         "trainer.max_steps=8", "trainer.val_check_interval=100", "trainer.log_every_n_steps=2",
         "trainer.deterministic=true", "trainer.enable_progress_bar=false", "sample.length=0", "sample.val_length=0",
         "arch.dropout=0.1", "+callbacks.stop._target_=tests.helpers.SignalAt"]


def train_py(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """train.py as a user runs it from a terminal (SIGINT not ignored, as in a foreground job)."""
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("stop")
    (root / "text.txt").write_text(make_text(n_words=3000))
    done = train_py(*EXACT, f"data.path={root / 'text.txt'}", "+callbacks.stop.step=-1", "+callbacks.stop.signum=2",
                    f"hydra.run.dir={root / 'straight'}", cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, load_checkpoint(root / "straight" / "checkpoints" / "last.ckpt")


# SIGTERM here (a process manager's stop); Ctrl-C's SIGINT takes the same path, saved and resumed exactly in
# tests/test_stopping_in_process.py, and the second Ctrl-C below is a real one.
@pytest.mark.parametrize("signum", [signal.SIGTERM], ids=["SIGTERM"])
def test_a_stop_saves_the_step_reached_says_how_to_resume_and_resumes_exactly(uninterrupted, signum):
    root, expected = uninterrupted
    run = root / signal.Signals(signum).name
    stopped = train_py(*EXACT, f"data.path={root / 'text.txt'}", "+callbacks.stop.step=3",
                       f"+callbacks.stop.signum={int(signum)}", f"hydra.run.dir={run}", cwd=root)
    assert stopped.returncode == 128 + signum, stopped.stderr[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["global_step"] == 3
    line = stopped.stderr.strip().splitlines()[-1]
    prefix = f"stopped by {signal.Signals(signum).name} at step 3: saved {last}; resume with: "
    assert line.startswith(prefix), line

    command = shlex.split(line.removeprefix(prefix))  # the command it printed, as a user would paste it
    assert command[:2] == ["python", "train.py"] and command[-1] == f"ckpt_path={last}"
    resumed = train_py(*command[2:], cwd=root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    actual = load_checkpoint(last)
    assert actual["global_step"] == expected["global_step"] == 8
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][name], tensor), name
    assert [s for s, _ in read_scalars(run)["train/loss"]] == [1, 3, 5, 7]  # each logged step once


def test_a_second_ctrl_c_quits_at_once_and_a_stop_before_any_step_says_why(uninterrupted):
    root, _ = uninterrupted
    quit_now = train_py(*EXACT, f"data.path={root / 'text.txt'}", "+callbacks.stop.step=3",
                        "+callbacks.stop.signum=2", "+callbacks.stop.times=2", f"hydra.run.dir={root / 'twice'}",
                        cwd=root)
    assert quit_now.returncode != 0 and not (root / "twice" / "checkpoints" / "last.ckpt").exists()
    nothing = train_py(*EXACT, f"data.path={root / 'text.txt'}", "+callbacks.stop.step=3",
                       "+callbacks.stop.signum=2", "callbacks.model_checkpoint=null", f"hydra.run.dir={root / 'off'}",
                       cwd=root)
    assert nothing.returncode == 130
    assert nothing.stderr.strip().splitlines()[-1] == (
        "stopped by SIGINT at step 3; no checkpoint written: checkpoints are off "
        "(callbacks.model_checkpoint=null, or save_last=false)")


def test_runs_started_in_the_same_second_with_the_same_options_get_folders_of_their_own(tmp_path):
    (tmp_path / "text.txt").write_text(make_text())
    # The folder name as conf/train.yaml makes it, with the time fixed: as if both started in one second.
    same_name = "hydra.run.dir='${resume_run_dir:${ckpt_path},runs/same}'"
    options = ["data=text_file", f"data.path={tmp_path / 'text.txt'}", "cell.hidden_size=8", "arch.embedding_dim=4",
               "batch_size=4", "unroll=8", "trainer.max_steps=6", "trainer.val_check_interval=3", "sample.length=0",
               "sample.val_length=0", "trainer.enable_progress_bar=false", same_name]
    command = [sys.executable, str(REPO / "train.py"), *options]
    processes = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert folders == ["same", "same-2"]
    for folder in folders:
        run = tmp_path / "runs" / folder
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
        assert len(list(run.glob("events.out.*"))) == 1
        assert (run / "result.json").is_file() and (run / "train.log").read_text().count("training ") == 1


def test_a_new_run_into_an_existing_runs_folder_is_refused(tmp_path):
    (tmp_path / "text.txt").write_text(make_text())
    options = ["data=text_file", f"data.path={tmp_path / 'text.txt'}", "cell.hidden_size=8", "arch.embedding_dim=4",
               "batch_size=4", "unroll=8", "trainer.max_steps=2", "sample.length=0", "sample.val_length=0",
               "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path / 'run'}"]
    assert train_py(*options, cwd=tmp_path).returncode == 0
    again = train_py(*options, cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip() == (f"error: run folder {tmp_path / 'run'} holds a run already: resume it with "
                                    f"ckpt_path={tmp_path / 'run'}, or leave the folder to rnnexp (a new one for "
                                    "each run)")
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


