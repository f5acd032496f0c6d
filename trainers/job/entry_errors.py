"""Input that Hydra itself rejects (a typo'd key, an unknown config, a malformed override), as one line.

Hydra prints such errors over several lines (the options, its config search path, a hint about
HYDRA_FULL_ERROR) and exits with status 1, which `make sweep` reads as "jobs failed" and answers by
running the report. `one_line_input_errors` lets Hydra's own exceptions through to the entry point,
where they become one line naming the field and a fix, and status 2 ("nothing ran"), like every other
input error of this project (trainers/job/validate.py).
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

FULL_ERROR = "HYDRA_FULL_ERROR"
GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"


def _missing_config(exc: MissingConfigException) -> str:
    """`method=foo`: the group, the name asked for and the names there are."""
    path = exc.missing_cfg_file or ""
    found = re.search(r"Could not find '([^']+)'", str(exc))
    if "/" in (found.group(1) if found else path):
        group, name = (found.group(1) if found else path).rsplit("/", 1)
        options = ", ".join(exc.options or []) or "none"
        return (f"{group}={name} is not a known {group}; use one of {options} "
                f"(the files of conf/{group}/)")
    return _joined(exc)


def _unknown_key(exc: ConfigCompositionException, cause: OmegaConfBaseException) -> str:
    """`train.max_step=3`: the key is not a field of the config; the nearest field, with the user's value."""
    key = cause.full_key or cause.key or "?"
    value = re.search(r"use \+\S+?=(.*)$", str(exc), re.MULTILINE)
    parent = cause.parent_node
    siblings = [str(k) for k in parent.keys()] if parent is not None and hasattr(parent, "keys") else []
    leaf = str(key).rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, siblings, n=1)
    prefix = str(key)[: -len(leaf)]
    assigned = f"={value.group(1)}" if value else ""
    fix = f"did you mean {prefix}{close[0]}{assigned}?" if close else \
        f"the fields there are {', '.join(siblings)}" if siblings else "check the spelling"
    return f"{key} is not a field of the config; {fix} (a new field needs a leading +: +{key}{assigned})"


def _joined(exc: BaseException) -> str:
    """Hydra's own words on one line, without its pointers to stack traces."""
    lines = [line.strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line and not line.startswith(("Set the environment", "See https"))]
    return " ".join(lines)


def input_error(exc: BaseException) -> str | None:
    """One line for an error of the user's input that Hydra raised, or None for any other error."""
    if isinstance(exc, MissingConfigException):
        return _missing_config(exc)
    if isinstance(exc, OverrideParseException):
        return (f"the override {exc.override!r} is malformed: {_joined(exc)}; quote values that hold "
                f"brackets, commas or spaces as in key='[1e-4,1e-3]' (grammar: {GRAMMAR})")
    if isinstance(exc, ConfigCompositionException):
        if isinstance(exc.__cause__, (ConfigKeyError, ConfigAttributeError)) and "not in struct" in str(exc.__cause__):
            return _unknown_key(exc, exc.__cause__)
        cause = exc.__cause__
        detail = f" ({str(cause).splitlines()[0]})" if isinstance(cause, OmegaConfBaseException) else ""
        return _joined(exc) + detail
    return None


@contextmanager
def one_line_input_errors() -> Iterator[None]:
    """Run a Hydra entry point so that an input error Hydra raises is one line on stderr and status 2.

    Hydra re-raises its errors only under HYDRA_FULL_ERROR; it is set for the entry point and given back
    its own value by `restore_full_error` once the config is composed, so that an error of the job itself
    is reported as Hydra always did.
    """
    user = os.environ.get(FULL_ERROR)
    os.environ[FULL_ERROR] = "1"
    os.environ["SFTSWEEP_USER_" + FULL_ERROR] = "" if user is None else user
    try:
        yield
    except Exception as exc:
        message = input_error(exc)
        if message is None or user == "1":
            raise
        print(f"error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    finally:
        restore_full_error()


def restore_full_error() -> None:
    """Give HYDRA_FULL_ERROR back the value the user had (the config is composed: what follows is the job's)."""
    if (user := os.environ.pop("SFTSWEEP_USER_" + FULL_ERROR, None)) is None:
        return
    if user:
        os.environ[FULL_ERROR] = user
    else:
        os.environ.pop(FULL_ERROR, None)
