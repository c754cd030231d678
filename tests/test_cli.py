"""train.py as a user runs it: a subprocess, from the repository root."""

import subprocess
import sys

import pytest

from tests.helpers import DATA_DIR, REPO, TINY_MODEL, make_text, read_scalars, run_train


def test_help_does_not_import_torch_or_lightning():
    code = (
        "import runpy, sys\n"
        "sys.argv = ['train.py', '--help']\n"
        "try:\n    runpy.run_path('train.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print('heavy imports:', sorted(m for m in ('torch', 'pytorch_lightning') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "cell: custom, gru, gru_cho, irnn, lstm" in result.stdout
    assert "optim: adam, adamw, rmsprop, sgd" in result.stdout and "debug: fast, overfit, profile" in result.stdout
    assert "heavy imports: []" in result.stdout


def test_bad_value_exits_2_with_one_line_and_no_run_folder(tmp_path):
    result = run_train("lr=-1", f"hydra.run.dir={tmp_path}/run", "data_dir=/nonexistent")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: lr must be a positive number, got -1"
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_data_file_is_one_clear_line(tmp_path):
    result = run_train("data=text_file", f"data.path={tmp_path}/nope.txt", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: data file {tmp_path}/nope.txt does not exist"


@pytest.mark.slow
@pytest.mark.skipif(DATA_DIR is None or not (DATA_DIR / "tinyshakespeare.txt").exists(),
                    reason="needs $RNNEXP_DATA_DIR/tinyshakespeare.txt")
def test_headline_command_learns_tinyshakespeare(tmp_path):
    """The issue's acceptance run: `python train.py cell=gru unroll=40 trainer.max_steps=300`."""
    run_dir = tmp_path / "run"
    result = run_train(
        "cell=gru", "unroll=40", "trainer.max_steps=300", f"hydra.run.dir={run_dir}",
        "trainer.enable_progress_bar=false", env={"RNNEXP_DATA_DIR": str(DATA_DIR)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--- sample" in result.stdout and f"run folder: {run_dir}" in result.stdout
    for noise in ("LeafSpec", "litlogger", "not supported by the model summary"):  # filtered at the entry point
        assert noise not in result.stderr + result.stdout
    scalars = read_scalars(run_dir)
    expected = {"train/loss", "val/loss", "val/bpc", "train/lr", "vitals/grad_norm/total",
                "vitals/grad_norm/rnn.weight_hh_l0"}
    assert expected <= set(scalars)
    final_bpc = scalars["val/bpc"][-1]
    assert final_bpc[0] == 299 and final_bpc[1] < 3.0  # the validation after step 300
    import torch

    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 300


def test_multirun_sweep_runs_every_combination(tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text(make_text())
    result = run_train(
        "-m", "cell=rnn,gru", "unroll=4,8", "data=text_file", f"data.path={text}", f"hydra.sweep.dir={tmp_path}/sweep",
        *(o for o in TINY_MODEL if not o.startswith("unroll=")),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for job, (cell, unroll) in enumerate([("rnn", 4), ("rnn", 8), ("gru", 4), ("gru", 8)]):
        # the job number and a name from its overrides, the cell first
        (run,) = (tmp_path / "sweep").glob(f"{job}_{cell}_*")
        assert run.name.endswith(f"_u{unroll}")
        config = (run / ".hydra" / "config.yaml").read_text()
        assert f"name: {cell}" in config and f"unroll: {unroll}" in config
        assert "val/loss" in read_scalars(run)
    summary = subprocess.run([sys.executable, "scripts/summarize.py", str(tmp_path / "sweep")], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert summary.returncode == 0, summary.stderr
    rows = [line for line in summary.stdout.splitlines() if line.startswith("| ") and "_u" in line]
    assert len(rows) == 4 and all(row.rstrip(" |").endswith("finished") for row in rows)
    best = [float(row.split(" | ")[3]) for row in rows]  # run, cell, unroll, best val/bpc, ...
    assert best == sorted(best)  # best first
    for name in ("summary.md", "summary.csv", "curves.png", "by_parameter.png"):
        assert (tmp_path / "sweep" / name).stat().st_size > 0


def test_sample_script_continues_the_prime(tiny_text, tmp_path):
    from rnnexp.train import train
    from tests.helpers import run_script_in_process, tiny_run_config

    train(tiny_run_config(tiny_text, tmp_path / "run"))
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    command = [sys.executable, "scripts/sample.py", str(checkpoint), "--prime", "the ", "--length", "30"]
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    first = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)  # the command line
    again = run_script_in_process("sample.py", *command[2:])  # the rest in this process: the same script
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before  # nothing written
    by_folder = run_script_in_process("sample.py", str(tmp_path / "run"))
    assert by_folder.stderr.startswith(f"checkpoint: {checkpoint} (step 4)")  # it names the file it chose
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("the ") and len(first.stdout) == 34 + 1  # print's newline
    assert first.stdout == again.stdout  # seeded
    bad = run_script_in_process("sample.py", str(tmp_path / "none.ckpt"))
    assert bad.returncode == 2 and bad.stderr.strip() == f"error: checkpoint {tmp_path / 'none.ckpt'} does not exist"


def test_a_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text(make_text())
    sweep = tmp_path / "sweep"
    result = run_train(  # gru with arch.combine=product is refused: 3 jobs run, 1 fails
        "-m", "cell=rnn,gru", "cell.impl=scratch", "arch.combine=sum,product", "data=text_file", f"data.path={text}",
        f"hydra.sweep.dir={sweep}", *TINY_MODEL, "sample.length=0",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    failed = [job for job in sweep.iterdir() if (job / "error.txt").exists()]
    assert len(failed) == 1 and failed[0].name.startswith("3_gru_") and "product" in failed[0].name
    assert "arch.combine=product is defined for the vanilla rnn cell only" in (failed[0] / "error.txt").read_text()
    assert len([job for job in sweep.iterdir() if (job / "result.json").exists()]) == 3
    summary = subprocess.run([sys.executable, "scripts/summarize.py", str(sweep)], cwd=REPO, capture_output=True,
                             text=True, timeout=120)
    assert summary.returncode == 0 and "| failed: arch.combine=product is defined" in summary.stdout
    assert summary.stdout.count("| finished |") == 3
    for name in ("summary.md", "summary.csv", "curves.png", "by_parameter.png"):
        assert (sweep / name).stat().st_size > 0
