"""A key that nothing reads is refused, naming the closest real key, in every config group and every
option of it: the groups and their options are read from conf/ and the composed config, the keys
from each composed option, so a group or option added later is covered without editing this file."""

import pytest

from rnnexp.config import validate_components, validate_config
from rnnexp.errors import ConfigError
from rnnexp.train import resolve
from tests.helpers import REPO, compose_config

# Other options some options need to make a valid config with (their docs say so); tried in turn.
COMPANIONS = [(), ("data.path=x.txt",), ("arch=seq2seq",), ("arch=seq2seq", "data.path=x.txt"), ("data=reverse",),
              ("data=segmentation",), ("cell._target_=examples.minimal_cell.LeakyRNNCell",)]
# Keys that rnnexp itself adds to a `_target_` object (optim.default_lr): refused when misspelt, but
# the closest-key hint lists only the target's own arguments until rnnexp/config.py's _check_target
# offers `ours` too. Remove a key from here once its hint names it.
HINT_AWAITS_FIX: set[str] = set()
NOT_KEYS = ("name", "_target_", "_partial_")  # what selects an option, not a setting of it


def check(config: dict) -> None:
    validate_config(config)
    validate_components(config)


def group_options() -> list[tuple[str, str]]:
    """(group, option) for every option file of every conf/ group that is a key of the config
    (arch_variant, experiment, debug and hparams_search set other groups' keys), and (key, "")
    for the top-level mappings that are not groups (guard, sample, ...)."""
    composed = compose_config("run_dir=x")
    groups = sorted(d.name for d in (REPO / "conf").iterdir() if d.is_dir() and d.name in composed)
    found = [(g, p.stem) for g in groups for p in sorted((REPO / "conf" / g).glob("*.yaml"))]
    return found + [(k, "") for k, v in composed.items() if k not in groups and hasattr(v, "keys")]


def valid_config(group: str, option: str) -> dict:
    """The config with `group=option`, with the first companion that makes it pass every check."""
    problems = []
    for extra in COMPANIONS:
        chosen = (f"{group}={option}",) if option else ()
        try:
            config = resolve(compose_config("run_dir=x", *extra, *chosen))
            check(config)
            return config
        except Exception as e:  # noqa: BLE001 (any refusal: try the next companion)
            problems.append(f"{extra}: {type(e).__name__}: {e}")
    raise AssertionError(f"{group}={option} is valid with none of {COMPANIONS}: add one\n" + "\n".join(problems))


def sections(config: dict, group: str) -> list[str]:
    """The mappings of `group` that hold settings: the group itself, or each of its entries where
    it is a collection of `_target_` objects (logger.tensorboard, callbacks.model_checkpoint)."""
    values = config[group] or {}
    entries = [k for k, v in values.items() if isinstance(v, dict) and "_target_" in v]
    return [f"{group}.{k}" for k in entries] if entries else [group]


def misspelt(key: str) -> str:
    """The key with one letter dropped from its middle, as a typo would drop it."""
    i = len(key) // 2
    return key[:i] + key[i + 1:]


def holder(config: dict, section: str) -> dict:
    for part in section.split("."):
        config = config[part]
    return config


@pytest.mark.parametrize("group,option", group_options(), ids=lambda v: v or "-")
def test_a_misspelt_key_is_refused_with_the_key_meant_in_every_option_of_every_group(group, option):
    config = valid_config(group, option)
    checked, gaps = 0, []
    for section in sections(config, group):
        values = holder(config, section)
        keys = [k for k in values if k not in NOT_KEYS and len(k) > 3 and misspelt(k) not in values]
        for key in keys:
            values[misspelt(key)] = values[key]
            try:
                with pytest.raises(ConfigError) as refused:
                    check(config)
            finally:
                del values[misspelt(key)]
            assert f"unknown key '{section}.{misspelt(key)}'" in str(refused.value)
            if f"did you mean '{section}.{key}'?" not in str(refused.value):
                assert f"{section}.{key}" in HINT_AWAITS_FIX, str(refused.value)
                gaps.append(str(refused.value))
            checked += 1
        values["zqxj_unknown"] = 1  # close to nothing: refused all the same, named
        try:
            with pytest.raises(ConfigError, match="zqxj_unknown"):
                check(config)
        finally:
            del values["zqxj_unknown"]
    assert checked or group in ("logger", "sched"), f"{group}={option}: no key to misspell"
    if gaps:
        pytest.xfail(f"no closest-key hint yet: {gaps}")
