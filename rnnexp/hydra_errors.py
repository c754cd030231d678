"""Hydra's composition errors as one line each, exit status 2, like every other bad input.

Hydra reports an option that exists nowhere (`cell=gru_smal`) or a key typo without `+` (`unrol=40`)
in a paragraph that points the user the wrong way ("To append to your config use +unrol=40"). Here
they become `error: cell=gru_smal does not exist ...; did you mean cell=gru_small?` and
`error: unknown key 'unrol'; did you mean 'unroll'?`, the same line `+unrol=40` gets. Hydra itself
finds the options, so they come from every config folder it searches (conf/, `hydra.searchpath`,
`--config-dir`, `pkg://` paths). Kept free of torch: it runs before anything is trained.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable
from typing import Any


def run_reporting_config_errors(main: Callable[[], Any]) -> None:
    """Run a `@hydra.main` function; Hydra's composition errors end the process with one line."""
    from hydra.errors import ConfigCompositionException, MissingConfigException
    from omegaconf.errors import InterpolationResolutionError

    if os.environ.get("HYDRA_FULL_ERROR") == "1":  # the user asked for Hydra's own tracebacks
        main()
        return
    # Hydra raises its errors (rather than printing them and exiting) only under this variable.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except MissingConfigException as e:
        fail(missing_option(e))
    except ConfigCompositionException as e:
        line = unknown_key(e)
        if line is None:  # another composition error: Hydra's own words, as Hydra prints them
            print(str(e).strip(), file=sys.stderr)
            if e.__cause__ is not None:
                print(str(e.__cause__).strip(), file=sys.stderr)
            sys.exit(1)
        fail(line)
    except InterpolationResolutionError as e:  # a resolver of rnnexp.resolvers refused a value (seeds=0)
        refusal = e.__cause__ or e.__context__
        if not isinstance(refusal, ValueError):
            raise
        fail(str(refusal))
    finally:
        os.environ.pop("HYDRA_FULL_ERROR", None)


def fail(line: str) -> None:
    print(f"error: {line}", file=sys.stderr)
    sys.exit(2)


def missing_option(e: Any) -> str:
    """`cell=gru_smal does not exist ...; did you mean cell=gru_small?` from Hydra's MissingConfigException."""
    missing = (e.missing_cfg_file or "").strip("/")
    group, _, choice = missing.rpartition("/")
    options = sorted(e.options or [])
    if not group or not options:  # not a group option (e.g. the primary config): Hydra's first line
        return str(e).strip().splitlines()[0]
    close = difflib.get_close_matches(choice, options, n=1)
    hint = f"did you mean {group}={close[0]}?" if close else f"the options are {', '.join(options)}"
    return f"{group}={choice} does not exist (no {missing}.yaml in conf/ or the search path); {hint}"


def unknown_key(e: Any) -> str | None:
    """`unknown key 'unrol'; did you mean 'unroll'?` for an override of a key that does not exist,
    the closest key taken from the config that lacks it (or, for a `_target_` object, from the
    arguments its target takes); None for any other composition error."""
    from omegaconf import DictConfig
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    cause = e.__cause__
    parent = getattr(cause, "parent_node", None)
    if not isinstance(cause, ConfigKeyError | ConfigAttributeError) or not isinstance(parent, DictConfig):
        return None
    from rnnexp.config import unknown_key_error

    key = cause.full_key
    section = key.rpartition(".")[0]
    known = [k for k in parent.keys() if k != "hydra" and not str(k).startswith("_")]
    target = parent.get("_target_") if "_target_" in parent else None
    return str(unknown_key_error(key, [str(k) for k in known], section or "the top level", target))
