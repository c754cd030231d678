"""Sweep summaries, from run folders made here (no training): each metric's runs best first in that
metric's own direction (val/f1 and val/acc descending, val/bpc ascending) by each run's best value,
not its last; what each column says for finished, failed and running runs; the plot by parameter."""

import csv
import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from torch.utils.tensorboard import SummaryWriter

from rnnexp.summary import Run, SummarizeSweep, find_runs, plot_by_parameter, read_run, summarize, swept_keys
from tests.helpers import compose_config

# run name -> (task options, its validation curve): the best and the final values order the runs differently.
RUNS = {
    "f1_late_peak": (["data=segmentation", "arch=bidirectional"], [0.50, 0.80, 0.60]),
    "f1_steady": (["data=segmentation", "arch=bidirectional"], [0.70, 0.75]),
    "f1_low": (["data=segmentation", "arch=bidirectional"], [0.20, 0.30]),
    "bpc_late_dip": (["data=text_file", "data.path=x.txt"], [3.0, 1.5, 2.5]),
    "bpc_steady": (["data=text_file", "data.path=x.txt"], [2.2, 2.0]),
    "bpc_high": (["data=text_file", "data.path=x.txt"], [4.0, 3.5]),
}


def make_run(folder, options, curve, overrides=None, scalars=None):
    """A run folder as Hydra and a run leave it: its .hydra record (the overrides as given on the
    command line), and its main metric logged at each validation (steps 9, 19, ...), with `scalars`
    ({tag: [(step, value, wall_time)]}) besides."""
    cfg = compose_config(*options, f"run_dir={folder}")
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides or [f"+tag={folder.name}"]), folder / ".hydra" / "overrides.yaml")
    writer = SummaryWriter(str(folder))
    for k, value in enumerate(curve):
        writer.add_scalar(cfg.data.metric, value, 10 * k + 9, walltime=1000.0 + k)
    for tag, points in (scalars or {}).items():
        for step, value, wall_time in points:
            writer.add_scalar(tag, value, step, walltime=wall_time)
    writer.close()


LM = ["data=text_file", "data.path=x.txt"]


def tables(root):
    """summary.csv's rows, one list per metric (each starts at its own header row)."""
    with open(root / "summary.csv", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    found = {}
    for row in rows:
        if row[0] == "run":
            metric = row[next(i for i, c in enumerate(row) if c.startswith("best "))].removeprefix("best ")
            found[metric] = []
        else:
            found[metric].append(row)
    return found


def test_each_metric_is_sorted_best_first_in_its_own_direction(tmp_path):
    for name, (options, curve) in RUNS.items():
        make_run(tmp_path / name, options, curve)
    summarize(tmp_path)
    found = tables(tmp_path)
    assert set(found) == {"val/f1", "val/bpc"}
    f1, bpc = found["val/f1"], found["val/bpc"]
    assert [row[0] for row in f1] == ["f1_late_peak", "f1_steady", "f1_low"]  # higher is better: descending
    assert [row[0] for row in bpc] == ["bpc_late_dip", "bpc_steady", "bpc_high"]  # lower is better: ascending
    best = f1[0].index("0.8000")  # the column of the best value; the step it follows is next to it
    assert [float(row[best]) for row in f1] == [0.80, 0.75, 0.30]
    assert [float(row[best]) for row in bpc] == [1.5, 2.0, 3.5]
    assert [row[best + 1] for row in f1 + bpc] == ["20", "20", "20", "20", "20", "20"]
    assert (tmp_path / "summary.md").read_text().startswith(f"# {tmp_path.name}: 6 runs, by val/bpc, val/f1\n")


@pytest.mark.parametrize("higher", [True, False])
def test_a_runs_best_is_its_maximum_or_minimum_as_its_metric_says(tmp_path, higher):
    options = ["data=segmentation", "arch=bidirectional"] if higher else ["data=text_file", "data.path=x.txt"]
    make_run(tmp_path / "run", options, [0.5, 0.9, 0.1, 0.4])
    (run,) = find_runs(tmp_path)
    assert run.higher_is_better is higher
    assert run.best == ((19, pytest.approx(0.9)) if higher else (29, pytest.approx(0.1)))


def test_a_finished_run_reports_its_result_json_and_a_failed_one_its_error(tmp_path):
    make_run(tmp_path / "done", LM, [2.0, 1.8], scalars={"train/loss": [(0, 3.0, 1000.0), (19, 2.0, 1001.0)]})
    (tmp_path / "done" / "result.json").write_text(json.dumps({"steps": 25, "wall_seconds": 12.5,
                                                                "tokens_per_sec": 1234.4}))
    make_run(tmp_path / "broke", LM, [2.5])
    (tmp_path / "broke" / "error.txt").write_text("TrainingDiverged: loss became NaN\nTraceback ...\n")
    (tmp_path / "broke" / "result.json").write_text(json.dumps({"steps": 3}))  # the error wins
    make_run(tmp_path / "pruned", LM, [2.9])  # stopped by a search's pruner (PruneTrial writes the step)
    (tmp_path / "pruned" / "result.json").write_text(json.dumps({"steps": 10, "pruned_at_step": 10}))
    done, broke = read_run(tmp_path / "done"), read_run(tmp_path / "broke")
    assert read_run(tmp_path / "pruned").status == "pruned at step 10"
    assert (done.status, done.steps, done.wall_seconds, done.tokens_per_sec) == ("finished", 25, 12.5, 1234.4)
    assert done.metric == "val/bpc" and done.higher_is_better is False  # ${tokenizer.lm_metric}, resolved
    assert done.curve == [(9, 2.0), (19, pytest.approx(1.8))] and done.overrides == {"tag": "done"}
    assert broke.status == "failed: TrainingDiverged: loss became NaN" and broke.steps == 0
    rows = summary_rows(tmp_path)
    assert rows["done"] == {"run": "done", "tag": "done", "best val/bpc": "1.8000", "step of best": "20",
                            "final val/bpc": "1.8000", "steps": "25", "tokens/s": "1,234", "wall s": "12",
                            "status": "finished"}
    assert rows["broke"]["status"] == "failed: TrainingDiverged: loss became NaN"
    assert (rows["pruned"]["status"], rows["pruned"]["steps"]) == ("pruned at step 10", "10")
    assert (rows["broke"]["steps"], rows["broke"]["wall s"], rows["broke"]["tokens/s"]) == ("0", "", "")


def test_a_running_run_is_measured_from_its_events(tmp_path):
    perf = [(4, 100.0, 1000.0), (9, 300.0, 1002.0), (14, 200.0, 1003.5)]
    make_run(tmp_path / "running", LM, [2.0], scalars={"train/tokens_per_sec": perf,
                                                       "train/loss": [(4, 3.0, 1000.0), (9, 2.7, 1002.0),
                                                                      (14, 2.5, 1003.5)]})
    (tmp_path / "short").mkdir()
    (tmp_path / "short" / "result.json").write_text(json.dumps({"steps": 4, "wall_seconds": None,
                                                                 "tokens_per_sec": None}))
    make_run(tmp_path / "short", LM, [])  # finished before json had wall time: events say nothing either
    make_run(tmp_path / "two_moments", LM, [2.0], scalars={"train/loss": [(4, 3.0, 1004.0)]})
    assert read_run(tmp_path / "two_moments").wall_seconds == pytest.approx(4.0)  # two moments make a span
    running, short = read_run(tmp_path / "running"), read_run(tmp_path / "short")
    assert (running.status, running.steps, running.tokens_per_sec) == ("running or stopped", 15, 200.0)
    assert running.wall_seconds == pytest.approx(3.5)  # from the first scalar written to the last
    assert short.status == "finished" and short.steps == 4 and short.best is None
    assert math.isnan(short.wall_seconds) and math.isnan(short.tokens_per_sec)
    rows = summary_rows(tmp_path)
    assert (rows["running"]["wall s"], rows["running"]["tokens/s"]) == ("3.5", "200")
    assert rows["short"]["best val/bpc"] == rows["short"]["final val/bpc"] == rows["short"]["wall s"] == ""
    assert rows["short"]["step of best"] == ""
    assert list(rows) == ["running", "two_moments", "short"]  # a run without a value comes last


def summary_rows(root):
    summarize(root)
    with open(root / "summary.csv", encoding="utf-8") as f:
        return {row["run"]: row for row in csv.DictReader(f)}


def test_the_swept_settings_are_the_columns_in_the_order_asked(tmp_path):
    for name, overrides in (("a", ["cell=gru", "lr=0.1", "+seed=1"]), ("b", ["cell=lstm", "lr=0.1", "+seed=1"]),
                            ("c", ["cell=gru", "lr=0.01", "~sample", "+seed=1"])):
        make_run(tmp_path / name, LM, [2.0], overrides=overrides)
    runs = find_runs(tmp_path)
    assert [r.folder.name for r in runs] == ["a", "b", "c"]
    assert runs[2].overrides == {"cell": "gru", "lr": "0.01", "sample": "", "seed": "1"}
    assert swept_keys(runs) == ["cell", "lr", "sample"]  # seed is the same everywhere
    summarize(tmp_path, x="lr", lines="sample")
    header = (tmp_path / "summary.md").read_text().splitlines()[2]
    assert header.startswith("| run | lr | sample | cell | best val/bpc |")
    rows = summary_rows(tmp_path)
    assert [(rows[r]["cell"], rows[r]["lr"], rows[r]["sample"]) for r in "abc"] == [
        ("gru", "0.1", ""), ("lstm", "0.1", ""), ("gru", "0.01", "")]  # a setting a run did not give: blank
    for x, lines in (("seed", None), ("lr", "unroll")):
        with pytest.raises(ValueError, match=f"^{x if x == 'seed' else lines} is not a swept setting of these runs; "
                                             "they sweep cell, lr, sample$"):
            summarize(tmp_path, x=x, lines=lines)
    with pytest.raises(ValueError, match="^seed is not a swept setting of these runs; they sweep nothing$"):
        summarize(tmp_path / "a", x="seed")
    for name in ("summary.md", "summary.csv", "curves.png", "by_parameter.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_a_sweep_ends_with_its_summary_or_says_why_there_is_none(tmp_path, capsys):
    make_run(tmp_path / "sweep" / "0_run", LM, [2.0])
    (tmp_path / "empty").mkdir()
    for folder in ("sweep", "empty"):
        SummarizeSweep().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / folder)}}}))
    out = capsys.readouterr().out.splitlines()
    assert out == [f"sweep summary: {tmp_path / 'sweep' / 'summary.md'} (and summary.csv, curves.png, by_parameter.png "
                   "beside it)", f"view it:       tensorboard --logdir {tmp_path / 'sweep'}",
                   f"no sweep summary: no run under {tmp_path / 'empty'} (no .hydra/config.yaml)"]


def runs_of(grid):
    return [Run(Path(f"r{k}"), overrides, "val/bpc", False, curve) for k, (overrides, curve) in enumerate(grid)]


def test_the_plot_by_parameter_shows_each_lines_best_value_at_each_setting():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.font_manager import FontProperties

    runs = runs_of([({"unroll": "10", "cell": "gru"}, [(9, 2.0), (19, 1.5)]),
                    ({"unroll": "40", "cell": "gru"}, [(9, 1.9)]),
                    ({"unroll": "5", "cell": "gru"}, []),
                    ({"unroll": "10", "cell": "lstm"}, [(9, 1.7), (19, 1.8)]),
                    ({"unroll": "40"}, [(9, 2.2)])])  # a run without the setting: a line of its own
    figure, axes = plt.subplots()
    plot_by_parameter(axes, runs, ["unroll", "cell"], "val/bpc", "sweep")
    lines = axes.get_lines()
    assert [line.get_label() for line in lines] == ["cell=gru", "cell=lstm", "cell="]
    assert [list(line.get_xdata()) for line in lines] == [[5, 10, 40]] * 3  # as numbers, in order
    ys = [list(line.get_ydata()) for line in lines]
    assert ys[0][1:] == [1.5, 1.9] and ys[1][1] == 1.7 and ys[2][2] == 2.2
    assert math.isnan(ys[0][0]) and math.isnan(ys[1][0]) and math.isnan(ys[1][2]) and math.isnan(ys[2][1])
    assert all(line.get_marker() == "o" for line in lines)
    assert (axes.get_xlabel(), axes.get_ylabel(), axes.get_title()) == ("unroll", "best val/bpc",
                                                                        "sweep: best val/bpc by unroll")
    legend = axes.get_legend().get_texts()
    assert [t.get_text() for t in legend] == ["cell=gru", "cell=lstm", "cell="]
    assert legend[0].get_fontsize() == FontProperties(size="small").get_size_in_points()
    plt.close(figure)

    figure, axes = plt.subplots()  # settings that are not numbers: evenly spaced, in the order met
    plot_by_parameter(axes, runs, ["cell"], "val/bpc", "sweep")
    (line,) = axes.get_lines()
    assert list(line.get_xdata()) == [0, 1, 2] and list(line.get_ydata()) == [1.5, 1.7, 2.2]
    assert line.get_label().startswith("_") and axes.get_legend() is None  # one line: no label
    ticks = axes.get_xticklabels()
    assert [t.get_text() for t in ticks] == ["gru", "lstm", ""]
    assert all(t.get_rotation() == 30 and t.get_horizontalalignment() == "right" for t in ticks)
    plt.close(figure)


def test_summary_md_is_a_markdown_table_per_metric(tmp_path):
    make_run(tmp_path / "f1", ["data=segmentation", "arch=bidirectional"], [0.5])
    make_run(tmp_path / "bpc", LM, [2.0])
    summarize(tmp_path)
    row = "| {} | {:.4f} | 10 | {:.4f} | 0 |  |  | running or stopped |"  # each metric's runs sweep nothing
    assert (tmp_path / "summary.md").read_text(encoding="utf-8") == "\n".join([
        f"# {tmp_path.name}: 2 runs, by val/bpc, val/f1", "",
        "## val/bpc: 1 runs", "",
        "| run | best val/bpc | step of best | final val/bpc | steps | tokens/s | wall s | status |",
        "|---|---|---|---|---|---|---|---|",
        row.format("bpc", 2.0, 2.0), "",
        "## val/f1: 1 runs", "",
        "| run | best val/f1 | step of best | final val/f1 | steps | tokens/s | wall s | status |",
        "|---|---|---|---|---|---|---|---|",
        row.format("f1", 0.5, 0.5), ""])
    summarize(tmp_path / "bpc")  # one metric: the table alone, no heading
    assert (tmp_path / "bpc" / "summary.md").read_text(encoding="utf-8").split("\n")[1:4] == [
        "", "| run | best val/bpc | step of best | final val/bpc | steps | tokens/s | wall s | status |",
        "|---|---|---|---|---|---|---|---|"]


def test_wall_time_has_a_decimal_below_ten_seconds(tmp_path):
    for name, seconds in (("a", 9.94), ("b", 10.0), ("c", 1234.5)):
        make_run(tmp_path / name, LM, [2.0])
        (tmp_path / name / "result.json").write_text(json.dumps({"steps": 5, "wall_seconds": seconds,
                                                                  "tokens_per_sec": 1234567.5}))
    rows = summary_rows(tmp_path)
    assert [rows[r]["wall s"] for r in "abc"] == ["9.9", "10", "1234"]
    assert rows["a"]["tokens/s"] == "1,234,568"


def test_curves_png_draws_each_runs_validation_curve_at_the_step_it_follows(tmp_path, monkeypatch):
    import matplotlib.figure
    from matplotlib.font_manager import FontProperties

    saved = {}
    original = matplotlib.figure.Figure.savefig

    def keep(figure, path, *args, **kwargs):
        saved[Path(path).name] = figure
        return original(figure, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    make_run(tmp_path / "f1", ["data=segmentation", "arch=bidirectional"], [0.5, 0.7])
    make_run(tmp_path / "bpc", LM, [2.0, 1.5, 1.7])
    make_run(tmp_path / "bpc_empty", LM, [])
    summarize(tmp_path)
    figure = saved["curves.png"]
    assert tuple(figure.get_size_inches()) == (8, 10)  # one chart of 8 x 5 inches per metric
    (bpc, f1) = figure.get_axes()
    assert [line.get_label() for line in bpc.get_lines()] == ["bpc"]  # a run without values draws nothing
    (line,) = bpc.get_lines()
    assert list(line.get_xdata()) == [10, 20, 30] and list(line.get_ydata()) == pytest.approx([2.0, 1.5, 1.7])
    assert line.get_marker() == "."
    assert (bpc.get_xlabel(), bpc.get_ylabel(), bpc.get_title()) == (
        "training step", "val/bpc", f"{tmp_path.name}: val/bpc at each validation")
    assert [t.get_text() for t in bpc.get_legend().get_texts()] == ["bpc"]
    assert f1.get_title() == f"{tmp_path.name}: val/f1 at each validation" and len(f1.get_lines()) == 1
    assert bpc.get_legend().get_texts()[0].get_fontsize() == FontProperties(size="x-small").get_size_in_points()
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []  # every figure closed
    from PIL import Image

    for name, inches in (("curves.png", (8, 10)), ("by_parameter.png", (8, 5))):
        with Image.open(tmp_path / name) as image:
            assert image.size == (inches[0] * 120, inches[1] * 120), name  # at 120 dpi
    (by_tag,) = saved["by_parameter.png"].get_axes()  # only val/bpc's runs sweep a setting (their tag)
    assert by_tag.get_title() == f"{tmp_path.name}: best val/bpc by tag"
    assert tuple(saved["by_parameter.png"].get_size_inches()) == (8, 5)


@pytest.mark.parametrize("higher", [True, False])
def test_settings_swept_over_seeds_are_ranked_by_their_mean_best_first_in_the_metrics_direction(tmp_path, higher):
    options = ["data=segmentation", "arch=bidirectional"] if higher else LM
    bests = {"0.5": (0.8, 0.9), "0.05": (0.6, 0.5)} if higher else {"0.5": (1.5, 1.7), "0.05": (2.0, 2.2)}
    for lr, values in bests.items():  # 0.5 is the better setting in each direction; "0.05" sorts first as text
        for seed, best in enumerate(values, start=1):
            make_run(tmp_path / f"lr{lr}_s{seed}", options, [best], overrides=[f"lr={lr}", f"seed={seed}"])
    summary = summarize(tmp_path).read_text(encoding="utf-8")
    assert summary.index("| 0.5 | 2 |") < summary.index("| 0.05 | 2 |")
