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
    from rnnexp.errors import RnnexpError, TrainingDiverged
    from rnnexp.train import in_sweep, train  # torch and Lightning load here, not for --help

    silence_known_noise()
    try:
        return train(cfg)
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


def discard_unfinished_run(run_dir: Path) -> None:
    """Remove what a refused run wrote: the whole run folder if it holds no result (no checkpoint,
    no TensorBoard events), else (a refused resume) only this attempt's record in .hydra/resumes/."""

    if run_dir.is_dir() and not (run_dir / "checkpoints").exists() and not any(run_dir.glob("events.out.*")):
        shutil.rmtree(run_dir, ignore_errors=True)
    elif (HydraConfig.get().output_subdir or "").startswith(".hydra/resumes/"):
        record = run_dir / HydraConfig.get().output_subdir
        shutil.rmtree(record, ignore_errors=True)
        if not any(record.parent.iterdir()):
            record.parent.rmdir()


def silence_known_noise() -> None:
    """Three messages every run printed that tell the user nothing, filtered by their text only:
    a deprecation inside Lightning's own code, the model summary's size estimate under bf16, and
    Lightning's advertisement for its cloud logger."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"Precision bf16-mixed is not supported by the model summary")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
        lambda record: "try installing [litlogger]" not in record.getMessage())


def refuse_unknown_options(args: list[str]) -> None:
    """`optim=adagrad` where conf/optim/ has no adagrad.yaml: one line and exit status 2, with the
    closest option, before Hydra composes anything (its own error is a paragraph and status 1)."""
    import difflib

    conf = Path(__file__).resolve().parent / "conf"
    for arg in args:
        group, _, value = arg.lstrip("+~").partition("=")
        if arg.startswith("-") or not value or "(" in value or not group.isidentifier() or not (conf / group).is_dir():
            continue  # not a group choice (a key, a sweep function, a Hydra flag)
        options = sorted(p.stem for p in (conf / group).glob("*.yaml"))
        for choice in value.split(","):  # a multirun lists several
            if choice not in (*options, "null"):
                close = difflib.get_close_matches(choice, options, n=1)
                hint = f"did you mean {group}={close[0]}?" if close else f"the options are {', '.join(options)}"
                print(f"error: {group}={choice} does not exist (conf/{group}/); {hint}", file=sys.stderr)
                sys.exit(2)


if __name__ == "__main__":
    refuse_unknown_options(sys.argv[1:])
    main()
