"""Short run names a person can read in TensorBoard's run list, made from the command line's
overrides: `cell=gru unroll=40 lr=0.003` -> `gru_u40_lr0.003`. The folder name is this name, then the
date and time, which keep it unique (TensorBoard shortens long names from the end, so the part that says
what the run is comes first); the overrides themselves stay in `.hydra/overrides.yaml`."""

from __future__ import annotations

import re

ABBREVIATIONS = {
    "unroll": "u", "batch_size": "b", "hidden_size": "h", "embedding_dim": "e", "num_layers": "L",
    "dropout": "drop", "seed": "seed", "lr": "lr", "clip": "clip", "max_steps": "steps", "max_time": "time",
    "weight_decay": "wd", "momentum": "mom", "decay_rate": "rate", "decay_steps": "every", "precision": "",
}
# Where files are, how a run logs, what it resumes: not what the run is.
SKIPPED = re.compile(r"^(\+*)(data\.path|data_dir|cache_dir|ckpt_path|init_from|run_dir|hydra\.|sample\.|logger|"
                     r"callbacks|diagnostics|debug|hparams_search|trainer\.(enable_|log_every|val_check|num_sanity|limit_val))")
LONGEST = 80


def run_name(override_dirname: str, cell: str) -> str:
    """`<cell>_<override>_<override>...`: the cell, then group choices by their value and other
    keys abbreviated and followed by their value; at most 80 characters of letters, digits, `._-`."""
    parts = [cell]  # the cell first: the name a list of runs is most often read by
    for item in override_dirname.split(",") if override_dirname else []:
        key, _, value = item.partition("=")
        if not value or key == "cell" or SKIPPED.match(key):
            continue
        name = key.lstrip("+~").rpartition(".")[2]
        is_number = re.fullmatch(r"-?[\d.e+-]+", value) is not None
        if is_number and "." in value and len(value) > 8:  # a searched value, 0.0030862723645228127: 4 digits name it
            value = f"{float(value):.4g}"
        if value in ("true", "false"):
            parts.append(name if value == "true" else f"no_{name}")
        else:
            parts.append(f"{ABBREVIATIONS.get(name, name)}{value}" if is_number or name in ABBREVIATIONS else value)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(parts)).strip("-_")
    return name[:LONGEST] or cell


def sweep_name(overrides: list[str] | None) -> str:
    """A sweep's folder name, before its date and time: the settings it sweeps, e.g. `-m cell=rnn,lstm
    lr=0.01,0.03 unroll=40` -> `sweep_cell_lr`; `sweep` when nothing is swept on the command line."""
    swept = []
    for override in overrides or []:
        key, _, value = str(override).partition("=")
        name = key.lstrip("+~").rpartition(".")[2]
        if not SKIPPED.match(key) and re.search(r",|^(choice|range|interval|tag|glob)\(", value):
            swept.append(ABBREVIATIONS.get(name) or name)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(["sweep", *swept]))[:LONGEST]
