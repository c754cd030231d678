"""hydra/launcher=slurm: its defaults (documented, and small enough for any node), and sweeps through it on a
real single-node SLURM cluster (tests/slurm_cluster.py), a job that reaches its time limit included.

The cluster tests need SLURM's daemons and munge (Debian: `apt-get install slurmctld slurmd munge`) and
run as root; without them they are skipped, with the reason."""

from __future__ import annotations

import json
import os
import re
import runpy
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.helpers import REPO, TINY_MODEL, make_text, read_scalars, run_train
from tests.slurm_cluster import cpu_count, memory_mb, missing_programs, slurm_cluster

QUIET = ["sample.length=0", "sample.val_length=0"]
# What the preset asks of a node, as docs/sweeps.md lists it.
DEFAULTS = {"partition": None, "timeout_min": 240, "gpus_per_node": None, "cpus_per_task": 2, "mem_gb": 4,
            "tasks_per_node": 1, "array_parallelism": 16, "signal_delay_s": 120, "max_num_timeout": 3}


def compose_with_hydra(*overrides: str):
    runpy.run_path(str(REPO / "train.py"))  # registers train.py's resolvers, runs nothing
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


def test_slurm_preset_defaults_fit_a_small_node_and_are_documented():
    launcher = compose_with_hydra("hydra/launcher=slurm").hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert {key: launcher[key] for key in DEFAULTS} == DEFAULTS
    # docs/sweeps.md's table: one row per default, with its value first in the default column
    section = (REPO / "docs" / "sweeps.md").read_text().split("## SLURM clusters")[1].split("\n## ")[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| `([^`]*)`", section, flags=re.MULTILINE))
    assert rows == {key: "null" if value is None else str(value) for key, value in DEFAULTS.items()}
    # a GPU cluster, as the docs say
    gpu = compose_with_hydra("hydra/launcher=slurm", "hydra.launcher.gpus_per_node=1", "hydra.launcher.cpus_per_task=8",
                             "hydra.launcher.mem_gb=32").hydra.launcher
    assert (gpu.gpus_per_node, gpu.cpus_per_task, gpu.mem_gb) == (1, 8, 32)


@pytest.fixture(scope="session")
def slurm(tmp_path_factory) -> dict[str, str]:
    """A single-node SLURM cluster for this test session: the environment for its clients (SLURM_CONF)."""
    missing = missing_programs()
    if missing:
        pytest.skip(f"no SLURM here (missing {', '.join(missing)}; Debian: apt-get install slurmctld slurmd munge)")
    if os.geteuid() != 0:
        pytest.skip("the test SLURM cluster runs its daemons as root (slurmd starts jobs as their user)")
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as env:
        yield env


@pytest.fixture
def text(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(make_text())
    return path


def run_folders(sweep: Path) -> dict[int, Path]:
    """The sweep's run folders (any names), by seed: each has Hydra's record of its job."""
    runs = [record.parent.parent for record in sweep.glob("**/.hydra/config.yaml")]
    seeds = {OmegaConf.load(run / ".hydra" / "config.yaml").seed: run for run in runs}
    assert len(seeds) == len(runs), f"two folders for one job: {sorted(map(str, runs))}"
    return seeds


def sbatch_script(sweep: Path) -> str:
    """The sbatch script submitit wrote for the sweep's job array (in the sweep's .submitit/)."""
    scripts = sorted(sweep.glob(".submitit/**/*_submission.sh"))
    assert scripts, f"no sbatch script in {sweep / '.submitit'}"
    return scripts[0].read_text()


def sbatch_options(script: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(\S*))?$", script, flags=re.MULTILINE))


@pytest.mark.slow
def test_a_sweep_with_the_preset_defaults_runs_on_a_small_node_without_gpus(slurm, text, tmp_path):
    if cpu_count() < DEFAULTS["cpus_per_task"] or memory_mb() < DEFAULTS["mem_gb"] * 1024 + 1024:
        pytest.skip(f"this machine is smaller than the preset's defaults ({DEFAULTS['cpus_per_task']} CPUs, "
                    f"{DEFAULTS['mem_gb']} GB)")
    sweep = tmp_path / "sweep"
    result = run_train("-m", "hydra/launcher=slurm", f"hydra.sweep.dir={sweep}", "seed=1", "data=text_file",
                       f"data.path={text}", *TINY_MODEL, *QUIET, env=slurm, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    options = sbatch_options(sbatch_script(sweep))
    assert "gpus-per-node" not in options and "gres" not in options  # a cluster without GPUs accepts it
    assert (options["cpus-per-task"], options["mem"], options["time"]) == ("2", "4GB", "240")
    (run,) = run_folders(sweep).values()
    assert json.loads((run / "result.json").read_text())["steps"] == 4
    assert "; 2 CPU threads" in (run / "train.log").read_text()  # cpus_per_task


@pytest.mark.slow
def test_a_sweep_job_that_reaches_its_time_limit_is_requeued_and_resumes_losing_nothing(slurm, text, tmp_path):
    """Issue 23: each job trains for about 60 s (240 steps of 0.25 s) under a 1-minute time limit. SLURM
    signals it (SIGUSR2) 5 s before the limit (or up to 30 s earlier: slurmctld checks time limits every 30
    s), the job saves a checkpoint and is requeued (submitit), and the requeued job resumes from its own
    folder's last checkpoint, until all steps are done: one folder per job, complete, each step once."""
    sweep, max_steps = tmp_path / "sweep", 240
    started = time.monotonic()
    result = run_train(
        "-m", "hydra/launcher=slurm", f"hydra.sweep.dir={sweep}", "seed=1,2",
        "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=5",  # and the preset's max_num_timeout=3
        "hydra.launcher.cpus_per_task=1",  # both jobs at once on a 2-core machine
        "hydra.launcher.gpus_per_node=0",  # sbatch --gpus-per-node=0: accepted where there are no GPUs
        "data=text_file", f"data.path={text}", *TINY_MODEL, *QUIET, f"trainer.max_steps={max_steps}",
        "trainer.val_check_interval=100", "trainer.limit_val_batches=2",
        "+callbacks.slow._target_=tests.helpers.SlowSteps", "+callbacks.slow.seconds=0.25",
        env=slurm, timeout=600,
    )
    elapsed = time.monotonic() - started
    logs = "\n".join(f"--- {p.relative_to(sweep)}\n{p.read_text(errors='replace')[-2000:]}"
                     for p in sorted(sweep.glob(".submitit/**/*_log.*")))
    assert result.returncode == 0, f"after {elapsed:.0f} s\n{result.stderr[-3000:]}\n{logs}"
    options = sbatch_options(sbatch_script(sweep))
    assert (options["gpus-per-node"], options["time"], options["signal"]) == ("0", "1", "USR2@5")
    runs = run_folders(sweep)
    assert sorted(runs) == [1, 2], f"one folder per job: {sorted(map(str, runs.values()))}"
    for seed, run in runs.items():
        where = f"seed={seed} ({run})"
        assert "resuming from" in (run / "train.log").read_text(), f"{where} was not resumed\n{logs}"
        assert json.loads((run / "result.json").read_text())["steps"] == max_steps, where
        last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        assert last["global_step"] == max_steps, where
        assert not [p.name for p in run.rglob("*-v[0-9]*")], f"{where}: a second copy of a file"
        scalars = read_scalars(run)
        for tag, points in scalars.items():
            steps = [step for step, _ in points]
            assert len(steps) == len(set(steps)), f"{where}: {tag} has a step twice: {steps}"
        assert [step for step, _ in scalars["train/loss"]] == list(range(max_steps)), f"{where}: steps lost"
        # each attempt's event file continues the one before (purged past its checkpoint: no step twice)
        attempts = (run / "train.log").read_text().count("resuming from") + 1
        assert len(list(run.glob("events.out.*"))) == attempts, where
    assert (sweep / "summary.md").read_text().count("| finished |") == 2
