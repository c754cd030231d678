"""rnnexp/stopping.py in this process (the tests of tests/test_stopping.py run train.py as a user does, in
a subprocess, which mutation testing cannot see): which signals SaveOnStop takes over and gives back,
what one signal and a second Ctrl-C do, what is saved at the step reached, and the line a stop ends with."""

import logging
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest

from rnnexp.callbacks import Checkpoint
from rnnexp.checkpoint import load_checkpoint
from rnnexp.errors import RunStopped
from rnnexp.stopping import HANDLED, SaveOnStop, _is_submitit, save_last, stopped_message
from rnnexp.train import train
from tests.helpers import make_text, tiny_run_config

OFF = "checkpoints are off (callbacks.model_checkpoint=null, or save_last=false)"


@pytest.fixture(autouse=True)
def handlers():
    """Each test starts with Python's own SIGINT handler and the defaults of SIGTERM and SIGUSR2, and
    leaves the handlers as it found them (whatever the code under test did)."""
    saved = {signum: signal.getsignal(signum) for signum in HANDLED}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGUSR2, signal.SIG_DFL)
    yield
    for signum, handler in saved.items():
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def note(stop: SaveOnStop, signum: int) -> None:
    """A signal that must not quit at once: a KeyboardInterrupt fails the test (instead of ending the run)."""
    try:
        stop._note(signum, None)
    except KeyboardInterrupt:
        pytest.fail(f"{signal.Signals(signum).name} quit at once")


def single_process() -> SimpleNamespace:
    return SimpleNamespace(world_size=1)


def launcher_handler(calls: list):
    def handler(signum, frame):
        calls.append((signum, frame))
    return handler


def test_it_takes_over_sigint_and_sigterm_during_training_and_gives_them_back_at_the_end():
    stop = SaveOnStop()
    stop.on_train_start(single_process(), None)
    assert signal.getsignal(signal.SIGINT) == stop._note and signal.getsignal(signal.SIGTERM) == stop._note
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL  # no launcher asked for it: left alone
    stop.on_train_end(None, None)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert stop._previous == {}


def test_an_exception_in_training_gives_the_handlers_back():
    stop = SaveOnStop()
    stop.on_train_start(single_process(), None)
    stop.on_exception(None, None, ValueError("a bug"))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_launchers_sigusr2_is_taken_an_ignored_sigint_and_submitits_sigterm_are_left():
    calls = []
    usr2 = launcher_handler(calls)
    submitit_ignores = launcher_handler(calls)
    submitit_ignores.__module__ = "submitit.core.job_environment"
    signal.signal(signal.SIGUSR2, usr2)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, submitit_ignores)
    stop = SaveOnStop()
    stop.on_train_start(single_process(), None)
    assert signal.getsignal(signal.SIGUSR2) == stop._note
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) is submitit_ignores
    assert stop._previous == {signal.SIGUSR2: usr2}
    stop.on_train_end(None, None)
    assert signal.getsignal(signal.SIGUSR2) is usr2


def test_another_handler_of_sigterm_is_taken_over_and_given_back():
    calls = []
    own = launcher_handler(calls)
    signal.signal(signal.SIGTERM, own)
    stop = SaveOnStop()
    stop.on_train_start(single_process(), None)
    assert signal.getsignal(signal.SIGTERM) == stop._note
    stop.on_train_end(None, None)
    assert signal.getsignal(signal.SIGTERM) is own and calls == []


def test_under_ddp_no_handler_is_installed():
    stop = SaveOnStop()
    stop.on_train_start(SimpleNamespace(world_size=2), None)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL and stop._previous == {}


def test_a_handler_is_submitits_by_its_module():
    def handler(signum, frame):
        pass

    assert not _is_submitit(handler) and not _is_submitit(signal.SIG_DFL)
    assert not _is_submitit(None)  # a handler Python did not install: getsignal() gives None
    handler.__module__ = "submitit.core.job_environment"
    assert _is_submitit(handler)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_is_noted_and_announced_once_and_the_first_one_counts(signum, capsys):
    stop = SaveOnStop()
    stop.on_train_start(single_process(), None)
    note(stop, signum)
    assert stop.received == signum
    name = signal.Signals(signum).name
    assert capsys.readouterr().err == (f"\n{name}: stopping after this step, with a checkpoint "
                                       "(Ctrl-C again to quit at once)\n")
    stop._note(signal.SIGTERM, None)  # another signal on the way: the first one decides, said once
    assert stop.received == signum and capsys.readouterr().err == ""
    assert signal.getsignal(signal.SIGTERM) == stop._note  # still ours until the step ends


def test_a_second_ctrl_c_quits_at_once_with_the_handlers_given_back():
    stop = SaveOnStop()
    stop.on_train_start(single_process(), None)
    note(stop, signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        stop._note(signal.SIGINT, None)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_ctrl_c_after_a_sigterm_does_not_quit():
    stop = SaveOnStop()
    stop.on_train_start(single_process(), None)
    stop._note(signal.SIGTERM, None)
    note(stop, signal.SIGINT)  # no KeyboardInterrupt: the stop at the step's end goes on
    assert stop.received == signal.SIGTERM


def test_a_launchers_sigusr2_is_noted_silently(capsys):
    signal.signal(signal.SIGUSR2, launcher_handler([]))
    stop = SaveOnStop()
    stop.on_train_start(single_process(), None)
    stop._note(signal.SIGUSR2, None)
    assert stop.received == signal.SIGUSR2 and capsys.readouterr().err == ""


def test_without_a_signal_a_step_ends_as_usual():
    stop = SaveOnStop()
    stop.on_train_start(single_process(), None)
    stop.on_train_batch_end(SimpleNamespace(), None, None, None, 0)  # no trainer attribute is read
    assert signal.getsignal(signal.SIGTERM) == stop._note


def test_at_the_steps_end_a_launchers_sigusr2_is_handed_over_after_the_stop_is_decided(caplog, tmp_path):
    calls = []
    usr2 = launcher_handler(calls)
    signal.signal(signal.SIGUSR2, usr2)
    stop = SaveOnStop()
    stop.on_train_start(single_process(), None)
    stop._note(signal.SIGUSR2, None)
    callback = Saves(dirpath=str(tmp_path), save_last=True)
    with caplog.at_level(logging.INFO, logger="rnnexp"), pytest.raises(RunStopped) as stopped:
        trainer = SimpleNamespace(global_step=7, max_steps=100, checkpoint_callbacks=[callback])
        stop.on_train_batch_end(trainer, None, None, None, 6)
    assert calls == [(signal.SIGUSR2, None)] and [step for step, _ in callback.saved] == [7]
    assert [r.getMessage() for r in caplog.records] == [
        f"signal SIGUSR2 at step 7: saved {tmp_path / 'last.ckpt'}; handing over to the launcher"]
    assert (stopped.value.signum, stopped.value.step, stopped.value.checkpoint, stopped.value.why) == (
        signal.SIGUSR2, 7, tmp_path / "last.ckpt", "")
    assert signal.getsignal(signal.SIGUSR2) is usr2 and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_at_the_steps_end_a_sigterm_stops_without_calling_any_earlier_handler():
    calls = []
    signal.signal(signal.SIGTERM, launcher_handler(calls))
    stop = SaveOnStop()
    stop.on_train_start(single_process(), None)
    stop._note(signal.SIGTERM, None)
    with pytest.raises(RunStopped) as stopped:
        trainer = SimpleNamespace(global_step=3, max_steps=100, checkpoint_callbacks=[])
        stop.on_train_batch_end(trainer, None, None, None, 2)
    assert calls == [] and stopped.value.signum == signal.SIGTERM and stopped.value.step == 3


class Saves(Checkpoint):
    """A Checkpoint whose last.ckpt saves are recorded, not written."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.saved = []

    def _monitor_candidates(self, trainer):
        return {"candidates of": trainer.global_step}

    def _save_last_checkpoint(self, trainer, candidates):
        self.saved.append((trainer.global_step, candidates))


def test_save_last_writes_last_ckpt_of_the_step_reached_unless_written_already(tmp_path):
    other = SimpleNamespace()  # not a Checkpoint: ignored
    callback = Saves(dirpath=str(tmp_path), save_last=True)
    trainer = SimpleNamespace(global_step=5, checkpoint_callbacks=[other, callback])
    assert save_last(trainer) == (tmp_path / "last.ckpt", "")
    assert callback.saved == [(5, {"candidates of": 5})]
    callback._last_global_step_saved = 5
    assert save_last(trainer) == (tmp_path / "last.ckpt", "")
    assert len(callback.saved) == 1  # this step's last.ckpt is there already


def test_save_last_says_why_nothing_was_saved(tmp_path):
    no_last = Saves(dirpath=str(tmp_path), save_last=False)
    assert save_last(SimpleNamespace(global_step=5, checkpoint_callbacks=[no_last])) == (None, OFF)
    callback = Saves(dirpath=str(tmp_path), save_last=True)
    assert save_last(SimpleNamespace(global_step=0, checkpoint_callbacks=[no_last, callback])) == (
        None, "no training step had finished")
    assert callback.saved == [] and no_last.saved == []


def test_the_last_line_names_the_checkpoint_and_the_command_that_resumes_it():
    saved = RunStopped(signal.SIGTERM, 3, Path("/runs/a/checkpoints/last.ckpt"))
    overrides = ["cell=gru", "ckpt_path=/old/last.ckpt", "hydra.run.dir=/runs/a", "unroll=40", "init_from=x"]
    assert stopped_message(saved, overrides) == (
        "stopped by SIGTERM at step 3: saved /runs/a/checkpoints/last.ckpt; resume with: "
        "python train.py cell=gru unroll=40 init_from=x ckpt_path=/runs/a/checkpoints/last.ckpt")
    nothing = RunStopped(signal.SIGINT, 0, None, "no training step had finished")
    assert stopped_message(nothing, overrides) == (
        "stopped by SIGINT at step 0; no checkpoint written: no training step had finished")


def test_a_sigterm_during_training_stops_after_that_step_with_its_last_ckpt(tmp_path, capsys):
    (tmp_path / "text.txt").write_text(make_text())
    run_dir = tmp_path / "run"
    config = tiny_run_config(tmp_path / "text.txt", run_dir, "trainer.max_steps=6", "trainer.val_check_interval=100",
                             "sample.length=0", "sample.val_length=0",
                             "+callbacks.stop._target_=tests.helpers.SignalAt", "+callbacks.stop.step=3",
                             f"+callbacks.stop.signum={int(signal.SIGTERM)}")
    with pytest.raises(RunStopped) as stopped:
        train(config)
    last = run_dir.resolve() / "checkpoints" / "last.ckpt"
    assert (stopped.value.signum, stopped.value.step, stopped.value.why) == (signal.SIGTERM, 3, "")
    assert Path(stopped.value.checkpoint).resolve() == last
    assert load_checkpoint(last)["global_step"] == 3
    assert "SIGTERM: stopping after this step" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # given back


def test_a_signal_at_the_last_step_lets_the_run_finish_instead_of_stopping_it():
    """A requeued job at its budget would have nothing left to train, and never write result.json."""
    calls = []
    launcher = launcher_handler(calls)
    signal.signal(signal.SIGUSR2, launcher)
    stop = SaveOnStop()
    stop.on_train_start(single_process(), None)
    note(stop, signal.SIGUSR2)
    stop.on_train_batch_end(SimpleNamespace(global_step=100, max_steps=100, checkpoint_callbacks=[]), None, None,
                            None, 99)  # no RunStopped, no hand-over: the run goes on to its end
    assert calls == []
    stop.on_train_end(None, None)
    assert signal.getsignal(signal.SIGUSR2) is launcher  # given back at the end
