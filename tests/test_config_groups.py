"""Every part swappable from the command line: optimizers, schedules, callbacks, loggers, debug
presets and tasks are config groups of `_target_` objects; the package has no import cycles."""

import ast
import csv
import math
from pathlib import Path

import pytest
import torch

from rnnexp.checkpoint import load_checkpoint
from rnnexp.train import train
from tests.helpers import REPO, compose_config, read_scalars, tiny_run_config

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
              "rmsprop": torch.optim.RMSprop}
LR = 0.01


def expected_lr(sched: str, step: int, total: int) -> float:
    """The lr each schedule's formula gives at `step` of a `total`-step run, written out independently."""
    if sched == "none":
        return LR
    if sched == "exponential":  # decay_rate 0.5, decay_steps 2
        return LR * 0.5 ** (step / 2)
    if sched == "cosine":  # warmup_steps 2, total_steps = max_steps, min_lr_ratio 0.1
        if step < 2:
            return LR * (step + 1) / 3
        progress = min(1.0, (step - 2) / (total - 2))
        return LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    # plateau: threshold 10 makes every validation (every 2 steps) count as no improvement; with
    # patience 1 the lr is divided by 4 at every second validation, i.e. after steps 4 and 8.
    return LR * 0.25 ** (step // 4)


def expected_lrs(sched: str, steps: int) -> list[float]:
    return [expected_lr(sched, s, steps) for s in range(steps)]


SCHED_ARGS = {
    "none": [],
    "exponential": ["sched.decay_rate=0.5", "sched.decay_steps=2"],
    "cosine": ["sched.warmup_steps=2"],
    "plateau": ["sched.patience=1", "sched.threshold=10"],
}


@pytest.mark.parametrize("sched", list(SCHED_ARGS))
@pytest.mark.parametrize("optim", list(OPTIMIZERS))
def test_every_optimizer_and_schedule_trains_and_logs_the_formulas_lr(tiny_text, tmp_path, optim, sched):
    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, f"optim={optim}", f"sched={sched}", *SCHED_ARGS[sched],
                          f"lr={LR}", "trainer.max_steps=8", "trainer.val_check_interval=2", "sample.length=0"))
    lrs = [lr for _, lr in read_scalars(run_dir)["train/lr"]]
    assert lrs == pytest.approx(expected_lrs(sched, 8), rel=1e-6)
    state = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["optimizer_states"][0]
    # the optimizer in last.ckpt holds the lr for the next step
    assert state["param_groups"][0]["lr"] == pytest.approx(expected_lr(sched, 8, 8), rel=1e-6)
    # and the optimizer of that option is the one built
    from rnnexp.optim import build_optimizer
    from rnnexp.train import resolve
    from tests.helpers import compose_config

    config = resolve(compose_config(f"optim={optim}", f"run_dir={tmp_path}"))["optim"]
    assert type(build_optimizer([torch.nn.Parameter(torch.zeros(1))], config, LR)) is OPTIMIZERS[optim]


def test_any_torch_optimizer_by_target_with_its_own_keys(tiny_text, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, "optim=sgd", "optim._target_=torch.optim.Adagrad", "~optim.momentum",
                          "+optim.lr_decay=0.1", "sched=none", f"lr={LR}"))
    state = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["optimizer_states"][0]
    assert state["param_groups"][0]["lr_decay"] == 0.1 and "sum" in next(iter(state["state"].values()))


def test_plateau_schedule_resumes_with_its_counters(tiny_text, tmp_path):
    """The plateau schedule is stepped by rnnexp, so its state must travel in the checkpoint."""
    args = ["sched=plateau", *SCHED_ARGS["plateau"], f"lr={LR}", "trainer.val_check_interval=2", "sample.length=0"]
    first = tmp_path / "first"
    train(tiny_run_config(tiny_text, first, *args, "trainer.max_steps=6"))
    train(tiny_run_config(tiny_text, first, *args, "trainer.max_steps=10", f"ckpt_path={first}"))
    lrs = [lr for _, lr in read_scalars(first)["train/lr"]]
    assert lrs == pytest.approx(expected_lrs("plateau", 10), rel=1e-6)


def test_early_stopping_stops_at_the_expected_validation(tiny_text, tmp_path, caplog):
    # min_delta 100: nothing counts as an improvement after the first validation (step 2), so with
    # patience 2 the run stops after the validation at step 6, not at max_steps 20.
    run_dir = tmp_path / "run"
    with caplog.at_level("INFO", logger="rnnexp"):
        train(tiny_run_config(tiny_text, run_dir, "trainer.max_steps=20", "trainer.val_check_interval=2",
                              "callbacks.early_stop.patience=2", "callbacks.early_stop.min_delta=100",
                              "sample.length=0"))
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 6
    # Lightning writes a validation at the step of the last training batch before it (1 for step 2)
    assert [step for step, _ in read_scalars(run_dir)["val/loss"]] == [1, 3, 5]
    assert "early stopping at step 6" in caplog.text


def test_early_stopping_says_nothing_when_something_else_ends_the_run(tiny_text, tmp_path, caplog):
    with caplog.at_level("INFO", logger="rnnexp"):  # patience 100: the run ends at max_steps, not by early stopping
        train(tiny_run_config(tiny_text, tmp_path / "run", "trainer.max_steps=4", "trainer.val_check_interval=2",
                              "callbacks.early_stop.patience=100", "sample.length=0"))
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 4
    assert "early stopping" not in caplog.text


def test_early_stopping_is_off_by_default(tiny_text, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, "trainer.max_steps=8", "trainer.val_check_interval=2",
                          "callbacks.early_stop.min_delta=100", "sample.length=0"))
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 8


def test_monitor_auto_follows_the_tasks_main_metric_and_its_direction():
    from rnnexp.callbacks import resolve_monitor

    auto = {"monitor": "auto", "mode": "auto"}
    assert resolve_monitor(auto, "val/bpc", False) == {"monitor": "val/bpc", "mode": "min"}
    assert resolve_monitor(auto, "val/seq_acc", True) == {"monitor": "val/seq_acc", "mode": "max"}
    assert resolve_monitor({"monitor": "val/f1", "mode": "auto"}, "val/bpc", False)["mode"] == "max"
    assert resolve_monitor({"monitor": "val/loss", "mode": "auto"}, "val/seq_acc", True)["mode"] == "min"
    assert resolve_monitor({"monitor": "val/loss", "mode": "max"}, "val/bpc", False)["mode"] == "max"
    assert resolve_monitor(auto, "val/reward", True)["mode"] == "max"  # the task's direction, whatever the name


def test_csv_logger_writes_metrics_beside_tensorboard(tiny_text, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, "logger=many"))
    with open(run_dir / "csv" / "metrics.csv") as f:  # a folder of its own (conf/logger/csv.yaml)
        rows = list(csv.DictReader(f))
    assert {"train/loss", "val/loss", "train/lr"} <= set(rows[0])
    assert [r["step"] for r in rows if r["train/loss"]] == ["0", "1", "2", "3"]
    assert "val/loss" in read_scalars(run_dir)  # and TensorBoard as before


def test_debug_fast_runs_a_few_steps_without_checkpoints(tiny_text, tmp_path, capsys):
    from tests.helpers import compose_config

    run_dir = tmp_path / "run"  # the preset's own trainer settings: none of the tiny runs' overrides
    train(compose_config("data=text_file", f"data.path={tiny_text}", f"run_dir={run_dir}", "cell.hidden_size=16",
                         "batch_size=4", "unroll=8", "debug=fast", "trainer.enable_progress_bar=false"))
    assert not (run_dir / "checkpoints").exists()
    assert [step for step, _ in read_scalars(run_dir)["train/loss"]] == [0, 1, 2, 3, 4]
    assert [step for step, _ in read_scalars(run_dir)["val/loss"]] == [1, 3, 4]  # after steps 2, 4, 5
    assert "(no checkpoint saved)" in capsys.readouterr().out


def test_debug_overfit_drives_the_training_loss_near_zero(tiny_text, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, "debug=overfit", "cell.hidden_size=64", "lr=0.03",
                          "trainer.max_steps=150", "trainer.val_check_interval=150", "trainer.log_every_n_steps=10",
                          "sample.length=0"))
    losses = [loss for _, loss in read_scalars(run_dir)["train/loss"]]
    assert losses[0] > 1.5 and losses[-1] < 0.1, losses  # one batch of 4 x 8 characters, memorised


def test_debug_profile_writes_the_profilers_report_into_the_run_folder(tiny_text, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, "debug=profile", "trainer.max_steps=5"))
    report = (run_dir / "fit-profile.txt").read_text()
    assert "run_training_batch" in report


def test_every_data_option_names_a_task_class_and_checkpoints_load_through_it(tiny_text, tmp_path):
    from rnnexp.tasks import task_class, task_from_checkpoint
    from rnnexp.tasks.base import Task

    for data in sorted((REPO / "conf" / "data").glob("*.yaml")):  # every data option names a Task subclass
        task = task_class({"data": {"task": compose_config(f"data={data.stem}").data.task}})
        assert issubclass(task, Task), data
    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir))
    task = task_from_checkpoint(load_checkpoint(run_dir / "checkpoints" / "last.ckpt"))
    assert type(task).__name__ == "LanguageModelTask"


def module_imports(path: Path, package_root: Path) -> set[str]:
    """The rnnexp modules a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("rnnexp")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rnnexp"):
            found.add(node.module)
            for alias in node.names:  # `from rnnexp import schema` imports the module rnnexp.schema
                candidate = f"{node.module}.{alias.name}"
                if (package_root.parent / (candidate.replace(".", "/") + ".py")).exists():
                    found.add(candidate)
    return found


def test_no_module_of_rnnexp_imports_a_module_that_imports_it_back():
    root = REPO / "rnnexp"
    graph = {}
    for path in root.rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        graph[name] = module_imports(path, root) - {name}
    assert "rnnexp.tasks.base" in graph and "rnnexp.train" in graph

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        seen = set()
        while stack:
            module, trail = stack.pop()
            for imported in graph.get(module, ()):
                if imported == start:
                    return [*trail, start]
                if imported not in seen:
                    seen.add(imported)
                    stack.append((imported, [*trail, imported]))
        return None

    cycles = [c for c in map(cycle_from, graph) if c]
    assert not cycles, cycles


def test_the_cycle_check_finds_a_cycle(tmp_path):
    """The check above can fail: two modules importing each other are seen as importing each other."""
    (tmp_path / "rnnexp").mkdir()
    (tmp_path / "rnnexp" / "a.py").write_text("from rnnexp.b import x\n")
    (tmp_path / "rnnexp" / "b.py").write_text("def f():\n    from rnnexp import a\n")
    assert module_imports(tmp_path / "rnnexp" / "a.py", tmp_path / "rnnexp") == {"rnnexp.b"}
    assert "rnnexp.a" in module_imports(tmp_path / "rnnexp" / "b.py", tmp_path / "rnnexp")


def test_scripts_depend_on_the_package_only():
    for script in (REPO / "scripts").glob("*.py"):
        tree = ast.parse(script.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(m == "tests" or m.startswith("tests.") for m in imported), script.name


def test_targets_import_as_hydra_finds_them_and_a_missing_one_is_named_once():
    from rnnexp.errors import ConfigError, import_object

    assert import_object("torch.optim.lr_scheduler.StepLR", "sched._target_") is torch.optim.lr_scheduler.StepLR
    assert import_object("torch.nn.LSTM.forward", "x") is torch.nn.LSTM.forward  # a class's attribute, as Hydra
    for path, reason in (("torch.optim.Adamm", "AttributeError: module 'torch.optim' has no attribute 'Adamm'"),
                         ("rnnexp.nowhere.Task", "ModuleNotFoundError: No module named 'rnnexp.nowhere'"),
                         ("torch.nn.LSTM.nope", "AttributeError: torch.nn.LSTM has no attribute 'nope'")):
        with pytest.raises(ConfigError) as refused:
            import_object(path, "optim._target_")
        assert str(refused.value) == f"optim._target_={path} cannot be imported ({reason})"
