"""Extending rnnexp the way Hydra users do: parts kept outside the package (a config folder on
`hydra.searchpath`, a module on the Python path) train, resume and show in sweep summaries; Hydra's
extension points find group options; typos and bad values get one line before anything heavy loads."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

EXAMPLES = REPO / "examples"
# Tiny settings for the running-parity task of examples/parity_task.py.
TINY_PARITY = ["trainer.val_check_interval=10", "batch_size=8", "cell.hidden_size=8", "arch.embedding_dim=4",
               "data.length=8", "sample.length=0", "sample.val_length=0", "trainer.enable_progress_bar=false"]
OUTSIDE = [f"hydra.searchpath=[file://{EXAMPLES / 'conf'}]", "data=parity", "cell=leaky", "optim=sign_sgd",
           "logger=with_jsonl", "callbacks=with_weight_norm"]


def train_py(*args: str, cwd: Path, pythonpath: Path | None = None, prelude: str = "") -> subprocess.CompletedProcess:
    """train.py in a subprocess from `cwd`, with `pythonpath` on the Python path; `prelude` runs first."""
    code = f"{prelude}\nimport runpy, sys\nsys.argv = ['train.py', *sys.argv[1:]]\n" \
           f"runpy.run_path({str(REPO / 'train.py')!r}, run_name='__main__')"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (REPO, pythonpath) if p)}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.mark.slow
def test_a_task_cell_optimizer_logger_and_callback_from_outside_train_resume_and_sweep(tmp_path):
    sweep = train_py("-m", *OUTSIDE, "seed=1,2", "trainer.max_steps=20", *TINY_PARITY, cwd=tmp_path,
                     pythonpath=EXAMPLES)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    (folder,) = (tmp_path / "outputs" / "multirun").iterdir()
    summary = (folder / "summary.md").read_text()
    assert "by val/acc" in summary  # the task's own metric, declared in examples/conf/data/parity.yaml
    rows = [line.split(" | ") for line in summary.splitlines() if line.startswith("| ") and "_parity_" in line]
    best = [float(row[2]) for row in rows]
    assert len(best) == 2 and best == sorted(best, reverse=True)  # higher is better: best first
    runs = sorted(p for p in folder.iterdir() if p.is_dir())
    lines = [json.loads(line) for line in (runs[0] / "metrics.jsonl").read_text().splitlines()]
    assert any("weights/norm" in line for line in lines) and any("val/acc" in line for line in lines)
    import torch

    last = torch.load(runs[0] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    group = last["optimizer_states"][0]["param_groups"][0]
    assert group["initial_lr"] == 0.001 and "betas" not in group  # SignSGD with its default_lr, not Adam
    assert last["hyper_parameters"]["config"]["cell"]["_target_"] == "minimal_cell.LeakyRNNCell"

    resumed = train_py(*OUTSIDE, "seed=1", "trainer.max_steps=30", *TINY_PARITY,
                       f"ckpt_path={runs[0] / 'checkpoints' / 'last.ckpt'}", cwd=tmp_path, pythonpath=EXAMPLES)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads((runs[0] / "result.json").read_text())
    assert result["steps"] == 30 and "val/acc" in result["best"]


def test_group_options_come_from_every_search_path(tmp_path):
    package = tmp_path / "my_configs"
    (package / "conf" / "cell").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "conf" / "__init__.py").write_text("")
    (package / "conf" / "cell" / "gru_tiny.yaml").write_text("defaults:\n  - gru\n  - _self_\nhidden_size: 7\n")
    folder = tmp_path / "folder"
    (folder / "cell").mkdir(parents=True)
    (folder / "cell" / "gru_small.yaml").write_text("defaults:\n  - gru\n  - _self_\nhidden_size: 9\n")
    for args, hidden in ((["hydra.searchpath=[pkg://my_configs.conf]", "cell=gru_tiny"], 7),
                         ([f"hydra.searchpath=[file://{folder}]", "cell=gru_small"], 9),
                         (["--config-dir", str(folder), "cell=gru_small"], 9)):
        result = train_py(*args, "--cfg", "job", cwd=tmp_path, pythonpath=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"hidden_size: {hidden}\n" in result.stdout
    missing = train_py(f"hydra.searchpath=[file://{folder}]", "cell=gru_smal", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip() == ("error: cell=gru_smal does not exist (no cell/gru_smal.yaml in conf/ or the "
                                      "search path); did you mean cell=gru_small?")


@pytest.mark.parametrize("override,line", [
    ("unrol=40", "error: unknown key 'unrol'; did you mean 'unroll'?"),
    ("+unrol=40", "error: unknown key 'unrol'; did you mean 'unroll'?"),
    ("cell.hidden_sze=128", "error: unknown key 'cell.hidden_sze'; did you mean 'cell.hidden_size'?"),
    ("optim.betaz=[0.9,0.9]", "error: unknown key 'optim.betaz'; did you mean 'optim.betas'?"),
    ("optim.amsgrad=true", "error: optim.amsgrad is not set in this config; torch.optim.Adam takes it: add it with "
                           "+optim.amsgrad=..."),
    ("unroll=0", "error: unroll must be a positive integer, got 0"),
    ("lr=-1", "error: lr must be a positive number, got -1"),
    ("arch.dropout=1.5", "error: arch.dropout must be a number in [0, 1), got 1.5"),
])
def test_typos_and_bad_values_are_one_line_before_torch_is_imported(tmp_path, override, line):
    """Each refused in a process where importing torch or Lightning fails (`unknown key` for a key
    given without `+` too), with exit status 2 and nothing left behind."""
    block = "import sys\nsys.modules['torch'] = None\nsys.modules['pytorch_lightning'] = None"
    needs_torch = override.startswith("optim.")  # the hint names the arguments of torch.optim.Adam
    result = train_py(override, cwd=tmp_path, prelude="" if needs_torch else block)
    assert (result.returncode, result.stderr.strip()) == (2, line)
    assert not (tmp_path / "outputs").exists()


def test_an_outside_task_checks_its_own_data_keys(tmp_path):
    result = train_py(*OUTSIDE, "+data.lenght=5", cwd=tmp_path, pythonpath=EXAMPLES)
    assert (result.returncode, result.stderr.strip()) == (2, "error: unknown key 'data.lenght'; did you mean "
                                                              "'data.length'?")
    result = train_py(*OUTSIDE, "arch=bidirectional", "data.task=parity_task.Missing", cwd=tmp_path,
                      pythonpath=EXAMPLES)
    assert result.returncode == 2 and result.stderr.strip().startswith("error: data.task=parity_task.Missing cannot "
                                                                       "be imported")


def test_a_built_in_cell_is_one_entry_in_cells_and_one_config_file(tiny_text, tmp_path, monkeypatch):
    """A two-state cell added to rnnexp.cells.CELLS alone (here an LSTM that couples its input and
    forget gates by another name) trains scratch with Arch 2 and the seq2seq decoder: nothing else
    lists the cells or tests for `lstm` by name."""
    from hydra import compose, initialize_config_dir

    from rnnexp import cells
    from rnnexp.train import train

    kind = cells.CellType({"standard": cells.CELLS["lstm"].variants["cifg"]}, cell_state=True, forget_bias=1.0)
    monkeypatch.setitem(cells.CELLS, "coupled", kind)
    (tmp_path / "conf" / "cell").mkdir(parents=True)
    (tmp_path / "conf" / "cell" / "coupled.yaml").write_text(
        "name: coupled\nimpl: scratch\nhidden_size: 16\nvariant: standard\n")
    from tests.helpers import TINY_MODEL

    for run, overrides in (("lm", ["data=text_file", f"data.path={tiny_text}", "arch=arch2"]),
                           ("s2s", ["arch=seq2seq", "data=reverse", "data.train_batches=5", "data.valid_size=20"])):
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            config = compose("train", overrides=[f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "cell=coupled",
                                                 f"run_dir={tmp_path / run}", *TINY_MODEL, *overrides])
        train(config)
        state = json.loads((tmp_path / run / "result.json").read_text())
        assert state["steps"] == 4
