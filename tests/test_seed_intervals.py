"""Seeds as replicates (issue 20): a sweep over `seed` is summarised per setting with the mean, standard
deviation, number of seeds and the 95% confidence interval of the best values (Student's t); comparisons
are paired by seed; by_parameter.png draws error bars, on a log axis for geometric settings."""

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest

from rnnexp.summary import Interval, Run, compare, geometric, plot_by_parameter, summarize
from tests.helpers import REPO
from tests.test_summary import LM, make_run

T_975 = {1: 12.706204736174707, 2: 4.302652729911275, 4: 2.7764451051977987}  # Student's t, 97.5% quantile


def test_the_interval_of_a_known_sample_is_the_t_formula():
    for values, df in (([1.0, 2.0, 3.0], 2), ([2.5, 2.9], 1), ([1.0, 1.2, 0.7, 1.9, 1.1], 4)):
        n, mean = len(values), sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))  # the sample's (n - 1)
        found = Interval.of(values)
        assert (found.n, found.mean, found.std) == (n, pytest.approx(mean), pytest.approx(std))
        assert found.ci95 == pytest.approx(T_975[df] * std / math.sqrt(n), rel=1e-9)
    one = Interval.of([1.5])  # one seed: a value, no spread
    assert one.mean == 1.5 and one.n == 1 and math.isnan(one.std) and math.isnan(one.ci95)
    assert one.text() == "1.5000" and Interval.of([1.0, 2.0, 3.0]).text(2) == "2.00 ± 2.48"


def seeded_sweep(root: Path, bests: dict[tuple[str, str], list[float]]) -> None:
    """Run folders of `-m cell=... seed=1,2,...` whose best val/bpc is given per (cell, lr)."""
    for (cell, lr), values in bests.items():
        for seed, best in enumerate(values, start=1):
            make_run(root / f"{cell}_lr{lr}_s{seed}", LM, [best + 0.5, best],
                     overrides=[f"cell={cell}", f"lr={lr}", f"seed={seed}"])


def test_grouping_takes_the_seeds_as_replicates_and_nothing_else(tmp_path):
    seeded_sweep(tmp_path, {("rnn", "0.01"): [2.0, 2.2, 2.4], ("lstm", "0.01"): [1.5, 1.6, 1.7],
                            ("lstm", "0.1"): [1.9, 1.9]})
    summarize(tmp_path)
    with open(tmp_path / "summary.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8  # every run keeps its row, with its setting's figures beside it
    by_run = {row["run"]: row for row in rows}
    rnn = Interval.of([2.0, 2.2, 2.4])
    for seed in (1, 2, 3):
        row = by_run[f"rnn_lr0.01_s{seed}"]
        assert (row["n"], float(row["best_mean"]), float(row["best_std"]), float(row["best_ci95"])) == (
            "3", pytest.approx(rnn.mean), pytest.approx(rnn.std), pytest.approx(rnn.ci95, rel=1e-5))
    assert {by_run[f"lstm_lr0.1_s{s}"]["n"] for s in (1, 2)} == {"2"}  # another lr: a setting of its own
    assert float(by_run["lstm_lr0.1_s1"]["best_std"]) == 0.0
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "| cell | lr | n | best val/bpc: mean ± 95% CI | std |" in summary
    settings = [line for line in summary.splitlines() if line.startswith(("| rnn |", "| lstm |"))]
    assert settings == [f"| lstm | 0.01 | 3 | 1.6000 ± {Interval.of([1.5, 1.6, 1.7]).ci95:.4f} | 0.1000 |",
                        "| lstm | 0.1 | 2 | 1.9000 ± 0.0000 | 0.0000 |",
                        f"| rnn | 0.01 | 3 | 2.2000 ± {rnn.ci95:.4f} | 0.2000 |"]  # best first


def test_one_seed_keeps_the_table_as_it_was(tmp_path):
    seeded_sweep(tmp_path, {("rnn", "0.01"): [2.0], ("lstm", "0.01"): [1.5]})
    summarize(tmp_path)
    header = (tmp_path / "summary.csv").read_text(encoding="utf-8").splitlines()[0]
    assert "best_mean" not in header and "95% CI" not in (tmp_path / "summary.md").read_text(encoding="utf-8")


def runs(grid: dict[tuple[str, str], list[float]], key: str = "unroll") -> list[Run]:
    return [Run(Path(f"{cell}_{value}_{seed}"), {"cell": cell, key: value, "seed": str(seed)}, "val/bpc", False,
                [(99, best)]) for (cell, value), bests in grid.items() for seed, best in enumerate(bests, start=1)]


def test_a_comparison_pairs_runs_by_seed_within_each_other_setting():
    grid = {("lstm", "20"): [1.60, 1.70, 1.65], ("lstm", "80"): [1.57, 1.68, 1.62],
            ("rnn", "20"): [2.0, 2.1, 2.2], ("rnn", "80"): [2.3, 1.9, 2.2]}
    lstm, rnn = compare(runs(grid), "unroll", "20", "80")
    assert (lstm.others, rnn.others) == ({"cell": "lstm"}, {"cell": "rnn"})
    paired = Interval.of([-0.03, -0.02, -0.03])  # seed by seed; unpaired, the spread of seeds would swamp it
    assert (lstm.difference.mean, lstm.difference.ci95) == (pytest.approx(paired.mean), pytest.approx(paired.ci95))
    assert lstm.verdict("unroll", "20", "80") == (
        f"cell=lstm: unroll=80 vs unroll=20: {paired.mean:+.4f} ± {paired.ci95:.4f} val/bpc, 3 seeds: "
        "unroll=80 is better")
    assert rnn.verdict("unroll", "20", "80").endswith("not resolved at this budget (the interval contains 0)")
    f1 = [Run(Path(f"{v}{s}"), {"k": v, "seed": str(s)}, "val/f1", True, [(9, f)])  # higher is better
          for v, s, f in (("a", 1, 0.5), ("a", 2, 0.6), ("b", 1, 0.7), ("b", 2, 0.81))]
    assert compare(f1, "k", "a", "b")[0].verdict("k", "a", "b").endswith("k=b is better")


def test_a_comparison_leaves_out_runs_without_a_partner_and_says_when_nothing_pairs():
    grid = {("lstm", "20"): [1.6, 1.7, 1.65], ("lstm", "80"): [1.5]}  # seed 1 only at unroll 80
    (only,) = compare(runs(grid), "unroll", "20", "80")
    assert only.difference.n == 1
    assert only.verdict("unroll", "20", "80").endswith("not resolved (one pair: no interval)")
    with pytest.raises(ValueError, match="no runs with unroll=20 and unroll=40"):
        compare(runs(grid), "unroll", "20", "40")
    with pytest.raises(ValueError, match="lr is not a swept setting"):
        compare(runs(grid), "lr", "1", "2")


def test_a_verdict_names_the_better_value_in_the_metrics_direction_and_its_setting():
    from rnnexp.summary import Comparison

    lower = Interval.of([-0.030, -0.031, -0.029])  # b - a: b lower
    where = {"cell": "lstm", "lr": "0.1"}
    line = f"cell=lstm, lr=0.1: unroll=80 vs unroll=20: -0.0300 ± {lower.ci95:.4f} val/bpc, 3 seeds: "
    assert Comparison(where, lower, "val/bpc", False).verdict("unroll", "20", "80") == line + "unroll=80 is better"
    assert Comparison(where, lower, "val/f1", True).verdict("unroll", "20", "80").endswith("unroll=20 is better")
    higher = Interval.of([0.030, 0.031, 0.029])
    assert Comparison({}, higher, "val/bpc", False).verdict("unroll", "20", "80") == (
        f"unroll=80 vs unroll=20: +0.0300 ± {higher.ci95:.4f} val/bpc, 3 seeds: unroll=20 is better")
    assert Comparison({}, higher, "val/f1", True).verdict("unroll", "20", "80").endswith("unroll=80 is better")
    assert Comparison({}, Interval.of([0.25]), "val/bpc", False).verdict("k", "a", "b") == (
        "k=b vs k=a: +0.2500 val/bpc, 1 seed: not resolved (one pair: no interval)")
    edge = Interval(mean=0.02, std=0.01, n=2, ci95=0.02)  # the interval's end at 0: not resolved
    assert Comparison({}, edge, "val/bpc", False).verdict("k", "a", "b").endswith(
        "2 seeds: not resolved at this budget (the interval contains 0)")


def test_a_comparison_of_a_setting_that_was_not_swept_names_the_swept_ones():
    grid = {("lstm", "20"): [1.6, 1.7], ("rnn", "20"): [1.5, 1.4]}
    with pytest.raises(ValueError) as refused:
        compare(runs(grid), "lr", "1", "2")
    assert str(refused.value) == "lr is not a swept setting of these runs; they sweep cell, seed"
    alone = [Run(Path("a"), {}, "val/bpc", False, [(9, 1.0)])]
    with pytest.raises(ValueError) as refused:
        compare(alone, "lr", "1", "2")
    assert str(refused.value) == "lr is not a swept setting of these runs; they sweep nothing"


def test_a_run_without_a_setting_is_grouped_under_an_empty_value_and_a_run_without_a_best_has_no_interval(
        tmp_path):
    from rnnexp.summary import by_setting

    grouped = by_setting(runs({("lstm", "20"): [1.6, 1.7]}) + [Run(Path("x"), {"seed": "1"}, "val/bpc", False,
                                                                   [(9, 2.0)])], ["cell"])
    assert sorted(grouped) == [("",), ("lstm",)]
    seeded_sweep(tmp_path, {("rnn", "0.01"): [1.0, 1.00001]})
    make_run(tmp_path / "failed", LM, [], overrides=["cell=gru", "lr=0.01", "seed=1"])  # its setting: no best
    make_run(tmp_path / "defaults", LM, [1.25], overrides=["seed=1"])  # cell and lr left at their defaults
    summarize(tmp_path)
    with open(tmp_path / "summary.csv", encoding="utf-8") as f:
        by_run = {row["run"]: row for row in csv.DictReader(f)}
    assert [by_run["failed"][k] for k in ("best_mean", "best_std", "n", "best_ci95")] == ["", "", "", ""]
    assert [by_run["defaults"][k] for k in ("cell", "lr", "best_mean", "n")] == ["", "", "1.25", "1"]
    row = by_run["rnn_lr0.01_s1"]  # lower-case exponents, as Python writes them
    assert row["best_std"].endswith("e-06") and row["best_ci95"].endswith("e-05")


def test_by_parameter_never_plots_against_the_seed():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = {("lstm", u): [1.0, 1.2] for u in ("5", "10", "20")}
    figure, axes = plt.subplots()
    plot_by_parameter(axes, runs(grid), ["seed", "unroll", "cell"], "val/bpc", "study")
    assert list(axes.containers[0].lines[0].get_xdata()) == [5, 10, 20] and axes.get_xlabel() == "unroll"
    plt.close(figure)
    figure, axes = plt.subplots()
    plot_by_parameter(axes, runs(grid), ["seed", "cell", "unroll"], "val/bpc", "study")
    assert axes.get_xlabel() == "cell" and axes.containers[0].lines[0].get_linestyle() == "None"
    plt.close(figure)
    assert geometric([1, 2, 4]) and not geometric([1, 2])


def test_by_parameter_draws_the_seeds_mean_with_its_interval_on_a_log_axis_for_geometric_settings():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = {("lstm", u): [1.0 + 0.1 * k, 1.2 + 0.1 * k, 1.1 + 0.1 * k] for k, u in enumerate(("5", "10", "20", "40"))}
    figure, axes = plt.subplots()
    plot_by_parameter(axes, runs(grid), ["unroll", "cell", "seed"], "val/bpc", "study")
    (container,) = axes.containers  # one line (cell=lstm) with error bars
    line = container.lines[0]
    assert list(line.get_xdata()) == [5, 10, 20, 40] and list(line.get_ydata()) == pytest.approx([1.1, 1.2, 1.3, 1.4])
    (bars,) = container.lines[2]
    segments = bars.get_segments()
    assert [s[1][1] - s[0][1] for s in segments] == pytest.approx([2 * Interval.of([1.0, 1.2, 1.1]).ci95] * 4)
    assert axes.get_xscale() == "log" and axes.get_ylabel() == "best val/bpc, mean of the seeds ± 95% CI"
    assert [label.get_text() for label in axes.get_xticklabels()] == ["5", "10", "20", "40"]  # not 10^1
    assert line.get_marker() == "o" and [cap.get_markersize() for cap in container.lines[1]] == [6.0, 6.0]
    assert line.get_linestyle() == "-"  # a line through numbers; categories (cell=...) get markers only
    plt.close(figure)
    assert geometric([5, 10, 20, 40, 80]) and geometric([0.1, 0.25, 0.5, 1.0, 1.5, 2.5])
    assert not geometric([1, 2, 3, 4]) and not geometric([0, 1, 10]) and not geometric([10, 20])


def test_summarize_compare_on_the_command_line(tmp_path):
    seeded_sweep(tmp_path, {("rnn", "0.01"): [2.0, 2.2, 2.4], ("lstm", "0.01"): [1.5, 1.6, 1.7]})
    result = subprocess.run([sys.executable, "scripts/summarize.py", str(tmp_path), "--compare", "cell=rnn,lstm"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    differences = Interval.of([-0.5, -0.6, -0.7])
    assert result.stdout.strip().splitlines()[-1] == (
        f"cell=lstm vs cell=rnn: {differences.mean:+.4f} ± {differences.ci95:.4f} val/bpc, 3 seeds: "
        "cell=lstm is better")
    wrong = subprocess.run([sys.executable, "scripts/summarize.py", str(tmp_path), "--compare", "cell=rnn"],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and wrong.stderr.strip() == "error: --compare takes KEY=A,B, e.g. unroll=20,80"


def test_two_runs_of_the_same_seeded_config_give_identical_numbers(tiny_text, tmp_path):
    from rnnexp.train import train
    from tests.helpers import read_scalars, tiny_run_config

    curves = []
    for name in ("first", "second"):
        run_dir = tmp_path / name
        train(tiny_run_config(tiny_text, run_dir, "seed=7", "trainer.max_steps=6", "trainer.val_check_interval=3",
                              "trainer.log_every_n_steps=2", "sample.length=0", "sample.val_length=0"))
        scalars = read_scalars(run_dir)
        curves.append({tag: scalars[tag] for tag in ("train/loss", "val/loss", "val/bpc")})
    assert curves[0] == curves[1]  # exactly: a seed is a replicate, not noise of its own
    other = tmp_path / "other_seed"
    train(tiny_run_config(tiny_text, other, "seed=8", "trainer.max_steps=6", "trainer.val_check_interval=3",
                          "trainer.log_every_n_steps=2", "sample.length=0", "sample.val_length=0"))
    assert read_scalars(other)["train/loss"] != curves[0]["train/loss"]  # and another seed is another run


def test_a_study_with_no_seeds_is_refused_in_one_line_before_anything_runs(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "train.py"), "-m", "experiment=lr_sweep", "seeds=0",
                             f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert (result.returncode, result.stderr.strip()) == (2, "error: seeds must be a positive integer, got 0")
    assert not (tmp_path / "sweep").exists()
