"""A run prints no noise (rnnexp/quiet.py): train.py as a user runs it, on a machine with SLURM's client."""

import os
import stat
import warnings
from pathlib import Path

import pytest

from rnnexp.quiet import cluster_environment, expect_resume
from tests.helpers import TINY_MODEL, run_train

NOISE = {
    "srun": "The `srun` command is available on your system but is not used",
    "limit_val_batches=1.0": "was configured so 100% of the batches will be used",
    "FLOPs": "FLOPs",
    "non-empty checkpoint folder": "exists and is not empty",
    "dirpath changed": "The dirpath has changed",
    "bf16 summary size": "is not supported by the model summary",
    "LeafSpec": "LeafSpec",
    "litlogger": "litlogger",
    "summary callback notice": "Trainer already configured with model summary callbacks",
}


@pytest.fixture
def slurm_client(tmp_path: Path, monkeypatch) -> dict[str, str]:
    """A machine with SLURM's client installed (an `srun` on PATH), outside any SLURM job: set for this
    process, and returned as the environment for a subprocess."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(srun.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    for name in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(name)
    return dict(os.environ)


def noise_in(output: str) -> list[str]:
    return [name for name, text in NOISE.items() if text in output]


def test_fake_srun_makes_lightning_warn(slurm_client):
    """The control: Lightning's own choice of a cluster environment does warn with that PATH."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    with pytest.warns(UserWarning, match="The `srun` command is available on your system but is not used"):
        assert not SLURMEnvironment.detect()


def test_cluster_environment_is_chosen_without_srun_warning(slurm_client, monkeypatch):
    from lightning_fabric.plugins.environments import LightningEnvironment, SLURMEnvironment

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert type(cluster_environment()) is LightningEnvironment
    # Inside a SLURM job step (srun sets SLURM_NTASKS): Lightning's SLURM environment, with the job's
    # ranks, but submitit requeues the job, not Lightning.
    for name, value in dict(SLURM_NTASKS="1", SLURM_JOB_NAME="train", SLURM_PROCID="3", SLURM_LOCALID="0").items():
        monkeypatch.setenv(name, value)
    environment = cluster_environment()
    assert isinstance(environment, SLURMEnvironment) and not environment.auto_requeue
    assert environment.global_rank() == 3
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")  # an interactive allocation: processes are ours to start
    assert type(cluster_environment()) is LightningEnvironment


def test_resume_silences_only_its_own_checkpoint_folder(tmp_path):
    own, other = tmp_path / "run" / "checkpoints", tmp_path / "other" / "checkpoints"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        expect_resume(own / "last.ckpt", continues_run=True)
        for folder in (own, other):
            warnings.warn_explicit(f"Checkpoint directory {os.path.realpath(folder)} exists and is not empty.",
                                   UserWarning, "model_checkpoint.py", 1,
                                   module="pytorch_lightning.callbacks.model_checkpoint")
    expected = f"Checkpoint directory {os.path.realpath(other)} exists and is not empty."
    assert [str(w.message) for w in caught] == [expected]


def test_a_run_and_its_resume_print_no_noise(tmp_path, tiny_text, slurm_client):
    """The default trainer settings (all validation batches, the model summary, checkpoints) with a
    tiny model, on a machine with `srun`; then a resume that continues the run in its folder, and one
    from its best.ckpt (a new run folder)."""
    defaults = ("trainer.limit_val_batches", "+trainer.enable_model_summary")  # left as a user's run has them
    settings = [o for o in TINY_MODEL if not o.startswith(defaults)]
    run_dir = tmp_path / "run"
    common = ["data=text_file", f"data.path={tiny_text}", *settings]
    first = run_train(*common, f"hydra.run.dir={run_dir}", env=slurm_client)
    assert first.returncode == 0, first.stderr[-3000:]
    output = first.stdout + first.stderr
    assert "Trainable params" in output and "model.rnn" in output  # the summary is still there, with its layers
    assert noise_in(output) == [], output[-5000:]

    resumed = run_train(*common, "trainer.max_steps=6", f"ckpt_path={run_dir}/checkpoints/last.ckpt",
                        env=slurm_client)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {run_dir.resolve()}/checkpoints/last.ckpt" in resumed.stdout + resumed.stderr
    assert noise_in(resumed.stdout + resumed.stderr) == [], (resumed.stdout + resumed.stderr)[-5000:]

    new_run = run_train(*common, "trainer.max_steps=8", f"ckpt_path={run_dir}/checkpoints/best.ckpt",
                        f"hydra.run.dir={tmp_path / 'from_best'}", env=slurm_client)
    assert new_run.returncode == 0, new_run.stderr[-3000:]
    assert noise_in(new_run.stdout + new_run.stderr) == [], (new_run.stdout + new_run.stderr)[-5000:]
