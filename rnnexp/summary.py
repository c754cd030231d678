"""A table and plots of every run under a folder (a sweep, or outputs/), from each run's saved config,
TensorBoard events and result.json (wall time and tokens/s, as callbacks.Report measured them):
`python scripts/summarize.py outputs/multirun/<sweep>`, or at the end of a sweep whose config lists
`rnnexp.summary.SummarizeSweep` in `hydra.callbacks`.

Writes summary.md (a markdown table sorted by the main metric, best first), summary.csv, curves.png
(every run's validation curve) and by_parameter.png (the best value against the first swept
setting, one line per value of the second). Works on a sweep still running or partly failed.

Seeds are replicates: where `seed` is swept, each combination of the other swept settings gets the
mean, standard deviation, number of seeds and 95% confidence interval (Student's t) of its runs' best
values, in summary.md, in summary.csv (`best_mean`, `best_std`, `n`, `best_ci95`, the half-width) and
as error bars in by_parameter.png; `compare` states the difference between two values of a setting,
paired by seed, with its interval.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from rnnexp.metrics import main_metric

try:  # Hydra's callback base class; summarize() works without it
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object


@dataclass
class Run:
    folder: Path
    overrides: dict[str, str]
    metric: str                 # e.g. val/bpc
    higher_is_better: bool
    curve: list[tuple[int, float]] = field(default_factory=list)
    steps: int = 0
    tokens_per_sec: float = math.nan
    wall_seconds: float = math.nan
    status: str = "running or stopped"

    @property
    def best(self) -> tuple[int, float] | None:
        if not self.curve:
            return None
        return (max if self.higher_is_better else min)(self.curve, key=lambda point: point[1])


def read_config(path: Path) -> dict[str, Any]:
    """A run's saved .hydra/config.yaml as plain values, its interpolations resolved where they can
    be outside the run (`data.metric: ${tokenizer.lm_metric}`); the others (`run_dir:
    ${hydra:runtime.output_dir}`) stay as written."""
    from omegaconf.errors import OmegaConfBaseException

    from rnnexp.resolvers import register

    register()
    saved = OmegaConf.load(path)
    config = OmegaConf.to_container(saved)
    for key in config:
        try:
            node = saved[key]
            config[key] = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        except OmegaConfBaseException:
            pass
    return config


def read_run(folder: Path) -> Run:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # Its reader logs "No path found after <file>" at INFO for every run, which Hydra's log shows.
    logging.getLogger("tensorboard").setLevel(logging.WARNING)
    config = read_config(folder / ".hydra" / "config.yaml")
    overrides = {}
    for item in OmegaConf.to_container(OmegaConf.load(folder / ".hydra" / "overrides.yaml")) or []:
        key, _, value = item.partition("=")
        overrides[key.lstrip("+~")] = value
    metric, higher = main_metric(config)
    run = Run(folder, overrides, metric, higher)
    events = EventAccumulator(str(folder))
    events.Reload()
    tags = events.Tags()["scalars"]
    if metric in tags:
        run.curve = [(e.step, e.value) for e in events.Scalars(metric)]
    if "train/loss" in tags:
        run.steps = events.Scalars("train/loss")[-1].step + 1
    if (folder / "error.txt").exists():
        run.status = "failed: " + (folder / "error.txt").read_text().strip().splitlines()[0]
    elif (folder / "result.json").exists():
        result = json.loads((folder / "result.json").read_text(encoding="utf-8"))
        pruned = result.get("pruned_at_step")  # stopped early by an Optuna search's pruner
        run.status = "finished" if pruned is None else f"pruned at step {pruned}"
        # The steps it trained (the last logged training step is up to log_every_n_steps before them).
        run.steps = result["steps"]
        # Measured by callbacks.Report from fit's start to its end, whatever the run's length (a
        # resumed run: all its attempts); result.json files written before it lack them.
        if result.get("wall_seconds") is not None:
            run.wall_seconds = float(result["wall_seconds"])
        if result.get("tokens_per_sec") is not None:
            run.tokens_per_sec = float(result["tokens_per_sec"])
    if math.isnan(run.wall_seconds):  # running, stopped or failed: an estimate from the events
        run.wall_seconds = _event_span(events, tags)
    if math.isnan(run.tokens_per_sec) and "train/tokens_per_sec" in tags:
        run.tokens_per_sec = statistics.median(e.value for e in events.Scalars("train/tokens_per_sec"))
    return run


def _event_span(events: Any, tags: list[str]) -> float:
    """Seconds from the first to the last scalar written (NaN with fewer than two moments): a
    running or failed run's wall time so far, short of what happened before its first value."""
    times = [e.wall_time for tag in tags for e in events.Scalars(tag)]
    return max(times) - min(times) if len(set(times)) > 1 else math.nan


def find_runs(root: Path) -> list[Run]:
    folders = sorted({p.parent.parent for p in root.glob("**/.hydra/config.yaml") if p.parent.name == ".hydra"})
    return [read_run(folder) for folder in folders]


def swept_keys(runs: list[Run]) -> list[str]:
    """The override keys whose values differ between runs, in the order they appear."""
    keys = list(dict.fromkeys(k for run in runs for k in run.overrides))
    return [k for k in keys if len({run.overrides.get(k) for run in runs}) > 1]


@dataclass
class Interval:
    """The mean of `n` values with their sample standard deviation and the half-width of the mean's 95%
    confidence interval, Student's t with n - 1 degrees of freedom (NaN for one value: no spread known)."""

    mean: float
    std: float
    n: int
    ci95: float

    @classmethod
    def of(cls, values: list[float]) -> Interval:
        n = len(values)
        if n < 2:
            return cls(values[0] if values else math.nan, math.nan, n, math.nan)
        from scipy.stats import t

        std = statistics.stdev(values)
        return cls(statistics.fmean(values), std, n, float(t.ppf(0.975, n - 1)) * std / math.sqrt(n))

    def text(self, digits: int = 4) -> str:
        """`1.2345 ± 0.0123`, or the value alone for one seed."""
        mean = f"{self.mean:.{digits}f}"
        return mean if math.isnan(self.ci95) else f"{mean} ± {self.ci95:.{digits}f}"


def by_setting(runs: list[Run], keys: list[str]) -> dict[tuple[str, ...], list[Run]]:
    """The runs with a best value, grouped by their values of `keys` (the swept settings but the seed)."""
    groups: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        if run.best is not None:
            groups.setdefault(tuple(run.overrides.get(k, "") for k in keys), []).append(run)
    return groups


@dataclass
class Comparison:
    """`key`=b against `key`=a at one combination of the other swept settings: the difference of the best
    values (b - a), paired by seed, with its interval."""

    others: dict[str, str]
    difference: Interval
    metric: str
    higher_is_better: bool

    def verdict(self, key: str, a: str, b: str) -> str:
        d = self.difference
        where = ", ".join(f"{k}={v}" for k, v in self.others.items())
        seeds = f"{d.n} seed{'s' if d.n != 1 else ''}"
        line = f"{where + ': ' if where else ''}{key}={b} vs {key}={a}: {d.mean:+.4f}"
        if math.isnan(d.ci95):
            return f"{line} {self.metric}, {seeds}: not resolved (one pair: no interval)"
        line += f" ± {d.ci95:.4f} {self.metric}, {seeds}: "
        if abs(d.mean) <= d.ci95:
            return line + "not resolved at this budget (the interval contains 0)"
        better = b if (d.mean > 0) == self.higher_is_better else a
        return line + f"{key}={better} is better"


def compare(runs: list[Run], key: str, a: str, b: str) -> list[Comparison]:
    """`key`=b against `key`=a, one Comparison per combination of the other swept settings (the seed
    excepted): runs are paired when every other override, the seed included, is the same."""
    swept = swept_keys(runs)
    if key not in swept:
        raise ValueError(f"{key} is not a swept setting of these runs; they sweep {', '.join(swept) or 'nothing'}")
    others = [k for k in swept if k not in (key, "seed")]
    paired = [k for k in swept if k != key]
    results = []
    for values, group in by_setting(runs, others).items():
        best = {value: {tuple(r.overrides.get(k, "") for k in paired): r.best[1]
                        for r in group if r.overrides.get(key) == value} for value in (a, b)}
        pairs = [(best[a][p], best[b][p]) for p in best[a] if p in best[b]]
        if pairs:
            results.append(Comparison(dict(zip(others, values, strict=True)), Interval.of([y - x for x, y in pairs]),
                                      group[0].metric, group[0].higher_is_better))
    if not results:
        raise ValueError(f"no runs with {key}={a} and {key}={b} whose other settings match")
    return results


def summarize(root: Path, x: str | None = None, lines: str | None = None) -> Path:
    """Write summary.md, summary.csv and the plots into `root`; returns summary.md's path. Runs whose
    main metrics differ (a sweep over tasks: val/mse and val/loss) get a table and a chart each.
    by_parameter.png plots the best value against swept setting `x`, one line per value of `lines`
    (by default the first and second swept settings)."""
    runs = find_runs(root)
    if not runs:
        raise FileNotFoundError(f"no run under {root} (no .hydra/config.yaml)")
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.metric, []).append(run)
    sections, csv_rows, plotted = [], [], []
    for metric, members in groups.items():
        swept = swept_keys(members)
        for key in (x, lines):
            if key is not None and key not in swept:
                raise ValueError(f"{key} is not a swept setting of these runs; they sweep "
                                 f"{', '.join(swept) or 'nothing'}")
        swept = [k for k in (x, lines) if k] + [k for k in swept if k not in (x, lines)]
        finite = [r for r in members if r.best is not None]
        ordered = sorted(finite, key=lambda r: -r.best[1] if r.higher_is_better else r.best[1]) + \
            [r for r in members if r.best is None]
        header = ["run", *swept, f"best {metric}", "step of best", f"final {metric}", "steps", "tokens/s", "wall s",
                  "status"]
        rows = [[run.folder.name, *(run.overrides.get(k, "") for k in swept), *_measures(run)] for run in ordered]
        table = _markdown(header, rows)
        if "seed" in swept:  # seeds are replicates: each setting's mean and interval, beside its runs
            others = [k for k in swept if k != "seed"]
            settings = {values: Interval.of([r.best[1] for r in group])
                        for values, group in by_setting(members, others).items()}
            ranked = sorted(settings.items(), key=lambda item: -item[1].mean if members[0].higher_is_better
                            else item[1].mean)
            table = _markdown([*others, "n", f"best {metric}: mean ± 95% CI", "std"],
                              [[*values, str(i.n), i.text(), _number(i.std, ".4f")] for values, i in ranked]) + \
                f"\n\n(mean of the seeds' best values; ± the half-width of its 95% interval, Student's t)\n\n{table}"
            header = [*header, "best_mean", "best_std", "n", "best_ci95"]
            rows = [[*row, *_interval_columns(settings.get(tuple(run.overrides.get(k, "") for k in others)))]
                    for row, run in zip(rows, ordered, strict=True)]
        sections.append(table if len(groups) == 1 else f"## {metric}: {len(members)} runs\n\n{table}")
        csv_rows += [header, *rows]
        plotted.append((metric, ordered, swept))
    title = f"{len(runs)} runs, by {', '.join(groups)}"
    (root / "summary.md").write_text(f"# {root.name}: {title}\n\n" + "\n\n".join(sections) + "\n", encoding="utf-8")
    with open(root / "summary.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(csv_rows)  # one header row per metric
    plot(plotted, root)
    return root / "summary.md"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] +
                     ["| " + " | ".join(row) + " |" for row in rows])


def _interval_columns(interval: Interval | None) -> list[str]:
    if interval is None:  # a run without a best value yet
        return ["", "", "", ""]
    return [f"{interval.mean:.6g}", _number(interval.std, ".6g"), str(interval.n), _number(interval.ci95, ".6g")]


def _measures(run: Run) -> list[str]:
    best, final = run.best, run.curve[-1] if run.curve else None
    return [f"{best[1]:.4f}" if best else "", str(best[0] + 1) if best else "", f"{final[1]:.4f}" if final else "",
            str(run.steps), _number(run.tokens_per_sec, ",.0f"),
            _number(run.wall_seconds, ".1f" if run.wall_seconds < 10 else ".0f"), run.status]


def _number(value: float, spec: str) -> str:
    """A measure for the table; empty where there is none (a run that logged nothing yet)."""
    return "" if math.isnan(value) else format(value, spec)


def plot(groups: list[tuple[str, list[Run], list[str]]], root: Path) -> None:
    """curves.png and by_parameter.png, with one chart per main metric in each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, charts = plt.subplots(len(groups), 1, figsize=(8, 5 * len(groups)), squeeze=False)
    for (metric, runs, _), axes in zip(groups, charts[:, 0], strict=True):
        for run in runs:
            if run.curve:
                # Lightning logs a validation at the step of the batch before it: +1 is the step it follows.
                axes.plot([s + 1 for s, _ in run.curve], [v for _, v in run.curve], marker=".", label=run.folder.name)
        axes.set(xlabel="training step", ylabel=metric, title=f"{root.name}: {metric} at each validation")
        if any(run.curve for run in runs):
            axes.legend(fontsize="x-small")
    figure.tight_layout()
    figure.savefig(root / "curves.png", dpi=120)
    plt.close(figure)
    swept_groups = [group for group in groups if group[2]]
    if not swept_groups:
        return
    figure, charts = plt.subplots(len(swept_groups), 1, figsize=(8, 5 * len(swept_groups)), squeeze=False)
    for (metric, runs, swept), axes in zip(swept_groups, charts[:, 0], strict=True):
        plot_by_parameter(axes, runs, swept, metric, root.name)
    figure.tight_layout()
    figure.savefig(root / "by_parameter.png", dpi=120)
    plt.close(figure)


def plot_by_parameter(axes: Any, runs: list[Run], swept: list[str], metric: str, name: str) -> None:
    """The best value against the first swept setting, one line per value of the second; with `seed`
    swept, the mean of the seeds with its 95% interval as error bars. A log axis where the setting's
    values are geometric (unroll 5, 10, ..., 80; lr; hidden size)."""
    swept = [k for k in swept if k != "seed"] or swept
    x_key, line_key = swept[0], (swept[1] if len(swept) > 1 else None)
    xs = list(dict.fromkeys(run.overrides.get(x_key, "") for run in runs))
    numeric = all(_is_number(x) for x in xs)
    xs = sorted(xs, key=float) if numeric else xs
    seeds = "seed" in swept_keys(runs)
    for line in dict.fromkeys(run.overrides.get(line_key, "") for run in runs) if line_key else [""]:
        # the seeds' mean and interval; without seeds, the first run's value (one run per point in a grid)
        points = [Interval.of([r.best[1] for r in runs if r.best and r.overrides.get(x_key, "") == x and
                               (not line_key or r.overrides.get(line_key, "") == line)][:None if seeds else 1])
                  for x in xs]
        positions = [float(x) for x in xs] if numeric else list(range(len(xs)))
        label = f"{line_key}={line}" if line_key else None
        style = {"marker": "o", "label": label, "linestyle": "-" if numeric else "none"}  # no line between categories
        if seeds:
            axes.errorbar(positions, [p.mean for p in points], yerr=[p.ci95 for p in points], capsize=3, **style)
        else:
            axes.plot(positions, [p.mean for p in points], **style)
    if numeric and geometric([float(x) for x in xs]):
        axes.set_xscale("log")
        axes.set_xticks([float(x) for x in xs], xs)
        axes.minorticks_off()
    elif not numeric:
        axes.set_xticks(range(len(xs)), xs, rotation=30, ha="right")
    what = f"best {metric}" + (", mean of the seeds ± 95% CI" if seeds else "")
    axes.set(xlabel=x_key, ylabel=what, title=f"{name}: {what} by {x_key}")
    if line_key:
        axes.legend(fontsize="small")


def geometric(values: list[float]) -> bool:
    """Values that grow by a factor rather than a step (5, 10, 20, 40, 80): each at least 1.5x the one
    before, all positive. Such settings read on a log axis."""
    ordered = sorted(values)
    return len(ordered) > 2 and ordered[0] > 0 and all(b >= 1.5 * a for a, b in itertools.pairwise(ordered))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class SummarizeSweep(Callback):
    """Hydra callback: summarize a multirun's folder when its last job has ended."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        try:
            path = summarize(Path(config.hydra.sweep.dir))
        except FileNotFoundError as e:  # no job got as far as its folder
            print(f"no sweep summary: {e}")
            return
        print(f"sweep summary: {path} (and summary.csv, curves.png, by_parameter.png beside it)")
        # TensorBoard names runs by their path below --logdir: from the sweep's folder a job is `0_rnn_u40`
        print(f"view it:       tensorboard --logdir {path.parent}")
