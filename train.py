"""Train a recurrent language model: `python train.py cell=gru unroll=40`.

Configs live in conf/ (Hydra); `python train.py --help` lists the groups and options.
"""

import math
import shutil
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rnnexp.resolvers import register

register()  # the resolvers conf/ uses (run folders, run names, a search's direction, study budgets)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from rnnexp.errors import RnnexpError, RunStopped, TrainingDiverged
    from rnnexp.quiet import silence_known_noise  # which messages are filtered, and why
    from rnnexp.train import in_sweep, train  # torch and Lightning load here, not for --help

    silence_known_noise()
    try:
        return train(cfg)
    except RunStopped as stop:  # Ctrl-C or SIGTERM: saved (or said why not); a sweep stops too
        from rnnexp.stopping import stopped_message

        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        print(stopped_message(stop, overrides), file=sys.stderr)
        sys.exit(128 + stop.signum)
    except Exception as e:
        if not in_sweep() and not isinstance(e, RnnexpError):
            raise  # a bug: the whole traceback
        message = str(e) if isinstance(e, RnnexpError) else f"{type(e).__name__}: {e}"
        if in_sweep():  # one job's failure is recorded in its folder, and the sweep goes on
            run_dir = Path(cfg.run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            details = "" if isinstance(e, RnnexpError) else "\n" + traceback.format_exc()
            (run_dir / "error.txt").write_text(f"{message}\n{details}", encoding="utf-8")
            print(f"error: job failed: {message} (recorded in {run_dir / 'error.txt'}); the sweep goes on",
                  file=sys.stderr)
            return math.nan
        if not isinstance(e, TrainingDiverged):  # refused before training: leave nothing behind
            discard_unfinished_run(Path(cfg.run_dir))
        else:  # the run stays, with what stopped it (scripts/summarize.py reads it)
            (Path(cfg.run_dir) / "error.txt").write_text(f"{message}\n", encoding="utf-8")
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


NEW_FOLDERS: set[Path] = set()  # folders a run's folder may be made in that did not exist at the start


def missing_run_parents(args: list[str]) -> set[Path]:
    """The parents of this run's folder (those of `hydra.run.dir=...` if given, else outputs/runs/)
    that do not exist before Hydra makes the folder: a refused run removes those it left empty."""
    given = [a.partition("=")[2] for a in args if a.lstrip("+").startswith("hydra.run.dir=")]
    prefixes = [value.split("${")[0] + "x" for value in given] or ["outputs/runs/x"]  # x: the run's own name
    return {parent.resolve() for prefix in prefixes for parent in Path(prefix).parents if not parent.exists()}


def discard_unfinished_run(run_dir: Path) -> None:
    """Remove what a refused run wrote: the whole run folder if it holds no result (no checkpoint,
    no TensorBoard events), else (a refused resume) only this attempt's record in .hydra/resumes/."""

    if run_dir.is_dir() and not (run_dir / "checkpoints").exists() and not any(run_dir.glob("events.out.*")):
        shutil.rmtree(run_dir, ignore_errors=True)
        for parent in run_dir.resolve().parents:  # outputs/runs/, outputs/: if this run made them, and left them empty
            if parent not in NEW_FOLDERS or any(parent.iterdir()):
                break
            parent.rmdir()
    elif (HydraConfig.get().output_subdir or "").startswith(".hydra/resumes/"):
        record = run_dir / HydraConfig.get().output_subdir
        shutil.rmtree(record, ignore_errors=True)
        if not any(record.parent.iterdir()):
            record.parent.rmdir()


if __name__ == "__main__":
    from rnnexp.hydra_errors import run_reporting_config_errors

    NEW_FOLDERS.update(missing_run_parents(sys.argv[1:]))
    run_reporting_config_errors(main)  # a missing option or a key typo: one line, exit status 2
